//! The embedded backend: one SQLite file (WAL mode) holding durable data and hot state.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::clock::StoreClock;
use crate::config::SqliteConfig;
use crate::error::{StoreError, StoreResult};
use crate::migrate::{self, Ledger};
use crate::model::{
    another_spelling, ct_eq, from_ms, json_text, parse_json, to_ms, ttl_ms, OtpCheck, SessionEntry,
    SessionWrite,
};
use crate::secrets::SecretKey;
use crate::sql_durable::{check_key, SqlBackend};
use crate::traits::HotStore;

/// Durable data and hot state in one SQLite file.
///
/// WAL mode (readers never block the writer), `synchronous=NORMAL` (a committed write survives
/// a crash of stepgate; only a power loss can roll back the last few), foreign keys on, and a
/// busy timeout for the single writer. Migrations run on [`SqliteStore::open`]. Expired hot
/// entries are skipped on read and deleted by a background task every `purge_interval`;
/// "expired" is judged by the store's [`StoreClock`] (the system clock unless opened with
/// [`SqliteStore::open_with_clock`]).
/// Cheap to clone (one shared pool).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlitePool,
    path: PathBuf,
    clock: StoreClock,
    purger: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut g) = self.purger.lock() {
            if let Some(h) = g.take() {
                h.abort();
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `config.path` (relative to `data_dir`),
    /// applies pending migrations, and checks `key` against the key this store was created
    /// with ([`StoreError::SecretKeyMismatch`] if it differs). Must run inside a Tokio runtime.
    pub async fn open(
        config: &SqliteConfig,
        data_dir: &Path,
        key: &SecretKey,
    ) -> StoreResult<Self> {
        Self::open_with_clock(config, data_dir, key, StoreClock::system()).await
    }

    /// As [`SqliteStore::open`], with hot-state expiry judged by `clock` (tests move a
    /// manual clock past a TTL instead of sleeping).
    pub async fn open_with_clock(
        config: &SqliteConfig,
        data_dir: &Path,
        key: &SecretKey,
        clock: StoreClock,
    ) -> StoreResult<Self> {
        let path = config.resolve_path(data_dir);
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout.0);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .connect_with(options)
            .await?;
        let label = path.display().to_string();
        run_migrations(&pool, &label).await?;
        check_key(&pool, key, &label).await?;
        tracing::info!(path = %label, "opened the SQLite store");

        let inner = Arc::new(Inner {
            pool,
            path,
            clock,
            purger: std::sync::Mutex::new(None),
        });
        let handle = spawn_purger(Arc::downgrade(&inner), config.purge_interval.0);
        if let Ok(mut g) = inner.purger.lock() {
            *g = Some(handle);
        }
        Ok(SqliteStore { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Closes the pool (checkpointing the WAL) and waits for connections to finish.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Now by the store's clock, in milliseconds.
    fn now(&self) -> i64 {
        to_ms(&self.inner.clock.now())
    }

    /// Now, and now plus `ttl`, in milliseconds.
    fn now_and(&self, ttl: Duration) -> (i64, i64) {
        let now = self.now();
        (now, now.saturating_add(ttl_ms(ttl)))
    }
}

fn spawn_purger(inner: Weak<Inner>, every: Duration) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await; // the first tick is immediate
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            match purge(&inner.pool, to_ms(&inner.clock.now())).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "purged expired hot-state entries"),
                Err(e) => tracing::warn!(error = %e, "purging expired hot-state entries failed"),
            }
        }
    })
}

async fn run_migrations(pool: &SqlitePool, label: &str) -> StoreResult<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS stepgate_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    for m in migrate::SQLITE {
        // IMMEDIATE: two processes opening the same new file do not both apply it.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        Ledger::<Sqlite>::on(&mut tx, label).apply(m).await?;
        tx.commit().await?;
    }
    let mut conn = pool.acquire().await?;
    Ledger::<Sqlite>::on(&mut conn, label)
        .refuse_newer(migrate::SQLITE)
        .await
}

async fn purge(pool: &SqlitePool, now: i64) -> StoreResult<u64> {
    let mut n = 0;
    for sql in [
        "DELETE FROM hot_sessions WHERE expires_at <= ?",
        "DELETE FROM hot_counters WHERE expires_at <= ?",
        "DELETE FROM hot_bans WHERE until <= ?",
        "DELETE FROM hot_otps WHERE expires_at <= ?",
        "DELETE FROM hot_once WHERE expires_at <= ?",
        "DELETE FROM hot_recent WHERE expires_at <= ?",
    ] {
        n += sqlx::query(sql)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
    }
    Ok(n)
}

/// The durable tables through the shared statements ([`crate::sql_durable`]).
impl SqlBackend for SqliteStore {
    type Db = Sqlite;

