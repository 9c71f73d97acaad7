//! Signing out at the provider, its back-channel logout ending the other sessions, and
//! forged or replayed logout tokens ending nothing.

use crate::common::*;
use crate::support;
use crate::support::oidc_op::link_after;
use crate::support::upstream::assert_saw;
use crate::support::{audit, Browser, Page};

/// [`CONFIG`] with signing out at the provider and its back-channel logout on.
fn with_logout() -> String {
    CONFIG.replace(
        "    step_up_acr:",
        "    sign_out_upstream: true\n    back_channel_logout: true\n    step_up_acr:",
    )
}

/// The provider's logout page's form, confirmed ("Yes, sign me out"), in `b`.
async fn confirm_logout_at_provider(b: &Browser, page: &Page) -> Page {
    assert_eq!(page.status, 200, "{} {}", page.url, page.html);
    let action = link_after(&page.html, "action=\"");
    let xsrf = support::field(&page.html, "xsrf");
    let r = b
        .post(page.url.join(&action).unwrap())
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    Page::read(r).await
}

/// Signs out of stepgate in `b` (the account page's form), not following the answer.
async fn sign_out(s: &Setup, b: &Browser) -> reqwest::Response {
    let account = Page::open(b, &s.h.at("/_stepgate/account")).await;
    b.tab(false)
        .post(s.h.at("/_stepgate/logout"))
        .form(&[("csrf", account.field("csrf"))])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn signing_out_signs_out_at_the_provider_whose_back_channel_logout_ends_the_other_sessions() {
    let Some(s) = start_with(&with_logout(), Vec::new()).await else {
        return;
    };
    // Alice signs in twice, in two browsers (two sessions at the provider, each its sid).
    let (b1, b2) = (Browser::new(), Browser::new());
    for b in [&b1, &b2] {
        let page = with_mfa(&s, b, "alice-sub", "/").await;
        assert_saw(&page, "alice");
    }
    let sids: Vec<String> = s
        .tap
        .seen()
        .iter()
        .map(|t| claims_of(t)["sid"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(sids[0], sids[1]);

    // Signing out of stepgate in the first sends the browser to the provider's
    // end-session endpoint with its ID token as the hint, and back to stepgate.
    let r = sign_out(&s, &b1).await;
    assert_eq!(r.status(), 303);
    let to = reqwest::Url::parse(&support::header(&r, "location")).unwrap();
    assert_eq!(to.path(), "/session/end", "{to}");
    let q: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(q["id_token_hint"], s.tap.seen()[0]);
    assert_eq!(q["client_id"], "stepgate");
    assert_eq!(
        q["post_logout_redirect_uri"],
        format!(
            "{}/_stepgate/login/upstream/corp/signed-out",
            s.h.public_url
        )
    );
    assert!(
        b1.session_id(&s.h.base).is_none(),
        "signed out of stepgate first"
    );
    let at_op = Page::open(&b1, to.as_str()).await;
    let back = confirm_logout_at_provider(&b1, &at_op).await;
    assert_eq!(
        back.url.path(),
        "/_stepgate/login/upstream/corp/signed-out",
        "{}",
        back.html
    );
    assert!(back.html.contains("You are signed out."), "{}", back.html);
    // The provider told stepgate (its back-channel logout for the first session, which
    // had already ended here); the second session, another one at the provider, stands.
    let rows = audit(&s.h.st, Some("signout.upstream")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["sid"], sids[0].as_str());
    assert_eq!(rows[0].detail["ended"], 0);
    let page = Page::open(&b2, &s.h.at("/")).await;
    assert_saw(&page, "alice");

    // Signing out at the provider itself (not through stepgate) ends the second session
    // here through the provider's back-channel logout.
    let at_op = Page::open(&b2, &format!("{}/session/end", s.op.issuer)).await;
    confirm_logout_at_provider(&b2, &at_op).await;
    let rows = audit(&s.h.st, Some("signout.upstream")).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].detail["sid"], sids[1].as_str());
    assert_eq!(rows[1].detail["ended"], 1);
    assert_eq!(rows[1].actor.as_deref(), Some("alice"));
    let page = Page::open(&b2, &s.h.at("/")).await;
    assert!(
        page.html.contains("Sign in with Corp SSO"),
        "the second session ended: {}",
        page.html
    );
}

#[tokio::test]
async fn forged_and_replayed_logout_tokens_end_nothing() {
    let Some(s) = start_with(&with_logout(), Vec::new()).await else {
        return;
    };
    let b = Browser::new();
    let page = with_mfa(&s, &b, "alice-sub", "/").await;
    assert_saw(&page, "alice");
    let sid = claims_of(&s.tap.seen()[0])["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let url = s.h.at("/_stepgate/login/upstream/corp/backchannel-logout");
    let now = chrono::Utc::now().timestamp();
    let good = serde_json::json!({
        "iss": s.op.issuer, "aud": "stepgate", "iat": now, "exp": now + 120,
        "jti": "logout-1", "sid": sid,
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let post = |token: String| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[("logout_token", token)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let op_key = s.op.key_pem.clone();
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let changed = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = good.clone();
        f(&mut c);
        sign(&c, &op_key, "op-key-1")
    };
    let forged = [
        ("another key", sign(&good, other.as_bytes(), "op-key-1")),
        (
            "another audience",
            changed(&|c| c["aud"] = "another-app".into()),
        ),
        (
            "another issuer",
            changed(&|c| c["iss"] = "https://evil.example".into()),
        ),
        ("an ID token (nonce)", changed(&|c| c["nonce"] = "n".into())),
        (
            "no event",
            changed(&|c| c["events"] = serde_json::json!({})),
        ),
        (
            "no sid or sub",
            changed(&|c| {
                c.as_object_mut().unwrap().remove("sid");
            }),
        ),
        (
            "no jti",
            changed(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        ("expired", changed(&|c| c["exp"] = (now - 3600).into())),
        ("old", changed(&|c| c["iat"] = (now - 3600).into())),
        ("not a token", "garbage".to_string()),
    ];
    for (what, token) in forged {
        assert_eq!(post(token).await, 400, "{what}");
        let page = Page::open(&b, &s.h.at("/")).await;
        assert!(
            page.html.contains("app saw user=alice"),
            "a logout token with {what} ended the session"
        );
    }
    assert!(audit(&s.h.st, Some("signout.upstream")).await.is_empty());

    // The provider's own token: the session ends. The same token again is refused.
    let genuine = sign(&good, &op_key, "op-key-1");
    assert_eq!(post(genuine.clone()).await, 200);
    let page = Page::open(&b, &s.h.at("/")).await;
    assert!(page.html.contains("Sign in with Corp SSO"), "{}", page.html);
    assert_eq!(post(genuine).await, 400, "a replayed logout token");
    let rows = audit(&s.h.st, Some("signout.upstream")).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["ended"], 1);

    // By subject alone: every session of the subject through this provider ends.
    let b = Browser::new();
    with_mfa(&s, &b, "alice-sub", "/").await;
    let by_sub = changed(&|c| {
        c.as_object_mut().unwrap().remove("sid");
        c["sub"] = "alice-sub".into();
        c["jti"] = "logout-2".into();
    });
    assert_eq!(post(by_sub).await, 200);
    let page = Page::open(&b, &s.h.at("/")).await;
    assert!(page.html.contains("Sign in with Corp SSO"), "{}", page.html);
}
