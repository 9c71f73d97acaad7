//! CAEP Security Event Token verification (`CaepReceiver::verify`) with one configured
//! ES256 transmitter. The first byte picks how the rest is used:
//! - 0: the whole token, as a transmitter (or anyone) would post it;
//! - 1: the claims JSON, signed with the transmitter's key under a fixed header, so the
//!   checks after the signature (claims, events, subject identifiers) see fuzzed input;
//! - 2: header and claims JSON (split at the first 0xFF byte), both signed.
//! Verification must return a SET or a typed error, never panic.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use stepgate_signals::caep::{CaepReceiver, JtiReplayGuard};
use stepgate_signals::config::CaepConfig;

/// A replay guard that remembers nothing, so millions of runs do not grow memory.
struct Forgetful;

impl JtiReplayGuard for Forgetful {
    fn check_and_record(&self, _: &str, _: &str, _: DateTime<Utc>, _: DateTime<Utc>) -> bool {
        true
    }
}

struct Setup {
    receiver: CaepReceiver,
    signer: EncodingKey,
    now: DateTime<Utc>,
}

/// `iat` values near this one pass the freshness check (it is in the dictionary).
const NOW: i64 = 1_700_000_000;

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        // A fixed key: reproducing a crash signs the same bytes the same way.
        let key = p256::SecretKey::from_slice(&[7u8; 32]).expect("a P-256 scalar");
        let private = key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8");
        let public = key
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI");
        let dir: PathBuf = tempfile::Builder::new()
            .prefix("stepgate-fuzz-caep")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let key_file = dir.join("transmitter.pem");
        std::fs::write(&key_file, public).expect("write the public key");
        let cfg: CaepConfig = serde_json::from_value(serde_json::json!({
            "transmitters": [{
                "name": "mdm",
                "issuer": "https://mdm.test",
                "audience": "https://stepgate.test",
                "key_file": key_file,
                "algorithms": ["ES256"],
            }]
        }))
        .expect("a CAEP configuration");
        Setup {
            receiver: CaepReceiver::new(&cfg, Arc::new(Forgetful)).expect("a receiver"),
            signer: EncodingKey::from_ec_pem(private.as_bytes()).expect("an ES256 key"),
            now: DateTime::from_timestamp(NOW, 0).expect("a time"),
        }
    })
}

fn signed(s: &Setup, header: &[u8], claims: &[u8]) -> Option<String> {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &s.signer, Algorithm::ES256).ok()?;
    Some(format!("{message}.{sig}"))
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => match signed(s, br#"{"alg":"ES256","typ":"secevent+jwt"}"#, rest) {
            Some(t) => t,
            None => return,
        },
        _ => {
            let (header, claims) = match rest.iter().position(|&b| b == 0xFF) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b"{}"[..]),
            };
            match signed(s, header, claims) {
                Some(t) => t,
                None => return,
            }
        }
    };
    match s.receiver.verify(&token, s.now) {
        Ok(set) => {
            assert!(!set.events.is_empty());
            let _ = set.device_updates();
        }
        Err(e) => {
            let _ = (e.to_string(), e.rfc8935_code(), e.audit_kind());
        }
    }
});
