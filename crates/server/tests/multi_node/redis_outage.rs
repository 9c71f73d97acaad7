//! Losing Redis (a `redis-server` of the test's own, on a free port) refuses requests,
//! and the nodes recover without a restart once it is back.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::{skipped, upstream, Browser, Page, JANE};

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
