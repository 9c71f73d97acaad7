//! Configuration of factors (`factors:`) and brute-force regulation (`regulation:`).
//!
//! Every key has a default (or is required when its section is enabled) and a doc line;
//! `validate` explains each rejected value. The assurance mapping (`assurance:`) lives in
//! [`crate::assurance::AssuranceConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use stepgate_policy::HumanDuration;

/// A configuration value the admin must fix; names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key (`factors.totp.digits`).
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// `factors:` — which factors are offered and how each works.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FactorsConfig {
    /// Password (memorized secret) settings.
    pub password: PasswordConfig,
    /// Security questions settings.
    pub security_questions: SecurityQuestionsConfig,
    /// TOTP soft token settings.
    pub totp: TotpConfig,
    /// Settings shared by e-mail and SMS one-time codes.
    pub otp: OtpConfig,
    /// E-mail one-time codes.
    pub email_otp: EmailOtpConfig,
    /// SMS one-time codes.
    pub sms_otp: SmsOtpConfig,
    /// Recovery codes.
    pub recovery_codes: RecoveryCodesConfig,
    /// WebAuthn passkeys and security keys.
    pub webauthn: WebauthnConfig,
}

impl FactorsConfig {
    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.password.validate()?;
        self.security_questions.validate()?;
        self.totp.validate()?;
        self.otp.validate()?;
        self.email_otp.validate()?;
        self.sms_otp.validate()?;
        self.recovery_codes.validate()?;
        self.webauthn.validate()?;
        Ok(())
    }
}

/// argon2id cost parameters (RFC 9106; defaults are OWASP's minimum: 19 MiB, 2 passes).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory cost in KiB (default 19456 = 19 MiB).
    pub memory_kib: u32,
    /// Number of passes (default 2).
    pub iterations: u32,
    /// Degree of parallelism (default 1).
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Argon2Config {
    /// Parameters small enough for unit tests (never use in production).
    pub const fn insecure_for_tests() -> Self {
        Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.memory_kib < 8 * self.parallelism.max(1) {
            return Err(ConfigError::new(
                &format!("{key}.memory_kib"),
                "must be at least 8 × parallelism KiB (19456 recommended)",
            ));
        }
        if self.iterations == 0 || self.parallelism == 0 {
            return Err(ConfigError::new(
                key,
                "iterations and parallelism must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `factors.password`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Offer passwords (default true).
    pub enabled: bool,
    /// argon2id parameters; also used to hash security answers and recovery codes.
    pub argon2: Argon2Config,
    /// Minimum length in characters (NIST SP 800-63B: at least 8; default 8).
    pub min_length: usize,
    /// Maximum length in characters (NIST: allow at least 64; default 128).
    pub max_length: usize,
    /// A file of known-breached or commonly used passwords, one per line, compared
    /// case-insensitively (for example a top-100k list). Optional.
    pub breached_list: Option<PathBuf>,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            enabled: true,
            argon2: Argon2Config::default(),
            min_length: 8,
            max_length: 128,
            breached_list: None,
        }
    }
}

impl PasswordConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.argon2.validate("factors.password.argon2")?;
        if self.min_length < 8 {
            return Err(ConfigError::new(
                "factors.password.min_length",
                format!(
                    "is {}, NIST SP 800-63B requires at least 8",
                    self.min_length
                ),
            ));
        }
        if self.max_length < 64 || self.max_length < self.min_length {
            return Err(ConfigError::new(
                "factors.password.max_length",
                format!(
                    "is {}, NIST SP 800-63B requires allowing at least 64 characters (and not below min_length)",
                    self.max_length
                ),
            ));
        }
        Ok(())
    }
}

/// `factors.security_questions`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityQuestionsConfig {
    /// Offer security questions (default false: NIST does not recognise them as an authenticator).
    pub enabled: bool,
    /// How many answers a user must enrol (default 3).
    pub enrol: usize,
    /// How many of them are asked at verification, chosen at random (default 2).
    pub ask: usize,
    /// Minimum answer length after normalisation (default 3).
    pub min_answer_length: usize,
}

