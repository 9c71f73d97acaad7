//! The factors a user has enrolled, as the self-service page and step-up prompts list
//! them ([`EnrolledInfo`]), and removing them (one, or all by an administrator).

use chrono::{DateTime, Utc};
use serde::Serialize;
use stepgate_store::{FactorRecord, UserRecord, PASSWORD_FACTOR_KIND};

use super::{Actor, AuthError, Authenticator};
use crate::assurance::{assess_factors, EnrolledFactor, PassedFactor};
use crate::factor::FactorKind;
use crate::recovery::RecoveryCodes;
use crate::webauthn::{StoredCredential, WebauthnCredential};

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

impl Authenticator {
    pub(super) async fn audit_removed(
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

    pub(super) fn managed_by_config(f: &FactorRecord) -> bool {
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
