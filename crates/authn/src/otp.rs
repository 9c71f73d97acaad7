//! One-time codes sent by e-mail or SMS: issuing, checking (expiry, single use, bounded
//! guesses) and delivery (SMTP through lettre, an HTTP SMS gateway, or a `file` transport
//! that writes each message into a directory for local demos).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::{
    EmailOtpConfig, EmailTransportConfig, OtpConfig, SmsHttpConfig, SmsOtpConfig,
    SmsTransportConfig, SmtpSecurity,
};

/// A code that was sent and can be checked. The hot store keeps it (keyed by user and
/// channel) until it is used, expires or runs out of guesses.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCode {
    /// The code (digits).
    pub code: String,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// Guesses still allowed.
    pub guesses_left: u32,
    /// Set once accepted; a used code never verifies again.
    pub used: bool,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCode")
            .field("code", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("guesses_left", &self.guesses_left)
            .field("used", &self.used)
            .finish()
    }
}

/// The result of checking a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right code, in time; it is now used.
    Accepted,
    /// Wrong code; this many guesses remain.
    Wrong {
        /// Guesses remaining.
        guesses_left: u32,
    },
    /// The code expired; ask for a new one.
    Expired,
    /// No guesses left (this guess was not even compared); ask for a new one.
    Exhausted,
    /// The code was already used.
    Used,
}

/// Makes a random numeric code of `digits` digits.
pub fn random_code(digits: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..digits)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

/// Issues a new code per the configuration.
pub fn issue(cfg: &OtpConfig, now: DateTime<Utc>) -> IssuedCode {
    IssuedCode {
        code: random_code(cfg.digits),
        expires_at: now + chrono::Duration::seconds(cfg.lifetime.as_secs() as i64),
        guesses_left: cfg.max_guesses,
        used: false,
    }
}

impl IssuedCode {
    /// Checks a guess, spending one guess. Store the updated state afterwards.
    pub fn check(&mut self, guess: &str, now: DateTime<Utc>) -> CodeCheck {
        if self.used {
            return CodeCheck::Used;
        }
        if now >= self.expires_at {
            return CodeCheck::Expired;
        }
        if self.guesses_left == 0 {
            return CodeCheck::Exhausted;
        }
        self.guesses_left -= 1;
        let guess = guess.trim();
        if bool::from(guess.as_bytes().ct_eq(self.code.as_bytes())) {
            self.used = true;
            CodeCheck::Accepted
        } else {
            CodeCheck::Wrong {
                guesses_left: self.guesses_left,
            }
        }
    }
}

