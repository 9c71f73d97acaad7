//! Audit events as OCSF 1.1 events: sign-ins, step-ups and sign-outs as **Authentication**
//! (class 3002), changes to an account as **Account Change** (class 3001), the rest as
//! **Base Event** (class 0) with the original kind kept. `stepgate audit export --format
//! ocsf` and the SIEM streams (`audit.stream[].format: ocsf`) both use [`to_ocsf`], so a SIEM
//! sees the same document whichever way it gets the event. docs/operations.md has the table.

use serde_json::{json, Map, Value};
use stepgate_store::AuditEvent;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// Identity & Access Management.
const IAM: u32 = 3;
/// Class uids.
const ACCOUNT_CHANGE: u32 = 3001;
const AUTHENTICATION: u32 = 3002;
const BASE_EVENT: u32 = 0;

/// Whether an event reports something that worked or something that was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `status_id` 1.
    Success,
    /// `status_id` 2.
    Failure,
}

/// Where an audit kind lands in OCSF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// `class_uid`.
    pub class_uid: u32,
    /// `activity_id`.
    pub activity_id: u32,
    /// `activity_name`.
    pub activity: &'static str,
    /// `status_id`.
    pub status: Status,
    /// `severity_id`: 1 informational, 2 low, 3 medium, 4 high.
    pub severity_id: u32,
}

const fn m(
    class_uid: u32,
    activity_id: u32,
    activity: &'static str,
    status: Status,
    severity_id: u32,
) -> Mapping {
    Mapping {
        class_uid,
        activity_id,
        activity,
        status,
        severity_id,
    }
}

/// The OCSF class, activity, status and severity of an audit `kind`.
pub fn mapping(kind: &str) -> Mapping {
    use Status::{Failure, Success};
    match kind {
        // Authentication (3002): 1 Logon, 2 Logoff, 99 Other.
        "signin.success" | "login.success" | "signin.upstream" => {
            m(AUTHENTICATION, 1, "Logon", Success, 1)
        }
        "signin.denied"
        | "login.failure"
        | "signin.failure"
        | "signin.upstream_refused"
        | "signin.directory_unavailable"
        | "signin.cancelled" => m(AUTHENTICATION, 1, "Logon", Failure, 2),
        "stepup.success" | "stepup.upstream" => m(AUTHENTICATION, 99, "Step-up", Success, 1),
        "stepup.failure" => m(AUTHENTICATION, 99, "Step-up", Failure, 2),
        "signout" | "sessions.ended" => m(AUTHENTICATION, 2, "Logoff", Success, 1),
        // Account Change (3001).
        "user.created" => m(ACCOUNT_CHANGE, 1, "Create", Success, 1),
        "user.enabled" => m(ACCOUNT_CHANGE, 2, "Enable", Success, 1),
        "password.changed" | "password.set" => m(ACCOUNT_CHANGE, 3, "Password Change", Success, 1),
        "password.reset_code_used" => m(ACCOUNT_CHANGE, 4, "Password Reset", Success, 2),
        "user.disabled" => m(ACCOUNT_CHANGE, 5, "Disable", Success, 2),
        "user.deleted" => m(ACCOUNT_CHANGE, 6, "Delete", Success, 2),
        "authn.lockout" => m(ACCOUNT_CHANGE, 9, "Lock", Success, 3),
        "factor.enrolled" => m(ACCOUNT_CHANGE, 10, "MFA Factor Enable", Success, 1),
        "factor.removed" => m(ACCOUNT_CHANGE, 11, "MFA Factor Disable", Success, 2),
        "authn.unlock" => m(ACCOUNT_CHANGE, 12, "Unlock", Success, 2),
        "user.groups_changed" | "user.attribute_set" | "user.attribute_removed" | "user.linked" => {
            m(ACCOUNT_CHANGE, 99, "Other", Success, 1)
        }
        // Everything else: devices, CAEP, rate limits, IP bans, links sent.
        k if k.ends_with(".rejected") || k.ends_with(".refused") || k == "authn.ip_ban" => {
            m(BASE_EVENT, 99, "Other", Failure, 3)
        }
        k if k.ends_with("rate_limited") => m(BASE_EVENT, 99, "Other", Failure, 2),
        _ => m(BASE_EVENT, 99, "Other", Success, 1),
    }
}

fn severity_name(id: u32) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        _ => "Unknown",
    }
}

fn class_name(uid: u32) -> &'static str {
    match uid {
        AUTHENTICATION => "Authentication",
        ACCOUNT_CHANGE => "Account Change",
        _ => "Base Event",
    }
}

/// The user an event is about: the account changed for Account Change, the person signing
/// in for Authentication. Names are usernames where stepgate knows them (`detail.username`,
/// the actor of a portal event) and user ids otherwise.
fn user_of(e: &AuditEvent, m: &Mapping) -> Value {
    let detail_name = e.detail.get("username").and_then(Value::as_str);
    let actor = e.actor.as_deref().filter(|a| !is_operator(a));
    let mut u = Map::new();
    match m.class_uid {
        ACCOUNT_CHANGE => {
            if let Some(s) = &e.subject {
                u.insert("uid".into(), s.clone().into());
            }
            if let Some(n) = detail_name.or(if e.subject.is_none() { actor } else { None }) {
                u.insert("name".into(), n.into());
            }
        }
        _ => {
            if let Some(n) = detail_name.or(actor) {
                u.insert("name".into(), n.into());
            }
            if let Some(s) = &e.subject {
                u.insert("uid".into(), s.clone().into());
            }
        }
    }
    Value::Object(u)
}

