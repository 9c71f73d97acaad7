//! Sessions: a new id on sign-in and on step-up, idle and absolute timeouts, and a
//! half-done sign-in that can be cancelled (and only that).

use crate::common::*;
use crate::support::{sign_in, Browser, Page, JANE};

#[tokio::test]
async fn session_id_changes_on_sign_in_and_on_step_up() {
    let h = start().await;
    let b = Browser::new();
    let page = Page::open(&b, &h.at("/app")).await;
    assert!(b.session_id(&h.base).is_none(), "no session before sign-in");
    let r = page
        .submit(
            &b,
            "/_stepgate/login",
            &[("username", JANE.username), ("password", JANE.password)],
        )
        .await;
    let pending = b
        .session_id(&h.base)
        .expect("a pending session after the password");
    let r = Page::read(r).await.submit_code(&b, &JANE.code(0)).await;
    assert_eq!(
        r.text().await.unwrap(),
        "upstream saw user=jane",
        "back at the app after MFA"
    );
    let signed_in = b.session_id(&h.base).unwrap();
    assert_ne!(
        pending, signed_in,
        "the id changes when the sign-in completes"
    );
    assert!(
        h.st.stores
            .hot
            .get_session(&pending)
            .await
            .unwrap()
            .is_none(),
        "the pre-MFA id is gone"
    );

    // A sensitive POST needs a fresh code: step up, and the id changes again.
    age_factors(&h, &b, 2).await;
    let r = b
        .post(h.at("/danger"))
        .header("referer", h.at("/app"))
        .send()
        .await
        .unwrap();
    assert!(r.url().path().ends_with("/step-up"), "{}", r.url());
    let page = Page::read(r).await;
    assert!(
        page.html.contains("The danger zone needs a fresh code."),
        "the page says why"
    );
    let r = page.submit_code(&b, &JANE.code(1)).await;
    // A POST is never replayed: the user is told, and led back to the page it came from.
    assert_eq!(r.url().path(), "/_stepgate/confirmed", "{}", r.url());
    let html = r.text().await.unwrap();
    assert!(html.contains("has not been sent yet"), "{html}");
    let back = h.at("/app").replace('/', "&#x2f;");
    assert!(
        html.contains(&back),
        "the way back is the page it came from: {html}"
    );
    let stepped = b.session_id(&h.base).unwrap();
    assert_ne!(signed_in, stepped, "the id changes on step-up");
    let r = b.post(h.at("/danger")).send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "upstream saw user=jane",
        "the resubmitted POST goes through"
    );
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions() {
    let h = start().await;
    for field_name in ["last_seen", "created_at"] {
        let b = Browser::new();
        let code = if field_name == "last_seen" {
            JANE.code(0)
        } else {
            JANE.code(1)
        };
        let r = signed_in(&h, &b, &code).await;
        assert_eq!(r.text().await.unwrap(), "upstream saw user=jane");
        let id = b.session_id(&h.base).unwrap();
        // AAL2 here: 10 minutes idle, 1 hour absolute.
        let past = if field_name == "last_seen" {
            chrono::Utc::now() - chrono::Duration::minutes(11)
        } else {
            chrono::Utc::now() - chrono::Duration::minutes(61)
        };
        edit_session(&h, &id, |data| {
            data[field_name] = serde_json::to_value(past).unwrap();
        })
        .await;
        let r = b.get(h.at("/app")).send().await.unwrap();
        assert!(
            r.url().path().ends_with("/_stepgate/login"),
            "{field_name}: expected a new sign-in, got {}",
            r.url()
        );
        assert!(
            h.st.stores.hot.get_session(&id).await.unwrap().is_none(),
            "{field_name}: the expired session is deleted"
        );
    }
}

/// "Not you? Cancel this sign-in" ends the half-done sign-in in the store, not only in the
/// browser; it takes the page's CSRF token and step-up link, and a complete session's
/// step-up has no cancel (it would be a sign-out by another name).
#[tokio::test]
async fn a_half_done_sign_in_can_be_cancelled_and_only_that() {
    let h = start().await;
    let b = Browser::new();
    let page = Page::open(&b, &h.at("/app")).await;
    let r = page
        .submit(
            &b,
            "/_stepgate/login",
            &[("username", JANE.username), ("password", JANE.password)],
        )
        .await;
    let pending = b.session_id(&h.base).expect("a pending session");
    let step = Page::read(r).await;
    assert!(step.html.contains("id=\"cancel-sign-in\""), "{}", step.html);
    assert!(step.html.contains("Signing in as <strong>jane</strong>"));

    // Without the page's CSRF token, or with a forged link: refused, the sign-in stays.
    let forged = b
        .post(h.at("/_stepgate/step-up/cancel"))
        .form(&[("csrf", "nope"), ("t", step.field("t").as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let forged = b
        .post(h.at("/_stepgate/step-up/cancel"))
        .form(&[("csrf", step.field("csrf").as_str()), ("t", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(h
        .st
        .stores
        .hot
        .get_session(&pending)
        .await
        .unwrap()
        .is_some());

    let r = step.submit(&b, "/_stepgate/step-up/cancel", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.url().path(), "/_stepgate/login", "{}", r.url());
    assert!(
        r.url().query().unwrap_or("").starts_with("t="),
        "the login keeps the destination"
    );
    assert!(
        h.st.stores
            .hot
            .get_session(&pending)
            .await
            .unwrap()
            .is_none(),
        "the half-done sign-in is gone from the store"
    );
    // Its step-up page is of no more use.
    let again = step.submit_code(&b, &JANE.code(0)).await;
    assert_ne!(again.status(), 200, "{}", again.url());
    let cancelled = stepgate_store::AuditQuery {
        kind: Some("signin.cancelled".into()),
        actor: Some("jane".into()),
        ..Default::default()
    };
    let audit = h.st.stores.durable.list_audit(&cancelled).await.unwrap();
    assert_eq!(audit.len(), 1, "audited once");

    // A signed-in user's step-up (the sensitive POST) has no cancel.
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(1)).await;
    assert_eq!(r.status(), 200);
    age_factors(&h, &b, 2).await;
    let r = b.post(h.at("/danger")).send().await.unwrap();
    let step = Page::read(r).await;
    assert!(!step.html.contains("cancel-sign-in"), "{}", step.html);
    let signed_in = b.session_id(&h.base).unwrap();
    let r = step.submit(&b, "/_stepgate/step-up/cancel", &[]).await;
    assert_eq!(r.status(), 400);
    assert!(h
        .st
        .stores
        .hot
        .get_session(&signed_in)
        .await
        .unwrap()
        .is_some());
}
