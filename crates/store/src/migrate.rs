//! Versioned schema migrations, embedded in the binary and applied on open.
//!
//! Each backend has an ordered list of SQL files (`migrations/<backend>/NNNN_name.sql`). A
//! table `stepgate_migrations` records which versions ran and a checksum of each, so an
//! edited migration or a database from a newer build is a clear error rather than a surprise.

use sha2::{Digest, Sha256};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use crate::error::{StoreError, StoreResult};
use crate::model::{now_ms, to_ms};

/// One schema step.
#[derive(Debug)]
pub(crate) struct Migration {
    /// Increasing from 1.
    pub version: i64,
    /// Short name (the file's).
    pub name: &'static str,
    /// The SQL, possibly several statements.
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL, hex.
    pub fn checksum(&self) -> String {
        crate::model::hex(&Sha256::digest(self.sql.as_bytes()))
    }
}

/// The SQLite schema, in order.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "decisions",
        sql: include_str!("../migrations/sqlite/0002_decisions.sql"),
    },
    Migration {
        version: 3,
        name: "admin_tokens",
        sql: include_str!("../migrations/sqlite/0003_admin_tokens.sql"),
    },
    Migration {
        version: 4,
        name: "audit_stream_cursors",
        sql: include_str!("../migrations/sqlite/0004_audit_stream_cursors.sql"),
    },
    Migration {
        version: 5,
        name: "policy_versions_and_leases",
        sql: include_str!("../migrations/sqlite/0005_policy_versions_and_leases.sql"),
    },
];

/// The PostgreSQL schema (durable data only), in order.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "decisions",
        sql: include_str!("../migrations/postgres/0002_decisions.sql"),
    },
    Migration {
        version: 3,
        name: "admin_tokens",
        sql: include_str!("../migrations/postgres/0003_admin_tokens.sql"),
    },
    Migration {
        version: 4,
        name: "audit_stream_cursors",
        sql: include_str!("../migrations/postgres/0004_audit_stream_cursors.sql"),
    },
    Migration {
        version: 5,
        name: "policy_versions_and_leases",
        sql: include_str!("../migrations/postgres/0005_policy_versions_and_leases.sql"),
    },
];

/// A database's record of applied migrations (`stepgate_migrations`), read and written on
/// one connection. The caller holds the transaction and lock that keep two openers from
/// applying a migration twice, and creates the table (its column types are the dialect's).
pub(crate) struct Ledger<'c, DB: Database> {
    conn: &'c mut DB::Connection,
    store: &'c str,
}

impl<'c, DB> Ledger<'c, DB>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// The ledger of the database behind `conn`; `store` names it in errors and logs.
    pub fn on(conn: &'c mut DB::Connection, store: &'c str) -> Self {
        Ledger { conn, store }
    }

    /// Applies `m` unless it is recorded; a recorded `m` whose checksum differs is
    /// [`StoreError::MigrationChanged`].
    pub async fn apply(&mut self, m: &Migration) -> StoreResult<()> {
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT checksum FROM stepgate_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_optional(&mut *self.conn)
                .await?;
        match recorded {
            Some(sum) if sum == m.checksum() => return Ok(()),
            Some(_) => {
                return Err(StoreError::MigrationChanged {
                    store: self.store.to_owned(),
                    version: m.version,
                    name: m.name,
                })
            }
            None => {}
        }
        sqlx::raw_sql(m.sql).execute(&mut *self.conn).await?;
        sqlx::query(
            "INSERT INTO stepgate_migrations (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .bind(to_ms(&now_ms()))
        .execute(&mut *self.conn)
        .await?;
        tracing::info!(
            store = %self.store, version = m.version, name = m.name, "applied a schema migration"
        );
        Ok(())
    }

    /// [`StoreError::SchemaTooNew`] if a version newer than the last of `known` is recorded.
    pub async fn refuse_newer(&mut self, known: &[Migration]) -> StoreResult<()> {
        let known = known.last().map_or(0, |m| m.version);
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM stepgate_migrations")
                .fetch_one(&mut *self.conn)
                .await?;
        match newest.filter(|&v| v > known) {
            Some(found) => Err(StoreError::SchemaTooNew {
                store: self.store.to_owned(),
                found,
                known,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
        #[cfg(feature = "postgres")]
        for (i, m) in POSTGRES.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
    }
}
