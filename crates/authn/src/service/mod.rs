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

use std::path::Path;
use std::sync::Arc;

use crate::assurance::{AssuranceConfig, PassedFactor};
use crate::config::{EmailTransportConfig, FactorsConfig, RegulationConfig, SmsTransportConfig};
use crate::factor::FactorKind;
use crate::otp::{EmailSender, SmsSender};
use crate::password::{self, BreachedList};
use crate::webauthn::WebauthnFactor;
use chrono::Utc;
use sha2::{Digest, Sha256};
use stepgate_store::{
    factor_context, DurableStore, FactorRecord, HotStore, NewAuditEvent, SecretKey, UserRecord,
};
use uuid::Uuid;
use zeroize::Zeroizing;

mod enrolled_factors;
mod enrolment_link;
mod lockout;
mod outcome;
mod passkeys;
mod passwords;
mod recovery_codes;
mod security_questions;
mod sent_codes;
mod totp_codes;

pub use enrolled_factors::EnrolledInfo;
pub use enrolment_link::{IssuedLink, LinkPurpose, OpenLink, ENROLMENT_LINK_KIND, MAX_LINK_TTL};
pub use outcome::{AuthError, AuthnObserver, VerifyResult};
pub use sent_codes::mask_destination;
pub use totp_codes::{PendingTotp, PENDING_TOTP_TTL};

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
}
