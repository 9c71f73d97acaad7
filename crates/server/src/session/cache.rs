//! A per-node read cache in front of the stores for the records every access request reads:
//! sessions, users, devices and sign-in histories (`sessions.cache_ttl`, 2 s by default;
//! `0s` turns it off).
//!
//! The cache wraps the stores themselves ([`wrap`]), so every write this node makes (sign-in,
//! step-up, logout, "sign out everywhere", id rotation, CAEP and device re-evaluation, user
//! and device changes) goes through it and drops the affected entries before it returns: a
//! change made on this node takes effect on the very next request. A change made elsewhere
//! (another node, the CLI) is seen within the TTL, the only staleness the cache adds.
//!
//! Session expiry and idle timeouts are still computed from the record's own times on every
//! request, so they are exact. Store errors are never cached. Absent records are not cached
//! either, except a session id stepgate issued (its MAC verifies) that the store no longer
//! holds: ids are never reused, so that absence is final, and made-up ids are refused by
//! their MAC before the cache. The cache cannot turn a miss into an allow, and random ids
//! cannot fill it.
//!
//! A read that started before a write to the same kind of record is not cached when it
//! finishes after it (a generation counter per map), so a racing read cannot bring back a
//! record this node just revoked.
//!
//! Across nodes (PostgreSQL + Redis), every write this node makes is also announced on the
//! Redis change feed ([`stepgate_store::ChangeFeed`]), and every node drops what another node
//! announced ([`Caches::listen`]), so a change made on any node takes effect on every node's
//! next request. A node whose subscription is lost empties its cache and reads every record
//! from the stores until a new subscription stands: it cannot know what it missed. A change
//! whose announcement fails to publish (the write itself succeeded) is seen elsewhere within
//! the TTL. Other writers (the CLI) announce their changes the same way ([`Caches::announce`]).
//!
//! Entries age by the cache's own clock: the monotonic clock, which a test can move ahead
//! ([`Caches::advance_clock`]) to let a TTL pass without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use stepgate_store::{
    AuditEvent, AuditQuery, Change, ChangeFeed, DeviceRecord, DurableStore, FactorRecord, Heard,
    HotStore, NewAuditEvent, OtpCheck, SessionEntry, StoreResult, Stores, UserRecord,
};

use stepgate_signals::risk::SignInEntry;

use crate::session::SessionData;

/// Entries kept per map before expired ones are swept (and, if that is not enough, all are
/// dropped): bounds memory whatever the traffic.
const MAX_ENTRIES: usize = 100_000;

/// The cached records and the TTL (updated on reload), shared by the store wrappers and
/// the server state.
pub struct Caches {
    ttl_ms: AtomicU64,
    clock: Clock,
    hot: Arc<dyn HotStore>,
    durable: Arc<dyn DurableStore>,
    sessions: TtlMap<String, Option<Arc<SessionSlot>>>,
    /// The sign-in histories (by hot-store list key), decoded and sorted once per fill.
    /// Other hot-store lists (the device → sessions index CAEP re-evaluation reads) always
    /// go to the store.
    histories: TtlMap<String, Arc<Vec<SignInEntry>>>,
    users: TtlMap<String, Option<Arc<UserRecord>>>,
    /// Users by username, absent ones included (the keys come from verified bearer tokens
    /// only); emptied on every user write.
    usernames: TtlMap<String, Option<Arc<UserRecord>>>,
    devices: TtlMap<String, Option<DeviceRecord>>,
    device_lists: TtlMap<String, Vec<DeviceRecord>>,
    /// Where this node announces its writes to the others (multi-node deployments).
    feed: OnceLock<Arc<ChangeFeed>>,
    /// Whether cached entries may be used: always without a feed; with one, only while the
    /// subscription to the other nodes' changes stands.
    trusted: std::sync::atomic::AtomicBool,
    /// `store.postgres.fail_mode: cached`: how long after it was read a durable record
    /// (user, device) may still answer while the durable store fails (ms; 0: never).
    stale_ms: AtomicU64,
    /// Hits and misses of the read-through maps (`stepgate_cache_*_total`).
    pub lookups: crate::metrics::CacheLookups,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("ttl", &self.ttl())
            .finish_non_exhaustive()
    }
}

