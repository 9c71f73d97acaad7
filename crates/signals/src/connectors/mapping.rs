//! A UEM's device object → a [`PosturePush`]: each stepgate attribute read at a JSON
//! pointer (the vendor's default, or the connector's `fields:` override), its value
//! normalised. A value the mapping cannot read removes the attribute (unknown, never a
//! stale "true"); a compliance state it cannot read is reported non-compliant.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use stepgate_policy::{DeviceState, PostureValue};

use super::config::{ConnectorConfig, ConnectorKind, OwnerMatch};
use crate::device::{PosturePush, PushedCompliance};

/// The vendor's field for each stepgate attribute (JSON pointers into one device object).
pub fn default_fields(kind: ConnectorKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        // Hexnode's device detail (`/api/v1/devices/{id}/`).
        ConnectorKind::Hexnode => &[
            ("id", "/id"),
            ("owner", "/user/email"),
            ("platform", "/platform"),
            ("os", "/os_name"),
            ("os_version", "/os_version"),
            ("model", "/model_name"),
            ("serial_number", "/serial_number"),
            ("hostname", "/device_name"),
            ("managed", "/enrollment_status"),
            ("encrypted", "/encryption_status"),
            ("jailbroken", "/jailbroken"),
            ("password_compliant", "/passcode_compliant"),
            ("compliant", "/compliant"),
            ("failing", "/compliance_failures"),
            ("observed_at", "/last_reported"),
        ],
        // Graph `managedDevice`.
        ConnectorKind::Intune => &[
            ("id", "/id"),
            ("owner", "/userPrincipalName"),
            ("platform", "/operatingSystem"),
            ("os", "/operatingSystem"),
            ("os_version", "/osVersion"),
            ("model", "/model"),
            ("serial_number", "/serialNumber"),
            ("hostname", "/deviceName"),
            ("managed", "/managementState"),
            ("encrypted", "/isEncrypted"),
            ("jailbroken", "/jailBroken"),
            ("compliant", "/complianceState"),
            ("failing", "/failingPolicies"),
            ("observed_at", "/lastSyncDateTime"),
        ],
        // Jamf Pro `computers-inventory` with GENERAL, DISK_ENCRYPTION, OPERATING_SYSTEM,
        // SECURITY, HARDWARE and USER_AND_LOCATION sections.
        ConnectorKind::Jamf => &[
            ("id", "/id"),
            ("owner", "/userAndLocation/email"),
            ("platform", "/general/platform"),
            ("os", "/operatingSystem/name"),
            ("os_version", "/operatingSystem/version"),
            ("model", "/hardware/model"),
            ("serial_number", "/hardware/serialNumber"),
            ("hostname", "/general/name"),
            ("managed", "/general/remoteManagement/managed"),
            (
                "encrypted",
                "/diskEncryption/bootPartitionEncryptionDetails/partitionFileVault2State",
            ),
            ("firewall", "/security/firewallEnabled"),
            ("compliant", "/compliance"),
            ("failing", "/failingPolicies"),
            ("observed_at", "/general/lastContactTime"),
        ],
    }
}

/// Jamf Pro's mobile-device inventory (`GET /api/v2/mobile-devices/detail` with the
/// GENERAL, HARDWARE, USER_AND_LOCATION and SECURITY sections): iPhones and iPads. Their ids
/// get the prefix `mobile-` (`jamf-mobile-7`), so they never collide with a computer's.
pub fn jamf_mobile_fields() -> &'static [(&'static str, &'static str)] {
    &[
        ("id", "/mobileDeviceId"),
        ("owner", "/userAndLocation/emailAddress"),
        ("platform", "/deviceType"),
        ("os", "/deviceType"),
        ("os_version", "/general/osVersion"),
        ("model", "/hardware/model"),
        ("serial_number", "/hardware/serialNumber"),
        ("hostname", "/general/displayName"),
        ("managed", "/general/managed"),
        ("supervised", "/general/supervised"),
        ("encrypted", "/security/dataProtected"),
        ("screen_lock", "/security/passcodePresent"),
        ("password_compliant", "/security/passcodeCompliant"),
        ("jailbroken", "/security/jailBreakDetected"),
        ("compliant", "/compliance"),
        ("failing", "/failingPolicies"),
        ("observed_at", "/general/lastInventoryUpdateDate"),
    ]
}

