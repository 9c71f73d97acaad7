//! TOTP: verifying a code (each time step claimed once across nodes) and enrolling an
//! authenticator app in two halves, the pending seed sealed into a [`PendingTotp`] token.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use stepgate_store::{now_ms, FactorRecord, SealedSecret, UserRecord};
use zeroize::Zeroizing;

use super::{sha256_hex, Actor, AuthError, Authenticator};
use crate::assurance::PassedFactor;
use crate::factor::FactorKind;
use crate::totp::{self, TotpData, TotpReject};

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

impl Authenticator {
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

    pub(super) fn pending_totp_context(user: &UserRecord) -> String {
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

    pub(super) async fn audit_enrolled(
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
}
