//! "Forgot your password?" with a code e-mailed through a real SMTP server on loopback
//! (Python aiosmtpd, crates/authn/tests/interop/smtp_sink.py): the code earns a reset link
//! of the user's own; the answer to "send me a code" is the same for a name with no
//! account or no address; a wrong, reused or foreign code earns nothing. Only where
//! `factors.email_otp.password_reset` opts in: by default the mailbox alone resets nothing.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{user, Browser, Page, Server};

const CONFIG: &str = r#"
apps:
  - { id: console, hosts: [127.0.0.1], upstream: "http://127.0.0.1:1" }
sessions: { cookie: { secure: false } }
factors:
  email_otp:
    enabled: true
    password_reset: RESET
    transport: { smtp: { host: 127.0.0.1, port: SMTP_PORT, security: none, from: "stepgate <noreply@stepgate.test>" } }
"#;

/// The SMTP sink: its port and the directory its messages land in.
struct Sink {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Sink {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Sink {
    fn start() -> Option<Sink> {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but python3 has no aiosmtpd"
            );
            support::skipped::record("python3 module aiosmtpd", "pip install aiosmtpd");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../authn/tests/interop/smtp_sink.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the SMTP sink's port");
        Some(Sink { child, dir, port })
    }

    fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .count()
    }

    /// Waits for message number `n` (1-based) and returns its recipient and code.
    async fn message(&self, n: usize) -> (String, String) {
        let path = self.dir.path().join(format!("{n:04}.eml"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(Instant::now() < deadline, "message {n} never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let to = text.lines().next().unwrap().to_string();
        let code = text
            .split(|c: char| !c.is_ascii_digit())
            .rfind(|w| w.len() == 6)
            .expect("a 6-digit code")
            .to_string();
        (to, code)
    }
}

/// Starts stepgate with `config`, its e-mail going to `sink`, and confirms
/// jane@example.com as Jane's address (the sink's first message).
async fn start(sink: &Sink, config: &str) -> Server {
    let h = Server::build(config)
        .with("SMTP_PORT", sink.port)
        .demo_users()
        .start()
        .await;
    let jane = user(&h.st, "jane").await;
    let email = stepgate_authn::FactorKind::EmailOtp;
    h.st.authn
        .enrol_contact_start(&jane, email, "jane@example.com")
        .await
        .unwrap();
    let (_, confirm) = sink.message(1).await;
    h.st.authn
        .enrol_contact_confirm(&jane, email, &confirm)
        .await
        .unwrap();
    h
}

/// Types `username` and an e-mailed `code` on "Forgot your password?".
async fn redeem(b: &Browser, page: &Page, username: &str, code: &str) -> reqwest::Response {
    post(
        b,
        page,
        "/_stepgate/forgot/email",
        &[("username", username), ("code", code)],
    )
    .await
}

/// Posts one of the page's forms (its CSRF token and `fields`) to `path`.
async fn post(b: &Browser, page: &Page, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let csrf = page.field("csrf");
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let origin = page.url.origin().ascii_serialization();
    b.post(format!("{origin}{path}"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_emailed_code_resets_the_password_and_tells_no_one_who_has_an_account() {
    let Some(sink) = Sink::start() else { return };
    // Jane confirms her address (one message); John has none.
    let h = start(&sink, &CONFIG.replace("RESET", "true")).await;

    let b = Browser::new();
    let forgot = Page::open(&b, &h.at("/_stepgate/forgot")).await;
    assert!(
        forgot.html.contains("Get a code by e-mail"),
        "{}",
        forgot.html
    );
    let send = |name: &'static str| {
        let (b, forgot) = (&b, &forgot);
        async move {
            let r = post(
                b,
                forgot,
                "/_stepgate/forgot/email/send",
                &[("username", name)],
            )
            .await;
            assert_eq!(r.status(), 200);
            Page::read(r).await
        }
    };
    // The same answer for a name with no account and one with no address: nothing sent.
    let mut answers = Vec::new();
    for name in ["nobody-here", "john"] {
        let page = send(name).await;
        answers.push(
            page.html
                .replace(name, "NAME")
                .replace(&page.field("csrf"), "CSRF"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 1, "no message for a name without an address");
    let page = send("jane").await;
    let jane_answer = page
        .html
        .replace("jane", "NAME")
        .replace(&page.field("csrf"), "CSRF");
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], jane_answer, "the same words whoever asks");
    let (to, code) = sink.message(2).await;
    assert_eq!(to, "X-Envelope-To: jane@example.com");

    // A wrong code earns nothing; the code for jane does not work for john.
    let wrong = redeem(&b, &page, "jane", "000000").await;
    assert_eq!(wrong.status(), 401);
    let foreign = redeem(&b, &page, "john", code.as_str()).await;
    assert_eq!(foreign.status(), 401);

    // The right one leads to "Choose a new password" for jane.
    let r = redeem(&b, &page, "jane", code.as_str()).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.url().path().starts_with("/_stepgate/reset/"),
        "{}",
        r.url()
    );
    let reset = Page::read(r).await;
    assert!(reset.html.contains("new password"), "{}", reset.html);
    // Used once: the same code again earns nothing.
    let again = redeem(&b, &page, "jane", code.as_str()).await;
    assert_eq!(again.status(), 401);
    let used = stepgate_store::AuditQuery {
        kind: Some("password.reset_code_used".into()),
        ..Default::default()
    };
    assert_eq!(
        h.st.stores.durable.list_audit(&used).await.unwrap().len(),
        1
    );
}

/// E-mail codes on for step-up, `password_reset` left at its default: "Forgot your
/// password?" offers no code by e-mail, and a forged form asking for one is refused with
/// nothing sent.
#[tokio::test]
async fn by_default_the_mailbox_alone_resets_nothing() {
    let Some(sink) = Sink::start() else { return };
    let h = start(&sink, &CONFIG.replace("    password_reset: RESET\n", "")).await;

    let b = Browser::new();
    let forgot = Page::open(&b, &h.at("/_stepgate/forgot")).await;
    assert!(!forgot.html.contains("by-email"), "{}", forgot.html);
    assert!(
        !forgot.html.contains("/forgot/email/send"),
        "{}",
        forgot.html
    );
    let r = post(
        &b,
        &forgot,
        "/_stepgate/forgot/email/send",
        &[("username", "jane")],
    )
    .await;
    assert_eq!(r.status(), 400);
    let r = redeem(&b, &forgot, "jane", "123456").await;
    assert_eq!(r.status(), 400);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 1, "no reset code was sent");
}
