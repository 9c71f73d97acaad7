//! What the admin API's tests share: the config, starting stepgate, minting API tokens,
//! and calling an endpoint for its status and problem document.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stepgate_server::admin::tokens::{self, Scope};
use stepgate_server::admin::BASE;
use stepgate_server::Shared;

use crate::support::{client, header, redirects, upstream, Server};

pub(crate) const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
admin:
  group: licence-admins
log:
  decisions: { allowed_one_in: 1 }
default_outcome: allow
policies:
  - name: trial-deny-console
    priority: 5
    report_only: true
    targets: { apps: [console] }
    outcome: { deny: { message: "would block" } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

pub(crate) async fn start() -> Server {
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await
}

pub(crate) fn http() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

pub(crate) fn api(s: &Server, path: &str) -> String {
    s.at(&format!("/_stepgate{BASE}{path}"))
}

/// A live token called `name` with `scopes`.
pub(crate) async fn token(st: &Shared, name: &str, scopes: &[Scope]) -> String {
    let expires = Utc::now() + Duration::days(1);
    tokens::create(st.stores.durable.as_ref(), name, scopes, expires)
        .await
        .unwrap()
        .0
}

/// A request the endpoint accepts, as far as its body goes.
pub(crate) fn body_for(op: &str) -> Option<(String, &'static str)> {
    match op {
        "createUser" => Some((json!({ "username": format!("u-{}", stepgate_store::new_id()) }).to_string(), "application/json")),
        "validatePolicies" => Some(("default_outcome: allow\n".into(), "application/yaml")),
        "whatIf" => Some((json!({ "kind": "access", "request": { "app": "console", "method": "GET", "path": "/" } }).to_string(), "application/json")),
        _ => None,
    }
}

pub(crate) async fn call(
    s: &Server,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<(String, &'static str)>,
) -> reqwest::Response {
    let mut r = http().request(method, api(s, path));
    if let Some(t) = auth {
        r = r.bearer_auth(t);
    }
    if let Some((b, ct)) = body {
        r = r.header("content-type", ct).body(b);
    }
    r.send().await.unwrap()
}

/// The problem document of `r`, checked to be one with `status`.
pub(crate) async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "{r:?}");
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], status);
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    v
}
