//! The request context: everything the pipeline gathered about one request, as plain data.
//!
//! The gateway fills it from the session, the signals and the route; `stepgate what-if`
//! reads it from JSON; policy test cases read it from YAML. The engine never does I/O to
//! complete it: what is missing here is, for the policy, unknown.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Whether the request is the sign-in itself or access to an app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// The login ceremony (the policy target `sign_in`).
    SignIn,
    /// A request to a protected app.
    #[default]
    Access,
}

/// One request, fully gathered.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// Sign-in or app access.
    #[serde(default)]
    pub kind: RequestKind,
    /// When the request happens (UTC). Time-of-access conditions convert it to their zone.
    #[serde(default = "Utc::now")]
    pub time: DateTime<Utc>,
    /// Who: absent for an anonymous request. Shared: a live request's user is built once
    /// per cached user record, not copied into every request's context.
    #[serde(default)]
    pub user: Option<std::sync::Arc<UserContext>>,
    /// What for: app, method and path.
    #[serde(default)]
    pub request: RequestInfo,
    /// From where.
    #[serde(default)]
    pub network: NetworkContext,
    /// The client software.
    #[serde(default)]
    pub user_agent: UserAgentContext,
    /// From what: absent when the request is tied to no known device.
    #[serde(default)]
    pub device: Option<DeviceContext>,
    /// The client certificate, if one was presented.
    #[serde(default)]
    pub certificate: Option<CertificateContext>,
    /// The behavioural risk assessment.
    #[serde(default)]
    pub risk: RiskContext,
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            kind: RequestKind::Access,
            time: Utc::now(),
            user: None,
            request: RequestInfo::default(),
            network: NetworkContext::default(),
            user_agent: UserAgentContext::default(),
            device: None,
            certificate: None,
            risk: RiskContext::default(),
        }
    }
}

/// The signed-in user as the policy sees them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserContext {
    /// The username (also readable as the attribute `username`).
    pub username: String,
    /// E-mail address (also the attribute `email`).
    #[serde(default)]
    pub email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Groups and roles.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form attributes (department, title, employment type, …).
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
}

impl UserContext {
    /// Looks up an attribute, including the built-in `username`, `email` and `name`.
    pub fn attribute(&self, name: &str) -> Option<AttributeRef<'_>> {
        match name {
            "username" => Some(AttributeRef::One(&self.username)),
            "email" => self.email.as_deref().map(AttributeRef::One),
            "name" => self.name.as_deref().map(AttributeRef::One),
            _ => self.attributes.get(name).map(|v| match v {
                AttributeValue::One(s) => AttributeRef::One(s),
                AttributeValue::Many(v) => AttributeRef::Many(v),
            }),
        }
    }
}

/// A user attribute: one string or a list of strings. The one type for it: the store keeps
/// it, the configuration declares it, policies read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AttributeValue {
    /// A single value.
    One(String),
    /// Several values (each is matched).
    Many(Vec<String>),
}

/// A borrowed attribute value.
#[derive(Clone, Copy, Debug)]
pub enum AttributeRef<'a> {
    /// A single value.
    One(&'a str),
    /// Several values.
    Many(&'a [String]),
}

impl<'de> Deserialize<'de> for AttributeValue {
    // Hand-written (not `untagged`): marked-yaml hands scalars over as strings on demand.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttributeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AttributeValue::One(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(AttributeValue::One(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AttributeValue::One(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AttributeValue::One(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AttributeValue::One(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AttributeValue::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(AttributeValue::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The app, method and path of the request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInfo {
    /// The app's id, as configured under `apps`.
    #[serde(default)]
    pub app: Option<String>,
    /// HTTP method, upper case.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request path (already normalised by the gateway), without the query.
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_method() -> String {
    "GET".into()
}

fn default_path() -> String {
    "/".into()
}

impl Default for RequestInfo {
    fn default() -> Self {
        RequestInfo {
            app: None,
            method: default_method(),
            path: default_path(),
        }
    }
}

/// Where the request comes from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkContext {
    /// The client's IP (after trusted-proxy handling).
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// ISO 3166-1 alpha-2 country code from GeoIP.
    #[serde(default)]
    pub country: Option<String>,
    /// Region / subdivision (ISO 3166-2 code or name) from GeoIP.
    #[serde(default)]
    pub region: Option<String>,
    /// City name from GeoIP.
    #[serde(default)]
    pub city: Option<String>,
    /// IP risk score 0–100 from the risk feeds (absent: unknown).
    #[serde(default)]
    pub ip_risk_score: Option<u8>,
    /// Latitude from GeoIP: no condition reads it, the travel velocity of the risk score
    /// does (a context file may state it for `stepgate what-if`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude from GeoIP (see `latitude`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

/// The parsed user agent. The values are shared: the parse of an agent is cached and
/// handed to each of its requests without copying.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentContext {
    /// The raw `User-Agent` header.
    #[serde(default)]
    pub raw: Option<Arc<str>>,
    /// Browser family (`Chrome`, `Firefox`, `Safari`, …).
    #[serde(default)]
    pub browser: Option<Arc<str>>,
    /// Operating system family (`Windows`, `macOS`, `iOS`, `Android`, `Linux`, …).
    #[serde(default)]
    pub os: Option<Arc<str>>,
    /// Device class (`desktop`, `mobile`, `tablet`, `bot`, …).
    #[serde(default)]
    pub device_class: Option<Arc<str>>,
}

/// How much the organisation knows about and controls a device; ordered from least to most.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Unknown device.
    #[default]
    Unregistered,
    /// Known to stepgate (device cookie or passkey) but not managed.
    Registered,
    /// Enrolled in a UEM/MDM.
    Managed,
    /// Managed and reporting to an EDR.
    ManagedEdr,
}

