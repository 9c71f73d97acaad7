//! The portal over real HTTP: sessions, sign-in with MFA, step-up, CSRF, return targets,
//! timeouts and one-time-code limits.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use stepgate_server::{build_state, demo, serve_on, ServeOptions, Shared};
use stepgate_store::{SecretKey, SecretsConfig};

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

struct Harness {
    st: Shared,
    base: String,
    _dir: tempfile::TempDir,
}

async fn upstream() -> SocketAddr {
    use axum::routing::any;
    let app = axum::Router::new().fallback(any(|h: axum::http::HeaderMap| async move {
        format!(
            "upstream saw user={}",
            h.get("remote-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        )
    }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    a
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = CONFIG.replace("UPSTREAM", &up.to_string());
    let mut cfg = stepgate_config::load_str("test.yaml", &text, Some(dir.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    cfg.base_dir = dir.path().to_path_buf();
    cfg.listen = addr;
    cfg.server.public_url = Some(marked_yaml::Spanned::new(
        marked_yaml::Span::new_blank(),
        format!("http://127.0.0.1:{}", addr.port()),
    ));
    let key = SecretKey::generate();
    cfg.secrets = SecretsConfig::default();
    let st = build_state(cfg, key.clone(), ServeOptions::default())
        .await
        .unwrap();
    demo::seed(&st, &key).await.unwrap();
    let s2 = st.clone();
    tokio::spawn(async move { serve_on(s2, listener).await.unwrap() });
    Harness {
        st,
        base: format!("http://127.0.0.1:{}", addr.port()),
        _dir: dir,
    }
}

fn client(jar: &Arc<Jar>) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .build()
        .unwrap()
}

fn field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in:\n{html}"))
        + needle.len();
    html[i..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

fn session_id(jar: &Jar, base: &str) -> Option<String> {
    let h = jar.cookies(&base.parse().unwrap())?;
    h.to_str()
        .ok()?
        .split("; ")
        .find_map(|c| c.strip_prefix("stepgate_session=").map(str::to_string))
        .filter(|v| !v.is_empty())
}

fn totp_code(offset_steps: i64) -> String {
    let seed = totp_rs::Secret::Encoded(demo::USERS[0].totp_base32.into())
        .to_bytes()
        .unwrap();
    let data = stepgate_authn::totp::TotpData {
        algorithm: stepgate_authn::config::TotpAlgorithm::Sha1,
        digits: 6,
        period: 30,
        last_step: None,
    };
    let t = (chrono::Utc::now().timestamp() + offset_steps * 30) as u64;
    stepgate_authn::totp::generate(&data, &seed, t)
}

/// Moves every factor the session passed `minutes` into the past, as if time had gone by.
async fn age_factors(h: &Harness, jar: &Jar, minutes: i64) {
    let id = session_id(jar, &h.base).expect("a session");
    let entry = h.st.stores.hot.get_session(&id).await.unwrap().unwrap();
    let mut data = entry.data.clone();
    for f in data["factors"].as_array_mut().unwrap() {
        let at: chrono::DateTime<chrono::Utc> = serde_json::from_value(f["at"].clone()).unwrap();
        f["at"] = serde_json::to_value(at - chrono::Duration::minutes(minutes)).unwrap();
    }
    h.st.stores
        .hot
        .put_session(
            &id,
            &entry.user_id,
            &data,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
}

/// Password then TOTP; returns the final page.
async fn sign_in(h: &Harness, c: &reqwest::Client, code: &str) -> reqwest::Response {
    let page = c
        .get(format!("{}/app", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = c
        .post(format!("{}/_stepgate/login", h.base))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("username", "jane".into()),
            ("password", demo::USERS[0].password.into()),
        ])
        .send()
        .await
        .unwrap();
    let url = r.url().to_string();
    let page = r.text().await.unwrap();
    assert!(
        url.contains("/_stepgate/step-up"),
        "after the password the sign-in policy asks for MFA, got {url}"
    );
    c.post(format!("{}/_stepgate/step-up/totp", h.base))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("code", code.to_string()),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn session_id_changes_on_sign_in_and_on_step_up() {
    let h = start().await;
    let jar = Arc::new(Jar::default());
    let c = client(&jar);
    let page = c
        .get(format!("{}/app", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        session_id(&jar, &h.base).is_none(),
        "no session before sign-in"
    );
    let r = c
        .post(format!("{}/_stepgate/login", h.base))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("username", "jane".into()),
            ("password", demo::USERS[0].password.into()),
        ])
        .send()
        .await
        .unwrap();
    let pending = session_id(&jar, &h.base).expect("a pending session after the password");
    let page = r.text().await.unwrap();
    let r = c
        .post(format!("{}/_stepgate/step-up/totp", h.base))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("code", totp_code(0)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "upstream saw user=jane",
        "back at the app after MFA"
    );
    let signed_in = session_id(&jar, &h.base).unwrap();
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
    age_factors(&h, &jar, 2).await;
    let r = c
        .post(format!("{}/danger", h.base))
        .header("referer", format!("{}/app", h.base))
        .send()
        .await
        .unwrap();
    assert!(r.url().path().ends_with("/step-up"), "{}", r.url());
    let page = r.text().await.unwrap();
    assert!(
        page.contains("The danger zone needs a fresh code."),
        "the page says why"
    );
    let r = c
        .post(format!("{}/_stepgate/step-up/totp", h.base))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("code", totp_code(1)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.url().path(),
        "/app",
        "a POST step-up returns to the page it came from"
    );
    let stepped = session_id(&jar, &h.base).unwrap();
    assert_ne!(signed_in, stepped, "the id changes on step-up");
    let r = c.post(format!("{}/danger", h.base)).send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "upstream saw user=jane",
        "the resubmitted POST goes through"
    );
}

#[tokio::test]
async fn a_replayed_totp_code_fails() {
    let h = start().await;
    let jar = Arc::new(Jar::default());
    let c = client(&jar);
    let code = totp_code(0);
    sign_in(&h, &c, &code).await;
    age_factors(&h, &jar, 2).await;
    let r = c.post(format!("{}/danger", h.base)).send().await.unwrap();
    let page = r.text().await.unwrap();
    let r = c
        .post(format!("{}/_stepgate/step-up/totp", h.base))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("code", code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("already used"));
}

#[tokio::test]
async fn forms_without_a_valid_csrf_token_are_refused() {
    let h = start().await;
    let jar = Arc::new(Jar::default());
    let c = client(&jar);
    let page = c
        .get(format!("{}/app", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for csrf in ["", "forged-token"] {
        let r = c
            .post(format!("{}/_stepgate/login", h.base))
            .form(&[
                ("csrf", csrf.to_string()),
                ("t", field(&page, "t")),
                ("username", "jane".into()),
                ("password", demo::USERS[0].password.into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "csrf {csrf:?}");
        assert!(session_id(&jar, &h.base).is_none());
    }
    // Signed in, a form whose token belongs to another session is refused too.
    sign_in(&h, &c, &totp_code(0)).await;
    let other = h.st.signer.csrf_token("someone-else");
    let r = c
        .post(format!("{}/_stepgate/logout", h.base))
        .form(&[("csrf", other)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        c.get(format!("{}/app", h.base))
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
    let good =
        h.st.signer
            .sign("rt", &format!("{}/app/report", h.base), now + 600);
    let expired =
        h.st.signer
            .sign("rt", &format!("{}/app/report", h.base), now - 1);
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
        let jar = Arc::new(Jar::default());
        let c = client(&jar);
        let page = c
            .get(format!("{}/_stepgate/login?t={t}", h.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let r = c
            .post(format!("{}/_stepgate/login", h.base))
            .form(&[
                ("csrf", field(&page, "csrf")),
                ("t", t.to_string()),
                ("username", "jane".into()),
                ("password", demo::USERS[0].password.into()),
            ])
            .send()
            .await
            .unwrap();
        let page = r.text().await.unwrap();
        let step = field(&page, "t");
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
        let jar = Arc::new(Jar::default());
        let c = client(&jar);
        let code = if field_name == "last_seen" {
            totp_code(0)
        } else {
            totp_code(1)
        };
        let r = sign_in(&h, &c, &code).await;
        assert_eq!(r.text().await.unwrap(), "upstream saw user=jane");
        let id = session_id(&jar, &h.base).unwrap();
        let entry = h.st.stores.hot.get_session(&id).await.unwrap().unwrap();
        let mut data = entry.data.clone();
        // AAL2 here: 10 minutes idle, 1 hour absolute.
        let past = if field_name == "last_seen" {
            chrono::Utc::now() - chrono::Duration::minutes(11)
        } else {
            chrono::Utc::now() - chrono::Duration::minutes(61)
        };
        data[field_name] = serde_json::to_value(past).unwrap();
        h.st.stores
            .hot
            .put_session(
                &id,
                &entry.user_id,
                &data,
                std::time::Duration::from_secs(3600),
            )
            .await
            .unwrap();
        let r = c.get(format!("{}/app", h.base)).send().await.unwrap();
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

#[tokio::test]
async fn the_eleventh_wrong_otp_guess_is_refused_even_if_right() {
    let h = start().await;
    let user =
        h.st.stores
            .durable
            .get_user_by_username("jane")
            .await
            .unwrap()
            .unwrap();
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

    let jar = Arc::new(Jar::default());
    let c = client(&jar);
    sign_in(&h, &c, &totp_code(0)).await;
    age_factors(&h, &jar, 2).await;
    let page = c
        .post(format!("{}/danger", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (csrf, t) = (field(&page, "csrf"), field(&page, "t"));
    let r = c
        .post(format!("{}/_stepgate/step-up/send", h.base))
        .form(&[
            ("csrf", csrf.clone()),
            ("t", t.clone()),
            ("kind", "email_otp".into()),
        ])
        .send()
        .await
        .unwrap();
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
        let r = c
            .post(format!("{}/_stepgate/step-up/otp", h.base))
            .form(&[
                ("csrf", csrf.clone()),
                ("t", t.clone()),
                ("kind", "email_otp".into()),
                ("code", wrong.into()),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 401 || r.status() == 429,
            "guess {i}: {}",
            r.status()
        );
        csrf = field(&r.text().await.unwrap(), "csrf");
    }
    let r = c
        .post(format!("{}/_stepgate/step-up/otp", h.base))
        .form(&[
            ("csrf", csrf),
            ("t", t),
            ("kind", "email_otp".into()),
            ("code", right),
        ])
        .send()
        .await
        .unwrap();
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
    let page = r.text().await.unwrap();
    let csrf = field(&page, "csrf");
    let t = field(&page, "t");
    c.post(format!("{}/_stepgate/step-up/send", h.base))
        .form(&[
            ("csrf", csrf.clone()),
            ("t", t.clone()),
            ("kind", "email_otp".into()),
        ])
        .send()
        .await
        .unwrap();
    let fresh = latest_code(&h);
    let r = c
        .post(format!("{}/_stepgate/step-up/otp", h.base))
        .form(&[
            ("csrf", csrf),
            ("t", t),
            ("kind", "email_otp".into()),
            ("code", fresh),
        ])
        .send()
        .await
        .unwrap();
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

fn latest_code(h: &Harness) -> String {
    let dir = h._dir.path().join("outbox");
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
