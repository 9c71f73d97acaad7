//! CAEP: SETs signed with a key generated in the test are verified and turned into device
//! updates; bad signatures, wrong audiences and replayed `jti`s are rejected with typed errors.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use stepgate_policy::HumanDuration;
use stepgate_signals::caep::{
    event_types, CaepReceiver, MemoryReplayGuard, SecurityEvent, SetError,
};
use stepgate_signals::config::{CaepConfig, SetAlgorithm, TransmitterConfig};
use stepgate_signals::device::Device;

const ISS: &str = "https://uem.example/";
const AUD: &str = "https://stepgate.example/";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    key: rcgen::KeyPair,
    receiver: CaepReceiver,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let key_file = dir.path().join("uem.pem");
    std::fs::write(&key_file, key.public_key_pem()).unwrap();
    let cfg = CaepConfig {
        transmitters: vec![TransmitterConfig {
            name: "hexnode".into(),
            issuer: ISS.into(),
            audience: AUD.into(),
            key_file: Some(key_file),
            jwks_url: None,
            algorithms: vec![SetAlgorithm::ES256],
            max_age: HumanDuration::from_secs(600),
            leeway: HumanDuration::from_secs(60),
        }],
    };
    let receiver = CaepReceiver::new(&cfg, Arc::new(MemoryReplayGuard::default())).unwrap();
    Fixture {
        _dir: dir,
        key,
        receiver,
    }
}

fn sign(key: &rcgen::KeyPair, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("secevent+jwt".into());
    let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&h, claims, &enc).unwrap()
}

fn compliance_set(jti: &str, aud: &str, status: &str) -> serde_json::Value {
    json!({
        "iss": ISS,
        "aud": aud,
        "jti": jti,
        "iat": now().timestamp() - 5,
        "txn": "8675309",
        "sub_id": {
            "format": "complex",
            "device": {"format": "opaque", "id": "mac-0042"},
            "user": {"format": "email", "email": "jane@example.com"}
        },
        "events": {
            event_types::DEVICE_COMPLIANCE_CHANGE: {
                "current_status": status,
                "previous_status": "compliant",
                "initiating_entity": "policy",
                "reason_admin": {"en": "Disk encryption turned off"},
                "reason_user": {"en": "Turn FileVault back on in System Settings"},
                "event_timestamp": now().timestamp() - 10
            }
        }
    })
}

#[test]
fn device_compliance_change_becomes_a_device_update() {
    let f = fixture();
    let token = sign(&f.key, &compliance_set("set-1", AUD, "not-compliant"));
    let set = f.receiver.verify(&token, now()).unwrap();
    assert_eq!(set.transmitter, "hexnode");
    assert_eq!(set.jti, "set-1");
    assert_eq!(set.txn.as_deref(), Some("8675309"));
    assert!(matches!(
        set.events[0],
        SecurityEvent::DeviceComplianceChange {
            compliant: false,
            previously_compliant: Some(true),
            ..
        }
    ));
    let updates = set.device_updates();
    assert_eq!(updates.len(), 1);
    let u = &updates[0];
    assert_eq!(u.device_id, "mac-0042");
    assert_eq!(u.user.as_deref(), Some("jane@example.com"));
    assert_eq!(
        u.reason.as_deref(),
        Some("Turn FileVault back on in System Settings")
    );

    let mut device = Device::new("mac-0042");
    device.last_sync = Some(now());
    assert!(u.apply(&mut device));
    let ctx = stepgate_signals::device::device_context(
        &device,
        &[],
        std::time::Duration::from_secs(86_400),
        now(),
    );
    assert_eq!(ctx.compliant, Some(false));
    assert_eq!(
        ctx.failing_checks[0].message.as_deref(),
        Some("Turn FileVault back on in System Settings")
    );

    // A later "compliant" event restores it; an older one is ignored.
    let mut fixed = compliance_set("set-2", AUD, "compliant");
    fixed["events"][event_types::DEVICE_COMPLIANCE_CHANGE]["event_timestamp"] =
        json!(now().timestamp() - 1);
    let u2 = &f
        .receiver
        .verify(&sign(&f.key, &fixed), now())
        .unwrap()
        .device_updates()[0];
    assert!(u2.apply(&mut device));
    let mut stale = compliance_set("set-3", AUD, "not-compliant");
    stale["events"][event_types::DEVICE_COMPLIANCE_CHANGE]["event_timestamp"] =
        json!(now().timestamp() - 300);
    let u3 = &f
        .receiver
        .verify(&sign(&f.key, &stale), now())
        .unwrap()
        .device_updates()[0];
    assert!(!u3.apply(&mut device));
    assert!(device.reported_compliance.unwrap().compliant);
}

