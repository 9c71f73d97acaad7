//! The two storage interfaces every backend implements.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreResult;
use crate::model::{
    AdminToken, AuditEvent, AuditQuery, DecisionQuery, DecisionRecord, DeviceRecord, FactorRecord,
    NewAuditEvent, OtpCheck, PolicyVersion, SessionEntry, SessionWrite, UserRecord,
};

/// Durable data: users, enrolled factors, devices and the audit log.
///
/// Implemented by [`crate::SqliteStore`] (embedded) and [`crate::PostgresStore`] (multi-node).
/// Object-safe: hold it as `Arc<dyn DurableStore>`.
#[async_trait]
pub trait DurableStore: Send + Sync {
    // ---- users ----

    /// Creates a user. [`crate::StoreError::Conflict`] if the id or username is taken.
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;

    /// The user with this id.
    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>>;

    /// The user with this username (exact match).
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;

    /// All users, by username.
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;

    /// Replaces the user with `user.id`: username, email, name, groups, attributes, disabled,
    /// source and `updated_at` (`created_at` is kept). [`crate::StoreError::NotFound`] if
    /// absent, [`crate::StoreError::Conflict`] if the new username is taken.
    async fn update_user(&self, user: &UserRecord) -> StoreResult<()>;

    /// Deletes a user and their factors (devices and audit events stay). Whether it existed.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;

    // ---- factors ----

    /// Enrolls a factor. [`crate::StoreError::NotFound`] if the user does not exist,
    /// [`crate::StoreError::Conflict`] if the id or (kind, lookup key) is taken.
    async fn create_factor(&self, factor: &FactorRecord) -> StoreResult<()>;

    /// The factor with this id.
    async fn get_factor(&self, id: &str) -> StoreResult<Option<FactorRecord>>;

    /// The factor of `kind` with this lookup key (e.g. a WebAuthn credential id).
    async fn find_factor(&self, kind: &str, lookup_key: &str) -> StoreResult<Option<FactorRecord>>;

    /// A user's factors, oldest first.
    async fn list_factors(&self, user_id: &str) -> StoreResult<Vec<FactorRecord>>;

    /// Replaces the factor with `factor.id` (label, lookup key, secret, data, last use; the
    /// owner and kind are kept). [`crate::StoreError::NotFound`] if absent.
    async fn update_factor(&self, factor: &FactorRecord) -> StoreResult<()>;

