//! The session model: who signed in, with which factors and when, bound to which device.
//!
//! A session records the factors passed (with their times), from which the assurance level,
//! `amr` and `auth_time` are computed ([`crate::assurance`]). Where it is kept (the hot
//! store, behind an opaque id in a cookie), how long it lives and when its id is replaced
//! are the server's business; this module is the data and its bookkeeping only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::assurance::{
    aal_of, assess_factors, Assurance, AssuranceConfig, AuthState, PassedFactor,
};

/// At most this many factors are kept: a session passes a handful; older ones cannot
/// matter once newer ones of the same kind exist.
pub const MAX_FACTORS: usize = 16;

/// What a session holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionData {
    /// The user's store id.
    pub user_id: String,
    /// Username, for display and identity headers.
    pub username: String,
    /// Factors passed, in order, with their times.
    pub factors: Vec<PassedFactor>,
    /// When the session was created (the first factor).
    pub created_at: DateTime<Utc>,
    /// Last request seen.
    pub last_seen: DateTime<Utc>,
    /// The device the session is tied to.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Persistent cookie ("keep me signed in").
    #[serde(default)]
    pub persistent: bool,
    /// Client address at sign-in (shown on the sessions page).
    #[serde(default)]
    pub ip: Option<String>,
    /// User agent at sign-in (shown on the sessions page).
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The sign-in is not complete: the sign-in policy still requires more factors.
    #[serde(default)]
    pub pending: bool,
    /// A signal (CAEP, admin) demands a fresh step-up before the next request.
    #[serde(default)]
    pub needs_step_up: bool,
    /// The upstream identity provider the session signed in through, if any: what
    /// signing out there (RP-initiated logout) and the provider's back-channel logout need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSignIn>,
}

/// A sign-in through an upstream OpenID Provider, as its session remembers it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSignIn {
    /// The provider's id (`identity_providers[].id`).
    pub provider: String,
    /// The subject at the provider.
    pub sub: String,
    /// The provider's session id (the ID token's `sid`), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The ID token it issued, sent back as `id_token_hint` when signing out there (kept
    /// only when the provider's `sign_out_upstream` is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The provider's refresh token, sealed under the secrets key (kept only when the
    /// provider's `refresh_interval` is set): redeemed to re-check the user there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
    /// When the user was last confirmed at the provider (s since the epoch).
    #[serde(default)]
    pub checked_at: i64,
}

impl SessionData {
    /// A new session after the first factor.
    pub fn new(user_id: &str, username: &str, first: PassedFactor, now: DateTime<Utc>) -> Self {
        SessionData {
            factors: vec![first],
            ..SessionData::new_empty(user_id, username, now)
        }
    }

    /// A user stated to be signed in, with no factor passed (`stepgate what-if`): AAL 0.
    pub fn stated(user_id: &str, username: &str, now: DateTime<Utc>) -> Self {
        SessionData::new_empty(user_id, username, now)
    }

    fn new_empty(user_id: &str, username: &str, now: DateTime<Utc>) -> Self {
        SessionData {
            user_id: user_id.into(),
            username: username.into(),
            factors: Vec::new(),
            created_at: now,
            last_seen: now,
            device_id: None,
            persistent: false,
            ip: None,
            user_agent: None,
            pending: false,
            needs_step_up: false,
            upstream: None,
        }
    }

    /// The factors as the assurance module wants them.
    pub fn auth_state(&self) -> AuthState {
        AuthState {
            factors: self.factors.clone(),
        }
    }

    /// AAL, amr, auth_time.
    pub fn assurance(&self, cfg: &AssuranceConfig) -> Assurance {
        assess_factors(&self.factors, cfg)
    }

    /// The AAL alone (what the lifetime limits depend on).
    pub fn aal(&self, cfg: &AssuranceConfig) -> u8 {
        aal_of(&self.factors, cfg)
    }

    /// Records a factor just passed, keeping the [`MAX_FACTORS`] latest.
    pub fn add_factor(&mut self, f: PassedFactor) {
        self.factors.push(f);
        if self.factors.len() > MAX_FACTORS {
            self.factors.remove(0);
        }
    }
}

/// A loaded session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The id (the cookie value).
    pub id: String,
    /// The state, shared with the node's session cache (change it with `Arc::make_mut`).
    pub data: Arc<SessionData>,
}

impl Session {
    /// A session that is not (yet) stored: the one a sign-in would create, a bearer
    /// token's stand-in. Its id is empty, which no cookie can name.
    pub fn unsaved(data: SessionData) -> Self {
        Session {
            id: String::new(),
            data: Arc::new(data),
        }
    }
}

/// Why a session id did not give a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// Unknown id (never existed, logged out, or purged).
    Unknown,
    /// Past its absolute lifetime.
    Expired,
    /// Idle for too long.
    Idle,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FactorKind;

    #[test]
    fn only_the_latest_factors_are_kept() {
        let cfg = AssuranceConfig::default();
        let t = Utc::now();
        let mut d = SessionData::new(
            "u",
            "jane",
            PassedFactor::new(FactorKind::Password, &cfg, t),
            t,
        );
        for _ in 0..MAX_FACTORS {
            d.add_factor(PassedFactor::new(FactorKind::Totp, &cfg, t));
        }
        assert_eq!(d.factors.len(), MAX_FACTORS);
        assert!(d.factors.iter().all(|f| f.kind == FactorKind::Totp));
        assert_eq!(d.aal(&cfg), 1, "a second factor alone is not two factors");
    }
}