impl Default for SecurityQuestionsConfig {
    fn default() -> Self {
        SecurityQuestionsConfig {
            enabled: false,
            enrol: 3,
            ask: 2,
            min_answer_length: 3,
        }
    }
}

impl SecurityQuestionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.ask == 0 || self.ask > self.enrol {
            return Err(ConfigError::new(
                "factors.security_questions.ask",
                format!(
                    "is {}, must be between 1 and enrol ({})",
                    self.ask, self.enrol
                ),
            ));
        }
        Ok(())
    }
}

/// TOTP hash algorithm (RFC 6238 allows all three; most apps only do SHA1).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TotpAlgorithm {
    /// HMAC-SHA1 (default; what every authenticator app supports).
    #[default]
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// `factors.totp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    /// Offer TOTP (default true).
    pub enabled: bool,
    /// HMAC algorithm: `sha1` (default), `sha256` or `sha512`.
    pub algorithm: TotpAlgorithm,
    /// Code length, 6 to 8 digits (default 6).
    pub digits: usize,
    /// Time step (default and recommended `30s`).
    pub period: HumanDuration,
    /// Steps accepted either side of now for clock drift (default 1, at most 2).
    pub skew: u8,
    /// Issuer shown in the authenticator app (default `stepgate`).
    pub issuer: String,
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            enabled: true,
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period: HumanDuration::from_secs(30),
            skew: 1,
            issuer: "stepgate".into(),
        }
    }
}

impl TotpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(6..=8).contains(&self.digits) {
            return Err(ConfigError::new(
                "factors.totp.digits",
                format!("is {}, must be 6, 7 or 8", self.digits),
            ));
        }
        if self.period.as_secs() == 0 {
            return Err(ConfigError::new(
                "factors.totp.period",
                "must be at least 1s (30s recommended)",
            ));
        }
        if self.skew > 2 {
            return Err(ConfigError::new("factors.totp.skew", "must be 0, 1 or 2"));
        }
        if self.issuer.is_empty() || self.issuer.contains(':') {
            return Err(ConfigError::new(
                "factors.totp.issuer",
                "must be non-empty and contain no `:` (it is part of the otpauth:// label)",
            ));
        }
        Ok(())
    }
}

/// `factors.otp` — settings shared by e-mail and SMS one-time codes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtpConfig {
    /// How long a sent code stays valid (default `5m`).
    pub lifetime: HumanDuration,
    /// Wrong guesses allowed per code; the next guess is refused and the code voided (default 10).
    pub max_guesses: u32,
    /// Code length in digits, 6 to 10 (default 6).
    pub digits: usize,
}

impl Default for OtpConfig {
    fn default() -> Self {
        OtpConfig {
            lifetime: HumanDuration::from_secs(300),
            max_guesses: 10,
            digits: 6,
        }
    }
}

impl OtpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.lifetime.as_secs() == 0 {
            return Err(ConfigError::new(
                "factors.otp.lifetime",
                "must be at least 1s (default 5m)",
            ));
        }
        if self.max_guesses == 0 {
            return Err(ConfigError::new(
                "factors.otp.max_guesses",
                "must be at least 1 (default 10)",
            ));
        }
        if !(6..=10).contains(&self.digits) {
            return Err(ConfigError::new(
                "factors.otp.digits",
                "must be between 6 and 10",
            ));
        }
        Ok(())
    }
}

/// `factors.email_otp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmailOtpConfig {
    /// Offer e-mail codes (default false).
    pub enabled: bool,
    /// Subject template; `{code}`, `{minutes}`, `{issuer}`, `{user}` are replaced.
    pub subject: String,
    /// Plain-text body template, same placeholders.
    pub body: String,
    /// How messages leave: `smtp: {...}` or `file: {dir: ...}` (default `file: {dir: ./outbox/email}`).
    pub transport: EmailTransportConfig,
    /// Let "Forgot your password?" send a code to the user's verified address, which earns
    /// a password reset (default false: then whoever reads the mailbox alone could set a
    /// new password; turn it on only where the mailbox is itself behind MFA).
    pub password_reset: bool,
}

