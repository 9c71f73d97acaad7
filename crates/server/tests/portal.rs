//! The portal over real HTTP: sessions, sign-in with MFA, step-up, CSRF, return targets,
//! timeouts and one-time-code limits.

mod support;

use axum::routing::any;
use support::{field, sign_in, upstream, user, Browser, Page, Server, JANE};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
    routes:
      - { name: danger zone, methods: [POST], path: /danger, tags: [sensitive] }
server:
  return_target_ttl: 10m
regulation:
  max_retries: 50     # keep the account and IP bans out of the way of the per-code guess limit
  ip_max_retries: 50
sessions:
  cookie: { secure: false }
  aal2: { lifetime: 1h, idle_timeout: 10m }
factors:
  email_otp:
    enabled: true
    transport: { file: { dir: outbox } }
policies:
  - name: sensitive-needs-fresh-totp
    priority: 10
    targets: { routes: [{ tags: [sensitive] }] }
    outcome: { step_up: { min_aal: 2, factors: [totp, email_otp], max_age: every_time, message: The danger zone needs a fresh code. } }
  - name: everyone-with-mfa
    priority: 20
    outcome: { step_up: { min_aal: 2 } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// stepgate in front of an app that says whom stepgate told it the user is.
async fn start() -> Server {
    let app = axum::Router::new().fallback(any(|h: axum::http::HeaderMap| async move {
        format!(
            "upstream saw user={}",
            h.get("remote-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        )
    }));
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::serve(app).await)
        .demo_users()
        .start()
        .await
}

/// Rewrites the stored session `id` with `edit`, as if time had gone by.
async fn edit_session(h: &Server, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let entry = h.st.stores.hot.get_session(id).await.unwrap().unwrap();
    let mut data = entry.data.clone();
    edit(&mut data);
    h.st.stores
        .hot
        .put_session(
            id,
            &entry.user_id,
            &data,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
}

/// Moves every factor the session passed `minutes` into the past, as if time had gone by.
async fn age_factors(h: &Server, b: &Browser, minutes: i64) {
    let id = b.session_id(&h.base).expect("a session");
    edit_session(h, &id, |data| {
        for f in data["factors"].as_array_mut().unwrap() {
            let at: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(f["at"].clone()).unwrap();
            f["at"] = serde_json::to_value(at - chrono::Duration::minutes(minutes)).unwrap();
        }
    })
    .await;
}

/// Signs jane in (password, then TOTP `code`) from the app's page; the final page.
async fn signed_in(h: &Server, b: &Browser, code: &str) -> reqwest::Response {
    sign_in(b, &h.at("/app"), &JANE, code).await
}

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
