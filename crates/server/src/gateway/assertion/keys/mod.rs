//! The assertion's signing keys: made on first start, sealed with the secret key and kept
//! in the durable store (every node signs with the same keys and publishes the same JWKS),
//! rotated every `gateway.assertion.rotate_every` with the previous key published until
//! what it signed has expired, re-read by each node every minute; and the JWKS endpoint.
//!
//! The durable store has no general key–value table, so the key set lives in the devices
//! table under a reserved id ([`KEYS_RECORD`], no owner): every backend keeps it, and no
//! user's device list shows it.

//!
//! One key's making, sealing and opening is in [`material`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use stepgate_config::AssertionConfig;
use stepgate_store::{DeviceRecord, DurableStore, SecretKey, StoreError};

use crate::app::state::Shared;
use crate::gateway::assertion::IdentityClaims;

mod material;

#[cfg(test)]
use material::generate;
pub use material::KeyAlg;
use material::{generate_for, load_key, LoadedKey, StoredKeySet};

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

struct KeyRing {
    /// Newest first.
    keys: Vec<LoadedKey>,
    loaded_at: Instant,
}

/// A signing key set of this deployment: the identity assertion's (ES256 only), or the
/// OpenID Provider's own ([`OIDC_KEYS_RECORD`]: ES256 and whichever of EdDSA and RS256 the
/// clients ask for, each rotated on the same schedule).
pub struct AssertionKeys {
    /// The devices-table id the set is stored under.
    record: &'static str,
    store: Arc<dyn DurableStore>,
    secret: SecretKey,
    /// Swapped whole on a reload; read on every allowed request without a lock or a
    /// reference count taken (`ArcSwap`).
    ring: arc_swap::ArcSwap<KeyRing>,
    writer: tokio::sync::Mutex<()>,
}

/// The devices-table id of the OpenID Provider's own key set (reserved namespace, as
/// [`KEYS_RECORD`]).
pub const OIDC_KEYS_RECORD: &str = "stepgate:oidc-keys";

impl AssertionKeys {
    /// Loads the key set from the store, creating the first key if there is none.
    pub async fn open(
        store: Arc<dyn DurableStore>,
        secret: SecretKey,
        cfg: &AssertionConfig,
        now: DateTime<Utc>,
    ) -> Result<Self, AssertionKeyError> {
        let keys = Self::empty(KEYS_RECORD, store, secret);
        keys.maintain(cfg, now).await?;
        Ok(keys)
    }

    /// Loads the OpenID Provider's own key set, making a key for each of `algs` that has
    /// none (no key at all while `algs` is empty: no client is configured).
    pub async fn open_oidc(
        store: Arc<dyn DurableStore>,
        secret: SecretKey,
        cfg: &AssertionConfig,
        algs: &[KeyAlg],
        now: DateTime<Utc>,
    ) -> Result<Self, AssertionKeyError> {
        let keys = Self::empty(OIDC_KEYS_RECORD, store, secret);
        keys.maintain_algs(cfg, algs, now).await?;
        Ok(keys)
    }

