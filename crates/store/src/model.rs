//! The records the stores keep. Plain serde types; the backends map them to tables and keys.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{StoreError, StoreResult};
use crate::json_text::JsonText;
use crate::secrets::SealedSecret;

/// The factor kind of a password (its PHC hash is the factor's sealed secret).
pub const PASSWORD_FACTOR_KIND: &str = "password";

/// A user attribute: one string or a list of strings (the policy's type, kept as is).
pub use stepgate_policy::AttributeValue;

/// Where a user record is managed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    /// Created in the store (admin API, CLI, self-registration).
    #[default]
    Local,
    /// Declared in the configuration file and synced on start ([`crate::sync_users`]); edits
    /// made elsewhere are overwritten at the next start.
    Config,
    /// Created at a first sign-in through an upstream identity provider and refreshed from
    /// it at each one; the provider and the upstream subject are the user's
    /// [`UPSTREAM_LINK_KIND`] factor record.
    Upstream,
}

/// The factor-record kind linking a user to an upstream identity provider's subject: its
/// lookup key is `<provider>\n<sub>` (no secret; never a factor one can pass here).
pub const UPSTREAM_LINK_KIND: &str = "upstream_link";

impl UserSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UserSource::Local => "local",
            UserSource::Config => "config",
            UserSource::Upstream => "upstream",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(UserSource::Local),
            "config" => Some(UserSource::Config),
            "upstream" => Some(UserSource::Upstream),
            _ => None,
        }
    }
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Stable id (never reused; factors and devices refer to it).
    pub id: String,
    /// The sign-in name, unique.
    pub username: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Groups and roles.
    pub groups: Vec<String>,
    /// Free-form attributes read by policies.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// A disabled user cannot sign in.
    pub disabled: bool,
    /// Where the record is managed.
    pub source: UserSource,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl UserRecord {
    /// A new enabled local user with a fresh id and no attributes.
    pub fn new(username: impl Into<String>) -> Self {
        let now = now_ms();
        UserRecord {
            id: new_id(),
            username: username.into(),
            email: None,
            name: None,
            groups: Vec::new(),
            attributes: BTreeMap::new(),
            disabled: false,
            source: UserSource::Local,
            created_at: now,
            updated_at: now,
        }
    }
}

/// An enrolled authenticator of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactorRecord {
    /// Stable id.
    pub id: String,
    /// The owning user's id.
    pub user_id: String,
    /// `password`, `totp`, `webauthn`, `email_otp`, `sms_otp`, `recovery_codes`,
    /// `security_questions`, …
    pub kind: String,
    /// A label the user chose ("YubiKey 5", "phone").
    pub label: String,
    /// A key to find the factor by without the user (e.g. a WebAuthn credential id), unique
    /// per `kind`. See [`crate::DurableStore::find_factor`].
    pub lookup_key: Option<String>,
    /// The secret, sealed with [`crate::SecretKey::seal`] under
    /// [`crate::factor_context`]`(user_id, id)`. Never in clear.
    pub secret: Option<SealedSecret>,
    /// Public parameters (algorithm, digits, phone number, credential public key, …).
    pub data: serde_json::Value,
    /// When it was enrolled.
    pub created_at: DateTime<Utc>,
    /// When it was last used successfully.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl FactorRecord {
    /// A new factor with a fresh id, no secret and empty data.
    pub fn new(
        user_id: impl Into<String>,
        kind: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        FactorRecord {
            id: new_id(),
            user_id: user_id.into(),
            kind: kind.into(),
            label: label.into(),
            lookup_key: None,
            secret: None,
            data: serde_json::Value::Object(Default::default()),
            created_at: now_ms(),
            last_used_at: None,
        }
    }
}

/// A known device (the devices issue extends `data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Stable id.
    pub id: String,
    /// The user it is registered to, if any.
    pub owner: Option<String>,
    /// Everything else (posture, hostname, certificates, …).
    pub data: serde_json::Value,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// An audit event to append; the store assigns its sequence number, id and chain hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What happened (`login.success`, `stepup.failure`, `factor.enrolled`, …).
    pub kind: String,
    /// Who did it (a user id, `admin:…`, `system`).
    pub actor: Option<String>,
    /// What it was done to (a user id, a factor id, an app).
    pub subject: Option<String>,
    /// The client IP.
    pub ip: Option<String>,
    /// Everything else. Never a secret or an OTP.
    pub detail: serde_json::Value,
}