    /// SQLite's default collation (BINARY) already compares bytes.
    const BYTE_ORDER: &'static str = "";

    /// Insertion order.
    const FACTOR_TIE_BREAK: &'static str = "rowid";

    fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn begin_audit_append(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Sqlite>, sqlx::Error>> + Send {
        // IMMEDIATE takes the write lock first, so reading the chain head and appending after
        // it cannot interleave with another writer (in this process or another).
        self.inner.pool.begin_with("BEGIN IMMEDIATE")
    }
}

#[async_trait]
impl HotStore for SqliteStore {
    async fn put_session(
        &self,
        id: &str,
        user_id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<()> {
        let (_, exp) = self.now_and(ttl);
        sqlx::query(
            "INSERT INTO hot_sessions (id, user_id, data_json, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET user_id = excluded.user_id, data_json = excluded.data_json, \
             expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(user_id)
        .bind(json_text(data)?)
        .bind(exp)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionEntry>> {
        let now = self.now();
        let row: Option<(String, String, i64)> =
            sqlx::query_as("SELECT user_id, data_json, expires_at FROM hot_sessions WHERE id = ? AND expires_at > ?")
                .bind(id)
                .bind(now)
                .fetch_optional(self.pool())
                .await?;
        row.map(|(user_id, data, exp)| {
            Ok(SessionEntry {
                user_id,
                data: parse_json("session data", &data)?,
                expires_at: from_ms(exp),
            })
        })
        .transpose()
    }

    async fn touch_session(&self, id: &str, ttl: Duration) -> StoreResult<bool> {
        let (now, exp) = self.now_and(ttl);
        let done =
            sqlx::query("UPDATE hot_sessions SET expires_at = ? WHERE id = ? AND expires_at > ?")
                .bind(exp)
                .bind(id)
                .bind(now)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn update_session(
        &self,
        id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let (now, exp) = self.now_and(ttl);
        let done = sqlx::query(
            "UPDATE hot_sessions SET data_json = ?, expires_at = ? WHERE id = ? AND expires_at > ?",
        )
        .bind(json_text(data)?)
        .bind(exp)
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_session(
        &self,
        id: &str,
        expected: &serde_json::Value,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<SessionWrite> {
        let text = json_text(data)?;
        let mut kept = json_text(expected)?;
        // At most twice: over this build's spelling of `expected`, then over the text the
        // store holds when it spells the same state otherwise (see `another_spelling`).
        for _ in 0..2 {
            let (now, exp) = self.now_and(ttl);
            let done = sqlx::query(
                "UPDATE hot_sessions SET data_json = ?, expires_at = ? \
                 WHERE id = ? AND expires_at > ? AND data_json = ?",
            )
            .bind(&text)
            .bind(exp)
            .bind(id)
            .bind(now)
            .bind(&kept)
            .execute(self.pool())
            .await?;
            if done.rows_affected() > 0 {
                return Ok(SessionWrite::Written);
            }
            let held: Option<String> = sqlx::query_scalar(
                "SELECT data_json FROM hot_sessions WHERE id = ? AND expires_at > ?",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
            match held {
                None => return Ok(SessionWrite::Gone),
                Some(held) if another_spelling(&held, &kept, expected) => kept = held,
                Some(_) => return Ok(SessionWrite::Changed),
            }
        }
        Ok(SessionWrite::Changed)
    }

    async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        let now = self.now();
        let gone: Option<i64> =
            sqlx::query_scalar("DELETE FROM hot_sessions WHERE id = ? RETURNING expires_at")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        Ok(gone.is_some_and(|exp| exp > now))
    }

    async fn list_sessions_for_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let now = self.now();
        Ok(sqlx::query_scalar(
            "SELECT id FROM hot_sessions WHERE user_id = ? AND expires_at > ? ORDER BY id",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(self.pool())
        .await?)
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        let now = self.now();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hot_sessions WHERE expires_at > ?")
            .bind(now)
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delete_sessions_for_user(&self, user_id: &str) -> StoreResult<u64> {
        let now = self.now();
        let gone: Vec<i64> =
            sqlx::query_scalar("DELETE FROM hot_sessions WHERE user_id = ? RETURNING expires_at")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        Ok(gone.into_iter().filter(|&exp| exp > now).count() as u64)
    }

    async fn incr_counter(&self, key: &str, window: Duration) -> StoreResult<u64> {
        let (now, exp) = self.now_and(window);
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO hot_counters (key, count, expires_at) VALUES (?1, 1, ?2) \
             ON CONFLICT(key) DO UPDATE SET \
               count = CASE WHEN hot_counters.expires_at <= ?3 THEN 1 ELSE hot_counters.count + 1 END, \
               expires_at = CASE WHEN hot_counters.expires_at <= ?3 THEN ?2 ELSE hot_counters.expires_at END \
             RETURNING count",
        )
        .bind(key)
        .bind(exp)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn get_counter(&self, key: &str) -> StoreResult<u64> {
        let now = self.now();
        let count: Option<i64> =
            sqlx::query_scalar("SELECT count FROM hot_counters WHERE key = ? AND expires_at > ?")
                .bind(key)
                .bind(now)
                .fetch_optional(self.pool())
                .await?;
        Ok(count.and_then(|c| u64::try_from(c).ok()).unwrap_or(0))
    }

    async fn reset_counter(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM hot_counters WHERE key = ?")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn set_ban(&self, key: &str, until: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("INSERT INTO hot_bans (key, until) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET until = excluded.until")
            .bind(key)
            .bind(to_ms(&until))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn ban_until(&self, key: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let now = self.now();
        let until: Option<i64> =
            sqlx::query_scalar("SELECT until FROM hot_bans WHERE key = ? AND until > ?")
                .bind(key)
                .bind(now)
                .fetch_optional(self.pool())
                .await?;
        Ok(until.map(from_ms))
    }

    async fn clear_ban(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM hot_bans WHERE key = ?")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn put_otp(
        &self,
        key: &str,
        code_hash: &[u8],
        ttl: Duration,
        max_attempts: u32,
    ) -> StoreResult<()> {
        if max_attempts == 0 {
            return Err(StoreError::Invalid(
                "a one-time code needs at least one attempt".into(),
            ));
        }
        let (_, exp) = self.now_and(ttl);
        sqlx::query(
            "INSERT INTO hot_otps (key, code_hash, attempts_left, expires_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT(key) DO UPDATE SET code_hash = excluded.code_hash, \
             attempts_left = excluded.attempts_left, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(code_hash)
        .bind(i64::from(max_attempts))
        .bind(exp)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn check_otp(&self, key: &str, code_hash: &[u8]) -> StoreResult<OtpCheck> {
        let now = self.now();
        // Spend an attempt first (one atomic statement), so concurrent guesses cannot exceed
        // the limit; then consume on a match, where only one concurrent checker can win.
        let spent: Option<(Vec<u8>, i64)> = sqlx::query_as(
            "UPDATE hot_otps SET attempts_left = attempts_left - 1 \
             WHERE key = ? AND expires_at > ? AND attempts_left > 0 RETURNING code_hash, attempts_left",
        )
        .bind(key)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        let Some((stored, left)) = spent else {
            return Ok(OtpCheck::Missing);
        };
        if ct_eq(&stored, code_hash) {
            let won = sqlx::query("DELETE FROM hot_otps WHERE key = ? AND code_hash = ?")
                .bind(key)
                .bind(&stored)
                .execute(self.pool())
                .await?;
            return Ok(if won.rows_affected() > 0 {
                OtpCheck::Valid
            } else {
                OtpCheck::Missing
            });
        }
        if left <= 0 {
            sqlx::query("DELETE FROM hot_otps WHERE key = ? AND attempts_left <= 0")
                .bind(key)
                .execute(self.pool())
                .await?;
        }
        Ok(OtpCheck::Invalid {
            attempts_left: u32::try_from(left).unwrap_or(0),
        })
    }

    async fn delete_otp(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM hot_otps WHERE key = ?")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        let (now, exp) = self.now_and(ttl);
        let done = sqlx::query(
            "INSERT INTO hot_once (key, expires_at) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET expires_at = ?2 WHERE hot_once.expires_at <= ?3",
        )
        .bind(key)
        .bind(exp)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn push_recent(
        &self,
        key: &str,
        value: &serde_json::Value,
        keep: usize,
        ttl: Duration,
    ) -> StoreResult<()> {
        let (now, exp) = self.now_and(ttl);
        let text = json_text(value)?;
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        // The first statement writes, so the deferred transaction takes the write lock at once.
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM hot_recent WHERE key = ? AND expires_at <= ?")
            .bind(key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO hot_recent (key, seq, value_json, expires_at) \
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM hot_recent WHERE key = ?1), ?2, ?3)",
        )
        .bind(key)
        .bind(&text)
        .bind(exp)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE hot_recent SET expires_at = ? WHERE key = ?")
            .bind(exp)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM hot_recent WHERE key = ?1 AND seq NOT IN \
             (SELECT seq FROM hot_recent WHERE key = ?1 ORDER BY seq DESC LIMIT ?2)",
        )
        .bind(key)
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn recent(&self, key: &str) -> StoreResult<Vec<serde_json::Value>> {
        let now = self.now();
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT value_json FROM hot_recent WHERE key = ? AND expires_at > ? ORDER BY seq DESC",
        )
        .bind(key)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|s| parse_json("recent entry", s)).collect()
    }

    async fn purge_expired(&self) -> StoreResult<u64> {
        purge(self.pool(), self.now()).await
    }
}
