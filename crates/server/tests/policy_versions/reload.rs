//! Reloads: one that changes `admin.policy_edits` is refused naming the key, and a
//! version `stepgate policy rollback` wrote is put in force.

use chrono::Utc;
use reqwest::Method;
use stepgate_server::admin::tokens::{self, Scope};
use stepgate_store::new_id;

use crate::common::*;
use crate::support::{signed_in_session, user};

#[tokio::test]
async fn a_reload_that_changes_policy_edits_is_refused_naming_the_key() {
    let s = console_server("store").await;
    let path = s.dir.path().join("stepgate.yaml");
    let before = s.st.runtime.load_full();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("policy_edits: store", "policy_edits: yaml"),
    )
    .unwrap();
    match stepgate_server::app::reload::reload_checked(&s.st) {
        Err(stepgate_server::app::reload::ReloadRefused::Invalid(e)) => {
            assert!(
                e[0].contains("admin.policy_edits changed from `store` to `yaml`"),
                "{e:?}"
            );
            assert!(e[0].contains("restart"), "{e:?}");
        }
        other => panic!("taken: {other:?}"),
    }
    assert!(
        std::sync::Arc::ptr_eq(&before, &s.st.runtime.load_full()),
        "the running configuration stays"
    );
    std::fs::write(&path, text).unwrap();
    assert!(stepgate_server::reload(&s.st), "the same mode reloads");
}

#[tokio::test]
async fn a_version_the_cli_wrote_is_put_in_force_at_the_next_reload() {
    let s = console_server("store").await;
    let jane = user(&s.st, "jane").await;
    let janes = signed_in_session(&s.st, &jane, Utc::now()).await;
    // What `stepgate policy rollback` writes: a version in the store, no node told.
    stepgate_server::app::stored_policies::record(
        s.st.stores.durable.as_ref(),
        CLOSED.into(),
        None,
        "admin:cli:ops",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reports(&s, &janes).await, 200, "not heard of yet");
    let name = format!("reloader-{}", &new_id()[..8]);
    let (t, _) = tokens::create(
        s.st.stores.durable.as_ref(),
        &name,
        &[Scope::ConfigWrite],
        Utc::now() + chrono::Duration::days(1),
    )
    .await
    .unwrap();
    let (status, v) = call(&s, Method::POST, "/config/reload", &t, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(reports(&s, &janes).await, 403, "in force after the reload");
    assert_eq!(s.st.stored_policies.in_force().map(|v| v.version), Some(1));
}
