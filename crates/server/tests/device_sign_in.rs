//! A managed device recognised at sign-in, through the live portal: the UEM matrix's
//! "managed + compliant from the office → password only" row with the device's client
//! certificate passed on by a trusted proxy's header; a passkey the UEM lists in the
//! device's record binding the sign-in (and the session's app requests) to that device;
//! and `stepgate what-if` deciding those contexts as the live sign-in did. The binding is read in the access pipeline's signal
//! stage, so the sign-in sees exactly what an app request sees.

mod support;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::json;
use stepgate_policy::RequestContext;
use stepgate_server::access::what_if::{what_if, StatedFacts};
use stepgate_server::access::Verdict;
use support::{
    audit, client, password, sha256_hex, upstream, user, Browser, Passkey, Server, JANE,
};

const UEM_TOKEN: &str = "uem-token-0123456789abcdef";

const CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
server:
  trusted_proxies: [127.0.0.1]
sessions: { cookie: { secure: false } }
networks:
  corporate: [10.0.0.0/8]
signals:
  client_certificates:
    forwarded: { header: X-Client-Cert, format: der_base64 }
    authorities:
      - { name: device-ca, ca_file: ca.pem, device_ca: true }
devices:
  sources:
    - { name: hexnode, kind: uem, token_sha256: UEM, scopes: ["devices:write"] }
  compliance:
    policies:
      - { name: base, require_encryption: true }
policies:
  - name: sign-in-office
    priority: 10
    targets: { sign_in: true }
    conditions:
      - device_state: { at_least: managed }
      - device_compliance: { compliant: true }
      - network: { in: [corporate] }
    outcome: allow
  - name: sign-in-elsewhere
    priority: 20
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 30
    outcome: allow
"#;

/// A device CA (written as `ca.pem` in `dir`) and a client certificate it issued, as DER.
fn device_certificate(dir: &std::path::Path) -> Vec<u8> {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "device CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "mac-0042");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf
        .signed_by(&KeyPair::generate().unwrap(), &ca, &ca_key)
        .unwrap();
    leaf.der().to_vec()
}

