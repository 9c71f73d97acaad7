//! The embedded backend: one SQLite file (WAL mode) holding durable data and hot state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::clock::StoreClock;
use crate::config::SqliteConfig;
use crate::error::{StoreError, StoreResult};
use crate::migrate::{self, Migration};
use crate::model::{
    audit_hash, ct_eq, from_ms, new_id, now_ms, to_ms, AuditEvent, AuditQuery, DeviceRecord,
    FactorRecord, NewAuditEvent, OtpCheck, SessionEntry, UserRecord, UserSource,
    AUDIT_GENESIS_HASH,
};
use crate::secrets::{SealedSecret, SecretKey};
use crate::traits::{DurableStore, HotStore};

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

    fn pool(&self) -> &SqlitePool {
        &self.inner.pool
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
    let known = migrate::SQLITE.last().map_or(0, |m| m.version);
    for m in migrate::SQLITE {
        apply_migration(pool, m, label).await?;
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM stepgate_migrations")
        .fetch_one(pool)
        .await?;
    if let Some(found) = newest.filter(|&v| v > known) {
        return Err(StoreError::SchemaTooNew {
            store: label.to_owned(),
            found,
            known,
        });
    }
    Ok(())
}

async fn apply_migration(pool: &SqlitePool, m: &Migration, label: &str) -> StoreResult<()> {
    // IMMEDIATE: two processes opening the same new file do not both apply it.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT checksum FROM stepgate_migrations WHERE version = ?")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await?;
    match recorded {
        Some(sum) if sum == m.checksum() => return Ok(()),
        Some(_) => {
            return Err(StoreError::MigrationChanged {
                store: label.to_owned(),
                version: m.version,
                name: m.name,
            })
        }
        None => {}
    }
    sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO stepgate_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
    )
    .bind(m.version)
    .bind(m.name)
    .bind(m.checksum())
    .bind(to_ms(&now_ms()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(store = %label, version = m.version, name = m.name, "applied a schema migration");
    Ok(())
}

async fn check_key(pool: &SqlitePool, key: &SecretKey, label: &str) -> StoreResult<()> {
    let kcv = key.key_check_value()?;
    // Only the first opener's value is kept; everyone then checks against it.
    sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?)")
        .bind(kcv.as_bytes())
        .execute(pool)
        .await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'key_check'")
        .fetch_one(pool)
        .await?;
    if key.matches_key_check(&SealedSecret::from_bytes(stored)) {
        Ok(())
    } else {
        Err(StoreError::SecretKeyMismatch {
            store: label.to_owned(),
        })
    }
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

/// Maps unique/foreign-key violations to the store's own errors.
fn map_write_err(e: sqlx::Error, what: &'static str, key: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict {
                what,
                key: key.to_owned(),
            };
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound {
                what: "user",
                key: key.to_owned(),
            };
        }
    }
    StoreError::Database(e)
}

pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

