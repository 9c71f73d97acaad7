//! Every kind of bad input the admin can write is reported with file, line, column and
//! what was expected.

use std::path::Path;

use stepgate_config::{load, load_str, Diagnostic};

const APPS: &str = "apps:
  - id: console
    routes:
      - { path: /admin/**, tags: [admin] }
networks:
  corporate: [10.0.0.0/8]
";

/// Loads `APPS` + `policies` text and returns the single diagnostic it must produce.
fn one_error(policies: &str) -> Diagnostic {
    let text = format!("{APPS}policies:\n{policies}");
    let err = load_str("bad.yaml", &text, None).expect_err("the config must be rejected");
    assert_eq!(
        err.diagnostics.len(),
        1,
        "expected one diagnostic, got: {err}"
    );
    err.diagnostics.into_iter().next().unwrap()
}

fn assert_at(d: &Diagnostic, line: usize, column: usize, needle: &str) {
    assert_eq!(d.file, Path::new("bad.yaml"), "{d}");
    assert_eq!(
        (d.line, d.column),
        (Some(line), Some(column)),
        "wrong position: {d}"
    );
    assert!(d.message.contains(needle), "message lacks `{needle}`: {d}");
}

// Lines: APPS is 6 lines, "policies:" is line 7, the first policy starts on line 8.

#[test]
fn duplicate_priority() {
    let d = one_error(
        "  - { name: a, priority: 10, outcome: allow }
  - { name: b, priority: 10, outcome: deny }
",
    );
    assert_at(&d, 9, 26, "duplicate priority 10 (policy `a` has it too)");
}

#[test]
fn unknown_app_in_target() {
    let d =
        one_error("  - { name: a, priority: 1, targets: { apps: [consol] }, outcome: allow }\n");
    assert_at(&d, 8, 47, "unknown app id `consol`");
    assert!(
        d.message.contains("console"),
        "should list the known ids: {d}"
    );
}

#[test]
fn bad_cidr_inline_and_in_zone() {
    let d = one_error(
        "  - name: a
    priority: 1
    conditions:
      - network: { in: [10.0.0.300/8] }
    outcome: allow
",
    );
    assert_at(&d, 11, 25, "bad CIDR `10.0.0.300/8`");
    let err = load_str("z.yaml", "networks:\n  vpn: [10.0.0.0/33]\n", None).unwrap_err();
    let d = &err.diagnostics[0];
    assert_eq!((d.line, d.column), (Some(2), Some(9)), "{d}");
    assert!(d.message.contains("bad CIDR"), "{d}");
}

#[test]
fn host_bits_set_in_cidr() {
    let d = one_error("  - { name: a, priority: 1, conditions: [ { network: { in: [10.1.2.3/8] } } ], outcome: allow }\n");
    assert!(
        d.message.contains("host bits") && d.message.contains("10.0.0.0/8"),
        "{d}"
    );
}

#[test]
fn unknown_zone() {
    let d = one_error("  - { name: a, priority: 1, conditions: [ { network: { not_in: [office] } } ], outcome: allow }\n");
    assert!(
        d.message.contains("unknown network zone `office`") && d.message.contains("corporate"),
        "{d}"
    );
    assert_eq!(d.line, Some(8));
}

#[test]
fn bad_regex() {
    let d = one_error(
        "  - name: a
    priority: 1
    conditions:
      - user_attribute: { attribute: title, op: regex, value: \"(vp|director\" }
    outcome: allow
",
    );
    assert_at(&d, 11, 63, "bad regex `(vp|director`");
}

#[test]
fn bad_time_zone() {
    let d = one_error(
        "  - name: a
    priority: 1
    conditions:
      - time: { timezone: Europe/Pariss, hours: { from: 8, to: 18 } }
    outcome: allow
",
    );
    assert_at(&d, 11, 27, "bad time zone `Europe/Pariss`");
}

#[test]
fn hours_out_of_range() {
    let d = one_error(
        "  - name: a
    priority: 1
    conditions:
      - time: { hours: { from: 8, to: 24 } }
    outcome: allow
",
    );
    assert_at(&d, 11, 39, "hour 24 is out of range: expected 0 to 23");
}

#[test]
fn velocity_out_of_range() {
    for v in ["0", "1000"] {
        let d = one_error(&format!(
            "  - name: a\n    priority: 1\n    conditions:\n      - velocity: {{ above_kmpm: {v} }}\n    outcome: deny\n"
        ));
        assert_at(&d, 11, 33, "expected 1 to 999");
    }
}

#[test]
fn velocity_below_and_between() {
    let velocity = |v: &str| {
        format!("  - name: a\n    priority: 1\n    conditions:\n      - velocity: {v}\n    outcome: deny\n")
    };
    let d = one_error(&velocity("{ below_kmpm: 1000 }"));
    assert_at(&d, 11, 33, "expected 1 to 999");
    let d = one_error(&velocity("{ between_kmpm: [15, 2] }"));
    assert_at(&d, 11, 35, "the low speed is above the high one");
    let d = one_error(&velocity("{ between_kmpm: [15] }"));
    assert_at(&d, 11, 35, "expects two speeds");
    let d = one_error(&velocity("{ above_kmpm: 15, below_kmpm: 20 }"));
    assert_at(
        &d,
        11,
        17,
        "exactly one of above_kmpm, below_kmpm or between_kmpm",
    );
}

#[test]
fn risk_score_out_of_range() {
    let d = one_error(
        "  - name: a
    priority: 1
    conditions:
      - ip_risk: { min: 50, max: 101 }
    outcome: deny
",
    );
    assert_at(
        &d,
        11,
        34,
        "ip risk score 101 is out of range: expected 0 to 100",
    );
}

#[test]
fn unknown_key_is_an_error() {
    let d = one_error("  - { name: a, priority: 1, outcome: allow, enabeld: true }\n");
    assert_eq!(d.line, Some(8), "{d}");
    assert!(d.message.contains("enabeld"), "{d}");
}

#[test]
fn unknown_top_level_section() {
    let err = load_str("t.yaml", "polices: []\n", None).unwrap_err();
    let d = &err.diagnostics[0];
    assert_eq!(d.line, Some(1), "{d}");
    assert!(d.message.contains("polices"), "{d}");
}

#[test]
fn yaml_syntax_error_has_position() {
    let err = load_str("s.yaml", "apps:\n  - id: x\n    routes: [\n", None).unwrap_err();
    let d = &err.diagnostics[0];
    assert!(d.line.is_some() && d.column.is_some(), "{d}");
    assert!(d.message.contains("YAML syntax error"), "{d}");
}

#[test]
fn wrong_type_names_the_path() {
    let d = one_error("  - { name: a, priority: high, outcome: allow }\n");
    assert_eq!(d.line, Some(8), "{d}");
    assert!(d.message.contains("priority"), "{d}");
}

#[test]
fn bad_duration() {
    let d = one_error("  - { name: a, priority: 1, outcome: { step_up: { max_age: 15 } } }\n");
    assert!(
        d.message.contains("`15`") && d.message.contains("every_time"),
        "{d}"
    );
    assert_eq!(d.line, Some(8), "{d}");
}

#[test]
fn every_error_is_collected() {
    let text = format!(
        "{APPS}policies:
  - {{ name: a, priority: 1, targets: {{ apps: [nope] }}, outcome: allow }}
  - {{ name: b, priority: 1, conditions: [ {{ time: {{ timezone: Mars/Base }} }} ], outcome: allow }}
  - {{ name: c, priority: 2, outcome: {{ step_up: {{ min_aal: 4, factors: [carrier_pigeon] }} }} }}
"
    );
    let err = load_str("many.yaml", &text, None).unwrap_err();
    let msgs: Vec<String> = err.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(msgs.len(), 5, "{msgs:#?}");
    for needle in [
        "unknown app id `nope`",
        "duplicate priority 1",
        "bad time zone `Mars/Base`",
        "min_aal 4",
        "unknown factor `carrier_pigeon`",
    ] {
        assert!(
            msgs.iter().any(|m| m.contains(needle)),
            "missing `{needle}` in {msgs:#?}"
        );
    }
    assert!(
        msgs.iter().all(|m| m.starts_with("many.yaml:")),
        "{msgs:#?}"
    );
}

#[test]
fn includes_merge_files_and_report_the_right_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("stepgate.yaml");
    std::fs::create_dir(dir.path().join("policies.d")).unwrap();
    std::fs::write(
        &main,
        "includes: [apps.yaml, policies.d]\nnetworks:\n  corporate: [10.0.0.0/8]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("apps.yaml"), "apps:\n  - id: wiki\n").unwrap();
    std::fs::write(
        dir.path().join("policies.d/10-allow.yaml"),
        "policies:\n  - { name: office, priority: 10, targets: { apps: [wiki] }, conditions: [ { network: { in: [corporate] } } ], outcome: allow }\n",
    )
    .unwrap();
    let cfg = load(&main).expect("valid");
    assert_eq!(cfg.files.len(), 3);
    assert_eq!(cfg.policy_set.len(), 1);

    std::fs::write(
        dir.path().join("policies.d/20-bad.yaml"),
        "policies:\n  - { name: other, priority: 10, outcome: deny }\n",
    )
    .unwrap();
    let err = load(&main).unwrap_err();
    let d = &err.diagnostics[0];
    assert!(d.file.ends_with("policies.d/20-bad.yaml"), "{d}");
    assert_eq!(d.line, Some(2), "{d}");
    assert!(
        d.message.contains("duplicate priority 10 (policy `office`"),
        "{d}"
    );
}

#[test]
fn include_cycle_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(&a, "includes: [b.yaml, missing.yaml]\n").unwrap();
    std::fs::write(dir.path().join("b.yaml"), "includes: [a.yaml]\n").unwrap();
    let err = load(&a).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("included more than once"), "{text}");
    assert!(
        text.contains("cannot read") && text.contains("missing.yaml"),
        "{text}"
    );
}

#[test]
fn single_sections_may_not_repeat_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(
        &a,
        "includes: [b.yaml]\nsessions: { nist_revision: rev3 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "sessions: { nist_revision: rev4 }\n",
    )
    .unwrap();
    let err = load(&a).unwrap_err();
    assert!(
        err.to_string().contains("`sessions` is already defined"),
        "{err}"
    );
}

#[test]
fn the_demo_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo.yaml");
    let cfg = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.policy_set.len() >= 20);
}

#[test]
fn zero_workers() {
    let err = load_str("bad.yaml", "server:\n  workers: 0\n", None)
        .expect_err("zero serving threads must be rejected");
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    assert_at(&err.diagnostics[0], 2, 12, "bad workers `0`");
}

#[test]
fn portal_help_desk_is_checked_where_it_is_written() {
    let yaml = "portal:\n  help:\n    url: ftp://help.example.com\n    email: not-an-address\n";
    let err = load_str("c.yaml", yaml, None).unwrap_err();
    let msgs: Vec<_> = err
        .diagnostics
        .iter()
        .map(|d| (d.line, d.message.clone()))
        .collect();
    assert!(
        msgs.iter().any(|(l, m)| *l == Some(3)
            && m.contains("portal.help.url `ftp://help.example.com`: expected an http(s) URL")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|(l, m)| *l == Some(3) && m.contains("portal.help.email `not-an-address`")),
        "{msgs:?}"
    );
    let empty = load_str("c.yaml", "portal:\n  help: {}\n", None).unwrap_err();
    assert!(
        empty.diagnostics[0]
            .message
            .contains("portal.help is empty"),
        "{:?}",
        empty.diagnostics
    );
    let ok = load_str(
        "c.yaml",
        "portal:\n  help: { text: the IT desk, url: 'https://help.example.com', email: it@example.com }\n",
        None,
    )
    .unwrap();
    assert_eq!(
        ok.portal.help.unwrap().email.as_deref(),
        Some("it@example.com")
    );
}