/// Replaces `{name}` placeholders with values.
pub fn render_template(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Replaces `{name}` placeholders with JSON-escaped values (the surrounding quotes stay
/// in the template), so a text with quotes cannot break or inject into the JSON body.
pub fn render_json_template(template: &str, vars: &[(&str, &str)]) -> String {
    let escaped: Vec<(&str, String)> = vars
        .iter()
        .map(|(k, v)| {
            let quoted = serde_json::to_string(v).unwrap_or_default();
            (*k, quoted[1..quoted.len().saturating_sub(1)].to_string())
        })
        .collect();
    let refs: Vec<(&str, &str)> = escaped.iter().map(|(k, v)| (*k, v.as_str())).collect();
    render_template(template, &refs)
}

/// The placeholders every OTP message template may use.
pub fn message_vars<'a>(
    issuer: &'a str,
    user: &'a str,
    code: &'a str,
    minutes: &'a str,
) -> [(&'a str, &'a str); 4] {
    [
        ("code", code),
        ("issuer", issuer),
        ("user", user),
        ("minutes", minutes),
    ]
}

/// A delivery failed; the message says which transport and why (never the code).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The recipient is not a valid address or number.
    #[error("invalid recipient `{0}`")]
    BadRecipient(String),
    /// SMTP setup or delivery failed.
    #[error("SMTP delivery failed: {0}")]
    Smtp(String),
    /// The SMS gateway refused or could not be reached.
    #[error("SMS gateway delivery failed: {0}")]
    Http(String),
    /// Writing to the file transport's directory failed.
    #[error("writing message to {path}: {source}")]
    File {
        /// Target file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A configured environment variable is missing.
    #[error("environment variable `{0}` is not set (named in the configuration)")]
    MissingEnv(String),
    /// A configured secret file cannot be read or is empty.
    #[error("secret file `{path}` {why}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// A secret kept in a file: its text without the trailing newline; unreadable or empty is an
/// error (found when the sender is built, at start-up).
fn secret_file(path: &Path) -> Result<String, DeliveryError> {
    let text = std::fs::read_to_string(path).map_err(|e| DeliveryError::SecretFile {
        path: path.to_path_buf(),
        why: format!("cannot be read: {e}"),
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(DeliveryError::SecretFile {
            path: path.to_path_buf(),
            why: "is empty".into(),
        });
    }
    Ok(secret.to_string())
}

fn write_file(dir: &Path, ext: &str, contents: &[u8]) -> Result<PathBuf, DeliveryError> {
    std::fs::create_dir_all(dir).map_err(|source| DeliveryError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let name = format!(
        "{}-{}.{ext}",
        Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        uuid::Uuid::new_v4().simple()
    );
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(|source| DeliveryError::File {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Sends e-mail through SMTP or writes it to a directory.
#[derive(Clone)]
pub enum EmailSender {
    /// A real SMTP relay.
    Smtp {
        /// The lettre transport (boxed: it is much larger than the file variant).
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        /// Sender.
        from: Mailbox,
    },
    /// Writes `.eml` files.
    File {
        /// Target directory.
        dir: PathBuf,
    },
}

impl EmailSender {
    /// Builds the sender; reads the SMTP password from the configured environment variable.
    pub fn from_config(cfg: &EmailTransportConfig) -> Result<Self, DeliveryError> {
        match cfg {
            EmailTransportConfig::File(f) => Ok(EmailSender::File { dir: f.dir.clone() }),
            EmailTransportConfig::Smtp(s) => {
                let from: Mailbox = s
                    .from
                    .parse()
                    .map_err(|_| DeliveryError::BadRecipient(s.from.clone()))?;
                let builder = match s.security {
                    SmtpSecurity::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                            .map_err(|e| DeliveryError::Smtp(e.to_string()))?
                    }
                    SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)
                        .map_err(|e| DeliveryError::Smtp(e.to_string()))?,
                    SmtpSecurity::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    }
                };
                let mut builder = builder.port(s.port).timeout(Some(s.timeout.0));
                if let Some(user) = &s.username {
                    let password = match (&s.password_file, &s.password_env) {
                        (Some(path), _) => secret_file(path)?,
                        (None, Some(var)) => std::env::var(var)
                            .map_err(|_| DeliveryError::MissingEnv(var.clone()))?,
                        (None, None) => String::new(),
                    };
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Ok(EmailSender::Smtp {
                    transport: Box::new(builder.build()),
                    from,
                })
            }
        }
    }

    /// Sends one plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), DeliveryError> {
        let to_box: Mailbox = to
            .parse()
            .map_err(|_| DeliveryError::BadRecipient(to.to_string()))?;
        let from = match self {
            EmailSender::Smtp { from, .. } => from.clone(),
            EmailSender::File { .. } => "stepgate <stepgate@localhost>"
                .parse()
                .map_err(|_| DeliveryError::BadRecipient("stepgate@localhost".into()))?,
        };
        let message = Message::builder()
            .from(from)
            .to(to_box)
            .subject(subject)
            .body(body.to_string())
            .map_err(|e| DeliveryError::Smtp(e.to_string()))?;
        match self {
            EmailSender::Smtp { transport, .. } => {
                transport
                    .send(message)
                    .await
                    .map_err(|e| DeliveryError::Smtp(e.to_string()))?;
            }
            EmailSender::File { dir } => {
                write_file(dir, "eml", &message.formatted())?;
            }
        }
        tracing::info!(channel = "email", "one-time code sent");
        Ok(())
    }
}

/// Sends SMS through an HTTP gateway or writes it to a directory.
#[derive(Clone)]
pub enum SmsSender {
    /// JSON POST to a gateway.
    Http {
        /// HTTP client (rustls).
        client: reqwest::Client,
        /// Gateway settings (boxed: the file transport is a path).
        cfg: Box<SmsHttpConfig>,
        /// Resolved headers (static + from environment).
        headers: reqwest::header::HeaderMap,
    },
    /// Writes `.json` files with `to` and `text`.
    File {
        /// Target directory.
        dir: PathBuf,
    },
}

impl SmsSender {
    /// Builds the sender; resolves `headers_env` from the environment now so a missing
    /// variable fails at start-up, not at the first sign-in.
    pub fn from_config(cfg: &SmsTransportConfig) -> Result<Self, DeliveryError> {
        match cfg {
            SmsTransportConfig::File(f) => Ok(SmsSender::File { dir: f.dir.clone() }),
            SmsTransportConfig::Http(h) => {
                use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
                let mut headers = HeaderMap::new();
                let mut add = |name: &str, value: &str| -> Result<(), DeliveryError> {
                    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        DeliveryError::Http(format!("invalid header name `{name}`"))
                    })?;
                    let v = HeaderValue::from_str(value).map_err(|_| {
                        DeliveryError::Http(format!("invalid value for header `{name}`"))
                    })?;
                    headers.insert(n, v);
                    Ok(())
                };
                for (k, v) in &h.headers {
                    add(k, v)?;
                }
                for (k, var) in &h.headers_env {
                    let v =
                        std::env::var(var).map_err(|_| DeliveryError::MissingEnv(var.clone()))?;
                    add(k, &v)?;
                }
                for (k, path) in &h.headers_file {
                    add(k, &secret_file(path)?)?;
                }
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(h.timeout.as_secs().max(1)))
                    .build()
                    .map_err(|e| DeliveryError::Http(e.to_string()))?;
                Ok(SmsSender::Http {
                    client,
                    cfg: Box::new(h.clone()),
                    headers,
                })
            }
        }
    }

    /// Sends one text message to an E.164 number (`+` and digits).
    pub async fn send(&self, to: &str, text: &str) -> Result<(), DeliveryError> {
        if !is_phone_number(to) {
            return Err(DeliveryError::BadRecipient(to.to_string()));
        }
        match self {
            SmsSender::Http {
                client,
                cfg,
                headers,
            } => {
                let body = render_json_template(&cfg.body, &[("to", to), ("text", text)]);
                let resp = client
                    .post(&cfg.url)
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| DeliveryError::Http(e.without_url().to_string()))?;
                if !resp.status().is_success() {
                    return Err(DeliveryError::Http(format!(
                        "gateway answered {}",
                        resp.status()
                    )));
                }
            }
            SmsSender::File { dir } => {
                let json = serde_json::json!({ "to": to, "text": text });
                write_file(dir, "json", json.to_string().as_bytes())?;
            }
        }
        tracing::info!(channel = "sms", "one-time code sent");
        Ok(())
    }
}