impl DeviceState {
    /// All states, least trusted first.
    pub const ALL: [DeviceState; 4] = [
        DeviceState::Unregistered,
        DeviceState::Registered,
        DeviceState::Managed,
        DeviceState::ManagedEdr,
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Unregistered => "unregistered",
            DeviceState::Registered => "registered",
            DeviceState::Managed => "managed",
            DeviceState::ManagedEdr => "managed_edr",
        }
    }
}

/// The device the request comes from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceContext {
    /// Registry id.
    #[serde(default)]
    pub id: Option<String>,
    /// Registration / management state.
    #[serde(default)]
    pub state: DeviceState,
    /// Host name as reported by the UEM.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Directory domain the device is joined to.
    #[serde(default)]
    pub domain: Option<String>,
    /// MAC addresses.
    #[serde(default)]
    pub mac_addresses: Vec<String>,
    /// The compliance verdict (absent: unknown, e.g. posture too old).
    #[serde(default)]
    pub compliant: Option<bool>,
    /// The compliance checks that failed, for conditions and the remediation page.
    #[serde(default)]
    pub failing_checks: Vec<FailingCheck>,
    /// Posture attributes (`os_version`, `encrypted`, `firewall`, `edr_score`, …).
    #[serde(default)]
    pub posture: BTreeMap<String, PostureValue>,
}

/// A failed compliance check, with the words the remediation page shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FailingCheck {
    /// Check id (`disk_encryption`, `os_version`, …).
    pub id: String,
    /// What is wrong, for a person ("Disk encryption is off").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How to fix it ("Turn on FileVault in System Settings › Privacy & Security").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl<'de> Deserialize<'de> for FailingCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            id: String,
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            fix: Option<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FailingCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a check id, or a map with `id`, `message` and `fix`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FailingCheck {
                    id: v.to_owned(),
                    ..FailingCheck::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FailingCheck {
                    id: f.id,
                    message: f.message,
                    fix: f.fix,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A posture attribute value. Kept as text and interpreted by the comparison:
/// `true`/`false` compare as booleans, values starting with a digit compare as versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PostureValue(pub String);

impl From<&str> for PostureValue {
    fn from(s: &str) -> Self {
        PostureValue(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for PostureValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PostureValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(PostureValue(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(PostureValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(PostureValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(PostureValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(PostureValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The client certificate as validated by the certificate signal.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateContext {
    /// Whether the chain and validity period checked out against a configured CA.
    #[serde(default)]
    pub valid: bool,
    /// Issuer distinguished name.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Subject distinguished name.
    #[serde(default)]
    pub subject: Option<String>,
    /// Revocation status: `Some(true)` revoked, `Some(false)` checked and good, absent unknown.
    #[serde(default)]
    pub revoked: Option<bool>,
}

/// A behavioural risk level, ordered.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Nothing unusual.
    #[default]
    Low,
    /// Some unusual signals.
    Medium,
    /// Strongly unusual (impossible travel, risky IP, …).
    High,
}

impl RiskLevel {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

/// The behavioural risk assessment of the request.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskContext {
    /// Scored level.
    #[serde(default)]
    pub level: RiskLevel,
    /// Named reasons (`new_device`, `new_country`, `impossible_travel`, …).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Speed in km/min implied by the distance and time since the last successful sign-in.
    #[serde(default)]
    pub velocity_kmpm: Option<f64>,
}
