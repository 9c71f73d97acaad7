//! The signed identity assertion stepgate adds to every request it lets through
//! (`X-Stepgate-Assertion`), and the JWKS (`/.well-known/jwks.json`) upstreams verify it with.
//!
//! The assertion is a short-lived ES256 JWT: `iss` = stepgate's public URL, `aud` = the app
//! id, `sub`, `preferred_username`, `groups`, `acr` (`aal1`–`aal3`, the same values the RFC
//! 9470 challenge asks for), `amr`, `auth_time`, `iat`, `exp`, `jti`.
//!
//! Its signing keys and the JWKS are [`keys`].

pub mod keys;

pub use keys::{jwks_handler, AssertionKeyError, AssertionKeys, KEYS_RECORD};

use std::time::Duration;

use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The claims of one assertion.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdentityClaims {
    /// stepgate's public URL.
    pub iss: String,
    /// The app id.
    pub aud: String,
    /// The user's stable id (or the bearer token's `sub`).
    pub sub: String,
    /// The username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `aal1`, `aal2` or `aal3` (absent at AAL0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// RFC 8176 method references.
    #[serde(default)]
    pub amr: Vec<String>,
    /// When the user last authenticated (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// Unique id.
    pub jti: String,
}

/// The `acr` value for an AAL (`aal2`), as used in assertions and RFC 9470 challenges.
pub fn acr_for(aal: u8) -> Option<String> {
    (1..=3).contains(&aal).then(|| format!("aal{aal}"))
}

/// The assertion header for an allowed request, when assertions are on.
pub fn header_for(
    st: &crate::app::state::AppState,
    rt: &crate::app::state::Runtime,
    app: &stepgate_policy::spec::AppSpec,
    grant: &crate::access::Grant,
) -> Option<(axum::http::HeaderName, HeaderValue)> {
    header_until(st, rt, app, grant).map(|(name, value, _)| (name, value))
}

/// [`header_for`], with the time (Unix seconds) until which the same assertion is reused
/// for this grant: after it, the next request gets a fresh one.
pub fn header_until(
    st: &crate::app::state::AppState,
    rt: &crate::app::state::Runtime,
    app: &stepgate_policy::spec::AppSpec,
    grant: &crate::access::Grant,
) -> Option<(axum::http::HeaderName, HeaderValue, i64)> {
    let cfg = &rt.config.gateway.assertion;
    if !cfg.enabled {
        return None;
    }
    let name = if cfg.header.eq_ignore_ascii_case("x-stepgate-assertion") {
        super::headers::names::X_STEPGATE_ASSERTION
    } else {
        axum::http::HeaderName::from_bytes(cfg.header.to_ascii_lowercase().as_bytes()).ok()?
    };
    let now = Utc::now();
    let u = &grant.user;
    let value = match &grant.bearer {
        Some(b) => {
            let what = Said {
                issuer: &rt.public_url,
                app: app.id.as_str(),
                sub: &b.sub,
                username: Some(&b.username),
                email: b.email.as_deref(),
                name: b.name.as_deref(),
                groups: &b.groups,
                aal: b.aal,
                amr: &b.amr,
                auth_time: b.auth_time,
            };
            // A bearer grant has no stored session: the token's claims alone key the cache.
            st.assertions
                .get_or_sign(&st.assertion, "", &what, cfg.ttl.0, now)
        }
        None => {
            let a = &grant.assurance;
            let what = Said {
                issuer: &rt.public_url,
                app: app.id.as_str(),
                sub: &u.id,
                username: Some(&u.username),
                email: u.email.as_deref(),
                name: u.name.as_deref(),
                groups: &u.groups,
                aal: a.aal,
                amr: &a.amr,
                auth_time: a.auth_time,
            };
            st.assertions
                .get_or_sign(&st.assertion, &grant.session.id, &what, cfg.ttl.0, now)
        }
    };
    value.map(|(v, until)| (name, v, until))
}

