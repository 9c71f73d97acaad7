//! Re-checking the user at the provider: disabled there, signed out at the next
//! re-check, and unable to step up.

use crate::common::*;
use crate::support::upstream::assert_saw;
use crate::support::{audit, Browser, Page};

#[tokio::test]
async fn a_user_disabled_upstream_is_signed_out_at_the_next_re_check() {
    let config = CONFIG.replace(
        "    step_up_acr:",
        "    refresh_interval: 1s\n    step_up_acr:",
    );
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    let b = Browser::new();
    let page = with_mfa(&s, &b, "alice-sub", "/").await;
    assert_saw(&page, "alice");
    let session = b.session_id(&s.h.base).unwrap();
    let kept = |sid: String| {
        let st = s.h.st.clone();
        async move {
            st.sessions
                .peek(&sid)
                .await
                .unwrap()
                .unwrap()
                .1
                .upstream
                .unwrap()
        }
    };
    let first = kept(session.clone()).await;
    assert!(
        first.refresh.is_some(),
        "the refresh token is kept (sealed)"
    );
    // Within the interval, no question to the provider.
    let issued = s.tap.seen().len();
    Page::open(&b, &s.h.at("/")).await;
    assert_eq!(s.tap.seen().len(), issued);

    // Past it, the provider is asked (its refresh token redeemed) and still vouches: the
    // request goes through, and the session keeps the new refresh token it issued.
    for round in 1..=2 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let page = Page::open(&b, &s.h.at("/")).await;
        assert_saw(&page, "alice");
        assert_eq!(
            s.tap.seen().len(),
            issued + round,
            "re-checked at the provider"
        );
    }
    let now = kept(session.clone()).await;
    assert!(now.checked_at > first.checked_at);
    assert_ne!(now.refresh, first.refresh);

    // Disabled upstream: the next re-check is refused, and the session ends.
    s.op.disable("alice-sub").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let page = Page::open(&b, &s.h.at("/")).await;
    assert!(
        page.html.contains("Sign in with Corp SSO"),
        "signed out: {}",
        page.html
    );
    assert!(s.h.st.sessions.peek(&session).await.unwrap().is_none());
    let rows = audit(&s.h.st, Some("signout.upstream_refused")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].actor.as_deref(), Some("alice"));
    assert!(
        rows[0].detail["detail"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{:?}",
        rows[0]
    );
}

/// Opens payroll in `b`, and steps up on the page it leads to with TOTP `code`: the page
/// that ends on.
async fn payroll_with_totp(s: &Setup, b: &Browser, code: &str) -> Page {
    let step = Page::open(b, &s.h.at("/payroll/march")).await;
    assert!(
        step.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        step.url
    );
    Page::read(step.submit_code(b, code).await).await
}

#[tokio::test]
async fn a_step_up_re_checks_the_user_at_the_provider_and_one_disabled_there_cannot_step_up() {
    // An hour between re-checks: none falls due during the test, so only the step-up asks.
    let config = CONFIG.replace(
        "    step_up_acr:",
        "    refresh_interval: 1h\n    step_up_acr:",
    );
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    // Alice, signed in four minutes ago upstream with MFA: AAL2, not fresh for payroll,
    // which asks for a step-up; she confirms with stepgate's own TOTP.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert_saw(&page, "alice");
    enrol_totp(&s.h, "alice").await;
    // Still vouched for: the provider is asked (the refresh token redeemed), and the
    // step-up counts.
    let asked = s.tap.seen().len();
    let page = payroll_with_totp(&s, &b, &ALICE.code(0)).await;
    assert_saw(&page, "alice");
    assert_eq!(page.url.path(), "/payroll/march");
    assert_eq!(s.tap.seen().len(), asked + 1, "re-checked at the provider");

    // Disabled upstream since she signed in: the provider refuses the re-check, so the
    // step-up is refused and the session ended, though the TOTP code was right.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    assert_saw(&through_provider(&s, &b, "/").await, "alice");
    let session = b.session_id(&s.h.base).unwrap();
    s.op.disable("alice-sub").await;
    let page = payroll_with_totp(&s, &b, &ALICE.code(1)).await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert!(
        page.html.contains("Corp SSO no longer signs you in"),
        "{}",
        page.html
    );
    assert!(s.h.st.sessions.peek(&session).await.unwrap().is_none());
    let again = Page::open(&b, &s.h.at("/payroll/march")).await;
    assert!(
        again.html.contains("Sign in with Corp SSO"),
        "{}",
        again.html
    );
    let rows = audit(&s.h.st, Some("signout.upstream_refused")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["at"], "step_up");
    assert_eq!(audit(&s.h.st, Some("stepup.success")).await.len(), 1);
}
