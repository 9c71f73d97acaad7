//! The first source scenario end to end, with the Hexnode connector and a recording Hexnode
//! on loopback: Hexnode's certificate profile deploys a device certificate (made here with
//! rcgen, its subject naming the Mac's serial number) that binds the browser to the managed
//! device at sign-in. Managed and compliant from the office → password only; the same Mac
//! from home → MFA; Hexnode reporting it non-compliant → the next request is blocked with
//! Hexnode's failing policy; a Mac with no certificate is not "managed" → MFA even in the
//! office.

mod support;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use stepgate_server::devices::connectors::Connectors;
use support::hexnode::{device, hexnode, now_s, Hexnode, API_KEY};
use support::{password, upstream, Browser, Page, Server, JANE};

const CONFIG: &str = r#"
networks:
  office: [10.20.0.0/16]
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
server:
  trusted_proxies: [127.0.0.1]
sessions:
  cookie: { secure: false }
signals:
  client_certificates:
    forwarded: { header: X-Client-Cert, format: pem_urlencoded }
    authorities:
      - { name: hexnode-device-ca, ca_file: device-ca.pem, device_ca: true }
devices:
  connectors:
    - name: hexnode
      kind: hexnode
      url: http://HEXNODE
      secret: { file: hexnode.key }
      interval: 1h
      owner_match: local_part
      owner_domains: [example.com]
policies:
  - name: compliant-devices-only
    priority: 10
    targets: { apps: [console] }
    conditions:
      - device_compliance: { compliant: false }
    outcome: { deny: { message: This device is not compliant. } }
  - name: managed-in-the-office-password-only
    priority: 20
    targets: { sign_in: true }
    conditions:
      - device_state: { in: [managed, managed_edr] }
      - device_compliance: { compliant: true }
      - network: { in: [office] }
    outcome: allow
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 50
    outcome: allow
"#;

/// The device CA Hexnode's SCEP/certificate profile issues from, and a leaf naming `serial`.
fn device_pki(serial: &str) -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Acme Hexnode device CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, serial);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), leaf.pem())
}

/// A browser behind the TLS proxy (127.0.0.1, trusted) that reports the client's address
/// and, when it has one, its certificate.
fn browser_from(ip: &str, cert_pem: Option<&str>) -> Browser {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-for", ip.parse().unwrap());
    if let Some(pem) = cert_pem {
        let enc: String =
            percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        h.insert("x-client-cert", enc.parse().unwrap());
    }
    Browser::on(Default::default(), support::client().default_headers(h))
}

#[tokio::test]
async fn managed_office_password_only_home_mfa_drift_blocked() {
    let fleet = Hexnode::default();
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(42, device(42, "jane@example.com", true, &now_s(-60)));
    let (ca_pem, leaf_pem) = device_pki("C02X42");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hexnode.key"), API_KEY).unwrap();
    std::fs::write(dir.path().join("device-ca.pem"), ca_pem).unwrap();
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("HEXNODE", hexnode(&fleet).await)
        .in_dir(dir)
        .demo_users()
        .start()
        .await;
    let r = Connectors::sync(&h.st, Some("hexnode"), true).await;
    r[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));

    // Managed and compliant, from the office: the password is enough.
    let office = browser_from("10.20.1.7", Some(&leaf_pem));
    let r = password(&office, &h.at("/app"), &JANE).await;
    assert_eq!(r.url().path(), "/app", "no MFA asked");
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    // The same Mac from home: MFA.
    let home = browser_from("203.0.113.9", Some(&leaf_pem));
    let r = password(&home, &h.at("/app"), &JANE).await;
    assert!(
        r.url().path().ends_with("/_stepgate/step-up"),
        "{}",
        r.url()
    );
    let r = Page::read(r).await.submit_code(&home, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    // In the office without the device certificate: not shown to be managed, so MFA.
    let unproven = browser_from("10.20.1.8", None);
    let r = password(&unproven, &h.at("/app"), &JANE).await;
    assert!(
        r.url().path().ends_with("/_stepgate/step-up"),
        "{}",
        r.url()
    );

    // Drift: Hexnode reports the Mac non-compliant; after the sync, the office session's
    // next request is blocked with Hexnode's failing policy.
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(42, device(42, "jane@example.com", false, &now_s(0)));
    let r = Connectors::sync(&h.st, Some("hexnode"), false).await;
    assert_eq!(r[0].1.as_ref().unwrap().now_non_compliant, 1);
    let r = office.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "{}", r.url());
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Failing in hexnode: FileVault disk encryption required"),
        "{page}"
    );
}
