//! Several stepgate nodes on one PostgreSQL and one Redis, each with its own read cache
//! (`sessions.cache_ttl: 10m`, so that only the change feed, never the TTL, can explain a
//! change seen elsewhere): what a user or an admin does on one node holds on every node on
//! the very next request, and losing Redis refuses requests instead of serving them from a
//! cache that can no longer hear about changes.
//!
//! Each node is a whole stepgate (its own state, caches, listener and subscription) in this
//! test's process. The tests run when `STEPGATE_TEST_POSTGRES_URL` and
//! `STEPGATE_TEST_REDIS_URL` are set (`.ci/run` sets both); each uses its own PostgreSQL
//! schema and Redis key prefix. The fault test starts a Redis of its own (`redis-server`)
//! on a free port, so that stopping it touches nothing else.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepgate_store::{new_id, ChangeFeed, PostgresConfig, RedisConfig, SecretKey};
use support::{client, password, redirects, skipped, upstream, user, Browser, Page, Server, JANE};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
    routes:
      - { name: admin, path: /admin, tags: [admin] }
sessions:
  cookie: { secure: false }
  cache_ttl: 10m
regulation:
  max_retries: 3
  ip_max_retries: 50
default_outcome: allow
policies:
  - name: admin-needs-mfa
    priority: 10
    targets: { routes: [{ tags: [admin] }] }
    outcome: { step_up: { min_aal: 2 } }
  - name: sign-in-with-a-password
    priority: 30
    targets: { sign_in: true }
    outcome: allow
"#;

/// The shared backends of one test: its own schema and key prefix.
struct Backends {
    pg: PostgresConfig,
    redis: RedisConfig,
    key: SecretKey,
}

fn backends(redis_url: Option<&str>) -> Option<Backends> {
    let pg = std::env::var("STEPGATE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let redis = std::env::var("STEPGATE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let (Some(pg), Some(redis)) = (pg, redis) else {
        skipped::record(
            "PostgreSQL and Redis",
            "set STEPGATE_TEST_POSTGRES_URL and STEPGATE_TEST_REDIS_URL",
        );
        return None;
    };
    let run = &new_id()[..12];
    Some(Backends {
        pg: PostgresConfig {
            schema: format!("stepgate_nodes_{run}"),
            ..PostgresConfig::new(pg)
        },
        redis: RedisConfig {
            key_prefix: format!("stepgate-nodes-{run}:"),
            ..RedisConfig::new(redis_url.map(str::to_string).unwrap_or(redis))
        },
        key: SecretKey::generate(),
    })
}

/// A node of the deployment `b`.
async fn node(b: &Backends, upstream: std::net::SocketAddr) -> Server {
    let (pg, redis) = (b.pg.clone(), b.redis.clone());
    let node = Server::build(CONFIG)
        .with("UPSTREAM", upstream)
        .key(b.key.clone())
        .configure(move |c| {
            c.store.postgres = Some(pg);
            c.store.redis = Some(redis);
        })
        .demo_users()
        .start()
        .await;
    wait_until("the node listens to the others", || node.st.cache.in_use()).await;
    node
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `path` on the app, through `node`.
fn app(node: &Server, path: &str) -> String {
    node.url("app.test", path)
}

/// The answer of `node` to a GET of `path` with session `id`, no redirects followed: the
/// status, and where it sends the browser if anywhere.
async fn answer(node: &Server, id: &str, path: &str) -> (u16, String) {
    let r = client()
        .redirect(redirects(false))
        .build()
        .unwrap()
        .get(app(node, path))
        .header("cookie", format!("stepgate_session={id}"))
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), location)
}

async fn assert_allowed(node: &Server, id: &str, path: &str, why: &str) {
    assert_eq!(answer(node, id, path).await, (200, String::new()), "{why}");
}

async fn assert_sent_to_sign_in(node: &Server, id: &str, why: &str) {
    let (status, location) = answer(node, id, "/").await;
    assert_eq!(status, 303, "{why}: {location}");
    assert!(
        location.contains("/_stepgate/login?t="),
        "{why}: {location}"
    );
}

/// Signs jane in with her password through `node` in a new browser; the browser and the
/// session id.
async fn signed_in(node: &Server) -> (Browser, String) {
    let b = Browser::new();
    let r = password(&b, &app(node, "/"), &JANE).await;
    assert_eq!(r.status(), 200, "signed in and back at the app");
    let id = b.session_id(&app(node, "/")).expect("the session cookie");
    (b, id)
}

