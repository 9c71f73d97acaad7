//! The one place that verifies and enrols factors against the stores.
//!
//! [`Authenticator`] ties the pure factor logic of this crate to stepgate-store: secrets are
//! sealed under [`factor_context`]`(user_id, factor_id)`, one-time codes live in the hot store
//! (atomic, single use, bounded guesses), TOTP steps are claimed with
//! [`HotStore::remember_once`] so two nodes cannot accept one code, failures are counted per
//! account and per client IP ([`crate::regulation`]) with a non-windowed consecutive-failure
//! counter that enforces NIST SP 800-63B's cap of 100, and every lockout, ban, enrolment and
//! removal is appended to the audit log (never with a secret in it).
//!
//! The portal, the forward-auth endpoint and the `stepgate user` CLI all go through it.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stepgate_store::{
    factor_context, now_ms, DurableStore, FactorRecord, HotStore, NewAuditEvent, OtpCheck,
    SealedSecret, SecretKey, StoreError, UserRecord, UserSource, PASSWORD_FACTOR_KIND,
};
use uuid::Uuid;
use zeroize::Zeroizing;

mod enrolment_link;
pub use enrolment_link::{IssuedLink, LinkPurpose, OpenLink, ENROLMENT_LINK_KIND, MAX_LINK_TTL};

use crate::assurance::{assess_factors, AssuranceConfig, EnrolledFactor, PassedFactor};
use crate::config::{EmailTransportConfig, FactorsConfig, RegulationConfig, SmsTransportConfig};
use crate::factor::FactorKind;
use crate::otp::{self, DeliveryError, EmailSender, SmsSender};
use crate::password::{self, BreachedList};
use crate::questions::{self, SecurityQuestions};
use crate::recovery::{self, RecoveryCodes};
use crate::regulation::{self, AttemptCounters, BanTarget, Refusal};
use crate::totp::{self, TotpData, TotpReject};
use crate::webauthn::{
    AuthenticationState, RegistrationKind, RegistrationState, StoredCredential, WebauthnCredential,
    WebauthnFactor, WebauthnFailure, WebauthnUser,
};

/// The configuration sections the authenticator reads.
#[derive(Debug, Clone, Default)]
pub struct AuthnSettings {
    /// `factors:`.
    pub factors: FactorsConfig,
    /// `assurance:`.
    pub assurance: AssuranceConfig,
    /// `regulation:`.
    pub regulation: RegulationConfig,
}

/// Why an authentication or enrolment did not succeed.
///
/// [`AuthError::public_message`] is the text to show a user; `Display` may carry
/// operator detail (store and delivery failures) and belongs in logs.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong secret, or no such user: the two are never told apart.
    #[error("the credentials are not valid")]
    InvalidCredentials,
    /// Too many failures: the account or the client IP is banned until then.
    #[error("too many failed attempts; try again after {}", until.format("%H:%M UTC"))]
    Locked {
        /// When the ban ends.
        until: DateTime<Utc>,
    },
    /// NIST SP 800-63B §5.2.2 cap: the account refuses every attempt until an administrator
    /// unlocks it (`stepgate user unlock`) — even with the right secret.
    #[error("this account is locked after too many failed attempts; contact your administrator")]
    AccountLocked,
    /// A one-time code that was already used.
    #[error("this code was already used; wait for the next one")]
    Replayed,
    /// No code is pending (never sent, expired, used up): ask for a new one.
    #[error("the code has expired or was already used; ask for a new one")]
    Expired,
    /// The code ran out of guesses; ask for a new one.
    #[error("too many wrong codes; ask for a new one")]
    TooManyGuesses,
    /// The user has no factor of this kind.
    #[error("no {0} is enrolled for this account")]
    NotEnrolled(FactorKind),
    /// The factor kind is switched off in the configuration (`factors.<kind>.enabled`).
    #[error("{0} is not offered here")]
    FactorUnavailable(FactorKind),
    /// The account is disabled.
    #[error("this account is disabled")]
    Disabled,
    /// Too many codes sent recently.
    #[error("{0}")]
    RateLimited(regulation::SendRefusal),
    /// Something the user can fix (a weak password, a malformed phone number, …).
    #[error("{0}")]
    Rejected(String),
    /// A one-time code could not be delivered.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else (a sealed secret that does not open, a corrupt record, …).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The message to show the user: the `Display` text for user-facing variants, a generic
    /// sentence for operator-side failures (their detail goes to the log).
    pub fn public_message(&self) -> String {
        match self {
            AuthError::Delivery(_) => "the code could not be sent; try again later".into(),
            AuthError::Store(_) | AuthError::Internal(_) => {
                "something went wrong on our side; try again later".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<stepgate_store::SecretError> for AuthError {
    fn from(e: stepgate_store::SecretError) -> Self {
        AuthError::Internal(e.to_string())
    }
}

/// A TOTP enrolment waiting for its first code.
#[derive(Clone)]
pub struct PendingTotp {
    /// `otpauth://totp/...` URI for authenticator apps.
    pub uri: String,
    /// The seed in base32 for manual entry.
    pub seed_base32: String,
    /// The URI as an SVG QR code.
    pub qr_svg: String,
    /// Sealed and bound to the user; round-trip it through the confirmation form and pass it
    /// to [`Authenticator::enrol_totp_confirm`]. Valid for [`PENDING_TOTP_TTL`].
    pub token: String,
}

impl std::fmt::Debug for PendingTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingTotp { .. }")
    }
}

/// How long a TOTP enrolment may wait for its confirmation code.
pub const PENDING_TOTP_TTL: Duration = Duration::from_secs(15 * 60);

/// An enrolled factor as the self-service page and step-up prompts show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrolledInfo {
    /// Factor record id (for [`Authenticator::remove_factor`]).
    pub id: String,
    /// Kind.
    pub kind: FactorKind,
    /// User-visible label.
    pub label: String,
    /// Enrolment time.
    pub created_at: DateTime<Utc>,
    /// Last successful use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Hardware-bound (attested WebAuthn credential).
    pub hardware_bound: bool,
    /// Verifies the user itself (WebAuthn passkey with UV).
    pub user_verifying: bool,
    /// The AAL this factor reaches on its own.
    pub aal_alone: u8,
    /// Phishing-resistant.
    pub phishing_resistant: bool,
    /// RFC 8176 `amr` recorded when it is used.
    pub amr: String,
    /// Unused recovery codes left (recovery codes only).
    pub remaining_codes: Option<usize>,
    /// Managed in the configuration file (a config-declared password): cannot be removed or
    /// changed here.
    pub managed_by_config: bool,
}

/// Verifies and enrols factors against the stores. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    durable: Arc<dyn DurableStore>,
    hot: Arc<dyn HotStore>,
    key: SecretKey,
    settings: AuthnSettings,
    webauthn: Option<WebauthnFactor>,
    email: Option<EmailSender>,
    sms: Option<SmsSender>,
    breached: BreachedList,
    /// A hash of a random secret with the configured parameters: verified against when the
    /// user or their password does not exist, so that case takes as long as a wrong password.
    dummy_phc: String,
    /// Told of every verification and lockout (the server's metrics).
    observer: std::sync::OnceLock<Arc<dyn AuthnObserver>>,
}

/// What a factor verification came to, for [`AuthnObserver::verification`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyResult {
    /// The factor was right.
    Success,
    /// The factor was wrong (a wrong password or code, a replayed or expired code, too many
    /// guesses at one code).
    Failure,
    /// Not checked: the account is locked, banned, disabled, or rate-limited.
    Refused,
    /// Not checked: a store, a directory or the factor's settings failed.
    Error,
}

impl VerifyResult {
    /// `success`, `failure`, `refused`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyResult::Success => "success",
            VerifyResult::Failure => "failure",
            VerifyResult::Refused => "refused",
            VerifyResult::Error => "error",
        }
    }

    /// The result of `r`.
    pub fn of<T>(r: &Result<T, AuthError>) -> VerifyResult {
        match r {
            Ok(_) => VerifyResult::Success,
            Err(
                AuthError::InvalidCredentials
                | AuthError::Replayed
                | AuthError::TooManyGuesses
                | AuthError::Expired,
            ) => VerifyResult::Failure,
            Err(
                AuthError::Locked { .. }
                | AuthError::AccountLocked
                | AuthError::Disabled
                | AuthError::RateLimited(_),
            ) => VerifyResult::Refused,
            Err(_) => VerifyResult::Error,
        }
    }
}

