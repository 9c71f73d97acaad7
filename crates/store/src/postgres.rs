//! The multi-node durable backend: PostgreSQL.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{Postgres, Transaction};

use crate::config::{is_identifier, redact_url, PostgresConfig};
use crate::error::{StoreError, StoreResult};
use crate::migrate::{self, Migration};
use crate::model::{now_ms, to_ms};
use crate::secrets::{SealedSecret, SecretKey};
use crate::sql_durable::SqlBackend;

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

/// The durable tables through the shared statements ([`crate::sql_durable`]).
impl SqlBackend for PostgresStore {
    type Db = Postgres;

    /// Byte order, the same as SQLite's, whatever the database's locale.
    const BYTE_ORDER: &'static str = " COLLATE \"C\"";

    const FACTOR_TIE_BREAK: &'static str = "id";

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn begin_audit_append(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // Readers go on; other appenders wait, so the chain stays a line across nodes.
        sqlx::query("LOCK TABLE audit_events IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}
