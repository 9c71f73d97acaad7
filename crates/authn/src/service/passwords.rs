//! Passwords: verifying a name and password in constant time whether or not the user
//! exists, and setting one (by the user, with the old one, or by an administrator) against
//! the configured rules and the breached-password list.

use std::net::IpAddr;

use stepgate_store::{now_ms, FactorRecord, UserRecord, UserSource, PASSWORD_FACTOR_KIND};
use zeroize::Zeroizing;

use super::{blocking, Actor, AuthError, Authenticator};
use crate::assurance::PassedFactor;
use crate::factor::FactorKind;
use crate::password::{self};

impl Authenticator {
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

    pub(super) async fn verify_password_unobserved(
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

    pub(super) async fn set_password_as(
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
}
