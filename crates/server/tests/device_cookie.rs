//! A browser seen for the first time is registered as a known-but-unmanaged device at
//! sign-in, with a long-lived signed cookie that ties later requests to it.

mod support;

use support::{sign_in, upstream, Browser, Server, JANE};

const CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
sessions: { cookie: { secure: false } }
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_BROWSER_DEVICE_KEY }
policies:
  - name: known-browsers-only
    priority: 10
    conditions: [ { device_state: { in: [registered] } } ]
    outcome: allow
  - name: sign-in-mfa
    priority: 20
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

#[tokio::test]
async fn first_sign_in_registers_the_browser_and_later_requests_are_tied_to_it() {
    std::env::set_var(
        "STEPGATE_TEST_BROWSER_DEVICE_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .demo_users()
        .start()
        .await;

    let b = Browser::new();
    for (round, offset) in [(1, 0), (2, 1)] {
        let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(offset)).await;
        assert_eq!(
            r.text().await.unwrap(),
            "upstream ok",
            "round {round}: the registered browser is let in"
        );
        let cookies = b.cookies(&h.base);
        assert!(
            cookies.contains("sg-device="),
            "round {round}: the browser holds its device cookie: {cookies}"
        );
        let devices = h.st.stores.durable.list_devices("jane").await.unwrap();
        assert_eq!(
            devices.len(),
            1,
            "round {round}: one device for this browser, not one per sign-in"
        );
        assert_eq!(devices[0].data["state"], "registered");
        if round == 1 {
            let id = b.session_id(&h.base).unwrap();
            h.st.stores.hot.delete_session(&id).await.unwrap();
        }
    }

    // The same session without the device cookie is an unknown device: refused.
    let cookies = b.cookies(&h.base);
    let session = cookies
        .split("; ")
        .find(|c| c.starts_with("stepgate_session="))
        .unwrap()
        .to_string();
    let r = reqwest::Client::new()
        .get(h.at("/app"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "no device cookie: the policy sees an unregistered device"
    );
}
