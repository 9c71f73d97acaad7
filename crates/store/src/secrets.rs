//! Secrets at rest: the [`SecretKey`] and the [`SealedSecret`]s it seals.
//!
//! TOTP seeds, password hashes and other factor secrets are sealed with ChaCha20-Poly1305
//! (RFC 8439, the RustCrypto `chacha20poly1305` crate) under a 256-bit key that comes from the
//! configuration (`secrets.key_file`) or the environment (`STEPGATE_SECRET_KEY` by default).
//! Each seal uses a fresh random 96-bit nonce and binds the ciphertext to a *context* (the
//! associated data, e.g. [`factor_context`]), so a sealed value copied onto another user's
//! factor does not open. The store only ever sees [`SealedSecret`]s.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// The environment variable read for the key when the configuration names none.
pub const DEFAULT_KEY_ENV: &str = "STEPGATE_SECRET_KEY";

const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_CHECK_CONTEXT: &str = "stepgate/key-check/v1";
const KEY_CHECK_PLAINTEXT: &[u8] = b"stepgate secret key check";

/// What went wrong loading a key or sealing/opening a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// No key was configured.
    #[error(
        "no secret key: set the environment variable {env} (or `secrets.key_file`) to 32 random \
         bytes in base64 or hex — generate one with `stepgate secrets generate-key` or \
         `openssl rand -base64 32`; if this installation already has data, restore the key it \
         was created with"
    )]
    KeyMissing {
        /// The environment variable that was read.
        env: String,
    },

    /// The key file could not be read.
    #[error("cannot read the secret key file {path}: {source}; check `secrets.key_file`")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The key is not 32 bytes of base64 or hex.
    #[error("the secret key from {origin} is not 32 bytes in base64 or hex ({detail})")]
    KeyFormat {
        /// Where the key came from (`$STEPGATE_SECRET_KEY`, a path).
        origin: String,
        /// What is wrong with it (never the key itself).
        detail: String,
    },

    /// The sealed value does not open: wrong key, wrong context, or tampered bytes.
    #[error("a sealed secret ({context}) does not open with this key: the key is wrong or the value was altered")]
    OpenFailed {
        /// The context it was opened under.
        context: String,
    },

    /// The sealed value is not in a known format.
    #[error("a sealed secret is malformed: {0}")]
    Malformed(String),

    /// The AEAD refused to seal (only on absurd input sizes).
    #[error("sealing a secret failed")]
    SealFailed,
}

/// Where the secret key comes from (`secrets:` in the configuration).
///
/// ```yaml
/// secrets:
///   key_file: /etc/stepgate/secret.key   # or leave out and set STEPGATE_SECRET_KEY
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// A file holding the key: 32 random bytes written as base64 or hex (surrounding whitespace
    /// ignored). Takes precedence over `key_env`. Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The environment variable holding the key when no `key_file` is given.
    /// Default: `STEPGATE_SECRET_KEY`.
    #[serde(default = "default_key_env")]
    pub key_env: String,
}

fn default_key_env() -> String {
    DEFAULT_KEY_ENV.to_owned()
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            key_file: None,
            key_env: default_key_env(),
        }
    }
}

impl SecretsConfig {
    /// Loads the key: from `key_file` if set (relative paths against `base_dir`), else from the
    /// environment variable `key_env`. A missing key is an error, never a fresh random key.
    pub fn load_key(&self, base_dir: &Path) -> Result<SecretKey, SecretError> {
        if let Some(file) = &self.key_file {
            let path = if file.is_relative() {
                base_dir.join(file)
            } else {
                file.clone()
            };
            let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|source| {
                SecretError::KeyFile {
                    path: path.clone(),
                    source,
                }
            })?);
            return SecretKey::parse(&text, &path.display().to_string());
        }
        match std::env::var(&self.key_env) {
            Ok(v) if !v.trim().is_empty() => {
                let v = Zeroizing::new(v);
                SecretKey::parse(&v, &format!("${}", self.key_env))
            }
            _ => Err(SecretError::KeyMissing {
                env: self.key_env.clone(),
            }),
        }
    }
}

