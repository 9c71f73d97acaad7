//! The signed identity assertion stepgate adds to every request it lets through
//! (`X-Stepgate-Assertion`), and the JWKS (`/.well-known/jwks.json`) upstreams verify it with.
//!
//! The assertion is a short-lived ES256 JWT: `iss` = stepgate's public URL, `aud` = the app
//! id, `sub`, `preferred_username`, `groups`, `acr` (`aal1`–`aal3`, the same values the RFC
//! 9470 challenge asks for), `amr`, `auth_time`, `iat`, `exp`, `jti`.
//!
//! Signing keys are made on first start, sealed with the secret key and kept in the durable
//! store, so every node signs with the same keys and publishes the same JWKS. A new key is
//! made every `gateway.assertion.rotate_every`; the previous one stays published until the
//! assertions it signed have expired (plus the time other nodes need to notice). Each node
//! re-reads the key set from the store every minute.
//!
//! The durable store has no general key–value table, so the key set lives in the devices
//! table under a reserved id ([`KEYS_RECORD`], no owner): every backend keeps it, and no
//! user's device list shows it.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use serde::{Deserialize, Serialize};
use stepgate_config::AssertionConfig;
use stepgate_store::{DeviceRecord, DurableStore, SealedSecret, SecretKey, StoreError};

use crate::state::Shared;

/// The devices-table id the key set is stored under: in the reserved namespace
/// ([`stepgate_signals::device::RESERVED_ID_PREFIX`]), which no device push, CAEP event or
/// device lookup can name.
pub const KEYS_RECORD: &str = "stepgate:assertion-keys";

/// How long a retired key stays published beyond the assertion lifetime: covers clock
/// skew and nodes that have not re-read the key set yet.
const RETIRE_GRACE: Duration = Duration::from_secs(300);

/// How often a node re-reads the key set from the store.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// Why the key set could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum AssertionKeyError {
    /// The store failed.
    #[error("assertion keys: store: {0}")]
    Store(#[from] StoreError),
    /// A stored key could not be opened (wrong secret key?) or parsed.
    #[error("assertion key `{kid}` cannot be opened: {why}; was the secret key changed?")]
    Key {
        /// The key id.
        kid: String,
        /// What went wrong.
        why: String,
    },
}

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

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_at: DateTime<Utc>,
    /// The PKCS#8 private key, sealed.
    sealed: SealedSecret,
}

#[derive(Default, Serialize, Deserialize)]
struct StoredKeySet {
    keys: Vec<StoredKey>,
}

struct LoadedKey {
    kid: String,
    created_at: DateTime<Utc>,
    encoding: EncodingKey,
    /// The public JWK, as JSON.
    jwk: serde_json::Value,
}

struct KeyRing {
    /// Newest first.
    keys: Vec<LoadedKey>,
    loaded_at: Instant,
}

/// The assertion signing keys of this deployment.
pub struct AssertionKeys {
    store: Arc<dyn DurableStore>,
    secret: SecretKey,
    ring: RwLock<Arc<KeyRing>>,
    writer: tokio::sync::Mutex<()>,
}

fn seal_context(kid: &str) -> String {
    format!("stepgate/assertion-key/v1/{kid}")
}

fn generate(secret: &SecretKey, now: DateTime<Utc>) -> Result<StoredKey, AssertionKeyError> {
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = sk.to_pkcs8_der().map_err(|e| AssertionKeyError::Key {
        kid: "(new)".into(),
        why: e.to_string(),
    })?;
    let kid = format!(
        "{}-{}",
        now.format("%Y%m%d%H%M%S"),
        &crate::security::random_id()[..8]
    );
    let sealed = secret
        .seal(der.as_bytes(), &seal_context(&kid))
        .map_err(|e| AssertionKeyError::Key {
            kid: kid.clone(),
            why: e.to_string(),
        })?;
    Ok(StoredKey {
        kid,
        created_at: now,
        sealed,
    })
}

