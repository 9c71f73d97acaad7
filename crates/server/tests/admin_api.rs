//! The admin API (`/_stepgate/admin/api/v1`) over real HTTP and a real SQLite store: every
//! endpoint with and without its scope, tokens that are expired, revoked or forged, an
//! administrator's session (reads with the group, changes only with a fresh AAL3), paging,
//! problem documents for bad input, a revoked session refused at the gateway, an unlock
//! that lets a locked-out user sign in, the audit trail of it all, and the OpenAPI
//! document listing every route.

mod support;

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stepgate_server::admin::tokens::{self, Scope};
use stepgate_server::admin::{BASE, ENDPOINTS};
use stepgate_server::Shared;
use stepgate_store::DecisionRecord;
use support::{
    aal3_session, audit, client, header, password, redirects, sign_in, signed_in_session, upstream,
    user, Browser, Person, Server, JANE,
};

const CONFIG: &str = r#"
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

async fn start() -> Server {
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await
}

fn http() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

fn api(s: &Server, path: &str) -> String {
    s.at(&format!("/_stepgate{BASE}{path}"))
}

/// A live token called `name` with `scopes`.
async fn token(st: &Shared, name: &str, scopes: &[Scope]) -> String {
    let expires = Utc::now() + Duration::days(1);
    tokens::create(st.stores.durable.as_ref(), name, scopes, expires)
        .await
        .unwrap()
        .0
}

/// An endpoint's path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{username}", "john")
        .replace("{id}", "no-such-device")
        .replace("{handle}", "no-such-handle")
        .replace("{request_id}", "no-such-request")
        .replace("{version}", "1")
}

/// A request the endpoint accepts, as far as its body goes.
fn body_for(op: &str) -> Option<(String, &'static str)> {
    match op {
        "createUser" => Some((json!({ "username": format!("u-{}", stepgate_store::new_id()) }).to_string(), "application/json")),
        "validatePolicies" => Some(("default_outcome: allow\n".into(), "application/yaml")),
        "whatIf" => Some((json!({ "kind": "access", "request": { "app": "console", "method": "GET", "path": "/" } }).to_string(), "application/json")),
        _ => None,
    }
}

