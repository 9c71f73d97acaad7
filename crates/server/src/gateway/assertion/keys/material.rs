//! One signing key: its algorithm, how a new one is made and sealed for the store, and
//! how a stored one is opened into a signing key and its public JWK.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use serde::{Deserialize, Serialize};
use stepgate_store::{SealedSecret, SecretKey};

use super::AssertionKeyError;

/// A signing algorithm a key set can hold keys for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlg {
    /// ECDSA with P-256 and SHA-256 (the assertion's, and the provider's default).
    #[default]
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    RS256,
}

impl KeyAlg {
    /// Every algorithm, in the order the provider's discovery lists them.
    pub const ALL: [KeyAlg; 3] = [KeyAlg::ES256, KeyAlg::EdDSA, KeyAlg::RS256];

    /// The JOSE name (`ES256`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::ES256 => "ES256",
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::RS256 => "RS256",
        }
    }

    /// The algorithm named `s` (`ES256`, `EdDSA`, `RS256`).
    pub fn parse(s: &str) -> Option<KeyAlg> {
        KeyAlg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// jsonwebtoken's name for it.
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyAlg::ES256 => Algorithm::ES256,
            KeyAlg::EdDSA => Algorithm::EdDSA,
            KeyAlg::RS256 => Algorithm::RS256,
        }
    }
}

/// A key as the store keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct StoredKey {
    pub(super) kid: String,
    pub(super) created_at: DateTime<Utc>,
    /// The key's algorithm (absent in key sets written before there was a choice: ES256).
    #[serde(default)]
    pub(super) alg: KeyAlg,
    /// The PKCS#8 private key, sealed.
    pub(super) sealed: SealedSecret,
}

/// The key set as the store keeps it.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct StoredKeySet {
    pub(super) keys: Vec<StoredKey>,
}

/// A key ready to sign with.
pub(super) struct LoadedKey {
    pub(super) kid: String,
    pub(super) alg: KeyAlg,
    pub(super) created_at: DateTime<Utc>,
    pub(super) encoding: EncodingKey,
    /// The public JWK, as JSON.
    pub(super) jwk: serde_json::Value,
}

/// The AEAD context a key is sealed under: bound to its id.
pub(super) fn seal_context(kid: &str) -> String {
    format!("stepgate/assertion-key/v1/{kid}")
}

/// A new PKCS#8 private key for `alg` (P-256 with the `p256` crate as before; Ed25519 and
/// RSA-2048 with OpenSSL).
pub(super) fn new_private_key(alg: KeyAlg) -> Result<Vec<u8>, String> {
    match alg {
        KeyAlg::ES256 => p256::SecretKey::random(&mut rand::rngs::OsRng)
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| e.to_string()),
        KeyAlg::EdDSA => openssl::pkey::PKey::generate_ed25519()
            .and_then(|k| k.private_key_to_pkcs8())
            .map_err(|e| e.to_string()),
        KeyAlg::RS256 => openssl::rsa::Rsa::generate(2048)
            .and_then(openssl::pkey::PKey::from_rsa)
            .and_then(|k| k.private_key_to_pkcs8())
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
pub(super) fn generate(
    secret: &SecretKey,
    now: DateTime<Utc>,
) -> Result<StoredKey, AssertionKeyError> {
    generate_for(secret, KeyAlg::ES256, now)
}

/// A new key for `alg`, sealed, with an id that sorts by its creation time.
pub(super) fn generate_for(
    secret: &SecretKey,
    alg: KeyAlg,
    now: DateTime<Utc>,
) -> Result<StoredKey, AssertionKeyError> {
    let der = new_private_key(alg).map_err(|why| AssertionKeyError::Key {
        kid: "(new)".into(),
        why,
    })?;
    let kid = format!(
        "{}-{}",
        now.format("%Y%m%d%H%M%S"),
        &crate::app::signer::random_id()[..8]
    );
    let sealed = secret
        .seal(&der, &seal_context(&kid))
        .map_err(|e| AssertionKeyError::Key {
            kid: kid.clone(),
            why: e.to_string(),
        })?;
    Ok(StoredKey {
        kid,
        created_at: now,
        alg,
        sealed,
    })
}

/// A stored key opened: its signing key and public JWK.
pub(super) fn load_key(secret: &SecretKey, k: &StoredKey) -> Result<LoadedKey, AssertionKeyError> {
    let err = |why: String| AssertionKeyError::Key {
        kid: k.kid.clone(),
        why,
    };
    let der = secret
        .open(&k.sealed, &seal_context(&k.kid))
        .map_err(|e| err(e.to_string()))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (mut jwk, encoding) = match k.alg {
        KeyAlg::ES256 => {
            let sk = p256::SecretKey::from_pkcs8_der(&der).map_err(|e| err(e.to_string()))?;
            let point = sk.public_key().to_encoded_point(false);
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err(err("not an uncompressed P-256 point".into()));
            };
            (
                serde_json::json!({ "kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y) }),
                EncodingKey::from_ec_der(&der),
            )
        }
        KeyAlg::EdDSA => {
            let pk = openssl::pkey::PKey::private_key_from_pkcs8(&der)
                .map_err(|e| err(e.to_string()))?;
            let x = pk.raw_public_key().map_err(|e| err(e.to_string()))?;
            // jsonwebtoken takes the PKCS#8 document for Ed25519 keys.
            (
                serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&x) }),
                EncodingKey::from_ed_der(&der),
            )
        }
        KeyAlg::RS256 => {
            let pk = openssl::pkey::PKey::private_key_from_pkcs8(&der)
                .map_err(|e| err(e.to_string()))?;
            let rsa = pk.rsa().map_err(|e| err(e.to_string()))?;
            let pkcs1 = rsa.private_key_to_der().map_err(|e| err(e.to_string()))?;
            (
                serde_json::json!({
                    "kty": "RSA", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec()),
                }),
                // jsonwebtoken takes the PKCS#1 document for RSA keys.
                EncodingKey::from_rsa_der(&pkcs1),
            )
        }
    };
    // Every key signs, named by its id, with its one algorithm.
    jwk["kid"] = k.kid.as_str().into();
    jwk["use"] = "sig".into();
    jwk["alg"] = k.alg.as_str().into();
    Ok(LoadedKey {
        kid: k.kid.clone(),
        alg: k.alg,
        created_at: k.created_at,
        encoding,
        jwk,
    })
}
