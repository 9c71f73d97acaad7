//! The admin surface when the pipeline cannot decide: an IP risk provider (on loopback)
//! answers 500 and is configured to fail closed, so a session's request from a known
//! address is Unavailable — the console answers with the 503 page, a session's API call
//! with a 503 problem; a token's call is not decided by the pipeline and goes through.

use chrono::Utc;

use crate::support::{aal3_session, header, upstream, user, Server};
use crate::{api, console, decision_of, problem, token, Cred, CONFIG, OUTSIDE};
use stepgate_server::admin::Scope;

/// stepgate with the admin app's policies as in `CONFIG`, and an IP risk provider that
/// answers 500 to every lookup, failing closed.
async fn start_with_risk_down() -> Server {
    let risk = upstream::failing().await;
    let signals = format!(
        "signals:\n  ip_risk:\n    http: {{ url: \"http://{risk}/{{ip}}\", score_path: score, on_error: fail }}\ndefault_outcome: allow"
    );
    Server::build(&CONFIG.replace("default_outcome: allow", &signals))
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .in_file("stepgate.yaml")
        .start()
        .await
}

#[tokio::test]
async fn a_signal_source_down_answers_the_console_and_session_calls_503_not_tokens() {
    let s = start_with_risk_down().await;
    let jane = user(&s.st, "jane").await;
    let session = aal3_session(&s.st, &jane, Utc::now()).await;

    // The console: the 503 page, in the portal's layout, naming the request; the decision
    // logged as unavailable for the admin app.
    let r = console(&s, &session, "/users", OUTSIDE).await;
    assert_eq!(r.status(), 503);
    assert!(
        header(&r, "content-type").starts_with("text/html"),
        "{:?}",
        r.headers()
    );
    let rid = header(&r, "x-request-id");
    let d = decision_of(&s, &r).await;
    let html = r.text().await.unwrap();
    assert!(html.contains("Try again in a moment"), "{html}");
    assert!(
        html.contains("stepgate cannot check this request right now"),
        "{html}"
    );
    assert!(html.contains(&rid), "the page names the request: {html}");
    assert_eq!(d.app.as_deref(), Some("stepgate-admin"));
    assert_eq!(d.outcome, "unavailable", "{d:?}");

    // A console change is refused the same way before anything is changed (no CSRF check
    // or floor is reached).
    let r = crate::http()
        .post(s.at("/_stepgate/admin/users/john/unlock"))
        .header("cookie", format!("stepgate_session={session}"))
        .header("x-forwarded-for", OUTSIDE)
        .form(&[("csrf", "whatever")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    // A session's API call, read or change: a 503 problem document.
    for (method, path) in [
        (reqwest::Method::GET, "/users"),
        (reqwest::Method::POST, "/users/john/unlock"),
    ] {
        let r = api(&s, method, path, Cred::Session(&session), OUTSIDE).await;
        let p = problem(r, 503).await;
        assert_eq!(
            p["type"], "https://stepgate.dev/problems/unavailable",
            "{p}"
        );
        assert_eq!(p["status"], 503, "{p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains("try again shortly"), "{detail}");
        assert_eq!(
            p["instance"],
            format!("/_stepgate{}{path}", stepgate_server::admin::BASE)
        );
    }

    // A token is not decided by the pipeline: its call goes through from the same address.
    let t = token(&s, &[Scope::UsersRead]).await;
    let r = api(&s, reqwest::Method::GET, "/users", Cred::Token(&t), OUTSIDE).await;
    assert_eq!(r.status(), 200);
}