async fn drop_backends(b: &Backends) {
    let pool = sqlx::PgPool::connect(&b.pg.url).await.unwrap();
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        b.pg.schema
    ))
    .execute(&pool)
    .await
    .unwrap();
    let mut conn = redis::Client::open(b.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", b.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn what_one_node_does_holds_on_every_node_on_the_next_request() {
    let Some(b) = backends(None) else { return };
    let up = upstream::text("upstream").await;
    let (a, bee, c) = (node(&b, up).await, node(&b, up).await, node(&b, up).await);
    let nodes = [&a, &bee, &c];
    // One configuration, one version on every node; each listening to the others.
    let mut versions = Vec::new();
    for n in nodes {
        let details: serde_json::Value = reqwest::get(n.at("/readyz?details"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(details["cache"]["in_use"], true, "{details}");
        versions.push(details["config_version"].as_str().unwrap().to_string());
    }
    assert!(versions[0].starts_with("sha256:"), "{versions:?}");
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");

    // A sign-in on A is honoured on B and C, and cached there.
    let (browser, first) = signed_in(&a).await;
    for n in nodes {
        assert_allowed(n, &first, "/", "signed in on A").await;
        assert_allowed(n, &first, "/", "from the cache").await;
    }
    let (status, location) = answer(&a, &first, "/admin").await;
    assert_eq!(status, 303, "the admin route needs MFA");
    assert!(location.contains("/step-up"), "{location}");

    // A step-up on B counts on A; the id it replaced is refused on A and C, which had it
    // cached.
    let r = browser.get(app(&bee, "/admin")).send().await.unwrap();
    assert!(r.url().path().ends_with("/step-up"), "{}", r.url());
    let r = Page::read(r)
        .await
        .submit_code(&browser, &JANE.code(0))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/admin", "stepped up on B and back");
    let stepped = browser.session_id(&app(&a, "/")).unwrap();
    assert_ne!(stepped, first, "a step-up rotates the id");
    assert_sent_to_sign_in(&a, &first, "the replaced id, on A").await;
    assert_sent_to_sign_in(&c, &first, "the replaced id, on C").await;
    assert_allowed(&a, &stepped, "/admin", "the step-up made on B, on A").await;
    assert_allowed(&c, &stepped, "/admin", "the step-up made on B, on C").await;

    // A sign-out on C ends the session on A and B, which had it cached.
    assert_allowed(&bee, &stepped, "/", "cached on B").await;
    let r = client()
        .redirect(redirects(false))
        .build()
        .unwrap()
        .post(app(&c, "/_stepgate/logout"))
        .header("cookie", format!("stepgate_session={stepped}"))
        .form(&[("csrf", c.st.signer.csrf_token(&stepped))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed out on C");
    assert_sent_to_sign_in(&a, &stepped, "signed out on C, on A").await;
    assert_sent_to_sign_in(&bee, &stepped, "signed out on C, on B").await;

    // "Sign out everywhere" on B ends every session of jane's on A and C.
    let (_, x) = signed_in(&a).await;
    let (_, y) = signed_in(&c).await;
    for n in [&a, &c] {
        assert_allowed(n, &x, "/", "cached").await;
        assert_allowed(n, &y, "/", "cached").await;
    }
    let jane = user(&bee.st, "jane").await;
    bee.st.sessions.end_all(&jane.id).await.unwrap();
    for n in [&a, &c] {
        assert_sent_to_sign_in(n, &x, "signed out everywhere on B").await;
        assert_sent_to_sign_in(n, &y, "signed out everywhere on B").await;
    }

    // Failed passwords on A lock the account on B and C too (the counters live in Redis).
    let wrong = support::Person {
        password: "not-her-password",
        ..JANE
    };
    for _ in 0..3 {
        let r = password(&Browser::new(), &app(&a, "/"), &wrong).await;
        assert_ne!(r.status(), 200, "a wrong password is refused");
    }
    for n in [&bee, &c] {
        let r = password(&Browser::new(), &app(n, "/"), &JANE).await;
        assert_eq!(r.status(), 429, "locked on every node");
    }
    a.st.authn.unlock(&jane, "test").await.unwrap();

    // An admin disabling jane from the command line (its own store handles, no server)
    // ends her sessions on every node at once.
    let (_, z) = signed_in(&bee).await;
    for n in nodes {
        assert_allowed(n, &z, "/", "cached").await;
    }
    let cli = stepgate_store::open_stores(
        &a.st.runtime.load().config.store,
        &a.dir.path().join("data"),
        &b.key,
    )
    .await
    .unwrap();
    let (cli, announcer) = stepgate_server::session::cache::wrap(cli, Duration::ZERO);
    announcer.announce(Arc::new(ChangeFeed::connect(&b.redis).await.unwrap()));
    let mut disabled = jane.clone();
    disabled.disabled = true;
    cli.durable.update_user(&disabled).await.unwrap();
    for n in nodes {
        assert_sent_to_sign_in(n, &z, "jane disabled by the CLI").await;
    }

    drop_backends(&b).await;
}

/// A Redis of the test's own on a free port, stopped when dropped.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> Option<OwnRedis> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(OwnRedis { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn losing_redis_refuses_requests_and_the_nodes_recover_without_a_restart() {
    if std::env::var("STEPGATE_TEST_POSTGRES_URL").is_err() {
        skipped::record("PostgreSQL", "set STEPGATE_TEST_POSTGRES_URL");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(mut redis) = OwnRedis::start(port) else {
        skipped::record("redis-server", "install Debian's redis-server");
        return;
    };
    let Some(b) = backends(Some(&redis.url())) else {
        return;
    };
    let up = upstream::text("upstream").await;
    let (a, bee) = (node(&b, up).await, node(&b, up).await);
    let (_, id) = signed_in(&a).await;
    assert_allowed(&bee, &id, "/", "signed in on A, cached on B").await;

    // A visitor has the sign-in page open when Redis goes.
    let visitor = Browser::not_following();
    let login_page = Page::open(&visitor, &app(&a, "/")).await;
    assert!(
        login_page.url.path().ends_with("/login"),
        "{}",
        login_page.url
    );

    redis.stop();
    // The subscription's loss is noticed at once when the connection closes (within the
    // health check's 3 s when it goes silent instead); from then on nothing is served from
    // the cache.
    wait_until("B stops using its cache", || !bee.st.cache.in_use()).await;
    wait_until("A stops using its cache", || !a.st.cache.in_use()).await;
    for n in [&a, &bee] {
        let (status, _) = answer(n, &id, "/").await;
        assert_eq!(
            status, 503,
            "hot state unreachable: refused, never let through"
        );
    }
    // Refused, and soon: without timeouts on the Redis connection this answer once took
    // 15 minutes (TCP giving up), holding the visitor and a worker all along.
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        login_page.submit(
            &visitor,
            "/_stepgate/login",
            &[("username", JANE.username), ("password", JANE.password)],
        ),
    )
    .await
    .expect("a sign-in while Redis is down is refused, not left hanging");
    assert_eq!(
        r.status(),
        503,
        "no sign-in while Redis is down, and not a wrong password"
    );

    // Back (empty: this Redis keeps nothing on disk), the nodes recover by themselves: the
    // session is gone (sign in again), and a new sign-in on A holds on B.
    let _redis = OwnRedis::start(port).expect("Redis restarts on its port");
    wait_until("B listens again", || bee.st.cache.in_use()).await;
    wait_until("A listens again", || a.st.cache.in_use()).await;
    let start = Instant::now();
    loop {
        let (status, _) = answer(&a, &id, "/").await;
        if status == 303 {
            break;
        }
        assert_eq!(status, 503, "only refusals while the store reconnects");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "A did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let began = Instant::now();
    while answer(&bee, &id, "/").await.0 == 503 {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "B did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_sent_to_sign_in(&bee, &id, "the session lived only in the lost Redis").await;
    let (_, again) = signed_in(&a).await;
    assert_allowed(&bee, &again, "/", "a new sign-in on A, on B").await;

    drop_backends(&b).await;
}

/// A TCP relay to PostgreSQL that the test can cut (every connection closed, new ones
/// refused) and restore on the same port: the network between a node and its database
/// failing, with the real server behind it.
struct Relay {
    port: u16,
    target: std::net::SocketAddr,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Relay {
            port,
            target,
            running: None,
        };
        r.restore().await;
        r
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let target = self.target;
        self.running = Some(tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                pipes.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
            // Aborting this task drops the listener and every pipe with it.
        }));
    }

    fn cut(&mut self) {
        if let Some(t) = self.running.take() {
            t.abort();
        }
    }
}

#[tokio::test]
async fn losing_postgres_refuses_or_answers_from_recent_records_as_configured() {
    let Some(b) = backends(None) else { return };
    let mut through_relay = reqwest::Url::parse(&b.pg.url).unwrap();
    let host = through_relay.host_str().unwrap().to_string();
    let port = through_relay.port().unwrap_or(5432);
    let target: std::net::SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let mut relay = Relay::start(target).await;
    through_relay.set_host(Some("127.0.0.1")).unwrap();
    through_relay.set_port(Some(relay.port)).unwrap();
    let through_relay = through_relay.to_string();
    let up = upstream::text("upstream").await;
    let start = |mode: &'static str| {
        let (mut pgc, redis, key) = (b.pg.clone(), b.redis.clone(), b.key.clone());
        pgc.url = through_relay.clone();
        pgc.connect_timeout = stepgate_policy::HumanDuration::from_secs(2);
        if mode == "cached" {
            pgc.fail_mode = stepgate_store::FailMode::Cached;
            pgc.cached_for = stepgate_policy::HumanDuration::from_secs(30 * 60);
        }
        Server::build(CONFIG)
            .with("UPSTREAM", up)
            .key(key)
            .configure(move |c| {
                c.store.postgres = Some(pgc);
                c.store.redis = Some(redis);
                // Every allowed request in the decision log, to count what waited.
                c.log.decisions.allowed_one_in = 1;
            })
            .demo_users()
            .start()
    };
    let closed = start("closed").await;
    let cached = start("cached").await;
    for n in [&closed, &cached] {
        wait_until("listening", || n.st.cache.in_use()).await;
    }
    let (_, id) = signed_in(&closed).await;
    let (_, other) = signed_in(&closed).await;
    for n in [&closed, &cached] {
        assert_allowed(n, &id, "/", "signed in, records cached").await;
    }
    assert_allowed(&cached, &other, "/", "the second session, cached").await;
    let log = cached.st.access.decision_log().expect("the decision log");
    log.flush().await;

    relay.cut();
    let cut_at = chrono::Utc::now();
    // The cached records outlive their TTL (10 min): each node must read the store again.
    for n in [&closed, &cached] {
        n.st.cache.advance_clock(Duration::from_secs(11 * 60));
    }
    let (status, _) = answer(&closed, &id, "/").await;
    assert_eq!(
        status, 503,
        "fail_mode closed: refused while PostgreSQL is unreachable"
    );
    assert_allowed(
        &cached,
        &id,
        "/",
        "fail_mode cached: a record read 11 min ago answers",
    )
    .await;
    for _ in 0..3 {
        assert_allowed(&cached, &id, "/", "answered from cached records").await;
    }
    // A sign-out happens without the durable store (sessions live in Redis); its audit
    // event waits for PostgreSQL instead of being lost.
    let r = client()
        .redirect(redirects(false))
        .build()
        .unwrap()
        .post(app(&cached, "/_stepgate/logout"))
        .header("cookie", format!("stepgate_session={other}"))
        .form(&[("csrf", cached.st.signer.csrf_token(&other))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed out while PostgreSQL is down");
    assert_eq!(
        cached.st.audit.waiting(),
        1,
        "the sign-out's audit event waits"
    );
    log.flush().await;
    assert_eq!(
        log.stats().waiting.get(),
        4,
        "the four allowed requests' decisions wait in memory"
    );
    let r = password(&Browser::new(), &app(&cached, "/"), &JANE).await;
    assert_eq!(
        r.status(),
        503,
        "no sign-in without the durable store, and not a wrong password"
    );
    cached.st.cache.advance_clock(Duration::from_secs(30 * 60));
    let (status, _) = answer(&cached, &id, "/").await;
    assert_eq!(status, 503, "past cached_for, refused too");

    // Back: both nodes recover through their pools, without a restart.
    relay.restore().await;
    let restored_at = chrono::Utc::now();
    for n in [&closed, &cached] {
        let began = Instant::now();
        loop {
            let (status, _) = answer(n, &id, "/").await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "only refusals while the pool reconnects");
            assert!(began.elapsed() < Duration::from_secs(30), "did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (_, again) = signed_in(&cached).await;
    assert_allowed(&closed, &again, "/", "sign-in works again").await;

    // What waited is written, in full, with the time it happened.
    let began = Instant::now();
    while cached.st.audit.waiting() > 0 || log.stats().waiting.get() > 0 {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "what waited was not written"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = |e: chrono::DateTime<chrono::Utc>| e >= cut_at && e < restored_at;
    let signouts: Vec<_> = support::audit(&cached.st, Some("signout"))
        .await
        .into_iter()
        .filter(|e| during(e.time))
        .collect();
    assert_eq!(signouts.len(), 1, "the sign-out is in the audit log");
    assert_eq!(signouts[0].detail["everywhere"], false);
    let decisions = cached
        .st
        .stores
        .durable
        .list_decisions(&stepgate_store::DecisionQuery {
            outcome: Some("allow".into()),
            since: Some(cut_at),
            until: Some(restored_at),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        decisions.len(),
        4,
        "every allowed request while down is logged"
    );
    assert_eq!(cached.st.audit.stats().dropped.get(), 0, "nothing dropped");
    assert_eq!(log.stats().dropped.get(), 0, "no decision dropped");

    drop_backends(&b).await;
}

/// A PostgreSQL server of the test's own (`initdb` + `pg_ctl` from Debian's PostgreSQL
/// packages, which the machine's database runs on), in a temporary directory on a free
/// port, so that crashing and restarting it touches nothing else. Run as the `postgres`
/// user when the test runs as root (PostgreSQL refuses to run as root).
struct OwnPostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl OwnPostgres {
    /// The newest installed PostgreSQL's programs, if any.
    fn bin() -> Option<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("pg_ctl").exists() && b.join("initdb").exists())
            .collect();
        found.sort_by_key(|b| {
            b.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        found.pop()
    }

    /// Creates and starts the server, or `None` (recorded as skipped) when PostgreSQL's
    /// server programs are not installed. With `CI` or `STEPGATE_REQUIRE_PG_CTL` set their
    /// absence fails the test.
    fn start() -> Option<OwnPostgres> {
        let Some(bin) = Self::bin() else {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("STEPGATE_REQUIRE_PG_CTL").is_some();
            assert!(
                !required,
                "PostgreSQL's server programs (initdb, pg_ctl) are required: apt-get install postgresql"
            );
            skipped::record("initdb and pg_ctl", "apt-get install postgresql");
            return None;
        };
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the test database's directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = OwnPostgres {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.up();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `program` of PostgreSQL's, as the `postgres` user when the test runs as root.
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server the way a crash does (`-m immediate`: every backend killed, every
    /// connection reset, recovery on the next start).
    fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The database server itself crashes and restarts (rather than the network to it being
/// cut, as above): the nodes' pooled connections are reset by the server, requests that
/// need it are refused meanwhile, and the nodes recover through their pools without a
/// restart, with nothing committed before the crash lost.
#[tokio::test]
async fn a_postgresql_crash_and_restart_is_survived_without_restarting_the_nodes() {
    let Some(b) = backends(None) else { return };
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let up = upstream::text("upstream").await;
    let start = || {
        let (mut pgc, redis, key) = (b.pg.clone(), b.redis.clone(), b.key.clone());
        pgc.url = pg.url();
        pgc.connect_timeout = stepgate_policy::HumanDuration::from_secs(2);
        Server::build(CONFIG)
            .with("UPSTREAM", up)
            .key(key)
            .configure(move |c| {
                c.store.postgres = Some(pgc);
                c.store.redis = Some(redis);
            })
            .demo_users()
            .start()
    };
    let (a, bee) = (start().await, start().await);
    for n in [&a, &bee] {
        wait_until("listening", || n.st.cache.in_use()).await;
    }
    let (_, id) = signed_in(&a).await;
    assert_allowed(&bee, &id, "/", "signed in on A, allowed on B").await;
    let before = support::audit(&a.st, Some("signin.success")).await.len();
    assert!(before >= 1, "the sign-in is committed to the audit log");

    pg.crash();
    for n in [&a, &bee] {
        n.st.cache.advance_clock(Duration::from_secs(11 * 60));
        let (status, _) = answer(n, &id, "/").await;
        assert_eq!(
            status, 503,
            "fail_mode closed: refused while PostgreSQL is down"
        );
    }
    let r = password(&Browser::new(), &app(&a, "/"), &JANE).await;
    assert_eq!(
        r.status(),
        503,
        "no sign-in without the durable store, and not a wrong password"
    );

    pg.up();
    for n in [&a, &bee] {
        let began = Instant::now();
        loop {
            let (status, _) = answer(n, &id, "/").await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "only refusals while the pool reconnects");
            assert!(began.elapsed() < Duration::from_secs(30), "did not recover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (_, again) = signed_in(&bee).await;
    assert_allowed(&a, &again, "/", "a sign-in on B after the restart, on A").await;
    let after = support::audit(&a.st, Some("signin.success")).await.len();
    assert_eq!(
        after,
        before + 1,
        "the sign-in before the crash survived it, and the one after is recorded"
    );
    assert!(
        stepgate_store::verify_audit_chain(a.st.stores.durable.as_ref())
            .await
            .is_ok(),
        "the audit chain is whole after the crash"
    );

    drop(pg);
    drop_backends(&b).await;
}
