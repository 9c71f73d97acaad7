//! MFA frequency across sign-ins, through the live portal, with a 1-minute window: after
//! jane passed MFA on a browser (registered as a device by that sign-in), a new sign-in on
//! the same browser within the window asks for the password only — after signing out, too;
//! another browser, "sign out everywhere", and the window passing each bring MFA back.

mod support;

use support::{password, sign_in, upstream, Browser, Page, Server, JANE};

const CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
sessions: { cookie: { secure: false } }
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_MFA_FREQUENCY_DEVICE_KEY }
policies:
  - name: sign-in-mfa-every-minute
    priority: 10
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2, mfa_frequency: 1m } }
  - name: everyone
    priority: 20
    outcome: allow
"#;

/// Where jane's password leads `b`: the app (`/app`) or the step-up page.
async fn after_password(h: &Server, b: &Browser) -> String {
    password(b, &h.at("/app"), &JANE)
        .await
        .url()
        .path()
        .to_string()
}

/// Signs out with the sessions page's form (`everywhere`: "sign out everywhere").
async fn sign_out(h: &Server, b: &Browser, everywhere: bool) {
    let page = Page::open(b, &h.at("/_stepgate/sessions")).await;
    let path = if everywhere {
        "/_stepgate/logout-all"
    } else {
        "/_stepgate/logout"
    };
    let r = b
        .post(h.at(path))
        .form(&[("csrf", page.field("csrf"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(b.session_id(&h.base).is_none());
}

#[tokio::test]
async fn within_the_window_the_same_device_signs_in_with_the_password_alone() {
    std::env::set_var(
        "STEPGATE_TEST_MFA_FREQUENCY_DEVICE_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .demo_users()
        .start()
        .await;
    let b = Browser::new();
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    // Signed out and in again on the same browser, within the minute: the password alone.
    sign_out(&h, &b, false).await;
    assert_eq!(after_password(&h, &b).await, "/app");
    // Another browser has no such memory.
    assert_eq!(
        after_password(&h, &Browser::new()).await,
        "/_stepgate/step-up"
    );

    // "Sign out everywhere" forgets it.
    sign_out(&h, &b, true).await;
    assert_eq!(after_password(&h, &b).await, "/_stepgate/step-up");

    // MFA again (the pending sign-in's step-up), then the window passes.
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(1)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    let mfa_at = std::time::Instant::now();
    sign_out(&h, &b, false).await;
    assert_eq!(after_password(&h, &b).await, "/app");
    sign_out(&h, &b, false).await;
    tokio::time::sleep(std::time::Duration::from_secs(61).saturating_sub(mfa_at.elapsed())).await;
    assert_eq!(after_password(&h, &b).await, "/_stepgate/step-up");
}

#[tokio::test]
async fn a_new_password_forgets_the_mfa_the_device_remembers() {
    std::env::set_var(
        "STEPGATE_TEST_MFA_FREQUENCY_DEVICE_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .demo_users()
        .start()
        .await;
    let b = Browser::new();
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    sign_out(&h, &b, false).await;
    assert_eq!(after_password(&h, &b).await, "/app");
    sign_out(&h, &b, false).await;

    // The password is reset (as the account page or an admin does).
    let jane = support::user(&h.st, "jane").await;
    const NEW: support::Person = support::Person {
        password: "correct horse battery staple 7391",
        ..JANE
    };
    h.st.authn.set_password(&jane, NEW.password).await.unwrap();
    let r = password(&b, &h.at("/app"), &NEW).await;
    assert_eq!(r.url().path(), "/_stepgate/step-up");
}
