//! Every decision recorded once under the id the client was given, allowed requests
//! sampled while denials and report-only matches are always kept, and nothing when off.

use super::*;

#[tokio::test]
async fn every_decision_is_recorded_under_the_id_the_client_was_given() {
    let s = start().await;
    let app = |p: &str| s.url("app.test", p);

    // Anonymous: sent to sign in, and recorded so.
    let r = no_redirects().get(app("/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let anon = header(&r, "x-request-id");
    assert_eq!(anon.len(), 24, "{anon}");
    let d = recorded(&s, &anon).await;
    assert_eq!(d.outcome, "sign_in");
    assert_eq!(d.user, None);
    assert_eq!(d.app.as_deref(), Some("console"));
    assert_eq!((d.method.as_str(), d.path.as_str()), ("GET", "/"));
    assert_eq!(d.policy_outcome, None, "it never reached the policies");

    // Jane signs in (her sign-in is a decision too: a step-up to AAL2).
    let b = Browser::new();
    let r = sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let session_id = b.session_id(&app("/")).unwrap();
    let cookie = format!("stepgate_session={session_id}");
    // The writer gathers records for up to half a second: what it holds is written now.
    s.st.access.decision_log().unwrap().flush().await;
    let signins =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery {
                user: Some("jane".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    let signin = signins
        .iter()
        .find(|d| d.kind == "sign_in")
        .expect("the sign-in's decision");
    assert_eq!(signin.outcome, "step_up");
    assert_eq!(signin.policy.as_deref(), Some("sign-in-mfa"));
    assert_eq!(signin.detail.value()["requirement"]["min_aal"], 2);

    // Allowed, proxied: the upstream's answer carries the id.
    let r = no_redirects()
        .get(app("/reports"))
        .header("cookie", &cookie)
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        )
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let allowed = header(&r, "x-request-id");
    assert_ne!(allowed, anon);
    let d = recorded(&s, &allowed).await;
    assert_eq!(d.outcome, "allow");
    assert_eq!(d.policy_outcome.as_deref(), Some("allow"));
    assert_eq!(d.policy, None, "the default outcome");
    assert_eq!(d.user.as_deref(), Some("jane"));
    assert_eq!(d.ip.as_deref(), Some("198.51.100.7"));
    let handle = s.st.signer.session_handle(&session_id);
    assert_eq!(d.session.as_deref(), Some(handle.as_str()));
    // Nothing enforced matched: a report-only policy for everything would have decided.
    assert_eq!(
        d.report_only,
        serde_json::json!([{ "policy": "trial-after", "outcome": "deny", "requirement": null }])
    );
    assert_eq!(d.detail.value()["context"]["request"]["path"], "/reports");
    assert_eq!(d.detail.value()["context"]["user"]["username"], "jane");
    // An allowed request's trace is worked out again from its context when asked for.
    assert!(d.detail.value()["trace"].is_null(), "{}", d.detail);

    // The admin route: a step-up, and the report-only policy ahead of it would have denied.
    let r = no_redirects()
        .get(app("/admin/users"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let stepped = header(&r, "x-request-id");
    let d = recorded(&s, &stepped).await;
    assert_eq!(d.outcome, "step_up");
    assert_eq!(d.policy.as_deref(), Some("admin-needs-aal3"));
    assert_eq!(d.route.as_deref(), Some("admin"));
    assert_eq!(d.detail.value()["requirement"]["min_aal"], 3);
    assert_eq!(d.detail.value()["trace"]["policy"], "admin-needs-aal3");
    assert_eq!(
        d.report_only,
        serde_json::json!([{ "policy": "trial-block-admin", "outcome": "deny", "requirement": null }]),
        "the report-only policy ranked after the decision is not listed"
    );
    // The step-up page names the request.
    let to = header(&r, "location");
    let page = no_redirects()
        .get(&to)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&stepped),
        "the step-up page shows the request id"
    );

    // Denied: the blocked page (a browser) names the request; so does forward-auth's 403.
    let r = no_redirects()
        .get(app("/forbidden"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let denied = header(&r, "x-request-id");
    assert!(r.text().await.unwrap().contains(&denied));
    let d = recorded(&s, &denied).await;
    assert_eq!(d.outcome, "deny");
    assert_eq!(d.policy.as_deref(), Some("no-forbidden"));
    assert_eq!(d.detail.value()["trace"]["message"], "not here");

    let r = no_redirects()
        .get(s.at("/_stepgate/auth/forward"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", format!("app.test:{}", s.addr.port()))
        .header("x-forwarded-uri", "/forbidden")
        .header("accept", "application/json")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let fa = header(&r, "x-request-id");
    let d = recorded(&s, &fa).await;
    assert_eq!(
        (d.outcome.as_str(), d.user.as_deref()),
        ("deny", Some("jane"))
    );

    // Searchable by outcome and policy; and the session id itself is nowhere in the log.
    let denies =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery {
                outcome: Some("deny".into()),
                policy: Some("no-forbidden".into()),
                ..Default::default()
            })
            .await
            .unwrap();
    let ids: Vec<&str> = denies.iter().map(|d| d.request_id.as_str()).collect();
    assert_eq!(ids, vec![fa.as_str(), denied.as_str()], "newest first");
    let all =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery::default())
            .await
            .unwrap();
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains(&session_id),
        "a session id leaked into the log"
    );
    // One record per request: no entry point records twice.
    let mut seen: Vec<&str> = all.iter().map(|d| d.request_id.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), all.len());
}

/// By default allowed app requests are recorded one in 100 (here one in 10), counted
/// otherwise; a denial is always recorded, and so is an allowed request a report-only
/// policy matched (what it would have done is what report-only mode is for).
#[tokio::test]
async fn allowed_requests_are_sampled_and_denials_and_report_only_matches_always_kept() {
    // `trial-after` narrowed to /trial/**, so that requests to / match no report-only policy.
    let config = CONFIG.replace(
        "    report_only: true\n    outcome: { deny: { message: \"ranks after the decision\" } }",
        "    report_only: true\n    targets: { apps: [console], routes: [ { path: \"/trial/**\" } ] }\n    outcome: { deny: { message: \"ranks after the decision\" } }",
    );
    assert_ne!(config, CONFIG, "the report-only policy was narrowed");
    let s = Server::build(&config)
        .with("UPSTREAM", upstream::text("upstream").await)
        .configure(|c| c.log.decisions.allowed_one_in = 10)
        .demo_users()
        .start()
        .await;
    let b = Browser::new();
    let r = sign_in(&b, &s.url("app.test", "/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let mut ids = Vec::new();
    for _ in 0..30 {
        let r = b.get(s.url("app.test", "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        ids.push(header(&r, "x-request-id"));
    }
    let r = b.get(s.url("app.test", "/forbidden")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let denied = header(&r, "x-request-id");
    s.st.access.decision_log().unwrap().flush().await;
    let mut kept = 0;
    for id in &ids {
        if let Some(d) = s.st.stores.durable.get_decision(id).await.unwrap() {
            assert_eq!(d.outcome, "allow");
            kept += 1;
        }
    }
    assert_eq!(kept, 3, "one allowed request in 10 of 30");
    assert_eq!(recorded(&s, &denied).await.outcome, "deny");
    let mut trials = Vec::new();
    for i in 0..12 {
        let r = b
            .get(s.url("app.test", &format!("/trial/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "report-only never decides");
        trials.push(header(&r, "x-request-id"));
    }
    s.st.access.decision_log().unwrap().flush().await;
    for id in &trials {
        let d = recorded(&s, id).await;
        assert_eq!(d.outcome, "allow");
        assert!(
            d.report_only.to_string().contains("trial-after"),
            "{id}: {}",
            d.report_only
        );
    }
    let stats = s.st.access.decision_log().unwrap().stats().clone();
    assert_eq!(stats.sampled_out.get(), 27);
}

#[tokio::test]
async fn turned_off_nothing_is_recorded() {
    let s = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .configure(|c| c.log.decisions.enabled = false)
        .start()
        .await;
    let r = no_redirects()
        .get(s.url("app.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    s.st.access.decision_log().unwrap().flush().await;
    let all =
        s.st.stores
            .durable
            .list_decisions(&DecisionQuery::default())
            .await
            .unwrap();
    assert!(all.is_empty(), "{all:?}");
}