fn load_key(secret: &SecretKey, k: &StoredKey) -> Result<LoadedKey, AssertionKeyError> {
    let err = |why: String| AssertionKeyError::Key {
        kid: k.kid.clone(),
        why,
    };
    let der = secret
        .open(&k.sealed, &seal_context(&k.kid))
        .map_err(|e| err(e.to_string()))?;
    let sk = p256::SecretKey::from_pkcs8_der(&der).map_err(|e| err(e.to_string()))?;
    let point = sk.public_key().to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(err("not an uncompressed P-256 point".into()));
    };
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y),
        "kid": k.kid, "use": "sig", "alg": "ES256",
    });
    Ok(LoadedKey {
        kid: k.kid.clone(),
        created_at: k.created_at,
        encoding: EncodingKey::from_ec_der(&der),
        jwk,
    })
}

impl AssertionKeys {
    /// Loads the key set from the store, creating the first key if there is none.
    pub async fn open(
        store: Arc<dyn DurableStore>,
        secret: SecretKey,
        cfg: &AssertionConfig,
        now: DateTime<Utc>,
    ) -> Result<Self, AssertionKeyError> {
        let keys = AssertionKeys {
            store,
            secret,
            ring: RwLock::new(Arc::new(KeyRing {
                keys: Vec::new(),
                loaded_at: Instant::now(),
            })),
            writer: tokio::sync::Mutex::new(()),
        };
        keys.maintain(cfg, now).await?;
        Ok(keys)
    }

    async fn read_stored(&self) -> Result<StoredKeySet, AssertionKeyError> {
        Ok(match self.store.get_device(KEYS_RECORD).await? {
            Some(rec) => serde_json::from_value(rec.data).unwrap_or_default(),
            None => StoredKeySet::default(),
        })
    }

    async fn write_stored(&self, set: &StoredKeySet) -> Result<(), AssertionKeyError> {
        let rec = DeviceRecord {
            id: KEYS_RECORD.into(),
            owner: None,
            data: serde_json::to_value(set).unwrap_or_default(),
            updated_at: Utc::now(),
        };
        self.store.put_device(&rec).await?;
        Ok(())
    }

