//! The one [`DurableStore`] over SQL, which SQLite and PostgreSQL both run.
//!
//! The durable tables have the same columns in both schemas (mapped in [`crate::rows`]), and
//! both dialects take the same statements for them: `$N` placeholders (SQLite reads `$1` as
//! parameter 1, as PostgreSQL does) and `INSERT … ON CONFLICT … DO UPDATE`. What does differ
//! is what a backend says by implementing [`SqlBackend`] in its own file: its pool, how text
//! keys sort, which column breaks a tie between factors enrolled in the same millisecond, and
//! how an audit append keeps the hash chain a line. Opening either store ends with the same
//! [`check_key`] against the key check value in its `meta` table.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Transaction, Type,
};

use crate::error::{StoreError, StoreResult};
use crate::model::{
    audit_hash, from_ms, json_text, new_id, parse_json, to_ms, AdminToken, AuditEvent, AuditQuery,
    DecisionQuery, DecisionRecord, DeviceRecord, FactorRecord, NewAuditEvent, PolicyVersion,
    ScannedDecision, UnreadableDecision, UserRecord, AUDIT_GENESIS_HASH,
};
use crate::rows::{
    admin_token_from_row, audit_from_row, decision_from_row, device_from_row, factor_from_row,
    policy_version_from_row, user_from_row, DeviceRow, FactorRow, RecordRow, UserRow,
    ADMIN_TOKEN_COLUMNS, AUDIT_COLUMNS, DECISION_COLUMNS, DEVICE_COLUMNS, FACTOR_COLUMNS,
    POLICY_VERSION_COLUMNS, USER_COLUMNS,
};
use crate::secrets::{SealedSecret, SecretKey};
use crate::traits::DurableStore;

/// A SQL database holding the durable tables: what sets one backend apart from the other.
///
/// Every implementor is a [`DurableStore`] through the one implementation in this module.
/// (`pub` in a private module: nameable in this crate only.)
pub trait SqlBackend: Send + Sync {
    /// The sqlx database.
    type Db: Database;

    /// What follows `ORDER BY <text column>` so text keys (usernames, device ids) sort by
    /// their bytes, whatever the database's locale.
    const BYTE_ORDER: &'static str;

    /// The column after `created_at` that orders a user's factors enrolled in the same
    /// millisecond.
    const FACTOR_TIE_BREAK: &'static str;

    /// The connection pool.
    fn pool(&self) -> &Pool<Self::Db>;

    /// How many rows a statement changed (sqlx has no trait for it).
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Opens the transaction an audit append runs in, holding a lock that keeps any other
    /// appender (in this process or another, on this node or another) from reading the chain's
    /// head until it commits.
    fn begin_audit_append(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

/// Keeps the key check value of the first opener of a store in its `meta` table and checks
/// `key` against it: [`StoreError::SecretKeyMismatch`] naming `label` if `key` is another.
pub(crate) async fn check_key<DB>(pool: &Pool<DB>, key: &SecretKey, label: &str) -> StoreResult<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    let kcv = key.key_check_value()?;
    // Only the first opener's value is kept; everyone then checks against it.
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING",
    )
    .bind(kcv.as_bytes().to_vec())
    .execute(pool)
    .await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'key_check'")
        .fetch_one(pool)
        .await?;
    if key.matches_key_check(&SealedSecret::from_bytes(stored)) {
        Ok(())
    } else {
        Err(StoreError::SecretKeyMismatch {
            store: label.to_owned(),
        })
    }
}

/// Maps unique and foreign-key violations to the store's own errors: a taken `key` of `what`,
/// or a missing user.
pub(crate) fn map_write_err(e: sqlx::Error, what: &'static str, key: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict {
                what,
                key: key.to_owned(),
            };
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound {
                what: "user",
                key: key.to_owned(),
            };
        }
    }
    StoreError::Database(e)
}

