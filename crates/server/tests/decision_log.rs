//! The decision log over real HTTP and a real SQLite store: every decision of the pipeline
//! (proxy, forward-auth, sign-in; allow, step-up, deny, sign in) is recorded once, under the
//! request id the client was given (a response header, and on the blocked and step-up
//! pages), with the user, the session's handle (never its id), the app and route, the
//! deciding policy, the report-only policies that matched and what they would have done,
//! the context and the trace. A full queue drops allowed records (counted) and never a
//! deny or a step-up.

mod support;

use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use stepgate_policy::RequestKind;
use stepgate_server::access::{
    AccessRequest, Connection, Credentials, DecisionLog, RequestId, Verdict,
};
use stepgate_store::{DecisionQuery, DecisionRecord};
use support::{client, header, redirects, sign_in, upstream, user, Browser, Server, JANE};

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
log:
  decisions: { allowed_one_in: 1 }   # every allowed request too (the default samples them)
default_outcome: allow
policies:
  - name: trial-block-admin
    priority: 5
    report_only: true
    targets: { apps: [console], routes: [ { tags: [admin] } ] }
    outcome: { deny: { message: "would block admin" } }
  - name: admin-needs-aal3
    priority: 10
    targets: { apps: [console], routes: [ { tags: [admin] } ] }
    outcome: { step_up: { min_aal: 3 } }
  - name: no-forbidden
    priority: 20
    targets: { apps: [console], routes: [ { path: "/forbidden" } ] }
    outcome: { deny: { message: "not here" } }
  - name: trial-after
    priority: 25
    report_only: true
    outcome: { deny: { message: "ranks after the decision" } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

async fn start() -> Server {
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await
}

/// The decision recorded under `id`, once the writer has written what it was handed.
async fn recorded(s: &Server, id: &str) -> DecisionRecord {
    s.st.access.decision_log().unwrap().flush().await;
    s.st.stores
        .durable
        .get_decision(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no decision recorded for request {id}"))
}

fn no_redirects() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

#[tokio::test]
async fn every_decision_is_recorded_under_the_id_the_client_was_given() {
    let s = start().await;
    let app = |p: &str| s.url("app.test", p);

    // Anonymous: sent to sign in, and recorded so.
    let r = no_redirects().get(app("/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let anon = header(&r, "x-request-id");
    assert_eq!(anon.len(), 24, "{anon}");
    let d = recorded(&s, &anon).await;
    assert_eq!(d.outcome, "sign_in");
    assert_eq!(d.user, None);
    assert_eq!(d.app.as_deref(), Some("console"));
    assert_eq!((d.method.as_str(), d.path.as_str()), ("GET", "/"));
    assert_eq!(d.policy_outcome, None, "it never reached the policies");

    // Jane signs in (her sign-in is a decision too: a step-up to AAL2).
    let b = Browser::new();
    let r = sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let session_id = b.session_id(&app("/")).unwrap();
    let cookie = format!("stepgate_session={session_id}");
    // The writer gathers records for up to half a second: what it holds is written now.
    s.st.access.decision_log().unwrap().flush().await;
    let signins =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery {
                user: Some("jane".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    let signin = signins
        .iter()
        .find(|d| d.kind == "sign_in")
        .expect("the sign-in's decision");
    assert_eq!(signin.outcome, "step_up");
    assert_eq!(signin.policy.as_deref(), Some("sign-in-mfa"));
    assert_eq!(signin.detail["requirement"]["min_aal"], 2);

    // Allowed, proxied: the upstream's answer carries the id.
    let r = no_redirects()
        .get(app("/reports"))
        .header("cookie", &cookie)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let allowed = header(&r, "x-request-id");
    assert_ne!(allowed, anon);
    let d = recorded(&s, &allowed).await;
    assert_eq!(d.outcome, "allow");
    assert_eq!(d.policy_outcome.as_deref(), Some("allow"));
    assert_eq!(d.policy, None, "the default outcome");
    assert_eq!(d.user.as_deref(), Some("jane"));
    assert_eq!(d.ip.as_deref(), Some("198.51.100.7"));
    let handle = s.st.signer.session_handle(&session_id);
    assert_eq!(d.session.as_deref(), Some(handle.as_str()));
    // Nothing enforced matched: a report-only policy for everything would have decided.
    assert_eq!(
        d.report_only,
        serde_json::json!([{ "policy": "trial-after", "outcome": "deny", "requirement": null }])
    );
    assert_eq!(d.detail["context"]["request"]["path"], "/reports");
    assert_eq!(d.detail["context"]["user"]["username"], "jane");
    // An allowed request's trace is worked out again from its context when asked for.
    assert!(d.detail["trace"].is_null(), "{}", d.detail);

    // The admin route: a step-up, and the report-only policy ahead of it would have denied.
    let r = no_redirects()
        .get(app("/admin/users"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let stepped = header(&r, "x-request-id");
    let d = recorded(&s, &stepped).await;
    assert_eq!(d.outcome, "step_up");
    assert_eq!(d.policy.as_deref(), Some("admin-needs-aal3"));
    assert_eq!(d.route.as_deref(), Some("admin"));
    assert_eq!(d.detail["requirement"]["min_aal"], 3);
    assert_eq!(d.detail["trace"]["policy"], "admin-needs-aal3");
    assert_eq!(
        d.report_only,
        serde_json::json!([{ "policy": "trial-block-admin", "outcome": "deny", "requirement": null }]),
        "the report-only policy ranked after the decision is not listed"
    );
    // The step-up page names the request.
    let to = header(&r, "location");
    let page = no_redirects()
        .get(&to)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&stepped),
        "the step-up page shows the request id"
    );

    // Denied: the blocked page (a browser) names the request; so does forward-auth's 403.
    let r = no_redirects()
        .get(app("/forbidden"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let denied = header(&r, "x-request-id");
    assert!(r.text().await.unwrap().contains(&denied));
    let d = recorded(&s, &denied).await;
    assert_eq!(d.outcome, "deny");
    assert_eq!(d.policy.as_deref(), Some("no-forbidden"));
    assert_eq!(d.detail["trace"]["message"], "not here");

    let r = no_redirects()
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
    let fa = header(&r, "x-request-id");
    let d = recorded(&s, &fa).await;
    assert_eq!(
        (d.outcome.as_str(), d.user.as_deref()),
        ("deny", Some("jane"))
    );

    // Searchable by outcome and policy; and the session id itself is nowhere in the log.
    let denies =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery {
                outcome: Some("deny".into()),
                policy: Some("no-forbidden".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    let ids: Vec<&str> = denies.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(ids, vec![fa.as_str(), denied.as_str()], "newest first");
    let all =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery::default())
            .await
            .unwrap();
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains(&session_id),
        "a session id leaked into the log"
    );
    // One record per request: no entry point records twice.
    let mut seen: Vec<&str> = all.iter().map(|d| d.request_id.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), all.len());
}

/// By default allowed app requests are recorded one in 100 (here one in 10), counted
/// otherwise; a denial is always recorded, and so is an allowed request a report-only
/// policy matched (what it would have done is what report-only mode is for).
#[tokio::test]
async fn allowed_requests_are_sampled_and_denials_and_report_only_matches_always_kept() {
    // `trial-after` narrowed to /trial/**, so that requests to / match no report-only policy.
    let config = CONFIG.replace(
        "    report_only: true\n    outcome: { deny: { message: \"ranks after the decision\" } }",
        "    report_only: true\n    targets: { apps: [console], routes: [ { path: \"/trial/**\" } ] }\n    outcome: { deny: { message: \"ranks after the decision\" } }",
    );
    assert_ne!(config, CONFIG, "the report-only policy was narrowed");
    let s = Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .configure(|c| c.log.decisions.allowed_one_in = 10)
        .demo_users()
        .start()
        .await;
    let b = Browser::new();
    let r = sign_in(&b, &s.url("app.test", "/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let mut ids = Vec::new();
    for _ in 0..30 {
        let r = b.get(s.url("app.test", "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        ids.push(header(&r, "x-request-id"));
    }
    let r = b.get(s.url("app.test", "/forbidden")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let denied = header(&r, "x-request-id");
    s.st.access.decision_log().unwrap().flush().await;
    let mut kept = 0;
    for id in &ids {
        if let Some(d) = s.st.stores.durable.get_decision(id).await.unwrap() {
            assert_eq!(d.outcome, "allow");
            kept += 1;
        }
    }
    assert_eq!(kept, 3, "one allowed request in 10 of 30");
    assert_eq!(recorded(&s, &denied).await.outcome, "deny");
    let mut trials = Vec::new();
    for i in 0..12 {
        let r = b
            .get(s.url("app.test", &format!("/trial/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "report-only never decides");
        trials.push(header(&r, "x-request-id"));
    }
    s.st.access.decision_log().unwrap().flush().await;
    for id in &trials {
        let d = recorded(&s, id).await;
        assert_eq!(d.outcome, "allow");
        assert!(
            d.report_only.to_string().contains("trial-after"),
            "{id}: {}",
            d.report_only
        );
    }
    let stats = s.st.access.decision_log().unwrap().stats().clone();
    assert_eq!(stats.sampled_out.get(), 27);
}

#[tokio::test]
async fn turned_off_nothing_is_recorded() {
    let s = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .configure(|c| c.log.decisions.enabled = false)
        .start()
        .await;
    let r = no_redirects()
        .get(s.url("app.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    s.st.access.decision_log().unwrap().flush().await;
    let all =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery::default())
            .await
            .unwrap();
    assert!(all.is_empty(), "{all:?}");
}

/// A request for `app` with no session (a sign-in verdict: droppable), or jane's sign-in
/// (which this configuration's `deny-jane` policy denies: never dropped).
async fn decide(
    access: &stepgate_server::access::Access,
    s: &stepgate_server::Shared,
    jane: Option<&stepgate_store::UserRecord>,
) -> (RequestId, &'static str) {
    let rt = s.runtime.load_full();
    let headers = HeaderMap::new();
    let jar = stepgate_server::session::cookies::CookieJar::new();
    let factor = stepgate_authn::PassedFactor::new(
        stepgate_authn::FactorKind::Password,
        &rt.config.assurance,
        chrono::Utc::now(),
    );
    let id = RequestId::new();
    let req = AccessRequest {
        id,
        kind: if jane.is_some() {
            RequestKind::SignIn
        } else {
            RequestKind::Access
        },
        app: jane.is_none().then_some("console"),
        method: &Method::GET,
        path: "/",
        headers: &headers,
        ip: None,
        credentials: match jane {
            Some(user) => Credentials::FirstFactor {
                user,
                factor: &factor,
                also: &[],
                cookies: &jar,
            },
            None => Credentials::Cookies(&jar),
        },
        connection: Connection::default(),
        now: chrono::Utc::now(),
    };
    let what = match access.decide(&rt, &req).await.verdict {
        Verdict::SignIn(_) => "sign_in",
        Verdict::Deny(_) => "deny",
        _ => "other",
    };
    (id, what)
}

#[tokio::test]
async fn a_full_queue_drops_allowed_records_and_keeps_every_denial() {
    let cfg = CONFIG.replace(
        "policies:\n",
        "policies:\n  - { name: deny-jane, priority: 1, targets: { sign_in: true }, outcome: deny }\n",
    );
    let state = Server::build(&cfg)
        .with("UPSTREAM", "127.0.0.1:9")
        .demo_users()
        .state()
        .await;
    let st = &state.st;
    let jane = user(st, "jane").await;
    // A pipeline over the server's services, with a log of room for one record whose
    // writer has not started: what finds the queue full is dropped or waits.
    let log = Arc::new(DecisionLog::new(1));
    let access = stepgate_server::access::Access::new(
        st.sessions.clone(),
        st.cache.clone(),
        st.access.signals().clone(),
        st.devices.clone(),
    )
    .with_decision_log(log.clone());

    let (first, what) = decide(&access, st, None).await;
    assert_eq!(what, "sign_in");
    // 98 more: the queue is full, each is dropped (the 100th would wait: a sample).
    for _ in 0..98 {
        decide(&access, st, None).await;
    }
    assert_eq!(log.stats().dropped.get(), 98);
    assert_eq!(log.queued(), 1);

    // A denial waits for room instead: it completes once the writer runs.
    let denial = {
        let access = &access;
        let jane = &jane;
        async move { decide(access, st, Some(jane)).await }
    };
    let writer = async {
        tokio::task::yield_now().await;
        log.spawn_writer(st);
    };
    let ((denied, what), ()) = tokio::join!(denial, writer);
    assert_eq!(what, "deny");
    log.flush().await;
    assert_eq!(log.stats().dropped.get(), 98);
    let kept = st
        .stores
        .durable
        .list_decisions(&DecisionQuery {
            oldest_first: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = kept.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(ids, vec![first.as_str(), denied.as_str()]);
    assert_eq!(kept[1].policy.as_deref(), Some("deny-jane"));
    assert_eq!(kept[1].kind, "sign_in");
}

/// `log.decisions.max_rows`: the purge task keeps the newest that many and deletes the rest,
/// whatever their age (here all within `retention`).
#[tokio::test]
async fn past_max_rows_the_oldest_decisions_are_deleted() {
    let yaml = CONFIG.replace("UPSTREAM", "127.0.0.1:9");
    let first = Server::build(&yaml).state().await;
    let now = chrono::Utc::now();
    let records: Vec<DecisionRecord> = (0..10)
        .map(|i| DecisionRecord {
            request_id: format!("bounded-{i:02}"),
            time: now - chrono::Duration::minutes(60 - i),
            kind: "access".into(),
            user: Some("jane".into()),
            session: None,
            app: Some("console".into()),
            route: None,
            method: "GET".into(),
            path: "/".into(),
            ip: None,
            device: None,
            policy: None,
            policy_outcome: Some("allow".into()),
            outcome: "allow".into(),
            report_only: serde_json::json!([]),
            detail: serde_json::json!({}),
        })
        .collect();
    first
        .st
        .stores
        .durable
        .append_decisions(&records)
        .await
        .unwrap();
    let all = DecisionQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        first
            .st
            .stores
            .durable
            .list_decisions(&all)
            .await
            .unwrap()
            .len(),
        10
    );

    // The same store under `max_rows: 3`: the writer prunes when it starts.
    let bounded = yaml.replace(
        "decisions: { allowed_one_in: 1 }",
        "decisions: { allowed_one_in: 1, max_rows: 3 }",
    );
    let again = Server::build(&bounded)
        .in_dir(first.dir)
        .key(first.key.clone())
        .state()
        .await;
    let mut kept = Vec::new();
    for _ in 0..100 {
        kept = again
            .st
            .stores
            .durable
            .list_decisions(&all)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.request_id)
            .collect::<Vec<_>>();
        if kept.len() <= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        kept,
        ["bounded-09", "bounded-08", "bounded-07"],
        "the newest three"
    );
}

/// How many transactions the decision log has appended to the durable store so far (the
/// timed store's `append_decisions` calls, from the node's metrics).
fn appends(st: &stepgate_server::Shared) -> u64 {
    let text = st.metrics.encode(0);
    let series = "stepgate_store_operation_duration_seconds_count{operation=\"append_decisions\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Polls the store until every one of `ids` is recorded; panics, naming the missing ones,
/// when they are not after `within` (a bound on the wait, not a measurement).
async fn all_recorded(
    st: &stepgate_server::Shared,
    ids: &[RequestId],
    within: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut missing = Vec::new();
        for id in ids {
            let id = id.to_string();
            if st.stores.durable.get_decision(&id).await.unwrap().is_none() {
                missing.push(id);
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not recorded after {within:?} without a flush: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// While decisions keep coming the writer gathers them: fifty made back to back reach the
/// store without anyone asking for a flush, in far fewer transactions than records (the
/// first at once, the rest gathered behind it).
#[tokio::test]
async fn decisions_made_together_are_written_together_without_a_flush() {
    let state = Server::build(CONFIG)
        .with("UPSTREAM", "127.0.0.1:9")
        .state()
        .await;
    let st = &state.st;
    let before = appends(st);
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (id, what) = decide(&st.access, st, None).await;
        assert_eq!(what, "sign_in");
        ids.push(id);
    }
    all_recorded(st, &ids, std::time::Duration::from_secs(20)).await;
    let transactions = appends(st) - before;
    assert!(
        (1..=25).contains(&transactions),
        "50 decisions in {transactions} transactions"
    );
}

/// A graceful stop writes what the writer still gathers: of two requests made back to
/// back the second's record waits behind the first's write; the server is stopped at
/// once, and by the time it has stopped (no flush asked for) the record is in the store,
/// and still there for the node started again on the same data.
#[tokio::test]
async fn a_graceful_stop_writes_the_decisions_still_gathered() {
    let support::State { st, key, dir } = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .state()
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(stepgate_server::serve_on_until(
        st.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let c = no_redirects();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = c
            .get(format!("http://app.test:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        ids.push(header(&r, "x-request-id"));
    }
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    for id in &ids {
        let found = st.stores.durable.get_decision(id).await.unwrap();
        assert!(
            found.is_some(),
            "{id} not written by the time the server stopped"
        );
    }
    drop(st);

    let again = Server::build(CONFIG)
        .with("UPSTREAM", "127.0.0.1:9")
        .in_dir(dir)
        .key(key)
        .state()
        .await;
    for id in &ids {
        let found = again.st.stores.durable.get_decision(id).await.unwrap();
        assert!(found.is_some(), "{id} lost across the restart");
    }
}
