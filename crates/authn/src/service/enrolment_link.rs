//! Enrolment links: the single-use, expiring links an administrator issues so that a user
//! can set a password and enrol factors the first time (an invitation), or set a new
//! password after losing the old one (a reset link).
//!
//! The link's secret (256 random bits) is shown once, to the administrator or in an
//! e-mail; the store keeps only its SHA-256, as a record of kind [`ENROLMENT_LINK_KIND`]
//! beside the user's factors (found by that hash; never listed as a factor). Opening the
//! link ([`Authenticator::open_link`]) only reads it, so that mail scanners that follow
//! links do not use it up; redeeming it ([`Authenticator::redeem_link`]) deletes the record,
//! and only the one request whose delete succeeds goes on: a link works once, even under
//! concurrent use. A new link of the same purpose voids the user's earlier ones.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use stepgate_store::{FactorRecord, UserRecord, PASSWORD_FACTOR_KIND};
use zeroize::Zeroizing;

use super::{sha256_hex, Actor, AuthError, Authenticator};
use crate::assurance::PassedFactor;
use crate::factor::FactorKind;
use crate::password;

/// The store kind of an enrolment link's record.
pub const ENROLMENT_LINK_KIND: &str = "enrolment_link";

/// The longest an enrolment link may stay valid.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a link lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPurpose {
    /// Set a first password and enrol a second factor.
    Invitation,
    /// Set a new password (the other factors stay).
    PasswordReset,
}

impl LinkPurpose {
    /// `invitation`, `password_reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Invitation => "invitation",
            LinkPurpose::PasswordReset => "password_reset",
        }
    }
}

/// A link just issued: its secret (shown once) and when it expires.
pub struct IssuedLink {
    /// The secret the URL carries.
    pub token: Zeroizing<String>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The record's id (for the audit log; not a secret).
    pub id: String,
}

/// A valid, unused link: whose it is and until when.
#[derive(Debug)]
pub struct OpenLink {
    /// The user it was issued for.
    pub user: UserRecord,
    /// Its purpose.
    pub purpose: LinkPurpose,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    id: String,
}

#[derive(Serialize, Deserialize)]
struct LinkData {
    purpose: LinkPurpose,
    expires_at: DateTime<Utc>,
    issued_by: String,
}

/// The stored hash of a link's secret (domain-separated from every other hash).
fn link_hash(token: &str) -> String {
    sha256_hex(&[b"stepgate/enrolment-link/v1", token.trim().as_bytes()])
}

impl Authenticator {
    /// Issues a link of `purpose` for `user`, valid for `ttl` (at most [`MAX_LINK_TTL`]),
    /// voiding the user's earlier links of the same purpose; audited as `link.issued` by
    /// `admin:<admin>`, or by the user (`admin: None`: a reset the user earned with a
    /// recovery path, such as a recovery code).
    pub async fn issue_link(
        &self,
        user: &UserRecord,
        purpose: LinkPurpose,
        ttl: Duration,
        admin: Option<&str>,
    ) -> Result<IssuedLink, AuthError> {
        let actor = match admin {
            Some(a) => Actor::Admin(a),
            None => Actor::User,
        };
        if ttl.is_zero() || ttl > MAX_LINK_TTL {
            return Err(AuthError::Rejected(format!(
                "a link must be valid for between 1 second and {} days",
                MAX_LINK_TTL.as_secs() / 86_400
            )));
        }
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        if !self.cfg().password.enabled {
            return Err(AuthError::FactorUnavailable(FactorKind::Password));
        }
        for old in self.links_of(user, purpose).await? {
            self.durable().delete_factor(&old.id).await?;
        }
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let token = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let expires_at = Utc::now()
            + chrono::Duration::from_std(ttl).map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut f = FactorRecord::new(&user.id, ENROLMENT_LINK_KIND, purpose.as_str());
        f.lookup_key = Some(link_hash(&token));
        f.data = serde_json::to_value(LinkData {
            purpose,
            expires_at,
            issued_by: actor.name(user),
        })
        .map_err(|e| AuthError::Internal(e.to_string()))?;
        self.durable().create_factor(&f).await?;
        self.audit(
            "link.issued",
            actor,
            user,
            Some(&f.id),
            serde_json::json!({ "purpose": purpose.as_str(), "expires_at": expires_at }),
        )
        .await?;
        Ok(IssuedLink {
            token,
            expires_at,
            id: f.id,
        })
    }

