//! The session service: the session a request's cookie names, loaded, checked against its
//! lifetime and idle limits, kept up to date, and rotated to a new id whenever a factor is
//! passed.
//!
//! The model (factors passed, device, flags) is [`stepgate_authn::session`]; this room keeps
//! it in the hot store behind an opaque id ([`crate::app::signer::Signer::session_id`]: a
//! random part and a MAC, so a made-up id is refused without a store read), through the
//! node's read cache ([`cache`]). The absolute lifetime and idle timeout come from
//! `sessions:` tightened by the level the session reached (NIST SP 800-63B defaults). The
//! id is replaced on every sign-in and step-up, so an id seen before authentication is
//! worthless after it.
//!
//! What does not belong here: deciding whether a session may do something (that is
//! [`crate::access`]) or rendering pages.

pub mod cache;
pub mod cookies;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
pub use stepgate_authn::session::{Session, SessionData, SessionEnd};
use stepgate_store::{HotStore, SessionWrite, StoreResult};

use crate::app::signer::Signer;
use crate::app::state::Runtime;
use cache::{Caches, SessionSlot};
use cookies::CookieSource;

/// The session lifetimes in force for a session's level.
pub fn limits(cfg: &stepgate_config::SessionsConfig, aal: u8) -> (Duration, Option<Duration>) {
    let (life, idle) = cfg.limits(aal.max(1));
    (life.0, idle.map(|d| d.0))
}

