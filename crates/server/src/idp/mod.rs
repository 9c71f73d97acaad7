//! Upstream identity providers: signing in through an OpenID Provider an organisation
//! already runs (`identity_providers:`). The provider gives the first factor; the sign-in
//! then goes through the one access pipeline like a password does
//! ([`crate::portal::signin::sign_in`]), so every policy, context check and step-up applies
//! on top.
//!
//! - [`provider`]: the provider's metadata and signing keys, cached (the keys fetched
//!   again when a token names one not seen yet), and its token and user-info endpoints.
//! - [`id_token`]: the ID token checked — signature, `iss`, `aud`, `azp`, `exp`, `iat`,
//!   `nonce`.
//! - [`claims`]: claims → who the user is (username, name, e-mail, groups, attributes)
//!   and what the upstream's `amr`/`acr` count for under the provider's trust mapping.
//! - [`accounts`]: the stepgate user for an upstream subject — linked by (provider, `sub`),
//!   optionally by a verified e-mail, or created just in time.
//! - [`logout_token`]: a back-channel logout token checked (Back-Channel Logout 1.0).
//! - [`ldap`]: an LDAP directory / Active Directory as a password source (bind as the user),
//!   on a bounded pool of connections (`ldap_pool`).
//!
//! The portal's two pages (the redirect to the provider and its callback) are
//! [`crate::portal::upstream`]. What does not belong here: deciding access.

pub mod accounts;
pub mod claims;
pub mod id_token;
pub mod ldap;
mod ldap_pool;
pub mod logout_token;
pub mod provider;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey};
use stepgate_config::identity::{IdentityProviderConfig, SecretSource};

pub use claims::UpstreamIdentity;
use provider::Provider;

/// Why a sign-in through a provider did not give an identity. The `Display` text is for
/// the audit log and the operator; [`UpstreamError::public_message`] for the person.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The provider could not be reached or answered nonsense (metadata, keys, token).
    #[error("identity provider `{provider}` is unavailable: {detail}")]
    Unavailable {
        /// The provider's id.
        provider: String,
        /// What failed.
        detail: String,
    },
    /// The provider refused the sign-in (`error=` on the callback, or at the token endpoint).
    #[error("identity provider `{provider}` refused the sign-in: {detail}")]
    Refused {
        /// The provider's id.
        provider: String,
        /// Its error code and description.
        detail: String,
    },
    /// The ID token did not verify.
    #[error("identity provider `{provider}`: the ID token is not valid: {detail}")]
    BadToken {
        /// The provider's id.
        provider: String,
        /// Which check failed.
        detail: String,
    },
    /// The token verified but does not name a user stepgate can accept.
    #[error("identity provider `{provider}`: {detail}")]
    Unusable {
        /// The provider's id.
        provider: String,
        /// Why (a missing username claim, an account that exists and is not linked, …).
        detail: String,
    },
    /// The configuration is unusable (the client secret cannot be read).
    #[error("identity provider `{provider}` is misconfigured: {detail}")]
    Config {
        /// The provider's id.
        provider: String,
        /// What.
        detail: String,
    },
}

impl UpstreamError {
    /// What to tell the person signing in (never a token or a secret).
    pub fn public_message(&self, name: &str) -> String {
        match self {
            UpstreamError::Unavailable { .. } | UpstreamError::Config { .. } => format!(
                "{name} cannot be reached right now, so you cannot sign in with it. Try again in a few minutes."
            ),
            UpstreamError::Refused { .. } => format!("{name} did not sign you in."),
            UpstreamError::BadToken { .. } => format!(
                "The answer from {name} could not be verified, so you were not signed in. Start again."
            ),
            UpstreamError::Unusable { detail, .. } => format!("You cannot sign in with {name}: {detail}."),
        }
    }

    /// The short reason recorded in the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Unavailable { .. } => "unavailable",
            UpstreamError::Refused { .. } => "refused",
            UpstreamError::BadToken { .. } => "bad_token",
            UpstreamError::Unusable { .. } => "unusable",
            UpstreamError::Config { .. } => "misconfigured",
        }
    }
}

/// The providers' metadata and keys, fetched on first use and kept for the process (a
/// reload that changes a provider's issuer or discovery URL starts afresh for it).
pub struct IdentityProviders {
    http: reqwest::Client,
    providers: Mutex<HashMap<String, Arc<Provider>>>,
    base_dir: std::path::PathBuf,
    key: stepgate_store::SecretKey,
    directory: Mutex<Option<(String, Arc<ldap::Directory>)>>,
}

