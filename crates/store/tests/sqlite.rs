//! The SQLite backend: the conformance suite, restart survival, secrets at rest, migrations.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stepgate_store::conformance;
use stepgate_store::{
    factor_context, DurableStore, FactorRecord, HotStore, SecretKey, SqliteConfig, SqliteStore,
    StoreClock, StoreConfig, StoreError, UserRecord,
};

fn config(dir: &Path) -> SqliteConfig {
    SqliteConfig {
        path: dir.join("stepgate.db"),
        ..SqliteConfig::default()
    }
}

async fn open(dir: &Path, key: &SecretKey) -> SqliteStore {
    SqliteStore::open(&config(dir), dir, key)
        .await
        .expect("open the SQLite store")
}

#[tokio::test]
async fn durable_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &SecretKey::generate()).await;
    conformance::durable_suite(Arc::new(store)).await;
}

#[tokio::test]
async fn hot_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let clock = StoreClock::manual(stepgate_store::now_ms());
    let store = SqliteStore::open_with_clock(
        &config(dir.path()),
        dir.path(),
        &SecretKey::generate(),
        clock.clone(),
    )
    .await
    .expect("open the SQLite store");
    conformance::hot_suite(Arc::new(store), conformance::Expiry::Manual(clock)).await;
}

/// A session whose state another build spelled otherwise still takes activity stamps.
#[tokio::test]
async fn a_session_spelled_by_another_build_takes_conditional_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &SecretKey::generate()).await;
    let url = format!("sqlite://{}", dir.path().join("stepgate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let respell = move |id: String, text: String| {
        let pool = pool.clone();
        Box::pin(async move {
            let done = sqlx::query("UPDATE hot_sessions SET data_json = ? WHERE id = ?")
                .bind(text)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }) as futures_util::future::BoxFuture<'static, ()>
    };
    conformance::session_replace_over_another_spelling(&store, &respell).await;
}

/// Rows of hot state past their expiry (by `now`, in ms) still in the file, every table.
async fn expired_rows(db: &Path, now: chrono::DateTime<chrono::Utc>) -> i64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    let now = now.timestamp_millis();
    let mut n = 0;
    for sql in [
        "SELECT COUNT(*) FROM hot_sessions WHERE expires_at <= ?",
        "SELECT COUNT(*) FROM hot_counters WHERE expires_at <= ?",
        "SELECT COUNT(*) FROM hot_bans WHERE until <= ?",
        "SELECT COUNT(*) FROM hot_otps WHERE expires_at <= ?",
        "SELECT COUNT(*) FROM hot_once WHERE expires_at <= ?",
        "SELECT COUNT(*) FROM hot_recent WHERE expires_at <= ?",
    ] {
        let c: i64 = sqlx::query_scalar(sql)
            .bind(now)
            .fetch_one(&pool)
            .await
            .unwrap();
        n += c;
    }
    pool.close().await;
    n
}

/// Writes one entry of every kind with `ttl` and one live session; returns the live id.
async fn expiring_entries(
    store: &SqliteStore,
    now: chrono::DateTime<chrono::Utc>,
    ttl: Duration,
) -> String {
    let json = serde_json::json!({});
    store.put_session("short", "u", &json, ttl).await.unwrap();
    store.incr_counter("short", ttl).await.unwrap();
    store
        .set_ban("short", now + chrono::Duration::from_std(ttl).unwrap())
        .await
        .unwrap();
    store.put_otp("short", b"code", ttl, 3).await.unwrap();
    assert!(store.remember_once("short", ttl).await.unwrap());
    store.push_recent("short", &json, 3, ttl).await.unwrap();
    store
        .put_session("live", "u", &json, Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    "live".into()
}

#[tokio::test]
async fn expired_hot_entries_stay_until_a_purge_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let clock = StoreClock::manual(stepgate_store::now_ms());
    let store =
        SqliteStore::open_with_clock(&cfg, dir.path(), &SecretKey::generate(), clock.clone())
            .await
            .unwrap();
    let live = expiring_entries(&store, clock.now(), Duration::from_secs(60)).await;
    assert_eq!(expired_rows(&cfg.path, clock.now()).await, 0);
    clock.advance(Duration::from_secs(61));
    // Expired: no longer returned, but still in the file.
    assert!(store.get_session("short").await.unwrap().is_none());
    assert_eq!(expired_rows(&cfg.path, clock.now()).await, 6);
    assert_eq!(store.purge_expired().await.unwrap(), 6);
    assert_eq!(
        expired_rows(&cfg.path, clock.now()).await,
        0,
        "the purge removed them"
    );
    assert!(
        store.get_session(&live).await.unwrap().is_some(),
        "live entries stay"
    );
}

