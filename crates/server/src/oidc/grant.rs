//! What an authorization grants, and how it is kept: the authorization itself travels
//! sealed in the code and in each refresh token (ChaCha20-Poly1305 under the secrets key:
//! opaque to the client, unforgeable, nothing to steal from a store), while the hot store
//! keeps what must be shared by every node — each code's and refresh token's single use,
//! and a grant's revocation. A grant is tied to the session it came from (its user and
//! the session's creation time, which survive the id rotation of a step-up): once that
//! session ends (sign-out, "sign out everywhere", an admin or CAEP revoke, a disabled
//! user), no refresh succeeds and introspection says inactive.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stepgate_store::{HotStore, SealedSecret, StoreError};

use super::Provider;
use crate::app::state::Shared;

/// Who authorized what, with the authentication behind it: carried by codes and refresh
/// tokens; a refresh never raises it (the assurance is the session's at the time of the
/// authorization).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Authorization {
    /// The client.
    pub cid: String,
    /// The user's id (`sub`).
    pub uid: String,
    /// The session's creation time (µs since the epoch): the session the grant is tied to.
    pub sct: i64,
    /// The NIST level reached.
    pub aal: u8,
    /// RFC 8176 methods used.
    pub amr: Vec<String>,
    /// When the user last authenticated (s since the epoch).
    pub auth_time: i64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The grant's id: every token issued from one code shares it.
    pub gid: String,
    /// The request's `nonce` (ID tokens from the code carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// An authorization code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Code {
    /// The authorization.
    pub auth: Authorization,
    /// The redirect URI it was sent to.
    pub ruri: String,
    /// The PKCE S256 challenge.
    #[serde(default)]
    pub chal: Option<String>,
    /// Expiry (s since the epoch).
    pub exp: i64,
}

/// A refresh token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refresh {
    /// The authorization.
    pub auth: Authorization,
    /// This token's id (single use).
    pub jti: String,
    /// Expiry (s since the epoch).
    pub exp: i64,
}

const CODE: &str = "stepgate/oidc/code/v1";
const REFRESH: &str = "stepgate/oidc/refresh/v1";
/// Refresh tokens start with this, so revocation and introspection tell them from JWTs.
const REFRESH_PREFIX: &str = "sgr.";

impl Provider {
    pub(super) fn seal<T: Serialize>(&self, context: &str, value: &T) -> Option<String> {
        let json = serde_json::to_vec(value).ok()?;
        let sealed = self.secret.seal(&json, context).ok()?;
        Some(B64.encode(sealed.as_bytes()))
    }

    pub(super) fn open<T: DeserializeOwned>(&self, context: &str, token: &str) -> Option<T> {
        if token.len() > 8192 {
            return None;
        }
        let bytes = B64.decode(token).ok()?;
        let plain = self
            .secret
            .open(&SealedSecret::from_bytes(bytes), context)
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// A code for `c`.
    pub fn seal_code(&self, c: &Code) -> Option<String> {
        self.seal(CODE, c)
    }

    /// The code `token` stands for, if this deployment sealed it (expiry not checked).
    pub fn open_code(&self, token: &str) -> Option<Code> {
        self.open(CODE, token)
    }

    /// A refresh token for `r`.
    pub fn seal_refresh(&self, r: &Refresh) -> Option<String> {
        Some(format!("{REFRESH_PREFIX}{}", self.seal(REFRESH, r)?))
    }

    /// The refresh token `token` stands for, if this deployment sealed it.
    pub fn open_refresh(&self, token: &str) -> Option<Refresh> {
        self.open(REFRESH, token.strip_prefix(REFRESH_PREFIX)?)
    }
}

const UID: &str = "stepgate/oidc/uid/v1";

impl Provider {
    /// A user's id sealed (a fresh nonce each time, so two seals of one id do not match):
    /// the `sgu` of a pairwise client's access tokens.
    pub fn seal_uid(&self, uid: &str) -> Option<String> {
        seal_uid(&self.secret, uid)
    }