    fn empty(record: &'static str, store: Arc<dyn DurableStore>, secret: SecretKey) -> Self {
        AssertionKeys {
            record,
            store,
            secret,
            ring: arc_swap::ArcSwap::from_pointee(KeyRing {
                keys: Vec::new(),
                loaded_at: Instant::now(),
            }),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    async fn read_stored(&self) -> Result<StoredKeySet, AssertionKeyError> {
        Ok(match self.store.get_device(self.record).await? {
            Some(rec) => serde_json::from_value(rec.data).unwrap_or_default(),
            None => StoredKeySet::default(),
        })
    }

    async fn write_stored(&self, set: &StoredKeySet) -> Result<(), AssertionKeyError> {
        let rec = DeviceRecord {
            id: self.record.into(),
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
        self.ring.store(ring);
        Ok(())
    }

    /// Re-reads the key set; makes a new key when there is none or the newest is older
    /// than `rotate_every`; drops keys no longer needed to verify anything.
    pub async fn maintain(
        &self,
        cfg: &AssertionConfig,
        now: DateTime<Utc>,
    ) -> Result<(), AssertionKeyError> {
        self.maintain_algs(cfg, &[KeyAlg::ES256], now).await
    }

    /// [`Self::maintain`] for each of `algs`: each algorithm's keys rotate on their own.
    pub async fn maintain_algs(
        &self,
        cfg: &AssertionConfig,
        algs: &[KeyAlg],
        now: DateTime<Utc>,
    ) -> Result<(), AssertionKeyError> {
        let _w = self.writer.lock().await;
        let mut set = self.read_stored().await?;
        let before = set.keys.len();
        let mut due = false;
        for &alg in algs {
            let newest = set
                .keys
                .iter()
                .filter(|k| k.alg == alg)
                .map(|k| k.created_at)
                .max();
            if newest.is_none_or(|t| now - t >= chrono_dur(cfg.rotate_every.0)) {
                set.keys.push(generate_for(&self.secret, alg, now)?);
                due = true;
            }
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
        let k = generate_for(&self.secret, KeyAlg::ES256, now)?;
        let kid = k.kid.clone();
        set.keys.push(k);
        prune(&mut set, cfg, now);
        self.write_stored(&set).await?;
        self.install(&set)?;
        Ok(kid)
    }

    /// Runs [`Self::maintain`] every [`REFRESH_EVERY`] for as long as `state` lives.
    pub fn spawn_maintenance(state: std::sync::Weak<crate::app::state::AppState>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(st) = state.upgrade() else { return };
                let keys = st.assertion.clone();
                // Retired keys stay published as long as the provider's tokens live too.
                let cfg = crate::oidc::tokens::key_config(&st.runtime.load().config);
                if let Err(e) = keys.maintain(&cfg, Utc::now()).await {
                    tracing::warn!(error = %e, "assertion keys: maintenance failed; keeping the keys in memory");
                }
                let algs = crate::oidc::tokens::key_algs(&st.runtime.load().config);
                if let Err(e) = st.oidc_keys.maintain_algs(&cfg, &algs, Utc::now()).await {
                    tracing::warn!(error = %e, "oidc keys: maintenance failed; keeping the keys in memory");
                }
            }
        });
    }

    /// The id of the key new assertions are signed with.
    pub fn current_kid(&self) -> Option<String> {
        self.ring().keys.first().map(|k| k.kid.clone())
    }

    /// `f` of the id of the key new assertions are signed with, without copying it (this
    /// runs on every allowed request).
    pub fn with_current_kid<R>(&self, f: impl FnOnce(&str) -> R) -> Option<R> {
        self.ring.load().keys.first().map(|k| f(&k.kid))
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// How long ago the key set was last read from the store.
    pub fn age(&self) -> Duration {
        self.ring().loaded_at.elapsed()
    }

    /// Signs an assertion with the newest key.
    pub fn sign(&self, claims: &IdentityClaims) -> Option<String> {
        let ring = self.ring();
        let key = ring.keys.iter().find(|k| k.alg == KeyAlg::ES256)?;
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

    /// Signs any claims with the newest key, with the header's `typ` (the OpenID
    /// Provider's ID and access tokens share the assertion keys and their JWKS).
    pub fn sign_claims(&self, typ: &str, claims: &impl Serialize) -> Option<String> {
        self.sign_claims_with(typ, KeyAlg::ES256, claims)
    }

    /// Signs any claims with the newest key for `alg`; `None` (logged) when the set holds
    /// none.
    pub fn sign_claims_with(
        &self,
        typ: &str,
        alg: KeyAlg,
        claims: &impl Serialize,
    ) -> Option<String> {
        let ring = self.ring();
        let Some(key) = ring.keys.iter().find(|k| k.alg == alg) else {
            tracing::error!(alg = alg.as_str(), "no signing key for the algorithm (yet)");
            return None;
        };
        let mut h = Header::new(alg.algorithm());
        h.kid = Some(key.kid.clone());
        h.typ = Some(typ.to_string());
        match jsonwebtoken::encode(&h, claims, &key.encoding) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, kid = %key.kid, "signing a token failed");
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

    /// The published keys as a JWKS endpoint answers them (cached briefly: a rotation is
    /// seen well within the retired key's overlap).
    pub fn jwks_response(&self) -> Response {
        let headers = [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            // Short enough that a rotation is seen well within the retired key's overlap.
            (header::CACHE_CONTROL, "public, max-age=60"),
        ];
        (headers, self.jwks().to_string()).into_response()
    }
}

/// Drops keys whose successor was made more than `ttl + grace` ago: nothing they signed
/// can still be valid.
fn prune(set: &mut StoredKeySet, cfg: &AssertionConfig, now: DateTime<Utc>) {
    let keep_for = chrono_dur(cfg.ttl.0 + RETIRE_GRACE);
    let mut created: Vec<(KeyAlg, DateTime<Utc>)> =
        set.keys.iter().map(|k| (k.alg, k.created_at)).collect();
    created.sort_by_key(|(_, t)| *t);
    set.keys.retain(|k| {
        // A key is succeeded only by a newer key of its own algorithm.
        match created
            .iter()
            .find(|(a, c)| *a == k.alg && *c > k.created_at)
            .map(|(_, c)| c)
        {
            // Retired when its successor appeared.
            Some(&succ) => now - succ < keep_for,
            None => true,
        }
    });
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks_handler(State(st): State<Shared>) -> Response {
    st.assertion.jwks_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::assertion::Said;
    use stepgate_policy::HumanDuration;

    pub(crate) fn cfg() -> AssertionConfig {
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
    fn each_algorithm_signs_verifiably_with_its_published_key_and_rotates_on_its_own() {
        let secret = SecretKey::generate();
        let t0 = Utc::now();
        for alg in KeyAlg::ALL {
            let k = load_key(&secret, &generate_for(&secret, alg, t0).unwrap()).unwrap();
            assert_eq!(k.jwk["alg"], alg.as_str());
            let mut h = Header::new(alg.algorithm());
            h.kid = Some(k.kid.clone());
            let claims = serde_json::json!({ "sub": "u1", "exp": t0.timestamp() + 60 });
            let t = jsonwebtoken::encode(&h, &claims, &k.encoding).unwrap();
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.jwk.clone()).unwrap();
            let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
            let mut v = jsonwebtoken::Validation::new(alg.algorithm());
            v.validate_aud = false;
            v.set_required_spec_claims(&["exp"]);
            jsonwebtoken::decode::<serde_json::Value>(&t, &dk, &v)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        }
        // A newer key of another algorithm does not retire an ES256 key.
        let es = generate_for(&secret, KeyAlg::ES256, t0).unwrap();
        let rs = generate_for(&secret, KeyAlg::RS256, t0 + chrono::Duration::hours(1)).unwrap();
        let mut set = StoredKeySet {
            keys: vec![es.clone(), rs],
        };
        prune(&mut set, &cfg(), t0 + chrono::Duration::hours(30));
        assert!(
            set.keys.iter().any(|k| k.kid == es.kid),
            "the only ES256 key stays"
        );
    }

    #[test]
    fn a_sealed_key_opens_and_signs_verifiably() {
        let secret = SecretKey::generate();
        let k = load_key(&secret, &generate(&secret, Utc::now()).unwrap()).unwrap();
        let (groups, amr) = (
            ["staff".to_string()],
            ["pwd".to_string(), "otp".to_string()],
        );
        let c = Said {
            issuer: "https://sg",
            app: "app",
            sub: "u1",
            username: Some("jane"),
            email: None,
            name: None,
            groups: &groups,
            aal: 2,
            amr: &amr,
            auth_time: Some(Utc::now()),
        }
        .claims(Duration::from_secs(60), Utc::now());
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
        // A different secret key cannot open it, and the error names the key and the
        // likely cause.
        let other = SecretKey::generate();
        let stored = generate(&secret, Utc::now()).unwrap();
        match load_key(&other, &stored) {
            Err(AssertionKeyError::Key { kid, why }) => {
                assert_eq!(kid, stored.kid);
                assert!(why.contains("does not open with this key"), "{why}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("opened with another secret key"),
        }
    }
}
