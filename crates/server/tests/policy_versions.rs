//! Policy sets saved in the durable store (`admin.policy_edits: store`) through the admin
//! API, over real HTTP: a draft validated as a reload is (a bad one refused with its line
//! and column, changing nothing), a saved version deciding the next request, a diff, a
//! rollback, the audit trail, a node started later running the newest version; and on two
//! nodes sharing PostgreSQL and Redis, a save on one node deciding the other's next
//! request within a second. The console's versions page (history, a version, a diff, a
//! draft checked, replayed and saved, a rollback) under the API's rules; a reload that
//! changes `admin.policy_edits` refused; a version written to the store by `stepgate policy
//! rollback` put in force at the next reload.

mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};
use stepgate_server::admin::tokens::{self, Scope};
use stepgate_server::admin::BASE;
use stepgate_store::{new_id, PostgresConfig, RedisConfig, SecretKey};
use support::{
    aal3_session, audit, client, field, password, redirects, signed_in_session, skipped, upstream,
    user, Browser, Server, JANE,
};

const CONFIG: &str = r#"
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
const OPEN: &str = "policies:
  - name: sign-in-with-a-password
    priority: 30
    targets: { sign_in: true }
    outcome: allow
";

/// `OPEN` with the reports denied.
const CLOSED: &str = "policies:
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
const BAD: &str = "policies:
  - name: reports-closed
    priority: 10
    targets: { apps: [no-such-app] }
    outcome: { deny: {} }
";

fn http() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

