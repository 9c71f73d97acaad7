//! A consistent copy of the SQLite store, taken while stepgate serves from it.
//!
//! `VACUUM INTO` reads the database in one read transaction and writes a compacted copy: in
//! WAL mode writers carry on meanwhile, and the copy is the database as of the moment that
//! transaction began, never half a write. Copying the `.db` file with `cp` instead can miss
//! what is still in the `-wal` file or catch a page mid-write. The copy is checked with
//! `PRAGMA integrity_check` before it is reported as written.

use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

use crate::{SqliteConfig, StoreError, StoreResult};

/// What [`backup_sqlite`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteBackup {
    /// The store that was copied.
    pub source: PathBuf,
    /// The copy.
    pub dest: PathBuf,
    /// The copy's size.
    pub bytes: u64,
    /// Users in the copy (a sanity figure for the operator).
    pub users: i64,
}

/// Copies the SQLite store at `config.path` (relative to `data_dir`) to `dest`, which must
/// not exist yet. Safe while the store is in use.
pub async fn backup_sqlite(
    config: &SqliteConfig,
    data_dir: &Path,
    dest: &Path,
) -> StoreResult<SqliteBackup> {
    let source = config.resolve_path(data_dir);
    if !source.is_file() {
        return Err(StoreError::Config(format!(
            "there is no SQLite store at `{}` to back up (store.sqlite.path, relative to server.data_dir)",
            source.display()
        )));
    }
    if dest.exists() {
        return Err(StoreError::Invalid(format!(
            "`{}` already exists: back up to a new file (stepgate never overwrites a backup)",
            dest.display()
        )));
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(StoreError::Invalid(format!(
                "the folder `{}` for the backup does not exist",
                dir.display()
            )));
        }
    }
    let dest_text = dest.to_str().ok_or_else(|| {
        StoreError::Invalid(format!(
            "the backup path `{}` is not valid UTF-8",
            dest.display()
        ))
    })?;
    let mut conn = SqliteConnectOptions::new()
        .filename(&source)
        .create_if_missing(false)
        .busy_timeout(config.busy_timeout.0)
        .connect()
        .await?;
    sqlx::query("VACUUM INTO ?")
        .bind(dest_text)
        .execute(&mut conn)
        .await?;
    conn.close().await?;

    let mut copy = SqliteConnectOptions::new()
        .filename(dest)
        .read_only(true)
        .connect()
        .await?;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut copy)
        .await?;
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut copy)
        .await?;
    copy.close().await?;
    if check != "ok" {
        return Err(StoreError::Corrupt {
            what: "backup",
            detail: format!("`{}` fails the integrity check: {check}", dest.display()),
        });
    }
    let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(SqliteBackup {
        source,
        dest: dest.to_path_buf(),
        bytes,
        users,
    })
}
