//! The policy-related part of the configuration file, as written by the admin.
//!
//! These types are what the YAML deserialises into. Values that need checking (CIDRs,
//! regexes, time zones, path patterns, references to apps and zones) are kept as
//! [`Spanned`] text so that [`crate::compile`] can report every bad one with its exact
//! file position, instead of stopping at the first.

use std::collections::BTreeMap;
use std::fmt;

use marked_yaml::Spanned;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::HumanDuration;

/// How much damage misuse of an app could do; ordered.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// Low impact.
    Low,
    /// Medium impact (the default).
    #[default]
    Medium,
    /// High impact.
    High,
}

impl Sensitivity {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Low => "low",
            Sensitivity::Medium => "medium",
            Sensitivity::High => "high",
        }
    }
}

/// One protected application.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Stable id, used in policy targets and URLs (`[a-z0-9-_]`).
    pub id: Spanned<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Host names this app is served on.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// Upstream base URL stepgate proxies to.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    /// Impact level.
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// Free tags for policy targets (`finance`, `internal`, …).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Routes with their own tags (`sensitive`, …); most specific match wins.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// The upstream treats paths without regard to case (IIS, ASP.NET, a case-insensitive
    /// file system): route and policy path patterns then match this app's requests
    /// ignoring ASCII case, so `/ADMIN` is the `/admin/**` it reaches.
    #[serde(default)]
    pub case_insensitive_paths: bool,
}

/// A route inside an app.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// A short name, shown in traces and on the step-up page.
    #[serde(default)]
    pub name: Option<String>,
    /// Methods (empty: all).
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Path pattern: `/licences/*/revoke`, `/admin/**`.
    pub path: Spanned<String>,
    /// Tags (`sensitive`, `licensing`, …).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Unique name.
    pub name: Spanned<String>,
    /// What it is for, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Evaluation order: lowest first; no two policies may share one.
    pub priority: Spanned<u32>,
    /// Off switch (default on).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Evaluate and report, never decide.
    #[serde(default)]
    pub report_only: bool,
    /// Which requests the policy is about.
    #[serde(default)]
    pub targets: TargetsSpec,
    /// How the top-level conditions combine: `all` (default) or `any`.
    #[serde(default, rename = "match")]
    pub match_mode: MatchMode,
    /// Conditions (empty: always).
    #[serde(default)]
    pub conditions: Vec<Spanned<ConditionSpec>>,
    /// What happens when targets and conditions match.
    pub outcome: OutcomeSpec,
}

fn yes() -> bool {
    true
}

/// `all` or `any`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// Every condition must hold.
    #[default]
    All,
    /// At least one must hold.
    Any,
}

/// Which requests a policy applies to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsSpec {
    /// The sign-in itself.
    #[serde(default)]
    pub sign_in: bool,
    /// Apps by id.
    #[serde(default)]
    pub apps: Vec<Spanned<String>>,
    /// Apps by tag.
    #[serde(default)]
    pub app_tags: Vec<String>,
    /// Routes (any of them): by route tag, by method and path pattern, or both.
    #[serde(default)]
    pub routes: Vec<RouteSelectorSpec>,
}

/// Selects routes by tags and/or method + path.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSelectorSpec {
    /// The matched route must carry one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The request method must be one of these.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// The request path must match this pattern.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
}

/// How deeply `all`, `any` and `not` may nest inside each other. Compiling, evaluating and
/// explaining a condition tree recurse once per level; the compiler refuses a deeper tree
/// with the position of the first condition past the limit.
pub const MAX_CONDITION_DEPTH: usize = 64;

