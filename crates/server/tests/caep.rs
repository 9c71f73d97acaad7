//! The CAEP receiver over real HTTP: a `device-compliance-change` SET signed with a key made
//! here makes the live session on that device get denied on its very next request, with the
//! failing check on the remediation page; bad signatures, wrong audiences and replayed `jti`s
//! are refused with RFC 8935 errors, and everything is audited. Floods of bad SETs, from one
//! address or naming one issuer from many, are cut off by `devices.rate_limit.caep` before
//! they are verified or audited.

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
server:
  trusted_proxies: [127.0.0.1]
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_DEVICE_KEY }
  rate_limit: RATE_LIMIT
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
    start_with_rate_limit("{}").await
}

/// Starts stepgate with `devices.rate_limit` set to `rate_limit` (a YAML flow map).
async fn start_with_rate_limit(rate_limit: &str) -> Harness {
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
        .replace("KEYFILE", &key_file.display().to_string())
        .replace("RATE_LIMIT", rate_limit);
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
    h.st.devices.save(&device, now).await.unwrap();
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
    let (s, b, _) = push_from(h, None, token).await;
    (s, b)
}

/// Pushes a SET as the client at `from` (sent in `X-Forwarded-For`; the test's own address,
/// 127.0.0.1, is a trusted proxy) or directly. The status, the body and `Retry-After`.
async fn push_from(
    h: &Harness,
    from: Option<&str>,
    token: &str,
) -> (u16, serde_json::Value, Option<u64>) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/_stepgate/caep/events", h.base))
        .header("content-type", "application/secevent+jwt")
        .body(token.to_string());
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (s, r.json().await.unwrap_or_default(), retry)
}

