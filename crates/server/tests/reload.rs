//! SIGHUP reload: a valid file swaps the policy set atomically; an invalid one is refused
//! and the running configuration stays.

mod support;

use std::path::PathBuf;

use stepgate_server::{reload, Shared};
use support::{Server, State};

const BASE: &str = "sessions: { cookie: { secure: false } }\npolicies:\n  - { name: first, priority: 1, outcome: allow }\n";

/// A stepgate built from [`BASE`] in `stepgate.yaml`, the file `reload` re-reads; that file.
async fn reloadable() -> (State, PathBuf) {
    let s = Server::build(BASE).in_file("stepgate.yaml").state().await;
    let path = s.dir.path().join("stepgate.yaml");
    (s, path)
}

/// The names of the policies in force.
fn policy_names(st: &Shared) -> Vec<String> {
    st.runtime
        .load()
        .config
        .policy_set
        .policy_names()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn reload_swaps_valid_configurations_and_keeps_the_old_one_otherwise() {
    let (s, path) = reloadable().await;
    let st = &s.st;
    assert_eq!(policy_names(st), ["first"]);

    std::fs::write(&path, "policies:\n  - { name: second, priority: 1, outcome: deny }\n  - { name: third, priority: 2, outcome: allow }\n").unwrap();
    assert!(reload(st), "a valid file is taken");
    assert_eq!(policy_names(st), ["second", "third"]);

    let before = st.runtime.load_full();
    std::fs::write(&path, "policies:\n  - { name: broken, priority: 1, conditions: [ { network: { in: [10.0.0.0/33] } } ], outcome: allow }\n").unwrap();
    assert!(!reload(st), "an invalid file is refused");
    assert!(
        std::sync::Arc::ptr_eq(&before, &st.runtime.load_full()),
        "the running configuration is untouched"
    );
    assert_eq!(policy_names(st), ["second", "third"]);
}

// Shared with the binary's tests, which also check each refusal's wording and position.
#[allow(dead_code)]
#[path = "../../../tests/support/hostile.rs"]
mod hostile;

/// Issue 16, item 8: every hostile file is refused and the running configuration stays,
/// reloaded from a runtime thread with the default 2 MiB stack.
#[tokio::test]
async fn reload_refuses_every_hostile_file_and_keeps_the_running_configuration() {
    let (s, path) = reloadable().await;
    let st = &s.st;
    let before = st.runtime.load_full();
    for case in hostile::CASES {
        assert_eq!(case.write(s.dir.path()), path);
        assert!(!reload(st), "{} was taken", case.name);
        assert!(
            std::sync::Arc::ptr_eq(&before, &st.runtime.load_full()),
            "{}: the running configuration changed",
            case.name
        );
    }
    assert_eq!(policy_names(st), ["first"]);
}
