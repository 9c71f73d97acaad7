//! What the policy-version tests share: the config and policy sets, calling the admin
//! API with a token, and saving a draft.

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};
use stepgate_server::admin::tokens::{self, Scope};
use stepgate_server::admin::BASE;
use stepgate_store::new_id;

use crate::support::{client, password, redirects, upstream, Browser, Server, JANE};

pub(crate) const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
    routes:
      - { name: reports, path: /reports, tags: [reports] }
sessions:
  cookie: { secure: false }
  cache_ttl: 10m
admin:
  policy_edits: store
default_outcome: allow
policies:
  - name: sign-in-with-a-password
    priority: 30
    targets: { sign_in: true }
    outcome: allow
"#;

/// The files' policies, as a policy set.
pub(crate) const OPEN: &str = "policies:
  - name: sign-in-with-a-password
    priority: 30
    targets: { sign_in: true }
    outcome: allow
";

/// `OPEN` with the reports denied.
pub(crate) const CLOSED: &str = "policies:
  - name: sign-in-with-a-password
    priority: 30
    targets: { sign_in: true }
    outcome: allow
  - name: reports-closed
    priority: 10
    targets: { routes: [{ tags: [reports] }] }
    outcome: { deny: { message: closed for audit } }
";

/// A set naming an app that does not exist (line 4, column 22).
pub(crate) const BAD: &str = "policies:
  - name: reports-closed
    priority: 10
    targets: { apps: [no-such-app] }
    outcome: { deny: {} }
";

pub(crate) fn http() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

pub(crate) async fn call(
    s: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = http()
        .request(method, s.at(&format!("/_stepgate{BASE}{path}")))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn admin_token(s: &Server) -> String {
    let name = format!("policy-admin-{}", &new_id()[..8]);
    tokens::create(
        s.st.stores.durable.as_ref(),
        &name,
        &[Scope::PoliciesRead, Scope::PoliciesWrite],
        Utc::now() + chrono::Duration::days(1),
    )
    .await
    .unwrap()
    .0
}

/// Jane signed in through `node`: her session id.
pub(crate) async fn signed_in(node: &Server) -> String {
    let b = Browser::new();
    let url = node.url("app.test", "/");
    let r = password(&b, &url, &JANE).await;
    assert_eq!(r.status(), 200, "signed in and back at the app");
    b.session_id(&url).expect("the session cookie")
}

/// The status `node` answers for `/reports` with session `id`.
pub(crate) async fn reports(node: &Server, id: &str) -> u16 {
    http()
        .get(node.url("app.test", "/reports"))
        .header("cookie", format!("stepgate_session={id}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) async fn save(s: &Server, t: &str, text: &str, base: Option<i64>) -> (u16, Value) {
    call(
        s,
        Method::POST,
        "/policies/versions",
        t,
        Some(json!({ "text": text, "base": base, "note": "test" })),
    )
    .await
}

/// The refusal of a bad draft: 422, each error positioned in the draft.
pub(crate) fn assert_positioned(status: u16, p: &Value) {
    assert_eq!(status, 422, "{p}");
    let e = &p["errors"][0];
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(4), Some(23)),
        "{p}"
    );
    assert!(
        e["message"].as_str().unwrap().contains("no-such-app"),
        "{p}"
    );
    assert_eq!(e["file"], "policy-draft.yaml", "{p}");
}

/// A server with policy edits on (or off) and `jane` in `admin.group`, its data directory.
pub(crate) async fn console_server(edits: &str) -> Server {
    let config = CONFIG.replace(
        "admin:\n  policy_edits: store",
        &format!("admin:\n  group: licence-admins\n  policy_edits: {edits}\nlog:\n  decisions: {{ allowed_one_in: 1 }}"),
    );
    Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await
}