#[tokio::test]
async fn expired_hot_entries_are_purged_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SqliteConfig {
        path: dir.path().join("stepgate.db"),
        purge_interval: stepgate_policy::HumanDuration::from_secs(1),
        ..SqliteConfig::default()
    };
    let clock = StoreClock::manual(stepgate_store::now_ms());
    let store =
        SqliteStore::open_with_clock(&cfg, dir.path(), &SecretKey::generate(), clock.clone())
            .await
            .unwrap();
    let live = expiring_entries(&store, clock.now(), Duration::from_secs(60)).await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(expired_rows(&cfg.path, clock.now()).await, 6);
    // No purge from here: the background task (every second) must remove them. Waits for
    // that, bounded, rather than sleeping a guessed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while expired_rows(&cfg.path, clock.now()).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the background purge never removed the expired rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        store.get_session(&live).await.unwrap().is_some(),
        "live entries stay"
    );
}

#[tokio::test]
async fn survives_a_restart_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let fixture = {
        let store = open(dir.path(), &key).await;
        let f = conformance::write_fixture(&store, Some(&store), &key).await;
        store.close().await;
        f
    };
    let store = open(dir.path(), &key).await;
    conformance::check_fixture(&store, Some(&store), &key, &fixture).await;
}

#[tokio::test]
async fn a_different_or_missing_key_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let store = open(dir.path(), &key).await;
    conformance::write_fixture(&store, None, &key).await;
    store.close().await;
    drop(store);

    let err = SqliteStore::open(&config(dir.path()), dir.path(), &SecretKey::generate())
        .await
        .expect_err("another key must be refused");
    assert!(
        matches!(err, StoreError::SecretKeyMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("does not match") && msg.contains("STEPGATE_SECRET_KEY"),
        "{msg}"
    );

    // The right key still opens it.
    open(dir.path(), &key).await;
}

fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("stepgate.db"))
        {
            // SQLite may remove its -wal/-shm side files between the listing and the read.
            match std::fs::read(&p) {
                Ok(bytes) => all.extend(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading {}: {e}", p.display()),
            }
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_file_never_holds_a_secret_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let store = open(dir.path(), &key).await;
    conformance::write_fixture(&store, Some(&store), &key).await;
    let u = UserRecord::new("pw-user");
    store.create_user(&u).await.unwrap();
    stepgate_store::sync_users(
        &store,
        &key,
        &[{
            let mut s = stepgate_store::UserSpec::new("cfg-user");
            s.password_hash =
                Some(stepgate_store::PasswordHash::parse(conformance::FIXTURE_PHC).unwrap());
            s
        }],
    )
    .await
    .unwrap();
    // Look at the WAL before and the main file after a checkpoint.
    let before = raw_bytes(dir.path());
    store.close().await;
    let after = raw_bytes(dir.path());
    for bytes in [&before, &after] {
        assert!(contains(bytes, b"pw-user"), "the scan does see stored text");
        assert!(
            !contains(bytes, conformance::FIXTURE_SEED),
            "TOTP seed in clear"
        );
        assert!(
            !contains(bytes, b"c29tZXNhbHRzb21lc2FsdA"),
            "password hash in clear"
        );
    }
}

#[tokio::test]
async fn a_sealed_secret_cannot_be_read_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let store = open(dir.path(), &key).await;
    let u = UserRecord::new("alice");
    store.create_user(&u).await.unwrap();
    let mut f = FactorRecord::new(&u.id, "totp", "phone");
    f.secret = Some(key.seal(b"seed", &factor_context(&u.id, &f.id)).unwrap());
    store.create_factor(&f).await.unwrap();
    let back = store
        .get_factor(&f.id)
        .await
        .unwrap()
        .and_then(|f| f.secret)
        .unwrap();
    assert!(matches!(
        SecretKey::generate().open(&back, &factor_context(&u.id, &f.id)),
        Err(stepgate_store::SecretError::OpenFailed { .. })
    ));
    assert_eq!(
        key.open(&back, &factor_context(&u.id, &f.id))
            .unwrap()
            .as_slice(),
        b"seed"
    );
}

