//! What the admin API and console change: an unlock lets a locked-out user sign in,
//! the console unlocks with a fresh AAL3 and shows a decision's trace, and a draft policy is
//! replayed against recorded decisions.

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};
use stepgate_server::admin::tokens::Scope;

use crate::common::*;
use crate::support;
use crate::support::{
    aal3_session, audit, header, password, sign_in, signed_in_session, user, Browser, Person, JANE,
};

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