    /// The user's id in an `sgu` this deployment sealed.
    pub fn open_uid(&self, sealed: &str) -> Option<String> {
        open_uid(&self.secret, sealed)
    }
}

/// [`Provider::seal_uid`] with the secrets key.
pub fn seal_uid(secret: &stepgate_store::SecretKey, uid: &str) -> Option<String> {
    let sealed = secret.seal(uid.as_bytes(), UID).ok()?;
    Some(B64.encode(sealed.as_bytes()))
}

/// [`Provider::open_uid`] with the secrets key.
pub fn open_uid(secret: &stepgate_store::SecretKey, sealed: &str) -> Option<String> {
    if sealed.len() > 1024 {
        return None;
    }
    let bytes = B64.decode(sealed).ok()?;
    let plain = secret.open(&SealedSecret::from_bytes(bytes), UID).ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

/// A new random id (grant, token).
pub fn new_id() -> String {
    crate::app::signer::random_id()
}

fn grant_key(gid: &str) -> String {
    format!("oidc:grant-revoked:{gid}")
}

/// How long a revocation is remembered: longer than anything of the grant can live.
const REVOKED_FOR: Duration = Duration::from_secs(31 * 24 * 3600);

/// Revokes grant `gid`: its refresh tokens stop working, introspection of its tokens says
/// inactive.
pub async fn revoke(st: &Shared, gid: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    let until = now + chrono::Duration::from_std(REVOKED_FOR).unwrap_or_default();
    st.stores.hot.set_ban(&grant_key(gid), until).await
}

/// Whether grant `gid` was revoked.
pub async fn revoked(st: &Shared, gid: &str) -> Result<bool, StoreError> {
    Ok(st.stores.hot.ban_until(&grant_key(gid)).await?.is_some())
}

/// Uses code `c` up: `true` the first time, `false` on any later use (atomic across nodes).
pub async fn use_code(st: &Shared, c: &Code) -> Result<bool, StoreError> {
    // Kept past the code's expiry, so a late second use is still caught.
    st.stores
        .hot
        .remember_once(
            &format!("oidc:code:{}", c.auth.gid),
            Duration::from_secs(600),
        )
        .await
}

fn refresh_used_key(jti: &str) -> String {
    format!("oidc:refresh-used:{jti}")
}

/// Uses refresh token `r` up: `true` the first time (and marks it used for
/// introspection), `false` when it was used before.
pub async fn use_refresh(st: &Shared, r: &Refresh, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let ttl = Duration::from_secs((r.exp - now.timestamp()).max(1) as u64 + 60);
    let first = st
        .stores
        .hot
        .remember_once(&format!("oidc:refresh:{}", r.jti), ttl)
        .await?;
    if first {
        let until = now + chrono::Duration::from_std(ttl).unwrap_or_default();
        st.stores
            .hot
            .set_ban(&refresh_used_key(&r.jti), until)
            .await?;
    }
    Ok(first)
}

/// Whether refresh token `r` was used already.
pub async fn refresh_used(st: &Shared, r: &Refresh) -> Result<bool, StoreError> {
    Ok(st
        .stores
        .hot
        .ban_until(&refresh_used_key(&r.jti))
        .await?
        .is_some())
}

/// The creation time (µs) that ties a grant to a session.
pub fn session_mark(created_at: DateTime<Utc>) -> i64 {
    created_at.timestamp_micros()
}

/// `sid`: a MAC of the session's user and creation time, stable across the session's id
/// rotations, from which neither can be read.
pub fn sid(st: &Shared, uid: &str, sct: i64) -> String {
    st.signer.session_handle(&format!("oidc-sid|{uid}|{sct}"))
}

/// Whether the session grant `a` came from is still live, and its user still enabled.
pub async fn still_live(st: &Shared, a: &Authorization) -> Result<bool, StoreError> {
    match st.cache.user(&a.uid).await? {
        Some(u) if !u.disabled => {}
        _ => return Ok(false),
    }
    for id in st.sessions.of_user(&a.uid).await? {
        if let Some((_, d)) = st.sessions.peek(&id).await? {
            if !d.pending && session_mark(d.created_at) == a.sct {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn session_ended_key(sid: &str) -> String {
    format!("oidc:session-ended:{sid}")
}

/// Marks the session named by `sid` ended, for as long as an access token from it can
/// live (`ttl`): the gateway then refuses its access tokens at once.
pub async fn end_session(
    hot: &dyn HotStore,
    sid: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let until = now + chrono::Duration::from_std(ttl).unwrap_or_default();
    hot.set_ban(&session_ended_key(sid), until).await
}

/// Whether an access token of grant `gid` from the session `sid` is still good: the grant
/// not revoked and the session not ended. The gateway asks this on every request with one
/// of stepgate's access tokens: two hot-store reads of one key each, made together, so one
/// round trip to Redis. (A session that merely expires is not marked: its access tokens
/// hold until their own `exp`; introspection, userinfo and refresh see the expiry.)
pub async fn access_token_live(
    hot: &dyn HotStore,
    gid: &str,
    sid: &str,
) -> Result<bool, StoreError> {
    let (grant, session) = (grant_key(gid), session_ended_key(sid));
    let (revoked, ended) = tokio::join!(hot.ban_until(&grant), hot.ban_until(&session));
    Ok(revoked?.is_none() && ended?.is_none())
}

/// Whether everything of grant `a` still stands: not revoked, its session live.
pub async fn stands(st: &Shared, a: &Authorization) -> Result<bool, StoreError> {
    Ok(!revoked(st, &a.gid).await? && still_live(st, a).await?)
}
