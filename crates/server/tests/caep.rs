//! The CAEP receiver over real HTTP: a `device-compliance-change` SET signed with a key made
//! here makes the live session on that device get denied on its very next request, with the
//! failing check on the remediation page; bad signatures, wrong audiences and replayed `jti`s
//! are refused with RFC 8935 errors, and everything is audited. Floods of bad SETs, from one
//! address or naming one issuer from many, are cut off by `devices.rate_limit.caep` before
//! they are verified or audited.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::{
    after_window, audit, retry_after, sign_in, upstream, window_start, Browser, Server, JANE,
};

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

async fn start() -> (Server, rcgen::KeyPair) {
    start_with_rate_limit("{}").await
}

/// Starts stepgate with `devices.rate_limit` set to `rate_limit` (a YAML flow map); the
/// transmitter's signing key.
async fn start_with_rate_limit(rate_limit: &str) -> (Server, rcgen::KeyPair) {
    std::env::set_var("STEPGATE_TEST_DEVICE_KEY", DEVICE_KEY);
    let dir = tempfile::tempdir().unwrap();
    let uem = rcgen::KeyPair::generate().unwrap();
    let key_file = dir.path().join("uem.pem");
    std::fs::write(&key_file, uem.public_key_pem()).unwrap();
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("KEYFILE", key_file.display())
        .with("RATE_LIMIT", rate_limit)
        .in_dir(dir)
        .demo_users()
        .start()
        .await;
    (h, uem)
}

/// Password then TOTP, on a browser carrying the device cookie of `mac-0042`.
async fn signed_in_on_device(h: &Server) -> Browser {
    let now = chrono::Utc::now();
    let mut device = stepgate_signals::device::Device::new("mac-0042");
    device.owner = Some("jane".into());
    device.platform = Some("macos".into());
    device.last_sync = Some(now);
    h.st.devices.save(&device, now).await.unwrap();
    let signer = stepgate_signals::device::DeviceCookieSigner::new(DEVICE_KEY.as_bytes()).unwrap();
    let b = Browser::new();
    b.jar.add_cookie_str(
        &format!("sg-device={}; Path=/", signer.issue("mac-0042", now)),
        &h.base.parse().unwrap(),
    );
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    b
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

async fn push(h: &Server, token: &str) -> (u16, serde_json::Value) {
    let (s, b, _) = push_from(h, None, token).await;
    (s, b)
}

/// Pushes a SET as the client at `from` (sent in `X-Forwarded-For`; the test's own address,
/// 127.0.0.1, is a trusted proxy) or directly. The status, the body and `Retry-After`.
async fn push_from(
    h: &Server,
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
    let (s, retry) = (r.status().as_u16(), retry_after(&r));
    (s, r.json().await.unwrap_or_default(), retry)
}

#[tokio::test]
async fn compliance_change_denies_the_live_session_at_once() {
    let (h, uem) = start().await;
    let browser = signed_in_on_device(&h).await;
    let r = browser.get(format!("{}/app", h.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    let set = sign(&uem, &compliance_set("set-1", AUD, "not-compliant"));
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
    let (s, _) = push(&h, &sign(&uem, &compliance_set("set-2", AUD, "compliant"))).await;
    assert_eq!(s, 202);
    let r = browser.get(format!("{}/app", h.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    assert_eq!(audit(&h.st, Some("caep.accepted")).await.len(), 2);
}

#[tokio::test]
async fn bad_signature_wrong_audience_and_replay_are_refused_and_audited() {
    let (h, uem) = start().await;
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
            &uem,
            &compliance_set("set-2", "https://elsewhere.example/", "not-compliant"),
        ),
    )
    .await;
    assert_eq!(
        (s, b["err"].as_str()),
        (400, Some("invalid_audience")),
        "{b}"
    );
    let good = sign(&uem, &compliance_set("set-3", AUD, "compliant"));
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
    let real = sign(&uem, &compliance_set("set-4", AUD, "not-compliant"));
    assert_eq!(push(&h, &real).await.0, 202);

    let rejected = audit(&h.st, Some("caep.rejected")).await;
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
    assert_eq!(audit(&h.st, Some("caep.accepted")).await.len(), 2);
}

#[tokio::test]
async fn a_flood_from_one_address_is_cut_off_and_summed_up_once_per_window() {
    const WINDOW: i64 = 5;
    const FLOODER: &str = "192.0.2.50";
    let (h, uem) = start_with_rate_limit(&format!(
        "{{ caep: {{ per_address: 5/{WINDOW}s, per_issuer: 1000/1h }} }}"
    ))
    .await;
    let forger = rcgen::KeyPair::generate().unwrap();
    let before = audit(&h.st, None).await.len();
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
    assert_eq!(audit(&h.st, Some("caep.rejected")).await.len(), 5);
    assert_eq!(audit(&h.st, None).await.len(), before + 5);

    // Other addresses are served meanwhile: refused for what they send, a good SET accepted.
    let forged = sign(&forger, &compliance_set("other-1", AUD, "not-compliant"));
    let (s, b, _) = push_from(&h, Some("198.51.100.7"), &forged).await;
    assert_eq!((s, b["err"].as_str()), (400, Some("invalid_key")), "{b}");
    let good = sign(&uem, &compliance_set("good-1", AUD, "compliant"));
    assert_eq!(push_from(&h, Some("198.51.100.8"), &good).await.0, 202);
    assert!(
        chrono::Utc::now().timestamp_millis() < window_end,
        "the burst outlasted its {WINDOW}s window: too slow a machine for this test"
    );

    // Once the window is over, one row sums up what was dropped.
    assert!(audit(&h.st, Some("caep.rate_limited")).await.is_empty());
    after_window(window_end).await;
    let summary = audit(&h.st, Some("caep.rate_limited")).await;
    assert_eq!(summary.len(), 1, "{summary:?}");
    let d = &summary[0].detail;
    assert_eq!(d["budget"], "address", "{d}");
    assert_eq!(d["dropped"], 25, "{d}");
    assert_eq!(d["over_budget"], 1, "{d}");
    assert_eq!(d["first_over"], FLOODER, "{d}");
    assert_eq!(d["limit"], format!("5/{WINDOW}s"), "{d}");
    // The flooding address cost the log its budget plus that one row.
    assert_eq!(audit(&h.st, None).await.len(), before + 5 + 1 + 2);

    // A new window: the address is served again.
    let good = sign(&uem, &compliance_set("good-2", AUD, "compliant"));
    assert_eq!(push_from(&h, Some(FLOODER), &good).await.0, 202);
}

#[tokio::test]
async fn a_flood_naming_one_issuer_from_many_addresses_is_bounded_per_issuer() {
    let (h, uem) =
        start_with_rate_limit("{ caep: { per_address: 3/1h, per_issuer: 10/1h } }").await;
    let forger = rcgen::KeyPair::generate().unwrap();
    // A good SET within the budgets is accepted.
    let good = sign(&uem, &compliance_set("good-1", AUD, "compliant"));
    assert_eq!(push_from(&h, Some("192.0.2.1"), &good).await.0, 202);
    let before = audit(&h.st, None).await.len();

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
    assert_eq!(audit(&h.st, None).await.len(), before + 9 + 10);
}