    fn install(&self, set: &StoredKeySet) -> Result<(), AssertionKeyError> {
        let mut keys = set
            .keys
            .iter()
            .map(|k| load_key(&self.secret, k))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.kid.cmp(&a.kid)));
        let ring = Arc::new(KeyRing {
            keys,
            loaded_at: Instant::now(),
        });
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
        Ok(())
    }

    /// Re-reads the key set; makes a new key when there is none or the newest is older
    /// than `rotate_every`; drops keys no longer needed to verify anything.
    pub async fn maintain(
        &self,
        cfg: &AssertionConfig,
        now: DateTime<Utc>,
    ) -> Result<(), AssertionKeyError> {
        let _w = self.writer.lock().await;
        let mut set = self.read_stored().await?;
        let newest = set.keys.iter().map(|k| k.created_at).max();
        let due = newest.is_none_or(|t| now - t >= chrono_dur(cfg.rotate_every.0));
        let before = set.keys.len();
        if due {
            set.keys.push(generate(&self.secret, now)?);
        }
        prune(&mut set, cfg, now);
        if due || set.keys.len() != before {
            self.write_stored(&set).await?;
            // Another node may have written at the same time: adopt what the store holds.
            set = self.read_stored().await?;
        }
        self.install(&set)
    }

    /// Makes a new signing key now, whatever its schedule (an admin's "rotate", tests).
    pub async fn rotate(
        &self,
        cfg: &AssertionConfig,
        now: DateTime<Utc>,
    ) -> Result<String, AssertionKeyError> {
        let _w = self.writer.lock().await;
        let mut set = self.read_stored().await?;
        let k = generate(&self.secret, now)?;
        let kid = k.kid.clone();
        set.keys.push(k);
        prune(&mut set, cfg, now);
        self.write_stored(&set).await?;
        self.install(&set)?;
        Ok(kid)
    }

    /// Runs [`Self::maintain`] every [`REFRESH_EVERY`] for as long as `state` lives.
    pub fn spawn_maintenance(state: std::sync::Weak<crate::AppState>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(st) = state.upgrade() else { return };
                let keys = st.assertion.clone();
                let cfg = st.runtime.load().config.gateway.assertion.clone();
                if let Err(e) = keys.maintain(&cfg, Utc::now()).await {
                    tracing::warn!(error = %e, "assertion keys: maintenance failed; keeping the keys in memory");
                }
            }
        });
    }

    /// The id of the key new assertions are signed with.
    pub fn current_kid(&self) -> Option<String> {
        self.ring().keys.first().map(|k| k.kid.clone())
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How long ago the key set was last read from the store.
    pub fn age(&self) -> Duration {
        self.ring().loaded_at.elapsed()
    }

    /// Signs an assertion with the newest key.
    pub fn sign(&self, claims: &IdentityClaims) -> Option<String> {
        let ring = self.ring();
        let key = ring.keys.first()?;
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(key.kid.clone());
        match jsonwebtoken::encode(&h, claims, &key.encoding) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, kid = %key.kid, "signing the identity assertion failed");
                None
            }
        }
    }

    /// The published keys: the current one and every retired one whose assertions may
    /// still be live.
    pub fn jwks(&self) -> serde_json::Value {
        let ring = self.ring();
        serde_json::json!({ "keys": ring.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// The published keys as a [`JwkSet`].
    pub fn jwk_set(&self) -> JwkSet {
        serde_json::from_value(self.jwks()).unwrap_or(JwkSet { keys: Vec::new() })
    }
}

/// Drops keys whose successor was made more than `ttl + grace` ago: nothing they signed
/// can still be valid.
fn prune(set: &mut StoredKeySet, cfg: &AssertionConfig, now: DateTime<Utc>) {
    let keep_for = chrono_dur(cfg.ttl.0 + RETIRE_GRACE);
    let mut created: Vec<DateTime<Utc>> = set.keys.iter().map(|k| k.created_at).collect();
    created.sort();
    set.keys.retain(|k| {
        match created.iter().find(|&&c| c > k.created_at) {
            // Retired when its successor appeared.
            Some(&succ) => now - succ < keep_for,
            None => true,
        }
    });
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The assertion for an allowed request.
pub fn claims(
    issuer: &str,
    app: &str,
    sub: &str,
    username: Option<&str>,
    email: Option<&str>,
    name: Option<&str>,
    groups: &[String],
    aal: u8,
    amr: &[String],
    auth_time: Option<DateTime<Utc>>,
    ttl: Duration,
    now: DateTime<Utc>,
) -> IdentityClaims {
    IdentityClaims {
        iss: issuer.to_string(),
        aud: app.to_string(),
        sub: sub.to_string(),
        preferred_username: username.map(str::to_string),
        email: email.map(str::to_string),
        name: name.map(str::to_string),
        groups: groups.to_vec(),
        acr: acr_for(aal),
        amr: amr.to_vec(),
        auth_time: auth_time.map(|t| t.timestamp()),
        iat: now.timestamp(),
        exp: now.timestamp() + ttl.as_secs() as i64,
        jti: crate::security::random_id(),
    }
}

/// The assertion header for an allowed request, when assertions are on.
pub fn header_for(
    st: &crate::AppState,
    rt: &crate::Runtime,
    app: &stepgate_policy::spec::AppSpec,
    grant: &crate::gateway::Grant<'_>,
) -> Option<(axum::http::HeaderName, HeaderValue)> {
    let cfg = &rt.config.gateway.assertion;
    if !cfg.enabled {
        return None;
    }
    let name = if cfg.header.eq_ignore_ascii_case("x-stepgate-assertion") {
        crate::proxy::names::X_STEPGATE_ASSERTION
    } else {
        axum::http::HeaderName::from_bytes(cfg.header.to_ascii_lowercase().as_bytes()).ok()?
    };
    let now = Utc::now();
    let u = grant.user;
    let value = match grant.bearer {
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
            let a = grant.assurance;
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
    value.map(|v| (name, v))
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
        claims(
            self.issuer,
            self.app,
            self.sub,
            self.username,
            self.email,
            self.name,
            self.groups,
            self.aal,
            self.amr,
            self.auth_time,
            ttl,
            now,
        )
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
    /// cached one has more than half its lifetime left.
    pub fn get_or_sign(
        &self,
        keys: &AssertionKeys,
        session: &str,
        what: &Said<'_>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Option<HeaderValue> {
        let half = (ttl.as_secs() / 2) as i64;
        let t = now.timestamp();
        let fresh = |iat: i64| t >= iat && t < iat + half;
        let key = keys
            .ring()
            .keys
            .first()
            .map(|k| what.cache_key(session, &k.kid, ttl));
        if let Some(key) = &key {
            let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((iat, v)) = m.get(key) {
                if fresh(*iat) {
                    return Some(v.clone());
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
        Some(v)
    }
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks_handler(State(st): State<Shared>) -> Response {
    let mut r = st.assertion.jwks().to_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    // Short enough that a rotation is seen well within the retired key's overlap.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepgate_policy::HumanDuration;

    fn cfg() -> AssertionConfig {
        AssertionConfig {
            ttl: HumanDuration::from_secs(60),
            rotate_every: HumanDuration::from_secs(3600),
            ..AssertionConfig::default()
        }
    }

    #[test]
    fn prune_keeps_the_predecessor_during_the_overlap() {
        let secret = SecretKey::generate();
        let t0 = Utc::now();
        let a = generate(&secret, t0).unwrap();
        let b = generate(&secret, t0 + chrono::Duration::hours(1)).unwrap();
        let mut set = StoredKeySet {
            keys: vec![a.clone(), b.clone()],
        };
        prune(&mut set, &cfg(), t0 + chrono::Duration::minutes(62));
        assert_eq!(set.keys.len(), 2, "a is still needed");
        prune(&mut set, &cfg(), t0 + chrono::Duration::minutes(67));
        assert_eq!(set.keys.len(), 1, "a's assertions have all expired");
        assert_eq!(set.keys[0].kid, b.kid);
    }

    #[test]
    fn a_sealed_key_opens_and_signs_verifiably() {
        let secret = SecretKey::generate();
        let k = load_key(&secret, &generate(&secret, Utc::now()).unwrap()).unwrap();
        let c = claims(
            "https://sg",
            "app",
            "u1",
            Some("jane"),
            None,
            None,
            &["staff".into()],
            2,
            &["pwd".into(), "otp".into()],
            Some(Utc::now()),
            Duration::from_secs(60),
            Utc::now(),
        );
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(k.kid.clone());
        let t = jsonwebtoken::encode(&h, &c, &k.encoding).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.jwk.clone()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["app"]);
        v.set_issuer(&["https://sg"]);
        let got = jsonwebtoken::decode::<IdentityClaims>(&t, &dk, &v).unwrap();
        assert_eq!(got.claims, c);
        assert_eq!(got.claims.acr.as_deref(), Some("aal2"));
        // A different secret key cannot open it.
        let other = SecretKey::generate();
        assert!(load_key(&other, &generate(&secret, Utc::now()).unwrap()).is_err());
    }

    #[tokio::test]
    async fn the_cache_reuses_an_assertion_only_for_the_same_session_and_claims() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::generate();
        let store = stepgate_store::SqliteStore::open(
            &stepgate_store::SqliteConfig::default(),
            dir.path(),
            &secret,
        )
        .await
        .unwrap();
        let now = Utc::now();
        let keys = AssertionKeys::open(Arc::new(store), secret, &cfg(), now)
            .await
            .unwrap();
        let cache = AssertionCache::default();
        let ttl = Duration::from_secs(60);
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
        let (staff, admins) = (&["staff".to_string()][..], &["admins".to_string()][..]);
        let get = |session: &str, what: &Said<'_>| {
            cache
                .get_or_sign(&keys, session, what, ttl, now)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        let first = get("session-a", &said("app", staff, 1));
        assert_eq!(first, get("session-a", &said("app", staff, 1)), "reused");
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
