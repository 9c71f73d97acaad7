//! Prometheus metrics over real HTTP: a scrape after a known set of requests shows exactly
//! those requests in the counters and histograms, and Debian's `promtool check metrics`
//! accepts the scrape.

mod support;

use support::prom::{self, Scrape};
use support::{client, redirects, sign_in, upstream, Browser, Server, JANE};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
    routes:
      - { name: admin, path: "/admin/**", tags: [admin] }
sessions:
  cookie: { secure: false }
server:
  trusted_proxies: [127.0.0.1/32]
  metrics_listen: 127.0.0.1:0
default_outcome: allow
policies:
  - name: admin-needs-aal3
    priority: 10
    targets: { apps: [console], routes: [ { tags: [admin] } ] }
    outcome: { step_up: { min_aal: 3 } }
  - name: no-forbidden
    priority: 20
    targets: { apps: [console], routes: [ { path: "/forbidden" } ] }
    outcome: { deny: { message: "not here" } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

async fn scrape(s: &Server) -> Scrape {
    if let Some(log) = s.st.access.decision_log() {
        log.flush().await;
    }
    prom::scrape(s.st.metrics.addr().expect("the metrics listener is up")).await
}

#[tokio::test]
async fn a_scrape_counts_exactly_the_requests_made_and_promtool_accepts_it() {
    let s = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await;
    let b = Browser::new();
    let app = |p: &str| s.url("app.test", p);
    let r = sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let cookie = format!("stepgate_session={}", b.session_id(&app("/")).unwrap());
    let c = client().redirect(redirects(false)).build().unwrap();

    let before = scrape(&s).await;
    // The known set: 3 allowed, 1 step-up, 1 deny (proxy), 2 anonymous, 1 deny (forward-auth).
    for _ in 0..3 {
        let r = c
            .get(app("/reports"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(app("/admin/x"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c
        .get(app("/forbidden"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for _ in 0..2 {
        let r = c.get(app("/")).send().await.unwrap();
        assert_eq!(r.status(), 303);
    }
    let r = c
        .get(s.at("/_stepgate/auth/forward"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", format!("app.test:{}", s.addr.port()))
        .header("x-forwarded-uri", "/forbidden")
        .header("accept", "application/json")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let after = scrape(&s).await;

    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let console = |o: &'static str| [("app", "console"), ("outcome", o)];
    assert_eq!(delta("stepgate_requests_total", &console("allow")), 3.0);
    assert_eq!(delta("stepgate_requests_total", &console("step_up")), 1.0);
    assert_eq!(delta("stepgate_requests_total", &console("deny")), 2.0);
    assert_eq!(delta("stepgate_requests_total", &console("sign_in")), 2.0);
    assert_eq!(
        delta("stepgate_request_duration_seconds_count", &console("allow")),
        3.0
    );
    let access = |o: &'static str| [("kind", "access"), ("outcome", o)];
    assert_eq!(delta("stepgate_decisions_total", &access("allow")), 3.0);
    assert_eq!(delta("stepgate_decisions_total", &access("deny")), 2.0);
    assert_eq!(delta("stepgate_decisions_total", &access("step_up")), 1.0);
    assert_eq!(
        delta("stepgate_decision_duration_seconds_count", &access("deny")),
        2.0
    );
    assert_eq!(
        delta(
            "stepgate_policy_outcomes_total",
            &[("policy", "no-forbidden"), ("outcome", "deny")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "stepgate_policy_outcomes_total",
            &[("policy", "admin-needs-aal3"), ("outcome", "step_up")]
        ),
        1.0
    );
    // The sign-in was a decision too, before the known set.
    assert!(
        before.get(
            "stepgate_decisions_total",
            &[("kind", "sign_in"), ("outcome", "step_up")]
        ) >= 1.0
    );
    // The six requests with the session read it (and its user) through the read cache.
    let (hits, misses) = (
        delta("stepgate_cache_hits_total", &[]),
        delta("stepgate_cache_misses_total", &[]),
    );
    assert!(
        hits >= 1.0 && hits + misses >= 6.0,
        "{hits} hits, {misses} misses"
    );
    // Every decision reached the log: 8 more, each written or, for an allowed request,
    // left out by the default sampling (`log.decisions.allowed_one_in: 100`); nothing dropped.
    let written = delta("stepgate_decision_log_written_total", &[]);
    let sampled_out = delta("stepgate_decision_log_sampled_out_total", &[]);
    assert_eq!(written + sampled_out, 8.0, "{written} + {sampled_out}");
    assert!(
        sampled_out >= 1.0,
        "allowed requests are sampled by default"
    );
    assert_eq!(after.get("stepgate_decision_log_dropped_total", &[]), 0.0);
    // No request of this server carried anything a device could be found by (a device
    // cookie, a client certificate, a passkey), so the device registry was never asked and
    // its series were never made (the other providers are not configured, or not read by
    // these policies).
    let device = [("provider", "device")];
    assert_eq!(
        after.find("stepgate_signal_duration_seconds_count", &device),
        None
    );
    assert_eq!(after.find("stepgate_signal_errors_total", &device), None);
    // The written records went to the durable store through the timed wrapper.
    let append = [("operation", "append_decisions")];
    assert!(delta("stepgate_store_operation_duration_seconds_count", &append) >= 1.0);
    assert_eq!(after.get("stepgate_store_errors_total", &append), 0.0);
    assert_eq!(after.get("stepgate_decision_log_queue_depth", &[]), 0.0);
    assert_eq!(
        after.get(
            "stepgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // promtool (Debian's prometheus package) accepts the scrape.
    prom::promtool_accepts(&after.text);
}

/// Factor verifications by factor and result, lockouts and live sessions after a known set
/// of sign-ins: jane signs in (password and code), john types a wrong password twice (the
/// second locks him out: `max_retries: 2`), then his right one, refused while locked.
#[tokio::test]
async fn sign_ins_count_factor_verifications_lockouts_and_live_sessions() {
    use support::{password, Person};
    let config = CONFIG.replace(
        "default_outcome: allow",
        "regulation: { max_retries: 2 }\ndefault_outcome: allow",
    );
    let s = Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await;
    let app = |p: &str| s.url("app.test", p);
    let before = scrape(&s).await;
    assert_eq!(before.get("stepgate_sessions_live", &[]), 0.0);

    let b = Browser::new();
    let r = sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let john = &stepgate_server::demo::USERS[1];
    let wrong = Person {
        username: john.username,
        password: "not-his-password",
        totp_base32: john.totp_base32,
    };
    for _ in 0..2 {
        password(&Browser::new(), &app("/"), &wrong).await;
    }
    let right = Person {
        password: john.password,
        ..wrong
    };
    let r = password(&Browser::new(), &app("/"), &right).await;
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Try again in") || page.contains("locked"),
        "{page}"
    );

    let after = scrape(&s).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let v = |factor: &'static str, result: &'static str| {
        delta(
            "stepgate_factor_verifications_total",
            &[("factor", factor), ("result", result)],
        )
    };
    assert_eq!(v("password", "success"), 1.0);
    assert_eq!(v("totp", "success"), 1.0);
    assert_eq!(v("password", "failure"), 2.0);
    assert_eq!(v("password", "refused"), 1.0);
    assert_eq!(v("totp", "failure"), 0.0);
    assert_eq!(delta("stepgate_lockouts_total", &[("target", "user")]), 1.0);
    assert_eq!(after.get("stepgate_sessions_live", &[]), 1.0);
    prom::promtool_accepts(&after.text);
}

/// A durable store that fails is counted by operation: the decision log's table is renamed
/// away under the running server (another connection to its SQLite file), so writing the
/// next decisions fails with the database's own error.
#[tokio::test]
async fn a_failing_store_call_is_counted_by_operation() {
    let s = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .start()
        .await;
    let c = client().redirect(redirects(false)).build().unwrap();
    let app = |p: &str| s.url("app.test", p);
    // One decision written while the table is there.
    assert_eq!(c.get(app("/")).send().await.unwrap().status(), 303);
    let before = scrape(&s).await;
    let append = [("operation", "append_decisions")];
    assert!(before.get("stepgate_store_operation_duration_seconds_count", &append) >= 1.0);
    assert_eq!(
        before.find("stepgate_store_errors_total", &append),
        Some(0.0)
    );

    let db = s.dir.path().join("data").join("stepgate.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE decisions RENAME TO decisions_gone")
        .execute(&mut other)
        .await
        .unwrap();
    // Refused anonymous requests: each one's decision is always recorded.
    for _ in 0..2 {
        assert_eq!(c.get(app("/")).send().await.unwrap().status(), 303);
    }
    let after = scrape(&s).await;
    let errors = after.get("stepgate_store_errors_total", &append);
    assert!(errors >= 1.0, "{errors} failed appends counted");
    prom::promtool_accepts(&after.text);
}

/// A signal provider that fails is counted by provider: the IP risk provider (on loopback)
/// answers 500 and is configured to fail closed, so a request from a known address is
/// refused as unavailable and its lookup counted as failed.
#[tokio::test]
async fn a_failing_signal_provider_is_counted_by_provider() {
    let risk = upstream::failing().await;
    let config = CONFIG.replace(
        "default_outcome: allow",
        &format!(
            "signals:\n  ip_risk:\n    http: {{ url: \"http://{risk}/{{ip}}\", score_path: score, on_error: fail }}\ndefault_outcome: allow"
        ),
    );
    let s = Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await;
    let app = |p: &str| s.url("app.test", p);
    // Signed in from an unknown address (no forwarded one): no risk lookup.
    let b = Browser::new();
    assert_eq!(
        sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await.status(),
        200
    );
    let cookie = format!("stepgate_session={}", b.session_id(&app("/")).unwrap());
    let before = scrape(&s).await;
    let ip_risk = [("provider", "ip_risk")];
    assert_eq!(before.get("stepgate_signal_errors_total", &ip_risk), 0.0);

    let c = client().redirect(redirects(false)).build().unwrap();
    let r = c
        .get(app("/reports"))
        .header("cookie", &cookie)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let after = scrape(&s).await;
    assert_eq!(after.get("stepgate_signal_errors_total", &ip_risk), 1.0);
    assert_eq!(
        after.get("stepgate_signal_duration_seconds_count", &ip_risk),
        1.0
    );
    prom::promtool_accepts(&after.text);
}

/// The hot store's calls are timed by operation: a sign-in writes its session through it,
/// each request made with the session reads it there (the read cache is off), and once the
/// session table is renamed away under the running server (another connection to its
/// SQLite file) the next read fails with the database's own error and is counted.
#[tokio::test]
async fn hot_store_calls_are_timed_and_failures_counted_by_operation() {
    let config = CONFIG.replace(
        "cookie: { secure: false }",
        "cookie: { secure: false }\n  cache_ttl: 0s",
    );
    let s = Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await;
    let app = |p: &str| s.url("app.test", p);
    let before = scrape(&s).await;
    let b = Browser::new();
    assert_eq!(
        sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await.status(),
        200
    );
    let cookie = format!("stepgate_session={}", b.session_id(&app("/")).unwrap());
    let c = client().redirect(redirects(false)).build().unwrap();
    let get = |cookie: String| c.get(app("/reports")).header("cookie", cookie).send();
    for _ in 0..3 {
        assert_eq!(get(cookie.clone()).await.unwrap().status(), 200);
    }
    let after = scrape(&s).await;
    let calls = |scrape: &Scrape, operation: &str| {
        scrape.get(
            "stepgate_hot_store_operation_duration_seconds_count",
            &[("operation", operation)],
        )
    };
    let put = calls(&after, "put_session") - calls(&before, "put_session");
    assert!(put >= 1.0, "{put} sessions written");
    let reads = calls(&after, "get_session") - calls(&before, "get_session");
    assert!(reads >= 3.0, "{reads} session reads for 3 requests");
    let get_session = [("operation", "get_session")];
    assert_eq!(
        after.find("stepgate_hot_store_errors_total", &get_session),
        Some(0.0)
    );

    let db = s.dir.path().join("data").join("stepgate.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE hot_sessions RENAME TO hot_sessions_gone")
        .execute(&mut other)
        .await
        .unwrap();
    // The session cannot be read: the request is refused, not let through.
    let status = get(cookie.clone()).await.unwrap().status();
    assert_eq!(status, 503, "a request whose session cannot be read");
    let failed = scrape(&s).await;
    let errors = failed.get("stepgate_hot_store_errors_total", &get_session);
    assert!(errors >= 1.0, "{errors} failed session reads counted");
    prom::promtool_accepts(&failed.text);
}

/// A failing IP risk provider is counted even when its `on_error` answers for it and the
/// decision never sees the failure: a provider answering 500 under `on_error: unknown`
/// (the score unknown: the risky-address policy does not hold, the request is let
/// through), and a closed port under `on_error: assume_score` (score 90: the request is
/// denied by that policy).
#[tokio::test]
async fn an_ip_risk_failure_hidden_by_its_fallback_is_still_counted() {
    let down = upstream::failing().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let unknown = format!("url: \"http://{down}/{{ip}}\", on_error: unknown");
    assert_eq!(risk_fallback_answers(&unknown).await, 200);
    let assumed =
        format!("url: \"http://{closed}/{{ip}}\", on_error: assume_score, assume_score: 90");
    assert_eq!(risk_fallback_answers(&assumed).await, 403);
}

/// Starts a server whose IP risk provider is `provider` (the `http:` settings) with a
/// policy denying scores of 80 and more, makes one request from a known address with a
/// session, checks that exactly that request's risk lookup was counted as failed, and
/// returns the request's status.
async fn risk_fallback_answers(provider: &str) -> u16 {
    let config = CONFIG
        .replace(
            "default_outcome: allow",
            &format!("signals:\n  ip_risk:\n    http: {{ {provider}, score_path: score }}\ndefault_outcome: allow"),
        )
        .replace(
            "policies:\n",
            "policies:\n  - name: risky-ip\n    priority: 5\n    targets: { apps: [console] }\n    conditions:\n      - ip_risk: { min: 80 }\n    outcome: { deny: { message: \"risky address\" } }\n",
        );
    let s = Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await;
    let app = |p: &str| s.url("app.test", p);
    // Signed in from an unknown address (no forwarded one): no risk lookup.
    let b = Browser::new();
    assert_eq!(
        sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await.status(),
        200
    );
    let cookie = format!("stepgate_session={}", b.session_id(&app("/")).unwrap());
    let ip_risk = [("provider", "ip_risk")];
    let before = scrape(&s).await;
    assert_eq!(before.get("stepgate_signal_errors_total", &ip_risk), 0.0);
    let r = client()
        .redirect(redirects(false))
        .build()
        .unwrap()
        .get(app("/reports"))
        .header("cookie", &cookie)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let after = scrape(&s).await;
    assert_eq!(after.get("stepgate_signal_errors_total", &ip_risk), 1.0);
    assert_eq!(
        after.get("stepgate_signal_duration_seconds_count", &ip_risk),
        1.0
    );
    prom::promtool_accepts(&after.text);
    r.status().as_u16()
}
