//! The admin console (`/_stepgate/admin/…`) over real HTTP and a real SQLite store: every
//! page for administrators only (403 for anyone else), under the portal's CSP with no
//! inline script; a revoke that needs CSRF and a fresh AAL3 and refuses the session's next
//! request; the dashboard's chart, denials and locked users; decisions filtered and linked
//! to their traces; what-if and a draft's validation and replay through the pipeline; the
//! audit log searched and exported as JSON lines and OCSF; and a wrong password audited as
//! `signin.failure` with the user and address, up to its bound.

mod support;

use chrono::Utc;
use serde_json::Value;
use support::{
    aal3_session, audit, client, header, password, redirects, signed_in_session, upstream, user,
    Browser, Person, Server, JANE,
};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
  - id: vault
    hosts: [vault.test]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
admin:
  group: licence-admins
log:
  decisions: { allowed_one_in: 1 }
regulation: { max_retries: 0, ip_max_retries: 0, max_consecutive_failures: 100 }
default_outcome: allow
policies:
  - name: trial-deny-console
    priority: 5
    report_only: true
    targets: { apps: [console] }
    outcome: { deny: { message: "would block" } }
  - name: vault-closed
    priority: 10
    targets: { apps: [vault] }
    outcome: { deny: { message: "closed" } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

async fn start(config: &str) -> Server {
    Server::build(config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await
}

fn http() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

async fn get(s: &Server, session: &str, path: &str) -> reqwest::Response {
    http()
        .get(s.at(&format!("/_stepgate/admin{path}")))
        .header("cookie", format!("stepgate_session={session}"))
        .send()
        .await
        .unwrap()
}

async fn post(s: &Server, session: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    http()
        .post(s.at(&format!("/_stepgate/admin{path}")))
        .header("cookie", format!("stepgate_session={session}"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// `session`'s request to `url` (an app), and its request id.
async fn visit(s: &Server, session: Option<&str>, url: &str) -> (u16, String) {
    let mut r = http().get(url);
    if let Some(sid) = session {
        r = r.header("cookie", format!("stepgate_session={sid}"));
    }
    let r = r.send().await.unwrap();
    let _ = s;
    (r.status().as_u16(), header(&r, "x-request-id"))
}

const PAGES: [&str; 9] = [
    "/",
    "/users",
    "/devices",
    "/sessions",
    "/decisions",
    "/what-if",
    "/policies",
    "/audit",
    "/audit/export?format=jsonl",
];

#[tokio::test]
async fn every_page_is_for_administrators_only_under_the_portal_csp() {
    let s = start(CONFIG).await;
    let john = user(&s.st, "john").await;
    let jane = user(&s.st, "jane").await;
    let johns = signed_in_session(&s.st, &john, Utc::now()).await;
    let janes = signed_in_session(&s.st, &jane, Utc::now()).await;
    for p in PAGES {
        let r = get(&s, &johns, p).await;
        assert_eq!(r.status(), 403, "{p} for John");
        assert!(
            r.text().await.unwrap().contains("Administrators only"),
            "{p}"
        );
        let r = http()
            .get(s.at(&format!("/_stepgate/admin{p}")))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 200, "{p} without a session");
        let r = get(&s, &janes, p).await;
        assert_eq!(r.status(), 200, "{p} for Jane");
        if p.starts_with("/audit/export") {
            continue;
        }
        assert!(header(&r, "content-security-policy").contains("script-src 'self'"));
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "{p}: no inline script");
        assert!(
            html.contains("aria-label=\"Admin console\""),
            "{p}: the console's navigation"
        );
    }
}

#[tokio::test]
async fn a_revoke_needs_csrf_and_a_fresh_aal3_and_the_session_is_refused_after() {
    let s = start(CONFIG).await;
    let app = s.url("app.test", "/");
    let john = user(&s.st, "john").await;
    let jane = user(&s.st, "jane").await;
    let johns = signed_in_session(&s.st, &john, Utc::now()).await;
    assert_eq!(visit(&s, Some(&johns), &app).await.0, 200);

    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;
    let html = get(&s, &aal2, "/sessions?user=john")
        .await
        .text()
        .await
        .unwrap();
    let handle = support::field(&html, "handle");
    let csrf = support::field(&html, "csrf");
    assert!(
        html.contains("id=\"sessions\"") && html.contains("john"),
        "{html}"
    );
    // A forged token changes nothing; AAL2 is sent to the step-up page.
    let r = post(
        &s,
        &aal2,
        "/sessions/revoke",
        &[("csrf", "forged"), ("handle", &handle)],
    )
    .await;
    assert_ne!(r.status(), 303);
    let r = post(
        &s,
        &aal2,
        "/sessions/revoke",
        &[("csrf", &csrf), ("handle", &handle)],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(
        header(&r, "location").contains("/_stepgate/step-up?t="),
        "{}",
        header(&r, "location")
    );
    assert_eq!(visit(&s, Some(&johns), &app).await.0, 200, "still live");

    // With a security key just used: revoked, audited, and John's next request refused.
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let csrf = support::field(
        &get(&s, &fresh, "/sessions").await.text().await.unwrap(),
        "csrf",
    );
    let r = post(
        &s,
        &fresh,
        "/sessions/revoke",
        &[("csrf", &csrf), ("handle", &handle)],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(header(&r, "location").contains("/_stepgate/admin/sessions?done="));
    assert_ne!(
        visit(&s, Some(&johns), &app).await.0,
        200,
        "refused after the revoke"
    );
    let ended = audit(&s.st, Some("sessions.ended")).await;
    assert_eq!(ended[0].actor.as_deref(), Some("admin:jane"));
    assert_eq!(
        ended[0].ip.as_deref(),
        Some("127.0.0.1"),
        "with the admin's address"
    );
    assert!(audit(&s.st, Some("admin.write"))
        .await
        .iter()
        .any(|e| e.detail["operation"] == "console.revoke_session"));
}

#[tokio::test]
async fn the_dashboard_charts_decisions_by_outcome_with_denials_and_locked_users() {
    // Three wrong passwords lock an account here.
    let s = start(&CONFIG.replace("{ max_retries: 0,", "{ max_retries: 3,")).await;
    let jane = user(&s.st, "jane").await;
    let janes = signed_in_session(&s.st, &jane, Utc::now()).await;
    visit(&s, Some(&janes), &s.url("app.test", "/")).await;
    let (status, _) = visit(&s, Some(&janes), &s.url("vault.test", "/")).await;
    assert_ne!(status, 200, "vault-closed");
    let john = user(&s.st, "john").await;
    let wrong = Person {
        username: "john",
        password: "not his password",
        ..JANE
    };
    for _ in 0..3 {
        password(&Browser::new(), &s.url("app.test", "/"), &wrong).await;
    }
    assert!(s.st.authn.lock_state(&john).await.unwrap().is_some());
    s.st.access.decision_log().unwrap().flush().await;

    let html = get(&s, &janes, "/").await.text().await.unwrap();
    assert!(html.contains("id=\"decisions-chart\""), "{html}");
    assert!(
        html.contains("<rect class=\"o-deny\""),
        "a deny bar: {html}"
    );
    assert!(
        html.contains("<rect class=\"o-allow\""),
        "an allow bar: {html}"
    );
    let denying = &html[html.find("id=\"denying-policies\"").expect("denials")..];
    assert!(denying.contains("vault-closed"), "{denying}");
    let locked = &html[html.find("id=\"locked-users\"").expect("locked users")..];
    assert!(locked.contains("john"), "{locked}");
}

#[tokio::test]
async fn decisions_filter_by_outcome_and_link_to_their_trace() {
    let s = start(CONFIG).await;
    let jane = user(&s.st, "jane").await;
    let janes = signed_in_session(&s.st, &jane, Utc::now()).await;
    let (_, allowed) = visit(&s, Some(&janes), &s.url("app.test", "/")).await;
    let (_, denied) = visit(&s, Some(&janes), &s.url("vault.test", "/")).await;
    s.st.access.decision_log().unwrap().flush().await;

    let html = get(&s, &janes, "/decisions?outcome=deny&user=jane&period=24h")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(&format!("?id={denied}")), "{html}");
    assert!(!html.contains(&format!("?id={allowed}")), "{html}");
    let html = get(&s, &janes, "/decisions?policy=vault-closed&app=console")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No decision matches"), "{html}");
    // The trace view of the denial.
    let r = get(&s, &janes, &format!("/decisions?id={denied}")).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("id=\"trace\"") && html.contains("matched — decided"),
        "{html}"
    );
    // A time that does not read: the API's words, and a 400.
    let r = get(&s, &janes, "/decisions?since=yesterday").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("RFC 3339"));
}

#[tokio::test]
async fn what_if_and_a_draft_go_through_the_pipeline_and_report_only_impact_is_shown() {
    let s = start(CONFIG).await;
    let jane = user(&s.st, "jane").await;
    let janes = signed_in_session(&s.st, &jane, Utc::now()).await;
    visit(&s, Some(&janes), &s.url("app.test", "/")).await;
    s.st.access.decision_log().unwrap().flush().await;

    let html = get(&s, &janes, "/what-if?go=1&app=vault&user=jane&groups=staff")
        .await
        .text()
        .await
        .unwrap();
    let outcome = &html[html.find("id=\"what-if-outcome\"").expect("an answer")..];
    assert!(
        outcome.contains("deny") && outcome.contains("vault-closed"),
        "{outcome}"
    );
    let r = get(&s, &janes, "/what-if?go=1&context=%7Bnot").await;
    assert_eq!(r.status(), 400);

    // The report-only policy's would-be denial of Jane's request.
    let html = get(&s, &janes, "/policies").await.text().await.unwrap();
    let row = &html[html
        .find("data-policy=\"trial-deny-console\"")
        .expect("row")..];
    assert!(
        row.contains("would have decided deny: <strong>1</strong>"),
        "{row}"
    );

    // A draft with an error, positioned; one that enforces the trial policy, replayed.
    let csrf = support::field(&html, "csrf");
    let r = post(
        &s,
        &janes,
        "/policies/validate",
        &[("csrf", &csrf), ("draft", "default_outcome: maybe\n")],
    )
    .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("id=\"draft-errors\"") && html.contains("line 1"),
        "{html}"
    );
    let draft = CONFIG
        .replace("UPSTREAM", "127.0.0.1:9")
        .replace("    report_only: true\n", "");
    let r = post(
        &s,
        &janes,
        "/policies/validate",
        &[("csrf", &csrf), ("draft", &draft)],
    )
    .await;
    let html = r.text().await.unwrap();
    let summary = &html[html.find("id=\"replay-summary\"").expect("replayed")..];
    assert!(
        summary.starts_with("id=\"replay-summary\">1 of"),
        "{summary}"
    );
    let r = post(
        &s,
        &janes,
        "/policies/validate",
        &[("csrf", "forged"), ("draft", &draft)],
    )
    .await;
    assert_ne!(r.status(), 200, "a forged CSRF token");
}

#[tokio::test]
async fn a_wrong_password_is_audited_with_user_and_address_up_to_its_bound_and_exported() {
    let s = start(CONFIG).await;
    let app = s.url("app.test", "/");
    let john = user(&s.st, "john").await;
    let nobody = Person {
        username: "nobody-here",
        password: "guess",
        ..JANE
    };
    password(&Browser::new(), &app, &nobody).await;
    let wrong = Person {
        username: "john",
        password: "not his password",
        ..JANE
    };
    for _ in 0..25 {
        password(&Browser::new(), &app, &wrong).await;
    }
    let failures = audit(&s.st, Some("signin.failure")).await;
    let bound = stepgate_server::portal::FAILURE_AUDITS_PER_WINDOW as usize;
    assert_eq!(failures.len(), bound, "bounded per account and address");
    let unknown = failures
        .iter()
        .find(|e| e.actor.is_none())
        .expect("the unknown name's");
    assert!(
        !unknown.detail.to_string().contains("nobody-here"),
        "an unknown name is not written"
    );
    let johns: Vec<_> = failures
        .iter()
        .filter(|e| e.actor.as_deref() == Some("john"))
        .collect();
    assert_eq!(johns.len(), bound - 1);
    assert!(johns
        .iter()
        .all(|e| e.subject.as_deref() == Some(john.id.as_str())));
    assert!(
        failures
            .iter()
            .all(|e| e.ip.as_deref() == Some("127.0.0.1")),
        "{failures:?}"
    );

    // Searched and exported through the console.
    let jane = user(&s.st, "jane").await;
    let janes = signed_in_session(&s.st, &jane, Utc::now()).await;
    let html = get(&s, &janes, "/audit?kind=signin.failure&user=john")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("signin.failure") && html.contains("127.0.0.1"),
        "{html}"
    );
    let r = get(&s, &janes, "/audit/export?format=ocsf&kind=signin.failure").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-disposition").contains("attachment"));
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), bound);
    for l in &lines {
        assert_eq!(l["class_uid"], 3002, "{l}");
        assert_eq!(l["status_id"], 2, "Failure: {l}");
    }
    let text = get(
        &s,
        &janes,
        "/audit/export?format=jsonl&kind=signin.failure&user=john",
    )
    .await
    .text()
    .await
    .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), bound - 1);
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()),
        "oldest first"
    );
    assert_eq!(
        get(&s, &janes, "/audit/export?format=xml").await.status(),
        400
    );
}