#[test]
fn bad_signature_is_rejected() {
    let f = fixture();
    let other = rcgen::KeyPair::generate().unwrap();
    let token = sign(&other, &compliance_set("set-1", AUD, "not-compliant"));
    let e = f.receiver.verify(&token, now()).unwrap_err();
    assert_eq!(e, SetError::BadSignature("hexnode".into()));
    assert_eq!(e.rfc8935_code(), "invalid_key");
    assert_eq!(e.audit_kind(), "bad_signature");
    // A tampered payload with the original signature fails too.
    let good = sign(&f.key, &compliance_set("set-9", AUD, "compliant"));
    let parts: Vec<&str> = good.split('.').collect();
    let evil = sign(&other, &compliance_set("set-9", AUD, "not-compliant"));
    let evil_payload = evil.split('.').nth(1).unwrap();
    let forged = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
    assert!(matches!(
        f.receiver.verify(&forged, now()),
        Err(SetError::BadSignature(_))
    ));
}

#[test]
fn wrong_audience_is_rejected() {
    let f = fixture();
    let token = sign(
        &f.key,
        &compliance_set("set-1", "https://someone-else.example/", "not-compliant"),
    );
    let e = f.receiver.verify(&token, now()).unwrap_err();
    assert_eq!(
        e,
        SetError::WrongAudience {
            expected: AUD.into()
        }
    );
    assert_eq!(e.rfc8935_code(), "invalid_audience");
}

#[test]
fn replayed_jti_is_rejected() {
    let f = fixture();
    let token = sign(&f.key, &compliance_set("set-1", AUD, "not-compliant"));
    f.receiver.verify(&token, now()).unwrap();
    let e = f.receiver.verify(&token, now()).unwrap_err();
    assert_eq!(e, SetError::Replayed("set-1".into()));
    assert_eq!(e.audit_kind(), "replayed_jti");
    // A forged token with a used jti does not even reach the replay check: it is refused
    // for its signature (an attacker learns nothing about which jtis were seen)...
    let forged = sign(
        &rcgen::KeyPair::generate().unwrap(),
        &compliance_set("set-1", AUD, "compliant"),
    );
    assert_eq!(
        f.receiver.verify(&forged, now()).unwrap_err(),
        SetError::BadSignature("hexnode".into())
    );
    // ... and a rejected token does not burn its jti.
    let f2 = fixture();
    let bad = sign(
        &rcgen::KeyPair::generate().unwrap(),
        &compliance_set("set-7", AUD, "compliant"),
    );
    assert!(matches!(
        f2.receiver.verify(&bad, now()),
        Err(SetError::BadSignature(_))
    ));
    let good = sign(&f2.key, &compliance_set("set-7", AUD, "compliant"));
    assert_eq!(f2.receiver.verify(&good, now()).unwrap().jti, "set-7");
}