/// Told of every factor verification and every lockout the regulation imposes (the
/// server counts them: `stepgate_factor_verifications_total`, `stepgate_lockouts_total`).
pub trait AuthnObserver: Send + Sync {
    /// A verification of `factor` ended with `result`.
    fn verification(&self, factor: FactorKind, result: VerifyResult);
    /// The regulation locked an account (`user`) or banned an address (`ip`).
    fn lockout(&self, target: &'static str);
}

/// A consecutive-failure counter never expires in practice (NIST: the cap holds "however
/// slowly the guesses arrive"); the hot store needs a window, so ten years.
const CONSECUTIVE_WINDOW: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a redeemed recovery code's replay guard is kept (the durable update that marks
/// it used lands within milliseconds; this only closes the race between two nodes).
const RECOVERY_GUARD_TTL: Duration = Duration::from_secs(24 * 3600);
const ADMIN_PREFIX: &str = "admin:";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// The hash the hot store keeps for a one-time code. SHA-256 (not argon2) is fine here only
/// because a 6–10 digit code lives for minutes and allows `max_guesses` checks before it is
/// discarded: whoever could read the hot store could brute-force 10^6 codes offline, but the
/// code is worthless by the time they do and useless on any other key (the key is hashed in).
fn otp_hash(key: &str, code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"stepgate/otp/v1\0");
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(code.trim().as_bytes());
    h.finalize().to_vec()
}

fn otp_kind_check(kind: FactorKind) -> Result<(), AuthError> {
    match kind {
        FactorKind::EmailOtp | FactorKind::SmsOtp => Ok(()),
        other => Err(AuthError::Internal(format!(
            "{other} is not a one-time code channel (use email_otp or sms_otp)"
        ))),
    }
}

/// Masks an address or number for display: `j***@example.com`, `+*******1234`.
pub fn mask_destination(d: &str) -> String {
    if let Some((local, domain)) = d.split_once('@') {
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    } else {
        let n = d.chars().count();
        d.chars()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 && c == '+' || i + 4 >= n {
                    c
                } else {
                    '*'
                }
            })
            .collect()
    }
}

