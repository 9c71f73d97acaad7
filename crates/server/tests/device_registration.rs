//! Registering a device is a deliberate act, through the live portal: a password-only
//! sign-in leaves the browser unregistered (`devices.auto_register: after_mfa`, the
//! default), so an `unregistered` policy still matches it; the user registers it from the
//! sessions page behind a fresh factor, sees it there, and removes it; a multi-factor
//! sign-in registers it by itself unless `auto_register: never`; an admin (a device source
//! with `devices:write`) removes a registration through the device API.

mod support;

use support::{
    audit, client, password, sha256_hex, sign_in, upstream, Browser, Page, Server, JANE,
};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

const CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
server:
  trusted_proxies: [127.0.0.1]
sessions: { cookie: { secure: false } }
networks:
  corporate: [10.0.0.0/8]
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_REGISTRATION_DEVICE_KEY }
  sources:
    - { name: admin, kind: uem, token_sha256: ADMIN, scopes: ["devices:write"] }
  AUTO
policies:
  - name: unregistered-browsers-refused
    priority: 10
    conditions: [ { device_state: { in: [unregistered] } } ]
    outcome: { deny: { message: Register this browser first. } }
  - name: registered-browsers
    priority: 20
    outcome: allow
  - name: office-password-only
    priority: 30
    targets: { sign_in: true }
    conditions: [ { network: { in: [corporate] } } ]
    outcome: allow
  - name: sign-in-mfa
    priority: 40
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

async fn start(auto_register: &str) -> Server {
    std::env::set_var(
        "STEPGATE_TEST_REGISTRATION_DEVICE_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("ADMIN", sha256_hex(ADMIN_TOKEN))
        .with("AUTO", auto_register)
        .demo_users()
        .start()
        .await
}

/// A browser whose requests come through the trusted proxy from `ip`.
fn browser(ip: &str) -> Browser {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-for", ip.parse().unwrap());
    Browser::on(Default::default(), client().default_headers(h))
}

/// What the app answers `b` ("upstream ok" when let in).
async fn app(h: &Server, b: &Browser) -> String {
    b.get(h.at("/app"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Posts a sessions-page form (`path`, with the page's CSRF token and `fields`).
async fn post_from_sessions(
    h: &Server,
    b: &Browser,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let page = Page::open(b, &h.at("/_stepgate/sessions")).await;
    let mut form = vec![("csrf", page.field("csrf"))];
    form.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
    b.post(h.at(path)).form(&form).send().await.unwrap()
}

async fn sessions_page(h: &Server, b: &Browser) -> String {
    Page::open(b, &h.at("/_stepgate/sessions")).await.html
}

#[tokio::test]
async fn a_password_sign_in_leaves_the_browser_unregistered_until_the_user_registers_it() {
    let h = start("").await;
    let b = browser("10.1.2.3");
    let r = password(&b, &h.at("/app"), &JANE).await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Register this browser first"),
        "a password alone registers nothing"
    );
    assert!(h
        .st
        .stores
        .durable
        .list_devices("jane")
        .await
        .unwrap()
        .is_empty());
    assert!(!b.cookies(&h.base).contains("sg-device="));
    assert!(sessions_page(&h, &b)
        .await
        .contains("id=\"register-device\""));

    // Registering needs a fresh second factor: the step-up page first.
    let r = post_from_sessions(&h, &b, "/_stepgate/devices/register", &[]).await;
    assert!(
        r.url().path().ends_with("/_stepgate/step-up"),
        "{}",
        r.url()
    );
    let r = Page::read(r).await.submit_code(&b, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    assert!(h
        .st
        .stores
        .durable
        .list_devices("jane")
        .await
        .unwrap()
        .is_empty());
    let r = post_from_sessions(&h, &b, "/_stepgate/devices/register", &[]).await;
    assert!(
        r.url()
            .as_str()
            .ends_with("/_stepgate/sessions?done=device"),
        "{}",
        r.url()
    );
    let devices = h.st.stores.durable.list_devices("jane").await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].data["state"], "registered");
    assert_eq!(audit(&h.st, Some("device.registered")).await.len(), 1);
    assert_eq!(app(&h, &b).await, "upstream ok");

    // Listed as this browser, and removable by the user: unregistered again.
    let page = sessions_page(&h, &b).await;
    assert!(page.contains("this browser"), "{page}");
    assert!(!page.contains("id=\"register-device\""));
    let id = devices[0].id.clone();
    let r = post_from_sessions(&h, &b, "/_stepgate/devices/remove", &[("id", &id)]).await;
    assert_eq!(r.status(), 200);
    assert!(h
        .st
        .stores
        .durable
        .list_devices("jane")
        .await
        .unwrap()
        .is_empty());
    assert!(app(&h, &b).await.contains("Register this browser first"));
    // Someone else's or a made-up id removes nothing.
    let r = post_from_sessions(&h, &b, "/_stepgate/devices/remove", &[("id", "mac-1")]).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_multi_factor_sign_in_registers_the_browser_unless_auto_register_is_never() {
    let h = start("").await;
    let b = browser("203.0.113.9");
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(
        r.text().await.unwrap(),
        "upstream ok",
        "after_mfa registers it"
    );
    let id = h.st.stores.durable.list_devices("jane").await.unwrap()[0]
        .id
        .clone();

    // An admin removes the registration through the device API.
    let api = reqwest::Client::new();
    let url = h.at(&format!("/_stepgate/api/devices/{id}"));
    let r = api
        .delete(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(app(&h, &b).await.contains("Register this browser first"));
    let r = api
        .delete(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = api.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let h = start("auto_register: never").await;
    let b = browser("203.0.113.9");
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(1)).await;
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Register this browser first"));
    assert!(h
        .st
        .stores
        .durable
        .list_devices("jane")
        .await
        .unwrap()
        .is_empty());
}
