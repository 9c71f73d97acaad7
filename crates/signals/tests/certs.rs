//! Client certificate checks with certificates, CRLs and OCSP responses generated in the
//! test (rcgen, x509-ocsp), and a small OCSP responder on loopback.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use der::{Decode, Encode};
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use stepgate_policy::HumanDuration;
use stepgate_signals::certs::{
    certificates_from_header, CertificateProblem, CertificateVerifier, RevocationStatus,
};
use stepgate_signals::config::{
    CertificateAuthorityConfig, ClientCertificatesConfig, ForwardedCertificateFormat, OcspMode,
    RevocationFailureMode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn make_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2099, 1, 1);
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn make_leaf(ca: &Ca, serial: u8, from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, format!("device-{serial}"));
    p.serial_number = Some(SerialNumber::from(vec![0x10, serial]));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = date_time_ymd(from.0, from.1, from.2);
    p.not_after = date_time_ymd(to.0, to.1, to.2);
    p.signed_by(&key, &ca.cert, &ca.key).unwrap().der().to_vec()
}

fn valid_leaf(ca: &Ca, serial: u8) -> Vec<u8> {
    make_leaf(ca, serial, (2024, 1, 1), (2090, 1, 1))
}

fn crl(ca: &Ca, revoked_serials: &[u8]) -> Vec<u8> {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2024, 1, 1),
        next_update: date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked_serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(vec![0x10, *s]),
                revocation_time: date_time_ymd(2025, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)
    .unwrap()
    .der()
    .to_vec()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn authority(&self, name: &str, ca: &Ca) -> CertificateAuthorityConfig {
        let ca_file = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        CertificateAuthorityConfig {
            name: name.into(),
            ca_file,
            intermediates_file: None,
            device_ca: true,
            crl_files: vec![],
            crl_urls: vec![],
            ocsp: OcspMode::Off,
            ocsp_responder: None,
            revocation_timeout: HumanDuration::from_secs(2),
            ocsp_cache_max: HumanDuration::from_secs(600),
            on_revocation_unknown: RevocationFailureMode::FailClosed,
        }
    }

    fn crl_file(&self, name: &str, der: &[u8]) -> std::path::PathBuf {
        let p = self.dir.path().join(format!("{name}.crl"));
        std::fs::write(&p, der).unwrap();
        p
    }
}

fn verifier(a: CertificateAuthorityConfig) -> CertificateVerifier {
    CertificateVerifier::new(&ClientCertificatesConfig {
        authorities: vec![a],
        forwarded: None,
    })
    .unwrap()
}