/// Told of each session ended through [`Sessions::end`] or [`Sessions::end_all`] (a
/// sign-out, a revoke, a CAEP or posture deny), with its last state, before the session is
/// deleted: the OpenID Provider marks the session's access tokens dead (awaited: a failure
/// fails the sign-out, which can be retried, rather than leaving live tokens) and starts
/// its back-channel logouts.
pub type EndListener = Box<
    dyn Fn(
            &SessionData,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<()>> + Send>>
        + Send
        + Sync,
>;

/// Loads, checks, saves and rotates sessions (see the module documentation).
pub struct Sessions {
    hot: Arc<dyn HotStore>,
    cache: Arc<Caches>,
    signer: Signer,
    ended: std::sync::OnceLock<EndListener>,
}

impl Sessions {
    /// The service over the (cached) hot store.
    pub fn new(hot: Arc<dyn HotStore>, cache: Arc<Caches>, signer: Signer) -> Self {
        Sessions {
            hot,
            cache,
            signer,
            ended: std::sync::OnceLock::new(),
        }
    }

    /// Tells `listener` of every session ended from now on (set once).
    pub fn on_end(&self, listener: EndListener) {
        let _ = self.ended.set(listener);
    }

    /// The session the request's cookie names, if it is live; its activity is recorded. A
    /// store failure is an error, so the caller can fail closed.
    pub async fn current(
        &self,
        rt: &Runtime,
        cookies: &(dyn CookieSource + Sync),
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Session>> {
        let Some(id) = cookies.cookie(&rt.session_cookie) else {
            return Ok(None);
        };
        // An id stepgate did not issue (its MAC does not verify) is refused before the store
        // is asked. Only checked ids are ever cached, so a cached one needs no second check.
        if id.is_empty() || id.len() > 128 {
            return Ok(None);
        }
        // The cache is looked at once: its entry both vouches for the id and is the record.
        let cached = self.cache.session_cached(id, now);
        if cached.is_none() && !self.signer.session_id_ok(id) {
            return Ok(None);
        }
        Ok(self.load(rt, id, now, cached).await?.ok())
    }

    /// Loads a session, enforcing the absolute lifetime and idle timeout for its level, and
    /// records the activity. The record comes through the node's read cache; the lifetime
    /// and idle checks use the record's own times, so they are exact whether it was cached
    /// or not. Writes go to the hot store, which drops the cached record.
    ///
    /// The activity stamp is written only over the state this node read
    /// ([`HotStore::replace_session`]): when another node changed the session in between (a
    /// CAEP mark, a device binding) and this node has not heard yet, the stamp is refused,
    /// the session read again, and the request judged on the state that now stands, so the
    /// other node's change is neither overwritten nor missed.
    ///
    /// `cached`: the cache's entry for `id`, when the caller has already looked it up.
    async fn load(
        &self,
        rt: &Runtime,
        id: &str,
        now: DateTime<Utc>,
        mut cached: Option<Option<Arc<SessionSlot>>>,
    ) -> StoreResult<Result<Session, SessionEnd>> {
        let mut attempt = 0;
        loop {
            let slot = match cached.take() {
                Some(slot) => slot,
                None => self.cache.session(id, true, now).await?,
            };
            let (read, slot) = match self.check_read(rt, id, slot, now).await? {
                Ok(s) => s,
                Err(end) => return Ok(Err(end)),
            };
            // Writing on every request would make the store the bottleneck; a few seconds of
            // idle-time slack is harmless.
            if now - read.data.last_seen <= chrono::Duration::seconds(5) {
                return Ok(Ok(read));
            }
            let mut s = read.clone();
            Arc::make_mut(&mut s.data).last_seen = now;
            let write = self
                .hot
                .replace_session(
                    id,
                    &slot.entry.data,
                    &serde_json::to_value(&s.data).unwrap_or_default(),
                    ttl_for(rt, &s.data, now),
                )
                .await?;
            match write {
                SessionWrite::Written => return Ok(Ok(s)),
                // Ended (signed out, revoked) since it was read: it stays ended.
                SessionWrite::Gone => return Ok(Err(SessionEnd::Unknown)),
                // Changed by someone else since it was read: the write dropped the cached
                // copy, so the next read is the store's.
                SessionWrite::Changed if attempt == 0 => attempt += 1,
                // Still changing under us: the state just read from the store stands, and
                // the next request records the activity.
                SessionWrite::Changed => return Ok(Ok(read)),
            }
        }
    }

    /// [`Sessions::load`] without recording activity: whether the session still stands (an
    /// open WebSocket is checked this way; it is not the user's activity, so it does not keep
    /// the session from idling out).
    pub async fn check(
        &self,
        rt: &Runtime,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<Session, SessionEnd>> {
        let slot = self.cache.session(id, true, now).await?;
        Ok(self.check_read(rt, id, slot, now).await?.map(|(s, _)| s))
    }

    /// Whether the session read as `slot` (through the cache) still stands, with the cached
    /// record it was read from (its state as the store keeps it, for a conditional write).
    async fn check_read(
        &self,
        rt: &Runtime,
        id: &str,
        slot: Option<Arc<SessionSlot>>,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<(Session, Arc<SessionSlot>), SessionEnd>> {
        let Some(slot) = slot else {
            return Ok(Err(SessionEnd::Unknown));
        };
        let Some(data) = slot.data() else {
            // A record this build cannot read is not trusted.
            self.hot.delete_session(id).await?;
            return Ok(Err(SessionEnd::Unknown));
        };
        let aal = assurance(rt, data).aal;
        let (life, idle) = limits(&rt.config.sessions, aal);
        let forever = chrono::Duration::MAX;
        if now - data.created_at > chrono::Duration::from_std(life).unwrap_or(forever) {
            self.hot.delete_session(id).await?;
            return Ok(Err(SessionEnd::Expired));
        }
        if let Some(idle) = idle {
            if now - data.last_seen > chrono::Duration::from_std(idle).unwrap_or(forever) {
                self.hot.delete_session(id).await?;
                return Ok(Err(SessionEnd::Idle));
            }
        }
        let session = Session {
            id: id.to_string(),
            data: data.clone(),
        };
        Ok(Ok((session, slot)))
    }

    /// Stores `data` under a brand-new id (sign-in, step-up), deleting `old` if given.
    pub async fn rotate(
        &self,
        rt: &Runtime,
        old: Option<&str>,
        data: SessionData,
        now: DateTime<Utc>,
    ) -> StoreResult<Session> {
        if let Some(old) = old {
            self.hot.delete_session(old).await?;
        }
        let id = self.signer.session_id();
        self.hot
            .put_session(
                &id,
                &data.user_id,
                &serde_json::to_value(&data).unwrap_or_default(),
                ttl_for(rt, &data, now),
            )
            .await?;
        Ok(Session {
            id,
            data: Arc::new(data),
        })
    }

    /// Changes a live session's state under the same id: `change` edits the state as the
    /// store holds it and says whether it changed anything, and the result is written only
    /// over that state ([`HotStore::replace_session`]). When someone else wrote in between
    /// (another node stamping activity, another event), the state is read again and `change`
    /// runs again on it, so no write is lost. The session as it now stands, or `None` when
    /// it is gone (signed out, revoked, expired): a session ended since it was read stays
    /// ended.
    pub async fn modify(
        &self,
        rt: &Runtime,
        id: &str,
        now: DateTime<Utc>,
        mut change: impl FnMut(&mut SessionData) -> bool,
    ) -> StoreResult<Option<Session>> {
        // Each retry follows a write that landed between this read and this write; a
        // session written to this often is refused rather than spun on.
        for _ in 0..8 {
            let Some(entry) = self.hot.get_session(id).await? else {
                return Ok(None);
            };
            let Ok(mut data) = serde_json::from_value::<SessionData>(entry.data.clone()) else {
                // A record this build cannot read is not trusted.
                self.hot.delete_session(id).await?;
                return Ok(None);
            };
            if !change(&mut data) {
                return Ok(Some(Session {
                    id: id.to_string(),
                    data: Arc::new(data),
                }));
            }
            let write = self
                .hot
                .replace_session(
                    id,
                    &entry.data,
                    &serde_json::to_value(&data).unwrap_or_default(),
                    ttl_for(rt, &data, now),
                )
                .await?;
            match write {
                SessionWrite::Written => {
                    return Ok(Some(Session {
                        id: id.to_string(),
                        data: Arc::new(data),
                    }))
                }
                SessionWrite::Gone => return Ok(None),
                SessionWrite::Changed => {}
            }
        }
        Err(stepgate_store::StoreError::Unavailable(format!(
            "session {}… kept changing while it was being updated",
            id.get(..8).unwrap_or(id)
        )))
    }

    /// A stored session's state as it is now, not through the cache and without any limit
    /// checked (the CAEP receiver and the sessions page read the user's other sessions).
    pub async fn peek(&self, id: &str) -> StoreResult<Option<(String, SessionData)>> {
        Ok(self.hot.get_session(id).await?.and_then(|e| {
            serde_json::from_value::<SessionData>(e.data)
                .ok()
                .map(|d| (e.user_id, d))
        }))
    }

    /// Ends one session.
    pub async fn end(&self, id: &str) -> StoreResult<()> {
        let Some(listener) = self.ended.get() else {
            return self.hot.delete_session(id).await.map(|_| ());
        };
        if let Some((_, d)) = self.peek(id).await? {
            listener(&d).await?;
        }
        self.hot.delete_session(id).await.map(|_| ())
    }

    /// Ends every session of a user; how many there were.
    pub async fn end_all(&self, user_id: &str) -> StoreResult<usize> {
        if let Some(listener) = self.ended.get() {
            for id in self.hot.list_sessions_for_user(user_id).await? {
                if let Some((_, d)) = self.peek(&id).await? {
                    listener(&d).await?;
                }
            }
        }
        let n = self.hot.delete_sessions_for_user(user_id).await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The ids of a user's sessions.
    pub async fn of_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        self.hot.list_sessions_for_user(user_id).await
    }

    /// The signer whose MAC session ids carry (the sessions page's handles use it too).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The node's read cache.
    pub fn cache(&self) -> &Arc<Caches> {
        &self.cache
    }
}

/// A session's assurance under the running configuration, assessed once per session state
/// and thread: the session service's read cache hands out the same state until it changes,
/// and every request of a session asks twice (for its lifetime limits, and in the judge).
/// A state that changed is a new state, and a reload a new [`Runtime::generation`], so a
/// stale assessment is never reused.
pub fn assurance(rt: &Runtime, data: &Arc<SessionData>) -> Arc<stepgate_authn::Assurance> {
    LAST_ASSURANCE.with(|last| last.get(data, rt.generation, |d| d.assurance(&rt.config.assurance)))
}

thread_local! {
    static LAST_ASSURANCE: crate::app::memo::Latest<SessionData, stepgate_authn::Assurance> =
        const { crate::app::memo::Latest::new() };
}

fn ttl_for(rt: &Runtime, data: &SessionData, now: DateTime<Utc>) -> Duration {
    let aal = data.aal(&rt.config.assurance);
    let (life, idle) = limits(&rt.config.sessions, aal);
    let end = data.created_at + chrono::Duration::from_std(life).unwrap_or(chrono::Duration::MAX);
    let remaining = (end - now).to_std().unwrap_or(Duration::ZERO);
    match idle {
        Some(i) => remaining.min(i),
        None => remaining,
    }
    .max(Duration::from_secs(1))
}