/// A condition; each is a one-key map naming its kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionSpec {
    /// Every nested condition holds.
    All(Vec<Spanned<ConditionSpec>>),
    /// At least one nested condition holds.
    Any(Vec<Spanned<ConditionSpec>>),
    /// The nested condition does not hold.
    Not(Box<Spanned<ConditionSpec>>),
    /// A user attribute (`username`, `email`, `name` or any custom one).
    UserAttribute(AttributeMatchSpec),
    /// Group / role membership.
    Groups(GroupsSpec),
    /// Client IP in (or not in) named zones or CIDRs.
    Network(NetworkSpec),
    /// GeoIP location (any listed value).
    Location(LocationSpec),
    /// IP risk score range.
    IpRisk(RangeSpec),
    /// User agent field.
    UserAgent(UserAgentMatchSpec),
    /// Device host name.
    DeviceHostname(StringMatchSpec),
    /// Device directory domain.
    DeviceDomain(StringMatchSpec),
    /// Any of the device's MAC addresses.
    DeviceMac(StringMatchSpec),
    /// Device registration / management state.
    DeviceState(DeviceStateSpec),
    /// Device compliance verdict or named failing checks.
    DeviceCompliance(ComplianceSpec),
    /// A device posture attribute compared to a value.
    DevicePosture(PostureSpec),
    /// Client certificate.
    Certificate(CertificateSpec),
    /// Time of access in a time zone.
    Time(TimeSpec),
    /// Travel speed since the last successful sign-in.
    Velocity(VelocitySpec),
    /// Behavioural risk level and reasons.
    Risk(RiskSpec),
    /// The app's sensitivity.
    AppSensitivity(SensitivitySpec),
    /// HTTP method and path.
    Request(RequestSpec),
}

/// String operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringOp {
    /// Exactly equal.
    Equals,
    /// Not equal.
    NotEquals,
    /// Contains the substring.
    Contains,
    /// Does not contain the substring.
    NotContains,
    /// Starts with.
    StartsWith,
    /// Ends with.
    EndsWith,
    /// Matches the regular expression (the seeds' "expression").
    Regex,
    /// Equal to one of a list.
    In,
    /// Equal to none of a list.
    NotIn,
}

impl StringOp {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StringOp::Equals => "equals",
            StringOp::NotEquals => "not_equals",
            StringOp::Contains => "contains",
            StringOp::NotContains => "not_contains",
            StringOp::StartsWith => "starts_with",
            StringOp::EndsWith => "ends_with",
            StringOp::Regex => "regex",
            StringOp::In => "in",
            StringOp::NotIn => "not_in",
        }
    }
}

/// `value` for single-value operators, `values` for `in` / `not_in`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatchSpec {
    /// The operator.
    pub op: Spanned<StringOp>,
    /// The operand for single-value operators.
    #[serde(default)]
    pub value: Option<Spanned<String>>,
    /// The operands for `in` / `not_in`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A user attribute comparison.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatchSpec {
    /// Attribute name.
    pub attribute: String,
    /// The operator.
    pub op: Spanned<StringOp>,
    /// The operand for single-value operators.
    #[serde(default)]
    pub value: Option<Spanned<String>>,
    /// The operands for `in` / `not_in`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A user-agent comparison.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentMatchSpec {
    /// Which part of the user agent.
    pub field: UserAgentField,
    /// The operator.
    pub op: Spanned<StringOp>,
    /// The operand for single-value operators.
    #[serde(default)]
    pub value: Option<Spanned<String>>,
    /// The operands for `in` / `not_in`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Parts of the user agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAgentField {
    /// The whole header.
    Raw,
    /// Browser family.
    Browser,
    /// OS family.
    Os,
    /// Device class.
    DeviceClass,
}

/// Group membership: `any` of, or `all` of.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsSpec {
    /// Member of at least one.
    #[serde(default)]
    pub any: Vec<String>,
    /// Member of every one.
    #[serde(default)]
    pub all: Vec<String>,
}

/// Network membership: `in` (contains) or `not_in` (does not contain). Entries are zone
/// names from `networks` or CIDRs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The IP is in at least one of these.
    #[serde(default, rename = "in")]
    pub in_: Vec<Spanned<String>>,
    /// The IP is in none of these.
    #[serde(default)]
    pub not_in: Vec<Spanned<String>>,
}

