//! One-time codes sent by e-mail or SMS: issuing one (send limits, hashed in the hot
//! store), checking it (single use, bounded guesses), and enrolling an address or number
//! by proving a code sent to it.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use stepgate_store::{now_ms, FactorRecord, OtpCheck, UserRecord};
use zeroize::Zeroizing;

use super::{sha256_hex, Actor, AuthError, Authenticator};
use crate::assurance::PassedFactor;
use crate::factor::FactorKind;
use crate::otp::{self, DeliveryError};
use crate::regulation;

/// The hash the hot store keeps for a one-time code. SHA-256 (not argon2) is fine here only
/// because a 6–10 digit code lives for minutes and allows `max_guesses` checks before it is
/// discarded: whoever could read the hot store could brute-force 10^6 codes offline, but the
/// code is worthless by the time they do and useless on any other key (the key is hashed in).
pub(super) fn otp_hash(key: &str, code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"stepgate/otp/v1\0");
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(code.trim().as_bytes());
    h.finalize().to_vec()
}

pub(super) fn otp_kind_check(kind: FactorKind) -> Result<(), AuthError> {
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

impl Authenticator {
    pub(super) fn channel_enabled(&self, kind: FactorKind) -> Result<(), AuthError> {
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
    pub(super) async fn issue_code(
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
    pub(super) async fn check_code(&self, key: &str, code: &str) -> Result<(), AuthError> {
        match self.hot().check_otp(key, &otp_hash(key, code)).await? {
            OtpCheck::Valid => Ok(()),
            OtpCheck::Invalid { attempts_left: 0 } => Err(AuthError::TooManyGuesses),
            OtpCheck::Invalid { .. } => Err(AuthError::InvalidCredentials),
            OtpCheck::Missing => Err(AuthError::Expired),
        }
    }

    pub(super) fn destination_of(f: &FactorRecord) -> Option<String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn masking() {
        assert_eq!(mask_destination("jane@example.com"), "j***@example.com");
        assert_eq!(mask_destination("+15550101234"), "+*******1234");
    }

    #[test]
    pub(super) fn otp_hash_binds_the_key() {
        assert_ne!(otp_hash("a", "123456"), otp_hash("b", "123456"));
        assert_eq!(otp_hash("a", " 123456 "), otp_hash("a", "123456"));
    }
}