#[async_trait]
impl<B> DurableStore for B
where
    B: SqlBackend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    <B::Db as Database>::Row: RecordRow,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<Vec<u8>>: Encode<'q, B::Db> + Type<B::Db>,
{
    async fn create_user(&self, u: &UserRecord) -> StoreResult<()> {
        let r = UserRow::of(u)?;
        sqlx::query(
            "INSERT INTO users (id, username, email, name, groups_json, attributes_json, disabled, \
             source, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.id)
        .bind(r.username)
        .bind(r.email)
        .bind(r.name)
        .bind(r.groups_json)
        .bind(r.attributes_json)
        .bind(r.disabled)
        .bind(r.source)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "user", &u.username))?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username{}",
            B::BYTE_ORDER
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, u: &UserRecord) -> StoreResult<()> {
        let r = UserRow::of(u)?;
        let done = sqlx::query(
            "UPDATE users SET username = $1, email = $2, name = $3, groups_json = $4, \
             attributes_json = $5, disabled = $6, source = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(r.username)
        .bind(r.email)
        .bind(r.name)
        .bind(r.groups_json)
        .bind(r.attributes_json)
        .bind(r.disabled)
        .bind(r.source)
        .bind(r.updated_at)
        .bind(r.id)
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "username", &u.username))?;
        if B::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound {
                what: "user",
                key: u.id.clone(),
            });
        }
        Ok(())
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(B::rows_affected(&done) > 0)
    }

    async fn create_factor(&self, f: &FactorRecord) -> StoreResult<()> {
        let r = FactorRow::of(f)?;
        sqlx::query(
            "INSERT INTO factors (id, user_id, kind, label, lookup_key, secret, data_json, \
             created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.id)
        .bind(r.user_id)
        .bind(r.kind)
        .bind(r.label)
        .bind(r.lookup_key)
        .bind(r.secret)
        .bind(r.data_json)
        .bind(r.created_at)
        .bind(r.last_used_at)
        .execute(self.pool())
        .await
        .map_err(|e| match map_write_err(e, "factor", &f.id) {
            StoreError::NotFound { what, .. } => StoreError::NotFound {
                what,
                key: f.user_id.clone(),
            },
            other => other,
        })?;
        Ok(())
    }

    async fn get_factor(&self, id: &str) -> StoreResult<Option<FactorRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM factors WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    async fn find_factor(&self, kind: &str, lookup_key: &str) -> StoreResult<Option<FactorRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM factors WHERE kind = $1 AND lookup_key = $2"
        ))
        .bind(kind)
        .bind(lookup_key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(factor_from_row).transpose()
    }

    async fn list_factors(&self, user_id: &str) -> StoreResult<Vec<FactorRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FACTOR_COLUMNS} FROM factors WHERE user_id = $1 ORDER BY created_at, {}",
            B::FACTOR_TIE_BREAK
        ))
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(factor_from_row).collect()
    }

    async fn update_factor(&self, f: &FactorRecord) -> StoreResult<()> {
        let r = FactorRow::of(f)?;
        let done = sqlx::query(
            "UPDATE factors SET label = $1, lookup_key = $2, secret = $3, data_json = $4, \
             last_used_at = $5 WHERE id = $6",
        )
        .bind(r.label)
        .bind(r.lookup_key)
        .bind(r.secret)
        .bind(r.data_json)
        .bind(r.last_used_at)
        .bind(r.id)
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "factor lookup key", r.lookup_key.unwrap_or_default()))?;
        if B::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound {
                what: "factor",
                key: f.id.clone(),
            });
        }
        Ok(())
    }

    async fn touch_factor(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE factors SET last_used_at = $1 WHERE id = $2")
            .bind(to_ms(&at))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(B::rows_affected(&done) > 0)
    }

    async fn delete_factor(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM factors WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(B::rows_affected(&done) > 0)
    }

    async fn delete_factors_for_user(&self, user_id: &str) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM factors WHERE user_id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(B::rows_affected(&done))
    }

    async fn put_device(&self, d: &DeviceRecord) -> StoreResult<()> {
        let r = DeviceRow::of(d)?;
        sqlx::query(
            "INSERT INTO devices (id, owner, data_json, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, \
             data_json = excluded.data_json, updated_at = excluded.updated_at",
        )
        .bind(r.id)
        .bind(r.owner)
        .bind(r.data_json)
        .bind(r.updated_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn get_device(&self, id: &str) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn list_devices(&self, owner: &str) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE owner = $1 ORDER BY id{}",
            B::BYTE_ORDER
        ))
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn delete_device(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(B::rows_affected(&done) > 0)
    }

    async fn append_audit(&self, e: &NewAuditEvent) -> StoreResult<AuditEvent> {
        let detail = json_text(&e.detail)?;
        let id = new_id();
        let time = to_ms(&e.time);
        let mut tx = self.begin_audit_append().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (prev_seq, prev_hash) = match head {
            Some(row) => (row.int("seq")?, row.text("hash")?),
            None => (0, AUDIT_GENESIS_HASH.to_owned()),
        };
        let seq = prev_seq + 1;
        let hash = audit_hash(
            &prev_hash,
            seq,
            &id,
            time,
            &e.kind,
            e.actor.as_deref(),
            e.subject.as_deref(),
            e.ip.as_deref(),
            &detail,
        );
        sqlx::query(
            "INSERT INTO audit_events (seq, id, time, kind, actor, subject, ip, detail_json, \
             prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind(id.as_str())
        .bind(time)
        .bind(e.kind.as_str())
        .bind(e.actor.as_deref())
        .bind(e.subject.as_deref())
        .bind(e.ip.as_deref())
        .bind(detail.as_str())
        .bind(prev_hash.as_str())
        .bind(hash.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(AuditEvent {
            seq,
            id,
            time: from_ms(time),
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            subject: e.subject.clone(),
            ip: e.ip.clone(),
            detail: parse_json("audit detail", &detail)?,
            detail_text: detail,
            prev_hash,
            hash,
        })
    }

    async fn list_audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE TRUE");
        let mut n = 0;
        let mut cond = |sql: &mut String, c: &str| {
            n += 1;
            sql.push_str(&format!(" AND {c} ${n}"));
        };
        if q.kind.is_some() {
            cond(&mut sql, "kind =");
        }
        if q.actor.is_some() {
            cond(&mut sql, "actor =");
        }
        if q.subject.is_some() {
            cond(&mut sql, "subject =");
        }
        if q.ip.is_some() {
            cond(&mut sql, "ip =");
        }
        if q.since.is_some() {
            cond(&mut sql, "time >=");
        }
        if q.until.is_some() {
            cond(&mut sql, "time <");
        }
        if q.after_seq.is_some() {
            cond(&mut sql, "seq >");
        }
        if !q.user.is_empty() {
            let names: Vec<String> = (0..q.user.len())
                .map(|i| format!("${}", n + 1 + i))
                .collect();
            let list = names.join(", ");
            sql.push_str(&format!(" AND (actor IN ({list}) OR subject IN ({list}))"));
            n += q.user.len();
        }
        let order = if q.newest_first { "DESC" } else { "ASC" };
        sql.push_str(&format!(" ORDER BY seq {order} LIMIT ${}", n + 1));
        let mut query = sqlx::query(&sql);
        if let Some(k) = &q.kind {
            query = query.bind(k.as_str());
        }
        if let Some(a) = &q.actor {
            query = query.bind(a.as_str());
        }
        if let Some(s) = &q.subject {
            query = query.bind(s.as_str());
        }
        if let Some(ip) = &q.ip {
            query = query.bind(ip.as_str());
        }
        if let Some(t) = &q.since {
            query = query.bind(to_ms(t));
        }
        if let Some(t) = &q.until {
            query = query.bind(to_ms(t));
        }
        if let Some(s) = q.after_seq {
            query = query.bind(s);
        }
        for u in &q.user {
            query = query.bind(u.as_str());
        }
        let rows = query
            .bind(q.effective_limit())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn append_decisions(&self, records: &[DecisionRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let insert = format!(
            "INSERT INTO decisions ({DECISION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT (request_id) DO NOTHING"
        );
        let mut tx = self.pool().begin().await?;
        for d in records {
            let report_only = json_text(&d.report_only)?;
            sqlx::query(&insert)
                .bind(d.request_id.as_str())
                .bind(to_ms(&d.time))
                .bind(d.kind.as_str())
                .bind(d.user.as_deref())
                .bind(d.session.as_deref())
                .bind(d.app.as_deref())
                .bind(d.route.as_deref())
                .bind(d.method.as_str())
                .bind(d.path.as_str())
                .bind(d.ip.as_deref())
                .bind(d.device.as_deref())
                .bind(d.policy.as_deref())
                .bind(d.policy_outcome.as_deref())
                .bind(d.outcome.as_str())
                .bind(report_only.as_str())
                .bind(d.detail.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_decision(&self, request_id: &str) -> StoreResult<Option<DecisionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions WHERE request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decision_from_row).transpose()
    }

    async fn list_decisions(&self, q: &DecisionQuery) -> StoreResult<Vec<DecisionRecord>> {
        self.scan_decisions(q)
            .await?
            .into_iter()
            .map(|d| d.map_err(|u| u.error))
            .collect()
    }

    async fn scan_decisions(&self, q: &DecisionQuery) -> StoreResult<Vec<ScannedDecision>> {
        let mut sql = format!("SELECT {DECISION_COLUMNS} FROM decisions WHERE TRUE");
        let mut n = 0;
        let mut cond = |sql: &mut String, c: &str| {
            n += 1;
            sql.push_str(&format!(" AND {c} ${n}"));
        };
        let texts = [
            ("user_name =", &q.user),
            ("app =", &q.app),
            ("outcome =", &q.outcome),
            ("policy =", &q.policy),
        ];
        for (c, v) in &texts {
            if v.is_some() {
                cond(&mut sql, c);
            }
        }
        if q.since.is_some() {
            cond(&mut sql, "time >=");
        }
        if q.until.is_some() {
            cond(&mut sql, "time <");
        }
        let (order, past) = if q.oldest_first {
            ("ASC", ">")
        } else {
            ("DESC", "<")
        };
        if q.after.is_some() {
            n += 2;
            sql.push_str(&format!(
                " AND (time {past} ${} OR (time = ${} AND request_id{} {past} ${n}))",
                n - 1,
                n - 1,
                B::BYTE_ORDER
            ));
        }
        // The request id breaks ties between decisions of the same millisecond.
        sql.push_str(&format!(
            " ORDER BY time {order}, request_id{} {order} LIMIT ${}",
            B::BYTE_ORDER,
            n + 1
        ));
        let mut query = sqlx::query(&sql);
        for (_, v) in &texts {
            if let Some(v) = v {
                query = query.bind(v.as_str());
            }
        }
        if let Some(t) = &q.since {
            query = query.bind(to_ms(t));
        }
        if let Some(t) = &q.until {
            query = query.bind(to_ms(t));
        }
        if let Some((t, id)) = &q.after {
            query = query.bind(to_ms(t)).bind(id.as_str());
        }
        let rows = query
            .bind(q.effective_limit())
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                decision_from_row(r).map_err(|error| UnreadableDecision {
                    request_id: r.text("request_id").unwrap_or_default(),
                    time: from_ms(r.int("time").unwrap_or(0)),
                    error,
                })
            })
            .collect())
    }

    async fn purge_decisions(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM decisions WHERE time < $1")
            .bind(to_ms(&before))
            .execute(self.pool())
            .await?;
        Ok(B::rows_affected(&done))
    }

    async fn create_admin_token(&self, t: &AdminToken) -> StoreResult<()> {
        let scopes = json_text(&t.scopes)?;
        sqlx::query(&format!(
            "INSERT INTO admin_tokens ({ADMIN_TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(t.id.as_str())
        .bind(t.name.as_str())
        .bind(t.token_sha256.as_str())
        .bind(scopes.as_str())
        .bind(to_ms(&t.created_at))
        .bind(to_ms(&t.expires_at))
        .bind(t.revoked_at.as_ref().map(to_ms))
        .bind(t.last_used_at.as_ref().map(to_ms))
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "admin token", &t.name))?;
        Ok(())
    }

    async fn find_admin_token(&self, token_sha256: &str) -> StoreResult<Option<AdminToken>> {
        let row = sqlx::query(&format!(
            "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE token_sha256 = $1"
        ))
        .bind(token_sha256)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(admin_token_from_row).transpose()
    }

    async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens ORDER BY name"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(admin_token_from_row).collect()
    }

    async fn revoke_admin_token(&self, name: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(to_ms(&at))
        .bind(name)
        .execute(self.pool())
        .await?;
        Ok(B::rows_affected(&done) > 0)
    }

    async fn touch_admin_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE admin_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(to_ms(&at))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(B::rows_affected(&done) > 0)
    }

    async fn trim_decisions(&self, keep: u64) -> StoreResult<u64> {
        // The newest record past the `keep` newest: it and everything older go.
        let offset = i64::try_from(keep).unwrap_or(i64::MAX);
        let cut = sqlx::query(&format!(
            "SELECT time, request_id FROM decisions \
             ORDER BY time DESC, request_id{order} DESC LIMIT 1 OFFSET $1",
            order = B::BYTE_ORDER
        ))
        .bind(offset)
        .fetch_optional(self.pool())
        .await?;
        let Some(cut) = cut else { return Ok(0) };
        let (time, id) = (cut.int("time")?, cut.text("request_id")?);
        let done = sqlx::query(&format!(
            "DELETE FROM decisions WHERE time < $1 OR (time = $1 AND request_id{order} <= $2)",
            order = B::BYTE_ORDER
        ))
        .bind(time)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(B::rows_affected(&done))
    }

    async fn audit_stream_cursor(&self, stream: &str) -> StoreResult<Option<i64>> {
        let row = sqlx::query("SELECT seq FROM audit_stream_cursors WHERE stream = $1")
            .bind(stream)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| r.int("seq")).transpose()
    }

    async fn set_audit_stream_cursor(&self, stream: &str, seq: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_stream_cursors (stream, seq, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
        )
        .bind(stream)
        .bind(seq)
        .bind(to_ms(&crate::model::now_ms()))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn save_policy_version(&self, v: &PolicyVersion) -> StoreResult<()> {
        // Only as the next number: a save based on a version that is no longer the newest
        // inserts nothing (or, racing another save, breaks the primary key).
        let done = sqlx::query(&format!(
            "INSERT INTO policy_versions ({POLICY_VERSION_COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE $1 = (SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions)"
        ))
        .bind(v.version)
        .bind(v.text.as_str())
        .bind(v.sha256.as_str())
        .bind(v.author.as_str())
        .bind(v.note.as_deref())
        .bind(v.rollback_of)
        .bind(to_ms(&v.created_at))
        .execute(self.pool())
        .await
        .map_err(|e| map_write_err(e, "policy version", &v.version.to_string()))?;
        if B::rows_affected(&done) == 0 {
            return Err(StoreError::Conflict {
                what: "policy version",
                key: v.version.to_string(),
            });
        }
        Ok(())
    }

    async fn get_policy_version(&self, version: i64) -> StoreResult<Option<PolicyVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {POLICY_VERSION_COLUMNS} FROM policy_versions WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(policy_version_from_row).transpose()
    }

    async fn latest_policy_version(&self) -> StoreResult<Option<PolicyVersion>> {
        Ok(self.list_policy_versions(None, 1).await?.into_iter().next())
    }

    async fn list_policy_versions(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<PolicyVersion>> {
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_VERSION_COLUMNS} FROM policy_versions WHERE version < $1 \
             ORDER BY version DESC LIMIT $2"
        ))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(policy_version_from_row).collect()
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> StoreResult<bool> {
        let now = to_ms(&crate::model::now_ms());
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        // Taken when free or expired, renewed when already the holder's; otherwise the
        // upsert's condition fails and nothing changes.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(B::rows_affected(&done) > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
