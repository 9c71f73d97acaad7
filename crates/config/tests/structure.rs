//! Shape errors: every one in one run, each at the key it is about, with the nearest valid
//! key suggested and library errors put in words about the key.

use stepgate_config::{load_str, Diagnostic};

fn errors(text: &str) -> Vec<Diagnostic> {
    load_str("bad.yaml", text, None)
        .expect_err("the config must be rejected")
        .diagnostics
}

#[test]
fn an_unknown_key_in_a_nested_section_is_reported_at_the_key_with_a_suggestion() {
    let e = errors(
        "server:
  listen: 127.0.0.1:8080
  tls:
    cert_file: a.pem
    key_file: b.pem
    clinet_ca_file: c.pem
",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (Some(6), Some(5)), "{}", e[0]);
    assert!(
        e[0].message.contains("unknown key `clinet_ca_file`"),
        "{}",
        e[0]
    );
    assert!(
        e[0].message.contains("did you mean `client_ca_file`?"),
        "{}",
        e[0]
    );
}

#[test]
fn every_shape_error_is_reported_in_one_run() {
    let e = errors(
        "server:
  lisen: 127.0.0.1:8080
apps:
  - id: a
    upstream: http://127.0.0.1:1
  - id: b
    upstrem: http://127.0.0.1:2
    hots: [b.test]
policies:
  - { name: p, priority: ten, outcome: allow }
",
    );
    let at: Vec<(Option<usize>, &str)> = e.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(e.len(), 4, "{at:#?}");
    assert_eq!(e[0].line, Some(2));
    assert!(e[0].message.contains("did you mean `listen`?"), "{}", e[0]);
    assert_eq!(e[1].line, Some(7));
    assert!(
        e[1].message.contains("`apps[1]`") && e[1].message.contains("did you mean `upstream`?"),
        "{}",
        e[1]
    );
    assert_eq!(e[2].line, Some(8));
    assert!(e[2].message.contains("did you mean `hosts`?"), "{}", e[2]);
    assert_eq!(e[3].line, Some(10));
    assert!(
        e[3].message.contains("`ten` is not a whole number"),
        "{}",
        e[3]
    );
}

#[test]
fn an_unknown_section_suggests_the_nearest_and_a_far_one_lists_the_sections() {
    let e = errors("polices: []\n");
    assert!(
        e[0].message.contains("did you mean `policies`?"),
        "{}",
        e[0]
    );
    let e = errors("frobnicate: 1\n");
    assert!(
        e[0].message.contains("unknown section `frobnicate`") && e[0].message.contains("`apps`"),
        "{}",
        e[0]
    );
}

#[test]
fn library_errors_are_put_in_words_about_the_key() {
    let e = errors("server:\n  workers: four\n");
    assert_eq!((e[0].line, e[0].column), (Some(2), Some(12)), "{}", e[0]);
    assert!(
        e[0].message.contains("server.workers")
            && e[0].message.contains("`four` is not a whole number"),
        "{}",
        e[0]
    );
    assert!(!e[0].message.contains("invalid digit"), "{}", e[0]);
    let e = errors("sessions:\n  cookie: { secure: maybe }\n");
    assert!(
        e[0].message
            .contains("`maybe` is not a boolean: expected `true` or `false`"),
        "{}",
        e[0]
    );
    let e = errors("apps: { id: a }\n");
    assert!(e[0].message.contains("expected a list"), "{}", e[0]);
    let e = errors("policies:\n  - { priority: 1, outcome: allow }\n");
    assert!(
        e[0].message.contains("missing required key `name`"),
        "{}",
        e[0]
    );
}