/// The UEM id prefix of Jamf's mobile devices.
pub const JAMF_MOBILE_PREFIX: &str = "mobile-";

/// Which of a vendor's device tables an object comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// The vendor's (only, or computer) device listing.
    Devices,
    /// Jamf's mobile devices.
    JamfMobile,
}

/// One mapped device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedDevice {
    /// The UEM's own id.
    pub uem_id: String,
    /// The push to apply (its `device_id` is `{connector}-{uem id}`).
    pub push: PosturePush,
}

/// A device object the mapping could not use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("connector `{connector}`: a device object has no id at `{pointer}`; set `fields.id` to the UEM's id field")]
pub struct MapError {
    /// Connector.
    pub connector: String,
    /// Where the id was looked for.
    pub pointer: String,
}

/// Reads a mapping for `cfg`: the vendor's defaults with the connector's overrides (an
/// empty pointer turns an attribute off).
pub fn fields(cfg: &ConnectorConfig) -> BTreeMap<&str, &str> {
    fields_of(cfg, Table::Devices)
}

fn fields_of(cfg: &ConnectorConfig, table: Table) -> BTreeMap<&str, &str> {
    let (defaults, overrides) = match table {
        Table::Devices => (default_fields(cfg.kind), &cfg.fields),
        Table::JamfMobile => (jamf_mobile_fields(), &cfg.mobile_fields),
    };
    let mut m: BTreeMap<&str, &str> = defaults.iter().copied().collect();
    for (k, v) in overrides {
        m.insert(k.as_str(), v.as_str());
    }
    m.retain(|_, v| !v.is_empty());
    m
}

