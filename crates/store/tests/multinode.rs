//! The multi-node backends, PostgreSQL (durable) and Redis (hot), through the same
//! conformance suite as SQLite. They run when `STEPGATE_TEST_POSTGRES_URL` /
//! `STEPGATE_TEST_REDIS_URL` are set (e.g. `postgres://postgres@127.0.0.1:5432/test`,
//! `redis://127.0.0.1:6379`) and are skipped with a note otherwise, counted in the run's
//! "skipped:" summary line (tests/support/skipped.rs). Each test uses its own
//! PostgreSQL schema and Redis key prefix, dropped at the end.

use std::sync::Arc;

use stepgate_store::conformance;
use stepgate_store::{
    new_id, open_stores, DurableStore, HotStore, PostgresConfig, PostgresStore, RedisConfig,
    RedisStore, SecretKey, StoreConfig, StoreError,
};

#[path = "../../../tests/support/skipped.rs"]
mod skipped;

fn pg_url() -> Option<String> {
    let url = std::env::var("STEPGATE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        skipped::record("PostgreSQL", "set STEPGATE_TEST_POSTGRES_URL");
    }
    url
}

fn redis_url() -> Option<String> {
    let url = std::env::var("STEPGATE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        skipped::record("Redis", "set STEPGATE_TEST_REDIS_URL");
    }
    url
}

fn pg_config(url: &str) -> PostgresConfig {
    PostgresConfig {
        schema: format!("stepgate_test_{}", &new_id()[..12]),
        ..PostgresConfig::new(url)
    }
}

fn redis_config(url: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: format!("stepgate-test-{}:", &new_id()[..12]),
        ..RedisConfig::new(url)
    }
}

async fn drop_schema(url: &str, schema: &str) {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("connect to drop the test schema");
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .expect("drop the test schema");
    pool.close().await;
}

async fn drop_keys(url: &str, prefix: &str) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("list test keys");
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("delete test keys");
    }
}

#[tokio::test]
async fn postgres_durable_conformance() {
    let Some(url) = pg_url() else { return };
    let cfg = pg_config(&url);
    let store = PostgresStore::connect(&cfg, &SecretKey::generate())
        .await
        .expect("connect");
    conformance::durable_suite(Arc::new(store.clone())).await;
    store.close().await;
    drop_schema(&url, &cfg.schema).await;
}

#[tokio::test]
async fn redis_hot_conformance() {
    let Some(url) = redis_url() else { return };
    let cfg = redis_config(&url);
    let store = RedisStore::connect(&cfg).await.expect("connect");
    // Redis expires keys on its own clock: the suite waits for real TTLs.
    conformance::hot_suite(Arc::new(store), conformance::Expiry::Real).await;
    drop_keys(&url, &cfg.key_prefix).await;
}

/// A session whose state another build spelled otherwise still takes activity stamps.
#[tokio::test]
async fn redis_session_spelled_by_another_build_takes_conditional_writes() {
    let Some(url) = redis_url() else { return };
    let cfg = redis_config(&url);
    let p = cfg.key_prefix.clone();
    let store = RedisStore::connect(&cfg).await.expect("connect");
    let client = redis::Client::open(url.as_str()).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    let respell = move |id: String, text: String| {
        let (mut raw, key) = (raw.clone(), format!("{p}sess:{id}"));
        Box::pin(async move {
            let _: i64 = redis::cmd("HSET")
                .arg(key)
                .arg("d")
                .arg(text)
                .query_async(&mut raw)
                .await
                .unwrap();
        }) as futures_util::future::BoxFuture<'static, ()>
    };
    conformance::session_replace_over_another_spelling(&store, &respell).await;
    drop_keys(&url, &cfg.key_prefix).await;
}

