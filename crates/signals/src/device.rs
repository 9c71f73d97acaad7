//! The device registry model, posture pushes, device binding and the policy's view of a device.
//!
//! A [`Device`] is stored as the `data` JSON of `stepgate_store::DeviceRecord`
//! ([`Device::to_record_data`] / [`Device::from_record_data`]). Everything here is pure;
//! the server loads and saves records and calls these functions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_policy::{DeviceContext, DeviceState, FailingCheck, PostureValue};

use crate::compliance::{self, CompliancePolicy, ComplianceVerdict};
use crate::config::{DeviceScope, DeviceSourceConfig};

/// A certificate issued to a device (for binding requests by mTLS).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCertificate {
    /// Lower-case hex SHA-256 of the DER certificate.
    pub sha256_fingerprint: String,
    /// Serial number as lower-case hex, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Expiry, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
}

/// A compliance verdict reported by the UEM itself (push or CAEP), as opposed to the one
/// stepgate's own compliance policies compute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedCompliance {
    /// The UEM's verdict.
    pub compliant: bool,
    /// Which source said so.
    pub source: String,
    /// Why, for the remediation page (`reason_user` of a CAEP event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the source observed it.
    pub at: DateTime<Utc>,
}

/// A device in the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Stable id (the UEM's device id, or one stepgate assigned for a cookie/passkey device).
    pub id: String,
    /// The user it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Platform, lower case (`macos`, `windows`, `ios`, `ipados`, `android`, `linux`, `chromeos`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// OS name as reported (`macOS`, `Windows 11 Enterprise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// OS version (`14.2.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Hardware model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Directory domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// MAC addresses (lower case, colon separated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mac_addresses: Vec<String>,
    /// Device groups in the UEM (compliance policy assignment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Certificates issued to the device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<DeviceCertificate>,
    /// WebAuthn credential ids (base64url) registered as this device's passkeys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<String>,
    /// Registration / management state.
    #[serde(default)]
    pub state: DeviceState,
    /// The source that last wrote it (`hexnode`, `crowdstrike`, `stepgate` for cookie devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Posture attributes (`encrypted`, `firewall`, `screen_lock`, `password_compliant`,
    /// `jailbroken`, `os_up_to_date`, `edr_score`, `inside_geofence`, or any custom one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub posture: BTreeMap<String, PostureValue>,
    /// The UEM's own compliance verdict, if it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_compliance: Option<ReportedCompliance>,
    /// Last posture sync from any source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<DateTime<Utc>>,
    /// Last observation time per source (for ordering and idempotent pushes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synced_by_source: BTreeMap<String, DateTime<Utc>>,
}

/// A device's stored JSON did not match the model.
#[derive(Debug, thiserror::Error)]
#[error("device `{id}`: stored data does not match the device model ({source}); rewrite it with a fresh push")]
pub struct DeviceDataError {
    /// Device id.
    pub id: String,
    /// The JSON error.
    #[source]
    pub source: serde_json::Error,
}

impl Device {
    /// A new, empty device.
    pub fn new(id: impl Into<String>) -> Self {
        Device {
            id: id.into(),
            ..Device::default()
        }
    }

    /// The JSON stored as `DeviceRecord::data` (id and owner live in the record's own columns too).
    pub fn to_record_data(&self) -> serde_json::Value {
        // Serialising a plain struct of strings and maps cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a device from a `DeviceRecord`'s id, owner and data.
    pub fn from_record_data(
        id: &str,
        owner: Option<&str>,
        data: &serde_json::Value,
    ) -> Result<Self, DeviceDataError> {
        let mut d: Device =
            serde_json::from_value(data.clone()).map_err(|source| DeviceDataError {
                id: id.to_owned(),
                source,
            })?;
        d.id = id.to_owned();
        if owner.is_some() {
            d.owner = owner.map(str::to_owned);
        }
        Ok(d)
    }

    /// Posture attributes plus the built-in fields conditions and rules may use
    /// (`os_version`, `os`, `platform`, `model`).
    pub fn posture_view(&self) -> BTreeMap<String, PostureValue> {
        let mut m = self.posture.clone();
        for (k, v) in [
            ("os_version", &self.os_version),
            ("os", &self.os),
            ("platform", &self.platform),
            ("model", &self.model),
        ] {
            if let Some(v) = v {
                m.entry(k.to_owned())
                    .or_insert_with(|| PostureValue(v.clone()));
            }
        }
        m
    }

    /// Whether the posture is older than `max_age` (or was never reported).
    pub fn posture_is_stale(&self, max_age: std::time::Duration, now: DateTime<Utc>) -> bool {
        match self.last_sync {
            None => true,
            Some(t) => now
                .signed_duration_since(t)
                .to_std()
                .is_ok_and(|age| age > max_age),
        }
    }

    /// Evaluates the compliance policies (and the UEM's own verdict) for this device.
    pub fn compliance(
        &self,
        policies: &[CompliancePolicy],
        max_posture_age: std::time::Duration,
        now: DateTime<Utc>,
    ) -> ComplianceVerdict {
        let platform = self.platform.as_deref();
        let mut verdict = if self.posture_is_stale(max_posture_age, now) {
            let desc = match self.last_sync {
                Some(t) => format!("{} ago", human_age(now.signed_duration_since(t))),
                None => "never".into(),
            };
            compliance::stale_verdict(policies, platform, &self.groups, &desc)
        } else {
            compliance::evaluate(policies, platform, &self.groups, &self.posture_view())
        };
        if let Some(r) = &self.reported_compliance {
            let fresh = now
                .signed_duration_since(r.at)
                .to_std()
                .map_or(true, |age| age <= max_posture_age);
            if fresh && !r.compliant {
                verdict.failing.push(FailingCheck {
                    id: "uem_compliance".into(),
                    message: Some(r.reason.clone().unwrap_or_else(|| {
                        format!("{} reports this device as not compliant", r.source)
                    })),
                    fix: Some(format!(
                        "Follow the instructions in {} and re-check the device",
                        r.source
                    )),
                });
                verdict.compliant = Some(false);
            }
        }
        verdict
    }
}

fn human_age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    if s >= 86_400 {
        format!("{}d", s / 86_400)
    } else if s >= 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}m", s / 60)
    }
}

