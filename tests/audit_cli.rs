//! `stepgate audit search|export|verify` against a real store (SQLite, and PostgreSQL when
//! `STEPGATE_TEST_POSTGRES_URL` is set): the filters pick exactly the events they name, the
//! OCSF export maps each class, and `verify` passes an intact log and fails — naming the
//! row — once a row is edited in the database (the append-only triggers dropped first, as
//! anyone with the database's owner rights can).

use std::path::Path;
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use serde_json::Value;
use stepgate_store::{open_stores, NewAuditEvent, SecretKey};

const BIN: &str = env!("CARGO_BIN_EXE_stepgate");

fn run(key: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("STEPGATE_SECRET_KEY", key)
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An event to seed: kind, actor, subject, client address, whether three days ago.
type Seeded<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    bool,
);

/// Writes a configuration whose store is `store_yaml` and seeds its audit log; the key.
async fn setup(dir: &Path, store_yaml: &str) -> String {
    let yaml = format!("server:\n  data_dir: data\n{store_yaml}default_outcome: allow\n");
    std::fs::write(dir.join("stepgate.yaml"), yaml).unwrap();
    let cfg = stepgate_config::load(&dir.join("stepgate.yaml")).unwrap();
    let key = SecretKey::generate();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let stores = open_stores(&cfg.store, &dir.join("data"), &key)
        .await
        .unwrap();
    let old = Utc::now() - Duration::days(3);
    let events: Vec<Seeded> = vec![
        // kind, actor, subject, ip, three days ago
        (
            "signin.success",
            Some("jane"),
            None,
            Some("203.0.113.9"),
            true,
        ),
        (
            "signin.denied",
            Some("bob"),
            None,
            Some("198.51.100.7"),
            false,
        ),
        (
            "authn.lockout",
            Some("system"),
            Some("u-bob"),
            Some("198.51.100.7"),
            false,
        ),
        ("factor.enrolled", Some("jane"), Some("u-jane"), None, false),
        (
            "user.created",
            Some("admin:cli"),
            Some("u-carol"),
            None,
            false,
        ),
        ("device.posture", Some("jamf"), Some("dev-1"), None, false),
    ];
    for (kind, actor, subject, ip, is_old) in events {
        let mut e = NewAuditEvent::now(kind);
        if is_old {
            e.time = old;
        }
        e.actor = actor.map(str::to_string);
        e.subject = subject.map(str::to_string);
        e.ip = ip.map(str::to_string);
        e.detail =
            serde_json::json!({ "username": actor.filter(|a| *a != "system").unwrap_or("bob") });
        stores.durable.append_audit(&e).await.unwrap();
    }
    key.to_base64().to_string()
}

