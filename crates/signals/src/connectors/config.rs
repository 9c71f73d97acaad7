//! `devices.connectors:` — one entry per UEM stepgate pulls devices from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use stepgate_policy::{DeviceState, HumanDuration};

use crate::config::{DeviceScope, DeviceSourceConfig, DeviceSourceKind};

/// Which UEM API a connector speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// Hexnode UEM: `{url}/api/v1/devices/`, `Authorization: <api key>`.
    Hexnode,
    /// Microsoft Intune through Microsoft Graph, OAuth 2.0 client credentials.
    Intune,
    /// Jamf Pro: API client credentials, `computers-inventory` and the mobile-device
    /// inventory (`v2/mobile-devices/detail`).
    Jamf,
}

impl ConnectorKind {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Hexnode => "hexnode",
            ConnectorKind::Intune => "intune",
            ConnectorKind::Jamf => "jamf",
        }
    }
}

/// Where a connector's secret (API key, OAuth client secret) comes from. Never inline in
/// the YAML unless the key itself says so (`inline_insecure`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// A file holding the secret (surrounding whitespace is trimmed).
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
    /// The secret itself, in the configuration file (test set-ups only).
    InlineInsecure(String),
}

/// How a UEM's user (e-mail or UPN) names a stepgate user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerMatch {
    /// The UEM's e-mail/UPN is the stepgate username as it is.
    #[default]
    Exact,
    /// The part before `@`, only for addresses in `owner_domains`.
    LocalPart,
}

