//! Policies on the admin app: a denial for an address range, a step-up for reads, a
//! permissive policy under the floor, a change's step-up raised to it, and no policy at all.

use chrono::{Duration, Utc};

use crate::support::{aal3_session, header, signed_in_session, user, Server};
use crate::{api, console, decision_of, http, problem, start, token, Cred, OFFICE, OUTSIDE};
use stepgate_policy::{MaxAge, StepUpRequirement};
use stepgate_server::admin::{Scope, BASE};
use stepgate_server::portal::links::Links;

#[tokio::test]
async fn a_policy_denying_an_address_range_blocks_the_console_and_session_calls_not_tokens() {
    let s = start(
        r#"
  - name: admin-office-only
    priority: 5
    targets: { apps: [stepgate-admin] }
    conditions:
      - not: { network: { in: [office] } }
    outcome:
      deny:
        message: The admin console is for the office.
        remediation: Connect to the office network.
"#,
    )
    .await;
    let jane = user(&s.st, "jane").await;
    let session = aal3_session(&s.st, &jane, Utc::now()).await;

    // The console from outside: the blocked page, naming the request and the fix.
    let r = console(&s, &session, "/users", OUTSIDE).await;
    assert_eq!(r.status(), 403);
    let d = decision_of(&s, &r).await;
    let rid = header(&r, "x-request-id");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("The admin console is for the office."),
        "{html}"
    );
    assert!(html.contains("Connect to the office network."), "{html}");
    assert!(html.contains(&rid), "the page names the request: {html}");
    assert_eq!(d.app.as_deref(), Some("stepgate-admin"));
    assert_eq!(d.outcome, "deny");
    assert_eq!(d.policy.as_deref(), Some("admin-office-only"));
    assert_eq!(
        (d.method.as_str(), d.path.as_str()),
        ("GET", "/_stepgate/admin/users")
    );
    assert_eq!(d.ip.as_deref(), Some(OUTSIDE));
    assert_eq!(d.user.as_deref(), Some("jane"));

    // The API with her session from outside: a 403 problem with the policy and the fix.
    let r = api(
        &s,
        reqwest::Method::GET,
        "/users",
        Cred::Session(&session),
        OUTSIDE,
    )
    .await;
    let d = decision_of(&s, &r).await;
    let p = problem(r, 403).await;
    assert_eq!(p["type"], "https://stepgate.dev/problems/access-denied");
    assert_eq!(p["policy"], "admin-office-only");
    assert_eq!(
        p["remediation"][0]["message"], "Connect to the office network.",
        "{p}"
    );
    assert_eq!(d.app.as_deref(), Some("stepgate-admin"));
    assert_eq!(d.path, format!("/_stepgate{BASE}/users"));
    assert_eq!(d.outcome, "deny");

    // A token is not a session: its scope alone decides, from anywhere, with no decision.
    let t = token(&s, &[Scope::UsersRead]).await;
    let r = api(&s, reqwest::Method::GET, "/users", Cred::Token(&t), OUTSIDE).await;
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-request-id");
    s.st.access.decision_log().unwrap().flush().await;
    assert!(s
        .st
        .stores
        .durable
        .get_decision(&id)
        .await
        .unwrap()
        .is_none());

    // From the office the same session reads both, each an allow on the admin app.
    let r = console(&s, &session, "/users", OFFICE).await;
    assert_eq!(r.status(), 200);
    let d = decision_of(&s, &r).await;
    assert_eq!(
        (d.app.as_deref(), d.outcome.as_str()),
        (Some("stepgate-admin"), "allow")
    );
    let r = api(
        &s,
        reqwest::Method::GET,
        "/users",
        Cred::Session(&session),
        OFFICE,
    )
    .await;
    assert_eq!(r.status(), 200);
    let d = decision_of(&s, &r).await;
    assert_eq!(
        (d.app.as_deref(), d.outcome.as_str()),
        (Some("stepgate-admin"), "allow")
    );
}