fn json_text(v: &serde_json::Value) -> StoreResult<String> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Invalid(format!("value is not serializable: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(what, e))
}

fn user_from_row(r: &SqliteRow) -> StoreResult<UserRecord> {
    let source: String = r.try_get("source")?;
    Ok(UserRecord {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        groups: parse_json("user groups", &r.try_get::<String, _>("groups_json")?)?,
        attributes: parse_json(
            "user attributes",
            &r.try_get::<String, _>("attributes_json")?,
        )?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        source: UserSource::parse(&source)
            .ok_or_else(|| StoreError::corrupt("user source", &source))?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn factor_from_row(r: &SqliteRow) -> StoreResult<FactorRecord> {
    Ok(FactorRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        kind: r.try_get("kind")?,
        label: r.try_get("label")?,
        lookup_key: r.try_get("lookup_key")?,
        secret: r
            .try_get::<Option<Vec<u8>>, _>("secret")?
            .map(SealedSecret::from_bytes),
        data: parse_json("factor data", &r.try_get::<String, _>("data_json")?)?,
        created_at: from_ms(r.try_get("created_at")?),
        last_used_at: r.try_get::<Option<i64>, _>("last_used_at")?.map(from_ms),
    })
}

fn device_from_row(r: &SqliteRow) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        data: parse_json("device data", &r.try_get::<String, _>("data_json")?)?,
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn audit_from_row(r: &SqliteRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        time: from_ms(r.try_get("time")?),
        kind: r.try_get("kind")?,
        actor: r.try_get("actor")?,
        subject: r.try_get("subject")?,
        ip: r.try_get("ip")?,
        detail: parse_json("audit detail", &r.try_get::<String, _>("detail_json")?)?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

const USER_COLS: &str =
    "id, username, email, name, groups_json, attributes_json, disabled, source, created_at, updated_at";
const FACTOR_COLS: &str =
    "id, user_id, kind, label, lookup_key, secret, data_json, created_at, last_used_at";
const AUDIT_COLS: &str = "seq, id, time, kind, actor, subject, ip, detail_json, prev_hash, hash";

#[async_trait]
impl DurableStore for SqliteStore {
    async fn create_user(&self, u: &UserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, email, name, groups_json, attributes_json, disabled, source, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.name)
        .bind(json_text(&serde_json::to_value(&u.groups).unwrap_or_default())?)
        .bind(json_text(&serde_json::to_value(&u.attributes).unwrap_or_default())?)
        .bind(u.disabled)
        .bind(u.source.as_str())
        .bind(to_ms(&u.created_at))
        .bind(to_ms(&u.updated_at))
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "user", &u.username))?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE username = ?"))
            .bind(username)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, u: &UserRecord) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE users SET username = ?, email = ?, name = ?, groups_json = ?, attributes_json = ?, \
             disabled = ?, source = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.name)
        .bind(json_text(&serde_json::to_value(&u.groups).unwrap_or_default())?)
        .bind(json_text(&serde_json::to_value(&u.attributes).unwrap_or_default())?)
        .bind(u.disabled)
        .bind(u.source.as_str())
        .bind(to_ms(&u.updated_at))
        .bind(&u.id)
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "username", &u.username))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "user",
                key: u.id.clone(),
            });
        }
        Ok(())
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_factor(&self, f: &FactorRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO factors (id, user_id, kind, label, lookup_key, secret, data_json, created_at, last_used_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&f.id)
        .bind(&f.user_id)
        .bind(&f.kind)
        .bind(&f.label)
        .bind(&f.lookup_key)
        .bind(f.secret.as_ref().map(|s| s.as_bytes().to_vec()))
        .bind(json_text(&f.data)?)
        .bind(to_ms(&f.created_at))
        .bind(f.last_used_at.as_ref().map(to_ms))
        .execute(self.pool())
        .await
        .map_err(|e| match map_write_err(e, "factor", &f.id) {
            StoreError::NotFound { what, .. } => StoreError::NotFound {
                what,
                key: f.user_id.clone(),
            },
            other => other,
        })?;
        Ok(())
    }

    async fn get_factor(&self, id: &str) -> StoreResult<Option<FactorRecord>> {
        let row = sqlx::query(&format!("SELECT {FACTOR_COLS} FROM factors WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    async fn find_factor(&self, kind: &str, lookup_key: &str) -> StoreResult<Option<FactorRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLS} FROM factors WHERE kind = ? AND lookup_key = ?"
        ))
        .bind(kind)
        .bind(lookup_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    async fn list_factors(&self, user_id: &str) -> StoreResult<Vec<FactorRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FACTOR_COLS} FROM factors WHERE user_id = ? ORDER BY created_at, rowid"
        ))
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(factor_from_row).collect()
    }

    async fn update_factor(&self, f: &FactorRecord) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE factors SET label = ?, lookup_key = ?, secret = ?, data_json = ?, last_used_at = ? WHERE id = ?",
        )
        .bind(&f.label)
        .bind(&f.lookup_key)
        .bind(f.secret.as_ref().map(|s| s.as_bytes().to_vec()))
        .bind(json_text(&f.data)?)
        .bind(f.last_used_at.as_ref().map(to_ms))
        .bind(&f.id)
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "factor lookup key", f.lookup_key.as_deref().unwrap_or_default()))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "factor",
                key: f.id.clone(),
            });
        }
        Ok(())
    }

    async fn touch_factor(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE factors SET last_used_at = ? WHERE id = ?")
            .bind(to_ms(&at))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_factor(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM factors WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_factors_for_user(&self, user_id: &str) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM factors WHERE user_id = ?")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    async fn put_device(&self, d: &DeviceRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO devices (id, owner, data_json, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, data_json = excluded.data_json, \
             updated_at = excluded.updated_at",
        )
        .bind(&d.id)
        .bind(&d.owner)
        .bind(json_text(&d.data)?)
        .bind(to_ms(&d.updated_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn get_device(&self, id: &str) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query("SELECT id, owner, data_json, updated_at FROM devices WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn list_devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(
            "SELECT id, owner, data_json, updated_at FROM devices WHERE owner = ? ORDER BY id",
        )
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn delete_device(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM devices WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn append_audit(&self, e: &NewAuditEvent) -> StoreResult<AuditEvent> {
        let detail = json_text(&e.detail)?;
        let id = new_id();
        let time = to_ms(&e.time);
        // IMMEDIATE takes the write lock first, so reading the chain head and appending after
        // it cannot interleave with another writer (in this process or another).
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let (prev_seq, prev_hash) = head.unwrap_or((0, AUDIT_GENESIS_HASH.to_owned()));
        let seq = prev_seq + 1;
        let hash = audit_hash(
            &prev_hash,
            seq,
            &id,
            time,
            &e.kind,
            e.actor.as_deref(),
            e.subject.as_deref(),
            e.ip.as_deref(),
            &detail,
        );
        sqlx::query(
            "INSERT INTO audit_events (seq, id, time, kind, actor, subject, ip, detail_json, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(seq)
        .bind(&id)
        .bind(time)
        .bind(&e.kind)
        .bind(&e.actor)
        .bind(&e.subject)
        .bind(&e.ip)
        .bind(&detail)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AuditEvent {
            seq,
            id,
            time: from_ms(time),
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            subject: e.subject.clone(),
            ip: e.ip.clone(),
            detail: parse_json("audit detail", &detail)?,
            prev_hash,
            hash,
        })
    }

    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let mut sql = format!("SELECT {AUDIT_COLS} FROM audit_events WHERE 1 = 1");
        if q.kind.is_some() {
            sql.push_str(" AND kind = ?");
        }
        if q.actor.is_some() {
            sql.push_str(" AND actor = ?");
        }
        if q.subject.is_some() {
            sql.push_str(" AND subject = ?");
        }
        if q.since.is_some() {
            sql.push_str(" AND time >= ?");
        }
        if q.until.is_some() {
            sql.push_str(" AND time < ?");
        }
        if q.after_seq.is_some() {
            sql.push_str(" AND seq > ?");
        }
        sql.push_str(if q.newest_first {
            " ORDER BY seq DESC LIMIT ?"
        } else {
            " ORDER BY seq LIMIT ?"
        });
        let mut query = sqlx::query(&sql);
        if let Some(k) = &q.kind {
            query = query.bind(k);
        }
        if let Some(a) = &q.actor {
            query = query.bind(a);
        }
        if let Some(s) = &q.subject {
            query = query.bind(s);
        }
        if let Some(t) = &q.since {
            query = query.bind(to_ms(t));
        }
        if let Some(t) = &q.until {
            query = query.bind(to_ms(t));
        }
        if let Some(s) = q.after_seq {
            query = query.bind(s);
        }
        let rows = query
            .bind(q.effective_limit())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(audit_from_row).collect()
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