    async fn links_of(
        &self,
        user: &UserRecord,
        purpose: LinkPurpose,
    ) -> Result<Vec<FactorRecord>, AuthError> {
        Ok(self
            .durable()
            .list_factors(&user.id)
            .await?
            .into_iter()
            .filter(|f| {
                f.kind == ENROLMENT_LINK_KIND
                    && serde_json::from_value::<LinkData>(f.data.clone())
                        .is_ok_and(|d| d.purpose == purpose)
            })
            .collect())
    }

    /// The link `token` names, if it is one of `purpose`, unused, unexpired and its user
    /// enabled; it stays usable. An expired link is deleted. Every refusal is
    /// [`AuthError::Expired`] ("expired or already used"): the page cannot tell a guess
    /// from a used link, and needs not.
    pub async fn open_link(
        &self,
        token: &str,
        purpose: LinkPurpose,
    ) -> Result<OpenLink, AuthError> {
        if token.is_empty() || token.len() > 128 {
            return Err(AuthError::Expired);
        }
        let Some(f) = self
            .durable()
            .find_factor(ENROLMENT_LINK_KIND, &link_hash(token))
            .await?
        else {
            return Err(AuthError::Expired);
        };
        let data: LinkData = serde_json::from_value(f.data.clone())
            .map_err(|e| AuthError::Internal(format!("enrolment link {}: {e}", f.id)))?;
        if data.purpose != purpose {
            return Err(AuthError::Expired);
        }
        if data.expires_at <= Utc::now() {
            self.durable().delete_factor(&f.id).await?;
            return Err(AuthError::Expired);
        }
        let user = match self.durable().get_user(&f.user_id).await? {
            Some(u) if u.disabled => return Err(AuthError::Disabled),
            Some(u) => u,
            None => return Err(AuthError::Expired),
        };
        Ok(OpenLink {
            user,
            purpose,
            expires_at: data.expires_at,
            id: f.id,
        })
    }

    /// Uses the link `token` to set the user's password (the NIST SP 800-63B rules apply,
    /// checked before the link is used up, so a rejected password leaves it usable): the
    /// link is consumed at once and for good, the password set (audited), the link's use
    /// audited as `link.redeemed`. Returns the user and the password as a factor just
    /// passed (the sign-in the link starts).
    pub async fn redeem_link(
        &self,
        token: &str,
        purpose: LinkPurpose,
        new_password: &str,
        ip: Option<IpAddr>,
    ) -> Result<(UserRecord, PassedFactor), AuthError> {
        let link = self.open_link(token, purpose).await?;
        let user = link.user;
        let cfg = self.cfg().password.clone();
        password::check_new_password(&cfg, &self.inner.breached, &user.username, new_password)
            .map_err(|r| AuthError::Rejected(r.to_string()))?;
        // The one redeeming request: whoever deletes the record.
        if !self.durable().delete_factor(&link.id).await? {
            return Err(AuthError::Expired);
        }
        self.set_password_as(&user, new_password, Actor::User)
            .await?;
        self.audit(
            "link.redeemed",
            Actor::User,
            &user,
            Some(&link.id),
            serde_json::json!({ "purpose": purpose.as_str(), "ip": ip.map(|i| i.to_string()) }),
        )
        .await?;
        let id = self
            .durable()
            .list_factors(&user.id)
            .await?
            .into_iter()
            .find(|f| f.kind == PASSWORD_FACTOR_KIND)
            .map(|f| f.id)
            .ok_or_else(|| AuthError::Internal("the password just set is gone".into()))?;
        Ok((user, self.passed(FactorKind::Password, &id)))
    }

    /// Whether links can be e-mailed (`factors.email_otp` is enabled with a transport).
    pub fn can_email(&self) -> bool {
        self.inner.email.is_some()
    }

    /// E-mails `body` to `to` through the e-mail OTP transport; `Ok(false)` when none is
    /// configured.
    pub async fn send_email(&self, to: &str, subject: &str, body: &str) -> Result<bool, AuthError> {
        match &self.inner.email {
            Some(sender) => {
                sender.send(to, subject, body).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_domain_separated_and_trims() {
        assert_eq!(link_hash("abc"), link_hash(" abc\n"));
        assert_ne!(link_hash("abc"), link_hash("abd"));
        assert_ne!(link_hash("abc"), sha256_hex(&[b"abc"]));
    }
}
