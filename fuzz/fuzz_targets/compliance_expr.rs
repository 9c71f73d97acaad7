//! Compliance-rule expressions (`os_version < 15.0 OR filevault == false`): parsing,
//! compiling into a policy, evaluating against a few postures and printing must never
//! panic or overflow, however deep or strange the text.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use stepgate_policy::PostureValue;
use stepgate_signals::compliance::{compile_policies, evaluate, Expr};
use stepgate_signals::config::{CompliancePolicyConfig, ComplianceRuleConfig};

fn posture(pairs: &[(&str, &str)]) -> BTreeMap<String, PostureValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), PostureValue((*v).to_owned())))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let postures = [
        posture(&[]),
        posture(&[
            ("os_version", "14.2.1"),
            ("encrypted", "true"),
            ("filevault", "false"),
            ("model", "MacBookAir10,1"),
            ("edr_score", "73.5"),
        ]),
        posture(&[
            ("os_version", "10.0.19045"),
            ("a", "1"),
            ("b", "yes"),
            ("x", ""),
        ]),
    ];
    match Expr::parse(text) {
        Ok(expr) => {
            for p in &postures {
                let _ = expr.eval(p);
            }
            let _ = expr.to_string();
        }
        Err((column, message)) => {
            assert!(!message.is_empty());
            assert!(
                column >= 1 && column <= text.chars().count() + 1,
                "column {column} for {text:?}"
            );
        }
    }
    // The same text as a configured rule: compiled, evaluated and its error printed.
    let config = CompliancePolicyConfig {
        name: "fuzz".into(),
        rules: vec![ComplianceRuleConfig {
            id: "r".into(),
            non_compliant_if: text.to_owned(),
            message: None,
            fix: None,
        }],
        ..Default::default()
    };
    match compile_policies(&[config]) {
        Ok(policies) => {
            for p in &postures {
                let v = evaluate(&policies, Some("macos"), &[], p);
                assert!(v.compliant != Some(true) || v.failing.is_empty());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
