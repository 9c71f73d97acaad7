//! `enrolment.at_first_sign_in` over real HTTP: a user with nothing but a password, signing
//! in from a named network, adds an authenticator app right after the password and finishes
//! the MFA sign-in with it (audited); from elsewhere, with a factor already, or with the
//! setting off, the step-up page is unchanged.

mod support;

use support::{audit, client, field, totp_data, upstream, Browser, Page, Server, JANE};

const CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
server:
  trusted_proxies: [127.0.0.1]
sessions: { cookie: { secure: false } }
networks:
  corporate: [198.51.100.0/24]
ENROLMENT
policies:
  - name: sign-in-mfa
    priority: 10
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - { name: everyone, priority: 50, outcome: allow }
"#;

const ON: &str = "enrolment:\n  at_first_sign_in: { networks: [corporate] }";
const PASSWORD: &str = "a long new-hire passphrase 42";

async fn start(enrolment: &str) -> Server {
    let h = Server::build(&CONFIG.replace("ENROLMENT", enrolment))
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .demo_users()
        .start()
        .await;
    // A new hire with a password and nothing else.
    let u = stepgate_store::UserRecord::new("newbie");
    h.st.stores.durable.create_user(&u).await.unwrap();
    h.st.authn
        .admin_set_password(&u, PASSWORD, "test")
        .await
        .unwrap();
    h
}

/// A browser whose requests reach stepgate through the trusted proxy from `ip`.
fn from(ip: &str) -> Browser {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-for", ip.parse().unwrap());
    Browser::on(Default::default(), client().default_headers(h))
}

/// Types `username`'s password on the sign-in page the app leads to; the page it ends on.
async fn password(h: &Server, b: &Browser, username: &str, password: &str) -> Page {
    let page = Page::open(b, &h.at("/app")).await;
    Page::read(
        page.submit(
            b,
            "/_stepgate/login",
            &[("username", username), ("password", password)],
        )
        .await,
    )
    .await
}

/// Posts `fields` and the page's CSRF token to `path` on the page's origin.
async fn post(b: &Browser, page: &Page, path: &str, fields: &[(&str, &str)]) -> Page {
    let csrf = page.field("csrf");
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let origin = page.url.origin().ascii_serialization();
    Page::read(
        b.post(format!("{origin}{path}"))
            .form(&form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn totp(seed_base32: &str, offset_steps: i64) -> String {
    let seed = totp_rs::Secret::Encoded(seed_base32.into())
        .to_bytes()
        .unwrap();
    let t = (chrono::Utc::now().timestamp() + offset_steps * 30) as u64;
    stepgate_authn::totp::generate(&totp_data(), &seed, t)
}

#[tokio::test]
async fn from_a_named_network_a_password_only_user_enrols_then_finishes_the_mfa_sign_in() {
    let h = start(ON).await;

    // From elsewhere: the step-up page, with nothing to offer but the administrator.
    let away = from("203.0.113.9");
    let page = password(&h, &away, "newbie", PASSWORD).await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        page.url
    );
    assert!(page.html.contains("id=\"no-factor\""), "{}", page.html);
    assert!(audit(&h.st, Some("enrolment.at_first_sign_in"))
        .await
        .is_empty());

    // From the office: straight from the password to adding a way to sign in.
    let office = from("198.51.100.7");
    let page = password(&h, &office, "newbie", PASSWORD).await;
    assert!(
        page.url.path().ends_with("/_stepgate/welcome"),
        "{}",
        page.url
    );
    assert!(
        page.html
            .contains("Signing in needs more than your password"),
        "{}",
        page.html
    );
    assert!(
        !page.html.contains("id=\"welcome-skip\""),
        "no skipping an MFA sign-in"
    );
    let events = audit(&h.st, Some("enrolment.at_first_sign_in")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor.as_deref(), Some("newbie"));
    assert_eq!(events[0].detail["network"], "corporate");
    assert_eq!(events[0].ip.as_deref(), Some("198.51.100.7"));
    // The session is still pending: the app is not reachable yet.
    let r = office.get(h.at("/app")).send().await.unwrap();
    assert!(r.url().path().starts_with("/_stepgate/"), "{}", r.url());

    // An authenticator app: the QR page, then its first code.
    let g = page
        .url
        .query_pairs()
        .find(|(k, _)| k == "g")
        .unwrap()
        .1
        .to_string();
    let qr = post(
        &office,
        &page,
        "/_stepgate/welcome/totp/start",
        &[("g", &g)],
    )
    .await;
    assert_eq!(qr.status, 200, "{}", qr.html);
    let secret = qr
        .html
        .split("id=\"totp-secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the key to type")
        .to_string();
    let token = field(&qr.html, "token");
    let code = totp(&secret, 0);
    let step = post(
        &office,
        &qr,
        "/_stepgate/welcome/totp/confirm",
        &[("g", &g), ("token", &token), ("code", &code)],
    )
    .await;
    // On to the sign-in's step-up page, which now offers the new app.
    assert!(
        step.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        step.url
    );
    assert!(step.html.contains("id=\"totp-code\""), "{}", step.html);
    let done = step
        .submit(
            &office,
            "/_stepgate/step-up/totp",
            &[("code", &totp(&secret, 1))],
        )
        .await;
    assert_eq!(done.text().await.unwrap(), "upstream ok");

    // A user who has a second factor already is asked for it, not offered enrolment.
    let jane = from("198.51.100.8");
    let page = password(&h, &jane, JANE.username, JANE.password).await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        page.url
    );
    assert_eq!(
        audit(&h.st, Some("enrolment.at_first_sign_in")).await.len(),
        1
    );
}

#[tokio::test]
async fn off_by_default_even_from_the_office() {
    let h = start("").await;
    let office = from("198.51.100.7");
    let page = password(&h, &office, "newbie", PASSWORD).await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        page.url
    );
    assert!(page.html.contains("id=\"no-factor\""), "{}", page.html);
    assert!(audit(&h.st, Some("enrolment.at_first_sign_in"))
        .await
        .is_empty());
}

#[test]
fn a_zone_that_is_not_in_networks_stops_the_configuration() {
    let yaml = CONFIG
        .replace(
            "ENROLMENT",
            "enrolment:\n  at_first_sign_in: { networks: [corprate] }",
        )
        .replace("http://UPSTREAM", "http://127.0.0.1:1");
    let e = stepgate_config::load_str("t.yaml", &yaml, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("`corprate` is not a zone of `networks` (known: corporate)"),
        "{e}"
    );
}