/// `admin:cli`, `system`: not a person signing in.
fn is_operator(actor: &str) -> bool {
    actor == "system" || actor.starts_with("admin:")
}

/// The audit event as one OCSF event.
pub fn to_ocsf(e: &AuditEvent) -> Value {
    let m = mapping(&e.kind);
    let category_uid = if m.class_uid == BASE_EVENT { 0 } else { IAM };
    let mut src = Map::new();
    if let Some(ip) = &e.ip {
        src.insert("ip".into(), ip.clone().into());
    }
    let (status, status_id) = match m.status {
        Status::Success => ("Success", 1),
        Status::Failure => ("Failure", 2),
    };
    let mut v = json!({
        "class_uid": m.class_uid,
        "class_name": class_name(m.class_uid),
        "category_uid": category_uid,
        "category_name": if category_uid == IAM { "Identity & Access Management" } else { "Uncategorized" },
        "activity_id": m.activity_id,
        "activity_name": m.activity,
        "type_uid": u64::from(m.class_uid) * 100 + u64::from(m.activity_id),
        "severity_id": m.severity_id,
        "severity": severity_name(m.severity_id),
        "status_id": status_id,
        "status": status,
        "time": e.time.timestamp_millis(),
        "message": e.kind,
        "user": user_of(e, &m),
        "src_endpoint": Value::Object(src),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": e.id,
            "sequence": e.seq,
            "log_name": "audit",
            "product": {
                "name": "stepgate",
                "vendor_name": "stepgate",
                "version": env!("CARGO_PKG_VERSION"),
            },
        },
        "unmapped": {
            "kind": e.kind,
            "actor": e.actor,
            "subject": e.subject,
            "detail": e.detail,
            "hash": e.hash,
        },
    });
    if let Some(a) = &e.actor {
        // Who made the change (an administrator, `system` for a lockout), or who signed in.
        v["actor"] = json!({ "user": { "name": a } });
    }
    if m.class_uid == AUTHENTICATION && m.activity_id == 99 {
        v["is_mfa"] = true.into();
    }
    if m.status == Status::Failure {
        if let Some(r) = e.detail.get("reason").and_then(Value::as_str) {
            v["status_detail"] = r.into();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event(kind: &str, actor: Option<&str>, subject: Option<&str>, detail: Value) -> AuditEvent {
        AuditEvent {
            seq: 7,
            id: "ev-7".into(),
            time: chrono::Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            kind: kind.into(),
            actor: actor.map(str::to_string),
            subject: subject.map(str::to_string),
            ip: Some("203.0.113.9".into()),
            detail,
            detail_text: String::new(),
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        }
    }

    #[test]
    fn a_sign_in_is_an_authentication_logon() {
        let v = to_ocsf(&event(
            "signin.success",
            Some("alice"),
            None,
            json!({"aal": 2}),
        ));
        assert_eq!(v["class_uid"], 3002);
        assert_eq!(v["category_uid"], 3);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["type_uid"], 300201);
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["severity_id"], 1);
        assert_eq!(v["time"], 1_700_000_000_123i64);
        assert_eq!(v["user"]["name"], "alice");
        assert_eq!(v["src_endpoint"]["ip"], "203.0.113.9");
        assert_eq!(v["metadata"]["product"]["name"], "stepgate");
        assert_eq!(v["metadata"]["version"], OCSF_VERSION);
        assert_eq!(v["metadata"]["sequence"], 7);
    }

    #[test]
    fn a_refused_sign_in_is_a_failed_logon() {
        let v = to_ocsf(&event(
            "signin.denied",
            Some("bob"),
            None,
            json!({"reason": "policy"}),
        ));
        assert_eq!(
            (v["class_uid"].clone(), v["status"].clone()),
            (json!(3002), json!("Failure"))
        );
        assert_eq!(v["status_detail"], "policy");
        assert_eq!(v["severity_id"], 2);
    }

    #[test]
    fn account_changes_name_the_account_not_the_operator() {
        let v = to_ocsf(&event(
            "authn.lockout",
            Some("system"),
            Some("u-123"),
            json!({"username": "carol"}),
        ));
        assert_eq!(v["class_uid"], 3001);
        assert_eq!(v["activity_id"], 9);
        assert_eq!(v["type_uid"], 300109);
        assert_eq!(v["user"], json!({"uid": "u-123", "name": "carol"}));
        assert_eq!(v["actor"]["user"]["name"], "system");
        let v = to_ocsf(&event(
            "factor.enrolled",
            Some("carol"),
            Some("u-123"),
            json!({}),
        ));
        assert_eq!(
            (v["activity_id"].clone(), v["type_uid"].clone()),
            (json!(10), json!(300110))
        );
        let v = to_ocsf(&event(
            "authn.unlock",
            Some("admin:cli"),
            Some("u-123"),
            json!({}),
        ));
        assert_eq!(v["activity_id"], 12);
        assert_eq!(v["user"], json!({"uid": "u-123"}));
    }

    #[test]
    fn other_events_are_base_events_with_their_kind() {
        let v = to_ocsf(&event(
            "device.posture",
            Some("jamf"),
            Some("dev-1"),
            json!({}),
        ));
        assert_eq!(v["class_uid"], 0);
        assert_eq!(v["type_uid"], 99);
        assert_eq!(v["unmapped"]["kind"], "device.posture");
        assert_eq!(
            to_ocsf(&event("caep.rejected", None, None, json!({})))["status"],
            "Failure"
        );
    }
}
