//! Redis Cluster (`store.redis.url: redis+cluster://…`): the hot store passes the
//! conformance suite through a cluster of three primaries; one user's sessions, spread over
//! the slots of every primary, are listed and signed out everywhere; the change feed is
//! heard on a node other than the one a change is published on; and when a primary with no
//! replica dies, commands on its data fail — never a wrong answer, never a partial "sign
//! out everywhere" reported as done.
//!
//! The test starts its own three `redis-server --cluster-enabled yes` on free ports and
//! joins them with `redis-cli --cluster create` (Debian's `redis-server` and `redis-tools`).
//! Without them it is skipped with a note (counted in the run's "skipped:" line), unless
//! `CI` or `STEPGATE_REQUIRE_REDIS_SERVER` is set, when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stepgate_store::changes::{Change, ChangeFeed, Heard};
use stepgate_store::conformance;
use stepgate_store::{HotStore, RedisConfig, RedisStore};

mod procs;
#[path = "../../../tests/support/skipped.rs"]
mod skipped;

use procs::{free_port, start, Proc};

/// `redis-server` and `redis-cli`, when both are installed.
fn redis_programs() -> Option<(String, String)> {
    let find = |name: &str| {
        ["/usr/bin/", "/usr/local/bin/"]
            .into_iter()
            .map(|d| format!("{d}{name}"))
            .find(|p| std::path::Path::new(p).exists())
    };
    let found = find("redis-server").zip(find("redis-cli"));
    if found.is_none() {
        let required = std::env::var_os("CI").is_some()
            || std::env::var_os("STEPGATE_REQUIRE_REDIS_SERVER").is_some();
        assert!(
            !required,
            "redis-server and redis-cli are required (apt-get install redis-server redis-tools)"
        );
        skipped::record(
            "redis-server and redis-cli",
            "apt-get install redis-server redis-tools",
        );
    }
    found
}

