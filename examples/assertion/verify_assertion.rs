// Verify stepgate's identity assertion (the X-Stepgate-Assertion header) in a Rust app.
//
// Needs: jsonwebtoken = "9", reqwest = "0.12", serde = { version = "1", features = ["derive"] },
// serde_json = "1", thiserror = "2".
//
//     let verifier = AssertionVerifier::new("https://auth.example.com", "wiki");
//     let identity = verifier.verify(header_value).await?;
//     let user = identity.preferred_username; // never the Remote-User header

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clock skew tolerated on `exp` and `iat`. Assertions live 60 s by default.
const LEEWAY: Duration = Duration::from_secs(5);
/// How long a fetched key set is used before it is fetched again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// A token naming an unknown key id makes the key set be fetched again (a key rotation),
/// but not more often than this.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// Who the request is from, as stepgate asserts it.
#[derive(Debug, Deserialize)]
pub struct Identity {
    /// The user's stable id.
    pub sub: String,
    /// The username.
    pub preferred_username: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `aal1`, `aal2` or `aal3`; absent when the user has no assurance level.
    pub acr: Option<String>,
    /// How the user authenticated (RFC 8176: `pwd`, `otp`, `hwk`, …).
    #[serde(default)]
    pub amr: Vec<String>,
    /// When the user last authenticated (Unix seconds).
    pub auth_time: Option<i64>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

/// Why an assertion was refused.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// Not a JWT.
    #[error("the assertion is not a JWT: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    /// Signed with another algorithm than ES256 (or `none`).
    #[error("the assertion is signed with {0:?}; only ES256 is accepted")]
    Algorithm(Algorithm),
    /// The header names no key.
    #[error("the assertion names no key id")]
    NoKeyId,
    /// The key set has no usable key with this id.
    #[error("no P-256 key `{0}` in stepgate's key set")]
    UnknownKey(String),
    /// The key set could not be fetched.
    #[error("fetching stepgate's key set: {0}")]
    Jwks(String),
    /// Signature, `iss`, `aud`, `exp` or a required claim is wrong.
    #[error("the assertion does not verify: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    /// `iat` is in the future.
    #[error("the assertion was issued in the future")]
    IssuedInFuture,
}

struct CachedKeys {
    set: JwkSet,
    fetched: Instant,
}

/// Verifies assertions for one app.
pub struct AssertionVerifier {
    issuer: String,
    audience: String,
    jwks_url: String,
    http: reqwest::Client,
    keys: Mutex<Option<CachedKeys>>,
}

impl AssertionVerifier {
    /// `issuer`: stepgate's `server.public_url`, exactly as configured (the `iss`).
    /// `audience`: this app's id in stepgate's `apps` (the `aud`). The keys are fetched from
    /// the issuer's `/.well-known/jwks.json`, never from anywhere the token names.
    pub fn new(issuer: &str, audience: &str) -> Self {
        AssertionVerifier {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            jwks_url: format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
            http: reqwest::Client::new(),
            keys: Mutex::new(None),
        }
    }

    /// Fetches the keys from `url` instead (stepgate's address inside the network).
    pub fn with_jwks_url(mut self, url: &str) -> Self {
        self.jwks_url = url.to_string();
        self
    }

    /// The identity in `token` if it is a valid assertion for this app.
    pub async fn verify(&self, token: &str) -> Result<Identity, AssertionError> {
        let header = jsonwebtoken::decode_header(token).map_err(AssertionError::Malformed)?;
        // The algorithm is fixed, not taken from the token.
        if header.alg != Algorithm::ES256 {
            return Err(AssertionError::Algorithm(header.alg));
        }
        let kid = header.kid.ok_or(AssertionError::NoKeyId)?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
        v.leeway = LEEWAY.as_secs();
        let identity = jsonwebtoken::decode::<Identity>(token, &key, &v)
            .map_err(AssertionError::Invalid)?
            .claims;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if identity.iat > now + LEEWAY.as_secs() as i64 {
            return Err(AssertionError::IssuedInFuture);
        }
        Ok(identity)
    }

    /// The P-256 key `kid` from the cached key set, fetching the set again when it is old,
    /// or when it lacks `kid` and was not fetched a moment ago.
    async fn key(&self, kid: &str) -> Result<DecodingKey, AssertionError> {
        let refetch = {
            let cached = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            match cached.as_ref() {
                Some(c) if c.fetched.elapsed() < JWKS_MAX_AGE => {
                    if let Some(key) = p256_key(&c.set, kid)? {
                        return Ok(key);
                    }
                    c.fetched.elapsed() >= JWKS_MIN_REFETCH
                }
                _ => true,
            }
        };
        if !refetch {
            return Err(AssertionError::UnknownKey(kid.to_string()));
        }
        let set = self.fetch().await?;
        let key = p256_key(&set, kid)?;
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = Some(CachedKeys {
            set,
            fetched: Instant::now(),
        });
        key.ok_or_else(|| AssertionError::UnknownKey(kid.to_string()))
    }

    async fn fetch(&self) -> Result<JwkSet, AssertionError> {
        let err = |e: reqwest::Error| AssertionError::Jwks(e.to_string());
        let text = self
            .http
            .get(&self.jwks_url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(err)?
            .text()
            .await
            .map_err(err)?;
        serde_json::from_str(&text).map_err(|e| AssertionError::Jwks(e.to_string()))
    }
}

/// The key `kid` in `set`, only if it is an EC P-256 key.
fn p256_key(set: &JwkSet, kid: &str) -> Result<Option<DecodingKey>, AssertionError> {
    let Some(jwk) = set.find(kid) else {
        return Ok(None);
    };
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            DecodingKey::from_ec_components(&p.x, &p.y)
                .map(Some)
                .map_err(|_| AssertionError::UnknownKey(kid.to_string()))
        }
        _ => Err(AssertionError::UnknownKey(kid.to_string())),
    }
}
