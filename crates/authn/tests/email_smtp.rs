//! E-mail OTP through a real SMTP server on loopback (Python aiosmtpd): the code is sent
//! with lettre, received by the server, read back from the message and verified.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use stepgate_authn::config::{
    EmailOtpConfig, EmailTransportConfig, OtpConfig, SmtpConfig, SmtpSecurity,
};
use stepgate_authn::otp::{self, CodeCheck, EmailSender};
use stepgate_policy::HumanDuration;

#[tokio::test]
async fn email_code_round_trip_through_real_smtp() {
    if !common::python_has(&["aiosmtpd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/smtp_sink.py");
    let mut server = Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start smtp sink");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("smtp sink port");

    let transport = EmailTransportConfig::Smtp(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        username: None,
        password_env: None,
        password_file: None,
        from: "stepgate <noreply@stepgate.test>".into(),
        timeout: HumanDuration::from_secs(10),
    });
    let sender = EmailSender::from_config(&transport).unwrap();
    let otp_cfg = OtpConfig::default();
    let now = Utc::now();
    let mut issued = otp::issue(&otp_cfg, now);
    let (subject, body) = otp::email_text(
        &EmailOtpConfig::default(),
        &otp_cfg,
        "stepgate",
        "jane",
        &issued.code,
    );
    sender
        .send("jane@example.com", &subject, &body)
        .await
        .expect("send through SMTP");

    // Wait for the server to have written the message.
    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        if let Some(entry) = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
        {
            break std::fs::read_to_string(entry.path()).unwrap();
        }
        assert!(Instant::now() < deadline, "no message arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(server.stdin.take());
    let _ = server.wait();

    assert!(
        message.contains("X-Envelope-To: jane@example.com"),
        "{message}"
    );
    assert!(
        message.contains("Subject: Your stepgate sign-in code"),
        "{message}"
    );
    let received = message
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a 6-digit code in the message")
        .to_string();
    assert_eq!(issued.check(&received, Utc::now()), CodeCheck::Accepted);
    assert_eq!(issued.check(&received, Utc::now()), CodeCheck::Used);
}

#[test]
fn an_smtp_password_file_that_cannot_be_read_stops_the_sender_from_being_built() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    let smtp = |file: &std::path::Path| {
        EmailTransportConfig::Smtp(SmtpConfig {
            host: "127.0.0.1".into(),
            port: 2525,
            security: SmtpSecurity::None,
            username: Some("stepgate".into()),
            password_env: None,
            password_file: Some(file.to_path_buf()),
            from: "stepgate <noreply@stepgate.test>".into(),
            timeout: HumanDuration::from_secs(10),
        })
    };
    let missing = std::path::Path::new("/nonexistent/stepgate-smtp-password");
    for (file, why) in [(empty.path(), "is empty"), (missing, "cannot be read")] {
        let err = EmailSender::from_config(&smtp(file))
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()) && text.contains(why),
            "{text}"
        );
    }
    let good = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(good.path(), "s3cret\n").unwrap();
    assert!(EmailSender::from_config(&smtp(good.path())).is_ok());
}
