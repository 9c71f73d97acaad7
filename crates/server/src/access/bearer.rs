//! Bearer tokens on API requests: a JWT from a configured issuer stands in for the session.
//!
//! A request with `Authorization: Bearer` is judged on its token alone (a session cookie
//! beside it is ignored). The token must be signed by a key in the issuer's JWKS with an
//! algorithm on the issuer's allow-list (never `none` or HMAC), name a configured issuer
//! and accepted audience, and be within `exp` / `nbf` (with `gateway.bearer.leeway`). JWKS
//! are fetched with a timeout, cached for `gateway.bearer.jwks_cache`, and fetched again
//! when a token names an unknown `kid` (at most every [`REFETCH_MIN`] per issuer). Anything
//! that cannot be verified is a `401`; nothing unverified is ever allowed.
//!
//! The token's `acr` (`aalN`, NIST's `…/aal/N` URIs, or the issuer's configured values),
//! `amr` and `auth_time` are checked against a step-up requirement the way a session's
//! factors are; when they fall short the client gets RFC 9470's challenge.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use stepgate_authn::{AssuranceConfig, FactorKind, PassedFactor};
use stepgate_config::{BearerConfig, BearerIssuer};
use stepgate_store::UserRecord;

use super::request::{Subject, Who};
use super::verdict::{SignInReason, Verdict};
use crate::app::state::Runtime;
use crate::session::cache::Caches;
use crate::session::{Session, SessionData};
use stepgate_policy::{MaxAge, StepUpRequirement};

/// The shortest time between two fetches of one issuer's JWKS for unknown `kid`s.
pub const REFETCH_MIN: Duration = Duration::from_secs(10);

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a bearer token was refused. The text goes to the client (it names no internals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Not a JWT.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `iss` is not a configured issuer.
    #[error("the token's issuer is not trusted here")]
    UnknownIssuer,
    /// The algorithm is not on the issuer's allow-list.
    #[error("the token's signing algorithm is not accepted")]
    Algorithm,
    /// No key in the issuer's JWKS has the token's `kid`.
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// The issuer's keys could not be fetched.
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
    /// Signature, audience, expiry or another claim check failed.
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// What a verified token says about its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerIdentity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub sub: String,
    /// The username claim (or `sub`).
    pub username: String,
    /// `email`.
    pub email: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// `acr` as sent.
    pub acr: Option<String>,
    /// The AAL the `acr` stands for (1 when absent or unknown: the holder authenticated).
    pub aal: u8,
    /// `amr`.
    pub amr: Vec<String>,
    /// `auth_time`.
    pub auth_time: Option<DateTime<Utc>>,
    /// `exp`.
    pub expires: Option<DateTime<Utc>>,
    /// `aud` (one string or a list).
    pub audiences: Vec<String>,
}

/// The grant and session an access token of stepgate's own provider came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnGrant {
    /// `gid`: the grant.
    pub gid: String,
    /// `sid`: the session.
    pub sid: String,
}

struct CachedKeys {
    set: JwkSet,
    fetched: Instant,
}

/// Verifies bearer tokens, caching each issuer's keys.
pub struct BearerVerifier {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, CachedKeys>>,
    fetching: tokio::sync::Mutex<()>,
    /// The keys of stepgate's own OpenID Provider: its access tokens are accepted with no
    /// `gateway.bearer` entry (set once at start).
    own: std::sync::OnceLock<std::sync::Arc<crate::gateway::assertion::AssertionKeys>>,
    /// The secrets key, to open the user id a pairwise client's access token carries sealed.
    own_secret: std::sync::OnceLock<stepgate_store::SecretKey>,
}

impl Default for BearerVerifier {
    fn default() -> Self {
        Self::new()
    }
}

/// The token in `Authorization: Bearer …`, if any.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    (v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ")).then(|| v[7..].trim())
}