/// What an assertion says, apart from its times and id.
pub struct Said<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub app: &'a str,
    /// `sub`.
    pub sub: &'a str,
    /// `preferred_username`.
    pub username: Option<&'a str>,
    /// `email`.
    pub email: Option<&'a str>,
    /// `name`.
    pub name: Option<&'a str>,
    /// `groups`.
    pub groups: &'a [String],
    /// The level (`acr`).
    pub aal: u8,
    /// `amr`.
    pub amr: &'a [String],
    /// `auth_time`.
    pub auth_time: Option<DateTime<Utc>>,
}

impl Said<'_> {
    /// The claims, issued `now`.
    pub fn claims(&self, ttl: Duration, now: DateTime<Utc>) -> IdentityClaims {
        IdentityClaims {
            iss: self.issuer.to_string(),
            aud: self.app.to_string(),
            sub: self.sub.to_string(),
            preferred_username: self.username.map(str::to_string),
            email: self.email.map(str::to_string),
            name: self.name.map(str::to_string),
            groups: self.groups.to_vec(),
            acr: acr_for(self.aal),
            amr: self.amr.to_vec(),
            auth_time: self.auth_time.map(|t| t.timestamp()),
            iat: now.timestamp(),
            exp: now.timestamp() + ttl.as_secs() as i64,
            jti: crate::app::signer::random_id(),
        }
    }

    /// An unambiguous key for everything the assertion says (each field length-prefixed),
    /// with the session and signing key it is cached for. Bytes, built without formatting:
    /// it is made on every allowed request.
    fn cache_key(&self, session: &str, kid: &str, ttl: Duration) -> CacheKey {
        fn put_in(k: &mut Vec<u8>, s: Option<&str>) {
            match s {
                Some(s) => {
                    k.extend_from_slice(&(s.len() as u64).to_le_bytes());
                    k.extend_from_slice(s.as_bytes());
                }
                None => k.extend_from_slice(&u64::MAX.to_le_bytes()),
            }
        }
        let mut k = Vec::with_capacity(256);
        put_in(&mut k, Some(kid));
        put_in(&mut k, Some(session));
        let id_len = k.len();
        let mut put = |s: Option<&str>| put_in(&mut k, s);
        put(Some(self.issuer));
        put(Some(self.app));
        put(Some(self.sub));
        put(self.username);
        put(self.email);
        put(self.name);
        for g in self.groups {
            put(Some(g));
        }
        put(None);
        for m in self.amr {
            put(Some(m));
        }
        put(None);
        k.push(self.aal);
        k.extend_from_slice(
            &self
                .auth_time
                .map_or(i64::MIN, |t| t.timestamp())
                .to_le_bytes(),
        );
        k.extend_from_slice(&ttl.as_secs().to_le_bytes());
        let hashed = if session.is_empty() { k.len() } else { id_len };
        CacheKey { bytes: k, hashed }
    }
}

/// An [`AssertionCache`] key: everything the assertion says, compared whole. Only the
/// signing key and session id are hashed when there is a session: the id is a random
/// value stepgate issued and checked, so nobody can make ids collide, and the rest (about
/// 250 bytes) need not be hashed on every request. A bearer grant has no session: its key
/// is hashed whole.
struct CacheKey {
    bytes: Vec<u8>,
    /// How many leading bytes are hashed (a function of `bytes`, so equal keys hash alike).
    hashed: usize,
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for CacheKey {}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..self.hashed]);
    }
}

/// Assertions kept before stale ones are swept (and, if that is not enough, all dropped).
const MAX_CACHED_ASSERTIONS: usize = 10_000;

/// Signed assertions reused for the same session and the same claims (user, groups, app,
/// assurance, signing key) while more than half their lifetime remains, so an ES256
/// signature is made about twice per `ttl` per session and app rather than per request.
/// Any change to what the assertion says (a step-up, a group change, a key rotation)
/// misses the cache and signs afresh. A reused assertion keeps its `iat`, `exp` and `jti`.
#[derive(Default)]
pub struct AssertionCache {
    map: std::sync::Mutex<std::collections::HashMap<CacheKey, (i64, HeaderValue)>>,
}