impl NewAuditEvent {
    /// An event of `kind` happening now, with no actor, subject, IP or detail.
    pub fn now(kind: impl Into<String>) -> Self {
        NewAuditEvent {
            time: now_ms(),
            kind: kind.into(),
            actor: None,
            subject: None,
            ip: None,
            detail: serde_json::Value::Null,
        }
    }
}

/// An appended audit event. The log is append-only and hash-chained: each event's `hash`
/// covers its content and the previous event's hash (see [`crate::verify_audit_chain`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the log, 1, 2, 3, … in append order.
    pub seq: i64,
    /// Unique id.
    pub id: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What happened.
    pub kind: String,
    /// Who did it.
    pub actor: Option<String>,
    /// What it was done to.
    pub subject: Option<String>,
    /// The client IP.
    pub ip: Option<String>,
    /// Everything else.
    pub detail: serde_json::Value,
    /// `detail` exactly as the store keeps it: the text the chain hash covers (empty for an
    /// event that did not come from a store, e.g. read back from an export). Another build
    /// of stepgate may have written it, and builds order an object's keys differently:
    /// serialising `detail` again need not give the same text back.
    #[serde(skip)]
    pub detail_text: String,
    /// The previous event's hash (all zeros for the first), hex.
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this event's content, hex.
    pub hash: String,
}

/// The hash of the (absent) event before the first.
pub const AUDIT_GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Computes an audit event's chain hash. `detail_json` is the detail exactly as stored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn audit_hash(
    prev_hash: &str,
    seq: i64,
    id: &str,
    time_ms: i64,
    kind: &str,
    actor: Option<&str>,
    subject: Option<&str>,
    ip: Option<&str>,
    detail_json: &str,
) -> String {
    let mut h = Sha256::new();
    // Length-prefixed fields so that no two different events hash the same input.
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(prev_hash.as_bytes());
    field(&seq.to_be_bytes());
    field(id.as_bytes());
    field(&time_ms.to_be_bytes());
    field(kind.as_bytes());
    for o in [actor, subject, ip] {
        match o {
            Some(s) => {
                field(b"1");
                field(s.as_bytes());
            }
            None => field(b"0"),
        }
    }
    field(detail_json.as_bytes());
    hex(&h.finalize())
}

/// Filters for reading the audit log. All set filters must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only events this user did or that were done to them: any of these names (a
    /// username, a user id) as the actor or the subject.
    #[serde(default)]
    pub user: Vec<String>,
    /// Only events from this client address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only events with `seq` greater than this (for paging forward).
    pub after_seq: Option<i64>,
    /// Newest first instead of append order.
    pub newest_first: bool,
    /// At most this many (0 means the default of 1000).
    pub limit: u32,
}

impl AuditQuery {
    pub(crate) fn effective_limit(&self) -> i64 {
        if self.limit == 0 {
            1000
        } else {
            i64::from(self.limit)
        }
    }
}

/// A session as the hot store keeps it: the owner for "sign out everywhere", and the rest
/// opaque to the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The signed-in user's id.
    pub user_id: String,
    /// Whatever the server keeps in a session (factors used, AAL, auth time, device, …).
    pub data: serde_json::Value,
    /// When it expires unless touched.
    pub expires_at: DateTime<Utc>,
}

/// The outcome of [`crate::HotStore::replace_session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionWrite {
    /// The session still held the state the caller read; it now holds the new one.
    Written,
    /// The session is live but its state changed since the caller read it (another node
    /// marked it, bound it, or recorded activity): nothing was written.
    Changed,
    /// The session is gone (deleted, signed out, expired, never existed): nothing was written.
    Gone,
}

/// The outcome of [`crate::HotStore::check_otp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtpCheck {
    /// The code matched; it is now consumed.
    Valid,
    /// The code did not match; this many attempts remain (0: the code is now gone).
    Invalid {
        /// Attempts left before the code is discarded.
        attempts_left: u32,
    },
    /// No code is pending (never issued, expired, used, or attempts exhausted).
    Missing,
}

