//! The durable records as table rows, one mapping for SQLite and PostgreSQL.
//!
//! Both schemas (`migrations/sqlite`, `migrations/postgres`) give the durable tables the same
//! columns: text, 64-bit integers (times in Unix milliseconds), one flag (`users.disabled`:
//! INTEGER 0/1 in SQLite, BOOLEAN in PostgreSQL, both read and written as `bool`) and bytes
//! (sealed secrets). A record becomes a row's values here (`*Row`), and a row read back becomes
//! a record here (`*_from_row`, over [`RecordRow`], which rows of either backend are). The
//! statements that move them live in [`crate::sql_durable`].

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::error::{StoreError, StoreResult};
use crate::json_text::JsonText;
use crate::model::{
    from_ms, json_text, parse_json, to_ms, AdminToken, AuditEvent, DecisionRecord, DeviceRecord,
    FactorRecord, PolicyVersion, UserRecord, UserSource,
};
use crate::secrets::SealedSecret;

/// The `users` columns [`user_from_row`] reads, in table order.
pub(crate) const USER_COLUMNS: &str = "id, username, email, name, groups_json, attributes_json, \
     disabled, source, created_at, updated_at";
/// The `factors` columns [`factor_from_row`] reads, in table order.
pub(crate) const FACTOR_COLUMNS: &str =
    "id, user_id, kind, label, lookup_key, secret, data_json, created_at, last_used_at";
/// The `devices` columns [`device_from_row`] reads, in table order.
pub(crate) const DEVICE_COLUMNS: &str = "id, owner, data_json, updated_at";
/// The `audit_events` columns [`audit_from_row`] reads, in table order.
pub(crate) const AUDIT_COLUMNS: &str =
    "seq, id, time, kind, actor, subject, ip, detail_json, prev_hash, hash";
/// The columns of `decisions`, in [`decision_from_row`]'s order.
pub(crate) const DECISION_COLUMNS: &str = "request_id, time, kind, user_name, session_handle, \
     app, route, method, path, ip, device, policy, policy_outcome, outcome, report_only_json, \
     detail_json";

/// The columns of `admin_tokens`, in [`admin_token_from_row`]'s order.
pub(crate) const POLICY_VERSION_COLUMNS: &str =
    "version, text, sha256, author, note, rollback_of, created_at";

pub(crate) const ADMIN_TOKEN_COLUMNS: &str =
    "id, name, token_sha256, scopes_json, created_at, expires_at, revoked_at, last_used_at";

/// A result row of either backend, read by column name as the durable tables' column types.
pub(crate) trait RecordRow {
    /// A `TEXT NOT NULL` column.
    fn text(&self, column: &str) -> StoreResult<String>;
    /// A nullable `TEXT` column.
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    /// A 64-bit integer column (a time in ms, a sequence number).
    fn int(&self, column: &str) -> StoreResult<i64>;
    /// A nullable 64-bit integer column.
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    /// A flag column.
    fn flag(&self, column: &str) -> StoreResult<bool>;
    /// A nullable bytes column.
    fn opt_bytes(&self, column: &str) -> StoreResult<Option<Vec<u8>>>;
}

// One implementation for every sqlx row whose database decodes these Rust types: SQLite's
// and PostgreSQL's rows both qualify.
impl<R> RecordRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> StoreResult<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> StoreResult<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> StoreResult<bool> {
        Ok(self.try_get(column)?)
    }

    fn opt_bytes(&self, column: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.try_get(column)?)
    }
}

/// A user as its `users` row holds it.
pub(crate) struct UserRow<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub groups_json: String,
    pub attributes_json: String,
    pub disabled: bool,
    pub source: &'static str,
    pub created_at: i64,
    pub updated_at: i64,
}

impl<'a> UserRow<'a> {
    /// The row values of `u`.
    pub fn of(u: &'a UserRecord) -> StoreResult<Self> {
        Ok(UserRow {
            id: &u.id,
            username: &u.username,
            email: u.email.as_deref(),
            name: u.name.as_deref(),
            groups_json: json_text(&u.groups)?,
            attributes_json: json_text(&u.attributes)?,
            disabled: u.disabled,
            source: u.source.as_str(),
            created_at: to_ms(&u.created_at),
            updated_at: to_ms(&u.updated_at),
        })
    }
}

/// The user in a row of [`USER_COLUMNS`].
pub(crate) fn user_from_row(r: &impl RecordRow) -> StoreResult<UserRecord> {
    let source = r.text("source")?;
    Ok(UserRecord {
        id: r.text("id")?,
        username: r.text("username")?,
        email: r.opt_text("email")?,
        name: r.opt_text("name")?,
        groups: parse_json("user groups", &r.text("groups_json")?)?,
        attributes: parse_json("user attributes", &r.text("attributes_json")?)?,
        disabled: r.flag("disabled")?,
        source: UserSource::parse(&source)
            .ok_or_else(|| StoreError::corrupt("user source", &source))?,
        created_at: from_ms(r.int("created_at")?),
        updated_at: from_ms(r.int("updated_at")?),
    })
}