/// The policy engine's view of a device: registry facts, the compliance verdict and
/// (when fresh) the posture. Stale posture is left out: for the policy it is unknown.
pub fn device_context(
    device: &Device,
    policies: &[CompliancePolicy],
    max_posture_age: std::time::Duration,
    now: DateTime<Utc>,
) -> DeviceContext {
    let verdict = device.compliance(policies, max_posture_age, now);
    let stale = device.posture_is_stale(max_posture_age, now);
    DeviceContext {
        id: Some(device.id.clone()),
        state: device.state,
        hostname: device.hostname.clone(),
        domain: device.domain.clone(),
        mac_addresses: device.mac_addresses.clone(),
        compliant: verdict.compliant,
        failing_checks: verdict.failing,
        posture: if stale {
            BTreeMap::new()
        } else {
            device.posture_view()
        },
    }
}

/// How a request was tied to a device, most trusted first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum DeviceBinding {
    /// A client certificate that chained to a device CA (mTLS or a trusted proxy header).
    Certificate {
        /// Lower-case hex SHA-256 of the certificate.
        sha256_fingerprint: String,
        /// Its subject common names and DNS / URI alternative names.
        #[serde(default)]
        names: Vec<String>,
    },
    /// A passkey registered as this device's.
    Passkey {
        /// The WebAuthn credential id (base64url).
        credential_id: String,
    },
    /// The long-lived signed device cookie: known but not proven managed.
    Cookie {
        /// The device id in the cookie.
        device_id: String,
    },
}

impl DeviceBinding {
    /// The most a request bound this way may claim: a copied cookie proves nothing about
    /// management, so cookie-bound requests count as `registered` at most.
    pub fn max_state(&self) -> DeviceState {
        match self {
            DeviceBinding::Certificate { .. } | DeviceBinding::Passkey { .. } => {
                DeviceState::ManagedEdr
            }
            DeviceBinding::Cookie { .. } => DeviceState::Registered,
        }
    }

    /// Whether this binding identifies `device`.
    pub fn matches(&self, device: &Device) -> bool {
        match self {
            // The certificate the device reported, or one a UEM's certificate profile
            // issued naming the device's serial number (from a device CA, and only among
            // the signed-in user's own devices: see the server's signal source).
            DeviceBinding::Certificate {
                sha256_fingerprint,
                names,
            } => {
                device.certificates.iter().any(|c| {
                    c.sha256_fingerprint
                        .eq_ignore_ascii_case(sha256_fingerprint)
                }) || device.serial_number.as_deref().is_some_and(|serial| {
                    !serial.trim().is_empty()
                        && names
                            .iter()
                            .any(|n| n.trim().eq_ignore_ascii_case(serial.trim()))
                })
            }
            DeviceBinding::Passkey { credential_id } => {
                device.passkeys.iter().any(|p| p == credential_id)
            }
            DeviceBinding::Cookie { device_id } => &device.id == device_id,
        }
    }
}

/// Picks the most trusted binding among the evidence a request carries.
/// `candidates` is every (binding, device) pair the server found in the registry.
pub fn strongest_binding(
    candidates: &[(DeviceBinding, Device)],
) -> Option<&(DeviceBinding, Device)> {
    let rank = |b: &DeviceBinding| match b {
        DeviceBinding::Certificate { .. } => 0,
        DeviceBinding::Passkey { .. } => 1,
        DeviceBinding::Cookie { .. } => 2,
    };
    candidates
        .iter()
        .filter(|(b, d)| b.matches(d))
        .min_by_key(|(b, _)| rank(b))
}