/// A fresh random id: 128 bits, lowercase hex.
pub fn new_id() -> String {
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut b = [0u8; 16];
    chacha20poly1305::aead::OsRng.fill_bytes(&mut b);
    hex(&b)
}

pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Now, truncated to the millisecond (what the stores keep), so a record read back equals the
/// one written.
pub fn now_ms() -> DateTime<Utc> {
    from_ms(Utc::now().timestamp_millis())
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub(crate) fn to_ms(t: &DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A TTL in milliseconds, saturating far beyond any real TTL.
pub(crate) fn ttl_ms(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

/// The JSON text a store keeps for `v` (user groups and attributes, factor and device data,
/// audit detail, session data).
pub(crate) fn json_text<T: Serialize + ?Sized>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Invalid(format!("value is not serializable: {e}")))
}

/// Whether the session state a store holds as `held`, which is not the text `kept` a
/// conditional write compared it with, is `expected` spelled otherwise: the same JSON value
/// with its keys in another order, other spacing or other escapes. A conditional session
/// write ([`crate::HotStore::replace_session`]) compares states as text; text written by
/// another build of stepgate (serde_json orders an object's keys as inserted when some
/// crate in the build turns on its `preserve_order` feature, sorted otherwise) or by hand
/// would otherwise refuse every activity stamp over it, and the session would idle out
/// while in use. The write then goes over `held`, still conditionally.
pub(crate) fn another_spelling(held: &str, kept: &str, expected: &serde_json::Value) -> bool {
    held != kept && serde_json::from_str::<serde_json::Value>(held).is_ok_and(|v| v == *expected)
}

/// Reads back JSON text a store kept; [`StoreError::Corrupt`] naming `what` if it does not
/// decode.
pub(crate) fn parse_json<T: DeserializeOwned>(what: &'static str, s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::corrupt(what, e))
}

/// Constant-time equality for short secrets (OTP hashes).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    std::hint::black_box(d) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_from_yaml_and_json() {
        let m: BTreeMap<String, AttributeValue> =
            marked_yaml::from_yaml(0, "dept: sales\nlevel: 3\nregions: [eu, us]\n").unwrap();
        assert_eq!(m["dept"], AttributeValue::One("sales".into()));
        assert_eq!(m["level"], AttributeValue::One("3".into()));
        assert_eq!(
            m["regions"],
            AttributeValue::Many(vec!["eu".into(), "us".into()])
        );
        let j = serde_json::to_string(&m).unwrap();
        let back: BTreeMap<String, AttributeValue> = serde_json::from_str(&j).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn ids_are_unique_hex() {
        let a = new_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_id());
    }

    #[test]
    fn audit_hash_depends_on_every_field() {
        let base = audit_hash("p", 1, "i", 5, "k", Some("a"), None, None, "{}");
        assert_ne!(
            base,
            audit_hash("p", 2, "i", 5, "k", Some("a"), None, None, "{}")
        );
        assert_ne!(
            base,
            audit_hash("p", 1, "i", 5, "k", None, Some("a"), None, "{}")
        );
        assert_ne!(
            base,
            audit_hash("q", 1, "i", 5, "k", Some("a"), None, None, "{}")
        );
        assert_eq!(
            base,
            audit_hash("p", 1, "i", 5, "k", Some("a"), None, None, "{}")
        );
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}

