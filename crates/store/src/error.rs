//! What can go wrong in the store, each with what to do about it.

use std::path::PathBuf;

/// A failure of a store operation or of opening a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A record with the same unique key (id, username, factor lookup key) already exists.
    #[error("{what} `{key}` already exists")]
    Conflict {
        /// What kind of record (`user`, `username`, `factor`, …).
        what: &'static str,
        /// The key that collided.
        key: String,
    },

    /// The record to update does not exist.
    #[error("{what} `{key}` does not exist")]
    NotFound {
        /// What kind of record (`user`, `factor`, …).
        what: &'static str,
        /// The key that was looked up.
        key: String,
    },

    /// The secret key does not open the key check value this store was created with.
    #[error(
        "the secret key does not match the one this store was created with; restore the \
         original key (STEPGATE_SECRET_KEY or the file named by `secrets.key_file`) — without it \
         the TOTP seeds and other sealed secrets in {store} cannot be read"
    )]
    SecretKeyMismatch {
        /// Which store (a path or a redacted URL).
        store: String,
    },

    /// A secret could not be sealed or opened (see [`crate::SecretError`]).
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),

    /// The database holds a schema version this build does not know.
    #[error(
        "{store} was migrated to schema version {found} by a newer stepgate (this build knows up to \
         {known}); run the newer stepgate or restore a backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// Which store.
        store: String,
        /// The newest version recorded in the database.
        found: i64,
        /// The newest version this build ships.
        known: i64,
    },

    /// An applied migration differs from the one this build ships.
    #[error(
        "migration {version} ({name}) recorded in {store} differs from the one this build ships; \
         the database was changed by a different stepgate build — restore a matching build"
    )]
    MigrationChanged {
        /// Which store.
        store: String,
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: &'static str,
    },

    /// The SQLite file's directory could not be created.
    #[error("cannot create the directory {path} for the SQLite store: {source}; check `store.sqlite.path` and permissions")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A stored value did not decode (corrupted or written by an incompatible build).
    #[error("stored {what} is not readable: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it did not decode.
        detail: String,
    },

    /// An argument the caller passed is invalid (an empty key, a zero TTL, …).
    #[error("invalid argument: {0}")]
    Invalid(String),

    /// The store configuration is incomplete or inconsistent.
    #[error("store configuration: {0}")]
    Config(String),

    /// The SQL database (SQLite or PostgreSQL) failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// A backend did not answer in time or dropped the connection.
    #[error("store unavailable: {0}")]
    Unavailable(String),

    /// Redis failed.
    #[cfg(feature = "redis")]
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

impl StoreError {
    /// Whether the backend was out of reach (down, unreachable, timed out, connection
    /// dropped or shut down) rather than refusing the operation itself: the same write may
    /// succeed when it is back. A conflict, a missing record, corrupt data or a constraint
    /// the database enforces is not transient — retrying it would fail the same way.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception) and 57P0x (the server shutting
                // down or restarting, an administrator ending the connection).
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
                _ => false,
            },
            #[cfg(feature = "redis")]
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_cluster_error()
            }
            _ => false,
        }
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// The result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_out_of_reach_is_transient_and_a_refused_write_is_not() {
        assert!(StoreError::Unavailable("timed out".into()).is_transient());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(StoreError::Database(sqlx::Error::Io(refused)).is_transient());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::Conflict {
            what: "user",
            key: "jane".into()
        }
        .is_transient());
        assert!(!StoreError::corrupt("audit", "bad hash").is_transient());
    }
}