/// [`device_context`] for a request bound by `binding`, with the state capped by the binding's trust.
pub fn bound_device_context(
    binding: &DeviceBinding,
    device: &Device,
    policies: &[CompliancePolicy],
    max_posture_age: std::time::Duration,
    now: DateTime<Utc>,
) -> DeviceContext {
    let mut ctx = device_context(device, policies, max_posture_age, now);
    ctx.state = ctx.state.min(binding.max_state());
    ctx
}

// ---------------------------------------------------------------------------------------
// Posture pushes (the device API)

/// The UEM's own compliance verdict in a push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushedCompliance {
    /// The verdict.
    pub compliant: bool,
    /// Why, in words for the user.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One device's posture as a UEM, EDR or agent pushes it. Absent fields are left as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosturePush {
    /// The device id (the source's id for it).
    pub device_id: String,
    /// Owner username.
    #[serde(default)]
    pub owner: Option<String>,
    /// Platform (`macos`, `windows`, …).
    #[serde(default)]
    pub platform: Option<String>,
    /// OS name.
    #[serde(default)]
    pub os: Option<String>,
    /// OS version.
    #[serde(default)]
    pub os_version: Option<String>,
    /// Model.
    #[serde(default)]
    pub model: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Directory domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// MAC addresses (replace the stored list when present).
    #[serde(default)]
    pub mac_addresses: Option<Vec<String>>,
    /// UEM groups (replace the stored list when present).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Device certificates (replace the stored list when present).
    #[serde(default)]
    pub certificates: Option<Vec<DeviceCertificate>>,
    /// WebAuthn credential ids of the device's passkeys, base64url (standard base64 and
    /// padding are accepted and normalised); replace the stored list when present. A
    /// sign-in or request with one of them is bound to this device.
    #[serde(default)]
    pub passkeys: Option<Vec<String>>,
    /// Claimed state (capped by the source's `max_state`).
    #[serde(default)]
    pub state: Option<DeviceState>,
    /// Posture attributes; merged key by key (a `null` value removes the attribute).
    #[serde(default)]
    pub posture: BTreeMap<String, Option<PostureValue>>,
    /// The source's own compliance verdict.
    #[serde(default)]
    pub compliance: Option<PushedCompliance>,
    /// When the source observed this posture (default: now).
    #[serde(default)]
    pub observed_at: Option<DateTime<Utc>>,
}

/// A bulk push: `{"devices": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkPosturePush {
    /// The devices.
    pub devices: Vec<PosturePush>,
}

/// Device ids beginning with this are stepgate's own records in the device table (the
/// identity-assertion key set), not devices: no push, event or lookup may name one.
pub const RESERVED_ID_PREFIX: &str = "stepgate:";

/// Whether `id` is reserved for stepgate's own records ([`RESERVED_ID_PREFIX`]).
pub fn is_reserved_id(id: &str) -> bool {
    id.starts_with(RESERVED_ID_PREFIX)
}

/// A push the device API refuses; each names the field and the fix (HTTP 400/403).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    /// Empty or oversized device id.
    #[error("device_id `{0}` is empty or longer than 200 characters; send the UEM's device id")]
    BadDeviceId(String),
    /// A device id in stepgate's reserved namespace.
    #[error("device_id `{0}` starts with `stepgate:`, which stepgate reserves for its own records; send the UEM's device id")]
    ReservedDeviceId(String),
    /// The push claims a state the source may not assert.
    #[error("source `{source_name}` may assert device state up to `{max}`, the push for `{device_id}` claims `{claimed}`; raise `max_state` for the source if that is intended")]
    StateNotAllowed {
        /// Source.
        source_name: String,
        /// Device.
        device_id: String,
        /// Claimed state.
        claimed: &'static str,
        /// Allowed maximum.
        max: &'static str,
    },
    /// A posture attribute name that is not `[a-z0-9_.-]`.
    #[error("posture attribute `{0}` must be 1–64 characters of a-z, 0-9, `_`, `.` or `-`")]
    BadAttribute(String),
    /// A posture value that is too long.
    #[error("posture attribute `{0}`: value longer than 1024 characters")]
    ValueTooLong(String),
    /// `edr_score` outside 0–100.
    #[error("posture attribute `edr_score` must be a number 0–100, got `{0}`")]
    BadEdrScore(String),
    /// A device owned by one user pushed as another's.
    #[error("device `{device_id}` belongs to `{existing}`, the push names `{pushed}`; delete the device first to re-assign it")]
    OwnerMismatch {
        /// Device.
        device_id: String,
        /// Stored owner.
        existing: String,
        /// Pushed owner.
        pushed: String,
    },
    /// Too many devices in one bulk push.
    #[error("bulk push has {0} devices; send at most {MAX_BULK} per request")]
    TooMany(usize),
    /// A passkey credential id that is not base64 of 16–1023 bytes.
    #[error("passkeys: `{0}` is not a WebAuthn credential id; send each as base64url (16–1023 bytes, as the authenticator reported it)")]
    BadPasskey(String),
    /// Too many passkeys for one device.
    #[error("passkeys: {0} credential ids; send at most {MAX_PASSKEYS} per device")]
    TooManyPasskeys(usize),
}