/// An OCSP responder on loopback answering for the CA: `revoked` serials (last byte) are
/// revoked, others good. `signer` signs the responses (the CA key, or a wrong one).
async fn ocsp_responder(
    ca_der: Vec<u8>,
    signer_pkcs8: Vec<u8>,
    revoked: HashSet<u8>,
) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(0usize));
    let hits2 = hits.clone();
    tokio::spawn(async move {
        let ca = x509_cert::Certificate::from_der(&ca_der).unwrap();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            *hits2.lock().unwrap() += 1;
            let ca = ca.clone();
            let signer_pkcs8 = signer_pkcs8.clone();
            let revoked = revoked.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let body = loop {
                    let n = sock.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            let n = sock.read(&mut tmp).await.unwrap();
                            buf.extend_from_slice(&tmp[..n]);
                        }
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                let req = x509_ocsp::OcspRequest::from_der(&body).unwrap();
                let cert_id = req.tbs_request.request_list[0].req_cert.clone();
                let last = *cert_id.serial_number.as_bytes().last().unwrap();
                let now =
                    x509_ocsp::OcspGeneralizedTime::try_from(std::time::SystemTime::now()).unwrap();
                let status = if revoked.contains(&last) {
                    x509_ocsp::CertStatus::revoked(x509_ocsp::RevokedInfo {
                        revocation_time: now,
                        revocation_reason: None,
                    })
                } else {
                    x509_ocsp::CertStatus::good()
                };
                let next = x509_ocsp::OcspGeneralizedTime::try_from(
                    std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
                )
                .unwrap();
                let mut key = p256::ecdsa::SigningKey::from_pkcs8_der(&signer_pkcs8).unwrap();
                let resp = x509_ocsp::builder::OcspResponseBuilder::new(
                    ca.tbs_certificate.subject.clone(),
                )
                .with_single_response(
                    x509_ocsp::SingleResponse::new(cert_id, status, now).with_next_update(next),
                )
                .sign::<_, p256::ecdsa::DerSignature>(&mut key, None, now)
                .unwrap()
                .to_der()
                .unwrap();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/ocsp-response\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    resp.len()
                );
                sock.write_all(head.as_bytes()).await.unwrap();
                sock.write_all(&resp).await.unwrap();
                sock.shutdown().await.ok();
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn valid_certificate_with_crl_and_ocsp_good() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let leaf = valid_leaf(&ca, 1);
    let (addr, hits) = ocsp_responder(
        ca.cert.der().to_vec(),
        ca.key.serialize_der(),
        HashSet::new(),
    )
    .await;
    let mut a = s.authority("device-ca", &ca);
    a.crl_files = vec![s.crl_file("device", &crl(&ca, &[9]))];
    a.ocsp = OcspMode::IfAvailable;
    a.ocsp_responder = Some(format!("http://{addr}/"));
    let v = verifier(a);
    let c = v.verify(std::slice::from_ref(&leaf), Utc::now()).await;
    assert_eq!(c.problem, None);
    assert!(c.context.valid);
    assert_eq!(c.context.revoked, Some(false));
    assert_eq!(c.crl, Some(RevocationStatus::Good));
    assert_eq!(c.ocsp, Some(RevocationStatus::Good));
    assert_eq!(c.authority.as_deref(), Some("device-ca"));
    assert!(
        c.context.issuer.as_deref().unwrap().contains("Device CA"),
        "{:?}",
        c.context.issuer
    );
    assert!(c.context.subject.as_deref().unwrap().contains("device-1"));
    assert_eq!(c.serial.as_deref(), Some("1001"));
    assert!(c.device_binding().is_some());
    // The second check is answered from the OCSP cache.
    let c2 = v.verify(std::slice::from_ref(&leaf), Utc::now()).await;
    assert_eq!(c2.ocsp, Some(RevocationStatus::Good));
    assert_eq!(*hits.lock().unwrap(), 1);
}

#[tokio::test]
async fn expired_certificate() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let leaf = make_leaf(&ca, 2, (2020, 1, 1), (2021, 1, 1));
    let c = verifier(s.authority("device-ca", &ca))
        .verify(&[leaf], Utc::now())
        .await;
    assert_eq!(c.problem, Some(CertificateProblem::Expired));
    assert!(!c.context.valid);
    assert!(c.device_binding().is_none());
}

#[tokio::test]
async fn wrong_issuer() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let rogue = make_ca("Rogue CA");
    let leaf = valid_leaf(&rogue, 3);
    let c = verifier(s.authority("device-ca", &ca))
        .verify(&[leaf], Utc::now())
        .await;
    match c.problem {
        Some(CertificateProblem::UnknownIssuer { ref issuer }) => {
            assert!(issuer.contains("Rogue CA"), "{issuer}")
        }
        ref other => panic!("{other:?}"),
    }
    assert!(!c.context.valid);
}

#[tokio::test]
async fn revoked_by_crl() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let leaf = valid_leaf(&ca, 4);
    let mut a = s.authority("device-ca", &ca);
    a.crl_files = vec![s.crl_file("device", &crl(&ca, &[4]))];
    let c = verifier(a).verify(&[leaf], Utc::now()).await;
    assert_eq!(
        c.problem,
        Some(CertificateProblem::Revoked { by: "crl".into() })
    );
    assert_eq!(c.context.revoked, Some(true));
    assert!(!c.context.valid);
}

