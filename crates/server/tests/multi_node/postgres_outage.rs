//! Losing PostgreSQL behind a relay the test cuts: requests are refused, or answered
//! from recent records, as configured.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support;
use crate::support::{client, password, redirects, upstream, Browser, Server, JANE};

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

/// A relay to the PostgreSQL at `url`, and the URL that reaches it through the relay.
async fn relay_to(url: &str) -> (Relay, String) {
    let mut through_relay = reqwest::Url::parse(url).unwrap();
    let host = through_relay.host_str().unwrap().to_string();
    let port = through_relay.port().unwrap_or(5432);
    let target: std::net::SocketAddr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(target).await;
    through_relay.set_host(Some("127.0.0.1")).unwrap();
    through_relay.set_port(Some(relay.port)).unwrap();
    (relay, through_relay.to_string())
}

#[tokio::test]
async fn losing_postgres_refuses_or_answers_from_recent_records_as_configured() {
    let Some(b) = backends(None) else { return };
    let (mut relay, through_relay) = relay_to(&b.pg.url).await;
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
    recovered(&[&closed, &cached], &id).await;
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

/// A graceful stop gives the audit events that wait for PostgreSQL a last try: the event
/// waits through the outbox writer's first two tries, PostgreSQL comes back while the
/// writer backs off for 4 s, and the node is stopped at once. By the time the node has
/// stopped the event is in the store (without the last try it would still wait, and be
/// lost with the process).
#[tokio::test]
async fn a_graceful_stop_writes_the_audit_events_that_wait() {
    let Some(b) = backends(None) else { return };
    let (mut relay, through_relay) = relay_to(&b.pg.url).await;
    let (mut pgc, redis) = (b.pg.clone(), b.redis.clone());
    pgc.url = through_relay;
    // A try fails within this (the pool retries a refused connection until then).
    pgc.connect_timeout = stepgate_policy::HumanDuration::from_secs(1);
    let support::State { st, .. } = Server::build(CONFIG)
        .with("UPSTREAM", "127.0.0.1:9")
        .key(b.key.clone())
        .configure(move |c| {
            c.store.postgres = Some(pgc);
            c.store.redis = Some(redis);
        })
        .state()
        .await;
    let serving = support::Serving::start(&st).await;

    relay.cut();
    let mut event = stepgate_store::NewAuditEvent::now("signout");
    event.subject = Some(format!("last-try-{}", stepgate_store::new_id()));
    st.audit.append(event.clone()).await;
    assert_eq!(st.audit.waiting(), 1, "the event waits for the store");
    // The writer tries 1 s after the event is kept and 2 s after its first try failed (each
    // try failing within 1 s), so both have failed within 5 s; its third try comes 4 s after
    // the second failed, at least 7 s from now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(st.audit.waiting(), 1, "the event still waits");
    relay.restore().await;
    serving.stop().await;
    assert_eq!(
        st.audit.waiting(),
        0,
        "nothing waits once the node has stopped"
    );
    let written: Vec<_> = support::audit(&st, Some("signout"))
        .await
        .into_iter()
        .filter(|e| e.subject == event.subject)
        .collect();
    assert_eq!(written.len(), 1, "the event is in the audit log, once");
    assert_eq!(st.audit.stats().written_late.get(), 1);
    drop(st);
    drop_backends(&b).await;
}
