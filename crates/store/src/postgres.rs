//! The multi-node durable backend: PostgreSQL.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use crate::config::{is_identifier, redact_url, PostgresConfig};
use crate::error::{StoreError, StoreResult};
use crate::migrate::{self, Migration};
use crate::model::{
    audit_hash, from_ms, new_id, now_ms, to_ms, AuditEvent, AuditQuery, DeviceRecord, FactorRecord,
    NewAuditEvent, UserRecord, UserSource, AUDIT_GENESIS_HASH,
};
use crate::secrets::{SealedSecret, SecretKey};
use crate::traits::DurableStore;

/// Durable data in PostgreSQL, shared by every stepgate node.
///
/// Tables live in `store.postgres.schema` (created if missing). Migrations run on
/// [`PostgresStore::connect`] under an advisory lock, so nodes starting together apply each
/// once. Audit appends serialize on a table lock to keep the hash chain linear.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    label: String,
}

/// Arbitrary constant for `pg_advisory_xact_lock` while migrating ("stepgate" in ASCII, truncated).
const MIGRATION_LOCK: i64 = 0x7374_6570_6761_7465;

impl PostgresStore {
    /// Connects, creates the schema if needed, applies pending migrations and checks `key`
    /// against the key this database was created with.
    pub async fn connect(config: &PostgresConfig, key: &SecretKey) -> StoreResult<Self> {
        if !is_identifier(&config.schema) {
            return Err(StoreError::Config(format!(
                "`store.postgres.schema` must be a plain identifier, got `{}`",
                config.schema
            )));
        }
        let label = format!("{} (schema {})", redact_url(&config.url), config.schema);
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| {
                StoreError::Config(format!("`store.postgres.url` is not a valid URL: {e}"))
            })?
            .options([("search_path", config.schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.connect_timeout.0)
            .connect_with(options)
            .await?;
        run_migrations(&pool, &config.schema, &label).await?;
        check_key(&pool, key, &label).await?;
        tracing::info!(store = %label, "connected to the PostgreSQL store");
        Ok(PostgresStore { pool, label })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The URL (password redacted) and schema, for logs.
    pub fn label(&self) -> &str {
        &self.label
    }
}

async fn run_migrations(pool: &PgPool, schema: &str, label: &str) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    // `schema` is checked to be a plain identifier.
    sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS stepgate_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    for m in migrate::POSTGRES {
        apply(&mut tx, m, label).await?;
    }
    let known = migrate::POSTGRES.last().map_or(0, |m| m.version);
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM stepgate_migrations")
        .fetch_one(&mut *tx)
        .await?;
    if let Some(found) = newest.filter(|&v| v > known) {
        return Err(StoreError::SchemaTooNew {
            store: label.to_owned(),
            found,
            known,
        });
    }
    tx.commit().await?;
    Ok(())
}

async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    m: &Migration,
    label: &str,
) -> StoreResult<()> {
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT checksum FROM stepgate_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut **tx)
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
    sqlx::raw_sql(m.sql).execute(&mut **tx).await?;
    sqlx::query("INSERT INTO stepgate_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)")
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .bind(to_ms(&now_ms()))
        .execute(&mut **tx)
        .await?;
    tracing::info!(store = %label, version = m.version, name = m.name, "applied a schema migration");
    Ok(())
}

async fn check_key(pool: &PgPool, key: &SecretKey, label: &str) -> StoreResult<()> {
    let kcv = key.key_check_value()?;
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING",
    )
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