impl Default for EmailOtpConfig {
    fn default() -> Self {
        EmailOtpConfig {
            enabled: false,
            subject: "Your {issuer} sign-in code".into(),
            body: "Your {issuer} sign-in code is {code}.\nIt expires in {minutes} minutes. If you did not ask for it, ignore this message.\n".into(),
            transport: EmailTransportConfig::default(),
            password_reset: false,
        }
    }
}

impl EmailOtpConfig {
    /// Whether "Forgot your password?" offers a code by e-mail: e-mail codes on, and
    /// `password_reset` opted into.
    pub fn resets_passwords(&self) -> bool {
        self.enabled && self.password_reset
    }
}

impl EmailOtpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.body.contains("{code}") {
            return Err(ConfigError::new(
                "factors.email_otp.body",
                "must contain `{code}`",
            ));
        }
        if let EmailTransportConfig::Smtp(s) = &self.transport {
            if s.host.is_empty() {
                return Err(ConfigError::new(
                    "factors.email_otp.transport.smtp.host",
                    "is required",
                ));
            }
            if s.password_env.is_some() && s.password_file.is_some() {
                return Err(ConfigError::new(
                    "factors.email_otp.transport.smtp.password_file",
                    "set one of `password_env` and `password_file`, not both",
                ));
            }
            if s.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(ConfigError::new(
                    "factors.email_otp.transport.smtp.from",
                    format!(
                        "`{}` is not an e-mail address such as `stepgate <noreply@example.com>`",
                        s.from
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where e-mail goes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EmailTransportConfig {
    /// A real SMTP relay.
    Smtp(SmtpConfig),
    /// Write each message as a file into a directory (local demos, tests).
    File(FileTransportConfig),
}

impl Default for EmailTransportConfig {
    fn default() -> Self {
        EmailTransportConfig::File(FileTransportConfig {
            dir: PathBuf::from("./outbox/email"),
        })
    }
}

/// SMTP connection security.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, required (default; port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on loopback or in tests.
    None,
}

/// `transport.smtp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host name (required).
    pub host: String,
    /// Port (default 587).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// User name for SMTP AUTH; omit for an open relay.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable holding the SMTP password (never the password itself).
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the SMTP password (a systemd credential, a mounted secret); one
    /// trailing newline is ignored. Not together with `password_env`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Sender address, e.g. `stepgate <noreply@example.com>` (required).
    pub from: String,
    /// Connection and command timeout (default `10s`).
    #[serde(default = "default_smtp_timeout")]
    pub timeout: HumanDuration,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// `transport.file`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileTransportConfig {
    /// Directory the messages are written to (created if missing).
    pub dir: PathBuf,
}

/// `factors.sms_otp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmsOtpConfig {
    /// Offer SMS codes (default false; SMS is a NIST "restricted" authenticator).
    pub enabled: bool,
    /// Message template; `{code}`, `{minutes}`, `{issuer}`, `{user}` are replaced.
    pub text: String,
    /// How messages leave: `http: {...}` or `file: {dir: ...}` (default `file: {dir: ./outbox/sms}`).
    pub transport: SmsTransportConfig,
}

impl Default for SmsOtpConfig {
    fn default() -> Self {
        SmsOtpConfig {
            enabled: false,
            text: "{code} is your {issuer} code. It expires in {minutes} minutes.".into(),
            transport: SmsTransportConfig::default(),
        }
    }
}

impl SmsOtpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.text.contains("{code}") {
            return Err(ConfigError::new(
                "factors.sms_otp.text",
                "must contain `{code}`",
            ));
        }
        if let SmsTransportConfig::Http(h) = &self.transport {
            match url::Url::parse(&h.url) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                _ => {
                    return Err(ConfigError::new(
                        "factors.sms_otp.transport.http.url",
                        format!("`{}` is not an http(s) URL", h.url),
                    ))
                }
            }
            let named = h
                .headers
                .keys()
                .chain(h.headers_env.keys())
                .chain(h.headers_file.keys())
                .map(|k| k.to_ascii_lowercase());
            let mut seen = std::collections::BTreeSet::new();
            for k in named {
                if !seen.insert(k.clone()) {
                    return Err(ConfigError::new(
                        "factors.sms_otp.transport.http.headers_file",
                        format!(
                            "header `{k}` is named more than once across `headers`, `headers_env` and `headers_file`"
                        ),
                    ));
                }
            }
            let probe =
                crate::otp::render_json_template(&h.body, &[("to", "+15550100"), ("text", "x")]);
            if serde_json::from_str::<serde_json::Value>(&probe).is_err() {
                return Err(ConfigError::new(
                    "factors.sms_otp.transport.http.body",
                    "is not valid JSON once `{to}` and `{text}` are filled in; quote them: \"{to}\"",
                ));
            }
        }
        Ok(())
    }
}