/// Most passkey credential ids one device may list.
pub const MAX_PASSKEYS: usize = 64;

/// `id` as base64url without padding (the form stepgate stores credential ids in), when it
/// is a credential id: base64 or base64url, padded or not, of 16–1023 bytes.
pub fn credential_id(id: &str) -> Option<String> {
    use base64::Engine as _;
    let url: String = id
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&url)
        .ok()?;
    (16..=1023).contains(&bytes.len()).then_some(url)
}

fn passkeys(ids: &[String]) -> Result<Vec<String>, PushError> {
    if ids.len() > MAX_PASSKEYS {
        return Err(PushError::TooManyPasskeys(ids.len()));
    }
    ids.iter()
        .map(|id| {
            let shown: String = id.chars().take(64).collect();
            credential_id(id).ok_or(PushError::BadPasskey(shown))
        })
        .collect()
}

/// Most devices accepted in one bulk push.
pub const MAX_BULK: usize = 1000;

/// What a push did to the stored device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushOutcome {
    /// A new device was created.
    Created,
    /// The device changed.
    Updated,
    /// Nothing changed (a repeated push).
    Unchanged,
    /// Older than what this source already reported; ignored.
    Stale,
}

/// Validates a bulk push's size.
pub fn check_bulk(b: &BulkPosturePush) -> Result<(), PushError> {
    if b.devices.len() > MAX_BULK {
        return Err(PushError::TooMany(b.devices.len()));
    }
    Ok(())
}

/// Applies a push from `source` to the stored device (if any). Idempotent: the same push
/// twice yields `Unchanged`; a push observed before this source's last one is `Stale`.
pub fn apply_push(
    existing: Option<Device>,
    push: &PosturePush,
    source: &DeviceSourceConfig,
    now: DateTime<Utc>,
) -> Result<(Device, PushOutcome), PushError> {
    if push.device_id.trim().is_empty() || push.device_id.len() > 200 {
        return Err(PushError::BadDeviceId(push.device_id.clone()));
    }
    if is_reserved_id(&push.device_id) {
        return Err(PushError::ReservedDeviceId(push.device_id.clone()));
    }
    if let Some(claimed) = push.state {
        let max = source.effective_max_state();
        if claimed > max {
            return Err(PushError::StateNotAllowed {
                source_name: source.name.clone(),
                device_id: push.device_id.clone(),
                claimed: claimed.as_str(),
                max: max.as_str(),
            });
        }
    }
    for (k, v) in &push.posture {
        let ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if !ok {
            return Err(PushError::BadAttribute(k.clone()));
        }
        if let Some(v) = v {
            if v.0.len() > 1024 {
                return Err(PushError::ValueTooLong(k.clone()));
            }
            if k == "edr_score"
                && !v
                    .0
                    .trim()
                    .parse::<f64>()
                    .is_ok_and(|s| (0.0..=100.0).contains(&s))
            {
                return Err(PushError::BadEdrScore(v.0.clone()));
            }
        }
    }
    let pushed_passkeys = push.passkeys.as_deref().map(passkeys).transpose()?;
    // A report dated in the future counts as made now: a clock far ahead (or a hostile
    // source) must not keep a posture fresh for ever, nor make later true reports look older.
    let observed = push.observed_at.unwrap_or(now).min(now);
    let created = existing.is_none();
    let before = existing.clone();
    let mut d = existing.unwrap_or_else(|| Device::new(push.device_id.clone()));
    if let (Some(existing), Some(pushed)) = (&d.owner, &push.owner) {
        if existing != pushed {
            return Err(PushError::OwnerMismatch {
                device_id: d.id.clone(),
                existing: existing.clone(),
                pushed: pushed.clone(),
            });
        }
    }
    if let Some(last) = d.synced_by_source.get(&source.name) {
        if observed < *last {
            return Ok((d, PushOutcome::Stale));
        }
    }
    set(&mut d.owner, &push.owner);
    set(
        &mut d.platform,
        &push.platform.as_ref().map(|p| p.to_ascii_lowercase()),
    );
    set(&mut d.os, &push.os);
    set(&mut d.os_version, &push.os_version);
    set(&mut d.model, &push.model);
    set(&mut d.serial_number, &push.serial_number);
    set(&mut d.hostname, &push.hostname);
    set(&mut d.domain, &push.domain);
    if let Some(m) = &push.mac_addresses {
        d.mac_addresses = m
            .iter()
            .map(|m| m.to_ascii_lowercase().replace('-', ":"))
            .collect();
    }
    if let Some(g) = &push.groups {
        d.groups = g.clone();
    }
    if let Some(c) = &push.certificates {
        d.certificates = c
            .iter()
            .map(|c| DeviceCertificate {
                sha256_fingerprint: c.sha256_fingerprint.to_ascii_lowercase().replace(':', ""),
                serial: c.serial.as_ref().map(|s| s.to_ascii_lowercase()),
                not_after: c.not_after,
            })
            .collect();
    }
    if let Some(p) = pushed_passkeys {
        d.passkeys = p;
    }
    if let Some(s) = push.state {
        d.state = s;
    } else if d.state == DeviceState::Unregistered {
        d.state = DeviceState::Registered;
    }
    for (k, v) in &push.posture {
        match v {
            Some(v) => {
                d.posture
                    .insert(k.clone(), PostureValue(v.0.trim().to_owned()));
            }
            None => {
                d.posture.remove(k);
            }
        }
    }
    if let Some(c) = &push.compliance {
        d.reported_compliance = Some(ReportedCompliance {
            compliant: c.compliant,
            source: source.name.clone(),
            reason: c.reason.clone(),
            at: observed,
        });
    }
    d.source = Some(source.name.clone());
    d.synced_by_source.insert(source.name.clone(), observed);
    d.last_sync = Some(d.last_sync.map_or(observed, |t| t.max(observed)));
    let outcome = if created {
        PushOutcome::Created
    } else if before.as_ref() == Some(&d) {
        PushOutcome::Unchanged
    } else {
        PushOutcome::Updated
    };
    Ok((d, outcome))
}

