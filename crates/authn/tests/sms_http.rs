//! SMS OTP through an HTTP gateway: a recording HTTP server on loopback (inside the test)
//! receives the configured JSON POST; the code in it verifies.

use std::collections::BTreeMap;

use chrono::Utc;
use stepgate_authn::config::{OtpConfig, SmsHttpConfig, SmsOtpConfig, SmsTransportConfig};
use stepgate_authn::otp::{self, CodeCheck, SmsSender};
use stepgate_policy::HumanDuration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One recorded request: head (request line + headers) and body.
struct Recorded {
    head: String,
    body: String,
}

/// Accepts one HTTP/1.1 request, records it, answers 200.
async fn record_one(listener: TcpListener) -> Recorded {
    let (mut sock, _) = listener.accept().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body_start) = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before headers");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&buf[..pos]).to_string(), pos + 4);
        }
    };
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < body_start + len {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[body_start..body_start + len]).to_string();
    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await
        .unwrap();
    Recorded { head, body }
}

#[tokio::test]
async fn sms_code_round_trip_through_http_gateway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(record_one(listener));

    std::env::set_var("STEPGATE_TEST_SMS_TOKEN", "Bearer test-token");
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), "key-from-a-file\n").unwrap();
    let cfg = SmsTransportConfig::Http(SmsHttpConfig {
        url: format!("http://127.0.0.1:{port}/v1/messages"),
        headers: BTreeMap::from([("X-Account".to_string(), "42".to_string())]),
        headers_env: BTreeMap::from([(
            "Authorization".to_string(),
            "STEPGATE_TEST_SMS_TOKEN".to_string(),
        )]),
        headers_file: BTreeMap::from([("X-Api-Key".to_string(), key_file.path().to_path_buf())]),
        body: r#"{"destination": {"number": "{to}"}, "message": "{text}", "sender": "stepgate"}"#
            .into(),
        timeout: HumanDuration::from_secs(10),
    });
    let sender = SmsSender::from_config(&cfg).unwrap();
    let otp_cfg = OtpConfig::default();
    let mut issued = otp::issue(&otp_cfg, Utc::now());
    let text = otp::sms_text(
        &SmsOtpConfig::default(),
        &otp_cfg,
        "stepgate",
        "jane",
        &issued.code,
    );
    sender
        .send("+15550100123", &text)
        .await
        .expect("gateway accepted");

    let rec = server.await.unwrap();
    assert!(
        rec.head.starts_with("POST /v1/messages HTTP/1.1"),
        "{}",
        rec.head
    );
    let head = rec.head.to_lowercase();
    assert!(head.contains("authorization: bearer test-token"), "{head}");
    assert!(head.contains("x-account: 42"));
    assert!(
        head.contains("x-api-key: key-from-a-file\r\n"),
        "the header from a file, without its newline: {head}"
    );
    assert!(head.contains("content-type: application/json"));
    let json: serde_json::Value = serde_json::from_str(&rec.body).unwrap();
    assert_eq!(json["destination"]["number"], "+15550100123");
    let message = json["message"].as_str().unwrap();
    let code = message.split_whitespace().next().unwrap();
    assert_eq!(issued.check(code, Utc::now()), CodeCheck::Accepted);
}

#[tokio::test]
async fn gateway_error_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut chunk = [0u8; 4096];
        let _ = sock.read(&mut chunk).await;
        let _ = sock
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    });
    let cfg = SmsTransportConfig::Http(SmsHttpConfig {
        url: format!("http://127.0.0.1:{port}/send"),
        headers: BTreeMap::new(),
        headers_env: BTreeMap::new(),
        headers_file: BTreeMap::new(),
        body: r#"{"to": "{to}", "text": "{text}"}"#.into(),
        timeout: HumanDuration::from_secs(5),
    });
    let err = SmsSender::from_config(&cfg)
        .unwrap()
        .send("+15550100123", "123456")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}

#[test]
fn a_secret_file_that_is_missing_or_empty_stops_the_sender_from_being_built() {
    let empty = tempfile::NamedTempFile::new().unwrap();
    for (path, why) in [
        (empty.path().to_path_buf(), "is empty"),
        (
            std::path::PathBuf::from("/nonexistent/stepgate-sms-key"),
            "cannot be read",
        ),
    ] {
        let cfg = SmsTransportConfig::Http(SmsHttpConfig {
            url: "http://127.0.0.1:9/send".into(),
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            headers_file: BTreeMap::from([("X-Api-Key".to_string(), path.clone())]),
            body: r#"{"to": "{to}", "text": "{text}"}"#.into(),
            timeout: HumanDuration::from_secs(5),
        });
        let err = SmsSender::from_config(&cfg).err().expect("refused");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains(why),
            "{text}"
        );
    }
}
