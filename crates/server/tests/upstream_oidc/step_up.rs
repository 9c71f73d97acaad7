//! Step-up with an upstream provider: its MFA counts within the trust window, a
//! sensitive route is stepped up there with `acr_values` and `max_age`, and a passkey step-up
//! it refuses is told in JSON.

use crate::common::*;
use crate::support;
use crate::support::oidc_op::link_after;
use crate::support::upstream::assert_saw;
use crate::support::{audit, user, Browser, Page};

#[tokio::test]
async fn upstream_mfa_counts_within_the_trust_window_and_otherwise_stepgate_asks_for_totp() {
    let Some(s) = start().await else { return };
    let page = with_mfa(&s, &Browser::new(), "alice-sub", "/").await;
    assert_saw(&page, "alice");
    enrol_totp(&s.h, "alice").await;

    // Ten minutes ago upstream, with a five-minute window: the upstream's MFA no longer
    // counts, and the sign-in policy's AAL2 asks for stepgate's own TOTP.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 600).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "outside the trust window: {} {}",
        page.url,
        page.html
    );
    let r = page.submit_code(&b, &ALICE.code(0)).await;
    let done = Page::read(r).await;
    assert_saw(&done, "alice");

    // Amr values the provider is not trusted for never raise the level, however strong
    // they sound.
    s.op.next("alice-sub", &["pwd", "hwk", "otp"], None, 0)
        .await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        page.url
    );
    // A trusted acr counts as the classes it is mapped to.
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 0)
        .await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert_saw(&page, "alice");
}

#[tokio::test]
async fn a_sensitive_route_is_stepped_up_at_the_provider_with_acr_values_and_max_age() {
    let Some(s) = start().await else { return };
    // Signed in four minutes ago upstream, with MFA: AAL2, but not fresh enough for payroll.
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert_saw(&page, "alice");
    let step = Page::open(&b, &s.h.at("/payroll/march")).await;
    assert!(
        step.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        step.url
    );
    assert!(step.html.contains("Confirm with Corp SSO"), "{}", step.html);
    let confirm =
        s.h.at(&link_after(&step.html, "<a class=\"button\" href=\""));
    let refused_as = |reason: &'static str| {
        let st = s.h.st.clone();
        async move {
            let rows = audit(&st, Some("signin.upstream_refused")).await;
            assert_eq!(rows.last().unwrap().detail["reason"], reason, "{rows:?}");
            rows.len()
        }
    };

    // The provider answers at another level, or with an old authentication, or as someone
    // else: each refused, and the session is not stepped up.
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:pwd"), 0)
        .await;
    let page = Page::open(&b, &confirm).await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert_eq!(refused_as("refused").await, 1);
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 600)
        .await;
    let page = Page::open(&b, &confirm).await;
    assert_eq!(page.status, 401, "{}", page.html);
    assert_eq!(refused_as("refused").await, 2);
    // (Someone else: the provider's own key, signing for bob, who is no one here.)
    let key = s.op.key_pem.clone();
    s.tap.rewrite(move |t| {
        let mut c = claims_of(t);
        c["sub"] = "bob-sub".into();
        sign(&c, &key, "op-key-1")
    });
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 0)
        .await;
    let page = Page::open(&b, &confirm).await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert_eq!(refused_as("unusable").await, 3);
    s.tap.clear();
    let still = Page::open(&b, &s.h.at("/payroll/march")).await;
    assert!(
        still.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        still.url
    );

    // The provider asked to authenticate again now, at the configured level: it does, and
    // payroll opens.
    s.op.next("alice-sub", &["pwd"], Some("urn:corp:mfa"), 0)
        .await;
    let r = b.tab(false).get(&confirm).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let auth = url::Url::parse(&support::header(&r, "location")).unwrap();
    let q: std::collections::HashMap<_, _> = auth.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("acr_values").map(String::as_str),
        Some("urn:corp:mfa")
    );
    assert_eq!(q.get("max_age").map(String::as_str), Some("0"));
    assert_eq!(q.get("prompt").map(String::as_str), Some("login"));
    let page = Page::open(&b, auth.as_str()).await;
    assert_saw(&page, "alice");
    assert_eq!(page.url.path(), "/payroll/march");
    assert_eq!(audit(&s.h.st, Some("stepup.upstream")).await.len(), 1);
}

#[tokio::test]
async fn a_passkey_step_up_the_provider_refuses_is_told_in_json_and_a_forged_one_audited() {
    let config = CONFIG.replace(
        "    step_up_acr:",
        "    refresh_interval: 1h\n    step_up_acr:",
    );
    let Some(s) = start_with(&config, Vec::new()).await else {
        return;
    };
    s.op.next("alice-sub", &["pwd", "mfa"], None, 240).await;
    let b = Browser::new();
    assert_saw(&through_provider(&s, &b, "/").await, "alice");
    let alice = user(&s.h.st, "alice").await;
    let mut passkey = support::Passkey::register(&s.h.st, &alice).await;

    // A forged assertion: refused, and audited as a failed step-up with the passkey.
    let step = Page::open(&b, &s.h.at("/payroll/march")).await;
    let (status, body) = passkey.step_up_answer(&b, &s.h.base, &step, true).await;
    assert_eq!(status, 401, "{body}");
    let rows = audit(&s.h.st, Some("stepup.failure")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].actor.as_deref(), Some("alice"));
    assert_eq!(rows[0].detail["factor"], "webauthn");
    assert_eq!(rows[0].ip.as_deref(), Some("127.0.0.1"));

    // Disabled upstream: the right passkey's step-up is refused by the re-check, in the
    // JSON the page script reads — the sentence to show, and where to sign in again.
    s.op.disable("alice-sub").await;
    let step = Page::open(&b, &s.h.at("/payroll/march")).await;
    let (status, body) = passkey.step_up_answer(&b, &s.h.base, &step, false).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Corp SSO no longer signs you in")),
        "{body}"
    );
    assert_eq!(body["signed_out"], true, "{body}");
    assert!(
        body["redirect"]
            .as_str()
            .is_some_and(|r| r.ends_with("/_stepgate/login")),
        "{body}"
    );
    let rows = audit(&s.h.st, Some("signout.upstream_refused")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["at"], "step_up");
}