impl AssertionCache {
    /// The header value for an assertion saying `what` for `session`, signing when no
    /// cached one has more than half its lifetime left; with the time (Unix seconds) until
    /// which it is reused.
    pub fn get_or_sign(
        &self,
        keys: &AssertionKeys,
        session: &str,
        what: &Said<'_>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Option<(HeaderValue, i64)> {
        let half = (ttl.as_secs() / 2) as i64;
        let t = now.timestamp();
        let fresh = |iat: i64| t >= iat && t < iat + half;
        let key = keys.with_current_kid(|kid| what.cache_key(session, kid, ttl));
        if let Some(key) = &key {
            let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((iat, v)) = m.get(key) {
                if fresh(*iat) {
                    return Some((v.clone(), *iat + half));
                }
            }
        }
        let claims = what.claims(ttl, now);
        let token = keys.sign(&claims)?;
        let v = HeaderValue::from_str(&token).ok()?;
        if let (Some(key), true) = (key, half > 0) {
            let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= MAX_CACHED_ASSERTIONS {
                m.retain(|_, (iat, _)| fresh(*iat));
                if m.len() >= MAX_CACHED_ASSERTIONS {
                    m.clear();
                }
            }
            m.insert(key, (claims.iat, v.clone()));
        }
        Some((v, claims.iat + half))
    }
}

#[cfg(test)]
mod tests {
    use super::keys::tests::cfg;
    use super::*;
    use std::sync::Arc;
    use stepgate_store::SecretKey;

    /// What an assertion for `jane` says to `app`, with `groups` at `aal`.
    fn said<'a>(app: &'a str, groups: &'a [String], aal: u8) -> Said<'a> {
        Said {
            issuer: "https://sg",
            app,
            sub: "u1",
            username: Some("jane"),
            email: None,
            name: None,
            groups,
            aal,
            amr: &[],
            auth_time: None,
        }
    }

    /// Assertion keys kept in a new SQLite store in `dir`.
    async fn keys(dir: &std::path::Path, now: chrono::DateTime<Utc>) -> AssertionKeys {
        let secret = SecretKey::generate();
        let store = stepgate_store::SqliteStore::open(
            &stepgate_store::SqliteConfig::default(),
            dir,
            &secret,
        )
        .await
        .unwrap();
        AssertionKeys::open(Arc::new(store), secret, &cfg(), now)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_cache_reuses_an_assertion_only_for_the_same_session_and_claims() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let keys = keys(dir.path(), now).await;
        let cache = AssertionCache::default();
        let ttl = Duration::from_secs(60);
        let (staff, admins) = (&["staff".to_string()][..], &["admins".to_string()][..]);
        let get = |session: &str, what: &Said<'_>| {
            cache
                .get_or_sign(&keys, session, what, ttl, now)
                .unwrap()
                .0
                .to_str()
                .unwrap()
                .to_string()
        };
        let first = get("session-a", &said("app", staff, 1));
        assert_eq!(first, get("session-a", &said("app", staff, 1)), "reused");
        let (_, until) = cache
            .get_or_sign(&keys, "session-a", &said("app", staff, 1), ttl, now)
            .unwrap();
        assert_eq!(until, now.timestamp() + 30, "reused for half its lifetime");
        // The same session (so the same hash) saying anything else signs afresh.
        let others = [
            get("session-a", &said("app", admins, 1)),
            get("session-a", &said("app", staff, 2)),
            get("session-a", &said("other-app", staff, 1)),
            get("session-b", &said("app", staff, 1)),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(*o, first, "case {i}");
            for p in &others[i + 1..] {
                assert_ne!(o, p);
            }
        }
        // Bearer grants (no session) are keyed on their claims alone, hashed whole.
        let bearer = get("", &said("app", staff, 1));
        assert_ne!(bearer, first);
        assert_eq!(bearer, get("", &said("app", staff, 1)));
        assert_ne!(bearer, get("", &said("app", admins, 1)));
        // Each was remembered under its own key.
        assert_eq!(cache.map.lock().unwrap().len(), 7);
    }
}
