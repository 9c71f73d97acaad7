//! The stores as the server uses them: every read that can be cached goes through the
//! node's [`super::Caches`], and every write drops what it changes from them, so a change
//! made on this node holds on its next request.

use super::*;

/// Wraps both stores in a cache whose entries live `ttl` (zero: off); the handle is kept in
/// the server state for reloads and the session fast path.
pub fn wrap(stores: Stores, ttl: Duration) -> (Stores, Arc<Caches>) {
    let caches = Arc::new(Caches {
        ttl_ms: AtomicU64::new(ttl.as_millis().min(u64::MAX as u128) as u64),
        clock: Clock::default(),
        hot: stores.hot.clone(),
        durable: stores.durable.clone(),
        sessions: TtlMap::new(false),
        histories: TtlMap::new(false),
        users: TtlMap::new(true),
        usernames: TtlMap::new(true),
        devices: TtlMap::new(true),
        device_lists: TtlMap::new(true),
        feed: OnceLock::new(),
        trusted: std::sync::atomic::AtomicBool::new(true),
        stale_ms: AtomicU64::new(0),
        lookups: Default::default(),
    });
    let wrapped = Stores {
        durable: Arc::new(CachedDurable {
            inner: stores.durable,
            c: caches.clone(),
        }),
        hot: Arc::new(CachedHot {
            inner: stores.hot,
            c: caches.clone(),
        }),
    };
    (wrapped, caches)
}

/// The hot store with sessions and sign-in histories cached.
pub struct CachedHot {
    inner: Arc<dyn HotStore>,
    c: Arc<Caches>,
}

#[async_trait]
impl HotStore for CachedHot {
    async fn put_session(
        &self,
        id: &str,
        user_id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.c
            .writing(
                Change::Session(id.to_string()),
                self.inner.put_session(id, user_id, data, ttl),
            )
            .await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<SessionEntry>> {
        Ok(self
            .c
            .session(id, false, chrono::Utc::now())
            .await?
            .map(|s| s.entry.clone()))
    }

    async fn touch_session(&self, id: &str, ttl: Duration) -> StoreResult<bool> {
        self.c
            .writing(
                Change::Session(id.to_string()),
                self.inner.touch_session(id, ttl),
            )
            .await
    }

    async fn update_session(
        &self,
        id: &str,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.c
            .writing(
                Change::Session(id.to_string()),
                self.inner.update_session(id, data, ttl),
            )
            .await
    }

    async fn replace_session(
        &self,
        id: &str,
        expected: &serde_json::Value,
        data: &serde_json::Value,
        ttl: Duration,
    ) -> StoreResult<stepgate_store::SessionWrite> {
        // Dropped from the cache whatever the outcome: a write that found the state changed
        // means the cached copy is stale, and the caller reads again.
        self.c
            .writing(
                Change::Session(id.to_string()),
                self.inner.replace_session(id, expected, data, ttl),
            )
            .await
    }

    async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        self.c
            .writing(
                Change::Session(id.to_string()),
                self.inner.delete_session(id),
            )
            .await
    }

