//! A browser seen for the first time is registered as a known-but-unmanaged device at
//! sign-in, with a long-lived signed cookie that ties later requests to it.

use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use stepgate_server::{build_state, demo, serve_on, ServeOptions};
use stepgate_store::SecretKey;

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

fn field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in:\n{html}"))
        + needle.len();
    html[i..].split('"').next().unwrap().to_string()
}

fn totp(offset: i64) -> String {
    let seed = totp_rs::Secret::Encoded(demo::USERS[0].totp_base32.into())
        .to_bytes()
        .unwrap();
    let data = stepgate_authn::totp::TotpData {
        algorithm: stepgate_authn::config::TotpAlgorithm::Sha1,
        digits: 6,
        period: 30,
        last_step: None,
    };
    stepgate_authn::totp::generate(
        &data,
        &seed,
        (chrono::Utc::now().timestamp() + offset * 30) as u64,
    )
}

#[tokio::test]
async fn first_sign_in_registers_the_browser_and_later_requests_are_tied_to_it() {
    std::env::set_var(
        "STEPGATE_TEST_BROWSER_DEVICE_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let dir = tempfile::tempdir().unwrap();
    let app = axum::Router::new().fallback(axum::routing::any(|| async { "upstream ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = stepgate_config::load_str(
        "t.yaml",
        &CONFIG.replace("UPSTREAM", &up.to_string()),
        Some(dir.path()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    cfg.base_dir = dir.path().to_path_buf();
    cfg.listen = addr;
    cfg.server.public_url = Some(marked_yaml::Spanned::new(
        marked_yaml::Span::new_blank(),
        format!("http://127.0.0.1:{}", addr.port()),
    ));
    let key = SecretKey::generate();
    let st = build_state(cfg, key.clone(), ServeOptions::default())
        .await
        .unwrap();
    demo::seed(&st, &key).await.unwrap();
    let s2 = st.clone();
    tokio::spawn(async move { serve_on(s2, listener).await.unwrap() });
    let base = format!("http://127.0.0.1:{}", addr.port());

    let jar = Arc::new(Jar::default());
    let c = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .build()
        .unwrap();
    for (round, offset) in [(1, 0), (2, 1)] {
        let page = c
            .get(format!("{base}/app"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let r = c
            .post(format!("{base}/_stepgate/login"))
            .form(&[
                ("csrf", field(&page, "csrf")),
                ("t", field(&page, "t")),
                ("username", "jane".into()),
                ("password", demo::USERS[0].password.into()),
            ])
            .send()
            .await
            .unwrap();
        let page = r.text().await.unwrap();
        let r = c
            .post(format!("{base}/_stepgate/step-up/totp"))
            .form(&[
                ("csrf", field(&page, "csrf")),
                ("t", field(&page, "t")),
                ("code", totp(offset)),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.text().await.unwrap(),
            "upstream ok",
            "round {round}: the registered browser is let in"
        );
        let cookies = jar
            .cookies(&base.parse().unwrap())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            cookies.contains("sg-device="),
            "round {round}: the browser holds its device cookie: {cookies}"
        );
        let devices = st.stores.durable.list_devices("jane").await.unwrap();
        assert_eq!(
            devices.len(),
            1,
            "round {round}: one device for this browser, not one per sign-in"
        );
        assert_eq!(devices[0].data["state"], "registered");
        if round == 1 {
            let id = cookies
                .split("; ")
                .find_map(|c| c.strip_prefix("stepgate_session="))
                .unwrap()
                .to_string();
            st.stores.hot.delete_session(&id).await.unwrap();
        }
    }

    // The same session without the device cookie is an unknown device: refused.
    let cookies = jar
        .cookies(&base.parse().unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let session = cookies
        .split("; ")
        .find(|c| c.starts_with("stepgate_session="))
        .unwrap()
        .to_string();
    let r = reqwest::Client::new()
        .get(format!("{base}/app"))
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