/// Location: holds when any listed country, region or city matches (OR).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationSpec {
    /// ISO 3166-1 alpha-2 codes.
    #[serde(default)]
    pub countries: Vec<Spanned<String>>,
    /// Regions (ISO 3166-2 codes or names).
    #[serde(default)]
    pub regions: Vec<String>,
    /// City names.
    #[serde(default)]
    pub cities: Vec<String>,
    /// Region names containing any of these (case-insensitive for ASCII letters).
    #[serde(default)]
    pub region_contains: Vec<String>,
    /// Region names (when known) containing none of these.
    #[serde(default)]
    pub region_not_contains: Vec<String>,
    /// City names containing any of these (case-insensitive for ASCII letters).
    #[serde(default)]
    pub city_contains: Vec<String>,
    /// City names (when known) containing none of these.
    #[serde(default)]
    pub city_not_contains: Vec<String>,
    /// Places combining country, region and city: `FR`, `FR/IDF`, `US/NY/New York`; one
    /// matches when every part it names does.
    #[serde(default)]
    pub places: Vec<Spanned<String>>,
}

/// An inclusive integer range.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Lowest value that holds.
    #[serde(default)]
    pub min: Option<Spanned<i64>>,
    /// Highest value that holds.
    #[serde(default)]
    pub max: Option<Spanned<i64>>,
}

/// Device state: one of a list, or at least a level.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceStateSpec {
    /// The state is one of these.
    #[serde(default, rename = "in")]
    pub in_: Vec<crate::DeviceState>,
    /// The state is this or more trusted.
    #[serde(default)]
    pub at_least: Option<crate::DeviceState>,
}

/// Compliance: the verdict, or named failing checks.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceSpec {
    /// The verdict is exactly this (unknown never equals either).
    #[serde(default)]
    pub compliant: Option<bool>,
    /// At least one of these checks is failing.
    #[serde(default)]
    pub failing: Vec<String>,
}

/// Comparison operators for posture attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum CompareOp {
    /// Equal.
    #[serde(rename = "eq", alias = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "ne", alias = "!=")]
    Ne,
    /// Less than.
    #[serde(rename = "lt", alias = "<")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "le", alias = "<=")]
    Le,
    /// Greater than.
    #[serde(rename = "gt", alias = ">")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = "ge", alias = ">=")]
    Ge,
}

impl CompareOp {
    /// The symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

/// A posture attribute comparison, e.g. `{attribute: os_version, op: lt, value: "15.0"}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostureSpec {
    /// Attribute name.
    pub attribute: String,
    /// Operator (`eq ne lt le gt ge`, or `== != < <= > >=`).
    pub op: CompareOp,
    /// The value: `true`/`false`, a number or version (`15.0`, `14.2.1`), or text.
    pub value: String,
}

/// Client certificate requirements; each given key must hold.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// A certificate was presented (or not).
    #[serde(default)]
    pub present: Option<bool>,
    /// It validated against a configured CA.
    #[serde(default)]
    pub valid: Option<bool>,
    /// The issuer DN matches.
    #[serde(default)]
    pub issuer: Option<StringMatchSpec>,
    /// Revocation was checked and it is not revoked.
    #[serde(default)]
    pub not_revoked: Option<bool>,
}

/// Time of access.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSpec {
    /// IANA time zone (`Europe/Paris`); default UTC.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// Hours window: from (inclusive) to (exclusive), 0–23; `from > to` wraps midnight.
    #[serde(default)]
    pub hours: Option<HoursSpec>,
    /// Weekdays (`mon` … `sun`); empty: every day.
    #[serde(default)]
    pub weekdays: Vec<Spanned<String>>,
}

/// An hour window.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursSpec {
    /// First hour inside the window (0–23).
    pub from: Spanned<i64>,
    /// First hour after the window (0–23; equal to `from` means all day).
    pub to: Spanned<i64>,
}

/// Travel speed since the last successful sign-in, in km/min (1–999; an airliner does
/// about 15): exactly one of above a threshold, below one, or between two (inclusive).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocitySpec {
    /// Faster than this.
    #[serde(default)]
    pub above_kmpm: Option<Spanned<f64>>,
    /// Slower than this.
    #[serde(default)]
    pub below_kmpm: Option<Spanned<f64>>,
    /// `[low, high]`: at least `low` and at most `high`.
    #[serde(default)]
    pub between_kmpm: Option<Spanned<Vec<f64>>>,
}

