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

/// `devices.cookie.key_file`: the key in a file beside the configuration (a relative path)
/// signs the device cookie, and the environment variable is not needed; a key file that
/// cannot be read stops the signals from being set up, with the key's name in the message,
/// rather than silently running without device cookies.
#[tokio::test]
async fn the_device_cookie_key_can_come_from_a_file_beside_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("device.key"),
        "fedcba9876543210fedcba9876543210fedcba9876543210\n",
    )
    .unwrap();
    let config = CONFIG.replace(
        "key_env: STEPGATE_TEST_BROWSER_DEVICE_KEY",
        "key_file: device.key, key_env: STEPGATE_TEST_DEVICE_KEY_SURELY_UNSET",
    );
    let h = Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .demo_users()
        .in_dir(dir)
        .start()
        .await;
    let b = Browser::new();
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(
        r.text().await.unwrap(),
        "upstream ok",
        "the browser was registered with the key from the file"
    );
    assert!(b.cookies(&h.base).contains("sg-device="));

    let missing = tempfile::tempdir().unwrap();
    let cfg = stepgate_config::load_str("missing.yaml", &config, Some(missing.path())).unwrap();
    let Err(e) = stepgate_server::access::signals::Signals::from_config(&cfg) else {
        panic!("an unreadable key file is an error");
    };
    let e = e.to_string();
    assert!(
        e.contains("devices.cookie.key_file: cannot read") && e.contains("device.key"),
        "{e}"
    );
}
