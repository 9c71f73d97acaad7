//! One-time codes and their limits: a replayed TOTP code fails, the eleventh wrong
//! guess is refused even if right, the tries left and the pause are told as configured, and a
//! wrong second factor is audited like a wrong password.

use axum::routing::any;

use crate::common::*;
use crate::support;
use crate::support::{field, upstream, user, Browser, Page, Server, JANE};

#[tokio::test]
async fn a_replayed_totp_code_fails() {
    let h = start().await;
    let b = Browser::new();
    let code = JANE.code(0);
    signed_in(&h, &b, &code).await;
    age_factors(&h, &b, 2).await;
    let r = b.post(h.at("/danger")).send().await.unwrap();
    let r = Page::read(r).await.submit_code(&b, &code).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("already used"));
}

/// Asks for an e-mail code on a step-up page whose form tokens are `csrf` and `t`.
async fn send_email_code(h: &Server, b: &Browser, csrf: &str, t: &str) -> reqwest::Response {
    b.post(h.at("/_stepgate/step-up/send"))
        .form(&[("csrf", csrf), ("t", t), ("kind", "email_otp")])
        .send()
        .await
        .unwrap()
}

/// Submits the e-mail `code` on a step-up page whose form tokens are `csrf` and `t`.
async fn submit_email_code(
    h: &Server,
    b: &Browser,
    csrf: &str,
    t: &str,
    code: &str,
) -> reqwest::Response {
    b.post(h.at("/_stepgate/step-up/otp"))
        .form(&[
            ("csrf", csrf),
            ("t", t),
            ("kind", "email_otp"),
            ("code", code),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_eleventh_wrong_otp_guess_is_refused_even_if_right() {
    let h = start().await;
    let user = user(&h.st, "jane").await;
    h.st.authn
        .enrol_contact_start(
            &user,
            stepgate_authn::FactorKind::EmailOtp,
            "jane@example.com",
        )
        .await
        .unwrap();
    let code = latest_code(&h);
    h.st.authn
        .enrol_contact_confirm(&user, stepgate_authn::FactorKind::EmailOtp, &code)
        .await
        .unwrap();

    let b = Browser::new();
    signed_in(&h, &b, &JANE.code(0)).await;
    age_factors(&h, &b, 2).await;
    let page = Page::read(b.post(h.at("/danger")).send().await.unwrap()).await;
    let (csrf, t) = (page.field("csrf"), page.field("t"));
    let r = send_email_code(&h, &b, &csrf, &t).await;
    assert!(
        r.text().await.unwrap().contains("We sent a code"),
        "code sent"
    );
    let right = latest_code(&h);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let mut csrf = csrf;
    for i in 1..=10 {
        let r = submit_email_code(&h, &b, &csrf, &t, wrong).await;
        assert!(
            r.status() == 401 || r.status() == 429,
            "guess {i}: {}",
            r.status()
        );
        csrf = field(&r.text().await.unwrap(), "csrf");
    }
    let r = submit_email_code(&h, &b, &csrf, &t, &right).await;
    assert!(
        r.url().path().ends_with("/_stepgate/step-up/otp"),
        "not let through"
    );
    assert!(
        r.status() == 401 || r.status() == 429,
        "the 11th guess is refused: {}",
        r.status()
    );

    // A new code, guessed right first time, does let the user through.
    let page = Page::read(r).await;
    let (csrf, t) = (page.field("csrf"), page.field("t"));
    send_email_code(&h, &b, &csrf, &t).await;
    let r = submit_email_code(&h, &b, &csrf, &t, &latest_code(&h)).await;
    assert_eq!(r.status(), 200);
    // E-mail codes do not count toward AAL2 (NIST), so the code is accepted but the
    // fresh-factor requirement still wants the authenticator app.
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Done. One more step is needed."),
        "a right code on a fresh send is accepted"
    );
}

/// The code in the newest message of the e-mail outbox.
fn latest_code(h: &Server) -> String {
    let dir = h.dir.path().join("outbox");
    let mut newest: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
    for e in walk(&dir) {
        let m = std::fs::metadata(&e).unwrap().modified().unwrap();
        if newest.as_ref().is_none_or(|(t, _)| m >= *t) {
            newest = Some((m, e));
        }
    }
    let text = std::fs::read_to_string(newest.expect("a message in the outbox").1).unwrap();
    let re = regex::Regex::new(r"\b(\d{6,8})\b").unwrap();
    re.captures_iter(&text)
        .last()
        .expect("a code in the message")[1]
        .to_string()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `regulation.announce_remaining`: `always` counts down on the login form too, for a name
/// no one has as for a real one (the count reveals no account); `off` never counts down;
/// either way the last try says at once that signing in is paused, with the time (UTC
/// without the page script) and a disabled form.
#[tokio::test]
async fn the_tries_left_are_told_as_configured_and_the_pause_at_once() {
    for (announce, counts) in [("always", true), ("off", false)] {
        let yaml = CONFIG.replace(
            "regulation:\n  max_retries: 50",
            &format!("regulation:\n  announce_remaining: {announce}\n  max_retries: 3"),
        );
        let app = axum::Router::new().fallback(any(|| async { "app" }));
        let h = Server::build(&yaml)
            .with("UPSTREAM", upstream::serve(app).await)
            .demo_users()
            .start()
            .await;
        for name in [JANE.username, "nobody-has-this-name"] {
            let b = Browser::new();
            let mut texts = Vec::new();
            for _ in 0..3 {
                let page = Page::open(&b, &h.at("/app")).await;
                let r = page
                    .submit(
                        &b,
                        "/_stepgate/login",
                        &[("username", name), ("password", "wrong")],
                    )
                    .await;
                texts.push((r.status().as_u16(), r.text().await.unwrap()));
            }
            let told = |i: usize, s: &str| texts[i].1.contains(s);
            assert_eq!(texts[0].0, 401);
            assert_eq!(
                told(0, "2 more tries before signing in is paused for 5 minutes."),
                counts,
                "{announce} {name}"
            );
            assert_eq!(
                told(1, "1 more try before signing in is paused"),
                counts,
                "{announce} {name}"
            );
            // The last try: paused now, the form disabled, the time in UTC and in RFC 3339
            // for the page script, and who can unlock.
            assert_eq!(texts[2].0, 429, "{announce} {name}");
            let last = &texts[2].1;
            assert!(
                told(2, "signing in is paused. Try again in 5 minutes."),
                "{last}"
            );
            assert!(last.contains(" disabled data-paused-until=\""), "{last}");
            assert!(last.contains("UTC</time>."), "{last}");
            assert!(last.contains("they can unlock your account"), "{last}");
        }
    }
}

/// The failure rows `kind` of jane's, oldest first.
async fn failures_of_jane(h: &Server, kind: &str) -> Vec<stepgate_store::AuditEvent> {
    let rows = support::audit(&h.st, Some(kind)).await;
    rows.into_iter()
        .filter(|e| e.actor.as_deref() == Some("jane"))
        .collect()
}

#[tokio::test]
async fn a_wrong_second_factor_is_audited_like_a_wrong_password_under_the_same_bound() {
    let h = start().await;
    let jane = user(&h.st, "jane").await;
    h.st.authn
        .enrol_contact_start(
            &jane,
            stepgate_authn::FactorKind::EmailOtp,
            "jane@example.com",
        )
        .await
        .unwrap();
    let code = latest_code(&h);
    h.st.authn
        .enrol_contact_confirm(&jane, stepgate_authn::FactorKind::EmailOtp, &code)
        .await
        .unwrap();
    // Ten minutes old: never accepted.
    let stale = JANE.code(-20);

    // At sign-in, after the password: a wrong authenticator code.
    let b = Browser::new();
    let r = support::password(&b, &h.at("/app"), &JANE).await;
    let r = Page::read(r).await.submit_code(&b, &stale).await;
    assert_eq!(r.status(), 401);
    let rows = failures_of_jane(&h, "signin.failure").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["factor"], "totp");
    assert_eq!(rows[0].detail["reason"], "invalid_credentials");
    assert_eq!(rows[0].subject.as_deref(), Some(jane.id.as_str()));
    assert_eq!(rows[0].ip.as_deref(), Some("127.0.0.1"));
    let r = Page::read(r).await.submit_code(&b, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream saw user=jane");

    // At a step-up: a wrong e-mailed code, then wrong authenticator codes, past the bound.
    age_factors(&h, &b, 2).await;
    let page = Page::read(b.post(h.at("/danger")).send().await.unwrap()).await;
    let (csrf, t) = (page.field("csrf"), page.field("t"));
    send_email_code(&h, &b, &csrf, &t).await;
    let wrong = if latest_code(&h) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = submit_email_code(&h, &b, &csrf, &t, wrong).await;
    assert_eq!(r.status(), 401);
    let rows = failures_of_jane(&h, "stepup.failure").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].detail["factor"], "email_otp");
    assert_eq!(rows[0].ip.as_deref(), Some("127.0.0.1"));
    let mut page = Page::read(r).await;
    for _ in 0..22 {
        let r = page.submit_code(&b, &stale).await;
        assert_eq!(r.status(), 401);
        page = Page::read(r).await;
    }
    let stepped = failures_of_jane(&h, "stepup.failure").await;
    let bound = stepgate_server::portal::FAILURE_AUDITS_PER_WINDOW as usize;
    assert_eq!(
        1 + stepped.len(),
        bound,
        "one bound per account and address for every factor"
    );
    assert!(stepped[1..].iter().all(|e| e.detail["factor"] == "totp"));
    assert_eq!(
        stepped.last().unwrap().detail["last_audited_in_window"],
        true
    );
}