/// Where SMS goes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SmsTransportConfig {
    /// An HTTP gateway that takes a JSON POST.
    Http(SmsHttpConfig),
    /// Write each message as a file into a directory (local demos, tests).
    File(FileTransportConfig),
}

impl Default for SmsTransportConfig {
    fn default() -> Self {
        SmsTransportConfig::File(FileTransportConfig {
            dir: PathBuf::from("./outbox/sms"),
        })
    }
}

/// `transport.http` for SMS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmsHttpConfig {
    /// Gateway endpoint the JSON is POSTed to (required).
    pub url: String,
    /// Extra headers sent as-is (e.g. `X-Account: 42`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from environment variables: header name → variable name
    /// (e.g. `Authorization: SMS_GATEWAY_AUTH`), so no token sits in the file.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// Headers whose values come from files: header name → file path (a trailing newline is
    /// ignored). A header is named in at most one of `headers`, `headers_env`, `headers_file`.
    #[serde(default)]
    pub headers_file: BTreeMap<String, PathBuf>,
    /// JSON body template; `{to}` and `{text}` are replaced with JSON-escaped values
    /// (default `{"to": "{to}", "text": "{text}"}`).
    #[serde(default = "default_sms_body")]
    pub body: String,
    /// Request timeout (default `10s`).
    #[serde(default = "default_smtp_timeout")]
    pub timeout: HumanDuration,
}

fn default_sms_body() -> String {
    r#"{"to": "{to}", "text": "{text}"}"#.into()
}

/// `factors.recovery_codes`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryCodesConfig {
    /// Offer recovery codes (default true).
    pub enabled: bool,
    /// Codes per set (default 10).
    pub count: usize,
}

impl Default for RecoveryCodesConfig {
    fn default() -> Self {
        RecoveryCodesConfig {
            enabled: true,
            count: 10,
        }
    }
}

impl RecoveryCodesConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=50).contains(&self.count) {
            return Err(ConfigError::new(
                "factors.recovery_codes.count",
                "must be between 1 and 50 (default 10)",
            ));
        }
        Ok(())
    }
}

/// `factors.webauthn`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// Offer passkeys and security keys (default true).
    pub enabled: bool,
    /// Relying party id: the registrable domain credentials are bound to (default `localhost`).
    pub rp_id: String,
    /// The portal's origin, e.g. `https://auth.example.com` (default `http://localhost:9091`).
    pub rp_origin: String,
    /// Name shown by the authenticator (default `stepgate`).
    pub rp_name: String,
    /// Trusted attestation roots for hardware-bound authenticators. A credential whose
    /// attestation chains to one of these is recorded as hardware-bound.
    pub attestation_cas: Vec<AttestationCaConfig>,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        WebauthnConfig {
            enabled: true,
            rp_id: "localhost".into(),
            rp_origin: "http://localhost:9091".into(),
            rp_name: "stepgate".into(),
            attestation_cas: Vec::new(),
        }
    }
}

impl WebauthnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let Ok(origin) = url::Url::parse(&self.rp_origin) else {
            return Err(ConfigError::new(
                "factors.webauthn.rp_origin",
                format!(
                    "`{}` is not a URL such as https://auth.example.com",
                    self.rp_origin
                ),
            ));
        };
        let host = origin.host_str().unwrap_or_default();
        if !(host == self.rp_id || host.ends_with(&format!(".{}", self.rp_id))) {
            return Err(ConfigError::new(
                "factors.webauthn.rp_id",
                format!(
                    "`{}` must be the origin's host `{host}` or a parent domain of it",
                    self.rp_id
                ),
            ));
        }
        Ok(())
    }
}

