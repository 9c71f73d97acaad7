//! The CAEP receiver over real HTTP: a `device-compliance-change` SET signed with a key made
//! here makes the live session on that device get denied on its very next request, with the
//! failing check on the remediation page; bad signatures, wrong audiences and replayed `jti`s
//! are refused with RFC 8935 errors, and everything is audited.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::cookie::Jar;
use serde_json::json;
use stepgate_server::{build_state, demo, serve_on, ServeOptions, Shared};
use stepgate_store::{AuditQuery, SecretKey, SecretsConfig};

const ISS: &str = "https://uem.example/";
const AUD: &str = "https://stepgate.example/";
const DEVICE_KEY: &str = "device-cookie-key-for-tests-0123456789abcdef";

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_DEVICE_KEY }
  caep:
    transmitters:
      - { name: hexnode, issuer: "https://uem.example/", audience: "https://stepgate.example/", key_file: KEYFILE, algorithms: [ES256] }
policies:
  - name: compliant-devices-only
    priority: 10
    targets: { apps: [console] }
    conditions:
      - device_compliance: { compliant: false }
    outcome: { deny: { message: This device is not compliant. } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 50
    outcome: allow
"#;

struct Harness {
    st: Shared,
    base: String,
    key: rcgen::KeyPair,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    std::env::set_var("STEPGATE_TEST_DEVICE_KEY", DEVICE_KEY);
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let key_file = dir.path().join("uem.pem");
    std::fs::write(&key_file, key.public_key_pem()).unwrap();
    let app = axum::Router::new().fallback(axum::routing::any(|| async { "upstream ok" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = CONFIG
        .replace("UPSTREAM", &up.to_string())
        .replace("KEYFILE", &key_file.display().to_string());
    let mut cfg = stepgate_config::load_str("test.yaml", &text, Some(dir.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    cfg.base_dir = dir.path().to_path_buf();
    cfg.listen = addr;
    cfg.server.public_url = Some(marked_yaml::Spanned::new(
        marked_yaml::Span::new_blank(),
        format!("http://127.0.0.1:{}", addr.port()),
    ));
    let sk = SecretKey::generate();
    cfg.secrets = SecretsConfig::default();
    let st = build_state(cfg, sk.clone(), ServeOptions::default())
        .await
        .unwrap();
    demo::seed(&st, &sk).await.unwrap();
    let s2 = st.clone();
    tokio::spawn(async move { serve_on(s2, listener).await.unwrap() });
    Harness {
        st,
        base: format!("http://127.0.0.1:{}", addr.port()),
        key,
        _dir: dir,
    }
}

fn field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in:\n{html}"))
        + needle.len();
    html[i..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

fn totp_code() -> String {
    let seed = totp_rs::Secret::Encoded(demo::USERS[0].totp_base32.into())
        .to_bytes()
        .unwrap();
    let data = stepgate_authn::totp::TotpData {
        algorithm: stepgate_authn::config::TotpAlgorithm::Sha1,
        digits: 6,
        period: 30,
        last_step: None,
    };
    stepgate_authn::totp::generate(&data, &seed, chrono::Utc::now().timestamp() as u64)
}

/// Password then TOTP, on a browser carrying the device cookie of `mac-0042`.
async fn signed_in_on_device(h: &Harness) -> reqwest::Client {
    let now = chrono::Utc::now();
    let mut device = stepgate_signals::device::Device::new("mac-0042");
    device.owner = Some("jane".into());
    device.platform = Some("macos".into());
    device.last_sync = Some(now);
    stepgate_server::signals::save_device(&h.st, &device, now)
        .await
        .unwrap();
    let signer = stepgate_signals::device::DeviceCookieSigner::new(DEVICE_KEY.as_bytes()).unwrap();
    let jar = Arc::new(Jar::default());
    jar.add_cookie_str(
        &format!("sg-device={}; Path=/", signer.issue("mac-0042", now)),
        &h.base.parse().unwrap(),
    );
    let c = reqwest::Client::builder()
        .cookie_provider(jar)
        .build()
        .unwrap();
    let page = c
        .get(format!("{}/app", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = c
        .post(format!("{}/_stepgate/login", h.base))
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
        .post(format!("{}/_stepgate/step-up/totp", h.base))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("code", totp_code()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    c
}

fn sign(key: &rcgen::KeyPair, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("secevent+jwt".into());
    let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&h, claims, &enc).unwrap()
}

fn compliance_set(jti: &str, aud: &str, status: &str) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": ISS, "aud": aud, "jti": jti, "iat": now - 2,
        "sub_id": {
            "format": "complex",
            "device": {"format": "opaque", "id": "mac-0042"},
            "user": {"format": "email", "email": "jane@example.com"}
        },
        "events": {
            "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change": {
                "current_status": status,
                "previous_status": "compliant",
                "initiating_entity": "policy",
                "reason_user": {"en": "Turn FileVault back on in System Settings"},
                "event_timestamp": now - 1
            }
        }
    })
}

async fn push(h: &Harness, token: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_stepgate/caep/events", h.base))
        .header("content-type", "application/secevent+jwt")
        .body(token.to_string())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

async fn audit_count(st: &Shared, kind: &str) -> usize {
    st.stores
        .durable
        .list_audit(&AuditQuery {
            kind: Some(kind.into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn compliance_change_denies_the_live_session_at_once() {
    let h = start().await;
    let browser = signed_in_on_device(&h).await;
    let r = browser.get(format!("{}/app", h.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    let set = sign(&h.key, &compliance_set("set-1", AUD, "not-compliant"));
    let (s, b) = push(&h, &set).await;
    assert_eq!(s, 202, "{b}");

    // The very next request is denied, and the page names the failing check.
    let r = browser.get(format!("{}/app", h.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("This device is not compliant."), "{page}");
    assert!(
        page.contains("Turn FileVault back on in System Settings"),
        "{page}"
    );

    // Fixed: the next SET makes it compliant again, and the session goes through.
    let (s, _) = push(
        &h,
        &sign(&h.key, &compliance_set("set-2", AUD, "compliant")),
    )
    .await;
    assert_eq!(s, 202);
    let r = browser.get(format!("{}/app", h.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    assert_eq!(audit_count(&h.st, "caep.accepted").await, 2);
}

#[tokio::test]
async fn bad_signature_wrong_audience_and_replay_are_refused_and_audited() {
    let h = start().await;
    let other = rcgen::KeyPair::generate().unwrap();
    let (s, b) = push(
        &h,
        &sign(&other, &compliance_set("set-1", AUD, "not-compliant")),
    )
    .await;
    assert_eq!((s, b["err"].as_str()), (400, Some("invalid_key")), "{b}");
    let (s, b) = push(
        &h,
        &sign(
            &h.key,
            &compliance_set("set-2", "https://elsewhere.example/", "not-compliant"),
        ),
    )
    .await;
    assert_eq!(
        (s, b["err"].as_str()),
        (400, Some("invalid_audience")),
        "{b}"
    );
    let good = sign(&h.key, &compliance_set("set-3", AUD, "compliant"));
    assert_eq!(push(&h, &good).await.0, 202);
    let (s, b) = push(&h, &good).await;
    assert_eq!(
        (s, b["err"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );
    assert!(b["description"].as_str().unwrap().contains("replay"), "{b}");
    // A forged SET did not burn the id of the real one sent after it.
    let forged = sign(&other, &compliance_set("set-4", AUD, "not-compliant"));
    assert_eq!(push(&h, &forged).await.0, 400);
    let real = sign(&h.key, &compliance_set("set-4", AUD, "not-compliant"));
    assert_eq!(push(&h, &real).await.0, 202);

    let rejected =
        h.st.stores
            .durable
            .list_audit(&AuditQuery {
                kind: Some("caep.rejected".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    let reasons: Vec<String> = rejected
        .iter()
        .map(|e| e.detail["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "bad_signature",
            "wrong_audience",
            "replayed_jti",
            "bad_signature"
        ]
    );
    assert_eq!(audit_count(&h.st, "caep.accepted").await, 2);
}
