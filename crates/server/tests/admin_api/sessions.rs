//! The admin API called with a portal session: reads with the admin group, changes
//! only with a fresh AAL3, and a revoked session refused at its next request.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use stepgate_server::admin::tokens::Scope;

use crate::common::*;
use crate::support::{
    aal3_session, audit, header, sign_in, signed_in_session, user, Browser, Server, JANE,
};

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