/// A cluster-enabled node on `port`, keeping its cluster state in `dir`.
fn cluster_node(bin: &str, dir: &std::path::Path, port: u16) -> Proc {
    let p = port.to_string();
    let conf = format!("nodes-{port}.conf");
    start(
        bin,
        &[
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--dir",
            dir.to_str().unwrap(),
            "--dbfilename",
            &format!("{port}.rdb"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-node-timeout",
            "1000",
        ],
    )
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
        redis::Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

/// Which of `ports` serves `key`: the one node that does not answer `MOVED`.
async fn owner(ports: &[u16], key: &str) -> u16 {
    let mut owners = Vec::new();
    for &p in ports {
        if ask(p, redis::cmd("EXISTS").arg(key)).await.is_ok() {
            owners.push(p);
        }
    }
    assert_eq!(owners.len(), 1, "exactly one primary serves {key}");
    owners[0]
}

/// Three primaries (no replicas) joined into one cluster covering every slot.
async fn start_cluster(server: &str, cli: &str, dir: &std::path::Path) -> (Vec<u16>, Vec<Proc>) {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let procs: Vec<Proc> = ports
        .iter()
        .map(|&p| cluster_node(server, dir, p))
        .collect();
    for &p in &ports {
        until("a node answers", Duration::from_secs(20), async || {
            ask(p, &mut redis::cmd("PING")).await.is_ok()
        })
        .await;
    }
    let mut create = Command::new(cli);
    create.args(["--cluster", "create"]);
    for p in &ports {
        create.arg(format!("127.0.0.1:{p}"));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for &p in &ports {
        until("the cluster is up", Duration::from_secs(30), async || {
            ask(p, redis::cmd("CLUSTER").arg("INFO"))
                .await
                .is_ok_and(|v| text(&v).contains("cluster_state:ok"))
        })
        .await;
    }
    (ports, procs)
}

#[tokio::test]
async fn the_hot_store_and_the_change_feed_work_on_redis_cluster_and_fail_closed() {
    let Some((server, cli)) = redis_programs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ports, mut procs) = start_cluster(&server, &cli, dir.path()).await;
    let prefix = "cluster-test:";
    // Two of the three nodes named: the client finds the third from the slot map.
    let config = RedisConfig {
        key_prefix: prefix.into(),
        ..RedisConfig::new(format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            ports[0], ports[1]
        ))
    };
    let store = RedisStore::connect(&config)
        .await
        .expect("connect to the cluster");
    conformance::hot_suite(Arc::new(store.clone()), conformance::Expiry::Real).await;

    // One user's many sessions land on every primary; the user's index is on one of them.
    let user = "spread-user";
    let mut ids: Vec<String> = (0..60).map(|i| format!("spread-{i:02}")).collect();
    for id in &ids {
        store
            .put_session(id, user, &json!({"n": id}), Duration::from_secs(600))
            .await
            .unwrap();
    }
    let mut by_node: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for id in &ids {
        let node = owner(&ports, &format!("{prefix}sess:{id}")).await;
        by_node.entry(node).or_default().push(id.clone());
    }
    assert_eq!(
        by_node.len(),
        3,
        "the sessions are spread over all three primaries: {by_node:?}"
    );
    ids.sort();
    assert_eq!(store.list_sessions_for_user(user).await.unwrap(), ids);
    assert!(store.delete_session(&ids[0]).await.unwrap());
    assert!(store
        .update_session(&ids[1], &json!({"aal": 2}), Duration::from_secs(900))
        .await
        .unwrap());
    assert_eq!(
        store.list_sessions_for_user(user).await.unwrap(),
        ids[1..].to_vec()
    );
    assert_eq!(
        store.delete_sessions_for_user(user).await.unwrap(),
        (ids.len() - 1) as u64
    );
    for id in &ids {
        assert!(store.get_session(id).await.unwrap().is_none(), "{id}");
    }
    assert!(store.list_sessions_for_user(user).await.unwrap().is_empty());

    // "Sign out everywhere" racing new sessions: whatever survives is listed (so a later
    // sign-out-everywhere ends it), and nothing the race ended comes back.
    let racer = "racing-user";
    let puts = (0..120).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let id = format!("race-{i:03}");
            store
                .put_session(&id, racer, &json!({}), Duration::from_secs(600))
                .await
                .unwrap();
            id
        })
    });
    let puts: Vec<_> = puts.collect();
    for _ in 0..6 {
        store.delete_sessions_for_user(racer).await.unwrap();
        tokio::task::yield_now().await;
    }
    let mut raced = Vec::new();
    for p in puts {
        raced.push(p.await.unwrap());
    }
    let listed = store.list_sessions_for_user(racer).await.unwrap();
    for id in &raced {
        if store.get_session(id).await.unwrap().is_some() {
            assert!(listed.contains(id), "{id} survived the race unlisted");
        }
    }
    store.delete_sessions_for_user(racer).await.unwrap();
    for id in &raced {
        assert!(store.get_session(id).await.unwrap().is_none(), "{id}");
    }

    // A change published on one node is heard by a subscriber on another: the subscriber
    // starts from a node that does not serve the channel's slot (where PUBLISH goes).
    let channel_node = owner(&ports, &format!("{prefix}changes")).await;
    let elsewhere = *ports.iter().find(|&&p| p != channel_node).unwrap();
    let subscriber_config = RedisConfig {
        key_prefix: prefix.into(),
        ..RedisConfig::new(format!("redis+cluster://127.0.0.1:{elsewhere}"))
    };
    let feed = ChangeFeed::connect(&config).await.unwrap();
    let other = ChangeFeed::connect(&subscriber_config).await.unwrap();
    let mut heard = other.subscribe().await.unwrap();
    feed.publish(&Change::SessionsOfUser(user.into()))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match heard.next().await {
                Ok(Heard::Change(c)) => return c,
                Ok(Heard::Quiet) => continue,
                Err(e) => panic!("the subscription failed: {e}"),
            }
        }
    })
    .await
    .expect("heard within 5 s");
    assert_eq!(got, Change::SessionsOfUser(user.into()));

    // A primary with no replica dies. Keys it served must fail, never answer as if absent:
    // a used one-time key must not read as unused, a session must not read as unknown, and
    // "sign out everywhere" over sessions on every node must not report success.
    let victim_user = "victim-user";
    let mut sessions = Vec::new();
    for i in 0..30 {
        let id = format!("victim-{i:02}");
        store
            .put_session(&id, victim_user, &json!({}), Duration::from_secs(600))
            .await
            .unwrap();
        sessions.push(id);
    }
    let once_keys: Vec<String> = (0..30).map(|i| format!("used-{i}")).collect();
    for k in &once_keys {
        assert!(store
            .remember_once(k, Duration::from_secs(600))
            .await
            .unwrap());
    }
    // The victim serves the change channel's slot (where `PUBLISH` is routed first).
    let victim = channel_node;
    let mut on_victim_sessions = Vec::new();
    for id in &sessions {
        if owner(&ports, &format!("{prefix}sess:{id}")).await == victim {
            on_victim_sessions.push(id.clone());
        }
    }
    assert!(
        !on_victim_sessions.is_empty(),
        "some sessions live on the victim"
    );
    let mut listening = other.subscribe().await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), listening.next())
                .await
                .expect("a health check within 5 s")
                .expect("the third check needs the first probe back"),
            Heard::Quiet,
            "the probes come back while the cluster is whole"
        );
    }
    let mut on_victim = BTreeSet::new();
    for k in &once_keys {
        if owner(&ports, &format!("{prefix}once:{k}")).await == victim {
            on_victim.insert(k.clone());
        }
    }
    assert!(!on_victim.is_empty(), "some used keys live on the victim");
    let i = ports.iter().position(|&p| p == victim).unwrap();
    procs[i].kill();

    let began = Instant::now();
    let mut failures = 0;
    while began.elapsed() < Duration::from_secs(6) {
        for k in &on_victim {
            match store.remember_once(k, Duration::from_secs(600)).await {
                Ok(true) => panic!("{k}, used before the primary died, read as unused"),
                Ok(false) => panic!("{k} answered from a dead primary"),
                Err(_) => failures += 1,
            }
        }
        match store.get_session(&on_victim_sessions[0]).await {
            Ok(None) => panic!("a session on the dead primary read as unknown"),
            Ok(Some(_)) => panic!("a session answered from a dead primary"),
            Err(_) => failures += 1,
        }
        assert!(
            store.delete_sessions_for_user(victim_user).await.is_err(),
            "sign out everywhere cannot be complete with a primary gone"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(failures > 0);
    // Announcements still flow: a `PUBLISH` names no key, so a surviving node takes it
    // and the cluster bus carries it to the subscription on another survivor, whose own
    // probes keep coming back.
    feed.publish(&Change::User("after-the-death".into()))
        .await
        .expect("a change is published while a primary is down");
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match listening.next().await {
                Ok(Heard::Change(c)) => return c,
                Ok(Heard::Quiet) => continue,
                Err(e) => panic!("the subscription on a survivor failed: {e}"),
            }
        }
    })
    .await
    .expect("heard within 10 s");
    assert_eq!(got, Change::User("after-the-death".into()));
    // The surviving primaries see the cluster as down once they notice (no replica can take
    // over the dead one's slots), and refuse even the keys they serve.
    let survivor = *ports.iter().find(|&&p| p != victim).unwrap();
    until(
        "the cluster reports itself down",
        Duration::from_secs(20),
        async || {
            ask(survivor, redis::cmd("CLUSTER").arg("INFO"))
                .await
                .is_ok_and(|v| text(&v).contains("cluster_state:fail"))
        },
    )
    .await;
    for k in ["fresh-a", "fresh-b", "fresh-c", "fresh-d"] {
        assert!(
            store
                .remember_once(k, Duration::from_secs(600))
                .await
                .is_err(),
            "a cluster that is down takes no writes ({k})"
        );
    }
}