    async fn list_sessions_for_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        self.inner.list_sessions_for_user(user_id).await
    }

    async fn count_sessions(&self) -> StoreResult<u64> {
        self.inner.count_sessions().await
    }

    async fn delete_sessions_for_user(&self, user_id: &str) -> StoreResult<u64> {
        self.c
            .writing(
                Change::SessionsOfUser(user_id.to_string()),
                self.inner.delete_sessions_for_user(user_id),
            )
            .await
    }

    async fn incr_counter(&self, key: &str, window: Duration) -> StoreResult<u64> {
        self.inner.incr_counter(key, window).await
    }

    async fn get_counter(&self, key: &str) -> StoreResult<u64> {
        self.inner.get_counter(key).await
    }

    async fn reset_counter(&self, key: &str) -> StoreResult<()> {
        self.inner.reset_counter(key).await
    }

    async fn set_ban(&self, key: &str, until: DateTime<Utc>) -> StoreResult<()> {
        self.inner.set_ban(key, until).await
    }

    async fn ban_until(&self, key: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.inner.ban_until(key).await
    }

    async fn clear_ban(&self, key: &str) -> StoreResult<()> {
        self.inner.clear_ban(key).await
    }

    async fn put_otp(
        &self,
        key: &str,
        code_hash: &[u8],
        ttl: Duration,
        max_attempts: u32,
    ) -> StoreResult<()> {
        self.inner.put_otp(key, code_hash, ttl, max_attempts).await
    }

    async fn check_otp(&self, key: &str, code_hash: &[u8]) -> StoreResult<OtpCheck> {
        self.inner.check_otp(key, code_hash).await
    }

    async fn delete_otp(&self, key: &str) -> StoreResult<()> {
        self.inner.delete_otp(key).await
    }

    async fn remember_once(&self, key: &str, ttl: Duration) -> StoreResult<bool> {
        self.inner.remember_once(key, ttl).await
    }

    async fn push_recent(
        &self,
        key: &str,
        value: &serde_json::Value,
        keep: usize,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.c
            .writing(
                Change::History(key.to_string()),
                self.inner.push_recent(key, value, keep, ttl),
            )
            .await
    }

    async fn recent(&self, key: &str) -> StoreResult<Vec<serde_json::Value>> {
        // The sign-in histories are cached decoded ([`Caches::sign_ins`]); raw lists are not.
        self.inner.recent(key).await
    }

    async fn purge_expired(&self) -> StoreResult<u64> {
        let r = self.inner.purge_expired().await;
        self.c.sessions.clear();
        self.c.histories.clear();
        r
    }
}

/// The durable store with users and devices cached.
pub struct CachedDurable {
    inner: Arc<dyn DurableStore>,
    c: Arc<Caches>,
}

