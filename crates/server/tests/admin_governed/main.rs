//! The admin console and the admin API's session calls decided by the access pipeline as
//! requests to stepgate's own admin app (`admin.app`, default `stepgate-admin`), over real
//! HTTP and a real SQLite store: a policy targeting it blocks the console (the blocked page)
//! and a session's API call (a 403 problem) from outside the office while a token's call
//! still goes through; a policy asking AAL3 for reads sends a console read to the step-up
//! page and an API read to a 401 problem naming the requirement (for a change, raised to
//! the floor, on the console as in the API); a permissive policy lifts neither the group
//! nor the write floor; a signal source down answers the console with the 503 page and a
//! session's call with a 503 problem, a token's call unaffected; each page and call is in
//! the decision log under the response's request id with the admin app; and the
//! configuration errors name the admin app (an `apps` entry taking its id; an unknown id's
//! list).
//!
//! One file a theme: `policies`, `paths` (one spelling of a path), `unavailable` (a signal
//! source down), `config`; what they
//! share is here.

#[path = "../support/mod.rs"]
mod support;

mod config;
mod paths;
mod policies;
mod unavailable;

use chrono::{Duration, Utc};
use serde_json::Value;
use stepgate_server::admin::{tokens, Scope, BASE};
use stepgate_store::DecisionRecord;
use support::{client, header, redirects, upstream, Server};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
server:
  trusted_proxies: [127.0.0.1]
networks:
  office: [10.0.0.0/8]
admin:
  group: licence-admins
log:
  decisions: { allowed_one_in: 1 }
default_outcome: allow
policies:
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// From outside the office, as the trusted proxy (loopback) says.
const OUTSIDE: &str = "203.0.113.9";
/// From the office network.
const OFFICE: &str = "10.0.0.5";

async fn start(policies: &str) -> Server {
    Server::build(&format!("{CONFIG}{policies}"))
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await
}

fn http() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

/// A console page read with `session` from `ip`.
async fn console(s: &Server, session: &str, path: &str, ip: &str) -> reqwest::Response {
    http()
        .get(s.at(&format!("/_stepgate/admin{path}")))
        .header("cookie", format!("stepgate_session={session}"))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
}

/// An admin API call: with `session` (a cookie) or `token` (a bearer), from `ip`.
async fn api(
    s: &Server,
    method: reqwest::Method,
    path: &str,
    cred: Cred<'_>,
    ip: &str,
) -> reqwest::Response {
    let mut r = http()
        .request(method, s.at(&format!("/_stepgate{BASE}{path}")))
        .header("x-forwarded-for", ip)
        .header("content-type", "application/json")
        .body("{}");
    r = match cred {
        Cred::Session(id) => r.header("cookie", format!("stepgate_session={id}")),
        Cred::Token(t) => r.bearer_auth(t),
    };
    r.send().await.unwrap()
}

#[derive(Clone, Copy)]
enum Cred<'a> {
    Session(&'a str),
    Token(&'a str),
}

/// A problem document, after checking its status and media type.
async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    r.json().await.unwrap()
}

/// The decision recorded under the response's request id.
async fn decision_of(s: &Server, r: &reqwest::Response) -> DecisionRecord {
    let id = header(r, "x-request-id");
    s.st.access.decision_log().unwrap().flush().await;
    s.st.stores
        .durable
        .get_decision(&id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no decision recorded for request {id}"))
}

async fn token(s: &Server, scopes: &[Scope]) -> String {
    let expires = Utc::now() + Duration::days(1);
    tokens::create(s.st.stores.durable.as_ref(), "script", scopes, expires)
        .await
        .unwrap()
        .0
}
