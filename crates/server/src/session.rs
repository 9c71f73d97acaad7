//! Server-side sessions: an opaque random id in a cookie, the state in the hot store.
//!
//! A session records the factors passed (with their times), from which the assurance level,
//! `amr` and `auth_time` are computed; its absolute lifetime and idle timeout come from the
//! global session policy tightened by the level reached (NIST SP 800-63B defaults). The id
//! is replaced on every sign-in and step-up, so an id seen before authentication is
//! worthless after it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_authn::{assess_factors, Assurance, AssuranceConfig, AuthState, PassedFactor};
use stepgate_config::SessionsConfig;
use stepgate_store::{HotStore, StoreResult};

use crate::security::Signer;

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
}

impl SessionData {
    /// A new session after the first factor.
    pub fn new(user_id: &str, username: &str, first: PassedFactor, now: DateTime<Utc>) -> Self {
        SessionData {
            user_id: user_id.into(),
            username: username.into(),
            factors: vec![first],
            created_at: now,
            last_seen: now,
            device_id: None,
            persistent: false,
            ip: None,
            user_agent: None,
            pending: false,
            needs_step_up: false,
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
        stepgate_authn::aal_of(&self.factors, cfg)
    }

    /// Records a factor just passed. Factors older than a day beyond the longest lifetime
    /// cannot matter and are dropped to keep the record small.
    pub fn add_factor(&mut self, f: PassedFactor) {
        self.factors.push(f);
        if self.factors.len() > 16 {
            self.factors.remove(0);
        }
    }
}

/// A loaded session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The id (the cookie value).
    pub id: String,
    /// The state, shared with the session cache (change it with `Arc::make_mut`).
    pub data: Arc<SessionData>,
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

/// The session lifetimes in force for a session's level.
pub fn limits(cfg: &SessionsConfig, aal: u8) -> (Duration, Option<Duration>) {
    let (life, idle) = cfg.limits(aal.max(1));
    (life.0, idle.map(|d| d.0))
}

fn ttl_for(
    data: &SessionData,
    cfg: &SessionsConfig,
    acfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> Duration {
    let aal = data.aal(acfg);
    let (life, idle) = limits(cfg, aal);
    let end = data.created_at + chrono::Duration::from_std(life).unwrap_or(chrono::Duration::MAX);
    let remaining = (end - now).to_std().unwrap_or(Duration::ZERO);
    match idle {
        Some(i) => remaining.min(i),
        None => remaining,
    }
    .max(Duration::from_secs(1))
}

/// Loads a session, enforcing the absolute lifetime and idle timeout for its level, and
/// records the activity. The record comes through the node's read cache (`cache`, see
/// [`crate::cache`]); the lifetime and idle checks use the record's own times, so they are
/// exact whether it was cached or not. Writes go to `hot` (the cached store), which drops
/// the cached record.
pub async fn load(
    hot: &dyn HotStore,
    cache: &crate::cache::Caches,
    id: &str,
    cfg: &SessionsConfig,
    acfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> StoreResult<Result<Session, SessionEnd>> {
    let mut s = match check(hot, cache, id, cfg, acfg, now).await? {
        Ok(s) => s,
        Err(end) => return Ok(Err(end)),
    };
    // Writing on every request would make the store the bottleneck; a few seconds of
    // idle-time slack is harmless.
    if now - s.data.last_seen > chrono::Duration::seconds(5) {
        Arc::make_mut(&mut s.data).last_seen = now;
        if !save(hot, &s, cfg, acfg, now).await? {
            // Ended (signed out, revoked) since it was read: it stays ended.
            return Ok(Err(SessionEnd::Unknown));
        }
    }
    Ok(Ok(s))
}

/// [`load`] without recording activity: whether the session still stands (an open
/// WebSocket is checked this way; it is not the user's activity, so it does not keep the
/// session from idling out).
pub async fn check(
    hot: &dyn HotStore,
    cache: &crate::cache::Caches,
    id: &str,
    cfg: &SessionsConfig,
    acfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> StoreResult<Result<Session, SessionEnd>> {
    // Callers check the id's MAC first (`web::current_session`).
    let Some(slot) = cache.session(id, true).await? else {
        return Ok(Err(SessionEnd::Unknown));
    };
    let Some(data) = slot.data() else {
        // A record this build cannot read is not trusted.
        hot.delete_session(id).await?;
        return Ok(Err(SessionEnd::Unknown));
    };
    let aal = data.aal(acfg);
    let (life, idle) = limits(cfg, aal);
    if now - data.created_at > chrono::Duration::from_std(life).unwrap_or(chrono::Duration::MAX) {
        hot.delete_session(id).await?;
        return Ok(Err(SessionEnd::Expired));
    }
    if let Some(idle) = idle {
        if now - data.last_seen > chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::MAX)
        {
            hot.delete_session(id).await?;
            return Ok(Err(SessionEnd::Idle));
        }
    }
    Ok(Ok(Session {
        id: id.to_string(),
        data: data.clone(),
    }))
}

/// Stores the session under a brand-new id (sign-in, step-up), deleting `old` if given.
/// The id carries a MAC ([`Signer::session_id`]), so an id stepgate never issued is
/// refused without asking the store.
pub async fn save_new(
    hot: &dyn HotStore,
    signer: &Signer,
    old: Option<&str>,
    data: SessionData,
    cfg: &SessionsConfig,
    acfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> StoreResult<Session> {
    if let Some(old) = old {
        hot.delete_session(old).await?;
    }
    let id = signer.session_id();
    hot.put_session(
        &id,
        &data.user_id,
        &serde_json::to_value(&data).unwrap_or_default(),
        ttl_for(&data, cfg, acfg, now),
    )
    .await?;
    Ok(Session {
        id,
        data: Arc::new(data),
    })
}

/// Rewrites a live session's state under the same id. Whether it was still live: a
/// session ended since it was read (signed out, revoked) stays ended.
pub async fn save(
    hot: &dyn HotStore,
    s: &Session,
    cfg: &SessionsConfig,
    acfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    hot.update_session(
        &s.id,
        &serde_json::to_value(&s.data).unwrap_or_default(),
        ttl_for(&s.data, cfg, acfg, now),
    )
    .await
}
