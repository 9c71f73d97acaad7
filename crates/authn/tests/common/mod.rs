//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::Command;

#[path = "../../../../tests/support/skipped.rs"]
mod skipped;

/// Whether python3 can import every module; if not, print why the test is skipped.
/// Under `CI=true` a missing peer fails the test instead of skipping it.
pub fn python_has(modules: &[&str]) -> bool {
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = Command::new("python3")
        .args(["-c", &code])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("python3 modules {modules:?} are required in CI (pip install pyotp aiosmtpd)");
        }
        skipped::record(
            &format!("python3 modules {}", modules.join(", ")),
            "pip install pyotp aiosmtpd",
        );
    }
    ok
}