    /// Records a successful use. Whether the factor exists.
    async fn touch_factor(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Deletes a factor. Whether it existed.
    async fn delete_factor(&self, id: &str) -> StoreResult<bool>;

    /// Deletes all of a user's factors. How many.
    async fn delete_factors_for_user(&self, user_id: &str) -> StoreResult<u64>;

    // ---- devices ----

    /// Creates or replaces a device.
    async fn put_device(&self, device: &DeviceRecord) -> StoreResult<()>;

    /// The device with this id.
    async fn get_device(&self, id: &str) -> StoreResult<Option<DeviceRecord>>;

    /// The devices registered to a user.
    async fn list_devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>>;

    /// Deletes a device. Whether it existed.
    async fn delete_device(&self, id: &str) -> StoreResult<bool>;

    // ---- audit log (append-only: there is no update or delete) ----

    /// Appends an event, assigning its sequence number, id and chain hash.
    async fn append_audit(&self, event: &NewAuditEvent) -> StoreResult<AuditEvent>;

    /// Events matching `query`, in append order (or newest first).
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;

    // ---- decision log (written in batches off the request path; pruned by age) ----

    /// Appends decisions in one transaction. A record whose request id is already kept is
    /// skipped (a retried batch writes nothing twice).
    async fn append_decisions(&self, records: &[DecisionRecord]) -> StoreResult<()>;

    /// The decision of the request with this id.
    async fn get_decision(&self, request_id: &str) -> StoreResult<Option<DecisionRecord>>;

    /// Decisions matching `query`, newest first (or oldest first).
    async fn list_decisions(&self, query: &DecisionQuery) -> StoreResult<Vec<DecisionRecord>>;

    /// As [`Self::list_decisions`], but a row that does not read comes back as an
    /// [`crate::UnreadableDecision`] in its place instead of failing the whole page: for
    /// readers of many records (replay) that can skip one and say so.
    async fn scan_decisions(
        &self,
        query: &DecisionQuery,
    ) -> StoreResult<Vec<crate::ScannedDecision>>;

    /// Deletes the decisions made before `before`. How many.
    async fn purge_decisions(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // ---- admin API tokens (kept hashed; revoked, never deleted) ----

    /// Keeps a new token. [`crate::StoreError::Conflict`] if its name (or hash) is taken.
    async fn create_admin_token(&self, token: &AdminToken) -> StoreResult<()>;

    /// The token whose SHA-256 (lower-case hex) is `token_sha256`, revoked or expired too.
    async fn find_admin_token(&self, token_sha256: &str) -> StoreResult<Option<AdminToken>>;

    /// Every token, by name.
    async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminToken>>;

    /// Revokes the token called `name` at `at`. Whether a live (unrevoked) one was found.
    async fn revoke_admin_token(&self, name: &str, at: DateTime<Utc>) -> StoreResult<bool>;

    /// Records a use of token `id` at `at`. Whether it exists.
    async fn touch_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Deletes all but the `keep` newest decisions (`log.decisions.max_rows`). How many.
    async fn trim_decisions(&self, keep: u64) -> StoreResult<u64>;

    // ---- audit streams (SIEM delivery cursors) ----

    /// The sequence number of the last audit event delivered to the stream `stream`, if it
    /// delivered any.
    async fn audit_stream_cursor(&self, stream: &str) -> StoreResult<Option<i64>>;

    /// Records that the stream `stream` delivered every audit event up to `seq`.
    async fn set_audit_stream_cursor(&self, stream: &str, seq: i64) -> StoreResult<()>;

    // ---- policy versions (`admin.policy_edits: store`; never updated or deleted) ----

    /// Keeps `version` as the newest. Its number must be one more than the newest kept (1
    /// for the first): [`crate::StoreError::Conflict`] otherwise, so of two administrators
    /// saving on the same version, the second is told to look again.
    async fn save_policy_version(&self, version: &PolicyVersion) -> StoreResult<()>;

    /// Version `version`.
    async fn get_policy_version(&self, version: i64) -> StoreResult<Option<PolicyVersion>>;

    /// The newest version (the one in force), if any was saved.
    async fn latest_policy_version(&self) -> StoreResult<Option<PolicyVersion>>;

    /// At most `limit` versions, newest first, those numbered below `before` when given.
    async fn list_policy_versions(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PolicyVersion>>;

    // ---- leases (one node of several does a job) ----

    /// Takes the lease `name` for `holder` until `ttl` from now, or renews it: whether
    /// `holder` has it now (it was free, had expired, or was `holder`'s already).
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> StoreResult<bool>;

    /// Gives the lease `name` up if `holder` has it, so another node can take it at once.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;
}

/// Hot state: sessions, counters, bans, one-time codes, replay guards, recent-event lists.
///
/// Every entry expires; expired entries are never returned and are purged by the backend.
/// Implemented by [`crate::SqliteStore`] (embedded) and [`crate::RedisStore`] (multi-node).
/// Object-safe: hold it as `Arc<dyn HotStore>`. Keys are free-form strings; callers namespace
/// them (`login:user:alice`, `login:ip:203.0.113.9`, `totp:<factor>:<step>`).
#[async_trait]
pub trait HotStore: Send + Sync {
    // ---- sessions ----

    /// Creates or replaces session `id` for `user_id`, expiring after `ttl`.
    async fn put_session(
        &self,
        id: &str,
        user_id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<()>;

    /// The live session with this id.
    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionEntry>>;

    /// Pushes a live session's expiry to now + `ttl` (idle timeout). Whether it was live.
    async fn touch_session(&self, id: &str, ttl: Duration) -> StoreResult<bool>;

    /// Replaces a live session's state and pushes its expiry to now + `ttl`; a session that
    /// is gone (deleted, signed out, expired) stays gone. Whether it was live. Every
    /// read-modify-write of a session uses this, never [`HotStore::put_session`], so a
    /// sign-out racing a request cannot be undone by that request's write.
    async fn update_session(
        &self,
        id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<bool>;

    /// Replaces a live session's state only if it is still `expected` (the state as the
    /// caller read it), and pushes its expiry to now + `ttl`: a read-modify-write that
    /// cannot overwrite a change made by someone else in between (another node's CAEP mark
    /// racing this node's activity stamp). States compare as JSON values: as text first
    /// (what this build writes), then, when the text held differs, as the value it parses
    /// to, the write then going over that text, still conditionally (another build, or an
    /// operator, may have spelled the same state otherwise). A session that is gone stays
    /// gone.
    async fn replace_session(
        &self,
        id: &str,
        expected: &serde_json::Value,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<SessionWrite>;

    /// Deletes a session. Whether it was live.
    async fn delete_session(&self, id: &str) -> StoreResult<bool>;

    /// The ids of a user's live sessions.
    async fn list_sessions_for_user(&self, user_id: &str) -> StoreResult<Vec<String>>;

    /// Deletes all of a user's sessions ("sign out everywhere"). How many were live.
    async fn delete_sessions_for_user(&self, user_id: &str) -> StoreResult<u64>;

    /// How many sessions are live now, all users together (the `stepgate_sessions_live`
    /// gauge; Redis counts by scanning its session keys).
    async fn count_sessions(&self) -> StoreResult<u64>;

    // ---- counters (fixed windows) ----

    /// Adds one to `key` and returns the new count. The window starts at the first increment
    /// and lasts `window`; after it the count starts again from 1.
    async fn incr_counter(&self, key: &str, window: Duration) -> StoreResult<u64>;

    /// The current count in the live window (0 if none).
    async fn get_counter(&self, key: &str) -> StoreResult<u64>;

    /// Drops the counter (e.g. after a successful sign-in).
    async fn reset_counter(&self, key: &str) -> StoreResult<()>;

    // ---- bans and lockouts ----

    /// Bans `key` until `until` (replacing any earlier ban).
    async fn set_ban(&self, key: &str, until: DateTime<Utc>) -> StoreResult<()>;

    /// When the ban on `key` ends, if one is in force.
    async fn ban_until(&self, key: &str) -> StoreResult<Option<DateTime<Utc>>>;

    /// Lifts a ban.
    async fn clear_ban(&self, key: &str) -> StoreResult<()>;

    // ---- one-time codes ----

    /// Stores a one-time code's hash under `key` (replacing any pending one), valid for `ttl`
    /// and for at most `max_attempts` checks.
    async fn put_otp(
        &self,
        key: &str,
        code_hash: &[u8],
        ttl: Duration,
        max_attempts: u32,
    ) -> StoreResult<()>;

    /// Checks a code's hash against the pending one, atomically: every check uses up an
    /// attempt, a match consumes the code (single use, even under concurrent checks), and the
    /// last failed attempt discards it. Compared in constant time.
    async fn check_otp(&self, key: &str, code_hash: &[u8]) -> StoreResult<OtpCheck>;

    /// Discards a pending code.
    async fn delete_otp(&self, key: &str) -> StoreResult<()>;

    // ---- replay guards ----

    /// `true` the first time `key` is seen within `ttl`, `false` after (TOTP step reuse, JWT
    /// `jti`). Atomic across nodes.
    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool>;

    // ---- recent-event lists (sign-in history for risk scoring) ----

    /// Prepends `value` to the list `key`, keeps the newest `keep`, and expires the whole
    /// list `ttl` after this push.
    async fn push_recent(
        &self,
        key: &str,
        value: &serde_json::Value,
        keep: usize,
        ttl: Duration,
    ) -> StoreResult<()>;

    /// The list `key`, newest first (empty if none).
    async fn recent(&self, key: &str) -> StoreResult<Vec<serde_json::Value>>;

    // ---- housekeeping ----

    /// Deletes expired entries now; how many. Backends also do this on their own.
    async fn purge_expired(&self) -> StoreResult<u64>;
}