fn set(field: &mut Option<String>, v: &Option<String>) {
    if let Some(v) = v {
        *field = Some(v.clone());
    }
}

// ---------------------------------------------------------------------------------------
// Device API tokens

/// Why a device API request is refused (401/403).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceApiAuthError {
    /// No `Authorization: Bearer` header.
    #[error("the device API needs `Authorization: Bearer <token>`; configure the source's token in the UEM")]
    MissingToken,
    /// The token matches no source.
    #[error(
        "the device API token matches no configured source; check `devices.sources[].token_sha256`"
    )]
    UnknownToken,
    /// The source lacks the scope.
    #[error("source `{source_name}` lacks scope `{scope}`; add it to the source's `scopes`")]
    MissingScope {
        /// Source.
        source_name: String,
        /// Needed scope.
        scope: &'static str,
    },
}

/// A config problem with a source token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("devices.sources `{0}`: token_sha256 must be 64 hex characters (`printf %s \"$TOKEN\" | sha256sum`)")]
pub struct BadTokenHash(pub String);

/// Authenticates device API callers by their token's SHA-256 (constant-time comparison).
#[derive(Clone, Debug)]
pub struct DeviceApiAuth {
    sources: Vec<(DeviceSourceConfig, [u8; 32])>,
}

impl DeviceApiAuth {
    /// Builds the verifier, checking every configured hash.
    pub fn new(sources: &[DeviceSourceConfig]) -> Result<Self, BadTokenHash> {
        let mut out = Vec::new();
        for s in sources {
            let h = hex_decode(&s.token_sha256)
                .filter(|b| b.len() == 32)
                .ok_or_else(|| BadTokenHash(s.name.clone()))?;
            let mut a = [0u8; 32];
            a.copy_from_slice(&h);
            out.push((s.clone(), a));
        }
        Ok(DeviceApiAuth { sources: out })
    }

    /// Authenticates an `Authorization` header value and checks the scope.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        scope: DeviceScope,
    ) -> Result<&DeviceSourceConfig, DeviceApiAuthError> {
        use sha2::Digest;
        use subtle::ConstantTimeEq;
        let token = authorization
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(DeviceApiAuthError::MissingToken)?;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (s, h) in &self.sources {
            if bool::from(h.ct_eq(&digest)) {
                found = Some(s);
            }
        }
        let s = found.ok_or(DeviceApiAuthError::UnknownToken)?;
        if !s.scopes.contains(&scope) {
            return Err(DeviceApiAuthError::MissingScope {
                source_name: s.name.clone(),
                scope: scope.as_str(),
            });
        }
        Ok(s)
    }
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn hex_encode(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

// ---------------------------------------------------------------------------------------
// Device cookie

/// Why a device cookie is not accepted (the request is then simply not cookie-bound).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceCookieError {
    /// Not `v1.<id>.<issued>.<mac>`.
    #[error("device cookie is malformed")]
    Malformed,
    /// MAC mismatch (forged or signed with another key).
    #[error("device cookie signature does not verify")]
    BadSignature,
    /// Older than `max_age`.
    #[error("device cookie expired")]
    Expired,
    /// Key shorter than 32 bytes.
    #[error("device cookie key must be at least 32 bytes; set a longer value in the key environment variable")]
    WeakKey,
}