/// The sealing context of an upstream refresh token kept in a session.
const REFRESH_CONTEXT: &str = "stepgate/upstream/refresh/v1";

impl IdentityProviders {
    /// The service; relative secret files resolve against `base_dir`; upstream refresh
    /// tokens kept in sessions are sealed with `key` (the secrets key).
    pub fn new(base_dir: &std::path::Path, key: stepgate_store::SecretKey) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stepgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        IdentityProviders {
            http,
            providers: Mutex::new(HashMap::new()),
            base_dir: base_dir.to_path_buf(),
            key,
            directory: Mutex::new(None),
        }
    }

    /// `token` (a provider's refresh token for subject `sub` of provider `id`) sealed for
    /// a session (base64url): unreadable and unforgeable without the secrets key, and only
    /// for that provider and subject.
    pub fn seal_refresh(&self, id: &str, sub: &str, token: &str) -> Option<String> {
        use base64::Engine as _;
        let sealed = self
            .key
            .seal(token.as_bytes(), &format!("{REFRESH_CONTEXT}\n{id}\n{sub}"))
            .ok()?;
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed.as_bytes()))
    }

    /// A refresh token [`IdentityProviders::seal_refresh`] sealed.
    pub fn open_refresh(&self, id: &str, sub: &str, sealed: &str) -> Option<String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()?;
        let plain = self
            .key
            .open(
                &stepgate_store::SealedSecret::from_bytes(bytes),
                &format!("{REFRESH_CONTEXT}\n{id}\n{sub}"),
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// The provider `cfg` describes, its metadata read (once) from its discovery document.
    pub async fn provider(
        &self,
        cfg: &IdentityProviderConfig,
    ) -> Result<Arc<Provider>, UpstreamError> {
        let key = cache_key(cfg);
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let p = Arc::new(Provider::discover(&self.http, cfg).await?);
        self.lock().insert(key, p.clone());
        Ok(p)
    }

    /// The directory `cfg` describes, with its pool of connections: the same one for as
    /// long as the configuration says the same (a reload that changes `ldap:` starts a new
    /// pool; the old one's connections close when its last sign-in is done).
    pub fn directory(
        &self,
        cfg: &stepgate_config::identity::LdapConfig,
        base_dir: &std::path::Path,
    ) -> Result<Arc<ldap::Directory>, String> {
        let key = format!("{}\n{cfg:?}", base_dir.display());
        let mut held = self.directory.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, d)) = held.as_ref() {
            if *k == key {
                return Ok(d.clone());
            }
        }
        let d = Arc::new(ldap::Directory::new(cfg, base_dir)?);
        *held = Some((key, d.clone()));
        Ok(d)
    }

    /// The HTTP client requests to providers go through (no redirects followed).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// How stepgate authenticates to `provider`'s token endpoint: a signed client assertion
    /// made now (`private_key_jwt`), or the client secret read now (a rotated file or
    /// variable counts at once).
    pub fn client_auth(
        &self,
        cfg: &IdentityProviderConfig,
        provider: &Provider,
    ) -> Result<provider::ClientAuth, UpstreamError> {
        match &cfg.private_key_jwt {
            Some(k) => {
                let aud = match k.audience {
                    stepgate_config::identity::AssertionAudience::TokenEndpoint => {
                        provider.metadata.token_endpoint.as_str()
                    }
                    stepgate_config::identity::AssertionAudience::Issuer => cfg.issuer.as_str(),
                };
                let assertion = self.client_assertion(cfg, k, aud)?;
                Ok(provider::ClientAuth::Assertion {
                    client_id: cfg.client_id.to_string(),
                    assertion,
                })
            }
            None => Ok(provider::ClientAuth::Basic {
                client_id: cfg.client_id.to_string(),
                secret: self.client_secret(cfg)?,
            }),
        }
    }

    /// Checks that `cfg`'s credentials can be read (the secret, or the private key).
    pub fn check_credentials(&self, cfg: &IdentityProviderConfig) -> Result<(), UpstreamError> {
        match &cfg.private_key_jwt {
            Some(k) => self.client_assertion(cfg, k, "check").map(|_| ()),
            None => self.client_secret(cfg).map(|_| ()),
        }
    }

    /// A client assertion (RFC 7523 §3, OpenID Connect Core §9): `iss` and `sub` the client
    /// id, `aud` as configured, a fresh `jti`, valid for 60 s.
    fn client_assertion(
        &self,
        cfg: &IdentityProviderConfig,
        k: &stepgate_config::identity::PrivateKeyJwtConfig,
        aud: &str,
    ) -> Result<String, UpstreamError> {
        let err = config_error(cfg);
        let path = resolve(&self.base_dir, &k.key_file);
        let pem = std::fs::read(&path)
            .map_err(|e| err(format!("private_key_jwt.key_file {}: {e}", path.display())))?;
        let unusable = |e: jsonwebtoken::errors::Error| {
            err(format!(
                "private_key_jwt.key_file {}: not a usable private key for the algorithm: {e}",
                path.display()
            ))
        };
        let (alg, key) = match k.algorithm.as_deref() {
            None => default_key(&pem).map_err(unusable)?,
            Some(a) => {
                let alg = allowed_algorithm(a).map_err(&err)?;
                (alg, encoding_key(alg, &pem).map_err(unusable)?)
            }
        };
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = k.key_id.clone();
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": cfg.client_id.as_str(), "sub": cfg.client_id.as_str(), "aud": aud,
            "jti": crate::app::signer::random_id(), "iat": now, "exp": now + 60,
        });
        jsonwebtoken::encode(&header, &claims, &key).map_err(unusable)
    }

    /// The client secret of `cfg`, read now (a rotated file or variable counts at once).
    pub fn client_secret(&self, cfg: &IdentityProviderConfig) -> Result<String, UpstreamError> {
        let err = config_error(cfg);
        let Some(source) = &cfg.client_secret else {
            return Err(err("no client_secret is configured".into()));
        };
        let s = read_secret(source, &self.base_dir, "client_secret").map_err(&err)?;
        let s = s.trim().to_string();
        if s.is_empty() {
            return Err(err("the client secret is empty".into()));
        }
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Provider>>> {
        self.providers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A private key of no configured algorithm: ES256 for an EC key, else RS256.
fn default_key(pem: &[u8]) -> Result<(Algorithm, EncodingKey), jsonwebtoken::errors::Error> {
    match EncodingKey::from_ec_pem(pem) {
        Ok(key) => Ok((Algorithm::ES256, key)),
        Err(_) => Ok((Algorithm::RS256, EncodingKey::from_rsa_pem(pem)?)),
    }
}

/// `private_key_jwt.algorithm`, when it is one a client assertion may be signed with.
fn allowed_algorithm(a: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = a
        .parse()
        .map_err(|_| format!("private_key_jwt.algorithm `{a}` is unknown"))?;
    match alg {
        Algorithm::ES256
        | Algorithm::ES384
        | Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Ok(alg),
        _ => Err(format!("private_key_jwt.algorithm `{a}` is not allowed")),
    }
}

/// The private key `pem` for an allowed `alg`: EC for ES*, RSA for the others.
fn encoding_key(alg: Algorithm, pem: &[u8]) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
}

/// A configuration error of the provider `cfg`, saying `detail`.
fn config_error(cfg: &IdentityProviderConfig) -> impl Fn(String) -> UpstreamError + '_ {
    |detail| UpstreamError::Config {
        provider: cfg.id.to_string(),
        detail,
    }
}

/// `p` against `base_dir` when relative.
pub(crate) fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// A secret read now from where `source` says (a rotated file or variable counts at once;
/// a file's or variable's value trimmed); `key` names it in errors.
pub(crate) fn read_secret(
    source: &SecretSource,
    base_dir: &Path,
    key: &str,
) -> Result<String, String> {
    Ok(match source {
        SecretSource::File(p) => {
            let p = resolve(base_dir, p);
            std::fs::read_to_string(&p)
                .map_err(|e| format!("{key} file {}: {e}", p.display()))?
                .trim()
                .to_string()
        }
        SecretSource::Env(v) => std::env::var(v)
            .map_err(|_| format!("{key}: environment variable `{v}` is not set"))?
            .trim()
            .to_string(),
        SecretSource::InlineInsecure(s) => s.clone(),
    })
}

fn cache_key(cfg: &IdentityProviderConfig) -> String {
    format!(
        "{}\n{}\n{}",
        cfg.id.as_str(),
        cfg.issuer.as_str(),
        cfg.discovery_url.as_deref().map_or("", |s| s.as_str())
    )
}