async fn call(
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

async fn admin_token(s: &Server) -> String {
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
async fn signed_in(node: &Server) -> String {
    let b = Browser::new();
    let url = node.url("app.test", "/");
    let r = password(&b, &url, &JANE).await;
    assert_eq!(r.status(), 200, "signed in and back at the app");
    b.session_id(&url).expect("the session cookie")
}

/// The status `node` answers for `/reports` with session `id`.
async fn reports(node: &Server, id: &str) -> u16 {
    http()
        .get(node.url("app.test", "/reports"))
        .header("cookie", format!("stepgate_session={id}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn save(s: &Server, t: &str, text: &str, base: Option<i64>) -> (u16, Value) {
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
fn assert_positioned(status: u16, p: &Value) {
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

#[tokio::test]
async fn drafts_are_validated_saved_diffed_rolled_back_and_audited() {
    // A data directory of the test's, so that a second node can open the same store.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_string();
    let key = SecretKey::generate();
    let node = |demo_users: bool| {
        let data_dir = data_dir.clone();
        let b = Server::build(CONFIG)
            .key(key.clone())
            .in_file("stepgate.yaml")
            .configure(move |c| c.server.data_dir = data_dir);
        if demo_users {
            b.demo_users()
        } else {
            b
        }
    };
    let s = node(true)
        .with("UPSTREAM", upstream::text("upstream").await)
        .start()
        .await;
    let t = admin_token(&s).await;
    let jane = signed_in(&s).await;
    assert_eq!(reports(&s, &jane).await, 200, "the files' policies allow");
    let (status, v) = call(&s, Method::GET, "/policies/versions", &t, None).await;
    assert_eq!(
        (status, &v["items"], &v["policy_edits"]),
        (200, &json!([]), &json!("store"))
    );

    let (status, v1) = save(&s, &t, OPEN, Some(0)).await;
    assert_eq!((status, &v1["version"]), (201, &json!(1)), "{v1}");
    let (status, v2) = save(&s, &t, CLOSED, Some(1)).await;
    assert_eq!((status, &v2["version"]), (201, &json!(2)), "{v2}");
    assert_eq!(
        reports(&s, &jane).await,
        403,
        "the saved set decides the next request"
    );

    // A bad draft changes nothing; so does a draft based on an old version.
    let (status, p) = save(&s, &t, BAD, Some(2)).await;
    assert_positioned(status, &p);
    let (status, p) = save(&s, &t, OPEN, Some(1)).await;
    assert_eq!(status, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("version 2"), "{p}");
    assert_eq!(reports(&s, &jane).await, 403);

    let (status, d) = call(&s, Method::GET, "/policies/versions/2/diff", &t, None).await;
    assert_eq!(
        (status, &d["added"], &d["removed"]),
        (200, &json!(4), &json!(0)),
        "{d}"
    );
    assert!(
        d["diff"]
            .as_str()
            .unwrap()
            .contains("+  - name: reports-closed"),
        "{d}"
    );

    let (status, v3) = call(&s, Method::POST, "/policies/versions/1/rollback", &t, None).await;
    assert_eq!(
        (status, &v3["version"], &v3["rollback_of"]),
        (201, &json!(3), &json!(1)),
        "{v3}"
    );
    assert_eq!(reports(&s, &jane).await, 200, "rolled back");
    let (_, shown) = call(&s, Method::GET, "/policies/versions/3", &t, None).await;
    assert_eq!(
        (&shown["text"], &shown["in_force"]),
        (&json!(OPEN), &json!(true))
    );

    let saved = audit(&s.st, Some("policy.saved")).await;
    let versions: Vec<_> = saved.iter().map(|e| e.detail["version"].clone()).collect();
    assert_eq!(
        versions,
        [json!(1), json!(2), json!(3)],
        "every change, and only those"
    );
    assert!(saved.iter().all(|e| e
        .actor
        .as_deref()
        .is_some_and(|a| a.starts_with("admin:token:policy-admin-"))));
    assert_eq!(saved[2].detail["rollback_of"], 1);

    // A node started on the same store runs the newest version from its first request.
    let (_, v4) = save(&s, &t, CLOSED, Some(3)).await;
    assert_eq!(v4["version"], 4, "{v4}");
    let later = node(false)
        .with("UPSTREAM", upstream::text("upstream").await)
        .start()
        .await;
    let jane = signed_in(&later).await;
    assert_eq!(
        reports(&later, &jane).await,
        403,
        "the newest stored version, at start"
    );
}

#[tokio::test]
async fn with_edits_off_saves_are_refused_and_the_files_rule() {
    let s = Server::build(&CONFIG.replace("policy_edits: store", "policy_edits: yaml"))
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await;
    let t = admin_token(&s).await;
    let (status, p) = save(&s, &t, CLOSED, None).await;
    assert_eq!(status, 409, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("admin.policy_edits"),
        "{p}"
    );
    let (_, v) = call(&s, Method::GET, "/policies/versions", &t, None).await;
    assert_eq!(
        (&v["items"], &v["policy_edits"]),
        (&json!([]), &json!("yaml"))
    );
}

#[tokio::test]
async fn a_save_on_one_node_decides_the_other_nodes_next_request_within_a_second() {
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
        return;
    };
    let run = &new_id()[..12];
    let pg = PostgresConfig {
        schema: format!("stepgate_policies_{run}"),
        ..PostgresConfig::new(pg)
    };
    let redis = RedisConfig {
        key_prefix: format!("stepgate-policies-{run}:"),
        ..RedisConfig::new(redis)
    };
    let key = SecretKey::generate();
    let up = upstream::text("upstream").await;
    let node = |users: bool| {
        let (pg, redis) = (pg.clone(), redis.clone());
        let b = Server::build(CONFIG)
            .with("UPSTREAM", up)
            .key(key.clone())
            .in_file("stepgate.yaml")
            .configure(move |c| {
                c.store.postgres = Some(pg);
                c.store.redis = Some(redis);
            });
        if users {
            b.demo_users()
        } else {
            b
        }
    };
    let a = node(true).start().await;
    let b = node(false).start().await;
    let t = admin_token(&a).await;
    let jane = signed_in(&b).await;
    assert_eq!(reports(&b, &jane).await, 200);
    let (status, v) = save(&a, &t, OPEN, None).await;
    assert_eq!(status, 201, "{v}");

    // Saved on A; B's next requests, polled, until B denies.
    let (status, v) = save(&a, &t, CLOSED, Some(1)).await;
    assert_eq!(status, 201, "{v}");
    let saved = Instant::now();
    while reports(&b, &jane).await != 403 {
        assert!(
            saved.elapsed() < Duration::from_secs(5),
            "node B never ran the saved set"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = saved.elapsed();
    eprintln!("node B ran the set saved on node A {took:?} after the save answered");
    assert!(
        took < Duration::from_secs(1),
        "node B ran the saved set after {took:?}"
    );

    // A bad draft on A: refused with its position, nothing saved, nothing changed on B.
    let (status, p) = save(&a, &t, BAD, Some(2)).await;
    assert_positioned(status, &p);
    let (_, listed) = call(&b, Method::GET, "/policies/versions", &t, None).await;
    assert_eq!(
        (
            listed["items"].as_array().unwrap().len(),
            &listed["in_force"]
        ),
        (2, &json!(2))
    );
    assert_eq!(reports(&b, &jane).await, 403);

    // Rolled back on B: A follows.
    let (status, v) = call(&b, Method::POST, "/policies/versions/1/rollback", &t, None).await;
    assert_eq!(status, 201, "{v}");
    let rolled = Instant::now();
    while reports(&a, &jane).await != 200 {
        assert!(
            rolled.elapsed() < Duration::from_secs(5),
            "node A never rolled back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rolled.elapsed() < Duration::from_secs(1),
        "{:?}",
        rolled.elapsed()
    );
    assert_eq!(reports(&b, &jane).await, 200);

    drop((a, b));
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", pg.schema))
        .execute(&pool)
        .await
        .unwrap();
}

/// The console's page (or form) at `path` under `/_stepgate/admin`, with `session`.
async fn console(
    s: &Server,
    session: &str,
    path: &str,
    form: Option<&[(&str, &str)]>,
) -> (u16, String, String) {
    let url = s.at(&format!("/_stepgate/admin{path}"));
    let r = match form {
        Some(f) => http().post(url).form(f),
        None => http().get(url),
    };
    let r = r
        .header("cookie", format!("stepgate_session={session}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = support::header(&r, "location");
    (status, location, r.text().await.unwrap())
}

/// A server with policy edits on (or off) and `jane` in `admin.group`, its data directory.
async fn console_server(edits: &str) -> Server {
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

#[tokio::test]
async fn the_console_checks_saves_diffs_and_rolls_back_versions_under_the_apis_rules() {
    let s = console_server("store").await;
    let jane = user(&s.st, "jane").await;
    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;
    assert_eq!(reports(&s, &aal2).await, 200);
    s.st.access.decision_log().unwrap().flush().await;
    // One recorded decision that no longer reads: the replay skips it and says so.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        s.dir.path().join("data/stepgate.db").display()
    ))
    .await
    .unwrap();
    let corrupted =
        sqlx::query("UPDATE decisions SET detail_json = 'not json' WHERE app = 'console'")
            .execute(&db)
            .await
            .unwrap()
            .rows_affected();
    assert!(corrupted >= 1);

    let (status, _, html) = console(&s, &aal2, "/policies/versions", None).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("No version saved yet") && html.contains(">Versions</a>"),
        "{html}"
    );
    assert!(
        html.contains("id=\"step-up-needed\""),
        "AAL2 is told to step up first: {html}"
    );
    let csrf = field(&html, "csrf");

    // A bad draft: its error positioned, no save button.
    let (status, _, html) = console(
        &s,
        &aal2,
        "/policies/versions/check",
        Some(&[("csrf", &csrf), ("draft", BAD)]),
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert!(
        html.contains("line 4, column 23") && !html.contains("id=\"save-version\""),
        "{html}"
    );
    // A good one: loads, replayed (the unreadable record counted), and can be saved.
    let (status, _, html) = console(
        &s,
        &aal2,
        "/policies/versions/check",
        Some(&[("csrf", &csrf), ("draft", CLOSED)]),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"save-version\""), "{html}");
    assert!(
        html.contains(&format!("{corrupted} records could not be re-decided")),
        "{html}"
    );
    let checked = field(&html, "checked");
    let save_form = |csrf: String, checked: String| {
        vec![
            ("csrf", csrf),
            ("draft", CLOSED.to_string()),
            ("note", "close the reports".to_string()),
            ("base", "0".to_string()),
            ("checked", checked),
        ]
    };

    // AAL2: the page again, the draft kept, the step-up link; nothing saved.
    let f = save_form(csrf.clone(), checked.clone());
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, html) = console(&s, &aal2, "/policies/versions/save", Some(&f)).await;
    assert_eq!(status, 403, "{html}");
    assert!(
        html.contains("step-up?t=") && html.contains("reports-closed"),
        "{html}"
    );
    assert!(s
        .st
        .stores
        .durable
        .latest_policy_version()
        .await
        .unwrap()
        .is_none());

    // AAL3 just now: a forged CSRF token and a draft edited since its check are refused.
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let (_, _, html) = console(&s, &fresh, "/policies/versions", None).await;
    assert!(!html.contains("id=\"step-up-needed\""), "{html}");
    let csrf = field(&html, "csrf");
    let post = |f: Vec<(&'static str, String)>| {
        let s = &s;
        let fresh = fresh.clone();
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            console(s, &fresh, "/policies/versions/save", Some(&f)).await
        }
    };
    let (status, ..) = post(save_form("forged".into(), checked.clone())).await;
    assert_ne!(status, 303);
    let (status, _, html) = post(save_form(csrf.clone(), "0".repeat(64))).await;
    assert_eq!(status, 409, "{html}");
    assert!(s
        .st
        .stores
        .durable
        .latest_policy_version()
        .await
        .unwrap()
        .is_none());
    let (status, location, _) = post(save_form(csrf.clone(), checked)).await;
    assert_eq!(status, 303);
    assert!(
        location.contains("/admin/policies/versions?done="),
        "{location}"
    );
    assert_eq!(
        reports(&s, &aal2).await,
        403,
        "version 1 decides the next request"
    );

    // Version 2 (the files' set) through the API's code; the history, a version, a diff.
    let t = admin_token(&s).await;
    assert_eq!(save(&s, &t, OPEN, Some(1)).await.0, 201);
    let (_, _, html) = console(&s, &fresh, "/policies/versions?version=1", None).await;
    assert!(
        html.contains("id=\"version-text\"") && html.contains("closed for audit"),
        "{html}"
    );
    assert!(
        html.contains("close the reports") && html.contains("admin:jane"),
        "{html}"
    );
    let (_, _, html) = console(&s, &fresh, "/policies/versions?from=1", None).await;
    let diff = &html[html.find("id=\"diff\"").expect("the diff")..];
    assert!(
        diff.contains("From version 1 to version 2")
            && diff.contains("<del>-  - name: reports-closed</del>"),
        "{diff}"
    );
    let (status, _, _) = console(&s, &fresh, "/policies/versions?version=9", None).await;
    assert_eq!(status, 404);

    // One-click rollback to version 1: needs AAL3 (AAL2 goes to the step-up page).
    let roll = [("csrf", csrf.as_str()), ("base", "2")];
    let (status, location, _) = console(
        &s,
        &aal2,
        "/policies/versions/1/rollback",
        Some(&[
            (
                "csrf",
                &field(
                    &console(&s, &aal2, "/policies/versions", None).await.2,
                    "csrf",
                ),
            ),
            ("base", "2"),
        ]),
    )
    .await;
    assert_eq!(status, 303);
    assert!(location.contains("/_stepgate/step-up?t="), "{location}");
    let (status, location, _) =
        console(&s, &fresh, "/policies/versions/1/rollback", Some(&roll)).await;
    assert_eq!(
        (status, location.contains("done=")),
        (303, true),
        "{location}"
    );
    let v3 =
        s.st.stores
            .durable
            .latest_policy_version()
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        (v3.version, v3.rollback_of, v3.author.as_str()),
        (3, Some(1), "admin:jane")
    );
    assert_eq!(reports(&s, &aal2).await, 403, "rolled back to version 1");

    let saved = audit(&s.st, Some("policy.saved")).await;
    let by: Vec<_> = saved
        .iter()
        .map(|e| (e.detail["version"].clone(), e.actor.clone().unwrap()))
        .collect();
    assert_eq!(by[0], (json!(1), "admin:jane".to_string()));
    assert_eq!(by[2], (json!(3), "admin:jane".to_string()));
    assert_eq!(saved[0].ip.as_deref(), Some("127.0.0.1"));
    let ops: Vec<_> = audit(&s.st, Some("admin.write"))
        .await
        .iter()
        .map(|e| e.detail["operation"].clone())
        .collect();
    assert!(
        ops.contains(&json!("console.policy_save"))
            && ops.contains(&json!("console.policy_rollback")),
        "{ops:?}"
    );
}

#[tokio::test]
async fn with_edits_off_the_console_has_no_versions_page() {
    let s = console_server("yaml").await;
    let jane = user(&s.st, "jane").await;
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let (status, _, html) = console(&s, &fresh, "/policies/versions", None).await;
    assert_eq!(status, 404);
    assert!(html.contains("admin.policy_edits: yaml"), "{html}");
    let (_, _, html) = console(&s, &fresh, "/policies", None).await;
    assert!(!html.contains(">Versions</a>"), "{html}");
}

#[tokio::test]
async fn a_reload_that_changes_policy_edits_is_refused_naming_the_key() {
    let s = console_server("store").await;
    let path = s.dir.path().join("stepgate.yaml");
    let before = s.st.runtime.load_full();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("policy_edits: store", "policy_edits: yaml"),
    )
    .unwrap();
    match stepgate_server::app::reload::reload_checked(&s.st) {
        Err(stepgate_server::app::reload::ReloadRefused::Invalid(e)) => {
            assert!(
                e[0].contains("admin.policy_edits changed from `store` to `yaml`"),
                "{e:?}"
            );
            assert!(e[0].contains("restart"), "{e:?}");
        }
        other => panic!("taken: {other:?}"),
    }
    assert!(
        std::sync::Arc::ptr_eq(&before, &s.st.runtime.load_full()),
        "the running configuration stays"
    );
    std::fs::write(&path, text).unwrap();
    assert!(stepgate_server::reload(&s.st), "the same mode reloads");
}

#[tokio::test]
async fn a_version_the_cli_wrote_is_put_in_force_at_the_next_reload() {
    let s = console_server("store").await;
    let jane = user(&s.st, "jane").await;
    let janes = signed_in_session(&s.st, &jane, Utc::now()).await;
    // What `stepgate policy rollback` writes: a version in the store, no node told.
    stepgate_server::app::stored_policies::record(
        s.st.stores.durable.as_ref(),
        CLOSED.into(),
        None,
        "admin:cli:ops",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reports(&s, &janes).await, 200, "not heard of yet");
    let name = format!("reloader-{}", &new_id()[..8]);
    let (t, _) = tokens::create(
        s.st.stores.durable.as_ref(),
        &name,
        &[Scope::ConfigWrite],
        Utc::now() + chrono::Duration::days(1),
    )
    .await
    .unwrap();
    let (status, v) = call(&s, Method::POST, "/config/reload", &t, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(reports(&s, &janes).await, 403, "in force after the reload");
    assert_eq!(s.st.stored_policies.in_force().map(|v| v.version), Some(1));
}
