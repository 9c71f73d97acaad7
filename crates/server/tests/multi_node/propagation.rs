//! What a user or an admin does on one node holds on every node as soon as the change feed
//! delivers it (milliseconds; never the cache TTL, 10 minutes here).

use std::sync::Arc;
use std::time::Duration;

use stepgate_store::ChangeFeed;

use crate::common::*;
use crate::support;
use crate::support::{client, password, redirects, upstream, user, Browser, Page, JANE};

#[tokio::test]
async fn what_one_node_does_holds_on_every_node_on_the_next_request() {
    let Some(b) = backends(None) else { return };
    let up = upstream::text("upstream").await;
    let (a, bee, c) = (node(&b, up).await, node(&b, up).await, node(&b, up).await);
    let nodes = [&a, &bee, &c];
    // One configuration, one version on every node; each listening to the others.
    let mut versions = Vec::new();
    for n in nodes {
        let details: serde_json::Value = reqwest::get(n.at("/readyz?details"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(details["cache"]["in_use"], true, "{details}");
        versions.push(details["config_version"].as_str().unwrap().to_string());
    }
    assert!(versions[0].starts_with("sha256:"), "{versions:?}");
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");

    // A sign-in on A is honoured on B and C, and cached there.
    let (browser, first) = signed_in(&a).await;
    for n in nodes {
        assert_allowed(n, &first, "/", "signed in on A").await;
        assert_allowed(n, &first, "/", "from the cache").await;
    }
    let (status, location) = answer(&a, &first, "/admin").await;
    assert_eq!(status, 303, "the admin route needs MFA");
    assert!(location.contains("/step-up"), "{location}");

    // A step-up on B counts on A; the id it replaced is refused on A and C, which had it
    // cached.
    let r = browser.get(app(&bee, "/admin")).send().await.unwrap();
    assert!(r.url().path().ends_with("/step-up"), "{}", r.url());
    let r = Page::read(r)
        .await
        .submit_code(&browser, &JANE.code(0))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/admin", "stepped up on B and back");
    let stepped = browser.session_id(&app(&a, "/")).unwrap();
    assert_ne!(stepped, first, "a step-up rotates the id");
    assert_sent_to_sign_in_once_heard(&a, &first, "the replaced id, on A").await;
    assert_sent_to_sign_in_once_heard(&c, &first, "the replaced id, on C").await;
    assert_allowed(&a, &stepped, "/admin", "the step-up made on B, on A").await;
    assert_allowed(&c, &stepped, "/admin", "the step-up made on B, on C").await;

    // A sign-out on C ends the session on A and B, which had it cached.
    assert_allowed(&bee, &stepped, "/", "cached on B").await;
    let r = client()
        .redirect(redirects(false))
        .build()
        .unwrap()
        .post(app(&c, "/_stepgate/logout"))
        .header("cookie", format!("stepgate_session={stepped}"))
        .form(&[("csrf", c.st.signer.csrf_token(&stepped))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed out on C");
    assert_sent_to_sign_in_once_heard(&a, &stepped, "signed out on C, on A").await;
    assert_sent_to_sign_in_once_heard(&bee, &stepped, "signed out on C, on B").await;

    // "Sign out everywhere" on B ends every session of jane's on A and C.
    let (_, x) = signed_in(&a).await;
    let (_, y) = signed_in(&c).await;
    for n in [&a, &c] {
        assert_allowed(n, &x, "/", "cached").await;
        assert_allowed(n, &y, "/", "cached").await;
    }
    let jane = user(&bee.st, "jane").await;
    bee.st.sessions.end_all(&jane.id).await.unwrap();
    for n in [&a, &c] {
        assert_sent_to_sign_in_once_heard(n, &x, "signed out everywhere on B").await;
        assert_sent_to_sign_in_once_heard(n, &y, "signed out everywhere on B").await;
    }

    // Failed passwords on A lock the account on B and C too (the counters live in Redis).
    let wrong = support::Person {
        password: "not-her-password",
        ..JANE
    };
    for _ in 0..3 {
        let r = password(&Browser::new(), &app(&a, "/"), &wrong).await;
        assert_ne!(r.status(), 200, "a wrong password is refused");
    }
    for n in [&bee, &c] {
        let r = password(&Browser::new(), &app(n, "/"), &JANE).await;
        assert_eq!(r.status(), 429, "locked on every node");
    }
    a.st.authn.unlock(&jane, "test").await.unwrap();

    // An admin disabling jane from the command line (its own store handles, no server)
    // ends her sessions on every node at once.
    let (_, z) = signed_in(&bee).await;
    for n in nodes {
        assert_allowed(n, &z, "/", "cached").await;
    }
    let cli = stepgate_store::open_stores(
        &a.st.runtime.load().config.store,
        &a.dir.path().join("data"),
        &b.key,
    )
    .await
    .unwrap();
    let (cli, announcer) = stepgate_server::session::cache::wrap(cli, Duration::ZERO);
    announcer.announce(Arc::new(ChangeFeed::connect(&b.redis).await.unwrap()));
    let mut disabled = jane.clone();
    disabled.disabled = true;
    cli.durable.update_user(&disabled).await.unwrap();
    for n in nodes {
        assert_sent_to_sign_in_once_heard(n, &z, "jane disabled by the CLI").await;
    }

    drop_backends(&b).await;
}