#[async_trait]
impl DurableStore for CachedDurable {
    async fn create_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.c
            .writing(Change::User(user.id.clone()), self.inner.create_user(user))
            .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        Ok(self.c.user(id).await?.map(|u| (*u).clone()))
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        self.inner.get_user_by_username(username).await
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.inner.list_users().await
    }

    async fn update_user(&self, user: &UserRecord) -> StoreResult<()> {
        self.c
            .writing(Change::User(user.id.clone()), self.inner.update_user(user))
            .await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        self.c
            .writing(Change::User(id.to_string()), self.inner.delete_user(id))
            .await
    }

    async fn create_factor(&self, factor: &FactorRecord) -> StoreResult<()> {
        self.inner.create_factor(factor).await
    }

    async fn get_factor(&self, id: &str) -> StoreResult<Option<FactorRecord>> {
        // Not cached: factor verification (counters, last use) must see the latest record.
        self.inner.get_factor(id).await
    }

    async fn find_factor(&self, kind: &str, lookup_key: &str) -> StoreResult<Option<FactorRecord>> {
        self.inner.find_factor(kind, lookup_key).await
    }

    async fn list_factors(&self, user_id: &str) -> StoreResult<Vec<FactorRecord>> {
        self.inner.list_factors(user_id).await
    }

    async fn update_factor(&self, factor: &FactorRecord) -> StoreResult<()> {
        self.inner.update_factor(factor).await
    }

    async fn touch_factor(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        self.inner.touch_factor(id, at).await
    }

    async fn delete_factor(&self, id: &str) -> StoreResult<bool> {
        self.inner.delete_factor(id).await
    }

    async fn delete_factors_for_user(&self, user_id: &str) -> StoreResult<u64> {
        self.inner.delete_factors_for_user(user_id).await
    }

    async fn put_device(&self, device: &DeviceRecord) -> StoreResult<()> {
        self.c
            .writing(
                Change::Device(device.id.clone()),
                self.inner.put_device(device),
            )
            .await
    }

    async fn get_device(&self, id: &str) -> StoreResult<Option<DeviceRecord>> {
        self.c
            .read_through(&self.c.devices, id, self.inner.get_device(id), false)
            .await
    }

    async fn list_devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>> {
        self.c
            .read_through(
                &self.c.device_lists,
                owner,
                self.inner.list_devices(owner),
                false,
            )
            .await
    }

    async fn delete_device(&self, id: &str) -> StoreResult<bool> {
        self.c
            .writing(Change::Device(id.to_string()), self.inner.delete_device(id))
            .await
    }

    async fn append_audit(&self, event: &NewAuditEvent) -> StoreResult<AuditEvent> {
        self.inner.append_audit(event).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.inner.list_audit(query).await
    }

    // The decision log is written once and read by administrators: nothing to cache.

    async fn append_decisions(
        &self,
        records: &[stepgate_store::DecisionRecord],
    ) -> StoreResult<()> {
        self.inner.append_decisions(records).await
    }

    async fn get_decision(
        &self,
        request_id: &str,
    ) -> StoreResult<Option<stepgate_store::DecisionRecord>> {
        self.inner.get_decision(request_id).await
    }

    async fn list_decisions(
        &self,
        query: &stepgate_store::DecisionQuery,
    ) -> StoreResult<Vec<stepgate_store::DecisionRecord>> {
        self.inner.list_decisions(query).await
    }

    async fn scan_decisions(
        &self,
        query: &stepgate_store::DecisionQuery,
    ) -> StoreResult<Vec<stepgate_store::ScannedDecision>> {
        self.inner.scan_decisions(query).await
    }

    async fn purge_decisions(&self, before: chrono::DateTime<chrono::Utc>) -> StoreResult<u64> {
        self.inner.purge_decisions(before).await
    }

    async fn create_admin_token(&self, token: &stepgate_store::AdminToken) -> StoreResult<()> {
        self.inner.create_admin_token(token).await
    }

    async fn find_admin_token(
        &self,
        token_sha256: &str,
    ) -> StoreResult<Option<stepgate_store::AdminToken>> {
        // Not cached: a revocation holds at the next request, on every node.
        self.inner.find_admin_token(token_sha256).await
    }

    async fn list_admin_tokens(&self) -> StoreResult<Vec<stepgate_store::AdminToken>> {
        self.inner.list_admin_tokens().await
    }

    async fn revoke_admin_token(
        &self,
        name: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool> {
        self.inner.revoke_admin_token(name, at).await
    }

    async fn touch_admin_token(
        &self,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<bool> {
        self.inner.touch_admin_token(id, at).await
    }

    async fn trim_decisions(&self, keep: u64) -> StoreResult<u64> {
        self.inner.trim_decisions(keep).await
    }

    async fn audit_stream_cursor(&self, stream: &str) -> StoreResult<Option<i64>> {
        self.inner.audit_stream_cursor(stream).await
    }

    async fn set_audit_stream_cursor(&self, stream: &str, seq: i64) -> StoreResult<()> {
        self.inner.set_audit_stream_cursor(stream, seq).await
    }

    async fn save_policy_version(&self, v: &stepgate_store::PolicyVersion) -> StoreResult<()> {
        self.inner.save_policy_version(v).await
    }

    async fn get_policy_version(
        &self,
        version: i64,
    ) -> StoreResult<Option<stepgate_store::PolicyVersion>> {
        self.inner.get_policy_version(version).await
    }

    async fn latest_policy_version(&self) -> StoreResult<Option<stepgate_store::PolicyVersion>> {
        self.inner.latest_policy_version().await
    }

    async fn list_policy_versions(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<stepgate_store::PolicyVersion>> {
        self.inner.list_policy_versions(before, limit).await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> StoreResult<bool> {
        self.inner.acquire_lease(name, holder, ttl).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.inner.release_lease(name, holder).await
    }
}