/// One decision of the access pipeline, as the decision log keeps it: who asked for what,
/// from where, which policy decided and how, what the report-only policies would have
/// done, and (in `detail`) the requirement, the context the policies read and the trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The request's id (also returned to the client); unique.
    pub request_id: String,
    /// When it was decided.
    pub time: DateTime<Utc>,
    /// `access` or `sign_in`.
    pub kind: String,
    /// The user's name, when the request came from one.
    pub user: Option<String>,
    /// The session's handle (a MAC of its id, never the id).
    pub session: Option<String>,
    /// The app's id.
    pub app: Option<String>,
    /// The app route the request matched (its name, else its path pattern).
    pub route: Option<String>,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The client address.
    pub ip: Option<String>,
    /// The device the request was bound to.
    pub device: Option<String>,
    /// The deciding policy (none: the default outcome, or no decision was reached).
    pub policy: Option<String>,
    /// What the policy decided (`allow`, `step_up`, `deny`); none when the request never
    /// reached the policies.
    pub policy_outcome: Option<String>,
    /// What happened to the request: `allow`, `step_up`, `deny`, `sign_in` or `unavailable`.
    pub outcome: String,
    /// The report-only policies that matched ahead of the decision and what each would have
    /// done: `[{"policy": …, "outcome": …, "requirement": …}]`.
    pub report_only: serde_json::Value,
    /// Everything else: the requirement, the context, the trace, the configuration version
    /// (kept as its JSON text: written far more often than read).
    pub detail: JsonText,
}

/// A decision-log row whose recorded fields do not read (a corrupted or hand-edited row):
/// what [`crate::DurableStore::scan_decisions`] returns in its place, so that a reader of
/// many records can skip it and go on.
#[derive(Debug)]
pub struct UnreadableDecision {
    /// The row's request id (empty when that too does not read).
    pub request_id: String,
    /// The row's time (the epoch when that too does not read).
    pub time: DateTime<Utc>,
    /// Why it does not read.
    pub error: crate::StoreError,
}

/// A row of the decision log as [`crate::DurableStore::scan_decisions`] reads it.
pub type ScannedDecision = Result<DecisionRecord, UnreadableDecision>;

/// Filters for reading the decision log. All set filters must match; newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionQuery {
    /// Only this user's.
    pub user: Option<String>,
    /// Only this app's.
    pub app: Option<String>,
    /// Only this outcome (`allow`, `step_up`, `deny`, `sign_in`, `unavailable`).
    pub outcome: Option<String>,
    /// Only those this policy decided.
    pub policy: Option<String>,
    /// Only decisions at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only decisions before this time.
    pub until: Option<DateTime<Utc>>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// Only decisions after this one in the listing's order (its time and request id, from
    /// the last record of the previous page): pages that neither skip nor repeat a decision
    /// however many share a millisecond.
    pub after: Option<(DateTime<Utc>, String)>,
    /// At most this many (0 means the default of 1000).
    pub limit: u32,
}

impl DecisionQuery {
    pub(crate) fn effective_limit(&self) -> i64 {
        if self.limit == 0 {
            1000
        } else {
            i64::from(self.limit)
        }
    }
}

/// A token of the admin API (`stepgate admin token create`): kept only as the SHA-256 of the
/// token (shown once when made), with the name every use is audited under, its scopes and
/// its expiry. Revoked tokens stay listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminToken {
    /// Its id.
    pub id: String,
    /// Its name, unique: the audit log names the token by it.
    pub name: String,
    /// The lower-case hex SHA-256 of the token; unique.
    pub token_sha256: String,
    /// What it may do (`users:read`, `users:write`, …).
    pub scopes: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One saved version of the policy set (`admin.policy_edits: store`): the YAML text of a
/// `policies:` document, numbered from 1 in the order saved. The newest is the one in force;
/// a rollback saves an older one's text again as the newest, so history only grows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Its number: one more than the version before it.
    pub version: i64,
    /// The policy set as YAML (`policies: [...]`).
    pub text: String,
    /// The lower-case hex SHA-256 of `text`.
    pub sha256: String,
    /// Who saved it, as the audit log names them (`admin:<username>`, `admin:token:<name>`).
    pub author: String,
    /// Why, in the author's words.
    pub note: Option<String>,
    /// The version whose text this one restores, when it is a rollback.
    pub rollback_of: Option<i64>,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
}

impl PolicyVersion {
    /// Version `version` of `text`, saved now by `author`.
    pub fn new(version: i64, text: impl Into<String>, author: impl Into<String>) -> Self {
        let text = text.into();
        PolicyVersion {
            version,
            sha256: hex(&Sha256::digest(text.as_bytes())),
            text,
            author: author.into(),
            note: None,
            rollback_of: None,
            created_at: now_ms(),
        }
    }
}
