//! The decision log over real HTTP and a real SQLite store: every decision of the pipeline
//! (proxy, forward-auth, sign-in; allow, step-up, deny, sign in) is recorded once, under the
//! request id the client was given (a response header, and on the blocked and step-up
//! pages), with the user, the session's handle (never its id), the app and route, the
//! deciding policy, the report-only policies that matched and what they would have done,
//! the context and the trace. A full queue drops allowed records (counted) and never a
//! deny or a step-up.

#[path = "../support/mod.rs"]
mod support;

mod queue;
mod recording;
mod writer;

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
