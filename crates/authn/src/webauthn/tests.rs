//! The self-signed attestation rule, with certificates Chromium's virtual authenticator
//! really produced (two registrations: same subject and key, different bytes).

use std::collections::BTreeMap;

use openssl::x509::X509;
use uuid::Uuid;
use webauthn_rs::prelude::{AttestationCaList, AttestationCaListBuilder, ParsedAttestationData};

use super::self_signed_root;

const DEMO_ROOT: &str =
    include_str!("../../../../examples/demo-attestation/chromium-virtual-authenticator.pem");
const REISSUED: &str = include_str!("testdata/chromium-reissued.pem");
const OTHER_KEY: &str = include_str!("testdata/same-subject-other-key.pem");

fn roots(pem: &str) -> AttestationCaList {
    let mut b = AttestationCaListBuilder::new();
    let aaguid = Uuid::parse_str("01020304-0506-0708-0102-030405060708").unwrap();
    b.insert_device_pem(pem.as_bytes(), aaguid, "demo".into(), BTreeMap::new())
        .unwrap();
    b.build()
}

fn basic(pems: &[&str]) -> ParsedAttestationData {
    ParsedAttestationData::Basic(
        pems.iter()
            .map(|p| X509::from_pem(p.as_bytes()).unwrap())
            .collect(),
    )
}

#[test]
fn a_reissued_self_signed_attestation_certificate_is_its_configured_root() {
    let roots = roots(DEMO_ROOT);
    assert_ne!(DEMO_ROOT, REISSUED, "the bytes differ");
    assert!(self_signed_root(&basic(&[REISSUED]), &roots).is_some());
    assert!(self_signed_root(&basic(&[DEMO_ROOT]), &roots).is_some());
}

#[test]
fn the_same_subject_under_another_key_is_not_the_root() {
    assert!(self_signed_root(&basic(&[OTHER_KEY]), &roots(DEMO_ROOT)).is_none());
    assert!(self_signed_root(&basic(&[REISSUED]), &roots(OTHER_KEY)).is_none());
}

#[test]
fn only_a_lone_self_signed_certificate_counts() {
    let roots = roots(DEMO_ROOT);
    // A chain is for OpenSSL to verify, never matched by key here.
    assert!(self_signed_root(&basic(&[REISSUED, DEMO_ROOT]), &roots).is_none());
    assert!(self_signed_root(&ParsedAttestationData::Self_, &roots).is_none());
    assert!(self_signed_root(&ParsedAttestationData::None, &roots).is_none());
}
