//! stepgate's storage: what is kept, where, and how secrets stay secret.
//!
//! # Two interfaces
//!
//! - [`DurableStore`] — data that must outlive every restart: users (attributes, groups),
//!   enrolled factors ([`FactorRecord`]), devices ([`DeviceRecord`]) and the audit log
//!   ([`AuditEvent`], append-only and hash-chained, checked by [`verify_audit_chain`]).
//! - [`HotStore`] — short-lived state that expires on its own: sessions, rate-limit counters
//!   with fixed windows, bans and lockouts, one-time codes with attempt limits
//!   ([`HotStore::check_otp`] is atomic and single-use), replay guards
//!   ([`HotStore::remember_once`], for TOTP steps and JWT `jti`s) and short recent-event lists
//!   (sign-in history for risk scoring).
//!
//! Both are `async`, object-safe ([`async_trait`]) and `Send + Sync`: callers hold
//! `Arc<dyn DurableStore>` and `Arc<dyn HotStore>` and never know the backend. Records are
//! plain serde types; session data and factor parameters are JSON the store does not read.
//!
//! # Backends
//!
//! | backend | implements | when |
//! | --- | --- | --- |
//! | [`SqliteStore`] | both | the default: one file, WAL mode, nothing to run |
//! | [`PostgresStore`] (feature `postgres`) | [`DurableStore`] | several stepgate nodes |
//! | [`RedisStore`] (feature `redis`) | [`HotStore`] | several stepgate nodes |
//!
//! SQLite and PostgreSQL run one [`DurableStore`] implementation over the same statements and
//! one row mapping (`sql_durable`, `rows`), and record migrations the same way; each backend's
//! file holds what its dialect does differently (text collation, the audit append's lock, how
//! migrations are serialized) and, for SQLite, the hot state.
//!
//! [`open_stores`] picks them from a [`StoreConfig`] (`store:` in the configuration). Schema
//! migrations are embedded, versioned and applied on open; a database written by a newer build
//! is refused with [`StoreError::SchemaTooNew`] rather than misread.
//!
//! # Secrets at rest
//!
//! Factor secrets (TOTP seeds, password hashes, recovery-code hashes) are [`SealedSecret`]s:
//! ChaCha20-Poly1305 under a 256-bit [`SecretKey`] from `secrets.key_file` or
//! `STEPGATE_SECRET_KEY` ([`SecretsConfig`]), with a random nonce per seal and the owner and
//! factor id as associated data ([`factor_context`]). The stores never see the clear text.
//! Each durable store keeps a key check value, so opening it with a missing or different key
//! fails at start-up ([`StoreError::SecretKeyMismatch`]) instead of losing data later.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use stepgate_store::{factor_context, open_stores, FactorRecord, SecretsConfig, StoreConfig};
//! let key = SecretsConfig::default().load_key(".".as_ref())?;
//! let stores = open_stores(&StoreConfig::default(), "/var/lib/stepgate".as_ref(), &key).await?;
//! let alice = stores.durable.get_user_by_username("alice").await?.ok_or("no alice")?;
//! let mut totp = FactorRecord::new(&alice.id, "totp", "phone");
//! totp.secret = Some(key.seal(b"JBSWY3DPEHPK3PXP", &factor_context(&alice.id, &totp.id))?);
//! stores.durable.create_factor(&totp).await?;
//! # Ok(()) }
//! ```
//!
//! # Testing a backend
//!
//! `stepgate_store::conformance` (feature `conformance`) is one suite of async checks written against the
//! traits; every backend's integration test runs all of it (`tests/conformance.rs`).

mod audit;
mod clock;
mod config;
mod error;
mod json_text;
mod migrate;
mod model;
mod rows;
mod secrets;
mod sql_durable;
mod sqlite;
mod sqlite_backup;
mod sync;
mod traits;

#[cfg(feature = "redis")]
pub mod changes;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis_conn;
#[cfg(feature = "redis")]
mod redis_store;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::path::Path;
use std::sync::Arc;

pub use audit::{verify_audit_chain, AuditChainError};
#[cfg(feature = "redis")]
pub use changes::{Change, ChangeFeed, ChangeStream, Heard};
pub use clock::StoreClock;
pub use config::{
    redact_url, FailMode, PasswordHash, PostgresConfig, RedisConfig, SqliteConfig, StoreConfig,
    UserSpec,
};
pub use error::{StoreError, StoreResult};
pub use json_text::JsonText;
pub use model::{
    new_id, now_ms, AdminToken, AttributeValue, AuditEvent, AuditQuery, DecisionQuery,
    DecisionRecord, DeviceRecord, FactorRecord, NewAuditEvent, OtpCheck, PolicyVersion,
    ScannedDecision, SessionEntry, SessionWrite, UnreadableDecision, UserRecord, UserSource,
    AUDIT_GENESIS_HASH, PASSWORD_FACTOR_KIND, UPSTREAM_LINK_KIND,
};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use redis_store::RedisStore;
pub use secrets::{
    factor_context, SealedSecret, SecretError, SecretKey, SecretsConfig, DEFAULT_KEY_ENV,
};
pub use sqlite::SqliteStore;
pub use sqlite_backup::{backup_sqlite, SqliteBackup};
pub use sync::{sync_users, SyncReport};
pub use traits::{DurableStore, HotStore};

/// The two stores a stepgate node uses.
#[derive(Clone)]
pub struct Stores {
    /// Users, factors, devices, audit log.
    pub durable: Arc<dyn DurableStore>,
    /// Sessions, counters, codes, replay guards.
    pub hot: Arc<dyn HotStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores { .. }")
    }
}

/// Opens the stores the configuration asks for: PostgreSQL for durable data if
/// `store.postgres` is set, Redis for hot state if `store.redis` is set, and the SQLite file
/// (relative to `data_dir`) for whatever is left. Validates the configuration first.
pub async fn open_stores(
    config: &StoreConfig,
    data_dir: &Path,
    key: &SecretKey,
) -> StoreResult<Stores> {
    config.validate()?;
    let need_sqlite = config.postgres.is_none() || config.redis.is_none();
    let sqlite = if need_sqlite {
        Some(SqliteStore::open(&config.sqlite, data_dir, key).await?)
    } else {
        None
    };

    let durable: Arc<dyn DurableStore> = match (&config.postgres, &sqlite) {
        #[cfg(feature = "postgres")]
        (Some(pg), _) => Arc::new(PostgresStore::connect(pg, key).await?),
        #[cfg(not(feature = "postgres"))]
        (Some(_), _) => return Err(StoreError::Config(
            "`store.postgres` is set but this build has no PostgreSQL support (feature `postgres`)"
                .into(),
        )),
        (None, Some(s)) => Arc::new(s.clone()),
        (None, None) => unreachable_config()?,
    };
    let hot: Arc<dyn HotStore> = match (&config.redis, &sqlite) {
        #[cfg(feature = "redis")]
        (Some(r), _) => Arc::new(RedisStore::connect(r).await?),
        #[cfg(not(feature = "redis"))]
        (Some(_), _) => {
            return Err(StoreError::Config(
                "`store.redis` is set but this build has no Redis support (feature `redis`)".into(),
            ))
        }
        (None, Some(s)) => Arc::new(s.clone()),
        (None, None) => unreachable_config()?,
    };
    Ok(Stores { durable, hot })
}

fn unreachable_config<T>() -> StoreResult<T> {
    Err(StoreError::Config("no backend selected for a store".into()))
}