/// One UEM connector.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Name recorded as the devices' source and prefixed to their ids (`hexnode` →
    /// `hexnode-42`).
    pub name: String,
    /// Which API it speaks.
    pub kind: ConnectorKind,
    /// The API's base URL (`https://acme.hexnodemdm.com`, `https://graph.microsoft.com`,
    /// `https://acme.jamfcloud.com`).
    pub url: String,
    /// OAuth 2.0 token endpoint (Intune: required,
    /// `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`; Jamf: default
    /// `{url}/api/oauth/token`).
    #[serde(default)]
    pub token_url: Option<String>,
    /// OAuth client id (Intune, Jamf).
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth scope asked for (Intune default `https://graph.microsoft.com/.default`).
    #[serde(default)]
    pub scope: Option<String>,
    /// The API key (Hexnode) or client secret (Intune, Jamf).
    pub secret: SecretSource,
    /// Time between scheduled syncs.
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// Time between full resyncs (the others are incremental where the API allows it).
    #[serde(default = "default_full_resync")]
    pub full_resync: HumanDuration,
    /// Devices asked for per page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Retries of a failed request (network error, 429, 5xx) before the sync fails.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First wait before a retry; doubled each time (a `Retry-After` answer wins).
    #[serde(default = "default_backoff")]
    pub backoff: HumanDuration,
    /// The longest `Retry-After` honoured; longer ones fail the sync (retried next interval).
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after: HumanDuration,
    /// A device missing from full resyncs for this long becomes unmanaged.
    #[serde(default = "default_grace")]
    pub grace: HumanDuration,
    /// How the UEM's user names a stepgate user.
    #[serde(default)]
    pub owner_match: OwnerMatch,
    /// Mail domains whose local part is a stepgate username (`owner_match: local_part`).
    #[serde(default)]
    pub owner_domains: Vec<String>,
    /// Overrides of the vendor's field mapping: stepgate attribute → JSON pointer into the
    /// UEM's device object (`encrypted: /security/encrypted`).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Highest device state the connector may assert (default `managed`).
    #[serde(default)]
    pub max_state: Option<DeviceState>,
    /// Whether the UEM's own compliance verdict counts (`false`: only stepgate's compliance
    /// policies judge the posture the UEM reports, e.g. Jamf without its compliance
    /// integration).
    #[serde(default = "yes")]
    pub uem_compliance: bool,
    /// Without a successful sync for this long, the devices this connector wrote no longer
    /// count as compliant or managed (their management status cannot be confirmed).
    #[serde(default = "default_stale_after")]
    pub stale_after: HumanDuration,
    /// Jamf: also read iPhones and iPads (`v2/mobile-devices/detail`); the API role needs
    /// "Read Mobile Devices".
    #[serde(default = "yes")]
    pub mobile_devices: bool,
    /// Jamf: overrides of the mobile-device mapping, like `fields:` for computers.
    #[serde(default)]
    pub mobile_fields: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(900)
}
fn default_full_resync() -> HumanDuration {
    HumanDuration::from_secs(86_400)
}
fn default_page_size() -> u32 {
    100
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_retries() -> u32 {
    3
}
fn default_backoff() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_max_retry_after() -> HumanDuration {
    HumanDuration::from_secs(120)
}
fn default_stale_after() -> HumanDuration {
    HumanDuration::from_secs(86_400)
}
fn default_grace() -> HumanDuration {
    HumanDuration::from_secs(3 * 86_400)
}

/// Attributes a `fields:` override may name.
pub const MAPPED_ATTRIBUTES: &[&str] = &[
    "id",
    "owner",
    "platform",
    "os",
    "os_version",
    "model",
    "serial_number",
    "hostname",
    "managed",
    "encrypted",
    "firewall",
    "screen_lock",
    "jailbroken",
    "supervised",
    "password_compliant",
    "edr",
    "compliant",
    "failing",
    "observed_at",
];

impl ConnectorConfig {
    /// The connector as a device source, for [`crate::device::apply_push`] (it has no API token).
    pub fn as_source(&self) -> DeviceSourceConfig {
        DeviceSourceConfig {
            name: self.name.clone(),
            kind: DeviceSourceKind::Uem,
            token_sha256: String::new(),
            scopes: vec![DeviceScope::DevicesWrite],
            max_state: self.max_state,
        }
    }

    /// Meaning errors, each naming the connector, the key and what is expected.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let n = &self.name;
        let name_ok = !n.is_empty()
            && n.len() <= 40
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            out.push(format!(
                "connector `{n}`: name must be 1–40 characters of a-z, 0-9 or `-`"
            ));
        }
        let http = |u: &str| u.starts_with("https://") || u.starts_with("http://");
        if !http(&self.url) {
            out.push(format!(
                "connector `{n}`: url `{}` is not an http(s) URL; expected e.g. https://acme.hexnodemdm.com",
                self.url
            ));
        }
        match self.kind {
            ConnectorKind::Hexnode => {}
            ConnectorKind::Intune | ConnectorKind::Jamf => {
                if self
                    .client_id
                    .as_deref()
                    .is_none_or(|c| c.trim().is_empty())
                {
                    out.push(format!(
                        "connector `{n}` ({}): `client_id` is required (the OAuth client's id)",
                        self.kind.as_str()
                    ));
                }
            }
        }
        match (&self.kind, &self.token_url) {
            (ConnectorKind::Intune, None) => out.push(format!(
                "connector `{n}` (intune): `token_url` is required, e.g. https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token"
            )),
            (_, Some(t)) if !http(t) => out.push(format!(
                "connector `{n}`: token_url `{t}` is not an http(s) URL"
            )),
            _ => {}
        }
        if self.page_size == 0 || self.page_size > 1000 {
            out.push(format!(
                "connector `{n}`: page_size {} must be 1–1000",
                self.page_size
            ));
        }
        if self.interval.0 < std::time::Duration::from_secs(10) {
            out.push(format!(
                "connector `{n}`: interval {} is shorter than 10s; UEM APIs rate-limit, use e.g. `15m`",
                self.interval
            ));
        }
        if self.timeout.0.is_zero() {
            out.push(format!("connector `{n}`: timeout must be longer than 0s"));
        }
        if self.owner_match == OwnerMatch::LocalPart && self.owner_domains.is_empty() {
            out.push(format!(
                "connector `{n}`: owner_match `local_part` needs `owner_domains` (e.g. [example.com]), so another domain's jane@ is not your jane"
            ));
        }
        if self.stale_after.0 <= self.interval.0 {
            out.push(format!(
                "connector `{n}`: stale_after {} must be longer than interval {}, or every device would go stale between two syncs; use e.g. `{}`",
                self.stale_after,
                self.interval,
                HumanDuration::from_secs(self.interval.0.as_secs().saturating_mul(4).max(3600))
            ));
        }
        if self.kind != ConnectorKind::Jamf && !self.mobile_fields.is_empty() {
            out.push(format!(
                "connector `{n}`: mobile_fields is for Jamf's mobile devices only; use `fields` for {}",
                self.kind.as_str()
            ));
        }
        for (key, map) in [
            ("fields", &self.fields),
            ("mobile_fields", &self.mobile_fields),
        ] {
            for (k, p) in map {
                if !MAPPED_ATTRIBUTES.contains(&k.as_str()) {
                    out.push(format!(
                        "connector `{n}`: {key}.{k} is not a mapped attribute; expected one of {}",
                        MAPPED_ATTRIBUTES.join(", ")
                    ));
                }
                if !(p.is_empty() || p.starts_with('/')) {
                    out.push(format!(
                        "connector `{n}`: {key}.{k} `{p}` is not a JSON pointer; expected e.g. `/security/encrypted`"
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: serde_json::Value) -> ConnectorConfig {
        let mut v = serde_json::json!({"name": "uem", "kind": "hexnode",
            "url": "https://u.example", "secret": {"env": "X"}});
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn stale_after_must_outlast_the_interval_and_mobile_fields_are_jamf_only() {
        assert!(cfg(serde_json::json!({})).problems().is_empty());
        let p = cfg(serde_json::json!({"interval": "1h", "stale_after": "1h"})).problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("stale_after 1h must be longer than interval 1h"),
            "{p:?}"
        );
        assert!(p[0].contains("use e.g. `4h`"), "{p:?}");
        let p = cfg(serde_json::json!({"mobile_fields": {"os": "/x"}})).problems();
        assert!(
            p[0].contains("mobile_fields is for Jamf's mobile devices only"),
            "{p:?}"
        );
        let p = cfg(serde_json::json!({"kind": "jamf", "client_id": "c",
            "mobile_fields": {"colour": "x"}}))
        .problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("mobile_fields.colour is not a mapped attribute"),
            "{p:?}"
        );
        assert!(
            p[1].contains("mobile_fields.colour `x` is not a JSON pointer"),
            "{p:?}"
        );
    }
}
