//! The admin surface's paths read as the gateway reads an app's before they are decided: a
//! policy on one user's page is not passed by spelling the name with percent-escapes (the
//! route's extractor decodes them), and a path that cannot be read is refused.

use chrono::Utc;

use crate::support::{aal3_session, user};
use crate::{api, decision_of, problem, start, Cred, OFFICE};

#[tokio::test]
async fn a_policy_on_a_path_holds_for_every_spelling_of_it() {
    let s = start(
        r#"
  - name: john-is-hands-off
    priority: 5
    targets:
      apps: [stepgate-admin]
      routes: [ { path: "/_stepgate/admin/api/v1/users/john" } ]
    outcome:
      deny:
        message: John's account is managed by HR.
"#,
    )
    .await;
    let jane = user(&s.st, "jane").await;
    let session = aal3_session(&s.st, &jane, Utc::now()).await;
    let get = reqwest::Method::GET;

    for path in ["/users/john", "/users/j%6Fhn", "/users/%6a%6f%68%6e"] {
        let r = api(&s, get.clone(), path, Cred::Session(&session), OFFICE).await;
        let d = decision_of(&s, &r).await;
        let p = problem(r, 403).await;
        assert_eq!(p["policy"], "john-is-hands-off", "{path}: {p}");
        assert_eq!(d.path, "/_stepgate/admin/api/v1/users/john", "{path}");
    }
    // Another user's page is not the policy's.
    let r = api(
        &s,
        get.clone(),
        "/users/jane",
        Cred::Session(&session),
        OFFICE,
    )
    .await;
    assert_eq!(r.status(), 200);

    // A path the strict reading refuses (a raw `;` parameter) is a 400, not decided.
    let r = api(&s, get, "/users/john;x", Cred::Session(&session), OFFICE).await;
    let p = problem(r, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("path"), "{p}");
}
