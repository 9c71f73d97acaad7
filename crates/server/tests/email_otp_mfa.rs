//! E-mail codes as the MFA of a sign-in, through the live portal: by default (NIST) a
//! password and an e-mail code do not reach AAL2, so the sign-in still asks for more;
//! with the documented opt-in `assurance.count_email_otp_as_mfa: true` they do.

mod support;

use support::{password, upstream, user, Browser, Page, Server, JANE};

const CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
sessions: { cookie: { secure: false } }
factors:
  email_otp:
    enabled: true
    transport: { file: { dir: outbox } }
assurance:
  count_email_otp_as_mfa: COUNT
policies:
  - name: sign-in-mfa
    priority: 10
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 20
    outcome: allow
"#;

/// The code in the newest message of the e-mail outbox.
fn latest_code(h: &Server) -> String {
    let dir = h.dir.path().join("outbox");
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .max_by_key(|e| e.metadata().unwrap().modified().unwrap())
        .expect("a message in the outbox");
    let text = std::fs::read_to_string(newest.path()).unwrap();
    let re = regex::Regex::new(r"\b(\d{6,8})\b").unwrap();
    re.captures_iter(&text).last().expect("a code")[1].to_string()
}

/// Jane's password, then an e-mail code on the step-up page; what the browser sees.
async fn password_and_email_code(count: bool) -> (String, String) {
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("COUNT", count)
        .demo_users()
        .start()
        .await;
    let jane = user(&h.st, "jane").await;
    let email = stepgate_authn::FactorKind::EmailOtp;
    h.st.authn
        .enrol_contact_start(&jane, email, "jane@example.com")
        .await
        .unwrap();
    h.st.authn
        .enrol_contact_confirm(&jane, email, &latest_code(&h))
        .await
        .unwrap();

    let b = Browser::new();
    let page = Page::read(password(&b, &h.at("/app"), &JANE).await).await;
    assert!(
        page.url.path().ends_with("/_stepgate/step-up"),
        "{}",
        page.url
    );
    let sent = page
        .submit(&b, "/_stepgate/step-up/send", &[("kind", "email_otp")])
        .await;
    let page = Page::read(sent).await;
    assert!(page.html.contains("We sent a code"), "{}", page.html);
    let code = latest_code(&h);
    let r = page
        .submit(
            &b,
            "/_stepgate/step-up/otp",
            &[("kind", "email_otp"), ("code", &code)],
        )
        .await;
    let page = Page::read(r).await;
    (page.url.path().to_string(), page.html)
}

#[tokio::test]
async fn a_password_and_an_email_code_are_not_mfa_by_default() {
    let (path, html) = password_and_email_code(false).await;
    assert!(
        path.starts_with("/_stepgate/step-up"),
        "still the step-up page: {path}"
    );
    assert!(html.contains("One more step is needed"), "{html}");
}

#[tokio::test]
async fn with_the_opt_in_a_password_and_an_email_code_sign_in() {
    let (path, html) = password_and_email_code(true).await;
    assert_eq!(path, "/app");
    assert_eq!(html, "upstream ok");
}