fn parse_alg(s: &str) -> Option<Algorithm> {
    Some(match s {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The unverified `iss` of a JWT (to pick the issuer's keys; verified afterwards).
fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// The AAL an `acr` value stands for.
pub fn aal_of(acr: &str, issuer: &BearerIssuer) -> Option<u8> {
    if let Some(&n) = issuer.acr_values.get(acr) {
        return Some(n);
    }
    let n = acr
        .strip_prefix("aal")
        .or_else(|| acr.strip_prefix("http://idmanagement.gov/ns/assurance/aal/"))
        .or_else(|| acr.strip_prefix("https://idmanagement.gov/ns/assurance/aal/"))?;
    n.parse().ok().filter(|n| (1..=3).contains(n))
}

impl BearerVerifier {
    /// A verifier with an empty cache.
    pub fn new() -> Self {
        BearerVerifier {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            own: std::sync::OnceLock::new(),
            own_secret: std::sync::OnceLock::new(),
        }
    }

    /// Accepts the access tokens of stepgate's own OpenID Provider, signed with `keys`
    /// (and opens their sealed user ids with `secret`).
    pub fn trust_own_tokens(
        &self,
        keys: std::sync::Arc<crate::gateway::assertion::AssertionKeys>,
        secret: stepgate_store::SecretKey,
    ) {
        let _ = self.own.set(keys);
        let _ = self.own_secret.set(secret);
    }

    /// Verifies an access token of stepgate's own provider (RFC 9068 `at+jwt`, signed with
    /// the deployment's keys) minted for `app`: its audience is the client's app's access
    /// audience ([`crate::oidc::tokens::access_audience`]). Also says which grant and
    /// session it came from (none for a `client_credentials` token), for the caller to
    /// check that they still stand.
    pub fn verify_own(
        &self,
        rt: &Runtime,
        app: &str,
        token: &str,
    ) -> Result<(BearerIdentity, Option<OwnGrant>), BearerError> {
        let keys = self.own.get().ok_or(BearerError::KeysUnavailable)?;
        let issuer = crate::oidc::issuer(rt);
        let claims = crate::oidc::tokens::verify_access(keys, &issuer, token)
            .ok_or_else(|| BearerError::Invalid("verification failed".into()))?;
        let acr = &rt.config.oidc.acr;
        let mut acr_values: std::collections::BTreeMap<String, u8> = acr.aliases.clone();
        for n in 1..=3u8 {
            acr_values.insert(acr.name(n), n);
        }
        let iss = BearerIssuer {
            issuer,
            jwks_url: None,
            jwks_file: None,
            audiences: Vec::new(),
            algorithms: vec!["ES256".into()],
            acr_values,
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
        };
        let mut id = identity(&claims, &iss);
        // A pairwise client's token: `sub` is the client's; the user is the sealed `sgu`.
        if let Some(sealed) = claims.get("sgu").and_then(|v| v.as_str()) {
            let uid = self
                .own_secret
                .get()
                .and_then(|k| crate::oidc::grant::open_uid(k, sealed))
                .ok_or_else(|| BearerError::Invalid("verification failed".into()))?;
            id.sub = uid;
        }
        let want = crate::oidc::tokens::access_audience(app);
        if !id.audiences.contains(&want) {
            return Err(BearerError::Invalid("wrong audience".into()));
        }
        let s = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let grant = match (s("gid"), s("sid")) {
            (Some(gid), Some(sid)) => Some(OwnGrant { gid, sid }),
            // A client_credentials token: the client itself, no user, no session.
            (None, _) if s("sub").is_some() && s("sub") == s("client_id") => None,
            _ => return Err(BearerError::Invalid("no grant".into())),
        };
        Ok((id, grant))
    }

    /// Whether `token` names stepgate's own provider as its issuer (and no configured
    /// issuer has that name).
    pub fn is_own(&self, rt: &Runtime, token: &str) -> bool {
        if rt.config.oidc.clients.is_empty() || self.own.get().is_none() {
            return false;
        }
        let own = crate::oidc::issuer(rt);
        peek_issuer(token).is_some_and(|i| i == own)
            && !rt
                .config
                .gateway
                .bearer
                .issuers
                .iter()
                .any(|i| i.issuer == own)
    }

    fn cached(&self, issuer: &str) -> Option<(JwkSet, Instant)> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.get(issuer).map(|k| (k.set.clone(), k.fetched))
    }

    async fn fetch(
        &self,
        cfg: &BearerConfig,
        iss: &BearerIssuer,
        base_dir: &Path,
    ) -> Result<JwkSet, BearerError> {
        let set = if let Some(url) = &iss.jwks_url {
            let resp = self
                .http
                .get(url)
                .timeout(cfg.jwks_timeout.0)
                .send()
                .await
                .and_then(|r| r.error_for_status());
            let body = match resp {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            match body {
                Ok(b) if b.len() <= MAX_JWKS_BYTES => serde_json::from_slice::<JwkSet>(&b)
                    .map_err(|e| {
                        tracing::warn!(issuer = %iss.issuer, %url, error = %e, "bearer: the JWKS does not parse");
                        BearerError::KeysUnavailable
                    })?,
                Ok(_) => {
                    tracing::warn!(issuer = %iss.issuer, %url, "bearer: the JWKS is too large");
                    return Err(BearerError::KeysUnavailable);
                }
                Err(e) => {
                    tracing::warn!(issuer = %iss.issuer, %url, error = %e, "bearer: fetching the JWKS failed");
                    return Err(BearerError::KeysUnavailable);
                }
            }
        } else if let Some(file) = &iss.jwks_file {
            let path = base_dir.join(file);
            let text = std::fs::read(&path).map_err(|e| {
                tracing::warn!(issuer = %iss.issuer, path = %path.display(), error = %e, "bearer: reading the JWKS file failed");
                BearerError::KeysUnavailable
            })?;
            serde_json::from_slice::<JwkSet>(&text).map_err(|e| {
                tracing::warn!(issuer = %iss.issuer, path = %path.display(), error = %e, "bearer: the JWKS file does not parse");
                BearerError::KeysUnavailable
            })?
        } else {
            return Err(BearerError::KeysUnavailable);
        };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            iss.issuer.clone(),
            CachedKeys {
                set: set.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(set)
    }

    /// The key for `kid` (or the only key when the token names none).
    async fn key_for(
        &self,
        cfg: &BearerConfig,
        iss: &BearerIssuer,
        base_dir: &Path,
        kid: Option<&str>,
    ) -> Result<Jwk, BearerError> {
        let pick = |set: &JwkSet| -> Option<Jwk> {
            match kid {
                Some(k) => set.find(k).cloned(),
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let cached = self.cached(&iss.issuer);
        if let Some((set, at)) = &cached {
            if at.elapsed() < cfg.jwks_cache.0 {
                if let Some(k) = pick(set) {
                    return Ok(k);
                }
                if at.elapsed() < REFETCH_MIN {
                    return Err(BearerError::UnknownKey);
                }
            }
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Someone else may have fetched while this request waited.
        if let Some((set, at)) = self.cached(&iss.issuer) {
            if cached.as_ref().is_none_or(|(_, before)| at > *before) {
                if let Some(k) = pick(&set) {
                    return Ok(k);
                }
            }
        }
        match self.fetch(cfg, iss, base_dir).await {
            Ok(set) => pick(&set).ok_or(BearerError::UnknownKey),
            Err(e) => {
                // Keys fetched earlier still verify tokens signed with them.
                if let Some((set, _)) = cached {
                    if let Some(k) = pick(&set) {
                        return Ok(k);
                    }
                }
                Err(e)
            }
        }
    }

    /// Verifies `token` against the configured issuers.
    pub async fn verify(
        &self,
        cfg: &BearerConfig,
        base_dir: &Path,
        token: &str,
    ) -> Result<BearerIdentity, BearerError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| BearerError::Malformed)?;
        let iss_value = peek_issuer(token).ok_or(BearerError::Malformed)?;
        let iss = cfg
            .issuers
            .iter()
            .find(|i| i.issuer == iss_value)
            .ok_or(BearerError::UnknownIssuer)?;
        if !iss
            .algorithms
            .iter()
            .filter_map(|a| parse_alg(a))
            .any(|a| a == header.alg)
        {
            return Err(BearerError::Algorithm);
        }
        let jwk = self
            .key_for(cfg, iss, base_dir, header.kid.as_deref())
            .await?;
        // A key published for one algorithm is not used with another.
        if let Some(ka) = jwk.common.key_algorithm {
            if format!("{ka:?}") != format!("{:?}", header.alg) {
                return Err(BearerError::Algorithm);
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| BearerError::UnknownKey)?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[iss.issuer.as_str()]);
        v.set_audience(&iss.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = cfg.leeway.as_secs();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            BearerError::Invalid(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".into(),
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired".into(),
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => "not yet valid".into(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience".into(),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => "wrong issuer".into(),
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) => {
                    format!("missing claim `{c}`")
                }
                _ => "verification failed".into(),
            })
        })?;
        Ok(identity(&data.claims, iss))
    }
}

fn identity(c: &serde_json::Value, iss: &BearerIssuer) -> BearerIdentity {
    let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let list = |k: &str| -> Vec<String> {
        match c.get(k) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => s
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    };
    let time = |k: &str| {
        c.get(k)
            .and_then(|v| v.as_i64())
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
    };
    let sub = s("sub").unwrap_or_default();
    let acr = s("acr");
    BearerIdentity {
        issuer: iss.issuer.clone(),
        username: s(&iss.username_claim).unwrap_or_else(|| sub.clone()),
        sub,
        email: s("email"),
        name: s("name"),
        groups: list(&iss.groups_claim),
        aal: acr.as_deref().and_then(|a| aal_of(a, iss)).unwrap_or(1),
        acr,
        amr: list("amr"),
        auth_time: time("auth_time"),
        expires: time("exp"),
        // RFC 7519: one StringOrURI or an array of them, never split.
        audiences: match c.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        },
    }
}

const PHISHING_RESISTANT_AMR: &[&str] = &["hwk", "swk", "phr", "phrh", "fido"];
const HARDWARE_BOUND_AMR: &[&str] = &["hwk", "phrh"];

/// Whether a token meets a step-up requirement: level from its `acr`, freshness from its
/// `auth_time`, factors and phishing resistance from its `amr`.
pub fn token_meets(
    id: &BearerIdentity,
    req: &StepUpRequirement,
    cfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> bool {
    if req.min_aal.is_some_and(|m| id.aal < m) {
        return false;
    }
    let max_age = match req.max_age {
        Some(MaxAge::EveryTime) => Some(cfg.every_time_window.as_secs()),
        Some(MaxAge::Within(d)) => Some(d.as_secs()),
        None => None,
    };
    if let Some(m) = max_age {
        match id.auth_time {
            Some(t) if now.signed_duration_since(t).num_seconds() <= m as i64 => {}
            _ => return false,
        }
    }
    let has = |set: &[&str]| id.amr.iter().any(|a| set.contains(&a.as_str()));
    if req.phishing_resistant && !(id.aal >= 3 || has(PHISHING_RESISTANT_AMR)) {
        return false;
    }
    if req.hardware_bound && !has(HARDWARE_BOUND_AMR) {
        return false;
    }
    if !req.factors.is_empty() {
        let ok = req.factors.iter().any(|f| {
            let amr = FactorKind::ALL
                .iter()
                .find(|k| k.as_str() == f)
                .map(|k| cfg.factor(*k).amr)
                .unwrap_or_else(|| f.clone());
            id.amr.contains(&amr)
        });
        if !ok {
            return false;
        }
    }
    true
}

/// A user record standing for the token's subject (for the policy context and headers).
pub fn user_record(id: &BearerIdentity) -> UserRecord {
    let mut u = UserRecord::new(id.username.clone());
    u.id = id.sub.clone();
    u.email = id.email.clone();
    u.name = id.name.clone();
    u.groups = id.groups.clone();
    u
}

/// A stand-in session for code that reads one (identity headers in forward-auth): the
/// token's `amr` as factors passed at `auth_time`. Never stored.
pub fn stand_in_session(id: &BearerIdentity, cfg: &AssuranceConfig, now: DateTime<Utc>) -> Session {
    let at = id.auth_time.unwrap_or(now);
    let mut factors = Vec::new();
    for a in &id.amr {
        let f = match a.as_str() {
            "hwk" => PassedFactor::webauthn(cfg, at, true, true),
            "swk" => PassedFactor::webauthn(cfg, at, true, false),
            other => match FactorKind::ALL
                .iter()
                .find(|k| cfg.factor(**k).amr == other)
            {
                Some(k) => PassedFactor::new(*k, cfg, at),
                None => continue,
            },
        };
        factors.push(f);
    }
    if factors.is_empty() {
        factors.push(PassedFactor::new(FactorKind::Password, cfg, at));
    }
    let mut data = SessionData::new(&id.sub, &id.username, factors.remove(0), at);
    for f in factors {
        data.add_factor(f);
    }
    Session {
        id: String::new(),
        data: std::sync::Arc::new(data),
    }
}

/// Who a bearer token says the request comes from, for an app: the token must verify,
/// be minted for the app when it names its own audiences, and not name a user an
/// administrator disabled. Any of those failing is [`Verdict::SignIn`] (RFC 6750
/// `invalid_token` for the client); a store failure is [`Verdict::Unavailable`].
pub async fn identify(
    verifier: &BearerVerifier,
    cache: &Caches,
    rt: &Runtime,
    app: Option<&str>,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Subject, Verdict> {
    let app = app.unwrap_or("");
    let refused = || Verdict::SignIn(SignInReason::TokenRefused);
    let own = verifier.is_own(rt, token);
    let verified = if own {
        verifier.verify_own(rt, app, token)
    } else {
        verifier
            .verify(&rt.config.gateway.bearer, &rt.config.base_dir, token)
            .await
            .map(|id| (id, None))
    };
    let (id, grant) = match verified {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(app, error = %e, "bearer token refused");
            return Err(refused());
        }
    };
    // One of stepgate's own access tokens is good only while its grant is not revoked and
    // its session not ended (signed out, revoked, CAEP): refused at once, not at `exp`.
    if let Some(g) = &grant {
        match crate::oidc::grant::access_token_live(cache.hot(), &g.gid, &g.sid).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    app,
                    "bearer token of a revoked grant or ended session refused"
                );
                return Err(refused());
            }
            Err(e) => return Err(Verdict::Unavailable(e.to_string())),
        }
    }
    // An app that names its own audiences accepts only tokens minted for it, even from an
    // issuer that also mints tokens for other apps (stepgate's own tokens were checked for
    // the app's access audience already).
    if let Some(want) = rt
        .config
        .gateway
        .apps
        .get(app)
        .map(|a| &a.audiences)
        .filter(|w| !own && !w.is_empty())
    {
        if !id.audiences.iter().any(|a| want.contains(a)) {
            tracing::info!(app, audiences = ?id.audiences, "bearer token not minted for this app refused");
            return Err(refused());
        }
    }
    // One of stepgate's own tokens for a user names them by id: the user must still exist
    // and be enabled; their username comes from the record (a pairwise client's token may
    // carry none).
    let mut id = id;
    if grant.is_some() {
        match cache.user(&id.sub).await {
            Ok(Some(u)) if !u.disabled => id.username = u.username.clone(),
            Ok(_) => {
                tracing::info!(app, "bearer token of a disabled or removed user refused");
                return Err(refused());
            }
            Err(e) => return Err(Verdict::Unavailable(e.to_string())),
        }
    }
    // A subject who is a stepgate user an administrator disabled is refused, whoever issued
    // the token: disabling a user locks them out of every app behind stepgate.
    match cache.user_by_username(&id.username).await {
        Ok(Some(u)) if u.disabled => {
            tracing::info!(app, user = %id.username, "bearer token for a disabled user refused");
            return Err(refused());
        }
        Ok(_) => {}
        Err(e) => return Err(Verdict::Unavailable(e.to_string())),
    }
    let user = std::sync::Arc::new(user_record(&id));
    let session = stand_in_session(&id, &rt.config.assurance, now);
    Ok(Subject {
        user,
        who: Who::Bearer(Box::new(id), session),
    })
}

#[cfg(test)]
mod tests;
