//! Drafts through the admin API: validated as a reload is, saved, diffed, rolled back and
//! audited; with `policy_edits` off, saves are refused and the files rule.

use reqwest::Method;
use serde_json::json;
use stepgate_store::SecretKey;

use crate::common::*;
use crate::support::{audit, upstream, Server};

#[tokio::test]
async fn drafts_are_validated_saved_diffed_rolled_back_and_audited() {
    // A data directory of the test's, so that a second node can open the same store.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let key = SecretKey::generate();
    let node = |demo_users: bool| {
        let data_dir = data_dir.clone();
        let b = Server::build(CONFIG)
            .key(key.clone())
            .in_file("stepgate.yaml")
            .configure(move |c| c.server.data_dir = data_dir);
        if demo_users {
            b.demo_users()
        } else {
            b
        }
    };
    let s = node(true)
        .with("UPSTREAM", upstream::text("upstream").await)
        .start()
        .await;
    let t = admin_token(&s).await;
    let jane = signed_in(&s).await;
    assert_eq!(reports(&s, &jane).await, 200, "the files' policies allow");
    let (status, v) = call(&s, Method::GET, "/policies/versions", &t, None).await;
    assert_eq!(
        (status, &v["items"], &v["policy_edits"]),
        (200, &json!([]), &json!("store"))
    );

    let (status, v1) = save(&s, &t, OPEN, Some(0)).await;
    assert_eq!((status, &v1["version"]), (201, &json!(1)), "{v1}");
    let (status, v2) = save(&s, &t, CLOSED, Some(1)).await;
    assert_eq!((status, &v2["version"]), (201, &json!(2)), "{v2}");
    assert_eq!(
        reports(&s, &jane).await,
        403,
        "the saved set decides the next request"
    );

    // A bad draft changes nothing; so does a draft based on an old version.
    let (status, p) = save(&s, &t, BAD, Some(2)).await;
    assert_positioned(status, &p);
    let (status, p) = save(&s, &t, OPEN, Some(1)).await;
    assert_eq!(status, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("version 2"), "{p}");
    assert_eq!(reports(&s, &jane).await, 403);

    let (status, d) = call(&s, Method::GET, "/policies/versions/2/diff", &t, None).await;
    assert_eq!(
        (status, &d["added"], &d["removed"]),
        (200, &json!(4), &json!(0)),
        "{d}"
    );
    assert!(
        d["diff"]
            .as_str()
            .unwrap()
            .contains("+  - name: reports-closed"),
        "{d}"
    );

    let (status, v3) = call(&s, Method::POST, "/policies/versions/1/rollback", &t, None).await;
    assert_eq!(
        (status, &v3["version"], &v3["rollback_of"]),
        (201, &json!(3), &json!(1)),
        "{v3}"
    );
    assert_eq!(reports(&s, &jane).await, 200, "rolled back");
    let (_, shown) = call(&s, Method::GET, "/policies/versions/3", &t, None).await;
    assert_eq!(
        (&shown["text"], &shown["in_force"]),
        (&json!(OPEN), &json!(true))
    );

    let saved = audit(&s.st, Some("policy.saved")).await;
    let versions: Vec<_> = saved.iter().map(|e| e.detail["version"].clone()).collect();
    assert_eq!(
        versions,
        [json!(1), json!(2), json!(3)],
        "every change, and only those"
    );
    assert!(saved.iter().all(|e| e
        .actor
        .as_deref()
        .is_some_and(|a| a.starts_with("admin:token:policy-admin-"))));
    assert_eq!(saved[2].detail["rollback_of"], 1);

    // A node started on the same store runs the newest version from its first request.
    let (_, v4) = save(&s, &t, CLOSED, Some(3)).await;
    assert_eq!(v4["version"], 4, "{v4}");
    let later = node(false)
        .with("UPSTREAM", upstream::text("upstream").await)
        .start()
        .await;
    let jane = signed_in(&later).await;
    assert_eq!(
        reports(&later, &jane).await,
        403,
        "the newest stored version, at start"
    );
}

#[tokio::test]
async fn with_edits_off_saves_are_refused_and_the_files_rule() {
    let s = Server::build(&CONFIG.replace("policy_edits: store", "policy_edits: yaml"))
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await;
    let t = admin_token(&s).await;
    let (status, p) = save(&s, &t, CLOSED, None).await;
    assert_eq!(status, 409, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("admin.policy_edits"),
        "{p}"
    );
    let (_, v) = call(&s, Method::GET, "/policies/versions", &t, None).await;
    assert_eq!(
        (&v["items"], &v["policy_edits"]),
        (&json!([]), &json!("yaml"))
    );
}