#[test]
fn other_rejections() {
    let f = fixture();
    let mut c = compliance_set("a", AUD, "compliant");
    c["iss"] = json!("https://evil.example/");
    assert_eq!(
        f.receiver.verify(&sign(&f.key, &c), now()).unwrap_err(),
        SetError::UnknownIssuer("https://evil.example/".into())
    );
    let mut c = compliance_set("b", AUD, "compliant");
    c["iat"] = json!(now().timestamp() - 3600);
    assert!(matches!(
        f.receiver.verify(&sign(&f.key, &c), now()),
        Err(SetError::TooOld { .. })
    ));
    let mut c = compliance_set("c", AUD, "compliant");
    c["iat"] = json!(now().timestamp() + 3600);
    assert!(matches!(
        f.receiver.verify(&sign(&f.key, &c), now()),
        Err(SetError::FromFuture(_))
    ));
    let mut c = compliance_set("d", AUD, "compliant");
    c.as_object_mut().unwrap().remove("jti");
    assert_eq!(
        f.receiver.verify(&sign(&f.key, &c), now()).unwrap_err(),
        SetError::MissingClaim("jti")
    );
    let mut c = compliance_set("e", AUD, "compliant");
    c["events"] = json!({});
    assert_eq!(
        f.receiver.verify(&sign(&f.key, &c), now()).unwrap_err(),
        SetError::NoEvents
    );
    let mut c = compliance_set("f", AUD, "compliant");
    c["events"][event_types::DEVICE_COMPLIANCE_CHANGE]["current_status"] = json!("meh");
    assert!(matches!(
        f.receiver.verify(&sign(&f.key, &c), now()),
        Err(SetError::BadEvent { .. })
    ));
    // HS256 with the public key as the secret (algorithm confusion) is refused.
    let mut h = Header::new(Algorithm::HS256);
    h.typ = Some("secevent+jwt".into());
    let hs = jsonwebtoken::encode(
        &h,
        &compliance_set("g", AUD, "compliant"),
        &EncodingKey::from_secret(f.key.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        f.receiver.verify(&hs, now()),
        Err(SetError::AlgorithmNotAllowed { .. })
    ));
    // An ID token is not a SET.
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("JWT".into());
    let enc = EncodingKey::from_ec_pem(f.key.serialize_pem().as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(&h, &compliance_set("h", AUD, "compliant"), &enc).unwrap();
    assert_eq!(
        f.receiver.verify(&jwt, now()).unwrap_err(),
        SetError::WrongType("JWT".into())
    );
    assert!(matches!(
        f.receiver.verify("not.a.jwt", now()),
        Err(SetError::Malformed(_))
    ));
}

#[test]
fn session_credential_and_assurance_events() {
    let f = fixture();
    let c = json!({
        "iss": ISS, "aud": AUD, "jti": "multi", "iat": now().timestamp(),
        "events": {
            event_types::SESSION_REVOKED: {
                "subject": {"format": "complex", "user": {"format": "iss_sub", "iss": ISS, "sub": "jane"}, "session": {"format": "opaque", "id": "s-1"}},
                "event_timestamp": now().timestamp()
            },
            event_types::CREDENTIAL_CHANGE: {
                "subject": {"format": "email", "email": "jane@example.com"},
                "credential_type": "fido2-roaming", "change_type": "revoke"
            },
            event_types::ASSURANCE_LEVEL_CHANGE: {
                "subject": {"format": "email", "email": "jane@example.com"},
                "namespace": "NIST-AAL", "current_level": "nist-aal1", "previous_level": "nist-aal2", "change_direction": "decrease"
            },
            "https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "x"}
        }
    });
    let set = f.receiver.verify(&sign(&f.key, &c), now()).unwrap();
    assert_eq!(set.events.len(), 4);
    let mut saw = 0;
    for e in &set.events {
        match e {
            SecurityEvent::SessionRevoked { common } => {
                assert_eq!(common.subject.user(), Some("jane"));
                assert_eq!(common.subject.session_id(), Some("s-1"));
                saw += 1;
            }
            SecurityEvent::CredentialChange {
                credential_type,
                change_type,
                ..
            } => {
                assert_eq!(
                    (credential_type.as_str(), change_type.as_str()),
                    ("fido2-roaming", "revoke")
                );
                saw += 1;
            }
            SecurityEvent::AssuranceLevelChange { current_level, .. } => {
                assert_eq!(current_level, "nist-aal1");
                saw += 1;
            }
            SecurityEvent::Other { event_type } => {
                assert!(event_type.ends_with("verification"));
                saw += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(saw, 4);
    assert!(set.device_updates().is_empty());
}

#[test]
fn jwks_key_file_with_kid() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    // Build the JWK from the raw public point (uncompressed: 0x04 || x || y).
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = key.public_key_raw();
    let jwks = json!({"keys": [
        {"kty": "oct", "k": b64.encode(b"hmac secret that must be ignored"), "kid": "k1"},
        {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
         "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65])}
    ]});
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let cfg = CaepConfig {
        transmitters: vec![TransmitterConfig {
            name: "hexnode".into(),
            issuer: ISS.into(),
            audience: AUD.into(),
            key_file: Some(path),
            jwks_url: None,
            algorithms: vec![SetAlgorithm::ES256],
            max_age: HumanDuration::from_secs(600),
            leeway: HumanDuration::from_secs(60),
        }],
    };
    let r = CaepReceiver::new(&cfg, Arc::new(MemoryReplayGuard::default())).unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("secevent+jwt".into());
    h.kid = Some("k1".into());
    let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&h, &compliance_set("j1", AUD, "compliant"), &enc).unwrap();
    assert!(r.verify(&token, now()).is_ok());
    h.kid = Some("k2".into());
    let token = jsonwebtoken::encode(&h, &compliance_set("j2", AUD, "compliant"), &enc).unwrap();
    assert!(matches!(
        r.verify(&token, now()),
        Err(SetError::UnknownKey { .. })
    ));
}