#[tokio::test]
async fn crl_from_another_ca_is_unknown_status() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let other = make_ca("Other CA");
    let leaf = valid_leaf(&ca, 5);
    let mut a = s.authority("device-ca", &ca);
    a.crl_files = vec![s.crl_file("other", &crl(&other, &[5]))];
    a.on_revocation_unknown = RevocationFailureMode::FailOpen;
    let c = verifier(a).verify(&[leaf], Utc::now()).await;
    assert!(
        matches!(c.crl, Some(RevocationStatus::Unknown(_))),
        "{:?}",
        c.crl
    );
    assert!(c.context.valid, "fail-open keeps the certificate valid");
    assert_eq!(
        c.context.revoked, None,
        "and leaves revocation unknown for the policy"
    );
}

#[tokio::test]
async fn revoked_by_ocsp() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let leaf = valid_leaf(&ca, 6);
    let (addr, _) = ocsp_responder(
        ca.cert.der().to_vec(),
        ca.key.serialize_der(),
        HashSet::from([6]),
    )
    .await;
    let mut a = s.authority("device-ca", &ca);
    a.ocsp = OcspMode::IfAvailable;
    a.ocsp_responder = Some(format!("http://{addr}/ocsp"));
    let c = verifier(a).verify(&[leaf], Utc::now()).await;
    assert_eq!(c.ocsp, Some(RevocationStatus::Revoked));
    assert_eq!(
        c.problem,
        Some(CertificateProblem::Revoked { by: "ocsp".into() })
    );
    assert_eq!(c.context.revoked, Some(true));
}

#[tokio::test]
async fn ocsp_signed_by_the_wrong_key_is_rejected() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let leaf = valid_leaf(&ca, 7);
    let wrong = KeyPair::generate().unwrap();
    let (addr, _) = ocsp_responder(
        ca.cert.der().to_vec(),
        wrong.serialize_der(),
        HashSet::new(),
    )
    .await;
    let mut a = s.authority("device-ca", &ca);
    a.ocsp = OcspMode::IfAvailable;
    a.ocsp_responder = Some(format!("http://{addr}/"));
    let c = verifier(a).verify(&[leaf], Utc::now()).await;
    match &c.ocsp {
        Some(RevocationStatus::Unknown(why)) => assert!(why.contains("signature"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.problem,
        Some(CertificateProblem::RevocationUnknown { .. })
    ));
    assert!(!c.context.valid, "fail-closed");
}

#[tokio::test]
async fn ocsp_responder_down_fail_closed_and_fail_open() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let leaf = valid_leaf(&ca, 8);
    // A port that was just free: connection refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut a = s.authority("device-ca", &ca);
    a.ocsp = OcspMode::IfAvailable;
    a.ocsp_responder = Some(format!("http://{addr}/"));
    let closed = verifier(a.clone())
        .verify(std::slice::from_ref(&leaf), Utc::now())
        .await;
    assert!(
        matches!(
            closed.problem,
            Some(CertificateProblem::RevocationUnknown { .. })
        ),
        "{:?}",
        closed.problem
    );
    assert!(!closed.context.valid);
    a.on_revocation_unknown = RevocationFailureMode::FailOpen;
    let open = verifier(a).verify(&[leaf], Utc::now()).await;
    assert_eq!(open.problem, None);
    assert!(open.context.valid);
    assert_eq!(open.context.revoked, None);
}

#[tokio::test]
async fn forwarded_header_round_trip_and_garbage() {
    let s = Setup::new();
    let ca = make_ca("Device CA");
    let leaf = valid_leaf(&ca, 9);
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(&leaf)
    );
    let escaped: String =
        percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string();
    let chain =
        certificates_from_header(&escaped, ForwardedCertificateFormat::PemUrlencoded).unwrap();
    assert_eq!(chain, vec![leaf.clone()]);
    let xfcc = format!("By=spiffe://proxy;Hash=abc;Cert=\"{escaped}\"");
    assert_eq!(
        certificates_from_header(&xfcc, ForwardedCertificateFormat::Xfcc).unwrap(),
        vec![leaf.clone()]
    );
    let c = verifier(s.authority("device-ca", &ca))
        .verify(&chain, Utc::now())
        .await;
    assert!(c.context.valid, "{:?}", c.problem);
    let bad = verifier(s.authority("device-ca", &ca))
        .verify(&[b"garbage".to_vec()], Utc::now())
        .await;
    assert!(matches!(
        bad.problem,
        Some(CertificateProblem::Malformed { .. })
    ));
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    b.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}