async fn call(
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
async fn problem(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status, "{r:?}");
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], status);
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    v
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_answers_a_problem_without_credentials() {
    let s = start().await;
    let r = call(&s, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["servers"][0]["url"],
        format!("{}/_stepgate{BASE}", s.public_url)
    );
    let mut operations = 0;
    for e in &ENDPOINTS {
        let op = &doc["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
        assert_eq!(
            op["operationId"], e.operation,
            "{} {} is in the document",
            e.method, e.path
        );
        operations += 1;
        if e.operation == "openapi" {
            continue;
        }
        assert_eq!(op["x-required-scope"], e.scope.as_str());
        // The route exists (the router's answer would be the portal's 404 page) and wants
        // credentials.
        let m = Method::from_bytes(e.method.as_str().as_bytes()).unwrap();
        let r = call(&s, m, &concrete(e.path), None, body_for(e.operation)).await;
        let p = problem(r, 401).await;
        assert!(p["detail"].as_str().unwrap().contains("token"), "{p}");
    }
    let in_doc: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        in_doc, operations,
        "nothing in the document that is not a route"
    );
    // Anything else under the API is a problem document too, never the portal's page.
    problem(
        call(&s, Method::GET, "/nothing-here", None, None).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn every_endpoint_refuses_a_token_without_its_scope_and_serves_one_with_it() {
    let s = start().await;
    for e in ENDPOINTS.iter().filter(|e| e.operation != "openapi") {
        let m = Method::from_bytes(e.method.as_str().as_bytes()).unwrap();
        let others: Vec<Scope> = Scope::ALL.into_iter().filter(|x| *x != e.scope).collect();
        let without = token(&s.st, &format!("without-{}", e.operation), &others).await;
        let r = call(
            &s,
            m.clone(),
            &concrete(e.path),
            Some(&without),
            body_for(e.operation),
        )
        .await;
        let p = problem(r, 403).await;
        assert_eq!(p["required_scope"], e.scope.as_str(), "{}", e.operation);

        let with = token(&s.st, &format!("with-{}", e.operation), &[e.scope]).await;
        let r = call(&s, m, &concrete(e.path), Some(&with), body_for(e.operation)).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            !matches!(status.as_u16(), 401 | 403),
            "{} with its scope: {status} {text}",
            e.operation
        );
        assert!(status.as_u16() < 500, "{}: {status} {text}", e.operation);
    }
}

#[tokio::test]
async fn expired_revoked_and_forged_tokens_are_refused() {
    let s = start().await;
    let st = &s.st;
    let (expired, _) = tokens::create(
        st.stores.durable.as_ref(),
        "old",
        &[Scope::UsersRead],
        Utc::now() - Duration::seconds(1),
    )
    .await
    .unwrap();
    let revoked = token(st, "gone", &[Scope::UsersRead]).await;
    let live = token(st, "live", &[Scope::UsersRead]).await;
    assert_eq!(
        call(&s, Method::GET, "/users", Some(&revoked), None)
            .await
            .status(),
        200
    );
    assert!(st
        .stores
        .durable
        .revoke_admin_token("gone", Utc::now())
        .await
        .unwrap());

    let p = problem(
        call(&s, Method::GET, "/users", Some(&expired), None).await,
        401,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    let p = problem(
        call(&s, Method::GET, "/users", Some(&revoked), None).await,
        401,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    // A token of the right shape stepgate never issued, one with a character changed, and
    // the hash the store keeps presented as the token.
    let forged = format!("{}{}", tokens::TOKEN_PREFIX, "A".repeat(43));
    let mut changed = live.clone().into_bytes();
    let last = changed.len() - 1;
    changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    for bad in [forged, changed, tokens::token_hash(&live), "".into()] {
        let r = call(&s, Method::GET, "/users", Some(&bad), None).await;
        let r = problem(r, 401).await;
        assert_eq!(r["type"], "https://stepgate.dev/problems/unauthenticated");
    }
    let r = http()
        .get(api(&s, "/users"))
        .header("authorization", format!("Basic {live}"))
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    assert_eq!(
        call(&s, Method::GET, "/users", Some(&live), None)
            .await
            .status(),
        200
    );
}

async fn as_session(
    s: &Server,
    method: Method,
    path: &str,
    session: &str,
    json_body: Option<Value>,
) -> reqwest::Response {
    let mut r = http()
        .request(method, api(s, path))
        .header("cookie", format!("stepgate_session={session}"));
    if let Some(b) = json_body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_session_reads_with_the_group_and_changes_only_with_a_fresh_aal3() {
    let s = start().await;
    let jane = user(&s.st, "jane").await;
    let john = user(&s.st, "john").await;
    assert!(jane.groups.iter().any(|g| g == "licence-admins"));
    assert!(!john.groups.iter().any(|g| g == "licence-admins"));

    // Not in the group: nothing, not even a read.
    let johns = signed_in_session(&s.st, &john, Utc::now()).await;
    let p = problem(
        as_session(&s, Method::GET, "/users", &johns, None).await,
        403,
    )
    .await;
    assert_eq!(
        p["type"],
        "https://stepgate.dev/problems/not-an-administrator"
    );

    // In the group at AAL2: reads, but no change.
    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;
    assert_eq!(
        as_session(&s, Method::GET, "/users", &aal2, None)
            .await
            .status(),
        200
    );
    let r = as_session(
        &s,
        Method::POST,
        "/users/john/disable",
        &aal2,
        Some(json!({})),
    )
    .await;
    let p = problem(r, 403).await;
    assert_eq!(p["type"], "https://stepgate.dev/problems/step-up-required");
    let url = p["step_up_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/_stepgate/step-up?t=", s.public_url)),
        "{url}"
    );
    // The step-up page it names opens for her session.
    let r = http()
        .get(url)
        .header("cookie", format!("stepgate_session={aal2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert!(!user(&s.st, "john").await.disabled, "nothing was changed");

    // AAL3, but passed longer ago than admin.write_max_age (5m).
    let stale = aal3_session(&s.st, &jane, Utc::now() - Duration::minutes(6)).await;
    let r = as_session(
        &s,
        Method::POST,
        "/users/john/disable",
        &stale,
        Some(json!({})),
    )
    .await;
    problem(r, 403).await;

    // Fresh AAL3: a change, but only sent as JSON (a cross-site form cannot).
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let r = as_session(&s, Method::POST, "/users/john/disable", &fresh, None).await;
    let p = problem(r, 403).await;
    assert_eq!(p["type"], "https://stepgate.dev/problems/json-required");
    let r = http()
        .post(api(&s, "/users/john/disable"))
        .header("cookie", format!("stepgate_session={fresh}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    problem(r, 403).await;
    assert!(!user(&s.st, "john").await.disabled);
    let r = as_session(
        &s,
        Method::POST,
        "/users/john/disable",
        &fresh,
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(user(&s.st, "john").await.disabled);

    // Audited under her name.
    let events = audit(&s.st, Some("user.disabled")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor.as_deref(), Some("admin:jane"));
    assert_eq!(events[0].subject.as_deref(), Some(john.id.as_str()));
    let refused: Vec<_> = audit(&s.st, Some("admin.write"))
        .await
        .into_iter()
        .filter(|e| e.detail["status"] == 403)
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "each refused change by an authenticated caller is audited"
    );
}

#[tokio::test]
async fn listings_page_by_limit_and_offset_and_decisions_by_cursor() {
    let s = start().await;
    let t = token(
        &s.st,
        "pager",
        &[Scope::UsersRead, Scope::UsersWrite, Scope::DecisionsRead],
    )
    .await;
    for i in 0..5 {
        let r = call(
            &s,
            Method::POST,
            "/users",
            Some(&t),
            Some((
                json!({ "username": format!("pg{i}") }).to_string(),
                "application/json",
            )),
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    // jane, john and the five: seven users by username.
    let page = |q: &'static str| {
        let (s, t) = (&s, &t);
        async move {
            let r = call(s, Method::GET, &format!("/users?{q}"), Some(t), None).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect()
    };
    let p1 = page("limit=3").await;
    assert_eq!(names(&p1), ["jane", "john", "pg0"]);
    assert_eq!(
        (p1["total"].clone(), p1["next"].clone()),
        (json!(7), json!("3"))
    );
    let p3 = page("limit=3&offset=6").await;
    assert_eq!(names(&p3), ["pg4"]);
    assert_eq!(p3["next"], Value::Null);
    assert_eq!(names(&page("search=PG3").await), ["pg3"]);
    assert_eq!(
        names(&page("limit=100000").await).len(),
        7,
        "capped, not refused"
    );

    // Decisions: a cursor walks them newest first, none twice, none missed.
    let t0 = Utc::now() - Duration::hours(1);
    let records: Vec<DecisionRecord> = (0..5)
        .map(|i| DecisionRecord {
            request_id: format!("req-{i}"),
            // Two share a millisecond: the cursor still tells them apart.
            time: t0 + Duration::seconds(i.min(3)),
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
            report_only: json!([]),
            detail: json!({}),
        })
        .collect();
    s.st.stores
        .durable
        .append_decisions(&records)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => "/decisions?user=jane&app=console&limit=2".to_string(),
            Some(c) => format!("/decisions?user=jane&app=console&limit=2&cursor={c}"),
        };
        let v: Value = call(&s, Method::GET, &q, Some(&t), None)
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["request_id"].as_str().unwrap().to_string()),
        );
        match v["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted,
        ["req-0", "req-1", "req-2", "req-3", "req-4"],
        "{seen:?}"
    );
    assert_eq!(seen.len(), 5);
    assert!(
        seen[..2].iter().all(|id| id == "req-3" || id == "req-4"),
        "newest first: {seen:?}"
    );
}

#[tokio::test]
async fn bad_input_answers_a_400_problem_naming_the_field() {
    let s = start().await;
    let t = token(
        &s.st,
        "input",
        &[
            Scope::UsersRead,
            Scope::UsersWrite,
            Scope::DecisionsRead,
            Scope::AuditRead,
        ],
    )
    .await;
    let post = |body: &'static str, ct: &'static str| {
        call(
            &s,
            Method::POST,
            "/users",
            Some(&t),
            Some((body.into(), ct)),
        )
    };
    let p = problem(post(r#"{"username": 5}"#, "application/json").await, 400).await;
    assert_eq!(p["field"], "username", "{p}");
    let p = problem(post(r#"{"email": "a@b"}"#, "application/json").await, 400).await;
    assert_eq!(p["field"], "username", "{p}");
    let p = problem(
        post(
            r#"{"username": "x", "groups": "admins"}"#,
            "application/json",
        )
        .await,
        400,
    )
    .await;
    assert_eq!(p["field"], "groups", "{p}");
    let p = problem(
        post(r#"{"username": "x", "colour": "red"}"#, "application/json").await,
        400,
    )
    .await;
    assert_eq!(p["field"], "colour", "{p}");
    problem(post("{not json", "application/json").await, 400).await;
    problem(post(r#"{"username": "x"}"#, "text/plain").await, 400).await;
    let p = problem(
        post(r#"{"username": "x", "email": "nope"}"#, "application/json").await,
        400,
    )
    .await;
    assert_eq!(p["field"], "email");
    let p = problem(post(r#"{"username": "  "}"#, "application/json").await, 400).await;
    assert_eq!(p["field"], "username");
    // An existing user: 409.
    problem(
        post(r#"{"username": "jane"}"#, "application/json").await,
        409,
    )
    .await;
    // Queries.
    for (q, field) in [
        ("/users?limit=ten", "limit"),
        ("/users?limit=0", "limit"),
        ("/users?colour=red", "colour"),
        ("/decisions?since=yesterday", "since"),
        ("/decisions?outcome=maybe", "outcome"),
        ("/decisions?cursor=garbage", "cursor"),
        ("/audit?after_seq=x", "after_seq"),
    ] {
        let p = problem(call(&s, Method::GET, q, Some(&t), None).await, 400).await;
        assert_eq!(p["field"], field, "{q}: {p}");
    }
    problem(
        call(&s, Method::GET, "/users/nobody", Some(&t), None).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_revoked_session_is_refused_at_its_next_request() {
    let s = start().await;
    let app = s.url("app.test", "/");
    let signed = Browser::new();
    let r = sign_in(&signed, &app, &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let session = signed.session_id(&app).unwrap();
    let t = token(
        &s.st,
        "revoker",
        &[Scope::SessionsRead, Scope::SessionsWrite],
    )
    .await;
    let v: Value = call(&s, Method::GET, "/users/jane/sessions", Some(&t), None)
        .await
        .json()
        .await
        .unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    let handle = items[0]["handle"].as_str().unwrap().to_string();
    assert!(
        !v.to_string().contains(&session),
        "the session id is never shown"
    );
    let all: Value = call(&s, Method::GET, "/sessions", Some(&t), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"][0]["handle"], handle.as_str());

    let tab = signed.tab(false);
    assert_eq!(tab.get(&app).send().await.unwrap().status(), 200);
    let r = call(
        &s,
        Method::DELETE,
        &format!("/sessions/{}", urlencode(&handle)),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = tab.get(&app).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "the revoked session is refused: sent to sign in"
    );
    assert!(header(&r, "location").contains("/_stepgate/login"));
    problem(
        call(
            &s,
            Method::DELETE,
            &format!("/sessions/{}", urlencode(&handle)),
            Some(&t),
            None,
        )
        .await,
        404,
    )
    .await;
    let ended = audit(&s.st, Some("sessions.ended")).await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].actor.as_deref(), Some("admin:token:revoker"));
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[tokio::test]
async fn an_unlock_lets_a_locked_out_user_sign_in() {
    let s = start().await;
    let app = s.url("app.test", "/");
    let wrong = Person {
        password: "not her password",
        ..JANE
    };
    for _ in 0..3 {
        let b = Browser::new();
        password(&b, &app, &wrong).await;
    }
    // Locked: the right password does not get her to the second step.
    let b = Browser::new();
    let r = password(&b, &app, &JANE).await;
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("name=\"code\""),
        "locked out, she is not asked for a code"
    );
    let t = token(&s.st, "helpdesk", &[Scope::UsersRead, Scope::UsersWrite]).await;
    let v: Value = call(&s, Method::GET, "/users/jane", Some(&t), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(v["locked"].is_string(), "{v}");

    let r = call(&s, Method::POST, "/users/jane/unlock", Some(&t), None).await;
    assert_eq!(r.status(), 200);
    let v: Value = call(&s, Method::GET, "/users/jane", Some(&t), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(v["locked"].is_null(), "{v}");
    let b = Browser::new();
    let r = sign_in(&b, &app, &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "upstream");
    let unlocks = audit(&s.st, Some("authn.unlock")).await;
    assert_eq!(unlocks.len(), 1);
    assert_eq!(
        unlocks[0].actor.as_deref(),
        Some("admin:token:helpdesk"),
        "{:?}",
        unlocks[0]
    );
}

#[tokio::test]
async fn reads_answer_what_the_stores_hold_and_every_call_is_audited() {
    let s = start().await;
    let all = token(&s.st, "ops", &Scope::ALL).await;
    let get = |p: &'static str| {
        let (s, all) = (&s, &all);
        async move {
            let r = call(s, Method::GET, p, Some(all), None).await;
            assert_eq!(r.status(), 200, "{p}");
            r.json::<Value>().await.unwrap()
        }
    };
    // A decision, recorded by a request to the app.
    let r = http().get(s.url("app.test", "/")).send().await.unwrap();
    let rid = header(&r, "x-request-id");
    s.st.access.decision_log().unwrap().flush().await;
    let v: Value = call(
        &s,
        Method::GET,
        &format!("/decisions/{rid}"),
        Some(&all),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["decision"]["request_id"], rid.as_str());
    assert_eq!(v["decision"]["outcome"], "sign_in");
    let r = call(
        &s,
        Method::POST,
        &format!("/decisions/{rid}/rerun"),
        Some(&all),
        None,
    )
    .await;
    let p = problem(r, 422).await;
    assert_eq!(p["type"], "https://stepgate.dev/problems/never-decided");

    let u = get("/users/jane").await;
    assert_eq!(u["user"]["username"], "jane");
    assert!(u["factors"].as_array().unwrap().len() >= 2, "{u}");
    assert!(!u.to_string().contains("secret"), "no secrets: {u}");

    let p = get("/policies").await;
    let names: Vec<&str> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["trial-deny-console", "sign-in-mfa"],
        "priority order"
    );
    assert_eq!(p["items"][0]["mode"], "report_only");

    // What-if: the report-only policy is in the trace, the default allows.
    let r = call(
        &s,
        Method::POST,
        "/policies/what-if",
        Some(&all),
        body_for("whatIf"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    assert_eq!(w["decision"]["outcome"], "allow", "{w}");

    // A draft with an error: 422 with its line and column.
    let draft = "default_outcome: allow\npolicies:\n  - name: x\n    priority: one\n";
    let r = call(
        &s,
        Method::POST,
        "/policies/validate",
        Some(&all),
        Some((draft.into(), "application/yaml")),
    )
    .await;
    let p = problem(r, 422).await;
    let e = &p["errors"][0];
    assert_eq!(e["line"], 4, "{p}");
    assert!(e["column"].is_number(), "{p}");
    let r = call(
        &s,
        Method::POST,
        "/policies/validate",
        Some(&all),
        body_for("validatePolicies"),
    )
    .await;
    assert_eq!(r.status(), 200);

    // The configuration's version, and a reload of the same file.
    let c = get("/config").await;
    assert_eq!(c["version"], s.st.runtime.load().config.version.as_str());
    let r = call(&s, Method::POST, "/config/reload", Some(&all), None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["changed"], false);
    std::fs::write(s.dir.path().join("stepgate.yaml"), "policies: [\n").unwrap();
    let r = call(&s, Method::POST, "/config/reload", Some(&all), None).await;
    let p = problem(r, 422).await;
    assert!(
        p["errors"][0].as_str().unwrap().contains("stepgate.yaml"),
        "{p}"
    );

    let a = get("/audit/verify").await;
    assert_eq!(a["intact"], true);
    let d = get("/devices").await;
    assert_eq!(d["total"], 0);
    problem(
        call(&s, Method::GET, "/devices/nope", Some(&all), None).await,
        404,
    )
    .await;

    // Every call is audited with the token's name.
    let reads = audit(&s.st, Some("admin.read")).await;
    assert!(reads.len() >= 8, "{}", reads.len());
    assert!(reads
        .iter()
        .all(|e| e.actor.as_deref() == Some("admin:token:ops")));
    let writes = audit(&s.st, Some("admin.write")).await;
    assert_eq!(writes.len(), 2, "two reloads");
    assert_eq!(writes[0].detail["operation"], "reloadConfig");
    assert_eq!(writes[1].detail["status"], 422);
    let q: Value = call(&s, Method::GET, "/audit?kind=admin.write", Some(&all), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(q["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_console_lists_users_unlocks_with_a_fresh_aal3_and_shows_a_decision_with_its_trace() {
    let s = start().await;
    let app = s.url("app.test", "/");
    let console = |p: &str| s.at(&format!("/_stepgate/admin{p}"));
    let jane = user(&s.st, "jane").await;
    let john = user(&s.st, "john").await;
    // John locks himself out.
    let wrong = Person {
        username: "john",
        password: "not his password",
        ..JANE
    };
    for _ in 0..3 {
        password(&Browser::new(), &app, &wrong).await;
    }
    assert!(s.st.authn.lock_state(&john).await.unwrap().is_some());

    let open = |session: String, path: String| async move {
        http()
            .get(path)
            .header("cookie", format!("stepgate_session={session}"))
            .send()
            .await
            .unwrap()
    };
    // John is no administrator.
    let johns = signed_in_session(&s.st, &john, Utc::now()).await;
    let r = open(johns, console("/users")).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Administrators only"));

    // Jane at AAL2 sees the list, John locked, but her unlock goes to the step-up page.
    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;
    let r = open(aal2.clone(), console("/users")).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-security-policy").contains("script-src 'self'"));
    let html = r.text().await.unwrap();
    assert!(html.contains("john") && html.contains("locked"), "{html}");
    assert!(!html.contains("<script>"), "no inline script");
    let csrf = support::field(&html, "csrf");
    let unlock = |session: String, csrf: String| {
        let url = console("/users/john/unlock");
        async move {
            http()
                .post(url)
                .header("cookie", format!("stepgate_session={session}"))
                .form(&[("csrf", csrf)])
                .send()
                .await
                .unwrap()
        }
    };
    let r = unlock(aal2.clone(), "forged".into()).await;
    assert_ne!(r.status(), 303, "a forged CSRF token changes nothing");
    let r = unlock(aal2.clone(), csrf).await;
    assert_eq!(r.status(), 303);
    assert!(
        header(&r, "location").contains("/_stepgate/step-up?t="),
        "{}",
        header(&r, "location")
    );
    assert!(
        s.st.authn.lock_state(&john).await.unwrap().is_some(),
        "still locked"
    );

    // With her security key just used: unlocked, and audited under her name.
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let html = open(fresh.clone(), console("/users"))
        .await
        .text()
        .await
        .unwrap();
    let r = unlock(fresh.clone(), support::field(&html, "csrf")).await;
    assert_eq!(r.status(), 303);
    assert!(header(&r, "location").contains("/_stepgate/admin/users?done="));
    assert!(s.st.authn.lock_state(&john).await.unwrap().is_none());
    let unlocks = audit(&s.st, Some("authn.unlock")).await;
    assert_eq!(unlocks[0].actor.as_deref(), Some("admin:jane"));
    assert!(audit(&s.st, Some("admin.write"))
        .await
        .iter()
        .any(|e| e.detail["operation"] == "console.unlock"));

    // A decision by request id, with its trace: the report-only policy that matched.
    let r = http()
        .get(&app)
        .header("cookie", format!("stepgate_session={aal2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = header(&r, "x-request-id");
    s.st.access.decision_log().unwrap().flush().await;
    let r = open(aal2.clone(), console(&format!("/decisions?id={rid}"))).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(&rid), "{html}");
    assert!(
        html.contains("trial-deny-console") && html.contains("would have decided deny"),
        "{html}"
    );
    assert!(html.contains("id=\"trace\""), "{html}");
    let html = open(aal2, console("/decisions?id=nope"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No decision is recorded"), "{html}");
}

/// A draft policy set closing the console, replayed against a signed-in user's recorded
/// requests through the API: exactly those change, grouped with their policies; and the
/// audit log exported as JSON lines (every event, in order) and as OCSF.
#[tokio::test]
async fn a_draft_is_replayed_against_recorded_decisions_and_the_audit_log_exports() {
    let s = start().await;
    let b = Browser::new();
    let r = sign_in(&b, &s.url("app.test", "/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    for _ in 0..3 {
        assert_eq!(
            b.get(s.url("app.test", "/")).send().await.unwrap().status(),
            200
        );
    }
    // The log's writer runs off the request path: until it has the four allowed (the
    // return from the sign-in, and the three).
    let allowed = || async {
        s.st.stores
            .durable
            .list_decisions(&stepgate_store::DecisionQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .filter(|d| d.kind == "access" && d.policy_outcome.as_deref() == Some("allow"))
            .count()
    };
    for _ in 0..200 {
        if allowed().await >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let n = allowed().await;
    assert_eq!(n, 4);
    let t = token(&s.st, "replayer", &[Scope::DecisionsRead, Scope::AuditRead]).await;
    let draft = "policies:
  - name: console-closed
    priority: 1
    targets: { apps: [console] }
    outcome: { deny: {} }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
";
    let r = call(
        &s,
        Method::POST,
        "/decisions/replay?policies_only=true&since=1h",
        Some(&t),
        Some((draft.into(), "application/yaml")),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let rep = &v["replay"];
    assert_eq!(
        rep["changed"], n,
        "the console's allowed requests, not the sign-in: {v}"
    );
    assert_eq!(rep["groups"].as_array().unwrap().len(), 1, "{v}");
    let g = &rep["groups"][0];
    assert_eq!(
        (
            &g["app"],
            &g["from"],
            &g["to"],
            &g["policy_after"],
            &g["count"]
        ),
        (
            &json!("console"),
            &json!("allow"),
            &json!("deny"),
            &json!("console-closed"),
            &json!(n)
        ),
        "{v}"
    );
    // A draft that does not load: its errors, positioned.
    let r = call(
        &s,
        Method::POST,
        "/decisions/replay?policies_only=true",
        Some(&t),
        Some((
            "policies:\n  - name: x\n    priority: one\n".into(),
            "application/yaml",
        )),
    )
    .await;
    let p = problem(r, 422).await;
    assert_eq!(p["errors"][0]["line"], 3, "{p}");

    let events = audit(&s.st, None).await.len();
    let r = call(&s, Method::GET, "/audit/export", Some(&t), None).await;
    assert_eq!(header(&r, "content-type"), "application/x-ndjson");
    let text = r.text().await.unwrap();
    let seqs: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(seqs.len() >= events, "{} of {events}", seqs.len());
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "every event, in order"
    );
    let r = call(
        &s,
        Method::GET,
        "/audit/export?format=ocsf&kind=admin.read",
        Some(&t),
        None,
    )
    .await;
    let ocsf: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !ocsf.is_empty() && ocsf.iter().all(|e| e["metadata"]["sequence"].is_i64()),
        "{ocsf:?}"
    );
    problem(
        call(&s, Method::GET, "/audit/export?format=csv", Some(&t), None).await,
        400,
    )
    .await;
}
