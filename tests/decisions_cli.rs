//! `stepgate explain` and `stepgate replay` against a real store: a recorded day of traffic
//! (each decision recorded as the live configuration decides it, its context stored the
//! way the decision log stores it), a draft that tightens one policy and adds another, and
//! the exact set of outcomes that would change.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use stepgate_policy::RequestContext;
use stepgate_store::{open_stores, DecisionRecord, SecretKey};

const BIN: &str = env!("CARGO_BIN_EXE_stepgate");

const LIVE: &str = r#"
server:
  data_dir: data
apps:
  - id: console
    hosts: [console.test]
    upstream: http://127.0.0.1:9
    routes:
      - { name: admin, path: "/admin/**", tags: [admin] }
default_outcome: allow
policies:
  - name: admin-mfa
    priority: 10
    targets: { apps: [console], routes: [ { tags: [admin] } ] }
    outcome: { step_up: { min_aal: 2 } }
  - name: trial-contractors
    priority: 20
    report_only: true
    targets: { apps: [console] }
    conditions: [ { groups: { any: [contractors] } } ]
    outcome: { deny: { message: "contractors are kept out" } }
"#;

/// LIVE with `admin-mfa` raised to AAL3 and the contractors policy enforced.
fn draft() -> String {
    LIVE.replace("min_aal: 2", "min_aal: 3")
        .replace("    report_only: true\n", "")
}

fn context(
    user: Option<(&str, &[&str])>,
    kind: &str,
    path: &str,
    at: chrono::DateTime<Utc>,
) -> Value {
    let mut c = json!({
        "kind": kind,
        "time": at,
        "request": { "app": if kind == "access" { json!("console") } else { Value::Null }, "method": "GET", "path": path },
        "network": { "ip": "203.0.113.9", "country": "FR" },
        "device": { "id": "dev-1", "state": "managed", "compliant": false,
                    "failing_checks": [ { "id": "disk_encryption", "message": "Disk encryption is off" } ],
                    "posture": { "os_version": "14.2", "encrypted": false } },
        "risk": { "level": "low", "reasons": [] }
    });
    if let Some((name, groups)) = user {
        c["user"] =
            json!({ "username": name, "groups": groups, "attributes": { "department": "ops" } });
    }
    c
}

/// A record of `ctx` as the live configuration decides it (what the decision log writes).
fn record(live: &stepgate_config::Config, id: &str, ctx: Value) -> DecisionRecord {
    let parsed: RequestContext = serde_json::from_value(ctx.clone()).unwrap();
    // Stored the way the log stores it: the context serialized.
    let stored = serde_json::to_value(&parsed).unwrap();
    let d = live.policy_set.decide(&parsed);
    let report_only: Vec<Value> = live
        .policy_set
        .report_only(&parsed, &d)
        .map(|m| json!({ "policy": m.policy, "outcome": m.outcome.kind() }))
        .collect();
    DecisionRecord {
        request_id: id.into(),
        time: parsed.time,
        kind: ctx["kind"].as_str().unwrap().into(),
        user: parsed.user.as_ref().map(|u| u.username.clone()),
        session: None,
        app: parsed.request.app.clone(),
        route: live.policy_set.route_of(&parsed),
        method: "GET".into(),
        path: parsed.request.path.clone(),
        ip: Some("203.0.113.9".into()),
        device: Some("dev-1".into()),
        policy: d.policy.map(str::to_string),
        policy_outcome: Some(d.kind().as_str().into()),
        outcome: d.kind().as_str().into(),
        report_only: Value::Array(report_only),
        detail: json!({
            "context": stored,
            "policy_requirement": d.outcome.requirement(),
            "trace": live.policy_set.explain(&parsed),
        })
        .into(),
    }
}

fn run(key: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("STEPGATE_SECRET_KEY", key)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn setup(dir: &Path) -> String {
    std::fs::write(dir.join("live.yaml"), LIVE).unwrap();
    std::fs::write(dir.join("draft.yaml"), draft()).unwrap();
    let key = SecretKey::generate();
    let live = stepgate_config::load(&dir.join("live.yaml")).unwrap();
    let now = Utc::now();
    let h = |n: i64| now - Duration::hours(n);
    let mut records = vec![
        record(
            &live,
            "r-reports-jane",
            context(Some(("jane", &["staff"])), "access", "/reports", h(20)),
        ),
        record(
            &live,
            "r-admin-jane",
            context(Some(("jane", &["staff"])), "access", "/admin/users", h(10)),
        ),
        record(
            &live,
            "r-admin-john",
            context(
                Some(("john", &["staff"])),
                "access",
                "/admin/licences",
                h(5),
            ),
        ),
        record(
            &live,
            "r-reports-bob",
            context(Some(("bob", &["contractors"])), "access", "/reports", h(3)),
        ),
        record(
            &live,
            "r-signin-jane",
            context(Some(("jane", &["staff"])), "sign_in", "/", h(2)),
        ),
        // Older than the period: not replayed.
        record(
            &live,
            "r-old-bob",
            context(Some(("bob", &["contractors"])), "access", "/reports", h(48)),
        ),
    ];
    // A request that never reached the policies (no session): counted, not compared.
    let mut anon = records[0].clone();
    anon.request_id = "r-anon".into();
    anon.user = None;
    anon.policy = None;
    anon.policy_outcome = None;
    anon.outcome = "sign_in".into();
    anon.detail = json!({ "context": null }).into();
    anon.time = h(1);
    records.push(anon);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stores = open_stores(&live.store, &dir.join("data"), &key)
            .await
            .unwrap();
        stores.durable.append_decisions(&records).await.unwrap();
    });
    key.to_base64().to_string()
}

