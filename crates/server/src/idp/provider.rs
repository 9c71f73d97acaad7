//! One provider's endpoints: its discovery document (OpenID Connect Discovery 1.0), its
//! signing keys (fetched again, at most every [`REFETCH_AT_MOST_EVERY`], when a token
//! names a key not seen yet: the provider rotated), and the token endpoint.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde::Deserialize;
use stepgate_config::identity::IdentityProviderConfig;

use super::UpstreamError;

/// How often an unknown key id may send stepgate to the provider's keys again: a stream of
/// tokens with made-up key ids must not become a stream of requests to the provider.
pub const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// How long fetched keys are used before being fetched again (a key the provider withdrew
/// stops verifying within this); when the provider cannot be reached then, the keys held
/// are kept until it can.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);

/// The largest discovery document, key set or token answer read.
const MAX_BODY: usize = 256 * 1024;

/// What stepgate reads of the discovery document.
#[derive(Clone, Debug, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer (Discovery §4.3).
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
    /// The user-info endpoint (read when `userinfo` is on).
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// Where RP-initiated logout goes.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// How stepgate authenticates to a token endpoint.
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the client id and secret.
    Basic {
        /// The client id.
        client_id: String,
        /// The secret.
        secret: String,
    },
    /// `private_key_jwt`: a signed client assertion in the form.
    Assertion {
        /// The client id.
        client_id: String,
        /// The assertion (a JWT).
        assertion: String,
    },
}

impl ClientAuth {
    /// `req` to a token endpoint with `form`, authenticated this way: HTTP Basic, or the
    /// client assertion added to the form.
    fn authenticate<'a>(
        &'a self,
        req: reqwest::RequestBuilder,
        form: &mut Vec<(&'a str, &'a str)>,
    ) -> reqwest::RequestBuilder {
        match self {
            ClientAuth::Basic { client_id, secret } => {
                // RFC 6749 §2.3.1: the id and secret are form-encoded before Basic.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                req.basic_auth(enc(client_id), Some(enc(secret)))
            }
            ClientAuth::Assertion {
                client_id,
                assertion,
            } => {
                form.push(("client_id", client_id));
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", assertion));
                req
            }
        }
    }
}

/// A provider's metadata and its keys.
pub struct Provider {
    /// The provider's id.
    pub id: String,
    /// Its metadata.
    pub metadata: Metadata,
    keys: Mutex<Keys>,
    timeout: Duration,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// The answer of the token endpoint.
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// The ID token.
    #[serde(default)]
    pub id_token: Option<String>,
    /// The access token (for the user-info endpoint).
    #[serde(default)]
    pub access_token: Option<String>,
    /// The refresh token (kept, sealed, when the provider's `refresh_interval` is set).
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// What a token endpoint's refusal says: its OAuth error and description, or the status.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => format!(
            "{}{}",
            e.error,
            e.error_description
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
        Err(_) => format!("HTTP {status}"),
    }
}

fn unavailable(id: &str, detail: impl Into<String>) -> UpstreamError {
    UpstreamError::Unavailable {
        provider: id.to_string(),
        detail: detail.into(),
    }
}

/// GETs `url` as JSON, within `timeout` and [`MAX_BODY`].
async fn get_json<T: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    id: &str,
    url: &str,
    timeout: Duration,
    what: &str,
) -> Result<T, UpstreamError> {
    let r = http
        .get(url)
        .header("accept", "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| unavailable(id, format!("{what} at {url}: {e}")))?;
    if !r.status().is_success() {
        return Err(unavailable(
            id,
            format!("{what} at {url}: HTTP {}", r.status()),
        ));
    }
    let body = read_body(r, id, what).await?;
    serde_json::from_slice(&body).map_err(|e| unavailable(id, format!("{what} at {url}: {e}")))
}

async fn read_body(
    mut r: reqwest::Response,
    id: &str,
    what: &str,
) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| unavailable(id, format!("{what}: {e}")))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(unavailable(
                id,
                format!("{what}: the answer is larger than {} KiB", MAX_BODY / 1024),
            ));
        }
    }
    Ok(body)
}

impl Provider {
    /// Reads the discovery document and the keys of the provider `cfg` describes.
    pub async fn discover(
        http: &reqwest::Client,
        cfg: &IdentityProviderConfig,
    ) -> Result<Provider, UpstreamError> {
        let id = cfg.id.as_str();
        let timeout = cfg.timeout.0;
        let url = match &cfg.discovery_url {
            Some(u) => u.to_string(),
            None => format!(
                "{}/.well-known/openid-configuration",
                cfg.issuer.trim_end_matches('/')
            ),
        };
        let metadata: Metadata = get_json(http, id, &url, timeout, "discovery").await?;
        if metadata.issuer != *cfg.issuer {
            return Err(unavailable(
                id,
                format!(
                    "the discovery document names issuer `{}`, not the configured `{}`",
                    metadata.issuer,
                    cfg.issuer.as_str()
                ),
            ));
        }
        for (what, u) in [
            ("authorization_endpoint", &metadata.authorization_endpoint),
            ("token_endpoint", &metadata.token_endpoint),
            ("jwks_uri", &metadata.jwks_uri),
        ] {
            let ok = url::Url::parse(u).is_ok_and(|p| {
                p.scheme() == "https" || (p.scheme() == "http" && cfg.issuer.starts_with("http://"))
            });
            if !ok {
                return Err(unavailable(
                    id,
                    format!("the discovery document's {what} `{u}` is not an https URL"),
                ));
            }
        }
        let set: JwkSet = get_json(http, id, &metadata.jwks_uri, timeout, "keys").await?;
        Ok(Provider {
            id: id.to_string(),
            metadata,
            keys: Mutex::new(Keys {
                set,
                fetched: Instant::now(),
            }),
            timeout,
        })
    }