/// The stepgate device id for a UEM id.
pub fn device_id(cfg: &ConnectorConfig, uem_id: &str) -> String {
    format!("{}-{uem_id}", cfg.name)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Vendor spellings of yes and no (`true`, `"Yes"`, `"ENCRYPTED"`, `"managed"`, `"False"`).
pub fn truth(v: &Value) -> Option<bool> {
    let s = match v {
        Value::Bool(b) => return Some(*b),
        Value::Number(n) => return n.as_i64().map(|n| n != 0),
        Value::String(s) => s.trim().to_ascii_lowercase().replace(['-', ' '], "_"),
        _ => return None,
    };
    match s.as_str() {
        "true" | "yes" | "on" | "enabled" | "encrypted" | "managed" | "enrolled" | "compliant"
        | "1" => Some(true),
        "false" | "no" | "off" | "disabled" | "unencrypted" | "not_encrypted" | "notencrypted"
        | "unmanaged" | "not_managed" | "unenrolled" | "retirepending" | "noncompliant"
        | "non_compliant" | "not_compliant" | "0" => Some(false),
        _ => None,
    }
}

/// A compliance state: `true`/`false`, or Graph's `complianceState` (`compliant`,
/// `inGracePeriod` → compliant; `noncompliant`, `conflict`, `error` → not); anything else
/// (`unknown`, absent) is `None`.
fn compliance_state(v: &Value) -> Option<bool> {
    if let Value::String(s) = v {
        match s.trim().to_ascii_lowercase().as_str() {
            "ingraceperiod" => return Some(true),
            "conflict" | "error" => return Some(false),
            _ => {}
        }
    }
    truth(v)
}

/// Failing policy names: strings, or objects with `name` / `displayName` / `policy_name`.
fn names(v: &Value) -> Vec<String> {
    let Value::Array(items) = v else {
        return text(v).into_iter().collect();
    };
    items
        .iter()
        .filter_map(|i| match i {
            Value::Object(o) => ["name", "displayName", "policy_name", "setting"]
                .iter()
                .find_map(|k| o.get(*k).and_then(text)),
            other => text(other),
        })
        .collect()
}

fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        // Epoch milliseconds (some Hexnode and Jamf fields).
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

/// The stepgate username for a UEM user's e-mail/UPN, per `owner_match`.
pub fn owner(cfg: &ConnectorConfig, email: &str) -> Option<String> {
    let email = email.trim();
    match cfg.owner_match {
        OwnerMatch::Exact => (!email.is_empty()).then(|| email.to_string()),
        OwnerMatch::LocalPart => {
            let (local, domain) = email.rsplit_once('@')?;
            cfg.owner_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
                .then(|| local.to_string())
                .filter(|l| !l.is_empty())
        }
    }
}

/// Maps one UEM device object (Jamf: a computer).
pub fn map_device(cfg: &ConnectorConfig, raw: &Value) -> Result<MappedDevice, MapError> {
    map_from(cfg, Table::Devices, raw)
}

/// Maps one object of `table`.
pub fn map_from(
    cfg: &ConnectorConfig,
    table: Table,
    raw: &Value,
) -> Result<MappedDevice, MapError> {
    let f = fields_of(cfg, table);
    let at = |k: &str| f.get(k).and_then(|p| raw.pointer(p));
    let txt = |k: &str| at(k).and_then(text);
    let uem_id = txt("id").ok_or_else(|| MapError {
        connector: cfg.name.clone(),
        pointer: f.get("id").copied().unwrap_or("").to_string(),
    })?;
    let uem_id = match table {
        Table::Devices => uem_id,
        Table::JamfMobile => format!("{JAMF_MOBILE_PREFIX}{uem_id}"),
    };
    let mut posture: BTreeMap<String, Option<PostureValue>> = BTreeMap::new();
    for attr in [
        "encrypted",
        "firewall",
        "screen_lock",
        "jailbroken",
        "supervised",
        "password_compliant",
        "edr",
    ] {
        if f.contains_key(attr) {
            let v = at(attr).and_then(truth);
            posture.insert(attr.to_string(), v.map(|b| PostureValue(b.to_string())));
        }
    }
    // Devices a UEM lists are enrolled unless it says otherwise.
    let managed = at("managed").map(truth).unwrap_or(Some(true));
    let state = if managed == Some(true) {
        DeviceState::Managed
    } else {
        DeviceState::Registered
    };
    let failing = at("failing").map(names).unwrap_or_default();
    let compliant = at("compliant").and_then(compliance_state);
    let uem = cfg.kind.as_str();
    let compliance = match compliant {
        Some(true) if failing.is_empty() => PushedCompliance {
            compliant: true,
            reason: None,
        },
        Some(_) if !failing.is_empty() => PushedCompliance {
            compliant: false,
            reason: Some(format!("Failing in {uem}: {}", failing.join(", "))),
        },
        Some(_) => PushedCompliance {
            compliant: false,
            reason: Some(format!("{uem} reports this device as not compliant")),
        },
        None => PushedCompliance {
            compliant: false,
            reason: Some(format!("{uem} has no compliance state for this device yet")),
        },
    };
    // A UEM user outside `owner_domains` is nobody here; a device the UEM now gives to
    // such an account is not vouched for, even if it was someone's before (fail closed).
    let named = txt("owner");
    let owner_name = named.as_deref().and_then(|e| owner(cfg, e));
    let compliance = if named.is_some() && owner_name.is_none() {
        Some(PushedCompliance {
            compliant: false,
            reason: Some(format!(
                "{uem} assigns this device to an account outside your organisation's mail domains"
            )),
        })
    } else {
        cfg.uem_compliance.then_some(compliance)
    };
    let push = PosturePush {
        device_id: device_id(cfg, &uem_id),
        owner: owner_name,
        platform: txt("platform").map(|p| platform(&p)),
        os: txt("os"),
        os_version: txt("os_version"),
        model: txt("model"),
        serial_number: txt("serial_number"),
        hostname: txt("hostname"),
        domain: None,
        mac_addresses: None,
        groups: None,
        certificates: None,
        // The UEMs expose no WebAuthn credential ids: a list stored by a posture push stays.
        passkeys: None,
        state: Some(state),
        posture,
        compliance,
        observed_at: at("observed_at").and_then(timestamp),
    };
    Ok(MappedDevice { uem_id, push })
}

/// Folds a second, different answer for the same device into the first: every posture
/// attribute the two disagree on becomes unknown, and the device is reported non-compliant
/// (nothing says which answer is true).
pub fn conflicting(first: &mut PosturePush, second: &PosturePush, kind: ConnectorKind) {
    let keys: Vec<String> = first
        .posture
        .keys()
        .chain(second.posture.keys())
        .cloned()
        .collect();
    for k in keys {
        if first.posture.get(&k) != second.posture.get(&k) {
            first.posture.insert(k, None);
        }
    }
    if first.owner != second.owner {
        first.owner = None;
    }
    first.compliance = Some(PushedCompliance {
        compliant: false,
        reason: Some(format!(
            "{} listed this device twice with different details",
            kind.as_str()
        )),
    });
}

/// stepgate's platform names from the vendors' (`Mac`, `macOS`, `Windows`, `iOS`, `Android`).
fn platform(p: &str) -> String {
    let l = p.trim().to_ascii_lowercase();
    match l.as_str() {
        "mac" | "macos" | "mac os" | "osx" | "os x" => "macos".into(),
        "ipados" | "iphone" | "ipad" | "ios" => "ios".into(),
        _ if l.starts_with("windows") => "windows".into(),
        _ => l,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(kind: &str, extra: Value) -> ConnectorConfig {
        let mut v = json!({"name": "uem", "kind": kind, "url": "https://u.example",
            "client_id": "c", "token_url": "https://t.example", "secret": {"env": "X"}});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn hexnode_device_maps_with_its_failing_policies() {
        let c = cfg(
            "hexnode",
            json!({"owner_match": "local_part", "owner_domains": ["example.com"]}),
        );
        let raw = json!({
            "id": 42, "device_name": "jane-mbp", "os_name": "macOS", "os_version": "14.2.1",
            "platform": "Mac", "serial_number": "C02X", "model_name": "MacBookPro18,3",
            "user": {"name": "Jane", "email": "jane@example.com"},
            "enrollment_status": "Enrolled", "encryption_status": "No", "compliant": false,
            "compliance_failures": [{"name": "FileVault required"}, "Passcode policy"],
            "last_reported": "2026-12-06T03:00:00Z"
        });
        let m = map_device(&c, &raw).unwrap();
        assert_eq!(m.uem_id, "42");
        let p = m.push;
        assert_eq!(p.device_id, "uem-42");
        assert_eq!(p.owner.as_deref(), Some("jane"));
        assert_eq!(p.platform.as_deref(), Some("macos"));
        assert_eq!(p.state, Some(DeviceState::Managed));
        assert_eq!(p.posture["encrypted"], Some(PostureValue("false".into())));
        // Mapped but absent: removed, not left as it was.
        assert_eq!(p.posture["jailbroken"], None);
        let c = p.compliance.unwrap();
        assert!(!c.compliant);
        assert_eq!(
            c.reason.as_deref(),
            Some("Failing in hexnode: FileVault required, Passcode policy")
        );
        assert!(p.observed_at.is_some());
    }

    #[test]
    fn an_unknown_compliance_state_is_not_compliant() {
        let c = cfg("intune", json!({}));
        for state in ["unknown", "configManager"] {
            let raw = json!({"id": "a-b", "complianceState": state, "userPrincipalName": "jane@example.com"});
            let p = map_device(&c, &raw).unwrap().push;
            assert_eq!(p.compliance.map(|c| c.compliant), Some(false), "{state}");
        }
        let raw = json!({"id": "a-b", "complianceState": "inGracePeriod"});
        let p = map_device(&c, &raw).unwrap().push;
        assert_eq!(p.compliance.map(|c| c.compliant), Some(true));
        assert!(map_device(&c, &json!({"deviceName": "x"})).is_err());
        // Told to ignore the UEM's verdict: none is reported, stepgate's policies judge.
        let c = cfg("intune", json!({"uem_compliance": false}));
        let raw = json!({"id": "a-b", "complianceState": "unknown", "isEncrypted": false});
        let p = map_device(&c, &raw).unwrap().push;
        assert_eq!(p.compliance, None);
        assert_eq!(p.posture["encrypted"], Some(PostureValue("false".into())));
    }

    #[test]
    fn local_part_owners_only_from_listed_domains() {
        let c = cfg(
            "jamf",
            json!({"owner_match": "local_part", "owner_domains": ["example.com"]}),
        );
        assert_eq!(owner(&c, "jane@EXAMPLE.com").as_deref(), Some("jane"));
        assert_eq!(owner(&c, "jane@evil.example"), None);
        let c = cfg("jamf", json!({}));
        assert_eq!(
            owner(&c, "jane@evil.example").as_deref(),
            Some("jane@evil.example")
        );
    }

    #[test]
    fn overrides_replace_and_switch_off_fields() {
        let c = cfg(
            "hexnode",
            json!({"fields": {"encrypted": "/security/fv", "jailbroken": ""}}),
        );
        let raw = json!({"id": 1, "security": {"fv": "ENCRYPTED"}, "jailbroken": true, "compliant": true});
        let p = map_device(&c, &raw).unwrap().push;
        assert_eq!(p.posture["encrypted"], Some(PostureValue("true".into())));
        assert!(!p.posture.contains_key("jailbroken"));
        assert_eq!(p.compliance.map(|c| c.compliant), Some(true));
    }

    #[test]
    fn jamf_mobile_devices_map_with_their_own_table_and_ids() {
        let c = cfg(
            "jamf",
            json!({"owner_match": "local_part", "owner_domains": ["example.com"],
                   "mobile_fields": {"hostname": "/general/name"}}),
        );
        let raw = json!({
            "mobileDeviceId": "7", "deviceType": "iOS",
            "general": {"displayName": "iPhone", "name": "jane-iphone", "osVersion": "18.1",
                        "managed": true, "supervised": false,
                        "lastInventoryUpdateDate": "2026-12-06T03:00:00Z"},
            "hardware": {"serialNumber": "F2L", "model": "iPhone 16"},
            "userAndLocation": {"emailAddress": "jane@example.com"},
            "security": {"dataProtected": true, "passcodePresent": true,
                         "passcodeCompliant": false, "jailBreakDetected": false},
            "compliance": false, "failingPolicies": ["Microsoft Intune"]
        });
        let m = map_from(&c, Table::JamfMobile, &raw).unwrap();
        assert_eq!(m.uem_id, "mobile-7");
        let p = m.push;
        assert_eq!(p.device_id, "uem-mobile-7");
        assert_eq!(p.owner.as_deref(), Some("jane"));
        assert_eq!(p.platform.as_deref(), Some("ios"));
        assert_eq!(
            p.hostname.as_deref(),
            Some("jane-iphone"),
            "mobile_fields override"
        );
        assert_eq!(p.posture["supervised"], Some(PostureValue("false".into())));
        assert_eq!(
            p.posture["password_compliant"],
            Some(PostureValue("false".into()))
        );
        assert_eq!(p.posture["screen_lock"], Some(PostureValue("true".into())));
        assert_eq!(
            p.compliance.unwrap().reason.as_deref(),
            Some("Failing in jamf: Microsoft Intune")
        );
        // The computer table does not read a mobile device (no `/id`).
        assert!(map_device(&c, &raw).is_err());
    }

    #[test]
    fn two_different_answers_for_one_device_leave_it_non_compliant_and_unknown() {
        let c = cfg("hexnode", json!({"uem_compliance": false}));
        let a =
            json!({"id": 1, "encryption_status": "Yes", "jailbroken": false, "compliant": true});
        let b = json!({"id": 1, "encryption_status": "No", "jailbroken": false, "compliant": true});
        let mut first = map_device(&c, &a).unwrap().push;
        let second = map_device(&c, &b).unwrap().push;
        assert_eq!(first.compliance, None);
        conflicting(&mut first, &second, c.kind);
        assert_eq!(first.posture["encrypted"], None);
        assert_eq!(
            first.posture["jailbroken"],
            Some(PostureValue("false".into()))
        );
        assert_eq!(first.compliance.map(|c| c.compliant), Some(false));
    }

    #[test]
    fn an_owner_outside_the_domains_is_nobody_and_makes_the_device_non_compliant() {
        let c = cfg(
            "hexnode",
            json!({"owner_match": "local_part", "owner_domains": ["example.com"]}),
        );
        let raw = json!({"id": 1, "user": {"email": "jane@evil.example"}, "compliant": true});
        let p = map_device(&c, &raw).unwrap().push;
        assert_eq!(p.owner, None);
        assert_eq!(p.compliance.map(|c| c.compliant), Some(false));
        // No owner named at all: nothing to distrust.
        let p = map_device(&c, &json!({"id": 1, "compliant": true}))
            .unwrap()
            .push;
        assert_eq!(p.compliance.map(|c| c.compliant), Some(true));
    }
}
