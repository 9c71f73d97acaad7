//! Redis Sentinel (`store.redis.url: redis+sentinel://…`): the hot store passes the
//! conformance suite through a sentinel, and follows the primary when it fails over — the
//! data the replica had survives, commands fail (never succeed wrongly) while there is no
//! primary, and work again on the new one without a restart. The change feed follows too.
//!
//! The test starts its own Redis primary, replica and sentinel (`redis-server`, Debian's
//! `redis-server` package) on free ports, so that killing the primary touches nothing else.
//! Without `redis-server` it is skipped with a note (counted in the run's "skipped:" line),
//! unless `CI` or `STEPGATE_REQUIRE_REDIS_SERVER` is set, when it fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate_store::changes::{Change, ChangeFeed, Heard};
use stepgate_store::conformance;
use stepgate_store::{HotStore, RedisConfig, RedisStore};

mod procs;
#[path = "../../../tests/support/skipped.rs"]
mod skipped;

use procs::{free_port, start, Proc};

fn redis_server() -> Option<String> {
    let found = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(String::from);
    if found.is_none() {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("STEPGATE_REQUIRE_REDIS_SERVER").is_some();
        assert!(
            !required,
            "redis-server is required (apt-get install redis-server)"
        );
        skipped::record("redis-server", "apt-get install redis-server");
    }
    found
}

/// A primary or replica on `port`, writing what replication needs to `dir`.
fn data_node(bin: &str, dir: &std::path::Path, port: u16, replica_of: Option<u16>) -> Proc {
    let port = port.to_string();
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "--dir",
        dir,
        "--dbfilename",
        &port,
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    let primary = replica_of.map(|p| p.to_string());
    if let Some(p) = &primary {
        args.extend(["--replicaof", "127.0.0.1", p]);
    }
    start(bin, &args)
}

async fn ask(port: u16, cmd: &mut redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut c = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut c).await
}

async fn until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let began = Instant::now();
    while !check().await {
        assert!(began.elapsed() < within, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn the_hot_store_follows_the_primary_through_a_sentinel_failover() {
    let Some(bin) = redis_server() else { return };
    let (p, r, s) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut primary = data_node(&bin, dir.path(), p, None);
    let _replica = data_node(&bin, dir.path(), r, Some(p));
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {s}\nbind 127.0.0.1\nsentinel monitor main 127.0.0.1 {p} 1\n\
             sentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 4000\n"
        ),
    )
    .unwrap();
    let _sentinel = start(&bin, &[conf.to_str().unwrap(), "--sentinel"]);
    until(
        "the replica follows the primary",
        Duration::from_secs(20),
        async || {
            ask(r, redis::cmd("INFO").arg("replication"))
                .await
                .is_ok_and(|v| text(&v).contains("master_link_status:up"))
        },
    )
    .await;
    until(
        "the sentinel knows the replica",
        Duration::from_secs(20),
        async || {
            ask(s, redis::cmd("SENTINEL").arg("replicas").arg("main"))
                .await
                .is_ok_and(|v| matches!(v, redis::Value::Array(a) if !a.is_empty()))
        },
    )
    .await;

    let config = RedisConfig {
        key_prefix: "sentinel-test:".into(),
        ..RedisConfig::new(format!("redis+sentinel://127.0.0.1:{s}/main"))
    };
    let store = RedisStore::connect(&config)
        .await
        .expect("connect through the sentinel");
    conformance::hot_suite(Arc::new(store.clone()), conformance::Expiry::Real).await;

    // A change feed through the sentinel, and a subscriber, as a node has.
    let feed = ChangeFeed::connect(&config).await.unwrap();
    let other = ChangeFeed::connect(&config).await.unwrap();
    let mut heard = other.subscribe().await.unwrap();

    assert!(store
        .remember_once("before", Duration::from_secs(600))
        .await
        .unwrap());
    ask(p, redis::cmd("WAIT").arg(1).arg(5000))
        .await
        .expect("replicated");

    primary.kill();
    // Until the sentinel promotes the replica, a command fails: never a wrong answer.
    let began = Instant::now();
    let mut failures = 0;
    loop {
        match store
            .remember_once("before", Duration::from_secs(600))
            .await
        {
            Ok(first) => {
                assert!(
                    !first,
                    "the key written before the failover is on the new primary"
                );
                break;
            }
            Err(_) => failures += 1,
        }
        assert!(
            began.elapsed() < Duration::from_secs(40),
            "the store did not follow the failover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        failures > 0,
        "the primary was gone for a while, and commands said so"
    );
    assert!(
        store
            .remember_once("after", Duration::from_secs(600))
            .await
            .unwrap(),
        "the new primary takes writes"
    );
    let now = ask(
        s,
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("main"),
    )
    .await
    .unwrap();
    assert!(
        format!("{now:?}").contains(&r.to_string()),
        "the replica was promoted: {now:?}"
    );

    // The subscription on the old primary is lost, and says so (the node then stops
    // trusting its cache); a new one, on the new primary, hears what the feed publishes.
    let lost = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if heard.next().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(lost.is_ok(), "the old subscription reported its loss");
    let mut again = loop {
        match other.subscribe().await {
            Ok(h) => break h,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    feed.publish(&Change::User("u1".into())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match again.next().await {
                Ok(Heard::Change(c)) => return c,
                Ok(Heard::Quiet) => continue,
                Err(e) => panic!("the new subscription failed: {e}"),
            }
        }
    })
    .await
    .expect("heard within 5 s");
    assert_eq!(got, Change::User("u1".into()));
}