/// Sessions written by a node of the previous version (one script over the session and its
/// user's index, before Redis Cluster support split them) are read, listed, updated and
/// ended by this version, and this version's sessions have the keys the previous version
/// reads: a rolling upgrade keeps everyone signed in.
#[tokio::test]
async fn redis_sessions_of_the_previous_version_stay_readable() {
    let Some(url) = redis_url() else { return };
    let cfg = redis_config(&url);
    let p = cfg.key_prefix.clone();
    let store = RedisStore::connect(&cfg).await.expect("connect");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // The previous version's PUT_SESSION, verbatim.
    let old_put = redis::Script::new(
        r"
redis.call('HSET', KEYS[1], 'u', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1",
    );
    for id in ["old-a", "old-b"] {
        let _: i64 = old_put
            .key(format!("{p}sess:{id}"))
            .key(format!("{p}usess:olduser"))
            .arg("olduser")
            .arg(r#"{"aal":2}"#)
            .arg(600_000)
            .arg(id)
            .invoke_async(&mut raw)
            .await
            .unwrap();
    }
    let got = store.get_session("old-a").await.unwrap().expect("readable");
    assert_eq!(
        (got.user_id.as_str(), got.data),
        ("olduser", serde_json::json!({"aal": 2}))
    );
    assert_eq!(
        store.list_sessions_for_user("olduser").await.unwrap(),
        ["old-a", "old-b"]
    );
    assert!(store
        .update_session(
            "old-a",
            &serde_json::json!({"aal": 3}),
            std::time::Duration::from_secs(900)
        )
        .await
        .unwrap());
    assert!(store.delete_session("old-b").await.unwrap());
    let listed: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{p}usess:olduser"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(listed, ["old-a"], "the index is the previous version's set");

    // What this version writes is what the previous version's scripts read.
    store
        .put_session(
            "new-a",
            "olduser",
            &serde_json::json!({"x": 1}),
            std::time::Duration::from_secs(600),
        )
        .await
        .unwrap();
    let (u, d): (String, String) = redis::cmd("HMGET")
        .arg(format!("{p}sess:new-a"))
        .arg("u")
        .arg("d")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!((u.as_str(), d.as_str()), ("olduser", r#"{"x":1}"#));
    let member: bool = redis::cmd("SISMEMBER")
        .arg(format!("{p}usess:olduser"))
        .arg("new-a")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(member);
    assert_eq!(store.delete_sessions_for_user("olduser").await.unwrap(), 2);
    drop_keys(&url, &p).await;
}

#[tokio::test]
async fn postgres_and_redis_survive_a_reconnect() {
    let (Some(pg), Some(rd)) = (pg_url(), redis_url()) else {
        return;
    };
    let key = SecretKey::generate();
    let pcfg = pg_config(&pg);
    let rcfg = redis_config(&rd);
    let fixture = {
        let durable = PostgresStore::connect(&pcfg, &key).await.unwrap();
        let hot = RedisStore::connect(&rcfg).await.unwrap();
        let f = conformance::write_fixture(&durable, Some(&hot), &key).await;
        durable.close().await;
        f
    };
    let durable = PostgresStore::connect(&pcfg, &key).await.unwrap();
    let hot = RedisStore::connect(&rcfg).await.unwrap();
    conformance::check_fixture(&durable, Some(&hot), &key, &fixture).await;
    durable.close().await;
    drop_schema(&pg, &pcfg.schema).await;
    drop_keys(&rd, &rcfg.key_prefix).await;
}

#[tokio::test]
async fn postgres_refuses_a_different_key() {
    let Some(url) = pg_url() else { return };
    let cfg = pg_config(&url);
    let store = PostgresStore::connect(&cfg, &SecretKey::generate())
        .await
        .unwrap();
    store.close().await;
    let err = PostgresStore::connect(&cfg, &SecretKey::generate())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SecretKeyMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("STEPGATE_SECRET_KEY"));
    drop_schema(&url, &cfg.schema).await;
}

#[tokio::test]
async fn postgres_audit_rows_cannot_be_edited_even_with_sql() {
    let Some(url) = pg_url() else { return };
    let cfg = pg_config(&url);
    let store = PostgresStore::connect(&cfg, &SecretKey::generate())
        .await
        .unwrap();
    store
        .append_audit(&stepgate_store::NewAuditEvent::now("login.success"))
        .await
        .unwrap();
    store.close().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let upd = sqlx::raw_sql(&format!(
        "UPDATE \"{}\".audit_events SET kind = 'x'",
        cfg.schema
    ))
    .execute(&pool)
    .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::raw_sql(&format!("DELETE FROM \"{}\".audit_events", cfg.schema))
        .execute(&pool)
        .await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
    pool.close().await;
    drop_schema(&url, &cfg.schema).await;
}

#[tokio::test]
async fn open_stores_uses_postgres_and_redis_when_configured() {
    let (Some(pg), Some(rd)) = (pg_url(), redis_url()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        postgres: Some(pg_config(&pg)),
        redis: Some(redis_config(&rd)),
        ..StoreConfig::default()
    };
    let stores = open_stores(&cfg, dir.path(), &SecretKey::generate())
        .await
        .unwrap();
    let u = stepgate_store::UserRecord::new("multi");
    stores.durable.create_user(&u).await.unwrap();
    assert!(stores
        .hot
        .remember_once("k", std::time::Duration::from_secs(5))
        .await
        .unwrap());
    assert!(
        !dir.path().join("stepgate.db").exists(),
        "no SQLite file when both are remote"
    );
    drop_schema(&pg, &cfg.postgres.as_ref().unwrap().schema).await;
    drop_keys(&rd, &cfg.redis.as_ref().unwrap().key_prefix).await;
}

/// Nodes of a rolling start connect to a fresh database at once: each migration is applied
/// once (under the advisory lock) and every node opens; a node from an older build meets a
/// schema newer than it knows and refuses to start instead of writing into it.
#[tokio::test]
async fn nodes_starting_together_migrate_once_and_an_older_build_refuses_a_newer_schema() {
    let Some(url) = pg_url() else { return };
    let cfg = pg_config(&url);
    let key = SecretKey::generate();
    let opened =
        futures_util::future::join_all((0..4).map(|_| PostgresStore::connect(&cfg, &key))).await;
    for store in opened {
        store.expect("every node opens").close().await;
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = format!("\"{}\".stepgate_migrations", cfg.schema);
    let applied: Vec<i64> =
        sqlx::query_scalar(&format!("SELECT version FROM {table} ORDER BY version"))
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut once = applied.clone();
    once.dedup();
    assert_eq!(applied, once, "each migration recorded once");
    assert_eq!(applied.first(), Some(&1));

    sqlx::query(&format!(
        "INSERT INTO {table} (version, name, checksum, applied_at) VALUES (999, 'future', 'x', 0)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let err = PostgresStore::connect(&cfg, &key).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err:?}"
    );
    pool.close().await;
    drop_schema(&url, &cfg.schema).await;
}

/// `store.redis.password_file` / `password_env`: a Redis of the test's own that wants a
/// password (`requirepass`, on a free port) is used with the password from a file or a
/// variable, never written in the URL; without it the store is not opened; the URL and
/// a password source at once, or both sources, are refused before connecting.
#[tokio::test]
async fn redis_takes_its_password_from_a_file_or_an_environment_variable() {
    use stepgate_store::HotStore;
    let Some(_) = redis_url() else { return };
    let Ok(server) = which_redis_server() else {
        skipped::record("Redis with a password", "redis-server is not installed");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let password = format!("pw-{}", new_id());
    let mut child = std::process::Command::new(server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--requirepass",
            &password,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis.password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let with_file = RedisConfig {
        password_file: Some(file.clone()),
        ..redis_config(&url)
    };
    let store = RedisStore::connect(&with_file)
        .await
        .expect("the file's password is used");
    assert_eq!(
        store
            .incr_counter("password-file", std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
    let var = format!("STEPGATE_TEST_REDIS_PASSWORD_{}", std::process::id());
    std::env::set_var(&var, &password);
    let with_env = RedisConfig {
        password_env: Some(var.clone()),
        ..redis_config(&url)
    };
    let store = RedisStore::connect(&with_env)
        .await
        .expect("the variable's password is used");
    assert_eq!(
        store
            .incr_counter("password-env", std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
    // No password: Redis refuses, so the store is not usable.
    let none = redis_config(&url);
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        match RedisStore::connect(&none).await {
            Err(e) => Err(e.to_string()),
            Ok(s) => s
                .incr_counter("no-password", std::time::Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string()),
        }
    })
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a Redis that wants a password was used without one"
    );
    // Both sources, or a password in the URL as well: refused before connecting.
    let both = StoreConfig {
        redis: Some(RedisConfig {
            password_env: Some(var),
            password_file: Some(file),
            ..redis_config(&url)
        }),
        ..StoreConfig::default()
    };
    let e = both.validate().unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
    let twice = StoreConfig {
        redis: Some(RedisConfig {
            password_env: Some("X".into()),
            ..redis_config(&format!("redis://:{password}@127.0.0.1:{port}"))
        }),
        ..StoreConfig::default()
    };
    let e = twice.validate().unwrap_err().to_string();
    assert!(
        e.contains("keep it in one place") && !e.contains(&password),
        "{e}"
    );
    let missing = RedisConfig {
        password_file: Some(dir.path().join("absent")),
        ..redis_config(&url)
    };
    let e = RedisStore::connect(&missing)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("password_file`: cannot read"), "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn which_redis_server() -> Result<std::path::PathBuf, ()> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(())
}