#[tokio::test]
async fn a_signed_out_admin_comes_back_to_the_page_with_its_query() {
    let s = start(CONFIG).await;
    let r = http()
        .get(s.at("/_stepgate/admin/decisions?id=req-123&outcome=deny"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = header(&r, "location");
    let t = to
        .split_once("/login?t=")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("sent to sign in: {to}"));
    let back =
        s.st.signer
            .verify("rt", t, Utc::now().timestamp())
            .expect("a signed return target");
    assert!(
        back.ends_with("/_stepgate/admin/decisions?id=req-123&outcome=deny"),
        "returns to {back}"
    );
    // A hostile query (another host, encoded line breaks, a second `?`) stays a query of
    // this server's page: the return is this origin's, signed, never the other host.
    let origin = s.at("");
    for query in [
        "?next=https://evil.example/",
        "?id=%0d%0aLocation:%20https://evil.example",
        "?@evil.example",
        "??//evil.example",
    ] {
        let r = http()
            .get(s.at(&format!("/_stepgate/admin/decisions{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{query}");
        let to = header(&r, "location");
        assert!(to.starts_with(&origin), "{query}: sent to {to}");
        let t = to.split_once("/login?t=").map(|(_, t)| t).unwrap();
        let back =
            s.st.signer
                .verify("rt", t, Utc::now().timestamp())
                .expect("a signed return target");
        assert_eq!(
            back,
            format!("{origin}/_stepgate/admin/decisions{query}"),
            "{query}"
        );
    }
}