/// The WebAuthn user handle for a user: the 128-bit hex id itself when it is one, otherwise
/// derived from it (stable, so credentials keep working).
fn user_handle(user: &UserRecord) -> Uuid {
    if user.id.len() == 32 {
        if let Ok(u) = Uuid::try_parse(&user.id) {
            return u;
        }
    }
    let d = Sha256::digest(user.id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

fn cred_lookup_key(id: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// What is kept server-side between the halves of a registration.
#[derive(Serialize, Deserialize)]
struct RegistrationEnvelope {
    user_id: String,
    state: RegistrationState,
}

/// What is kept server-side between the halves of an authentication.
#[derive(Serialize, Deserialize)]
struct AuthenticationEnvelope {
    user_id: Option<String>,
    state: AuthenticationState,
}

fn json_err(e: serde_json::Error) -> AuthError {
    AuthError::Rejected(format!("malformed WebAuthn data: {e}"))
}

fn webauthn_err(e: WebauthnFailure) -> AuthError {
    match e {
        WebauthnFailure::Ceremony(_) | WebauthnFailure::UnknownCredential => {
            AuthError::InvalidCredentials
        }
        WebauthnFailure::NoAttestationRoots | WebauthnFailure::NotHardwareBound => {
            AuthError::Rejected(e.to_string())
        }
        WebauthnFailure::Config(m) => AuthError::Internal(m),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Internal(format!("hashing task failed: {e}")))
}

/// Who an audit event is attributed to.
#[derive(Clone, Copy)]
enum Actor<'a> {
    /// The user themself (self-service).
    User,
    /// An administrator (CLI, admin API): `admin:<name>`.
    Admin(&'a str),
}

impl Actor<'_> {
    fn name(&self, user: &UserRecord) -> String {
        match self {
            Actor::User => user.id.clone(),
            Actor::Admin(a) => format!("{ADMIN_PREFIX}{a}"),
        }
    }
}

impl Authenticator {
    /// Builds the authenticator: the WebAuthn relying party, the e-mail and SMS senders and
    /// the breached-password list from the settings (relative paths against `base_dir`).
    pub fn new(
        durable: Arc<dyn DurableStore>,
        hot: Arc<dyn HotStore>,
        key: SecretKey,
        settings: AuthnSettings,
        base_dir: &Path,
    ) -> Result<Self, AuthError> {
        let mut settings = settings;
        let f = &mut settings.factors;
        if let EmailTransportConfig::File(t) = &mut f.email_otp.transport {
            t.dir = base_dir.join(&t.dir);
        }
        if let SmsTransportConfig::File(t) = &mut f.sms_otp.transport {
            t.dir = base_dir.join(&t.dir);
        }
        for ca in &mut f.webauthn.attestation_cas {
            ca.pem_file = base_dir.join(&ca.pem_file);
        }
        if let Some(p) = &mut f.password.breached_list {
            *p = base_dir.join(&*p);
        }
        let webauthn = if f.webauthn.enabled {
            Some(WebauthnFactor::new(&f.webauthn).map_err(|e| AuthError::Internal(e.to_string()))?)
        } else {
            None
        };
        let email = if f.email_otp.enabled {
            Some(EmailSender::from_config(&f.email_otp.transport)?)
        } else {
            None
        };
        let sms = if f.sms_otp.enabled {
            Some(SmsSender::from_config(&f.sms_otp.transport)?)
        } else {
            None
        };
        let breached = match &f.password.breached_list {
            Some(p) => BreachedList::load(p).map_err(|e| {
                AuthError::Internal(format!(
                    "factors.password.breached_list: cannot read {}: {e}",
                    p.display()
                ))
            })?,
            None => BreachedList::default(),
        };
        let dummy_phc = password::hash_secret(&f.password.argon2, Uuid::new_v4().as_bytes())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(Authenticator {
            inner: Arc::new(Inner {
                durable,
                hot,
                key,
                settings,
                webauthn,
                email,
                sms,
                breached,
                dummy_phc,
                observer: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Sets the observer told of every verification and lockout (once; later calls are
    /// ignored).
    pub fn observe(&self, observer: Arc<dyn AuthnObserver>) {
        let _ = self.inner.observer.set(observer);
    }

    fn observed<T>(&self, factor: FactorKind, r: &Result<T, AuthError>) {
        if let Some(o) = self.inner.observer.get() {
            o.verification(factor, VerifyResult::of(r));
        }
    }

    /// Replaces the WebAuthn relying party (for attestation roots from another source, tests).
    pub fn with_webauthn(self, rp: WebauthnFactor) -> Self {
        let i = match Arc::try_unwrap(self.inner) {
            Ok(i) => i,
            Err(arc) => Inner {
                durable: arc.durable.clone(),
                hot: arc.hot.clone(),
                key: arc.key.clone(),
                settings: arc.settings.clone(),
                webauthn: None,
                email: arc.email.clone(),
                sms: arc.sms.clone(),
                breached: arc.breached.clone(),
                dummy_phc: arc.dummy_phc.clone(),
                observer: arc
                    .observer
                    .get()
                    .cloned()
                    .map_or_else(std::sync::OnceLock::new, std::sync::OnceLock::from),
            },
        };
        Authenticator {
            inner: Arc::new(Inner {
                webauthn: Some(rp),
                ..i
            }),
        }
    }

    /// The settings in force (paths resolved against the base directory).
    pub fn settings(&self) -> &AuthnSettings {
        &self.inner.settings
    }

    fn durable(&self) -> &dyn DurableStore {
        self.inner.durable.as_ref()
    }

    fn hot(&self) -> &dyn HotStore {
        self.inner.hot.as_ref()
    }

    fn cfg(&self) -> &FactorsConfig {
        &self.inner.settings.factors
    }

    /// The user with this name.
    pub async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, AuthError> {
        Ok(self.durable().get_user_by_username(username).await?)
    }

    // ------------------------------------------------------------------ regulation

    /// The key failures are counted under: the user id, or a hash of the name typed when no
    /// such user exists (so unknown names are banned exactly like real ones).
    fn subject_key(user: Option<&UserRecord>, username: &str) -> String {
        match user {
            Some(u) => format!("u:{}", u.id),
            None => format!("n:{}", sha256_hex(&[username.as_bytes()])),
        }
    }

    /// How many more failures `user` (or, with no such user, the name typed) may have
    /// within `find_time` before sign-in is paused for `ban_time`; `None` when
    /// `max_retries` is off. Read after a failure, it counts that failure.
    pub async fn attempts_left(
        &self,
        user: Option<&UserRecord>,
        username: &str,
    ) -> Result<Option<u32>, AuthError> {
        let max = self.inner.settings.regulation.max_retries;
        if max == 0 {
            return Ok(None);
        }
        let subject = Self::subject_key(user, username);
        let failed = self
            .hot()
            .get_counter(&format!("authn:fail:{subject}"))
            .await?;
        Ok(Some(
            max.saturating_sub(u32::try_from(failed).unwrap_or(u32::MAX)),
        ))
    }

    /// Until when signing in as `user` (or the name typed) is paused, if it is: read after
    /// a failure, it says whether that failure began the pause. Counted and paused alike
    /// for every name, so it reveals no account.
    pub async fn paused_until(
        &self,
        user: Option<&UserRecord>,
        username: &str,
    ) -> Result<Option<DateTime<Utc>>, AuthError> {
        let subject = Self::subject_key(user, username);
        let until = self
            .hot()
            .ban_until(&format!("authn:ban:{subject}"))
            .await?;
        Ok(until.filter(|u| *u > Utc::now()))
    }

    async fn check_regulation(&self, subject: &str, ip: Option<IpAddr>) -> Result<(), AuthError> {
        let hot = self.hot();
        let c = AttemptCounters {
            user_failures_in_window: 0,
            ip_failures_in_window: 0,
            consecutive_user_failures: u32::try_from(
                hot.get_counter(&format!("authn:consec:{subject}")).await?,
            )
            .unwrap_or(u32::MAX),
            user_banned_until: hot.ban_until(&format!("authn:ban:{subject}")).await?,
            ip_banned_until: match ip {
                Some(ip) => hot.ban_until(&format!("authn:ban:ip:{ip}")).await?,
                None => None,
            },
        };
        match regulation::check_attempt(&self.inner.settings.regulation, &c, Utc::now()) {
            Ok(()) => Ok(()),
            Err(Refusal::UserBanned { until } | Refusal::IpBanned { until }) => {
                Err(AuthError::Locked { until })
            }
            Err(Refusal::AccountLocked { .. }) => Err(AuthError::AccountLocked),
        }
    }

    /// Counts a failure and imposes (and audits) the bans it triggers.
    async fn record_failure(
        &self,
        subject: &str,
        user: Option<&UserRecord>,
        username: &str,
        ip: Option<IpAddr>,
        factor: FactorKind,
    ) -> Result<(), AuthError> {
        let cfg = &self.inner.settings.regulation;
        let hot = self.hot();
        let find = cfg.find_time.0;
        let user_win = hot
            .incr_counter(&format!("authn:fail:{subject}"), find)
            .await?;
        let ip_win = match ip {
            Some(ip) => {
                hot.incr_counter(&format!("authn:fail:ip:{ip}"), find)
                    .await?
            }
            None => 0,
        };
        let consecutive = hot
            .incr_counter(&format!("authn:consec:{subject}"), CONSECUTIVE_WINDOW)
            .await?;
        let c = AttemptCounters {
            user_failures_in_window: u32::try_from(user_win).unwrap_or(u32::MAX),
            ip_failures_in_window: u32::try_from(ip_win).unwrap_or(u32::MAX),
            consecutive_user_failures: u32::try_from(consecutive).unwrap_or(u32::MAX),
            ..AttemptCounters::default()
        };
        let ip_s = ip.map(|i| i.to_string()).unwrap_or_default();
        let now = Utc::now();
        tracing::info!(factor = %factor, consecutive, user = username, client = %ip_s, "authentication failure");
        for ban in regulation::after_failure(cfg, username, &ip_s, &c, now) {
            let (kind, subject_id) = match (&ban.target, ban.until) {
                (BanTarget::User(_), Some(until)) => {
                    hot.set_ban(&format!("authn:ban:{subject}"), until).await?;
                    ("authn.lockout", user.map(|u| u.id.clone()))
                }
                // The consecutive-failure lock is the counter itself; it lasts until reset.
                (BanTarget::User(_), None) => ("authn.lockout", user.map(|u| u.id.clone())),
                (BanTarget::Ip(_), Some(until)) => {
                    if ip.is_none() {
                        continue;
                    }
                    hot.set_ban(&format!("authn:ban:ip:{ip_s}"), until).await?;
                    ("authn.ip_ban", None)
                }
                (BanTarget::Ip(_), None) => continue,
            };
            tracing::warn!(
                kind,
                reason = ban.reason,
                user = username,
                client = %ip_s,
                "sign-in regulation imposed a ban"
            );
            if let Some(o) = self.inner.observer.get() {
                o.lockout(if kind == "authn.lockout" {
                    "user"
                } else {
                    "ip"
                });
            }
            let mut ev = NewAuditEvent::now(kind);
            ev.actor = Some("system".into());
            ev.subject = subject_id;
            ev.ip = ip.map(|i| i.to_string());
            ev.detail = serde_json::json!({
                "reason": ban.reason,
                "until": ban.until,
                "username": username,
                "factor": factor,
                "consecutive_failures": consecutive,
            });
            self.durable().append_audit(&ev).await?;
        }
        Ok(())
    }

    async fn record_success(&self, subject: &str) -> Result<(), AuthError> {
        let hot = self.hot();
        hot.reset_counter(&format!("authn:consec:{subject}"))
            .await?;
        hot.reset_counter(&format!("authn:fail:{subject}")).await?;
        Ok(())
    }

    /// A password checked elsewhere (an LDAP directory), under stepgate's own regulation:
    /// refused while the account (`user`, or the name typed when there is none) or the IP is
    /// banned or locked, without asking `check`; otherwise `check` decides — `Some` passed,
    /// `None` counts like a wrong password here, `Err` (the directory is down) counts as
    /// nothing and is returned as it is.
    pub async fn verify_external<T, E>(
        &self,
        username: &str,
        user: Option<&UserRecord>,
        ip: Option<IpAddr>,
        check: impl std::future::Future<Output = Result<Option<T>, E>>,
    ) -> Result<Result<T, AuthError>, E> {
        let subject = Self::subject_key(user, username);
        if let Err(e) = self.check_regulation(&subject, ip).await {
            let r: Result<T, AuthError> = Err(e);
            self.observed(FactorKind::Password, &r);
            return Ok(r);
        }
        let checked = match check.await {
            Ok(c) => c,
            Err(e) => {
                if let Some(o) = self.inner.observer.get() {
                    o.verification(FactorKind::Password, VerifyResult::Error);
                }
                return Err(e);
            }
        };
        let r = match checked {
            Some(v) => self.record_success(&subject).await.map(|()| v),
            None => self
                .record_failure(&subject, user, username, ip, FactorKind::Password)
                .await
                .and(Err(AuthError::InvalidCredentials)),
        };
        self.observed(FactorKind::Password, &r);
        Ok(r)
    }

    /// Lifts every ban and lock on the account and resets its failure counters (the only way
    /// out of the NIST consecutive-failure lock). Audited as `authn.unlock`.
    pub async fn unlock(&self, user: &UserRecord, admin: &str) -> Result<(), AuthError> {
        let subject = Self::subject_key(Some(user), &user.username);
        self.record_success(&subject).await?;
        self.hot()
            .clear_ban(&format!("authn:ban:{subject}"))
            .await?;
        self.audit(
            "authn.unlock",
            Actor::Admin(admin),
            user,
            None,
            serde_json::json!({}),
        )
        .await
    }

    /// Whether the account is locked or banned now (for admin tools).
    pub async fn lock_state(&self, user: &UserRecord) -> Result<Option<AuthError>, AuthError> {
        let subject = Self::subject_key(Some(user), &user.username);
        Ok(self.check_regulation(&subject, None).await.err())
    }

    async fn audit(
        &self,
        kind: &str,
        actor: Actor<'_>,
        user: &UserRecord,
        factor_id: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), AuthError> {
        let mut ev = NewAuditEvent::now(kind);
        ev.actor = Some(actor.name(user));
        ev.subject = Some(user.id.clone());
        let mut detail = detail;
        if let (Some(id), Some(map)) = (factor_id, detail.as_object_mut()) {
            map.insert("factor_id".into(), id.into());
        }
        ev.detail = detail;
        self.durable().append_audit(&ev).await?;
        Ok(())
    }

    /// Runs a verification under regulation: refuses when banned or locked, counts a
    /// failure on `InvalidCredentials` / `Replayed` / `TooManyGuesses`, resets on success.
    async fn regulated<T>(
        &self,
        user: &UserRecord,
        ip: Option<IpAddr>,
        kind: FactorKind,
        attempt: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        let r = self.regulated_unobserved(user, ip, kind, attempt).await;
        self.observed(kind, &r);
        r
    }

    async fn regulated_unobserved<T>(
        &self,
        user: &UserRecord,
        ip: Option<IpAddr>,
        kind: FactorKind,
        attempt: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        let subject = Self::subject_key(Some(user), &user.username);
        self.check_regulation(&subject, ip).await?;
        match attempt.await {
            Ok(v) => {
                self.record_success(&subject).await?;
                Ok(v)
            }
            Err(
                e @ (AuthError::InvalidCredentials
                | AuthError::Replayed
                | AuthError::TooManyGuesses),
            ) => {
                self.record_failure(&subject, Some(user), &user.username, ip, kind)
                    .await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn passed(&self, kind: FactorKind, factor_id: &str) -> PassedFactor {
        let mut p = PassedFactor::new(kind, &self.inner.settings.assurance, Utc::now());
        p.factor_id = Some(factor_id.to_string());
        p
    }

    async fn factors_of(
        &self,
        user: &UserRecord,
        kind: FactorKind,
    ) -> Result<Vec<FactorRecord>, AuthError> {
        Ok(self
            .durable()
            .list_factors(&user.id)
            .await?
            .into_iter()
            .filter(|f| f.kind == kind.as_str())
            .collect())
    }

    fn open_secret(&self, f: &FactorRecord) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let sealed = f
            .secret
            .as_ref()
            .ok_or_else(|| AuthError::Internal(format!("factor {} has no secret", f.id)))?;
        Ok(self
            .inner
            .key
            .open(sealed, &factor_context(&f.user_id, &f.id))?)
    }

    fn seal_for(&self, f: &mut FactorRecord, secret: &[u8]) -> Result<(), AuthError> {
        f.secret = Some(
            self.inner
                .key
                .seal(secret, &factor_context(&f.user_id, &f.id))?,
        );
        Ok(())
    }

    // ------------------------------------------------------------------ password

    /// Verifies a user name and password. Unknown user, missing password and wrong password
    /// take the same time and give [`AuthError::InvalidCredentials`]; a disabled account is
    /// reported only after the right password.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<(UserRecord, PassedFactor), AuthError> {
        let r = self
            .verify_password_unobserved(username, password, ip)
            .await;
        self.observed(FactorKind::Password, &r);
        r
    }

    async fn verify_password_unobserved(
        &self,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<(UserRecord, PassedFactor), AuthError> {
        if !self.cfg().password.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::Password));
        }
        let user = self.find_user(username).await?;
        let subject = Self::subject_key(user.as_ref(), username);
        self.check_regulation(&subject, ip).await?;
        let record = match &user {
            Some(u) => self
                .durable()
                .list_factors(&u.id)
                .await?
                .into_iter()
                .find(|f| f.kind == PASSWORD_FACTOR_KIND),
            None => None,
        };
        let phc: Zeroizing<String> = match &record {
            Some(f) => match self.open_secret(f) {
                Ok(p) => Zeroizing::new(String::from_utf8_lossy(&p).into_owned()),
                Err(e) => {
                    tracing::error!(error = %e, "a password hash does not open");
                    Zeroizing::new(self.inner.dummy_phc.clone())
                }
            },
            None => Zeroizing::new(self.inner.dummy_phc.clone()),
        };
        let pw = Zeroizing::new(password.to_string());
        let phc_c = phc.clone();
        let ok =
            blocking(move || password::verify_password(&phc_c, &pw)).await? && record.is_some();
        let (Some(user), Some(record), true) = (user.clone(), record, ok) else {
            self.record_failure(&subject, user.as_ref(), username, ip, FactorKind::Password)
                .await?;
            return Err(AuthError::InvalidCredentials);
        };
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        self.record_success(&subject).await?;
        self.durable().touch_factor(&record.id, now_ms()).await?;
        // Upgrade hashes made with weaker parameters (not the config's own: sync owns those).
        let from_config = record.data.get("source").and_then(|v| v.as_str()) == Some("config");
        let argon = self.cfg().password.argon2;
        if !from_config && password::needs_rehash(&argon, &phc) {
            let pw = Zeroizing::new(password.to_string());
            if let Ok(Ok(new_phc)) =
                blocking(move || password::hash_secret(&argon, pw.as_bytes())).await
            {
                let mut f = record.clone();
                self.seal_for(&mut f, new_phc.as_bytes())?;
                self.durable().update_factor(&f).await?;
            }
        }
        let passed = self.passed(FactorKind::Password, &record.id);
        Ok((user, passed))
    }

    /// Sets or changes the user's password after the NIST SP 800-63B checks (length,
    /// breached list, not the user name). Refused for users whose password is declared in the
    /// configuration file.
    pub async fn set_password(
        &self,
        user: &UserRecord,
        new_password: &str,
    ) -> Result<(), AuthError> {
        self.set_password_as(user, new_password, Actor::User).await
    }

    /// [`Self::set_password`] by an administrator (audited as `admin:<admin>`).
    pub async fn admin_set_password(
        &self,
        user: &UserRecord,
        new_password: &str,
        admin: &str,
    ) -> Result<(), AuthError> {
        self.set_password_as(user, new_password, Actor::Admin(admin))
            .await
    }

    async fn set_password_as(
        &self,
        user: &UserRecord,
        new_password: &str,
        actor: Actor<'_>,
    ) -> Result<(), AuthError> {
        if !self.cfg().password.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::Password));
        }
        if user.source == UserSource::Config {
            return Err(AuthError::Rejected(format!(
                "the password of `{}` is managed in the configuration file: change its \
                 `password_hash` there (make one with `stepgate user hash-password`)",
                user.username
            )));
        }
        let cfg = self.cfg().password.clone();
        let breached = self.inner.breached.clone();
        let name = user.username.clone();
        let pw = Zeroizing::new(new_password.to_string());
        let phc = blocking(move || password::set_password(&cfg, &breached, &name, &pw))
            .await?
            .map_err(|e| match e {
                password::SetPasswordError::Rejected(r) => AuthError::Rejected(r.to_string()),
                password::SetPasswordError::Hash(h) => AuthError::Internal(h.to_string()),
            })?;
        let phc = Zeroizing::new(phc);
        let existing = self.factors_of(user, FactorKind::Password).await?;
        let replaced = !existing.is_empty();
        let id = match existing.into_iter().next() {
            Some(mut f) => {
                self.seal_for(&mut f, phc.as_bytes())?;
                f.data = serde_json::json!({});
                self.durable().update_factor(&f).await?;
                // A new password: no device keeps the old one's MFA.
                self.forget_mfa(&user.id).await?;
                f.id
            }
            None => {
                let mut f = FactorRecord::new(&user.id, PASSWORD_FACTOR_KIND, "Password");
                self.seal_for(&mut f, phc.as_bytes())?;
                self.durable().create_factor(&f).await?;
                f.id
            }
        };
        self.audit(
            if replaced {
                "password.changed"
            } else {
                "factor.enrolled"
            },
            actor,
            user,
            Some(&id),
            serde_json::json!({ "kind": "password" }),
        )
        .await
    }

    // ------------------------------------------------------------------ TOTP

    /// Verifies a TOTP code against the user's soft tokens. Each code is accepted once: the
    /// factor keeps the last accepted step, and the step is claimed in the hot store so that
    /// two nodes verifying the same code concurrently cannot both accept it.
    pub async fn verify_totp(
        &self,
        user: &UserRecord,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<PassedFactor, AuthError> {
        if !self.cfg().totp.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::Totp));
        }
        let factors = self.factors_of(user, FactorKind::Totp).await?;
        if factors.is_empty() {
            return Err(AuthError::NotEnrolled(FactorKind::Totp));
        }
        self.regulated(user, ip, FactorKind::Totp, async {
            let now = Utc::now().timestamp().max(0) as u64;
            let skew = self.cfg().totp.skew;
            let mut outcome = Err(AuthError::InvalidCredentials);
            for f in factors {
                let seed = self.open_secret(&f)?;
                let mut data: TotpData = serde_json::from_value(f.data.clone())
                    .map_err(|e| AuthError::Internal(format!("totp factor data: {e}")))?;
                match totp::verify(&mut data, &seed, skew, code, now) {
                    Ok(step) => {
                        let guard = format!("totp:{}:{step}", f.id);
                        let ttl =
                            Duration::from_secs(data.period.max(1) * 2 * (u64::from(skew) + 1));
                        if !self.hot().remember_once(&guard, ttl).await? {
                            outcome = Err(AuthError::Replayed);
                            continue;
                        }
                        let mut updated = f.clone();
                        updated.data = serde_json::to_value(&data)
                            .map_err(|e| AuthError::Internal(e.to_string()))?;
                        updated.last_used_at = Some(now_ms());
                        self.durable().update_factor(&updated).await?;
                        return Ok(self.passed(FactorKind::Totp, &f.id));
                    }
                    Err(TotpReject::Replayed) => outcome = Err(AuthError::Replayed),
                    Err(TotpReject::Malformed(n)) => {
                        return Err(AuthError::Rejected(TotpReject::Malformed(n).to_string()))
                    }
                    Err(TotpReject::Invalid) => {}
                }
            }
            outcome
        })
        .await
    }

    /// Starts a TOTP enrolment: a fresh seed, its URI and QR code, and a sealed token to
    /// confirm it with the first code.
    pub async fn enrol_totp_start(&self, user: &UserRecord) -> Result<PendingTotp, AuthError> {
        let cfg = &self.cfg().totp;
        if !cfg.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::Totp));
        }
        let e = totp::enrol(cfg, &user.username).map_err(|e| AuthError::Internal(e.to_string()))?;
        let expires = Utc::now().timestamp() + PENDING_TOTP_TTL.as_secs() as i64;
        let mut plain = Zeroizing::new(expires.to_be_bytes().to_vec());
        plain.extend_from_slice(&e.seed);
        let sealed = self
            .inner
            .key
            .seal(&plain, &Self::pending_totp_context(user))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed.as_bytes());
        let qr_svg = totp::qr_svg(&e.uri).map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok(PendingTotp {
            uri: e.uri,
            seed_base32: e.seed_base32,
            qr_svg,
            token,
        })
    }

    fn pending_totp_context(user: &UserRecord) -> String {
        format!("stepgate/pending-totp/v1/{}:{}", user.id.len(), user.id)
    }

    /// Confirms a TOTP enrolment with a code from the app; stores the factor (seed sealed).
    pub async fn enrol_totp_confirm(
        &self,
        user: &UserRecord,
        token: &str,
        code: &str,
    ) -> Result<FactorRecord, AuthError> {
        let cfg = self.cfg().totp.clone();
        if !cfg.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::Totp));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| AuthError::Expired)?;
        let plain = self
            .inner
            .key
            .open(
                &SealedSecret::from_bytes(bytes),
                &Self::pending_totp_context(user),
            )
            .map_err(|_| AuthError::Expired)?;
        if plain.len() < 9 {
            return Err(AuthError::Expired);
        }
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&plain[..8]);
        if i64::from_be_bytes(exp) < Utc::now().timestamp() {
            return Err(AuthError::Expired);
        }
        let seed = &plain[8..];
        let mut data = TotpData {
            algorithm: cfg.algorithm,
            digits: cfg.digits,
            period: cfg.period.as_secs(),
            last_step: None,
        };
        let now = Utc::now().timestamp().max(0) as u64;
        let step = match totp::verify(&mut data, seed, cfg.skew, code, now) {
            Ok(step) => step,
            Err(TotpReject::Malformed(n)) => {
                return Err(AuthError::Rejected(TotpReject::Malformed(n).to_string()))
            }
            Err(_) => return Err(AuthError::InvalidCredentials),
        };
        // One token enrols one factor, even if the form is submitted twice.
        let once = format!("totp-enrol:{}", sha256_hex(&[token.as_bytes()]));
        if !self.hot().remember_once(&once, PENDING_TOTP_TTL).await? {
            return Err(AuthError::Replayed);
        }
        let label = format!("{} ({})", cfg.issuer, user.username);
        let mut f = FactorRecord::new(&user.id, FactorKind::Totp.as_str(), label);
        self.seal_for(&mut f, seed)?;
        f.data = serde_json::to_value(&data).map_err(|e| AuthError::Internal(e.to_string()))?;
        self.durable().create_factor(&f).await?;
        let ttl = Duration::from_secs(data.period.max(1) * 2 * (u64::from(cfg.skew) + 1));
        self.hot()
            .remember_once(&format!("totp:{}:{step}", f.id), ttl)
            .await?;
        self.audit_enrolled(Actor::User, user, &f).await?;
        Ok(f)
    }

    /// Enrols a TOTP token directly, without a confirmation code (administrators, the CLI):
    /// returns the URI and base32 seed to hand over, and the stored factor.
    pub async fn admin_enrol_totp(
        &self,
        user: &UserRecord,
        admin: &str,
    ) -> Result<(String, String, FactorRecord), AuthError> {
        let cfg = &self.cfg().totp;
        let e = totp::enrol(cfg, &user.username).map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut f = FactorRecord::new(
            &user.id,
            FactorKind::Totp.as_str(),
            e.material.label.clone(),
        );
        self.seal_for(&mut f, &e.seed)?;
        f.data = e.material.data.clone();
        self.durable().create_factor(&f).await?;
        self.audit_enrolled(Actor::Admin(admin), user, &f).await?;
        Ok((e.uri.clone(), e.seed_base32.clone(), f))
    }

    async fn audit_enrolled(
        &self,
        actor: Actor<'_>,
        user: &UserRecord,
        f: &FactorRecord,
    ) -> Result<(), AuthError> {
        self.audit(
            "factor.enrolled",
            actor,
            user,
            Some(&f.id),
            serde_json::json!({ "kind": f.kind, "label": f.label }),
        )
        .await
    }

    // ------------------------------------------------------------------ e-mail / SMS codes

    fn channel_enabled(&self, kind: FactorKind) -> Result<(), AuthError> {
        otp_kind_check(kind)?;
        let on = match kind {
            FactorKind::EmailOtp => self.cfg().email_otp.enabled && self.inner.email.is_some(),
            _ => self.cfg().sms_otp.enabled && self.inner.sms.is_some(),
        };
        if on {
            Ok(())
        } else {
            Err(AuthError::FactorUnavailable(kind))
        }
    }

    /// Sends a fresh code to `destination` (rate-limited per user and per destination) and
    /// keeps its hash in the hot store under `key`.
    async fn issue_code(
        &self,
        user: &UserRecord,
        kind: FactorKind,
        destination: &str,
        key: &str,
    ) -> Result<(), AuthError> {
        let reg = &self.inner.settings.regulation;
        let hot = self.hot();
        let user_key = format!("otp:sent:u:{}", user.id);
        let dest_key = format!(
            "otp:sent:d:{}",
            sha256_hex(&[destination.trim().to_lowercase().as_bytes()])
        );
        let sent_user = hot.get_counter(&user_key).await?;
        let sent_dest = hot.get_counter(&dest_key).await?;
        regulation::check_otp_send(
            reg,
            u32::try_from(sent_user).unwrap_or(u32::MAX),
            u32::try_from(sent_dest).unwrap_or(u32::MAX),
        )
        .map_err(AuthError::RateLimited)?;
        // Counted before sending: a failed delivery still costs a send (an attacker cannot
        // retry for free against a flaky gateway).
        hot.incr_counter(&user_key, reg.otp_send_window.0).await?;
        hot.incr_counter(&dest_key, reg.otp_send_window.0).await?;

        let otp_cfg = &self.cfg().otp;
        let code = Zeroizing::new(otp::random_code(otp_cfg.digits));
        hot.put_otp(
            key,
            &otp_hash(key, &code),
            otp_cfg.lifetime.0,
            otp_cfg.max_guesses,
        )
        .await?;
        let issuer = self.cfg().totp.issuer.as_str();
        let sent = match kind {
            FactorKind::EmailOtp => {
                let (subject, body) = otp::email_text(
                    &self.cfg().email_otp,
                    otp_cfg,
                    issuer,
                    &user.username,
                    &code,
                );
                match &self.inner.email {
                    Some(s) => s.send(destination, &subject, &body).await,
                    None => return Err(AuthError::FactorUnavailable(kind)),
                }
            }
            _ => {
                let text =
                    otp::sms_text(&self.cfg().sms_otp, otp_cfg, issuer, &user.username, &code);
                match &self.inner.sms {
                    Some(s) => s.send(destination, &text).await,
                    None => return Err(AuthError::FactorUnavailable(kind)),
                }
            }
        };
        if let Err(e) = sent {
            hot.delete_otp(key).await?;
            return Err(match e {
                DeliveryError::BadRecipient(r) => AuthError::Rejected(format!(
                    "`{r}` is not a valid {}",
                    if kind == FactorKind::EmailOtp {
                        "e-mail address"
                    } else {
                        "phone number in international format (+ and digits)"
                    }
                )),
                other => AuthError::Delivery(other),
            });
        }
        Ok(())
    }

    /// Checks a code against the pending one under `key`.
    async fn check_code(&self, key: &str, code: &str) -> Result<(), AuthError> {
        match self.hot().check_otp(key, &otp_hash(key, code)).await? {
            OtpCheck::Valid => Ok(()),
            OtpCheck::Invalid { attempts_left: 0 } => Err(AuthError::TooManyGuesses),
            OtpCheck::Invalid { .. } => Err(AuthError::InvalidCredentials),
            OtpCheck::Missing => Err(AuthError::Expired),
        }
    }

    fn destination_of(f: &FactorRecord) -> Option<String> {
        f.data
            .get("destination")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// Sends a sign-in code by e-mail or SMS to the user's enrolled address or number;
    /// returns the destination masked for display.
    pub async fn send_otp(&self, user: &UserRecord, kind: FactorKind) -> Result<String, AuthError> {
        self.channel_enabled(kind)?;
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        let f = self
            .factors_of(user, kind)
            .await?
            .into_iter()
            .next()
            .ok_or(AuthError::NotEnrolled(kind))?;
        let dest = Self::destination_of(&f)
            .ok_or_else(|| AuthError::Internal(format!("factor {} has no destination", f.id)))?;
        let key = format!("otp:{kind}:{}", user.id);
        self.issue_code(user, kind, &dest, &key).await?;
        Ok(mask_destination(&dest))
    }

    /// Verifies a sign-in code sent with [`Self::send_otp`]. Single use; at most
    /// `factors.otp.max_guesses` checks per code.
    pub async fn verify_otp(
        &self,
        user: &UserRecord,
        kind: FactorKind,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<PassedFactor, AuthError> {
        self.channel_enabled(kind)?;
        let f = self
            .factors_of(user, kind)
            .await?
            .into_iter()
            .next()
            .ok_or(AuthError::NotEnrolled(kind))?;
        let key = format!("otp:{kind}:{}", user.id);
        self.regulated(user, ip, kind, self.check_code(&key, code))
            .await?;
        self.durable().touch_factor(&f.id, now_ms()).await?;
        Ok(self.passed(kind, &f.id))
    }

    /// Starts enrolling an e-mail address or phone number: sends a code to prove it.
    pub async fn enrol_contact_start(
        &self,
        user: &UserRecord,
        kind: FactorKind,
        destination: &str,
    ) -> Result<(), AuthError> {
        self.channel_enabled(kind)?;
        let destination = destination.trim();
        match kind {
            FactorKind::SmsOtp if !otp::is_phone_number(destination) => {
                return Err(AuthError::Rejected(format!(
                    "`{destination}` is not a phone number in international format: + then the country code and number, digits only"
                )))
            }
            FactorKind::EmailOtp
                if destination.parse::<lettre::message::Mailbox>().is_err()
                    || !destination.contains('@') =>
            {
                return Err(AuthError::Rejected(format!(
                    "`{destination}` is not an e-mail address"
                )))
            }
            _ => {}
        }
        let key = format!("otp-enrol:{kind}:{}", user.id);
        self.issue_code(user, kind, destination, &key).await?;
        // The pending destination rides in a one-entry recent list that expires with the code.
        self.hot()
            .push_recent(
                &format!("otp-enrol-dest:{kind}:{}", user.id),
                &serde_json::json!({ "destination": destination }),
                1,
                self.cfg().otp.lifetime.0,
            )
            .await?;
        Ok(())
    }

    /// Confirms an e-mail address or phone number with the code sent to it; stores it as the
    /// user's factor of that kind (replacing an earlier one).
    pub async fn enrol_contact_confirm(
        &self,
        user: &UserRecord,
        kind: FactorKind,
        code: &str,
    ) -> Result<FactorRecord, AuthError> {
        self.channel_enabled(kind)?;
        let key = format!("otp-enrol:{kind}:{}", user.id);
        self.check_code(&key, code).await?;
        let dest = self
            .hot()
            .recent(&format!("otp-enrol-dest:{kind}:{}", user.id))
            .await?
            .into_iter()
            .next()
            .and_then(|v| {
                v.get("destination")
                    .and_then(|d| d.as_str())
                    .map(str::to_string)
            })
            .ok_or(AuthError::Expired)?;
        for old in self.factors_of(user, kind).await? {
            self.durable().delete_factor(&old.id).await?;
            self.audit_removed(Actor::User, user, &old, "replaced")
                .await?;
        }
        let mut f = FactorRecord::new(&user.id, kind.as_str(), dest.clone());
        f.data = serde_json::json!({ "destination": dest });
        self.durable().create_factor(&f).await?;
        self.audit(
            "factor.enrolled",
            Actor::User,
            user,
            Some(&f.id),
            serde_json::json!({ "kind": f.kind, "destination": mask_destination(&dest) }),
        )
        .await?;
        Ok(f)
    }

    // ------------------------------------------------------------------ recovery codes

    /// Redeems one recovery code (single use).
    pub async fn verify_recovery_code(
        &self,
        user: &UserRecord,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<PassedFactor, AuthError> {
        if !self.cfg().recovery_codes.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::RecoveryCodes));
        }
        let f = self
            .factors_of(user, FactorKind::RecoveryCodes)
            .await?
            .into_iter()
            .next()
            .ok_or(AuthError::NotEnrolled(FactorKind::RecoveryCodes))?;
        self.regulated(user, ip, FactorKind::RecoveryCodes, async {
            let mut codes: RecoveryCodes = serde_json::from_value(f.data.clone())
                .map_err(|e| AuthError::Internal(format!("recovery codes data: {e}")))?;
            let input = Zeroizing::new(code.to_string());
            let (codes, idx) = blocking(move || {
                let idx = codes.redeem(&input, now_ms());
                (codes, idx)
            })
            .await?;
            let idx = idx.ok_or(AuthError::InvalidCredentials)?;
            if !self
                .hot()
                .remember_once(&format!("recovery:{}:{idx}", f.id), RECOVERY_GUARD_TTL)
                .await?
            {
                return Err(AuthError::Replayed);
            }
            let mut updated = f.clone();
            updated.data =
                serde_json::to_value(&codes).map_err(|e| AuthError::Internal(e.to_string()))?;
            updated.last_used_at = Some(now_ms());
            self.durable().update_factor(&updated).await?;
            Ok(self.passed(FactorKind::RecoveryCodes, &f.id))
        })
        .await
    }

    /// Generates a new set of recovery codes (voiding the old set); returns them to show once.
    pub async fn regenerate_recovery_codes(
        &self,
        user: &UserRecord,
    ) -> Result<Vec<String>, AuthError> {
        let cfg = &self.cfg().recovery_codes;
        if !cfg.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::RecoveryCodes));
        }
        let argon = self.cfg().password.argon2;
        let count = cfg.count;
        let generated = blocking(move || recovery::generate(&argon, count))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        for old in self.factors_of(user, FactorKind::RecoveryCodes).await? {
            self.durable().delete_factor(&old.id).await?;
            self.audit_removed(Actor::User, user, &old, "regenerated")
                .await?;
        }
        let mut f = FactorRecord::new(
            &user.id,
            FactorKind::RecoveryCodes.as_str(),
            generated.material.label.clone(),
        );
        f.data = generated.material.data.clone();
        self.durable().create_factor(&f).await?;
        self.audit(
            "factor.enrolled",
            Actor::User,
            user,
            Some(&f.id),
            serde_json::json!({ "kind": f.kind, "count": generated.plaintext.len() }),
        )
        .await?;
        Ok(generated.plaintext)
    }

    // ------------------------------------------------------------------ security questions

    async fn questions_of(
        &self,
        user: &UserRecord,
    ) -> Result<(FactorRecord, SecurityQuestions), AuthError> {
        if !self.cfg().security_questions.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::SecurityQuestions));
        }
        let f = self
            .factors_of(user, FactorKind::SecurityQuestions)
            .await?
            .into_iter()
            .next()
            .ok_or(AuthError::NotEnrolled(FactorKind::SecurityQuestions))?;
        let sq = serde_json::from_value(f.data.clone())
            .map_err(|e| AuthError::Internal(format!("security questions data: {e}")))?;
        Ok((f, sq))
    }

    /// Picks `factors.security_questions.ask` of the user's questions at random: (index,
    /// question). Keep the indexes server-side and pass them to [`Self::verify_questions`].
    pub async fn questions_challenge(
        &self,
        user: &UserRecord,
    ) -> Result<Vec<(usize, String)>, AuthError> {
        let (_, sq) = self.questions_of(user).await?;
        Ok(sq
            .challenge(self.cfg().security_questions.ask)
            .into_iter()
            .filter_map(|i| sq.questions.get(i).map(|q| (i, q.question.clone())))
            .collect())
    }

    /// Verifies answers to a challenge: at least `ask` distinct questions, all answered right.
    pub async fn verify_questions(
        &self,
        user: &UserRecord,
        asked: &[usize],
        answers: &[String],
        ip: Option<IpAddr>,
    ) -> Result<PassedFactor, AuthError> {
        let (f, sq) = self.questions_of(user).await?;
        let need = self.cfg().security_questions.ask.min(sq.questions.len());
        let mut distinct = asked.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < need || distinct.len() != asked.len() {
            return Err(AuthError::Rejected(format!(
                "answer {need} different questions"
            )));
        }
        let asked = asked.to_vec();
        let answers = answers.to_vec();
        self.regulated(user, ip, FactorKind::SecurityQuestions, async {
            if blocking(move || sq.verify(&asked, &answers)).await? {
                self.durable().touch_factor(&f.id, now_ms()).await?;
                Ok(self.passed(FactorKind::SecurityQuestions, &f.id))
            } else {
                Err(AuthError::InvalidCredentials)
            }
        })
        .await
    }

    /// Enrols (or replaces) the user's security questions and answers.
    pub async fn enrol_questions(
        &self,
        user: &UserRecord,
        answers: &[(String, String)],
    ) -> Result<FactorRecord, AuthError> {
        let cfg = self.cfg().security_questions.clone();
        if !cfg.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::SecurityQuestions));
        }
        let argon = self.cfg().password.argon2;
        let answers = answers.to_vec();
        let material = blocking(move || questions::enrol(&cfg, &argon, &answers))
            .await?
            .map_err(|e| match e {
                questions::QuestionsError::Hash(h) => AuthError::Internal(h.to_string()),
                other => AuthError::Rejected(other.to_string()),
            })?;
        for old in self.factors_of(user, FactorKind::SecurityQuestions).await? {
            self.durable().delete_factor(&old.id).await?;
            self.audit_removed(Actor::User, user, &old, "replaced")
                .await?;
        }
        let mut f = FactorRecord::new(&user.id, material.kind.as_str(), material.label.clone());
        f.data = material.data;
        self.durable().create_factor(&f).await?;
        self.audit_enrolled(Actor::User, user, &f).await?;
        Ok(f)
    }

    // ------------------------------------------------------------------ WebAuthn

    fn rp(&self) -> Result<&WebauthnFactor, AuthError> {
        self.inner
            .webauthn
            .as_ref()
            .ok_or(AuthError::FactorUnavailable(FactorKind::Webauthn))
    }

    async fn credentials_of(
        &self,
        user_id: &str,
    ) -> Result<(Vec<FactorRecord>, Vec<StoredCredential>), AuthError> {
        let mut records = Vec::new();
        let mut creds = Vec::new();
        for f in self.durable().list_factors(user_id).await? {
            if f.kind != FactorKind::Webauthn.as_str() {
                continue;
            }
            match serde_json::from_value::<StoredCredential>(f.data.clone()) {
                Ok(c) => {
                    creds.push(c);
                    records.push(f);
                }
                Err(e) => {
                    tracing::error!(factor = %f.id, error = %e, "unreadable WebAuthn credential")
                }
            }
        }
        Ok((records, creds))
    }

    /// Starts registering a passkey or security key. Returns the options for
    /// `navigator.credentials.create` and the state to keep server-side for the finish.
    pub async fn webauthn_register_start(
        &self,
        user: &UserRecord,
        kind: RegistrationKind,
    ) -> Result<(serde_json::Value, serde_json::Value), AuthError> {
        let rp = self.rp()?;
        let (_, existing) = self.credentials_of(&user.id).await?;
        let display = user.name.clone().unwrap_or_else(|| user.username.clone());
        let wu = WebauthnUser {
            id: user_handle(user),
            name: &user.username,
            display_name: &display,
        };
        let (ccr, state) = rp
            .start_registration(&wu, &existing, kind)
            .map_err(webauthn_err)?;
        let state = RegistrationEnvelope {
            user_id: user.id.clone(),
            state,
        };
        Ok((
            serde_json::to_value(&ccr).map_err(|e| AuthError::Internal(e.to_string()))?,
            serde_json::to_value(&state).map_err(|e| AuthError::Internal(e.to_string()))?,
        ))
    }

    /// Finishes a registration with the browser's response; stores the credential.
    pub async fn webauthn_register_finish(
        &self,
        user: &UserRecord,
        state: serde_json::Value,
        response: serde_json::Value,
        label: &str,
    ) -> Result<FactorRecord, AuthError> {
        let rp = self.rp()?;
        let env: RegistrationEnvelope = serde_json::from_value(state).map_err(json_err)?;
        if env.user_id != user.id {
            return Err(AuthError::Rejected(
                "this registration was started for another account".into(),
            ));
        }
        let response = serde_json::from_value(response).map_err(json_err)?;
        let label = match label.trim() {
            "" => "Passkey",
            l => l,
        };
        let material = rp
            .finish_registration(&response, &env.state, label)
            .map_err(|e| match e {
                WebauthnFailure::Ceremony(c) => {
                    AuthError::Rejected(format!("the authenticator's response was refused: {c}"))
                }
                other => webauthn_err(other),
            })?;
        let stored: StoredCredential = serde_json::from_value(material.data.clone())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut f = FactorRecord::new(&user.id, FactorKind::Webauthn.as_str(), material.label);
        f.lookup_key = Some(cred_lookup_key(stored.cred_id().as_ref()));
        f.data = material.data;
        self.durable()
            .create_factor(&f)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => {
                    AuthError::Rejected("this authenticator is already registered".into())
                }
                other => AuthError::Store(other),
            })?;
        self.audit(
            "factor.enrolled",
            Actor::User,
            user,
            Some(&f.id),
            serde_json::json!({
                "kind": f.kind,
                "label": f.label,
                "hardware_bound": stored.hardware_bound,
            }),
        )
        .await?;
        Ok(f)
    }

    /// Starts a WebAuthn step-up of `user` towards `req`: the ceremony offers exactly the
    /// credentials that can satisfy it — when it needs a hardware-bound authenticator
    /// (`hardware_bound`, or AAL3), only those proven hardware-bound at registration — so a
    /// user with a synced passkey and a security key is asked for the key. Passkeys are
    /// asked with user verification, security keys with touch (one ceremony per kind:
    /// passkeys when any qualifies, else security keys).
    pub async fn webauthn_step_up_start(
        &self,
        user: &UserRecord,
        req: &crate::assurance::StepUpRequirement,
    ) -> Result<(serde_json::Value, serde_json::Value), AuthError> {
        let rp = self.rp()?;
        let (_, creds) = self.credentials_of(&user.id).await?;
        let hardware = req.hardware_bound || req.min_aal.is_some_and(|a| a >= 3);
        let creds: Vec<StoredCredential> = creds
            .into_iter()
            .filter(|c| !hardware || c.hardware_bound)
            .collect();
        if creds.is_empty() {
            return Err(if hardware {
                AuthError::Rejected(
                    "none of your passkeys is a hardware security key; add one under Security settings".into(),
                )
            } else {
                AuthError::NotEnrolled(FactorKind::Webauthn)
            });
        }
        let any_passkey = creds
            .iter()
            .any(|c| !matches!(c.credential, WebauthnCredential::SecurityKey(_)));
        let (rcr, state) = if any_passkey {
            rp.start_passkey_authentication(&creds)
        } else {
            rp.start_security_key_authentication(&creds)
        }
        .map_err(webauthn_err)?;
        let env = AuthenticationEnvelope {
            user_id: Some(user.id.clone()),
            state,
        };
        Ok((
            serde_json::to_value(&rcr).map_err(|e| AuthError::Internal(e.to_string()))?,
            serde_json::to_value(&env).map_err(|e| AuthError::Internal(e.to_string()))?,
        ))
    }

    /// Starts a WebAuthn sign-in: with `Some(user)` against their credentials (passkeys if
    /// they have any, else security keys), with `None` passwordless (any discoverable
    /// credential). Returns the options for `navigator.credentials.get` and the state.
    pub async fn webauthn_auth_start(
        &self,
        user: Option<&UserRecord>,
    ) -> Result<(serde_json::Value, serde_json::Value), AuthError> {
        let rp = self.rp()?;
        let (rcr, state) = match user {
            None => rp.start_passwordless().map_err(webauthn_err)?,
            Some(u) => {
                let (_, creds) = self.credentials_of(&u.id).await?;
                if creds.is_empty() {
                    return Err(AuthError::NotEnrolled(FactorKind::Webauthn));
                }
                let any_passkey = creds
                    .iter()
                    .any(|c| !matches!(c.credential, WebauthnCredential::SecurityKey(_)));
                if any_passkey {
                    rp.start_passkey_authentication(&creds)
                } else {
                    rp.start_security_key_authentication(&creds)
                }
                .map_err(webauthn_err)?
            }
        };
        let env = AuthenticationEnvelope {
            user_id: user.map(|u| u.id.clone()),
            state,
        };
        Ok((
            serde_json::to_value(&rcr).map_err(|e| AuthError::Internal(e.to_string()))?,
            serde_json::to_value(&env).map_err(|e| AuthError::Internal(e.to_string()))?,
        ))
    }

    /// Finishes a WebAuthn sign-in; returns the user (found from the credential for a
    /// passwordless sign-in) and the passed factor (user verification and hardware binding
    /// recorded).
    pub async fn webauthn_auth_finish(
        &self,
        state: serde_json::Value,
        response: serde_json::Value,
        ip: Option<IpAddr>,
    ) -> Result<(UserRecord, PassedFactor), AuthError> {
        let rp = self.rp()?;
        let env: AuthenticationEnvelope = serde_json::from_value(state).map_err(json_err)?;
        let response: webauthn_rs::prelude::PublicKeyCredential =
            serde_json::from_value(response).map_err(json_err)?;
        let user_id = match env.user_id {
            Some(id) => id,
            None => {
                let key = cred_lookup_key(response.get_credential_id());
                let f = self
                    .durable()
                    .find_factor(FactorKind::Webauthn.as_str(), &key)
                    .await?
                    .ok_or(AuthError::InvalidCredentials)?;
                f.user_id
            }
        };
        let user = self
            .durable()
            .get_user(&user_id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if matches!(env.state, AuthenticationState::Discoverable(_)) {
            let handle = rp
                .identify_passwordless(&response)
                .map_err(|_| AuthError::InvalidCredentials)?;
            if handle != user_handle(&user) {
                return Err(AuthError::InvalidCredentials);
            }
        }
        let (records, mut creds) = self.credentials_of(&user.id).await?;
        let state = env.state;
        let passed = self
            .regulated(&user, ip, FactorKind::Webauthn, async {
                let a = rp
                    .finish_authentication(&response, state, &mut creds)
                    .map_err(webauthn_err)?;
                let mut f = records[a.index].clone();
                f.data = serde_json::to_value(&creds[a.index])
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                f.last_used_at = Some(now_ms());
                self.durable().update_factor(&f).await?;
                let mut p = PassedFactor::webauthn(
                    &self.inner.settings.assurance,
                    Utc::now(),
                    a.user_verified,
                    a.hardware_bound,
                );
                p.factor_id = Some(f.id.clone());
                Ok(p)
            })
            .await?;
        Ok((user, passed))
    }

    // ------------------------------------------------------------------ listing and removal

    async fn audit_removed(
        &self,
        actor: Actor<'_>,
        user: &UserRecord,
        f: &FactorRecord,
        reason: &str,
    ) -> Result<(), AuthError> {
        self.audit(
            "factor.removed",
            actor,
            user,
            Some(&f.id),
            serde_json::json!({ "kind": f.kind, "label": f.label, "reason": reason }),
        )
        .await
    }

    /// Removes one of the user's factors. A password declared in the configuration file
    /// cannot be removed here.
    pub async fn remove_factor(&self, user: &UserRecord, factor_id: &str) -> Result<(), AuthError> {
        let f = self
            .durable()
            .get_factor(factor_id)
            .await?
            .filter(|f| f.user_id == user.id)
            .ok_or_else(|| {
                AuthError::Rejected("that way to sign in is not on this account".into())
            })?;
        if Self::managed_by_config(&f) {
            return Err(AuthError::Rejected(
                "this password is managed in the configuration file".into(),
            ));
        }
        self.durable().delete_factor(&f.id).await?;
        self.forget_mfa(&user.id).await?;
        self.audit_removed(Actor::User, user, &f, "removed").await
    }

    /// Forgets the MFA every device remembers for the user ([`crate::mfa_memory`]): the
    /// next sign-in anywhere asks for it again.
    pub async fn forget_mfa(&self, user_id: &str) -> Result<(), AuthError> {
        crate::mfa_memory::forget(self.hot(), user_id, Utc::now()).await?;
        Ok(())
    }

    /// Removes all of a user's factors (administrators): the password too when
    /// `include_password`, except one managed by the configuration file. Also lifts bans and
    /// locks. How many were removed.
    pub async fn admin_reset_factors(
        &self,
        user: &UserRecord,
        include_password: bool,
        admin: &str,
    ) -> Result<usize, AuthError> {
        let mut n = 0;
        for f in self.durable().list_factors(&user.id).await? {
            if Self::managed_by_config(&f) || (f.kind == PASSWORD_FACTOR_KIND && !include_password)
            {
                continue;
            }
            self.durable().delete_factor(&f.id).await?;
            self.audit_removed(Actor::Admin(admin), user, &f, "reset")
                .await?;
            n += 1;
        }
        self.forget_mfa(&user.id).await?;
        self.unlock(user, admin).await?;
        Ok(n)
    }

    fn managed_by_config(f: &FactorRecord) -> bool {
        f.kind == PASSWORD_FACTOR_KIND
            && f.data.get("source").and_then(|v| v.as_str()) == Some("config")
    }

    /// The user's factors with what each proves on its own.
    pub async fn enrolled(&self, user: &UserRecord) -> Result<Vec<EnrolledInfo>, AuthError> {
        let cfg = &self.inner.settings.assurance;
        let mut out = Vec::new();
        for f in self.durable().list_factors(&user.id).await? {
            let Ok(kind) = f.kind.parse::<FactorKind>() else {
                continue;
            };
            let (mut hardware_bound, mut user_verifying, mut remaining) = (false, false, None);
            match kind {
                FactorKind::Webauthn => {
                    if let Ok(c) = serde_json::from_value::<StoredCredential>(f.data.clone()) {
                        hardware_bound = c.hardware_bound;
                        user_verifying =
                            !matches!(c.credential, WebauthnCredential::SecurityKey(_));
                    }
                }
                FactorKind::RecoveryCodes => {
                    remaining = serde_json::from_value::<RecoveryCodes>(f.data.clone())
                        .ok()
                        .map(|r| r.remaining());
                }
                _ => {}
            }
            let passed = if kind == FactorKind::Webauthn {
                PassedFactor::webauthn(cfg, f.created_at, user_verifying, hardware_bound)
            } else {
                PassedFactor::new(kind, cfg, f.created_at)
            };
            let a = assess_factors(std::slice::from_ref(&passed), cfg);
            out.push(EnrolledInfo {
                managed_by_config: Self::managed_by_config(&f),
                id: f.id,
                kind,
                label: f.label,
                created_at: f.created_at,
                last_used_at: f.last_used_at,
                hardware_bound,
                user_verifying,
                aal_alone: a.aal,
                phishing_resistant: a.phishing_resistant,
                amr: passed.amr,
                remaining_codes: remaining,
            });
        }
        Ok(out)
    }

    /// The enrolled factors as step-up candidates ([`crate::assurance::satisfies`]).
    pub fn enrolled_for_step_up(list: &[EnrolledInfo]) -> Vec<EnrolledFactor> {
        list.iter()
            .map(|i| EnrolledFactor {
                kind: i.kind,
                hardware_bound: i.hardware_bound,
                user_verifying: i.user_verifying,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking() {
        assert_eq!(mask_destination("jane@example.com"), "j***@example.com");
        assert_eq!(mask_destination("+15550101234"), "+*******1234");
    }

    #[test]
    fn otp_hash_binds_the_key() {
        assert_ne!(otp_hash("a", "123456"), otp_hash("b", "123456"));
        assert_eq!(otp_hash("a", " 123456 "), otp_hash("a", "123456"));
    }

    #[test]
    fn user_handle_is_the_hex_id_or_derived() {
        let mut u = UserRecord::new("jane");
        assert_eq!(user_handle(&u).simple().to_string(), u.id);
        u.id = "config-jane".into();
        assert_eq!(user_handle(&u), user_handle(&u));
    }

    #[test]
    fn public_messages_hide_internals() {
        let e = AuthError::Internal("db path /var/x".into());
        assert!(!e.public_message().contains("/var"));
        assert_eq!(
            AuthError::InvalidCredentials.public_message(),
            "the credentials are not valid"
        );
    }
}
