//! Versioned schema migrations, embedded in the binary and applied on open.
//!
//! Each backend has an ordered list of SQL files (`migrations/<backend>/NNNN_name.sql`). A
//! table `stepgate_migrations` records which versions ran and a checksum of each, so an
//! edited migration or a database from a newer build is a clear error rather than a surprise.

use sha2::{Digest, Sha256};

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
pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("../migrations/sqlite/0001_initial.sql"),
}];

/// The PostgreSQL schema (durable data only), in order.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("../migrations/postgres/0001_initial.sql"),
}];

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
