//! What the admin API reads: listings paged by limit and offset (decisions by cursor),
//! answers that match the stores with every call audited, and a 400 problem naming the field
//! for bad input.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stepgate_server::admin::tokens::Scope;
use stepgate_store::DecisionRecord;

use crate::common::*;
use crate::support::{audit, header};

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
            detail: json!({}).into(),
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