fn cfg(dir: &Path) -> String {
    dir.join("stepgate.yaml").display().to_string()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// search, export and an intact verify.
fn read_back(key: &str, c: &str) {
    // By user: the user's own events and the events done to them (by id), newest first.
    let o = run(
        key,
        &["audit", "search", "-c", c, "--user", "u-bob", "--json"],
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(kinds(&json_lines(&out(&o))), ["authn.lockout"]);
    let o = run(
        key,
        &["audit", "search", "-c", c, "--user", "jane", "--json"],
    );
    assert_eq!(
        kinds(&json_lines(&out(&o))),
        ["factor.enrolled", "signin.success"]
    );
    let o = run(
        key,
        &[
            "audit",
            "search",
            "-c",
            c,
            "--address",
            "198.51.100.7",
            "--json",
        ],
    );
    assert_eq!(
        kinds(&json_lines(&out(&o))),
        ["authn.lockout", "signin.denied"]
    );
    let o = run(
        key,
        &[
            "audit",
            "search",
            "-c",
            c,
            "--kind",
            "user.created",
            "--json",
        ],
    );
    assert_eq!(kinds(&json_lines(&out(&o))), ["user.created"]);
    let o = run(
        key,
        &[
            "audit", "search", "-c", c, "--since", "1d", "--limit", "2", "--json",
        ],
    );
    assert_eq!(
        kinds(&json_lines(&out(&o))),
        ["device.posture", "user.created"]
    );
    let o = run(
        key,
        &["audit", "search", "-c", c, "--until", "1d", "--json"],
    );
    assert_eq!(kinds(&json_lines(&out(&o))), ["signin.success"]);
    // The table: a header and one row per event.
    let o = run(key, &["audit", "search", "-c", c, "--user", "bob"]);
    let t = out(&o);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 2, "{t}");
    assert!(
        lines[0].starts_with("SEQ") && lines[0].contains("ADDRESS"),
        "{t}"
    );
    assert!(
        lines[1].contains("signin.denied") && lines[1].contains("198.51.100.7"),
        "{t}"
    );
    let o = run(key, &["audit", "search", "-c", c, "--since", "yesterday"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("--since `yesterday`"), "{}", err(&o));

    // Export: all, oldest first, as stored; and as OCSF.
    let o = run(key, &["audit", "export", "-c", c]);
    let all = json_lines(&out(&o));
    assert_eq!(all.len(), 6);
    assert_eq!(
        all.iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(all[0]["hash"].as_str().unwrap().len() == 64);
    let o = run(
        key,
        &[
            "audit", "export", "-c", c, "--format", "ocsf", "--since", "1d",
        ],
    );
    let ocsf = json_lines(&out(&o));
    assert_eq!(ocsf.len(), 5);
    let class = |i: usize| {
        (
            ocsf[i]["class_uid"].as_u64().unwrap(),
            ocsf[i]["activity_id"].as_u64().unwrap(),
            ocsf[i]["status_id"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        class(0),
        (3002, 1, 2),
        "a refused sign-in: Authentication, Logon, Failure"
    );
    assert_eq!(class(1), (3001, 9, 1), "a lockout: Account Change, Lock");
    assert_eq!(
        class(2),
        (3001, 10, 1),
        "an enrolment: Account Change, MFA Factor Enable"
    );
    assert_eq!(class(3), (3001, 1, 1), "a user created");
    assert_eq!(ocsf[4]["class_uid"], 0, "a posture report: Base Event");
    for e in &ocsf {
        for k in [
            "activity_id",
            "category_uid",
            "class_uid",
            "severity_id",
            "time",
            "type_uid",
            "user",
            "src_endpoint",
            "status",
            "metadata",
        ] {
            assert!(!e[k].is_null(), "{k} missing in {e}");
        }
        assert_eq!(
            e["type_uid"].as_u64().unwrap(),
            e["class_uid"].as_u64().unwrap() * 100 + e["activity_id"].as_u64().unwrap()
        );
        assert_eq!(e["metadata"]["product"]["name"], "stepgate");
        assert!(e["metadata"]["product"]["version"].is_string());
    }
    assert_eq!(ocsf[0]["src_endpoint"]["ip"], "198.51.100.7");
    assert_eq!(ocsf[0]["user"]["name"], "bob");
    assert_eq!(ocsf[1]["user"]["uid"], "u-bob");

    let o = run(key, &["audit", "verify", "-c", c]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("6 events"), "{}", out(&o));
}

fn assert_verify_names(key: &str, c: &str, seq: i64) {
    let o = run(key, &["audit", "verify", "-c", c]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(
        err(&o).contains(&format!("audit event {seq} was altered")),
        "{}",
        err(&o)
    );
}

#[tokio::test]
async fn sqlite_search_export_and_verify_catch_an_edited_row() {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(dir.path(), "").await;
    let c = cfg(dir.path());
    read_back(&key, &c);

    // Someone with the database file changes who was locked out.
    let db = dir.path().join("data").join("stepgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER audit_events_no_update; \
         UPDATE audit_events SET subject = 'u-mallory' WHERE seq = 3;",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_verify_names(&key, &c, 3);
}

#[tokio::test]
async fn postgres_search_export_and_verify_catch_an_edited_row() {
    let Ok(url) = std::env::var("STEPGATE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set STEPGATE_TEST_POSTGRES_URL");
        return;
    };
    let schema = format!(
        "stepgate_audit_cli_{}",
        &stepgate_store::new_id()[..10].to_lowercase()
    );
    let dir = tempfile::tempdir().unwrap();
    let key = setup(
        dir.path(),
        &format!("store:\n  postgres:\n    url: {url}\n    schema: {schema}\n"),
    )
    .await;
    let c = cfg(dir.path());
    read_back(&key, &c);

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!(
        "ALTER TABLE \"{schema}\".audit_events DISABLE TRIGGER audit_events_append_only; \
         UPDATE \"{schema}\".audit_events SET ip = '192.0.2.1' WHERE seq = 2;"
    ))
    .execute(&pool)
    .await
    .unwrap();
    assert_verify_names(&key, &c, 2);
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}