async fn audit_events(st: &Shared, kind: &str) -> Vec<stepgate_store::AuditEvent> {
    st.stores
        .durable
        .list_audit(&AuditQuery {
            kind: Some(kind.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn audit_total(st: &Shared) -> usize {
    st.stores
        .durable
        .list_audit(&AuditQuery::default())
        .await
        .unwrap()
        .len()
}

/// Waits until a fixed window of `secs` seconds (aligned to the epoch, as stepgate's are)
/// has just begun, so a burst sent now falls in one window; returns the window's end.
async fn window_start(secs: i64) -> i64 {
    let ms = secs * 1000;
    let now = chrono::Utc::now().timestamp_millis();
    let next = (now / ms + 1) * ms;
    tokio::time::sleep(std::time::Duration::from_millis((next - now + 20) as u64)).await;
    next + ms
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

#[tokio::test]
async fn a_flood_from_one_address_is_cut_off_and_summed_up_once_per_window() {
    const WINDOW: i64 = 5;
    const FLOODER: &str = "192.0.2.50";
    let h = start_with_rate_limit(&format!(
        "{{ caep: {{ per_address: 5/{WINDOW}s, per_issuer: 1000/1h }} }}"
    ))
    .await;
    let forger = rcgen::KeyPair::generate().unwrap();
    let before = audit_total(&h.st).await;
    let window_end = window_start(WINDOW).await;

    let mut statuses = Vec::new();
    for i in 0..30 {
        let forged = sign(
            &forger,
            &compliance_set(&format!("f-{i}"), AUD, "not-compliant"),
        );
        let (s, b, retry) = push_from(&h, Some(FLOODER), &forged).await;
        if s == 429 {
            let retry = retry.expect("a 429 says when to come back");
            assert!((1..=WINDOW as u64).contains(&retry), "Retry-After {retry}");
            assert_eq!(b["err"], "rate_limited", "{b}");
        }
        statuses.push(s);
    }
    let mut want = vec![400; 5];
    want.extend([429; 25]);
    assert_eq!(statuses, want);
    // Only the five it took were verified and audited.
    assert_eq!(audit_events(&h.st, "caep.rejected").await.len(), 5);
    assert_eq!(audit_total(&h.st).await, before + 5);

    // Other addresses are served meanwhile: refused for what they send, a good SET accepted.
    let forged = sign(&forger, &compliance_set("other-1", AUD, "not-compliant"));
    let (s, b, _) = push_from(&h, Some("198.51.100.7"), &forged).await;
    assert_eq!((s, b["err"].as_str()), (400, Some("invalid_key")), "{b}");
    let good = sign(&h.key, &compliance_set("good-1", AUD, "compliant"));
    assert_eq!(push_from(&h, Some("198.51.100.8"), &good).await.0, 202);
    assert!(
        chrono::Utc::now().timestamp_millis() < window_end,
        "the burst outlasted its {WINDOW}s window: too slow a machine for this test"
    );

    // Once the window is over, one row sums up what was dropped.
    assert!(audit_events(&h.st, "caep.rate_limited").await.is_empty());
    let wait = window_end - chrono::Utc::now().timestamp_millis() + 2_500;
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(0) as u64)).await;
    let summary = audit_events(&h.st, "caep.rate_limited").await;
    assert_eq!(summary.len(), 1, "{summary:?}");
    let d = &summary[0].detail;
    assert_eq!(d["budget"], "address", "{d}");
    assert_eq!(d["dropped"], 25, "{d}");
    assert_eq!(d["over_budget"], 1, "{d}");
    assert_eq!(d["first_over"], FLOODER, "{d}");
    assert_eq!(d["limit"], format!("5/{WINDOW}s"), "{d}");
    // The flooding address cost the log its budget plus that one row.
    assert_eq!(audit_total(&h.st).await, before + 5 + 1 + 2);

    // A new window: the address is served again.
    let good = sign(&h.key, &compliance_set("good-2", AUD, "compliant"));
    assert_eq!(push_from(&h, Some(FLOODER), &good).await.0, 202);
}

#[tokio::test]
async fn a_flood_naming_one_issuer_from_many_addresses_is_bounded_per_issuer() {
    let h = start_with_rate_limit("{ caep: { per_address: 3/1h, per_issuer: 10/1h } }").await;
    let forger = rcgen::KeyPair::generate().unwrap();
    // A good SET within the budgets is accepted.
    let good = sign(&h.key, &compliance_set("good-1", AUD, "compliant"));
    assert_eq!(push_from(&h, Some("192.0.2.1"), &good).await.0, 202);
    let before = audit_total(&h.st).await;

    // Forty forgeries naming the transmitter, each from its own address: the issuer's budget
    // (10, one already spent) is the bound, not the addresses'.
    let mut statuses = Vec::new();
    for i in 0..40 {
        let forged = sign(
            &forger,
            &compliance_set(&format!("f-{i}"), AUD, "not-compliant"),
        );
        let from = format!("198.51.100.{}", i + 1);
        statuses.push(push_from(&h, Some(&from), &forged).await.0);
    }
    let mut want = vec![400; 9];
    want.extend([429; 31]);
    assert_eq!(statuses, want);

    // Made-up issuers share one budget: naming a new one each time opens no new budget.
    let mut statuses = Vec::new();
    for i in 0..30 {
        let mut set = compliance_set(&format!("u-{i}"), AUD, "not-compliant");
        set["iss"] = json!(format!("https://uem-{i}.example/"));
        let from = format!("203.0.113.{}", i + 1);
        let (s, b, _) = push_from(&h, Some(&from), &sign(&forger, &set)).await;
        if s == 400 {
            assert_eq!(b["err"], "invalid_issuer", "{b}");
        }
        statuses.push(s);
    }
    let mut want = vec![400; 10];
    want.extend([429; 20]);
    assert_eq!(statuses, want);
    // As are tokens that name no issuer at all, or are no JWT.
    for (i, junk) in ["not a jwt", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.AA"]
        .iter()
        .enumerate()
    {
        let from = format!("203.0.113.{}", 100 + i);
        assert_eq!(push_from(&h, Some(&from), junk).await.0, 429, "{junk}");
    }
    assert_eq!(audit_total(&h.st).await, before + 9 + 10);
}
