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
//!
//! Here: what a token says ([`BearerIdentity`]) and [`identify`], the access pipeline's
//! credentials stage for a token. Verifying a token is in [`verifier`] (its issuer's keys
//! in [`jwks`]); what a verified token stands for — its assurance against a step-up
//! requirement, a user record, a stand-in session — in [`claims`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;

use crate::access::request::{Subject, Who};
use crate::access::verdict::{SignInReason, Verdict};
use crate::app::state::Runtime;
use crate::session::cache::Caches;

mod claims;
mod jwks;
mod verifier;

pub use claims::{stand_in_session, token_meets, user_record};
pub use jwks::REFETCH_MIN;
pub use verifier::aal_of;

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
    let own = verifier.is_own(rt, token);
    let (mut id, grant) = verified(verifier, rt, app, token, own).await?;
    if let Some(g) = &grant {
        grant_live(cache, app, g).await?;
    }
    minted_for(rt, app, own, &id)?;
    if grant.is_some() {
        id.username = own_token_user(cache, app, &id).await?;
    }
    not_disabled(cache, app, &id).await?;
    let user = std::sync::Arc::new(user_record(&id));
    let session = stand_in_session(&id, &rt.config.assurance, now);
    Ok(Subject {
        user,
        who: Who::Bearer(Box::new(id), session),
    })
}

/// A token that does not verify: sign in (RFC 6750 `invalid_token`).
fn refused() -> Verdict {
    Verdict::SignIn(SignInReason::TokenRefused)
}

/// The verified token: one of stepgate's own (`own`, with the grant it came from) or one
/// of a configured issuer's.
async fn verified(
    verifier: &BearerVerifier,
    rt: &Runtime,
    app: &str,
    token: &str,
    own: bool,
) -> Result<(BearerIdentity, Option<OwnGrant>), Verdict> {
    let verified = if own {
        verifier.verify_own(rt, app, token)
    } else {
        verifier
            .verify(&rt.config.gateway.bearer, &rt.config.base_dir, token)
            .await
            .map(|id| (id, None))
    };
    verified.map_err(|e| {
        tracing::info!(app, error = %e, "bearer token refused");
        refused()
    })
}

/// One of stepgate's own access tokens is good only while its grant is not revoked and
/// its session not ended (signed out, revoked, CAEP): refused at once, not at `exp`.
async fn grant_live(cache: &Caches, app: &str, g: &OwnGrant) -> Result<(), Verdict> {
    match crate::oidc::grant::access_token_live(cache.hot(), &g.gid, &g.sid).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::info!(
                app,
                "bearer token of a revoked grant or ended session refused"
            );
            Err(refused())
        }
        Err(e) => Err(Verdict::Unavailable(e.to_string())),
    }
}

/// An app that names its own audiences accepts only tokens minted for it, even from an
/// issuer that also mints tokens for other apps (stepgate's own tokens were checked for
/// the app's access audience already).
fn minted_for(rt: &Runtime, app: &str, own: bool, id: &BearerIdentity) -> Result<(), Verdict> {
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
    Ok(())
}

/// One of stepgate's own tokens for a user names them by id: the user must still exist
/// and be enabled; their username comes from the record (a pairwise client's token may
/// carry none).
async fn own_token_user(cache: &Caches, app: &str, id: &BearerIdentity) -> Result<String, Verdict> {
    match cache.user(&id.sub).await {
        Ok(Some(u)) if !u.disabled => Ok(u.username.clone()),
        Ok(_) => {
            tracing::info!(app, "bearer token of a disabled or removed user refused");
            Err(refused())
        }
        Err(e) => Err(Verdict::Unavailable(e.to_string())),
    }
}

/// A subject who is a stepgate user an administrator disabled is refused, whoever issued
/// the token: disabling a user locks them out of every app behind stepgate.
async fn not_disabled(cache: &Caches, app: &str, id: &BearerIdentity) -> Result<(), Verdict> {
    match cache.user_by_username(&id.username).await {
        Ok(Some(u)) if u.disabled => {
            tracing::info!(app, user = %id.username, "bearer token for a disabled user refused");
            Err(refused())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(Verdict::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