/// Issues and verifies the long-lived signed device cookie (HMAC-SHA256).
#[derive(Clone)]
pub struct DeviceCookieSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for DeviceCookieSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCookieSigner(..)")
    }
}

impl DeviceCookieSigner {
    /// A signer with `key` (at least 32 bytes).
    pub fn new(key: &[u8]) -> Result<Self, DeviceCookieError> {
        if key.len() < 32 {
            return Err(DeviceCookieError::WeakKey);
        }
        Ok(DeviceCookieSigner { key: key.to_vec() })
    }

    fn mac(&self, payload: &str) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        m.update(payload.as_bytes());
        m
    }

    /// The cookie value for `device_id` issued at `now`.
    pub fn issue(&self, device_id: &str, now: DateTime<Utc>) -> String {
        use base64::Engine;
        use hmac::Mac;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = format!("v1.{}.{}", b64.encode(device_id), now.timestamp());
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", b64.encode(tag))
    }

    /// Verifies a cookie value, returning the device id.
    pub fn verify(
        &self,
        value: &str,
        max_age: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<String, DeviceCookieError> {
        use base64::Engine;
        use hmac::Mac;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, tag) = value.rsplit_once('.').ok_or(DeviceCookieError::Malformed)?;
        let tag = b64.decode(tag).map_err(|_| DeviceCookieError::Malformed)?;
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| DeviceCookieError::BadSignature)?;
        let mut parts = payload.split('.');
        let (Some("v1"), Some(id), Some(ts), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DeviceCookieError::Malformed);
        };
        let id = String::from_utf8(b64.decode(id).map_err(|_| DeviceCookieError::Malformed)?)
            .map_err(|_| DeviceCookieError::Malformed)?;
        let issued: i64 = ts.parse().map_err(|_| DeviceCookieError::Malformed)?;
        let age = now.timestamp().saturating_sub(issued);
        if age < -300 || age as u64 > max_age.as_secs() {
            return Err(DeviceCookieError::Expired);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CompliancePolicyConfig, DeviceSourceKind};
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, h, 0, 0).unwrap()
    }

    fn source(kind: DeviceSourceKind) -> DeviceSourceConfig {
        DeviceSourceConfig {
            name: "hexnode".into(),
            kind,
            token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            scopes: vec![DeviceScope::DevicesWrite],
            max_state: None,
        }
    }

    fn push_json() -> PosturePush {
        serde_json::from_str(
            r#"{"device_id":"mac-0042","owner":"jane","platform":"macOS","os":"macOS","os_version":"14.2.1",
                "hostname":"jane-mbp","domain":"corp.example","mac_addresses":["A4-83-E7-00-11-22"],
                "groups":["engineering"],"state":"managed",
                "posture":{"encrypted":false,"firewall":true,"edr_score":92,"inside_geofence":true},
                "observed_at":"2026-11-24T10:00:00Z"}"#,
        )
        .unwrap()
    }

    #[test]
    fn push_is_idempotent_and_ordered() {
        let src = source(DeviceSourceKind::Uem);
        let p = push_json();
        let (d, o) = apply_push(None, &p, &src, t(10)).unwrap();
        assert_eq!(o, PushOutcome::Created);
        assert_eq!(d.platform.as_deref(), Some("macos"));
        assert_eq!(d.mac_addresses, ["a4:83:e7:00:11:22"]);
        assert_eq!(d.posture["edr_score"].0, "92");
        let (d2, o) = apply_push(Some(d.clone()), &p, &src, t(11)).unwrap();
        assert_eq!(o, PushOutcome::Unchanged);
        assert_eq!(d2, d);
        let mut older = p.clone();
        older.observed_at = Some(t(9));
        older
            .posture
            .insert("encrypted".into(), Some("true".into()));
        assert_eq!(
            apply_push(Some(d.clone()), &older, &src, t(11)).unwrap().1,
            PushOutcome::Stale
        );
        // A report from the future counts as made now: it cannot outrank the next real one.
        let mut future = p.clone();
        future.observed_at = Some(Utc.with_ymd_and_hms(9999, 1, 1, 0, 0, 0).unwrap());
        let (df, _) = apply_push(Some(d.clone()), &future, &src, t(11)).unwrap();
        assert_eq!(df.synced_by_source.get(&src.name), Some(&t(11)));
        let mut newer = p.clone();
        newer.observed_at = Some(t(12));
        newer.posture = BTreeMap::from([
            ("encrypted".to_string(), Some("true".into())),
            ("firewall".to_string(), None),
        ]);
        let (d3, o) = apply_push(Some(d), &newer, &src, t(12)).unwrap();
        assert_eq!(o, PushOutcome::Updated);
        assert_eq!(d3.posture["encrypted"].0, "true");
        assert!(!d3.posture.contains_key("firewall"));
        assert_eq!(d3.posture["edr_score"].0, "92");
        // round trip through the store's JSON
        let back =
            Device::from_record_data("mac-0042", Some("jane"), &d3.to_record_data()).unwrap();
        assert_eq!(back, d3);
    }

    #[test]
    fn push_validation() {
        let src = source(DeviceSourceKind::Agent);
        let e = apply_push(None, &push_json(), &src, t(10)).unwrap_err();
        assert!(
            matches!(
                e,
                PushError::StateNotAllowed {
                    max: "registered",
                    ..
                }
            ),
            "{e}"
        );
        let src = source(DeviceSourceKind::Uem);
        let mut p = push_json();
        p.posture.insert("Bad Name".into(), Some("x".into()));
        assert_eq!(
            apply_push(None, &p, &src, t(10)).unwrap_err(),
            PushError::BadAttribute("Bad Name".into())
        );
        let mut p = push_json();
        p.posture.insert("edr_score".into(), Some("140".into()));
        assert!(matches!(
            apply_push(None, &p, &src, t(10)).unwrap_err(),
            PushError::BadEdrScore(_)
        ));
        let (d, _) = apply_push(None, &push_json(), &src, t(10)).unwrap();
        let mut p = push_json();
        p.owner = Some("mallory".into());
        assert!(matches!(
            apply_push(Some(d), &p, &src, t(10)).unwrap_err(),
            PushError::OwnerMismatch { .. }
        ));
        assert!(
            serde_json::from_str::<PosturePush>(r#"{"device_id":"x","colour":"red"}"#).is_err()
        );
    }

    #[test]
    fn pushed_passkeys_are_stored_as_base64url_and_bad_ones_named() {
        let src = source(DeviceSourceKind::Uem);
        let mut p = push_json();
        // 18 bytes whose standard base64 has `+` and `/`, padded.
        p.passkeys = Some(vec!["+/+/AAECAwQFBgcICQoLDA0ODw==".into()]);
        let (d, _) = apply_push(None, &p, &src, t(10)).unwrap();
        assert_eq!(d.passkeys, ["-_-_AAECAwQFBgcICQoLDA0ODw"]);
        let bound = DeviceBinding::Passkey {
            credential_id: "-_-_AAECAwQFBgcICQoLDA0ODw".into(),
        };
        assert!(bound.matches(&d));
        // Absent: kept; present: replaced.
        let mut again = push_json();
        again.observed_at = Some(t(11));
        let (d, _) = apply_push(Some(d), &again, &src, t(11)).unwrap();
        assert_eq!(d.passkeys.len(), 1);
        again.passkeys = Some(vec![]);
        let (d, _) = apply_push(Some(d), &again, &src, t(11)).unwrap();
        assert!(d.passkeys.is_empty());
        for bad in ["short", "not base64!!!!!!!!!!!!!!!!!", ""] {
            let mut p = push_json();
            p.passkeys = Some(vec![bad.into()]);
            let e = apply_push(None, &p, &src, t(10)).unwrap_err();
            assert_eq!(e, PushError::BadPasskey(bad.into()));
            assert!(e.to_string().starts_with("passkeys: "), "{e}");
        }
        let mut p = push_json();
        p.passkeys = Some(vec!["AAECAwQFBgcICQoLDA0ODw".into(); MAX_PASSKEYS + 1]);
        assert!(matches!(
            apply_push(None, &p, &src, t(10)).unwrap_err(),
            PushError::TooManyPasskeys(_)
        ));
    }

    #[test]
    fn context_from_device_with_policies_and_staleness() {
        let src = source(DeviceSourceKind::Uem);
        let (d, _) = apply_push(None, &push_json(), &src, t(10)).unwrap();
        let policies = compliance::compile_policies(&[CompliancePolicyConfig {
            name: "mac".into(),
            platforms: vec!["macos".into()],
            require_encryption: true,
            min_os_version: Some("15.0".into()),
            ..Default::default()
        }])
        .unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let ctx = device_context(&d, &policies, day, t(11));
        assert_eq!(ctx.state, DeviceState::Managed);
        assert_eq!(ctx.compliant, Some(false));
        let msgs: Vec<_> = ctx
            .failing_checks
            .iter()
            .map(|c| c.message.clone().unwrap())
            .collect();
        assert_eq!(
            msgs,
            [
                "Disk encryption is off",
                "OS 14.2.1 is below the required 15.0"
            ]
        );
        assert_eq!(ctx.posture["os_version"].0, "14.2.1");
        assert_eq!(ctx.hostname.as_deref(), Some("jane-mbp"));
        let stale = device_context(&d, &policies, std::time::Duration::from_secs(1800), t(11));
        assert_eq!(stale.compliant, None);
        assert!(stale.posture.is_empty());
        let cookie = DeviceBinding::Cookie {
            device_id: d.id.clone(),
        };
        assert_eq!(
            bound_device_context(&cookie, &d, &policies, day, t(11)).state,
            DeviceState::Registered
        );
    }

    #[test]
    fn reported_non_compliance_fails() {
        let mut d = Device::new("x");
        d.last_sync = Some(t(10));
        d.reported_compliance = Some(ReportedCompliance {
            compliant: false,
            source: "hexnode".into(),
            reason: Some("Passcode policy violated".into()),
            at: t(10),
        });
        let ctx = device_context(&d, &[], std::time::Duration::from_secs(86_400), t(11));
        assert_eq!(ctx.compliant, Some(false));
        assert_eq!(ctx.failing_checks[0].id, "uem_compliance");
    }

    #[test]
    fn a_uem_certificate_binds_by_the_serial_number_it_names() {
        let mut d = Device::new("hexnode-42");
        d.serial_number = Some("C02X42".into());
        let cert = |names: &[&str]| DeviceBinding::Certificate {
            sha256_fingerprint: "ab".repeat(32),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        assert!(cert(&["c02x42"]).matches(&d));
        assert!(cert(&["jane-mbp.corp.example", "C02X42"]).matches(&d));
        assert!(!cert(&["C02X43"]).matches(&d));
        assert!(!cert(&[]).matches(&d));
        // A device without a serial number is matched by fingerprint only.
        d.serial_number = Some(" ".into());
        assert!(!cert(&[" "]).matches(&d));
    }

    #[test]
    fn binding_prefers_certificate() {
        let mut d = Device::new("dev1");
        d.certificates.push(DeviceCertificate {
            sha256_fingerprint: "ab".repeat(32),
            ..Default::default()
        });
        d.passkeys.push("cred1".into());
        let c = vec![
            (
                DeviceBinding::Cookie {
                    device_id: "dev1".into(),
                },
                d.clone(),
            ),
            (
                DeviceBinding::Passkey {
                    credential_id: "cred1".into(),
                },
                d.clone(),
            ),
            (
                DeviceBinding::Certificate {
                    sha256_fingerprint: "AB".repeat(32),
                    names: Vec::new(),
                },
                d.clone(),
            ),
            (
                DeviceBinding::Passkey {
                    credential_id: "other".into(),
                },
                d.clone(),
            ),
        ];
        assert!(matches!(
            strongest_binding(&c).unwrap().0,
            DeviceBinding::Certificate { .. }
        ));
        assert!(matches!(
            strongest_binding(&c[..2]).unwrap().0,
            DeviceBinding::Passkey { .. }
        ));
        assert!(strongest_binding(&c[3..]).is_none());
    }

    #[test]
    fn api_tokens_and_scopes() {
        // sha256("test")
        let auth = DeviceApiAuth::new(&[source(DeviceSourceKind::Uem)]).unwrap();
        assert_eq!(
            auth.authenticate(Some("Bearer test"), DeviceScope::DevicesWrite)
                .unwrap()
                .name,
            "hexnode"
        );
        assert_eq!(
            auth.authenticate(Some("Bearer nope"), DeviceScope::DevicesWrite)
                .unwrap_err(),
            DeviceApiAuthError::UnknownToken
        );
        assert_eq!(
            auth.authenticate(None, DeviceScope::DevicesWrite)
                .unwrap_err(),
            DeviceApiAuthError::MissingToken
        );
        assert!(matches!(
            auth.authenticate(Some("bearer test"), DeviceScope::DevicesRead)
                .unwrap_err(),
            DeviceApiAuthError::MissingScope { .. }
        ));
        let mut bad = source(DeviceSourceKind::Uem);
        bad.token_sha256 = "xyz".into();
        let name = bad.name.clone();
        assert_eq!(DeviceApiAuth::new(&[bad]).unwrap_err(), BadTokenHash(name));
    }

    #[test]
    fn device_cookie_round_trip() {
        let s = DeviceCookieSigner::new(&[7u8; 32]).unwrap();
        let c = s.issue("dev.1", t(10));
        let age = std::time::Duration::from_secs(86_400);
        assert_eq!(s.verify(&c, age, t(11)).unwrap(), "dev.1");
        assert_eq!(
            s.verify(&c, std::time::Duration::from_secs(60), t(11))
                .unwrap_err(),
            DeviceCookieError::Expired
        );
        let other = DeviceCookieSigner::new(&[8u8; 32]).unwrap();
        assert_eq!(
            other.verify(&c, age, t(11)).unwrap_err(),
            DeviceCookieError::BadSignature
        );
        let mut tampered = c.clone();
        tampered.replace_range(3..4, "A");
        assert_eq!(
            s.verify(&tampered, age, t(11)).unwrap_err(),
            DeviceCookieError::BadSignature
        );
        assert_eq!(
            DeviceCookieSigner::new(b"short").unwrap_err(),
            DeviceCookieError::WeakKey
        );
    }
}