fn json_text<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Invalid(format!("value is not serializable: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(what, e))
}

fn user_from_row(r: &PgRow) -> StoreResult<UserRecord> {
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
        disabled: r.try_get("disabled")?,
        source: UserSource::parse(&source)
            .ok_or_else(|| StoreError::corrupt("user source", &source))?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn factor_from_row(r: &PgRow) -> StoreResult<FactorRecord> {
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

fn device_from_row(r: &PgRow) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        data: parse_json("device data", &r.try_get::<String, _>("data_json")?)?,
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

fn audit_from_row(r: &PgRow) -> StoreResult<AuditEvent> {
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
impl DurableStore for PostgresStore {
    async fn create_user(&self, u: &UserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, email, name, groups_json, attributes_json, disabled, source, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.name)
        .bind(json_text(&u.groups)?)
        .bind(json_text(&u.attributes)?)
        .bind(u.disabled)
        .bind(u.source.as_str())
        .bind(to_ms(&u.created_at))
        .bind(to_ms(&u.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|e| map_write_err(e, "user", &u.username))?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        // COLLATE "C": byte order, the same as SQLite's, whatever the database's locale.
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLS} FROM users ORDER BY username COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, u: &UserRecord) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE users SET username = $1, email = $2, name = $3, groups_json = $4, attributes_json = $5, \
             disabled = $6, source = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.name)
        .bind(json_text(&u.groups)?)
        .bind(json_text(&u.attributes)?)
        .bind(u.disabled)
        .bind(u.source.as_str())
        .bind(to_ms(&u.updated_at))
        .bind(&u.id)
        .execute(&self.pool)
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
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_factor(&self, f: &FactorRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO factors (id, user_id, kind, label, lookup_key, secret, data_json, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        .execute(&self.pool)
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
        let row = sqlx::query(&format!("SELECT {FACTOR_COLS} FROM factors WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    async fn find_factor(&self, kind: &str, lookup_key: &str) -> StoreResult<Option<FactorRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLS} FROM factors WHERE kind = $1 AND lookup_key = $2"
        ))
        .bind(kind)
        .bind(lookup_key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    async fn list_factors(&self, user_id: &str) -> StoreResult<Vec<FactorRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FACTOR_COLS} FROM factors WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(factor_from_row).collect()
    }

    async fn update_factor(&self, f: &FactorRecord) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE factors SET label = $1, lookup_key = $2, secret = $3, data_json = $4, last_used_at = $5 \
             WHERE id = $6",
        )
        .bind(&f.label)
        .bind(&f.lookup_key)
        .bind(f.secret.as_ref().map(|s| s.as_bytes().to_vec()))
        .bind(json_text(&f.data)?)
        .bind(f.last_used_at.as_ref().map(to_ms))
        .bind(&f.id)
        .execute(&self.pool)
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
        let done = sqlx::query("UPDATE factors SET last_used_at = $1 WHERE id = $2")
            .bind(to_ms(&at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_factor(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM factors WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_factors_for_user(&self, user_id: &str) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM factors WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn put_device(&self, d: &DeviceRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO devices (id, owner, data_json, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, data_json = EXCLUDED.data_json, \
             updated_at = EXCLUDED.updated_at",
        )
        .bind(&d.id)
        .bind(&d.owner)
        .bind(json_text(&d.data)?)
        .bind(to_ms(&d.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_device(&self, id: &str) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query("SELECT id, owner, data_json, updated_at FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn list_devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(
            "SELECT id, owner, data_json, updated_at FROM devices WHERE owner = $1 ORDER BY id COLLATE \"C\"",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn delete_device(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn append_audit(&self, e: &NewAuditEvent) -> StoreResult<AuditEvent> {
        let detail = json_text(&e.detail)?;
        let id = new_id();
        let time = to_ms(&e.time);
        let mut tx = self.pool.begin().await?;
        // Readers go on; other appenders wait, so the chain stays a line across nodes.
        sqlx::query("LOCK TABLE audit_events IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        let mut sql = format!("SELECT {AUDIT_COLS} FROM audit_events WHERE TRUE");
        let mut n = 0;
        let mut cond = |sql: &mut String, c: &str| {
            n += 1;
            sql.push_str(&format!(" AND {c} ${n}"));
        };
        if q.kind.is_some() {
            cond(&mut sql, "kind =");
        }
        if q.actor.is_some() {
            cond(&mut sql, "actor =");
        }
        if q.subject.is_some() {
            cond(&mut sql, "subject =");
        }
        if q.since.is_some() {
            cond(&mut sql, "time >=");
        }
        if q.until.is_some() {
            cond(&mut sql, "time <");
        }
        if q.after_seq.is_some() {
            cond(&mut sql, "seq >");
        }
        let order = if q.newest_first { "DESC" } else { "ASC" };
        sql.push_str(&format!(" ORDER BY seq {order} LIMIT ${}", n + 1));
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
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }
}