/// One trusted attestation root.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttestationCaConfig {
    /// PEM file of the vendor's attestation root certificate.
    pub pem_file: PathBuf,
    /// Authenticator models (AAGUIDs) accepted under this root.
    pub aaguids: Vec<String>,
    /// Human description ("YubiKey 5 series").
    #[serde(default)]
    pub description: String,
}

/// `regulation:` — brute-force protection (Authelia-style) and OTP send limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegulationConfig {
    /// Failed attempts per user within `find_time` that ban the user (default 3; 0 disables).
    pub max_retries: u32,
    /// Failed attempts per client IP within `find_time` that ban the IP (default 10; 0 disables).
    pub ip_max_retries: u32,
    /// Window in which failures are counted (default `2m`).
    pub find_time: HumanDuration,
    /// How long a ban lasts (default `5m`).
    pub ban_time: HumanDuration,
    /// Consecutive failures per account, across any time, after which the account refuses
    /// further attempts until a success is recorded by an admin reset or recovery
    /// (default and NIST maximum 100).
    pub max_consecutive_failures: u32,
    /// OTP sends allowed per user within `otp_send_window` (default 5).
    pub otp_sends_per_user: u32,
    /// OTP sends allowed per destination (address or number) within `otp_send_window` (default 5).
    pub otp_sends_per_destination: u32,
    /// Window for OTP send limits (default `15m`).
    pub otp_send_window: HumanDuration,
    /// When a failed attempt tells the person how many tries are left before the pause
    /// (default `after_password`).
    pub announce_remaining: AnnounceRemaining,
}

/// When the portal says how many attempts are left before `max_retries` pauses sign-in.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AnnounceRemaining {
    /// Never: the person learns of the pause when it comes.
    Off,
    /// Only once the password is right (the step-up and second step of a sign-in): whoever
    /// sees the count has already proved the first factor.
    #[default]
    AfterPassword,
    /// Also on the login form. Every name typed is counted alike, known or not, so the
    /// count reveals no account; it does tell a guesser how fast to go.
    Always,
}

impl Default for RegulationConfig {
    fn default() -> Self {
        RegulationConfig {
            max_retries: 3,
            ip_max_retries: 10,
            find_time: HumanDuration::from_secs(120),
            ban_time: HumanDuration::from_secs(300),
            max_consecutive_failures: crate::regulation::NIST_MAX_CONSECUTIVE_FAILURES,
            otp_sends_per_user: 5,
            otp_sends_per_destination: 5,
            otp_send_window: HumanDuration::from_secs(900),
            announce_remaining: AnnounceRemaining::default(),
        }
    }
}