/// Behavioural risk.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSpec {
    /// The level is this or higher.
    #[serde(default)]
    pub at_least: Option<crate::RiskLevel>,
    /// The level is one of these.
    #[serde(default)]
    pub levels: Vec<crate::RiskLevel>,
    /// At least one of these reasons was found.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// App sensitivity.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitivitySpec {
    /// One of these.
    #[serde(default, rename = "in")]
    pub in_: Vec<Sensitivity>,
    /// This or higher.
    #[serde(default)]
    pub at_least: Option<Sensitivity>,
}

/// HTTP method and path.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// One of these methods.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// The path matches this pattern.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
}

/// What a matching policy decides: `allow`, `deny`, `{step_up: {...}}` or `{deny: {...}}`.
#[derive(Clone, Debug)]
pub enum OutcomeSpec {
    /// Let it through with the current session.
    Allow,
    /// Require a stronger or fresher authentication first (boxed: the largest by far).
    StepUp(Box<StepUpSpec>),
    /// Block.
    Deny(DenySpec),
}

/// Step-up requirements.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpSpec {
    /// Minimum authenticator assurance level 1–3.
    #[serde(default)]
    pub min_aal: Option<Spanned<u8>>,
    /// Acceptable factors (any of): `password`, `totp`, `email_otp`, `sms_otp`,
    /// `recovery_code`, `security_questions`, `webauthn`. Empty: any that reaches the level.
    #[serde(default)]
    pub factors: Vec<Spanned<String>>,
    /// Only a phishing-resistant factor will do.
    #[serde(default)]
    pub phishing_resistant: bool,
    /// Only a hardware-bound authenticator will do.
    #[serde(default)]
    pub hardware_bound: bool,
    /// How fresh the MFA must be: a duration (`15m`) or `every_time`.
    #[serde(default)]
    pub max_age: Option<MaxAge>,
    /// Sign-in policies only: MFA a user completed on the same device (bound by its
    /// certificate, passkey or device cookie) within this long (`30m`) still counts, so a
    /// new sign-in there asks for the first factor only.
    #[serde(default)]
    pub mfa_frequency: Option<Spanned<HumanDuration>>,
    /// Why, in plain words, for the step-up page and the API error description.
    #[serde(default)]
    pub message: Option<String>,
}

/// Deny details.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenySpec {
    /// The reason shown to the user.
    #[serde(default)]
    pub message: Option<String>,
    /// How to get access, shown under the reason.
    #[serde(default)]
    pub remediation: Option<String>,
}

/// MFA freshness, written `15m` (any human duration) or `every_time`, in configuration
/// and in JSON alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxAge {
    /// The factor must have been passed within this duration.
    Within(HumanDuration),
    /// The factor must be passed for this very request.
    EveryTime,
}

impl fmt::Display for MaxAge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxAge::Within(d) => write!(f, "{d}"),
            MaxAge::EveryTime => f.write_str("every_time"),
        }
    }
}

impl Serialize for MaxAge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MaxAge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "every_time" {
            return Ok(MaxAge::EveryTime);
        }
        s.parse::<HumanDuration>()
            .map(MaxAge::Within)
            .map_err(|e| de::Error::custom(format!("max_age: {e}, or `every_time`")))
    }
}

impl<'de> Deserialize<'de> for OutcomeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OutcomeSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`allow`, `deny`, `step_up`, or a map with one key `step_up` or `deny`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "allow" => Ok(OutcomeSpec::Allow),
                    "deny" => Ok(OutcomeSpec::Deny(DenySpec::default())),
                    "step_up" => Ok(OutcomeSpec::StepUp(Box::default())),
                    other => Err(E::custom(format!(
                        "unknown outcome `{other}`: expected `allow`, `deny` or `step_up`"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| {
                    de::Error::custom("empty outcome: expected `step_up` or `deny`")
                })?;
                let out = match key.as_str() {
                    "step_up" => OutcomeSpec::StepUp(Box::new(map.next_value()?)),
                    "deny" => OutcomeSpec::Deny(map.next_value()?),
                    "allow" => {
                        let _: de::IgnoredAny = map.next_value()?;
                        OutcomeSpec::Allow
                    }
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown outcome `{other}`: expected `allow`, `deny` or `step_up`"
                        )))
                    }
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("an outcome has exactly one key"));
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// Named network zones: zone name → CIDRs.
pub type NetworksSpec = BTreeMap<String, Spanned<Vec<Spanned<String>>>>;
