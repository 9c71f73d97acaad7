//! The portal's forms: refused without a valid CSRF token, and forged, expired or
//! foreign return targets refused.

use crate::common::*;
use crate::support::{field, Browser, Page, Server, JANE};

/// Posts jane's password to the sign-in form with the form tokens `csrf` and `t` as given.
async fn post_password(h: &Server, b: &Browser, csrf: &str, t: &str) -> reqwest::Response {
    b.post(h.at("/_stepgate/login"))
        .form(&[
            ("csrf", csrf),
            ("t", t),
            ("username", JANE.username),
            ("password", JANE.password),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused() {
    let h = start().await;
    let b = Browser::new();
    let page = Page::open(&b, &h.at("/app")).await;
    for csrf in ["", "forged-token"] {
        let r = post_password(&h, &b, csrf, &page.field("t")).await;
        assert_eq!(r.status(), 403, "csrf {csrf:?}");
        assert!(b.session_id(&h.base).is_none());
    }
    // Signed in, a form whose token belongs to another session is refused too.
    signed_in(&h, &b, &JANE.code(0)).await;
    let other = h.st.signer.csrf_token("someone-else");
    let r = b
        .post(h.at("/_stepgate/logout"))
        .form(&[("csrf", other)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        b.get(h.at("/app"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("upstream saw user=jane"),
        "still signed in"
    );
}

#[tokio::test]
async fn forged_expired_and_foreign_return_targets_are_refused() {
    let h = start().await;
    let rt = h.st.runtime.load_full();
    let now = chrono::Utc::now().timestamp();
    let good = h.st.signer.sign("rt", &h.at("/app/report"), now + 600);
    let expired = h.st.signer.sign("rt", &h.at("/app/report"), now - 1);
    let forged = good.replacen('a', "b", 1);
    let foreign =
        h.st.signer
            .sign("rt", "https://evil.example/phish", now + 600);
    assert!(
        stepgate_server::portal::links::Links::new(&h.st.signer, &rt)
            .sign_return("https://evil.example/phish", chrono::Utc::now())
            .is_none(),
        "stepgate never signs a foreign target"
    );
    for (t, want) in [
        (good.as_str(), "/app/report"),
        (expired.as_str(), "/_stepgate/account"),
        (forged.as_str(), "/_stepgate/account"),
        (foreign.as_str(), "/_stepgate/account"),
    ] {
        let b = Browser::new();
        let page = Page::open(&b, &h.at(&format!("/_stepgate/login?t={t}"))).await;
        let r = post_password(&h, &b, &page.field("csrf"), t).await;
        let step = field(&r.text().await.unwrap(), "t");
        let tok = stepgate_server::portal::links::Links::new(&h.st.signer, &rt)
            .verify_step(&step, chrono::Utc::now())
            .expect("a valid step token");
        assert!(tok.rt.ends_with(want), "return target for {t}: {}", tok.rt);
    }
}