fn hex_sha256(der: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn push(h: &Server, body: serde_json::Value) {
    let r = reqwest::Client::new()
        .put(h.at("/_stepgate/api/devices/posture"))
        .bearer_auth(UEM_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// A browser whose requests reach stepgate through the trusted proxy from `ip`, which
/// passes on `certificate` when the browser presented one.
fn browser(ip: &str, certificate: Option<&[u8]>) -> Browser {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-for", ip.parse().unwrap());
    if let Some(der) = certificate {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        h.insert("x-client-cert", b64.parse().unwrap());
    }
    Browser::on(Default::default(), client().default_headers(h))
}

/// Where jane's password leads from `b`: the app (signed in) or the step-up page.
async fn after_password(h: &Server, b: &Browser) -> String {
    let r = password(b, &h.at("/app"), &JANE).await;
    r.url().path().to_string()
}

#[tokio::test]
async fn a_managed_device_with_its_certificate_signs_in_from_the_office_with_the_password_alone() {
    let dir = tempfile::tempdir().unwrap();
    let der = device_certificate(dir.path());
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("UEM", sha256_hex(UEM_TOKEN))
        .in_dir(dir)
        .demo_users()
        .start()
        .await;
    push(
        &h,
        json!({
            "device_id": "mac-0042", "owner": "jane", "state": "managed",
            "certificates": [{"sha256_fingerprint": hex_sha256(&der)}],
            "posture": {"encrypted": true}
        }),
    )
    .await;

    // Managed, compliant, from the office, its certificate passed on: the password alone.
    let office = browser("10.1.2.3", Some(&der));
    assert_eq!(after_password(&h, &office).await, "/app");
    let signed_in = audit(&h.st, Some("signin.success")).await;
    assert_eq!(signed_in[0].detail["policy"], "sign-in-office");
    let id = office.session_id(&h.base).unwrap();
    let session = h.st.stores.hot.get_session(&id).await.unwrap().unwrap();
    assert_eq!(
        session.data["device_id"], "mac-0042",
        "the session is bound to the device its sign-in proved"
    );

    // The same office without the certificate, or the certificate from elsewhere: MFA.
    let no_cert = browser("10.1.2.3", None);
    assert_eq!(after_password(&h, &no_cert).await, "/_stepgate/step-up");
    let cafe = browser("203.0.113.9", Some(&der));
    assert_eq!(after_password(&h, &cafe).await, "/_stepgate/step-up");

    // Out of compliance: MFA again, from the office with the certificate.
    push(
        &h,
        json!({"device_id": "mac-0042", "posture": {"encrypted": false}}),
    )
    .await;
    let office = browser("10.1.2.3", Some(&der));
    assert_eq!(after_password(&h, &office).await, "/_stepgate/step-up");
}

#[tokio::test]
async fn what_if_decides_the_office_sign_in_as_the_live_portal_did() {
    let dir = tempfile::tempdir().unwrap();
    device_certificate(dir.path());
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("UEM", sha256_hex(UEM_TOKEN))
        .in_dir(dir)
        .start()
        .await;
    let rt = h.st.runtime.load_full();
    let context = |compliant: bool, ip: &str| -> RequestContext {
        serde_json::from_value(json!({
            "kind": "sign_in",
            "time": chrono::Utc::now(),
            "user": {"username": "jane"},
            "request": {"method": "POST", "path": "/"},
            "network": {"ip": ip},
            "device": {"id": "mac-0042", "state": "managed", "compliant": compliant},
        }))
        .unwrap()
    };
    for (compliant, ip, policy, allowed) in [
        (true, "10.1.2.3", "sign-in-office", true),
        (true, "203.0.113.9", "sign-in-elsewhere", false),
        (false, "10.1.2.3", "sign-in-elsewhere", false),
    ] {
        let ctx = context(compliant, ip);
        let (judged, _) = what_if(&rt, &ctx, &StatedFacts::new(&ctx, None, None)).await;
        assert_eq!(
            judged.decision.and_then(|d| d.policy),
            Some(policy),
            "compliant {compliant} from {ip}"
        );
        assert_eq!(matches!(judged.verdict, Verdict::Allow(_)), allowed);
    }
}

const PASSKEY_CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
sessions: { cookie: { secure: false } }
devices:
  sources:
    - { name: hexnode, kind: uem, token_sha256: UEM, scopes: ["devices:write"] }
policies:
  - name: sign-in-managed
    priority: 10
    targets: { sign_in: true }
    conditions: [ { device_state: { at_least: managed } } ]
    outcome: allow
  - name: sign-in-elsewhere
    priority: 20
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 3 } }
  - name: console-managed-only
    priority: 30
    conditions: [ { device_state: { at_least: managed } } ]
    outcome: allow
  - name: console-otherwise
    priority: 40
    outcome: { deny: { message: Managed devices only. } }
"#;

#[tokio::test]
async fn a_passkey_the_uem_lists_binds_the_sign_in_and_its_requests_to_the_managed_device() {
    let h = Server::build(PASSKEY_CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("UEM", sha256_hex(UEM_TOKEN))
        .demo_users()
        .start()
        .await;
    let jane = user(&h.st, "jane").await;
    let mut passkey = Passkey::register(&h.st, &jane).await;

    // No device lists the passkey: an unknown device, so the sign-in asks for more.
    let b = Browser::not_following();
    let next = passkey.sign_in(&b, &h.base).await;
    assert!(next.contains("/_stepgate/step-up?"), "{next}");

    // The UEM lists it in the managed device's record: the passkey alone signs in.
    push(
        &h,
        json!({"device_id": "mac-0042", "owner": "jane", "state": "managed",
               "passkeys": [passkey.credential_id]}),
    )
    .await;
    let b = Browser::not_following();
    let next = passkey.sign_in(&b, &h.base).await;
    assert!(next.ends_with("/_stepgate/account"), "{next}");
    assert_eq!(
        audit(&h.st, Some("signin.success")).await[0].detail["policy"],
        "sign-in-managed"
    );
    let session = b.session_id(&h.base).unwrap();
    let stored =
        h.st.stores
            .hot
            .get_session(&session)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stored.data["device_id"], "mac-0042");
    // Its app requests are bound the same way: the managed-only app lets it in.
    let r = b.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");
}

#[tokio::test]
async fn the_posture_api_names_a_passkey_that_is_not_a_credential_id() {
    let h = Server::build(PASSKEY_CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("UEM", sha256_hex(UEM_TOKEN))
        .start()
        .await;
    let r = reqwest::Client::new()
        .put(h.at("/_stepgate/api/devices/posture"))
        .bearer_auth(UEM_TOKEN)
        .json(&json!({"device_id": "mac-0042", "passkeys": ["not a credential"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let why = body["error_description"].as_str().unwrap();
    assert!(why.contains("passkeys: `not a credential`"), "{body}");
}