/// A cached session record with its state decoded once.
pub struct SessionSlot {
    /// The record as the store returned it.
    pub entry: SessionEntry,
    data: OnceLock<Option<Arc<SessionData>>>,
}

impl SessionSlot {
    fn new(entry: SessionEntry) -> Self {
        SessionSlot {
            entry,
            data: OnceLock::new(),
        }
    }

    /// The session state, or `None` when this build cannot read the record.
    pub fn data(&self) -> Option<&Arc<SessionData>> {
        self.data
            .get_or_init(|| {
                serde_json::from_value(self.entry.data.clone())
                    .ok()
                    .map(Arc::new)
            })
            .as_ref()
    }
}

/// The time entries are stamped with and judged by: [`Instant::now`], plus however far a
/// test has moved it ahead (zero in production; the offset costs one relaxed load).
#[derive(Default)]
struct Clock {
    ahead_ms: AtomicU64,
}

impl Clock {
    fn now(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.ahead_ms.load(Ordering::Relaxed))
    }

    fn advance(&self, by: Duration) {
        let ms = by.as_millis().min(u64::MAX as u128) as u64;
        self.ahead_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Caches {
    /// The hot store behind the cache, for what is read once per sign-in and never cached
    /// (the MFA a device remembers).
    pub fn hot(&self) -> &dyn HotStore {
        self.hot.as_ref()
    }

    /// Moves the cache's clock `by` ahead, so that every entry is as old as if `by` had
    /// passed: tests let the TTL pass without sleeping. Stepgate itself never calls it.
    #[doc(hidden)]
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Changes the TTL (configuration reload). Entries already cached keep their insertion
    /// time and are judged by the new TTL.
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(
            ttl.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// The TTL in force.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// The TTL entries are judged by now: zero (nothing read from or kept in the cache)
    /// while a multi-node subscription is down.
    fn live_ttl(&self) -> Duration {
        if self.trusted.load(Ordering::Acquire) {
            self.ttl()
        } else {
            Duration::ZERO
        }
    }

    /// Whether this node currently uses its cache (false while its subscription to other
    /// nodes' changes is down).
    pub fn in_use(&self) -> bool {
        self.trusted.load(Ordering::Acquire) && !self.ttl().is_zero()
    }

    /// Lets durable records (users, devices) cached up to `limit` ago answer while the
    /// durable store fails (`store.postgres.fail_mode: cached`); zero refuses instead.
    pub fn serve_stale_for(&self, limit: Duration) {
        self.stale_ms.store(
            limit.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Announces this node's writes on `feed` from now on, without listening to others (the
    /// CLI, whose cache is off).
    pub fn announce(&self, feed: Arc<ChangeFeed>) {
        let _ = self.feed.set(feed);
    }

    /// Announces this node's writes on `feed` and drops what other nodes announce, in a
    /// task that lives as long as the cache. Until the first subscription stands, and
    /// whenever it is lost, the cache is emptied and not used.
    pub fn listen(self: &Arc<Self>, feed: Arc<ChangeFeed>) {
        self.trusted.store(false, Ordering::Release);
        self.clear_all();
        let _ = self.feed.set(feed.clone());
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match feed.subscribe().await {
                    Ok(mut changes) => {
                        let Some(c) = weak.upgrade() else { return };
                        // Whatever was cached before the subscription stood may be stale.
                        c.clear_all();
                        c.trusted.store(true, Ordering::Release);
                        tracing::info!(node = feed.node(), "listening to other nodes' changes");
                        drop(c);
                        backoff = Duration::from_millis(100);
                        let lost = loop {
                            let heard = changes.next().await;
                            let Some(c) = weak.upgrade() else { return };
                            match heard {
                                Ok(Heard::Change(change)) => c.drop_changed(&change),
                                Ok(Heard::Quiet) => {}
                                Err(e) => break e,
                            }
                        };
                        let Some(c) = weak.upgrade() else { return };
                        c.trusted.store(false, Ordering::Release);
                        c.clear_all();
                        tracing::warn!(error = %lost, "lost the subscription to other nodes' changes: reading every record from the stores until it is back");
                    }
                    Err(e) => {
                        if weak.strong_count() == 0 {
                            return;
                        }
                        tracing::warn!(error = %e, "cannot subscribe to other nodes' changes; retrying in {backoff:?}");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Runs a write of this node's to what `change` names: its cached entries are dropped
    /// before and again after (a read that began before the write must not be cached,
    /// whatever the interleaving), and a write that succeeded is announced to the other
    /// nodes. A failed announcement does not undo the write: they see it within the TTL.
    async fn writing<T>(
        &self,
        change: Change,
        write: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.drop_changed(&change);
        let r = write.await;
        self.drop_changed(&change);
        if r.is_ok() {
            if let Some(feed) = self.feed.get() {
                if let Err(e) = feed.publish(&change).await {
                    tracing::warn!(error = %e, ?change, "could not announce a change to the other nodes; they see it within the cache TTL");
                }
            }
        }
        r
    }

    /// Drops what `change` names: after another node's write, or around this node's.
    fn drop_changed(&self, change: &Change) {
        match change {
            Change::Session(id) => self.sessions.invalidate(id.as_str()),
            Change::SessionsOfUser(user) => self
                .sessions
                .invalidate_where(|e| e.as_ref().is_some_and(|e| e.entry.user_id == *user)),
            Change::User(id) => {
                self.users.invalidate(id.as_str());
                self.usernames.clear();
            }
            Change::History(key) => self.histories.invalidate(key.as_str()),
            Change::Device(id) => {
                self.devices.invalidate(id.as_str());
                self.device_lists.clear();
            }
            // Not a cached record: `app::stored_policies` follows it.
            Change::PolicySet(_) => {}
        }
    }

    fn clear_all(&self) {
        self.sessions.clear();
        self.histories.clear();
        self.users.clear();
        self.usernames.clear();
        self.devices.clear();
        self.device_lists.clear();
    }

    /// The session `id`, from the cache or the hot store, if it is live at `now`.
    ///
    /// With `issued_here` (the id's MAC verified: stepgate issued it), an id the store does
    /// not hold (expired, signed out, deleted) is remembered as absent for the TTL too, so
    /// replaying one real but dead id costs no store read per request. Ids that were never
    /// issued are refused before this by their MAC and are never cached, so made-up ids
    /// cannot fill the map. An id is never reused, so a cached absence cannot hide a
    /// session created later.
    pub async fn session(
        &self,
        id: &str,
        issued_here: bool,
        now: chrono::DateTime<Utc>,
    ) -> StoreResult<Option<Arc<SessionSlot>>> {
        let read = async {
            Ok(self
                .hot
                .get_session(id)
                .await?
                .map(|e| Arc::new(SessionSlot::new(e))))
        };
        let s = self
            .read_through(&self.sessions, id, read, issued_here)
            .await?;
        // The store's own expiry still holds for a cached record, at `now`.
        Ok(s.filter(|s| s.entry.expires_at > now))
    }

    /// The session `id`'s live cache entry, when there is one (`Some(None)`: an absence
    /// cached), as [`Caches::session`] would answer it at `now`. Either way the id was
    /// checked before it was cached, so a caller may skip checking its MAC again. A hit is
    /// counted here; a miss is counted by the [`Caches::session`] read that follows it.
    pub fn session_cached(
        &self,
        id: &str,
        now: chrono::DateTime<Utc>,
    ) -> Option<Option<Arc<SessionSlot>>> {
        let ttl = self.live_ttl();
        if ttl.is_zero() {
            return None;
        }
        let slot = self.sessions.get(id, ttl, self.clock.now()).ok()?;
        self.lookups.hits.inc();
        Some(slot.filter(|s| s.entry.expires_at > now))
    }

    /// The user `id`, from the cache or the durable store, shared rather than copied.
    pub async fn user(&self, id: &str) -> StoreResult<Option<Arc<UserRecord>>> {
        let read = async { Ok(self.durable.get_user(id).await?.map(Arc::new)) };
        self.read_through(&self.users, id, read, false).await
    }

    /// The user named `username`, if there is one. Unlike [`Caches::user`], an absent user
    /// is cached too: only call this with names from verified credentials (bearer tokens),
    /// which a client cannot make up to fill the cache.
    pub async fn user_by_username(&self, username: &str) -> StoreResult<Option<Arc<UserRecord>>> {
        let read = async {
            Ok(self
                .durable
                .get_user_by_username(username)
                .await?
                .map(Arc::new))
        };
        self.read_through(&self.usernames, username, read, true)
            .await
    }

    /// The hot-store list `key` (a sign-in history), decoded into entries oldest first;
    /// entries this build cannot read are skipped. Decoded once per cache fill.
    pub async fn sign_ins(&self, key: &str) -> StoreResult<Arc<Vec<SignInEntry>>> {
        let read = async {
            let mut h: Vec<SignInEntry> = self
                .hot
                .recent(key)
                .await?
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect();
            h.sort_by_key(|e| e.time);
            Ok(Arc::new(h))
        };
        self.read_through(&self.histories, key, read, false).await
    }

    /// Caches a read through `map` when the TTL is not zero. Errors are never cached; `None`
    /// is cached only with `absent_too`, for keys a client cannot make up (an absence cached
    /// for a made-up key would let random keys fill the map).
    async fn read_through<V, F>(
        &self,
        map: &TtlMap<String, V>,
        key: &str,
        read: F,
        absent_too: bool,
    ) -> StoreResult<V>
    where
        V: Clone + Cacheable,
        F: std::future::Future<Output = StoreResult<V>>,
    {
        let ttl = self.live_ttl();
        if ttl.is_zero() {
            return read.await;
        }
        // A hit costs no allocation: the key is copied only to cache a miss.
        let generation = match map.get(key, ttl, self.clock.now()) {
            Ok(v) => {
                self.lookups.hits.inc();
                return Ok(v);
            }
            Err(g) => {
                self.lookups.misses.inc();
                g
            }
        };
        let v = match read.await {
            Ok(v) => v,
            Err(e) => {
                // A durable record read before the store failed, if configured: an outage
                // of PostgreSQL does not end every session at once. Hot state (sessions)
                // never comes from here: it is Redis's, and Redis down refuses.
                let stale = Duration::from_millis(self.stale_ms.load(Ordering::Relaxed));
                if map.durable && !stale.is_zero() && self.trusted.load(Ordering::Acquire) {
                    if let Ok(v) = map.get(key, stale, self.clock.now()) {
                        tracing::warn!(error = %e, "durable store failing: answering from a record cached within store.postgres.cached_for");
                        return Ok(v);
                    }
                }
                return Err(e);
            }
        };
        if absent_too || v.worth_caching() {
            map.put(
                key.to_string(),
                v.clone(),
                generation,
                ttl,
                self.clock.now(),
            );
        }
        Ok(v)
    }
}

struct Inner<K, V> {
    generation: u64,
    /// foldhash, randomly seeded: there are several lookups on every request, and only
    /// keys stepgate issued or verified are ever stored (a session id whose MAC verified,
    /// an existing user, device or history, a username from a verified bearer token), none
    /// a client made up, so SipHash's stronger defence against flooding buys nothing here.
    map: HashMap<K, (Instant, V), foldhash::fast::RandomState>,
}

/// One map of cached records with a TTL and a write generation.
struct TtlMap<K, V> {
    inner: Mutex<Inner<K, V>>,
    /// Whether it holds durable records, which `fail_mode: cached` may serve past the TTL.
    durable: bool,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlMap<K, V> {
    fn new(durable: bool) -> Self {
        TtlMap {
            inner: Mutex::new(Inner {
                generation: 0,
                map: HashMap::default(),
            }),
            durable,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value cached for `key` if it is younger than `ttl` at `now`; otherwise the
    /// generation a read-through must present to cache its result.
    fn get<Q>(&self, key: &Q, ttl: Duration, now: Instant) -> Result<V, u64>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let g = self.lock();
        match g.map.get(key) {
            Some((at, v)) if now.saturating_duration_since(*at) < ttl => Ok(v.clone()),
            _ => Err(g.generation),
        }
    }

    /// Caches `value` as of `now` unless a write happened since the read began
    /// (`generation`).
    fn put(&self, key: K, value: V, generation: u64, ttl: Duration, now: Instant) {
        let mut g = self.lock();
        if g.generation != generation {
            return;
        }
        if g.map.len() >= MAX_ENTRIES {
            g.map
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if g.map.len() >= MAX_ENTRIES {
                g.map.clear();
            }
        }
        g.map.insert(key, (now, value));
    }

    /// Drops one entry (and makes in-flight reads uncacheable).
    fn invalidate<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut g = self.lock();
        g.generation += 1;
        g.map.remove(key);
    }

    /// Drops every entry matching `f`.
    fn invalidate_where(&self, f: impl Fn(&V) -> bool) {
        let mut g = self.lock();
        g.generation += 1;
        g.map.retain(|_, (_, v)| !f(v));
    }

    fn clear(&self) {
        let mut g = self.lock();
        g.generation += 1;
        g.map.clear();
    }
}

trait Cacheable {
    fn worth_caching(&self) -> bool;
}

impl<T> Cacheable for Option<T> {
    fn worth_caching(&self) -> bool {
        self.is_some()
    }
}

impl<T> Cacheable for Vec<T> {
    fn worth_caching(&self) -> bool {
        true
    }
}

impl<T> Cacheable for Arc<Vec<T>> {
    fn worth_caching(&self) -> bool {
        true
    }
}

mod stores;

pub use stores::{wrap, CachedDurable, CachedHot};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_during_a_read_keeps_the_read_out_of_the_cache() {
        let m: TtlMap<String, Option<u32>> = TtlMap::new(false);
        let (ttl, now) = (Duration::from_secs(60), Instant::now());
        assert_eq!(m.get("a", ttl, now), Err(0), "a miss, before any write");
        m.invalidate("a");
        m.put("a".into(), Some(1), 0, ttl, now);
        assert_eq!(m.get("a", ttl, now), Err(1), "stale read cached");
        m.put("a".into(), Some(2), 1, ttl, now);
        assert_eq!(m.get("a", ttl, now), Ok(Some(2)));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let m: TtlMap<String, Option<u32>> = TtlMap::new(false);
        let (ttl, t0) = (Duration::from_secs(60), Instant::now());
        m.put("a".into(), Some(1), 0, ttl, t0);
        let just_before = t0 + ttl - Duration::from_millis(1);
        assert_eq!(m.get("a", ttl, just_before), Ok(Some(1)));
        assert_eq!(m.get("a", ttl, t0 + ttl), Err(0), "expired at the TTL");
        assert_eq!(
            m.get("a", Duration::ZERO, t0),
            Err(0),
            "a zero TTL keeps nothing"
        );
    }

    #[test]
    fn advancing_the_clock_ages_entries_as_time_would() {
        let clock = Clock::default();
        let before = Instant::now();
        clock.advance(Duration::from_secs(3600));
        let now = clock.now();
        assert!(now >= before + Duration::from_secs(3600));
        assert!(now < Instant::now() + Duration::from_secs(3601));
    }
}