/// A factor as its `factors` row holds it.
pub(crate) struct FactorRow<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub kind: &'a str,
    pub label: &'a str,
    pub lookup_key: Option<&'a str>,
    pub secret: Option<Vec<u8>>,
    pub data_json: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl<'a> FactorRow<'a> {
    /// The row values of `f`.
    pub fn of(f: &'a FactorRecord) -> StoreResult<Self> {
        Ok(FactorRow {
            id: &f.id,
            user_id: &f.user_id,
            kind: &f.kind,
            label: &f.label,
            lookup_key: f.lookup_key.as_deref(),
            secret: f.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            data_json: json_text(&f.data)?,
            created_at: to_ms(&f.created_at),
            last_used_at: f.last_used_at.as_ref().map(to_ms),
        })
    }
}

/// The factor in a row of [`FACTOR_COLUMNS`].
pub(crate) fn factor_from_row(r: &impl RecordRow) -> StoreResult<FactorRecord> {
    Ok(FactorRecord {
        id: r.text("id")?,
        user_id: r.text("user_id")?,
        kind: r.text("kind")?,
        label: r.text("label")?,
        lookup_key: r.opt_text("lookup_key")?,
        secret: r.opt_bytes("secret")?.map(SealedSecret::from_bytes),
        data: parse_json("factor data", &r.text("data_json")?)?,
        created_at: from_ms(r.int("created_at")?),
        last_used_at: r.opt_int("last_used_at")?.map(from_ms),
    })
}

/// A device as its `devices` row holds it.
pub(crate) struct DeviceRow<'a> {
    pub id: &'a str,
    pub owner: Option<&'a str>,
    pub data_json: String,
    pub updated_at: i64,
}

impl<'a> DeviceRow<'a> {
    /// The row values of `d`.
    pub fn of(d: &'a DeviceRecord) -> StoreResult<Self> {
        Ok(DeviceRow {
            id: &d.id,
            owner: d.owner.as_deref(),
            data_json: json_text(&d.data)?,
            updated_at: to_ms(&d.updated_at),
        })
    }
}

/// The device in a row of [`DEVICE_COLUMNS`].
pub(crate) fn device_from_row(r: &impl RecordRow) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        id: r.text("id")?,
        owner: r.opt_text("owner")?,
        data: parse_json("device data", &r.text("data_json")?)?,
        updated_at: from_ms(r.int("updated_at")?),
    })
}

/// The audit event in a row of [`AUDIT_COLUMNS`].
pub(crate) fn audit_from_row(r: &impl RecordRow) -> StoreResult<AuditEvent> {
    let detail_text = r.text("detail_json")?;
    Ok(AuditEvent {
        seq: r.int("seq")?,
        id: r.text("id")?,
        time: from_ms(r.int("time")?),
        kind: r.text("kind")?,
        actor: r.opt_text("actor")?,
        subject: r.opt_text("subject")?,
        ip: r.opt_text("ip")?,
        detail: parse_json("audit detail", &detail_text)?,
        detail_text,
        prev_hash: r.text("prev_hash")?,
        hash: r.text("hash")?,
    })
}

/// The decision in a row of [`DECISION_COLUMNS`].
pub(crate) fn decision_from_row(r: &impl RecordRow) -> StoreResult<DecisionRecord> {
    Ok(DecisionRecord {
        request_id: r.text("request_id")?,
        time: from_ms(r.int("time")?),
        kind: r.text("kind")?,
        user: r.opt_text("user_name")?,
        session: r.opt_text("session_handle")?,
        app: r.opt_text("app")?,
        route: r.opt_text("route")?,
        method: r.text("method")?,
        path: r.text("path")?,
        ip: r.opt_text("ip")?,
        device: r.opt_text("device")?,
        policy: r.opt_text("policy")?,
        policy_outcome: r.opt_text("policy_outcome")?,
        outcome: r.text("outcome")?,
        report_only: parse_json("decision report-only", &r.text("report_only_json")?)?,
        detail: JsonText::parse(r.text("detail_json")?)
            .map_err(|e| StoreError::corrupt("decision detail", e))?,
    })
}

/// The admin token in a row of [`ADMIN_TOKEN_COLUMNS`].
pub(crate) fn admin_token_from_row(r: &impl RecordRow) -> StoreResult<AdminToken> {
    Ok(AdminToken {
        id: r.text("id")?,
        name: r.text("name")?,
        token_sha256: r.text("token_sha256")?,
        scopes: parse_json("admin token scopes", &r.text("scopes_json")?)?,
        created_at: from_ms(r.int("created_at")?),
        expires_at: from_ms(r.int("expires_at")?),
        revoked_at: r.opt_int("revoked_at")?.map(from_ms),
        last_used_at: r.opt_int("last_used_at")?.map(from_ms),
    })
}

/// The policy version in a row of [`POLICY_VERSION_COLUMNS`].
pub(crate) fn policy_version_from_row(r: &impl RecordRow) -> StoreResult<PolicyVersion> {
    Ok(PolicyVersion {
        version: r.int("version")?,
        text: r.text("text")?,
        sha256: r.text("sha256")?,
        author: r.text("author")?,
        note: r.opt_text("note")?,
        rollback_of: r.opt_int("rollback_of")?,
        created_at: from_ms(r.int("created_at")?),
    })
}
