//! Recovery codes: redeeming one (guarded against two nodes taking the same code) and
//! generating a fresh set.

use std::net::IpAddr;
use std::time::Duration;

use stepgate_store::{now_ms, FactorRecord, UserRecord};
use zeroize::Zeroizing;

use super::{blocking, Actor, AuthError, Authenticator};
use crate::assurance::PassedFactor;
use crate::factor::FactorKind;
use crate::recovery::{self, RecoveryCodes};

/// How long a redeemed recovery code's replay guard is kept (the durable update that marks
/// it used lands within milliseconds; this only closes the race between two nodes).
pub(super) const RECOVERY_GUARD_TTL: Duration = Duration::from_secs(24 * 3600);

impl Authenticator {
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
}