/// The 256-bit key that seals secrets at rest. Zeroed on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A fresh random key (for `generate-key` commands and tests).
    pub fn generate() -> Self {
        let key = ChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key);
        let k = SecretKey::from_bytes(bytes);
        bytes.zeroize();
        k
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// Parses 32 bytes written as base64 (standard or URL-safe, padded or not) or 64 hex digits.
    /// `origin` names the source in errors; the key never appears in an error.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SecretError> {
        let t = text.trim();
        let decoded: Zeroizing<Vec<u8>> = if t.len() == 64
            && t.bytes().all(|b| b.is_ascii_hexdigit())
        {
            Zeroizing::new(decode_hex(t))
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            let found = engines.iter().find_map(|e| e.decode(t).ok());
            match found {
                Some(v) => Zeroizing::new(v),
                None => {
                    return Err(SecretError::KeyFormat {
                        origin: origin.to_owned(),
                        detail: format!("{} characters, neither base64 nor 64 hex digits", t.len()),
                    })
                }
            }
        };
        if decoded.len() != 32 {
            return Err(SecretError::KeyFormat {
                origin: origin.to_owned(),
                detail: format!("decodes to {} bytes, expected 32", decoded.len()),
            });
        }
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&decoded);
        let k = SecretKey::from_bytes(bytes);
        bytes.zeroize();
        Ok(k)
    }

    /// The key as standard base64 (to show once when generating it).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*self.bytes))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&*self.bytes))
    }

    /// Seals `plaintext` under this key, bound to `context` (see [`factor_context`]).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<SealedSecret, SecretError> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::SealFailed)?;
        let mut bytes = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        bytes.push(SEALED_VERSION);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ct);
        Ok(SealedSecret(bytes))
    }

    /// Opens a sealed secret sealed under this key and the same `context`.
    pub fn open(
        &self,
        sealed: &SealedSecret,
        context: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let b = &sealed.0;
        if b.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(SecretError::Malformed(format!(
                "{} bytes is too short",
                b.len()
            )));
        }
        if b[0] != SEALED_VERSION {
            return Err(SecretError::Malformed(format!(
                "unknown format version {}",
                b[0]
            )));
        }
        let nonce = Nonce::from_slice(&b[1..1 + NONCE_LEN]);
        self.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &b[1 + NONCE_LEN..],
                    aad: context.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SecretError::OpenFailed {
                context: context.to_owned(),
            })
    }

    /// A key check value: a known plaintext sealed under this key. Stores keep one so that
    /// opening them with another key fails at start-up, not at the first TOTP check.
    pub fn key_check_value(&self) -> Result<SealedSecret, SecretError> {
        self.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_CONTEXT)
    }

    /// Whether `kcv` (from [`SecretKey::key_check_value`]) was made with this key.
    pub fn matches_key_check(&self, kcv: &SealedSecret) -> bool {
        matches!(self.open(kcv, KEY_CHECK_CONTEXT), Ok(p) if p.as_slice() == KEY_CHECK_PLAINTEXT)
    }
}

/// The context (associated data) a factor's secret is sealed under: binds it to the user and
/// the factor, so it cannot be moved to another.
pub fn factor_context(user_id: &str, factor_id: &str) -> String {
    // Length-prefixed so that ids containing separators cannot collide.
    format!(
        "stepgate/factor/v1/{}:{user_id}/{}:{factor_id}",
        user_id.len(),
        factor_id.len()
    )
}

/// A secret sealed with a [`SecretKey`]: `version ‖ nonce ‖ ciphertext+tag`. Opaque to the
/// store; serialized as base64 in JSON. `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(Vec<u8>);

impl SealedSecret {
    /// Wraps bytes read back from a store (checked when opened).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SealedSecret(bytes)
    }

    /// The sealed bytes, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.0.len())
    }
}

impl Serialize for SealedSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SealedSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map(SealedSecret)
            .map_err(serde::de::Error::custom)
    }
}