    /// The signing key a token names (`kid`), or the only key there is when it names none.
    /// Keys older than [`KEYS_MAX_AGE`] are fetched again first; an unknown key id fetches
    /// them again (at most every [`REFETCH_AT_MOST_EVERY`]).
    pub async fn key(
        &self,
        http: &reqwest::Client,
        kid: Option<&str>,
    ) -> Result<Jwk, UpstreamError> {
        if self.lock().fetched.elapsed() >= KEYS_MAX_AGE {
            let url = &self.metadata.jwks_uri;
            match get_json::<JwkSet>(http, &self.id, url, self.timeout, "keys").await {
                Ok(set) => {
                    let mut keys = self.lock();
                    keys.set = set;
                    keys.fetched = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(provider = %self.id, error = %e, "keys not refreshed; the ones held are kept")
                }
            }
        }
        if let Some(k) = self.find(kid) {
            return Ok(k);
        }
        let due = self.lock().fetched.elapsed() >= REFETCH_AT_MOST_EVERY;
        if due {
            let set: JwkSet = get_json(
                http,
                &self.id,
                &self.metadata.jwks_uri,
                self.timeout,
                "keys",
            )
            .await?;
            let mut keys = self.lock();
            keys.set = set;
            keys.fetched = Instant::now();
        }
        self.find(kid).ok_or_else(|| UpstreamError::BadToken {
            provider: self.id.clone(),
            detail: match kid {
                Some(k) => {
                    format!("it is signed with key `{k}`, which the provider does not publish")
                }
                None => "it names no key and the provider publishes more than one".into(),
            },
        })
    }

    fn find(&self, kid: Option<&str>) -> Option<Jwk> {
        let keys = self.lock();
        let signing = keys.set.keys.iter().filter(|k| {
            !matches!(
                k.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            )
        });
        match kid {
            Some(kid) => signing
                .into_iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid))
                .cloned(),
            None => {
                let all: Vec<&Jwk> = signing.collect();
                (all.len() == 1).then(|| all[0].clone())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exchanges an authorization code (with its PKCE verifier) at the token endpoint,
    /// authenticating with HTTP Basic (`client_secret_basic`).
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        client: &ClientAuth,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenAnswer, UpstreamError> {
        self.token_request(
            http,
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    /// Redeems a refresh token (RFC 6749 §6): whether the provider still vouches for the
    /// user. A refusal (`invalid_grant`: the user disabled, the grant revoked, the session
    /// ended there) is [`UpstreamError::Refused`].
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        client: &ClientAuth,
        refresh_token: &str,
    ) -> Result<TokenAnswer, UpstreamError> {
        self.token_request(
            http,
            client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// A request to the token endpoint, authenticating as `client` says.
    async fn token_request(
        &self,
        http: &reqwest::Client,
        client: &ClientAuth,
        form: &[(&str, &str)],
    ) -> Result<TokenAnswer, UpstreamError> {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let req = client.authenticate(http.post(&self.metadata.token_endpoint), &mut form);
        let r = req
            .header("accept", "application/json")
            .form(&form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| unavailable(&self.id, format!("token endpoint: {e}")))?;
        let status = r.status();
        let body = read_body(r, &self.id, "token endpoint").await?;
        if status.is_client_error() {
            return Err(UpstreamError::Refused {
                provider: self.id.clone(),
                detail: format!("token endpoint: {}", refusal(status, &body)),
            });
        }
        if !status.is_success() {
            return Err(unavailable(
                &self.id,
                format!("token endpoint: HTTP {status}"),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| unavailable(&self.id, format!("token endpoint: {e}")))
    }

    /// The user-info claims for an access token.
    pub async fn userinfo(
        &self,
        http: &reqwest::Client,
        access_token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, UpstreamError> {
        let Some(url) = &self.metadata.userinfo_endpoint else {
            return Err(unavailable(
                &self.id,
                "userinfo is on, but the provider publishes no userinfo_endpoint",
            ));
        };
        let r = http
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| unavailable(&self.id, format!("userinfo: {e}")))?;
        if !r.status().is_success() {
            return Err(unavailable(
                &self.id,
                format!("userinfo: HTTP {}", r.status()),
            ));
        }
        let body = read_body(r, &self.id, "userinfo").await?;
        serde_json::from_slice(&body).map_err(|e| unavailable(&self.id, format!("userinfo: {e}")))
    }
}
