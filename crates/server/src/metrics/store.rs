//! The durable store, timed: every call of [`DurableStore`] through one wrapper, its
//! latency and failure counted by operation ([`super::StoreCalls`]). It sits under the
//! node's read cache, so what it counts are the calls that reached the database.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use stepgate_store::{
    AdminToken, AuditEvent, AuditQuery, DecisionQuery, DecisionRecord, DeviceRecord, DurableStore,
    FactorRecord, NewAuditEvent, PolicyVersion, StoreError, StoreResult, Stores, UserRecord,
};

use super::StoreCalls;

/// `stores` with its durable store timed into `calls`.
pub fn timed(stores: Stores, calls: Arc<StoreCalls>) -> Stores {
    Stores {
        durable: Arc::new(TimedDurable {
            inner: stores.durable,
            calls,
        }),
        hot: stores.hot,
    }
}

/// A durable store whose calls are timed and their failures counted.
pub struct TimedDurable {
    inner: Arc<dyn DurableStore>,
    calls: Arc<StoreCalls>,
}

/// Whether an error is the store failing rather than answering: a conflict or a missing
/// record is an answer about the data.
fn failed(e: &StoreError) -> bool {
    !matches!(e, StoreError::Conflict { .. } | StoreError::NotFound { .. })
}

/// Each [`DurableStore`] method, passed to the inner store through
/// [`super::boundary::Calls::time`] under its own name (the `operation` label).
macro_rules! timed_operations {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $out:ty; )*) => {
        #[allow(non_camel_case_types, clippy::enum_variant_names)]
        enum Op { $($name),* }

        /// The `operation` label of each durable store call.
        pub const OPERATIONS: &[&str] = &[$(stringify!($name)),*];

        #[async_trait]
        impl DurableStore for TimedDurable {
            $(
                async fn $name(&self, $($arg: $ty),*) -> StoreResult<$out> {
                    self.calls
                        .0
                        .time(Op::$name as usize, self.inner.$name($($arg),*), failed)
                        .await
                }
            )*
        }
    };
}

timed_operations! {
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