fn decode_hex(s: &str) -> Vec<u8> {
    fn nib(b: u8) -> u8 {
        match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 0,
        }
    }
    s.as_bytes()
        .chunks(2)
        .map(|c| (nib(c[0]) << 4) | c.get(1).map_or(0, |&b| nib(b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip() {
        let k = SecretKey::generate();
        let ctx = factor_context("u1", "f1");
        let s = k.seal(b"JBSWY3DPEHPK3PXP", &ctx).unwrap();
        assert_eq!(k.open(&s, &ctx).unwrap().as_slice(), b"JBSWY3DPEHPK3PXP");
        assert!(!s.as_bytes().windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
    }

    #[test]
    fn another_key_cannot_open() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let s = a.seal(b"seed", "ctx").unwrap();
        assert!(matches!(
            b.open(&s, "ctx"),
            Err(SecretError::OpenFailed { .. })
        ));
        assert!(!b.matches_key_check(&a.key_check_value().unwrap()));
        assert!(a.matches_key_check(&a.key_check_value().unwrap()));
    }

    #[test]
    fn context_binds_the_secret_to_its_factor() {
        let k = SecretKey::generate();
        let s = k.seal(b"seed", &factor_context("alice", "f1")).unwrap();
        assert!(matches!(
            k.open(&s, &factor_context("bob", "f1")),
            Err(SecretError::OpenFailed { .. })
        ));
        assert!(matches!(
            k.open(&s, &factor_context("alice", "f2")),
            Err(SecretError::OpenFailed { .. })
        ));
        assert_ne!(factor_context("a:1", "b"), factor_context("a", "1:b"));
    }

    #[test]
    fn tampering_is_detected() {
        let k = SecretKey::generate();
        let s = k.seal(b"seed", "ctx").unwrap();
        let mut bytes = s.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            k.open(&SealedSecret::from_bytes(bytes), "ctx"),
            Err(SecretError::OpenFailed { .. })
        ));
        assert!(matches!(
            k.open(&SealedSecret::from_bytes(vec![1, 2, 3]), "ctx"),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn nonces_are_fresh() {
        let k = SecretKey::generate();
        assert_ne!(k.seal(b"x", "c").unwrap(), k.seal(b"x", "c").unwrap());
    }

    #[test]
    fn parses_base64_and_hex_keys() {
        let k = SecretKey::generate();
        let b64 = k.to_base64();
        let parsed = SecretKey::parse(&format!("  {}\n", &*b64), "test").unwrap();
        let s = k.seal(b"x", "c").unwrap();
        assert_eq!(parsed.open(&s, "c").unwrap().as_slice(), b"x");

        let hex: String = "00112233445566778899aabbccddeeff".repeat(2);
        let hk = SecretKey::parse(&hex, "test").unwrap();
        assert_eq!(hk.bytes[1], 0x11);
        assert_eq!(hk.bytes[15], 0xff);

        let err = SecretKey::parse("c2hvcnQ=", "$STEPGATE_SECRET_KEY")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("$STEPGATE_SECRET_KEY") && err.contains("expected 32"),
            "{err}"
        );
        let err = SecretKey::parse("not a key!", "file")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("not a key"),
            "errors never echo the key: {err}"
        );
    }

    #[test]
    fn missing_key_is_a_clear_error() {
        let cfg = SecretsConfig {
            key_file: None,
            key_env: "STEPGATE_TEST_KEY_THAT_IS_NOT_SET".into(),
        };
        let err = cfg.load_key(Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("STEPGATE_TEST_KEY_THAT_IS_NOT_SET"), "{err}");
        assert!(err.contains("restore"), "{err}");
    }

    #[test]
    fn loads_key_from_file_relative_to_base_dir() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate();
        std::fs::write(
            dir.path().join("secret.key"),
            format!("{}\n", &*k.to_base64()),
        )
        .unwrap();
        let cfg = SecretsConfig {
            key_file: Some("secret.key".into()),
            ..SecretsConfig::default()
        };
        let loaded = cfg.load_key(dir.path()).unwrap();
        assert!(loaded.matches_key_check(&k.key_check_value().unwrap()));
        let missing = SecretsConfig {
            key_file: Some("nope.key".into()),
            ..SecretsConfig::default()
        };
        assert!(matches!(
            missing.load_key(dir.path()),
            Err(SecretError::KeyFile { .. })
        ));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let k = SecretKey::from_bytes([7u8; 32]);
        assert_eq!(format!("{k:?}"), "SecretKey(..)");
        let s = k.seal(b"x", "c").unwrap();
        assert!(format!("{s:?}").starts_with("SealedSecret("));
    }

    #[test]
    fn config_deserializes_from_yaml() {
        let c: SecretsConfig =
            marked_yaml::from_yaml(0, "key_file: /etc/stepgate/secret.key\n").unwrap();
        assert_eq!(
            c.key_file.as_deref(),
            Some(Path::new("/etc/stepgate/secret.key"))
        );
        assert_eq!(c.key_env, "STEPGATE_SECRET_KEY");
        let c: SecretsConfig = marked_yaml::from_yaml(0, "key_env: MY_KEY\n").unwrap();
        assert_eq!(c.key_env, "MY_KEY");
        assert!(c.key_file.is_none());
        assert!(marked_yaml::from_yaml::<SecretsConfig>(0, "key: abc\n").is_err());
    }
}