#[tokio::test]
async fn a_policy_asking_aal3_for_reads_sends_console_reads_to_step_up_and_api_reads_to_401() {
    let s = start(
        r#"
  - name: admin-reads-need-a-key
    priority: 5
    targets: { apps: [stepgate-admin], routes: [{ methods: [GET] }] }
    outcome:
      step_up: { min_aal: 3, message: Reading the admin console needs your security key. }
"#,
    )
    .await;
    let jane = user(&s.st, "jane").await;
    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;

    // The console at AAL2: the step-up page, which returns to the page read.
    let r = console(&s, &aal2, "/users?search=jo", OFFICE).await;
    assert_eq!(r.status(), 303);
    let to = header(&r, "location");
    assert!(to.contains("/_stepgate/step-up?t="), "{to}");
    let d = decision_of(&s, &r).await;
    assert_eq!(
        (d.app.as_deref(), d.outcome.as_str()),
        (Some("stepgate-admin"), "step_up")
    );
    assert_eq!(d.policy.as_deref(), Some("admin-reads-need-a-key"));
    let page = http()
        .get(&to)
        .header("cookie", format!("stepgate_session={aal2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the step-up page opens for her session");

    // The API at AAL2: 401 naming the requirement, with the step-up page to open.
    let r = api(
        &s,
        reqwest::Method::GET,
        "/users",
        Cred::Session(&aal2),
        OFFICE,
    )
    .await;
    let d = decision_of(&s, &r).await;
    let p = problem(r, 401).await;
    assert_eq!(p["type"], "https://stepgate.dev/problems/step-up-required");
    assert_eq!(p["requirement"]["min_aal"], 3, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("security key"), "{detail}");
    let url = p["step_up_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/_stepgate/step-up?t=", s.public_url)),
        "{url}"
    );
    assert_eq!(
        (d.app.as_deref(), d.outcome.as_str()),
        (Some("stepgate-admin"), "step_up")
    );

    // A change is no read: the policy does not ask, the floor does (as before, a 403).
    let r = api(
        &s,
        reqwest::Method::POST,
        "/users/john/unlock",
        Cred::Session(&aal2),
        OFFICE,
    )
    .await;
    let p = problem(r, 403).await;
    assert_eq!(p["type"], "https://stepgate.dev/problems/step-up-required");

    // At AAL3 she reads both; what-if answers for the admin app as for any app.
    let aal3 = aal3_session(&s.st, &jane, Utc::now()).await;
    assert_eq!(console(&s, &aal3, "/users", OFFICE).await.status(), 200);
    let q = "/what-if?go=1&app=stepgate-admin&method=GET&path=/_stepgate/admin/users&user=jane&groups=licence-admins";
    let html = console(&s, &aal3, q, OFFICE).await.text().await.unwrap();
    assert!(
        html.contains("<option selected>stepgate-admin</option>"),
        "{html}"
    );
    let answer = &html[html.find("id=\"what-if-outcome\"").expect("an answer")..];
    assert!(
        answer.contains("step up") && answer.contains("admin-reads-need-a-key"),
        "{answer}"
    );
    let r = api(
        &s,
        reqwest::Method::GET,
        "/users",
        Cred::Session(&aal3),
        OFFICE,
    )
    .await;
    assert_eq!(r.status(), 200);

    // Someone outside the group is refused as that, not sent to step up first.
    let john = user(&s.st, "john").await;
    let johns = signed_in_session(&s.st, &john, Utc::now()).await;
    let r = console(&s, &johns, "/users", OFFICE).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Administrators only"));
    let r = api(
        &s,
        reqwest::Method::GET,
        "/users",
        Cred::Session(&johns),
        OFFICE,
    )
    .await;
    let p = problem(r, 403).await;
    assert_eq!(
        p["type"],
        "https://stepgate.dev/problems/not-an-administrator"
    );
}