/// Whether `s` looks like an E.164 number: `+` then 8 to 15 digits.
pub fn is_phone_number(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_digit())
}

/// Renders the e-mail subject and body for a code.
pub fn email_text(
    cfg: &EmailOtpConfig,
    otp: &OtpConfig,
    issuer: &str,
    user: &str,
    code: &str,
) -> (String, String) {
    let minutes = otp.lifetime.as_secs().div_ceil(60).to_string();
    let vars = message_vars(issuer, user, code, &minutes);
    (
        render_template(&cfg.subject, &vars),
        render_template(&cfg.body, &vars),
    )
}

/// Renders the SMS text for a code.
pub fn sms_text(
    cfg: &SmsOtpConfig,
    otp: &OtpConfig,
    issuer: &str,
    user: &str,
    code: &str,
) -> String {
    let minutes = otp.lifetime.as_secs().div_ceil(60).to_string();
    render_template(&cfg.text, &message_vars(issuer, user, code, &minutes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepgate_policy::HumanDuration;

    #[test]
    fn codes_expire_are_single_use_and_bounded() {
        let cfg = OtpConfig::default();
        let now = Utc::now();
        let mut c = issue(&cfg, now);
        assert_eq!(c.code.len(), 6);
        assert!(c.code.bytes().all(|b| b.is_ascii_digit()));
        assert!(!format!("{c:?}").contains(&c.code));
        let right = c.code.clone();
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        assert_eq!(c.check(wrong, now), CodeCheck::Wrong { guesses_left: 9 });
        assert_eq!(c.check(&right, now), CodeCheck::Accepted);
        assert_eq!(c.check(&right, now), CodeCheck::Used);

        let mut c = issue(&cfg, now);
        assert_eq!(
            c.check(&c.code.clone(), now + chrono::Duration::minutes(5)),
            CodeCheck::Expired
        );
        assert!(cfg.lifetime == HumanDuration::from_secs(300));
    }

    #[test]
    fn eleventh_guess_is_refused_even_if_right() {
        let cfg = OtpConfig::default();
        let now = Utc::now();
        let mut c = issue(&cfg, now);
        let right = c.code.clone();
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        for i in 1..=10 {
            assert_eq!(
                c.check(wrong, now),
                CodeCheck::Wrong {
                    guesses_left: 10 - i
                }
            );
        }
        assert_eq!(c.check(&right, now), CodeCheck::Exhausted);
    }

    #[test]
    fn templates() {
        let out = render_json_template(
            r#"{"to": "{to}", "text": "{text}"}"#,
            &[("to", "+15550100"), ("text", "say \"hi\"\n")],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "say \"hi\"\n");
        let (s, b) = email_text(
            &EmailOtpConfig::default(),
            &OtpConfig::default(),
            "Acme",
            "jane",
            "123456",
        );
        assert_eq!(s, "Your Acme sign-in code");
        assert!(b.contains("123456") && b.contains("5 minutes"));
        assert!(is_phone_number("+4915112345678"));
        assert!(!is_phone_number("015112345678"));
        assert!(!is_phone_number("+49 151"));
    }

    #[tokio::test]
    async fn file_transports_write_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mail = EmailSender::File {
            dir: dir.path().join("mail"),
        };
        mail.send("jane@example.com", "Code", "Your code is 424242")
            .await
            .unwrap();
        let sms = SmsSender::File {
            dir: dir.path().join("sms"),
        };
        sms.send("+15550100123", "424242 is your code")
            .await
            .unwrap();
        assert!(matches!(
            sms.send("not-a-number", "x").await,
            Err(DeliveryError::BadRecipient(to)) if to == "not-a-number"
        ));
        let read_one = |sub: &str| {
            let entry = std::fs::read_dir(dir.path().join(sub))
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            std::fs::read_to_string(entry.path()).unwrap()
        };
        let eml = read_one("mail");
        assert!(
            eml.contains("To: jane@example.com") && eml.contains("424242"),
            "{eml}"
        );
        let json: serde_json::Value = serde_json::from_str(&read_one("sms")).unwrap();
        assert_eq!(json["to"], "+15550100123");
    }
}