#[test]
fn replay_reports_exactly_the_outcomes_a_draft_changes() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(dir.path());
    let draft = dir.path().join("draft.yaml");
    let live = dir.path().join("live.yaml");
    let out = run(
        &key,
        &[
            "replay",
            "--config",
            draft.to_str().unwrap(),
            "--store-config",
            live.to_str().unwrap(),
            "--since",
            "24h",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decisions"], 6, "{v:#}");
    assert_eq!(v["compared"], 5, "{v:#}");
    assert_eq!(v["changed"], 3, "{v:#}");
    assert_eq!(
        v["groups"],
        json!([
            { "app": "console", "from": "allow", "to": "deny", "policy_before": "(default)",
              "policy_after": "trial-contractors", "count": 1, "examples": ["r-reports-bob"] },
            { "app": "console", "from": "step_up", "to": "step_up", "policy_before": "admin-mfa",
              "policy_after": "admin-mfa", "count": 2, "examples": ["r-admin-jane", "r-admin-john"] },
        ]),
        "{v:#}"
    );
    // The same draft as the live file: nothing changes.
    let out = run(
        &key,
        &[
            "replay",
            "--config",
            live.to_str().unwrap(),
            "--since",
            "7d",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("7 decisions") && text(&out).contains("0 would change"),
        "{}",
        text(&out)
    );
    // A period that is not a duration is a clear error.
    let out = run(
        &key,
        &[
            "replay",
            "--config",
            live.to_str().unwrap(),
            "--since",
            "yesterday",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("--since"), "{}", text(&out));
}

#[test]
fn explain_shows_the_record_and_decides_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(dir.path());
    let live = dir.path().join("live.yaml");
    let draft = dir.path().join("draft.yaml");
    let out = run(
        &key,
        &[
            "explain",
            "r-admin-jane",
            "--config",
            live.to_str().unwrap(),
            "--rerun",
            "--against",
            draft.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("request:  r-admin-jane"), "{t}");
    assert!(t.contains("user:     jane"), "{t}");
    assert!(t.contains("app:      console (route admin)"), "{t}");
    assert!(t.contains("by policy `admin-mfa`"), "{t}");
    assert!(t.contains("recorded trace:"), "{t}");
    assert!(t.contains("[10] admin-mfa"), "{t}");
    assert!(
        t.contains("decided again under the configuration in force: step_up (unchanged)"),
        "{t}"
    );
    assert!(t.contains("step_up (CHANGED)"), "{t}");
    assert!(t.contains("AAL3"), "{t}");

    // A report-only policy's would-be outcome is shown.
    let out = run(
        &key,
        &[
            "explain",
            "r-reports-bob",
            "--config",
            live.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["decision"]["report_only"],
        json!([{ "policy": "trial-contractors", "outcome": "deny" }])
    );

    // An unknown id: a clear error, exit 1.
    let out = run(
        &key,
        &["explain", "nope", "--config", live.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no decision is recorded for request `nope`"),
        "{}",
        text(&out)
    );
}

#[test]
fn replay_skips_and_counts_records_that_do_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(dir.path());
    // A row whose detail is not JSON, and one whose context is not a context.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            dir.path().join("data/stepgate.db").display()
        ))
        .await
        .unwrap();
        for (id, detail) in [
            ("r-admin-john", "not json"),
            ("r-signin-jane", r#"{"context": {"kind": 5}}"#),
        ] {
            let done = sqlx::query("UPDATE decisions SET detail_json = ? WHERE request_id = ?")
                .bind(detail)
                .bind(id)
                .execute(&db)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1, "{id}");
        }
    });
    let draft = dir.path().join("draft.yaml");
    let live = dir.path().join("live.yaml");
    let args = |json: bool| {
        let mut a = vec![
            "replay".to_string(),
            "--config".into(),
            draft.to_str().unwrap().into(),
            "--store-config".into(),
            live.to_str().unwrap().into(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let a = args(true);
    let out = run(&key, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &v["decisions"],
            &v["unreadable"],
            &v["compared"],
            &v["changed"]
        ),
        (&json!(6), &json!(2), &json!(3), &json!(2)),
        "{v:#}"
    );
    let skipped = v["unreadable_examples"].to_string();
    assert!(
        skipped.contains("r-admin-john") && skipped.contains("r-signin-jane"),
        "{v:#}"
    );
    let a = args(false);
    let out = run(&key, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 records could not be re-decided"),
        "{}",
        text(&out)
    );
}