#[tokio::test]
async fn a_permissive_policy_lifts_neither_the_group_nor_the_write_floor() {
    let s = start(
        r#"
  - name: admin-anything-goes
    priority: 5
    targets: { apps: [stepgate-admin] }
    outcome: allow
"#,
    )
    .await;
    let jane = user(&s.st, "jane").await;
    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;

    // The console's change at AAL2: allowed by the policy, sent to step up by the floor.
    let page = console(&s, &aal2, "/users", OFFICE).await;
    assert_eq!(page.status(), 200);
    let d = decision_of(&s, &page).await;
    assert_eq!(d.policy.as_deref(), Some("admin-anything-goes"));
    let csrf = crate::support::field(&page.text().await.unwrap(), "csrf");
    let r = http()
        .post(s.at("/_stepgate/admin/users/john/unlock"))
        .header("cookie", format!("stepgate_session={aal2}"))
        .header("x-forwarded-for", OFFICE)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(header(&r, "location").contains("/_stepgate/step-up?t="));
    let d = decision_of(&s, &r).await;
    assert_eq!((d.method.as_str(), d.outcome.as_str()), ("POST", "allow"));

    // The API's change at AAL2: the floor's 403, whatever the policy allowed.
    let r = api(
        &s,
        reqwest::Method::POST,
        "/users/john/unlock",
        Cred::Session(&aal2),
        OFFICE,
    )
    .await;
    let d = decision_of(&s, &r).await;
    let p = problem(r, 403).await;
    assert_eq!(p["type"], "https://stepgate.dev/problems/step-up-required");
    assert_eq!(
        (d.outcome.as_str(), d.policy.as_deref()),
        ("allow", Some("admin-anything-goes"))
    );

    // John, at AAL3 and allowed by the policy, is still not an administrator.
    let john = user(&s.st, "john").await;
    let johns = aal3_session(&s.st, &john, Utc::now()).await;
    assert_eq!(console(&s, &johns, "/", OFFICE).await.status(), 403);
    let r = api(
        &s,
        reqwest::Method::GET,
        "/users",
        Cred::Session(&johns),
        OFFICE,
    )
    .await;
    let p = problem(r, 403).await;
    assert_eq!(
        p["type"],
        "https://stepgate.dev/problems/not-an-administrator"
    );

    // With her key, the same change goes through.
    let aal3 = aal3_session(&s.st, &jane, Utc::now()).await;
    let r = api(
        &s,
        reqwest::Method::POST,
        "/users/john/unlock",
        Cred::Session(&aal3),
        OFFICE,
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_step_up_the_policies_ask_for_a_change_is_raised_to_the_floor() {
    let s = start(
        r#"
  - name: admin-from-home-fresh-mfa
    priority: 5
    targets: { apps: [stepgate-admin] }
    conditions:
      - not: { network: { in: [office] } }
    outcome: { step_up: { min_aal: 2, max_age: every_time } }
"#,
    )
    .await;
    let jane = user(&s.st, "jane").await;
    let then = Utc::now() - Duration::minutes(2);
    let aal3 = aal3_session(&s.st, &jane, then).await;
    // A read from home: what the policy asks, no more.
    let r = api(
        &s,
        reqwest::Method::GET,
        "/users",
        Cred::Session(&aal3),
        OUTSIDE,
    )
    .await;
    let p = problem(r, 401).await;
    assert_eq!(p["requirement"]["min_aal"], 2, "{p}");
    assert_eq!(p["requirement"]["max_age"], "every_time", "{p}");
    // A change from home: one step-up meeting both the policy and the floor.
    let r = api(
        &s,
        reqwest::Method::POST,
        "/users/john/unlock",
        Cred::Session(&aal3),
        OUTSIDE,
    )
    .await;
    let p = problem(r, 401).await;
    assert_eq!(p["requirement"]["min_aal"], 3, "{p}");
    assert_eq!(p["requirement"]["max_age"], "every_time", "{p}");
    // From the office the policy asks nothing: her key two minutes ago meets the floor.
    let r = api(
        &s,
        reqwest::Method::POST,
        "/users/john/unlock",
        Cred::Session(&aal3),
        OFFICE,
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// What a console form's step-up page is asked to meet: the requirement in the step
/// token of the response's `Location`.
fn asked_of(s: &Server, r: &reqwest::Response) -> StepUpRequirement {
    let to = header(r, "location");
    let url = url::Url::parse(&to).unwrap_or_else(|e| panic!("{to}: {e}"));
    assert_eq!(url.path(), "/_stepgate/step-up", "{to}");
    let t = url
        .query_pairs()
        .find(|(k, _)| k == "t")
        .expect("a step token")
        .1;
    let rt = s.st.runtime.load_full();
    Links::new(&s.st.signer, &rt)
        .verify_step(&t, Utc::now())
        .expect("a valid step token")
        .req
}

#[tokio::test]
async fn a_step_up_the_policies_ask_for_a_console_change_is_raised_to_the_floor() {
    let s = start(
        r#"
  - name: admin-from-home-fresh-mfa
    priority: 5
    targets: { apps: [stepgate-admin] }
    conditions:
      - not: { network: { in: [office] } }
    outcome: { step_up: { min_aal: 2, max_age: every_time } }
"#,
    )
    .await;
    let jane = user(&s.st, "jane").await;
    let aal3 = aal3_session(&s.st, &jane, Utc::now() - Duration::minutes(2)).await;
    let page = console(&s, &aal3, "/users", OFFICE).await;
    assert_eq!(page.status(), 200);
    let csrf = crate::support::field(&page.text().await.unwrap(), "csrf");
    let post = |path: &'static str, ip: &'static str, form: Vec<(&'static str, String)>| {
        http()
            .post(s.at(&format!("/_stepgate/admin{path}")))
            .header("cookie", format!("stepgate_session={aal3}"))
            .header("x-forwarded-for", ip)
            .form(&form)
            .send()
    };
    let csrf_only = || vec![("csrf", csrf.clone())];

    // A change from home: one step-up meeting both the policy (every time) and the floor
    // (AAL3), for each of the console's changes.
    for path in [
        "/users/john/unlock",
        "/users/john/end-sessions",
        "/sessions/revoke",
    ] {
        let r = post(path, OUTSIDE, csrf_only()).await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        let asked = asked_of(&s, &r);
        assert_eq!(
            (asked.min_aal, asked.max_age),
            (Some(3), Some(MaxAge::EveryTime)),
            "{path}: {asked:?}"
        );
        let d = decision_of(&s, &r).await;
        assert_eq!(
            (d.outcome.as_str(), d.policy.as_deref()),
            ("step_up", Some("admin-from-home-fresh-mfa"))
        );
    }

    // A form that only reads (validating a draft) is asked what the policy asks, no more.
    let draft = vec![
        ("csrf", csrf.clone()),
        ("draft", "policies: []".to_string()),
    ];
    let r = post("/policies/validate", OUTSIDE, draft.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let asked = asked_of(&s, &r);
    assert_eq!(
        (asked.min_aal, asked.max_age),
        (Some(2), Some(MaxAge::EveryTime)),
        "{asked:?}"
    );

    // From the office the policy asks nothing: her key two minutes ago meets the floor.
    let r = post("/users/john/unlock", OFFICE, csrf_only())
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = header(&r, "location");
    assert!(to.contains("/_stepgate/admin/users?done="), "{to}");

    // Her key used just now (the one step-up) meets both from home: the change is made.
    let fresh = aal3_session(&s.st, &jane, Utc::now()).await;
    let page = console(&s, &fresh, "/users", OFFICE).await;
    let csrf = crate::support::field(&page.text().await.unwrap(), "csrf");
    let r = http()
        .post(s.at("/_stepgate/admin/users/john/unlock"))
        .header("cookie", format!("stepgate_session={fresh}"))
        .header("x-forwarded-for", OUTSIDE)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let to = header(&r, "location");
    assert!(to.contains("/_stepgate/admin/users?done="), "{to}");
}

#[tokio::test]
async fn with_no_policy_for_it_the_admin_app_is_left_to_the_floor_not_the_default() {
    // `default_outcome: deny` and no policy covering the admin app: administrators are not
    // locked out, and the floor still holds.
    let s = Server::build(
        r#"
apps: []
sessions:
  cookie: { secure: false }
admin:
  group: licence-admins
log:
  decisions: { allowed_one_in: 1 }
default_outcome: deny
policies:
  - { name: sign-in-mfa, priority: 30, targets: { sign_in: true }, outcome: { step_up: { min_aal: 2 } } }
"#,
    )
    .demo_users()
    .in_file("stepgate.yaml")
    .start()
    .await;
    let jane = user(&s.st, "jane").await;
    let aal2 = signed_in_session(&s.st, &jane, Utc::now()).await;
    let r = console(&s, &aal2, "/", OFFICE).await;
    assert_eq!(r.status(), 200);
    let d = decision_of(&s, &r).await;
    assert_eq!((d.outcome.as_str(), d.policy.as_deref()), ("allow", None));
    let r = api(
        &s,
        reqwest::Method::POST,
        "/users/john/unlock",
        Cred::Session(&aal2),
        OFFICE,
    )
    .await;
    assert_eq!(
        problem(r, 403).await["type"],
        "https://stepgate.dev/problems/step-up-required"
    );
    let john = user(&s.st, "john").await;
    let johns = aal3_session(&s.st, &john, Utc::now()).await;
    assert_eq!(console(&s, &johns, "/", OFFICE).await.status(), 403);
}
