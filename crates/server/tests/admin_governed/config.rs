//! The configuration's errors about the admin app, in words.

/// The configuration's errors, in words.
fn errors(yaml: &str) -> String {
    match stepgate_config::load_str("stepgate.yaml", yaml, None) {
        Ok(_) => panic!("loaded:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_admin_app_is_known_to_the_policies_and_its_id_is_its_own() {
    let policy = |app: &str| {
        format!("policies:\n  - {{ name: p, priority: 1, targets: {{ apps: [{app}] }}, outcome: allow }}\n")
    };
    // Targeted like an app under `apps`.
    let cfg = stepgate_config::load_str("stepgate.yaml", &policy("stepgate-admin"), None).unwrap();
    assert_eq!(cfg.admin.app, "stepgate-admin");

    // An unknown id's error lists it.
    let e = errors(&format!(
        "apps: [{{ id: wiki, hosts: [w.test] }}]\n{}",
        policy("nope")
    ));
    assert!(e.contains("unknown app id `nope`"), "{e}");
    assert!(e.contains("stepgate-admin, wiki"), "{e}");

    // An app under `apps` may not take it: the error names the file, the line and the key.
    let e = errors(
        "apps:\n  - id: wiki\n    hosts: [w.test]\n  - id: stepgate-admin\n    hosts: [a.test]\n",
    );
    assert!(e.contains("stepgate.yaml:4"), "{e}");
    assert!(
        e.contains("app id `stepgate-admin` is stepgate's own admin app (admin.app names it)"),
        "{e}"
    );

    // Renamed: the new id is the admin app's, and the old one is free.
    let renamed = format!(
        "admin: {{ app: it-admin }}\napps: [{{ id: stepgate-admin, hosts: [a.test] }}]\n{}",
        policy("it-admin")
    );
    let cfg = stepgate_config::load_str("stepgate.yaml", &renamed, None).unwrap();
    assert_eq!(cfg.admin.app, "it-admin");
    let e = errors("admin: { app: \"it admin\" }\n");
    assert!(e.contains("admin.app `it admin`"), "{e}");
}
