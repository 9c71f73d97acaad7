//! SIGHUP reload: a valid file swaps the policy set atomically; an invalid one is refused
//! and the running configuration stays.

use stepgate_server::{build_state, reload, ServeOptions};
use stepgate_store::SecretKey;

const BASE: &str = "sessions: { cookie: { secure: false } }\npolicies:\n  - { name: first, priority: 1, outcome: allow }\n";

#[tokio::test]
async fn reload_swaps_valid_configurations_and_keeps_the_old_one_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stepgate.yaml");
    std::fs::write(&path, BASE).unwrap();
    let cfg = stepgate_config::load(&path).unwrap();
    let st = build_state(
        cfg,
        SecretKey::generate(),
        ServeOptions {
            demo: false,
            config_path: Some(path.clone()),
        },
    )
    .await
    .unwrap();
    let names = |st: &stepgate_server::Shared| {
        st.runtime
            .load()
            .config
            .policy_set
            .policy_names()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&st), ["first"]);

    std::fs::write(&path, "policies:\n  - { name: second, priority: 1, outcome: deny }\n  - { name: third, priority: 2, outcome: allow }\n").unwrap();
    assert!(reload(&st), "a valid file is taken");
    assert_eq!(names(&st), ["second", "third"]);

    let before = st.runtime.load_full();
    std::fs::write(&path, "policies:\n  - { name: broken, priority: 1, conditions: [ { network: { in: [10.0.0.0/33] } } ], outcome: allow }\n").unwrap();
    assert!(!reload(&st), "an invalid file is refused");
    assert!(
        std::sync::Arc::ptr_eq(&before, &st.runtime.load_full()),
        "the running configuration is untouched"
    );
    assert_eq!(names(&st), ["second", "third"]);
}

// Shared with the binary's tests, which also check each refusal's wording and position.
#[allow(dead_code)]
#[path = "../../../tests/support/hostile.rs"]
mod hostile;

/// Issue 16, item 8: every hostile file is refused and the running configuration stays,
/// reloaded from a runtime thread with the default 2 MiB stack.
#[tokio::test]
async fn reload_refuses_every_hostile_file_and_keeps_the_running_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stepgate.yaml");
    std::fs::write(&path, BASE).unwrap();
    let st = build_state(
        stepgate_config::load(&path).unwrap(),
        SecretKey::generate(),
        ServeOptions {
            demo: false,
            config_path: Some(path.clone()),
        },
    )
    .await
    .unwrap();
    let before = st.runtime.load_full();
    for case in hostile::CASES {
        assert_eq!(case.write(dir.path()), path);
        assert!(!reload(&st), "{} was taken", case.name);
        assert!(
            std::sync::Arc::ptr_eq(&before, &st.runtime.load_full()),
            "{}: the running configuration changed",
            case.name
        );
    }
    let names: Vec<String> = st
        .runtime
        .load()
        .config
        .policy_set
        .policy_names()
        .map(str::to_string)
        .collect();
    assert_eq!(names, ["first"]);
}