impl RegulationConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cap = crate::regulation::NIST_MAX_CONSECUTIVE_FAILURES;
        if self.max_consecutive_failures == 0 || self.max_consecutive_failures > cap {
            return Err(ConfigError::new(
                "regulation.max_consecutive_failures",
                format!(
                    "is {}, must be between 1 and {cap} (NIST SP 800-63B §5.2.2)",
                    self.max_consecutive_failures
                ),
            ));
        }
        if (self.max_retries > 0 || self.ip_max_retries > 0)
            && (self.find_time.as_secs() == 0 || self.ban_time.as_secs() == 0)
        {
            return Err(ConfigError::new(
                "regulation",
                "find_time and ban_time must be at least 1s",
            ));
        }
        if self.otp_send_window.as_secs() == 0 {
            return Err(ConfigError::new(
                "regulation.otp_send_window",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        FactorsConfig::default().validate().unwrap();
        RegulationConfig::default().validate().unwrap();
    }

    #[test]
    fn full_factors_yaml_deserializes() {
        let yaml = r#"
password:
  enabled: true
  argon2: { memory_kib: 19456, iterations: 2, parallelism: 1 }
  min_length: 10
  max_length: 64
  breached_list: /etc/stepgate/breached.txt
security_questions:
  enabled: true
  enrol: 4
  ask: 2
  min_answer_length: 2
totp:
  algorithm: sha256
  digits: 8
  period: 30s
  skew: 1
  issuer: Example Corp
otp:
  lifetime: 10m
  max_guesses: 5
  digits: 8
email_otp:
  enabled: true
  subject: "Code {code}"
  body: "Your code is {code}"
  transport:
    smtp:
      host: smtp.example.com
      port: 465
      security: tls
      username: stepgate
      password_env: SMTP_PASSWORD
      from: "stepgate <noreply@example.com>"
sms_otp:
  enabled: true
  transport:
    http:
      url: https://sms.example.com/send
      headers: { X-Account: "42" }
      headers_env: { Authorization: SMS_TOKEN }
      body: '{"number": "{to}", "message": "{text}"}'
recovery_codes:
  count: 12
webauthn:
  rp_id: example.com
  rp_origin: https://auth.example.com
  rp_name: Example
  attestation_cas:
    - pem_file: /etc/stepgate/yubico.pem
      aaguids: ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]
      description: YubiKey 5
"#;
        let c: FactorsConfig = marked_yaml::from_yaml(0, yaml).unwrap();
        c.validate().unwrap();
        assert_eq!(c.password.min_length, 10);
        assert_eq!(c.totp.algorithm, TotpAlgorithm::Sha256);
        assert_eq!(c.otp.lifetime.as_secs(), 600);
        assert!(
            matches!(&c.email_otp.transport, EmailTransportConfig::Smtp(s) if s.security == SmtpSecurity::Tls && s.port == 465)
        );
        assert!(
            matches!(&c.sms_otp.transport, SmsTransportConfig::Http(h) if h.headers_env["Authorization"] == "SMS_TOKEN")
        );
        assert_eq!(c.recovery_codes.count, 12);
        assert_eq!(c.webauthn.attestation_cas.len(), 1);

        let file: FactorsConfig =
            marked_yaml::from_yaml(0, "email_otp: { transport: { file: { dir: /tmp/mail } } }\nsms_otp: { transport: { file: { dir: /tmp/sms } } }\n").unwrap();
        assert!(matches!(
            file.email_otp.transport,
            EmailTransportConfig::File(_)
        ));
    }

    #[test]
    fn bad_values_name_the_key() {
        let c: FactorsConfig = marked_yaml::from_yaml(0, "password: { min_length: 6 }").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "factors.password.min_length");
        let c: FactorsConfig = marked_yaml::from_yaml(0, "totp: { digits: 9 }").unwrap();
        assert_eq!(c.validate().unwrap_err().key, "factors.totp.digits");
        let c: FactorsConfig = marked_yaml::from_yaml(
            0,
            "sms_otp: { transport: { http: { url: 'https://x', body: '{\"to\": {to}}' } } }",
        )
        .unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "factors.sms_otp.transport.http.body"
        );
        assert!(marked_yaml::from_yaml::<FactorsConfig>(0, "passwrd: {}").is_err());
        let c: FactorsConfig = marked_yaml::from_yaml(
            0,
            "email_otp: { transport: { smtp: { host: h, from: a@b.example, username: u, password_env: P, password_file: /run/p } } }",
        )
        .unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "factors.email_otp.transport.smtp.password_file"
        );
        let c: FactorsConfig = marked_yaml::from_yaml(
            0,
            "sms_otp: { transport: { http: { url: 'https://x', headers_env: { Authorization: T }, headers_file: { authorization: /run/t } } } }",
        )
        .unwrap();
        assert_eq!(
            c.validate().unwrap_err().key,
            "factors.sms_otp.transport.http.headers_file"
        );
    }

    #[test]
    fn regulation_yaml_and_nist_cap() {
        let r: RegulationConfig = marked_yaml::from_yaml(
            0,
            "max_retries: 5\nip_max_retries: 20\nfind_time: 10m\nban_time: 1h\nmax_consecutive_failures: 50\notp_sends_per_user: 3\notp_sends_per_destination: 3\notp_send_window: 1h\n",
        )
        .unwrap();
        r.validate().unwrap();
        assert_eq!(r.ban_time.as_secs(), 3600);
        let r: RegulationConfig =
            marked_yaml::from_yaml(0, "max_consecutive_failures: 101").unwrap();
        assert_eq!(
            r.validate().unwrap_err().key,
            "regulation.max_consecutive_failures"
        );
    }
}
