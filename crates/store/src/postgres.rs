//! The multi-node durable backend: PostgreSQL.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{Postgres, Transaction};

use crate::config::{is_identifier, redact_url, PostgresConfig};
use crate::error::{StoreError, StoreResult};
use crate::migrate::{self, Ledger};
use crate::secrets::SecretKey;
use crate::sql_durable::{check_key, SqlBackend};

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
    let mut ledger = Ledger::<Postgres>::on(&mut tx, label);
    for m in migrate::POSTGRES {
        ledger.apply(m).await?;
    }
    ledger.refuse_newer(migrate::POSTGRES).await?;
    tx.commit().await?;
    Ok(())
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
