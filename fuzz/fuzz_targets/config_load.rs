//! The configuration loader on arbitrary text: YAML parsing (bounded nesting), shape and
//! meaning checks, policy and compliance compilation, and `includes:` resolved inside a
//! temporary directory of fixture files. It must return a configuration or diagnostics,
//! never panic, overflow or hang; a panic inside the loader's own thread comes back as an
//! internal-error diagnostic, which counts as a crash here.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// Files the fuzzed text may include: valid pieces, a broken one, one that includes itself,
/// a directory of them, and a chain.
const FIXTURES: &[(&str, &str)] = &[
    ("apps.yaml", "apps:\n  - id: wiki\n    hosts: [wiki.test]\n    routes:\n      - { path: /admin/**, tags: [admin] }\n"),
    ("networks.yaml", "networks:\n  corporate: [10.0.0.0/8, \"2001:db8::/32\"]\n"),
    ("policies.d/10-admin.yaml", "policies:\n  - { name: admin, priority: 10, targets: { apps: [wiki] }, conditions: [ { not: { network: { in: [corporate] } } } ], outcome: deny }\n"),
    ("policies.d/20-rest.yml", "policies:\n  - { name: rest, priority: 20, outcome: { step_up: { level: aal2, max_age: 15m } } }\n"),
    ("broken.yaml", "apps: [ { id: x\n"),
    ("self.yaml", "includes: [self.yaml]\n"),
    ("chain1.yaml", "includes: [chain2.yaml]\n"),
    ("chain2.yaml", "devices:\n  compliance:\n    policies:\n      - { name: mac, rules: [ { id: old, non_compliant_if: \"os_version < 15\" } ] }\n"),
];

fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("stepgate-fuzz-config")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        for (name, body) in FIXTURES {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(p, body).expect("write a fixture");
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match stepgate_config::load_str("fuzz.yaml", text, Some(fixtures())) {
        Ok(cfg) => assert!(!cfg.files.is_empty()),
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                assert!(!d.message.is_empty(), "an empty diagnostic: {d:?}");
                assert!(
                    !d.message.starts_with(stepgate_config::INTERNAL_ERROR),
                    "the loader panicked: {d}"
                );
            }
        }
    }
});