#[tokio::test]
async fn migrations_are_versioned_and_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let store = open(dir.path(), &key).await;
    store.close().await;
    // Reopening applies nothing twice.
    let store = open(dir.path(), &key).await;
    store.close().await;

    let url = format!("sqlite://{}", dir.path().join("stepgate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM stepgate_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions.first(), Some(&1));

    // A database from a newer build is refused.
    sqlx::query("INSERT INTO stepgate_migrations (version, name, checksum, applied_at) VALUES (999, 'future', 'x', 0)")
        .execute(&pool)
        .await
        .unwrap();
    let err = SqliteStore::open(&config(dir.path()), dir.path(), &key)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err:?}"
    );
    sqlx::query("DELETE FROM stepgate_migrations WHERE version = 999")
        .execute(&pool)
        .await
        .unwrap();

    // An applied migration that differs from the shipped one is refused.
    sqlx::query("UPDATE stepgate_migrations SET checksum = 'edited' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    let err = SqliteStore::open(&config(dir.path()), dir.path(), &key)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MigrationChanged { version: 1, .. }),
        "{err:?}"
    );
    pool.close().await;
}

#[tokio::test]
async fn audit_rows_cannot_be_edited_even_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let store = open(dir.path(), &key).await;
    store
        .append_audit(&stepgate_store::NewAuditEvent::now("login.success"))
        .await
        .unwrap();
    store.close().await;
    let url = format!("sqlite://{}", dir.path().join("stepgate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let upd = sqlx::query("UPDATE audit_events SET kind = 'nothing'")
        .execute(&pool)
        .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM audit_events").execute(&pool).await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
    pool.close().await;
}

#[tokio::test]
async fn wal_mode_and_foreign_keys_are_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &SecretKey::generate()).await;
    store
        .put_session(
            "s",
            "u",
            &serde_json::json!({}),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        dir.path().join("stepgate.db-wal").exists(),
        "WAL file present while open"
    );
    let url = format!("sqlite://{}", dir.path().join("stepgate.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    pool.close().await;
}

#[tokio::test]
async fn open_stores_defaults_to_one_sqlite_file_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let stores = stepgate_store::open_stores(&StoreConfig::default(), dir.path(), &key)
        .await
        .unwrap();
    stores
        .durable
        .create_user(&UserRecord::new("x"))
        .await
        .unwrap();
    assert!(stores
        .hot
        .remember_once("k", std::time::Duration::from_secs(5))
        .await
        .unwrap());
    assert!(dir.path().join("stepgate.db").exists());
    let nested = StoreConfig {
        sqlite: SqliteConfig {
            path: "nested/dir/sg.db".into(),
            ..SqliteConfig::default()
        },
        ..StoreConfig::default()
    };
    stepgate_store::open_stores(&nested, dir.path(), &key)
        .await
        .unwrap();
    assert!(
        dir.path().join("nested/dir/sg.db").exists(),
        "parent directories are created"
    );
}

/// `backup_sqlite` copies the store while it is open and being written, into a file the
/// store opens again with the same key; it never overwrites.
#[tokio::test]
async fn an_online_backup_opens_as_a_store_with_everything_committed() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let store = open(dir.path(), &key).await;
    let mut users = Vec::new();
    for i in 0..50 {
        let u = UserRecord::new(format!("user{i}"));
        store.create_user(&u).await.unwrap();
        users.push(u);
    }
    // A writer keeps going during the backup.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .create_user(&UserRecord::new(format!("later{i}")))
                    .await
                    .unwrap();
            }
        })
    };
    let dest = dir.path().join("backup.db");
    let report = stepgate_store::backup_sqlite(&config(dir.path()), dir.path(), &dest)
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(report.users >= 50 && report.users <= 250, "{report:?}");
    assert!(report.bytes > 0);

    let restored_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&dest, restored_dir.path().join("stepgate.db")).unwrap();
    let restored = open(restored_dir.path(), &key).await;
    for u in &users {
        assert_eq!(restored.get_user(&u.id).await.unwrap().as_ref(), Some(u));
    }
    // The copy is bound to the same key as the store.
    let other = SqliteStore::open(
        &config(restored_dir.path()),
        restored_dir.path(),
        &SecretKey::generate(),
    )
    .await;
    assert!(
        matches!(other, Err(StoreError::SecretKeyMismatch { .. })),
        "{other:?}"
    );

    let again = stepgate_store::backup_sqlite(&config(dir.path()), dir.path(), &dest).await;
    assert!(
        matches!(&again, Err(StoreError::Invalid(m)) if m.contains("already exists")),
        "{again:?}"
    );
    let none = tempfile::tempdir().unwrap();
    let missing =
        stepgate_store::backup_sqlite(&config(none.path()), none.path(), &none.path().join("b.db"))
            .await;
    assert!(
        matches!(&missing, Err(StoreError::Config(m)) if m.contains("no SQLite store")),
        "{missing:?}"
    );
}
