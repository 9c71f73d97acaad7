//! The stores, timed: every call of [`DurableStore`] and of [`HotStore`] through one
//! wrapper each, its latency and failure counted by operation ([`super::StoreCalls`]).
//! They sit under the node's read cache, so what they count are the calls that reached
//! the database (SQLite, PostgreSQL or Redis).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use stepgate_store::{
    AdminToken, AuditEvent, AuditQuery, DecisionQuery, DecisionRecord, DeviceRecord, DurableStore,
    FactorRecord, HotStore, NewAuditEvent, OtpCheck, PolicyVersion, SessionEntry, SessionWrite,
    StoreError, StoreResult, Stores, UserRecord,
};

use super::StoreCalls;

/// `stores` with both stores timed into `calls`.
pub fn timed(stores: Stores, calls: Arc<StoreCalls>) -> Stores {
    Stores {
        durable: Arc::new(TimedDurable {
            inner: stores.durable,
            calls: calls.clone(),
        }),
        hot: Arc::new(TimedHot {
            inner: stores.hot,
            calls,
        }),
    }
}

/// A durable store whose calls are timed and their failures counted.
pub struct TimedDurable {
    inner: Arc<dyn DurableStore>,
    calls: Arc<StoreCalls>,
}

/// A hot store whose calls are timed and their failures counted.
pub struct TimedHot {
    inner: Arc<dyn HotStore>,
    calls: Arc<StoreCalls>,
}

/// Whether an error is the store failing rather than answering: a conflict or a missing
/// record is an answer about the data.
fn failed(e: &StoreError) -> bool {
    !matches!(e, StoreError::Conflict { .. } | StoreError::NotFound { .. })
}

/// Each method of a store trait, passed to the inner store through
/// [`super::boundary::Calls::time`] of `calls.$which` under its own name (the `operation`
/// label); `$names` lists the names in order.
macro_rules! timed_operations {
    (
        $timed:ident: $store:ident, $which:ident, $names:ident, $op:ident;
        $( $name:ident ( $($arg:ident : $ty:ty),* ) -> $out:ty; )*
    ) => {
        #[allow(non_camel_case_types, clippy::enum_variant_names)]
        enum $op { $($name),* }

        /// The `operation` label of each call of the store.
        pub const $names: &[&str] = &[$(stringify!($name)),*];

        #[async_trait]
        impl $store for $timed {
            $(
                async fn $name(&self, $($arg: $ty),*) -> StoreResult<$out> {
                    self.calls
                        .$which
                        .time($op::$name as usize, self.inner.$name($($arg),*), failed)
                        .await
                }
            )*
        }
    };
}

timed_operations! {
    TimedDurable: DurableStore, durable, OPERATIONS, Op;
    create_user(user: &UserRecord) -> ();
    get_user(id: &str) -> Option<UserRecord>;
    get_user_by_username(username: &str) -> Option<UserRecord>;
    list_users() -> Vec<UserRecord>;
    update_user(user: &UserRecord) -> ();
    delete_user(id: &str) -> bool;
    create_factor(factor: &FactorRecord) -> ();
    get_factor(id: &str) -> Option<FactorRecord>;
    find_factor(kind: &str, lookup_key: &str) -> Option<FactorRecord>;
    list_factors(user_id: &str) -> Vec<FactorRecord>;
    update_factor(factor: &FactorRecord) -> ();
    touch_factor(id: &str, at: DateTime<Utc>) -> bool;
    delete_factor(id: &str) -> bool;
    delete_factors_for_user(user_id: &str) -> u64;
    put_device(device: &DeviceRecord) -> ();
    get_device(id: &str) -> Option<DeviceRecord>;
    list_devices(owner: &str) -> Vec<DeviceRecord>;
    delete_device(id: &str) -> bool;
    append_audit(event: &NewAuditEvent) -> AuditEvent;
    list_audit(query: &AuditQuery) -> Vec<AuditEvent>;
    append_decisions(records: &[DecisionRecord]) -> ();
    get_decision(request_id: &str) -> Option<DecisionRecord>;
    list_decisions(query: &DecisionQuery) -> Vec<DecisionRecord>;
    scan_decisions(query: &DecisionQuery) -> Vec<stepgate_store::ScannedDecision>;
    purge_decisions(before: DateTime<Utc>) -> u64;
    create_admin_token(token: &AdminToken) -> ();
    find_admin_token(token_sha256: &str) -> Option<AdminToken>;
    list_admin_tokens() -> Vec<AdminToken>;
    revoke_admin_token(name: &str, at: DateTime<Utc>) -> bool;
    touch_admin_token(id: &str, at: DateTime<Utc>) -> bool;
    trim_decisions(keep: u64) -> u64;
    audit_stream_cursor(stream: &str) -> Option<i64>;
    set_audit_stream_cursor(stream: &str, seq: i64) -> ();
    save_policy_version(version: &PolicyVersion) -> ();
    get_policy_version(version: i64) -> Option<PolicyVersion>;
    latest_policy_version() -> Option<PolicyVersion>;
    list_policy_versions(before: Option<i64>, limit: u32) -> Vec<PolicyVersion>;
    acquire_lease(name: &str, holder: &str, ttl: Duration) -> bool;
    release_lease(name: &str, holder: &str) -> ();
}

timed_operations! {
    TimedHot: HotStore, hot, HOT_OPERATIONS, HotOp;
    put_session(id: &str, user_id: &str, data: &serde_json::Value, ttl: Duration) -> ();
    get_session(id: &str) -> Option<SessionEntry>;
    touch_session(id: &str, ttl: Duration) -> bool;
    update_session(id: &str, data: &serde_json::Value, ttl: Duration) -> bool;
    replace_session(
        id: &str,
        expected: &serde_json::Value,
        data: &serde_json::Value,
        ttl: Duration
    ) -> SessionWrite;
    delete_session(id: &str) -> bool;
    list_sessions_for_user(user_id: &str) -> Vec<String>;
    delete_sessions_for_user(user_id: &str) -> u64;
    count_sessions() -> u64;
    incr_counter(key: &str, window: Duration) -> u64;
    get_counter(key: &str) -> u64;
    reset_counter(key: &str) -> ();
    set_ban(key: &str, until: DateTime<Utc>) -> ();
    ban_until(key: &str) -> Option<DateTime<Utc>>;
    clear_ban(key: &str) -> ();
    put_otp(key: &str, code_hash: &[u8], ttl: Duration, max_attempts: u32) -> ();
    check_otp(key: &str, code_hash: &[u8]) -> OtpCheck;
    delete_otp(key: &str) -> ();
    remember_once(key: &str, ttl: Duration) -> bool;
    push_recent(key: &str, value: &serde_json::Value, keep: usize, ttl: Duration) -> ();
    recent(key: &str) -> Vec<serde_json::Value>;
    purge_expired() -> u64;
}
