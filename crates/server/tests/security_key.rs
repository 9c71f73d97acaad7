//! AAL3 from self-service, through the live portal: jane registers a security key from
//! her Security settings (the portal's registration ceremony, attested against the
//! configured `factors.webauthn.attestation_cas`, with webauthn-rs's software token), next
//! to a synced passkey; a route that needs AAL3 then offers exactly the security key in the
//! step-up ceremony, and passing it reaches AAL3 and the route.

mod support;

use support::{sign_in, upstream, Browser, Page, Passkey, Server, JANE};
use url::Url;
use webauthn_authenticator_rs::softtoken::{SoftToken, AAGUID};
use webauthn_authenticator_rs::WebauthnAuthenticator;

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: "http://UPSTREAM"
    routes:
      - { name: admin, path: "/admin/**", tags: [admin] }
sessions: { cookie: { secure: false } }
factors:
  webauthn:
    attestation_cas:
      - { pem_file: "CA_PEM", aaguids: ["AAGUID"], description: software token }
policies:
  - name: admin-needs-aal3
    priority: 10
    targets: { routes: [ { tags: [admin] } ] }
    outcome: { step_up: { min_aal: 3 } }
  - name: everyone
    priority: 20
    outcome: allow
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

fn origin() -> Url {
    Url::parse(support::passkey::ORIGIN).unwrap()
}

/// Posts `body` to the portal's WebAuthn endpoint `path` with the CSRF header; the JSON.
async fn ceremony(
    b: &Browser,
    h: &Server,
    path: &str,
    csrf: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let r = b
        .post(h.at(path))
        .header("x-csrf-token", csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {json}");
    json
}

#[tokio::test]
async fn a_security_key_registered_from_the_account_page_reaches_aal3_past_a_synced_passkey() {
    let (token, ca) = SoftToken::new(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("softtoken-ca.pem");
    std::fs::write(&ca_pem, ca.to_pem().unwrap()).unwrap();
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("CA_PEM", ca_pem.display())
        .with("AAGUID", AAGUID)
        .in_dir(dir)
        .demo_users()
        .start()
        .await;
    let jane = support::user(&h.st, "jane").await;
    let synced = Passkey::register(&h.st, &jane).await;

    let b = Browser::new();
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    // Security settings: "Add a security key", attested against the configured root.
    let account = Page::open(&b, &h.at("/_stepgate/account")).await;
    assert!(account.html.contains("id=\"add-security-key-button\""));
    let csrf = account.field("csrf");
    let mut key = WebauthnAuthenticator::new(token);
    let started = ceremony(
        &b,
        &h,
        "/_stepgate/webauthn/register/start",
        &csrf,
        serde_json::json!({ "kind": "security_key" }),
    )
    .await;
    let response = key
        .do_registration(
            origin(),
            serde_json::from_value(started["options"].clone()).unwrap(),
        )
        .unwrap();
    ceremony(
        &b,
        &h,
        "/_stepgate/webauthn/register/finish",
        &csrf,
        serde_json::json!({ "id": started["id"], "response": response, "label": "Desk key" }),
    )
    .await;
    let factors = h.st.stores.durable.list_factors(&jane.id).await.unwrap();
    let key_id = factors
        .iter()
        .find(|f| f.label == "Desk key")
        .and_then(|f| f.lookup_key.clone())
        .unwrap();

    // The admin route needs AAL3: the step-up ceremony offers the security key alone.
    let step = Page::open(&b, &h.at("/admin/users")).await;
    assert!(
        step.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        step.url
    );
    let t = data_token(&step.html);
    let csrf = step.field("csrf");
    let started = ceremony(
        &b,
        &h,
        "/_stepgate/webauthn/step-up/start",
        &csrf,
        serde_json::json!({ "token": t }),
    )
    .await;
    let offered: Vec<&str> = started["options"]["publicKey"]["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        offered,
        [key_id.as_str()],
        "not the synced passkey {}",
        synced.credential_id
    );

    let assertion = key
        .do_authentication(
            origin(),
            serde_json::from_value(started["options"].clone()).unwrap(),
        )
        .unwrap();
    let done = ceremony(
        &b,
        &h,
        "/_stepgate/webauthn/step-up/finish",
        &csrf,
        serde_json::json!({ "id": started["id"], "token": t, "response": assertion }),
    )
    .await;
    let to = done["redirect"].as_str().unwrap();
    let r = b
        .get(Url::parse(&h.base).unwrap().join(to).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok", "AAL3 reached");
}

/// The step-up link the page's passkey button carries (`data-token`).
fn data_token(html: &str) -> String {
    let at = html
        .find("id=\"webauthn-step-up\"")
        .expect("a passkey button");
    let rest = &html[at..];
    let i = rest.find("data-token=\"").unwrap() + "data-token=\"".len();
    rest[i..].split('"').next().unwrap().to_string()
}
