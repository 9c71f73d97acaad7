//! Configuration types for the `signals:` and `devices:` sections.
//!
//! Parsed with `marked-yaml` (every scalar is a string coerced on demand), so these types
//! use no `untagged` or `flatten`. Every key has a default or is required; durations are
//! human strings (`15m`, `12h`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use stepgate_policy::{DeviceState, HumanDuration};

/// The `signals:` section: where request signals come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// GeoIP database; without it country/region/city are unknown.
    #[serde(default)]
    pub geoip: Option<GeoIpConfig>,
    /// IP risk feeds and provider.
    #[serde(default)]
    pub ip_risk: IpRiskConfig,
    /// Behavioural risk scoring weights and thresholds.
    #[serde(default)]
    pub risk: RiskConfig,
    /// Client certificate authorities and revocation checking.
    #[serde(default)]
    pub client_certificates: ClientCertificatesConfig,
}

/// A MaxMind-format GeoIP database.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpConfig {
    /// Path to a City (or Country) `.mmdb` file, e.g. `GeoLite2-City.mmdb`.
    pub database: PathBuf,
    /// Optional separate ASN database (`GeoLite2-ASN.mmdb`); ASN fields in `database` are used otherwise.
    #[serde(default)]
    pub asn_database: Option<PathBuf>,
    /// How often the file's modification time is checked for a reload.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
}

fn default_reload_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// IP risk sources; the request's score is the highest any source gives.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRiskConfig {
    /// Feed files of `CIDR score` lines (Tor exits, hosting ranges, …).
    #[serde(default)]
    pub feeds: Vec<IpRiskFeedConfig>,
    /// An HTTP reputation provider queried per IP.
    #[serde(default)]
    pub http: Option<HttpIpRiskConfig>,
}

/// One IP risk feed file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRiskFeedConfig {
    /// Path to the feed: one `CIDR [score]` per line (space or comma separated, `#` comments).
    pub path: PathBuf,
    /// Score for lines that give none (0–100).
    #[serde(default = "default_feed_score")]
    pub default_score: u8,
}

fn default_feed_score() -> u8 {
    100
}

/// What a failed or timed-out IP risk lookup means for the decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderFailure {
    /// Return an error: the gateway denies / answers 503 (fail closed).
    #[default]
    Fail,
    /// The score is unknown; policies decide what unknown means.
    Unknown,
    /// Assume the score in `assume_score`.
    AssumeScore,
}

/// An HTTP IP reputation provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIpRiskConfig {
    /// URL with `{ip}` where the address goes, e.g. `https://risk.example/v1/ip/{ip}`.
    pub url: String,
    /// Dotted path to the score in the JSON answer, e.g. `data.abuseConfidenceScore`.
    pub score_path: String,
    /// The provider's maximum score; scores are scaled to 0–100.
    #[serde(default = "default_score_max")]
    pub score_max: f64,
    /// Header that carries the API key (e.g. `Key` or `Authorization`).
    #[serde(default)]
    pub api_key_header: Option<String>,
    /// Environment variable holding the API key (never the key itself in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Or a file holding it (relative to the configuration file), e.g. a systemd credential.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Request timeout.
    #[serde(default = "default_provider_timeout")]
    pub timeout: HumanDuration,
    /// How long an answer is cached per IP.
    #[serde(default = "default_provider_cache_ttl")]
    pub cache_ttl: HumanDuration,
    /// Maximum number of cached IPs.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// What a timeout or error means.
    #[serde(default)]
    pub on_error: ProviderFailure,
    /// The score assumed when `on_error: assume_score`.
    #[serde(default = "default_feed_score")]
    pub assume_score: u8,
}

fn default_score_max() -> f64 {
    100.0
}
fn default_provider_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_provider_cache_ttl() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_cache_size() -> usize {
    10_000
}

/// Weights of each behavioural risk reason (points added when it applies).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RiskWeights {
    /// No successful sign-in in the history.
    #[serde(default = "w_first")]
    pub first_sign_in: u32,
    /// The device was never used for a successful sign-in.
    #[serde(default = "w_device")]
    pub new_device: u32,
    /// The IP was never used for a successful sign-in.
    #[serde(default = "w_ip")]
    pub new_ip: u32,
    /// The city was never seen.
    #[serde(default = "w_city")]
    pub new_city: u32,
    /// The country was never seen.
    #[serde(default = "w_country")]
    pub new_country: u32,
    /// Velocity from the last successful sign-in above `impossible_travel_kmpm`.
    #[serde(default = "w_travel")]
    pub impossible_travel: u32,
    /// At least `failure_streak` failures in a row within `failure_window`.
    #[serde(default = "w_failures")]
    pub failure_streak: u32,
    /// IP risk score at or above `risky_ip_score`.
    #[serde(default = "w_risky_ip")]
    pub risky_ip: u32,
}

fn w_first() -> u32 {
    20
}
fn w_device() -> u32 {
    25
}
fn w_ip() -> u32 {
    10
}
fn w_city() -> u32 {
    15
}
fn w_country() -> u32 {
    35
}
fn w_travel() -> u32 {
    70
}
fn w_failures() -> u32 {
    40
}
fn w_risky_ip() -> u32 {
    50
}

impl Default for RiskWeights {
    fn default() -> Self {
        RiskWeights {
            first_sign_in: w_first(),
            new_device: w_device(),
            new_ip: w_ip(),
            new_city: w_city(),
            new_country: w_country(),
            impossible_travel: w_travel(),
            failure_streak: w_failures(),
            risky_ip: w_risky_ip(),
        }
    }
}

/// Behavioural risk scoring. See docs/risk.md for the defaults and the reasoning.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// Points per reason.
    #[serde(default)]
    pub weights: RiskWeights,
    /// Total at or above which the level is `medium`.
    #[serde(default = "d_medium")]
    pub medium_at: u32,
    /// Total at or above which the level is `high`.
    #[serde(default = "d_high")]
    pub high_at: u32,
    /// Velocity (km/min) above which travel is impossible (15 km/min = 900 km/h).
    #[serde(default = "d_kmpm")]
    pub impossible_travel_kmpm: f64,
    /// Distances below this (km) never count as travel: GeoIP is imprecise.
    #[serde(default = "d_min_km")]
    pub min_travel_km: f64,
    /// Consecutive failures that make a streak.
    #[serde(default = "d_streak")]
    pub failure_streak: u32,
    /// Only failures this recent count toward a streak.
    #[serde(default = "d_failure_window")]
    pub failure_window: HumanDuration,
    /// IP risk score at or above which `risky_ip` applies.
    #[serde(default = "d_risky_ip")]
    pub risky_ip_score: u8,
    /// How many sign-ins per user the history keeps.
    #[serde(default = "d_history_size")]
    pub history_size: usize,
    /// How long sign-ins stay in the history.
    #[serde(default = "d_history_age")]
    pub history_max_age: HumanDuration,
}

fn d_medium() -> u32 {
    30
}
fn d_high() -> u32 {
    70
}
fn d_kmpm() -> f64 {
    15.0
}
fn d_min_km() -> f64 {
    100.0
}
fn d_streak() -> u32 {
    5
}
fn d_failure_window() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn d_risky_ip() -> u8 {
    75
}
fn d_history_size() -> usize {
    50
}
fn d_history_age() -> HumanDuration {
    HumanDuration::from_secs(90 * 86_400)
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            weights: RiskWeights::default(),
            medium_at: d_medium(),
            high_at: d_high(),
            impossible_travel_kmpm: d_kmpm(),
            min_travel_km: d_min_km(),
            failure_streak: d_streak(),
            failure_window: d_failure_window(),
            risky_ip_score: d_risky_ip(),
            history_size: d_history_size(),
            history_max_age: d_history_age(),
        }
    }
}

/// Client certificate trust.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificatesConfig {
    /// The certificate authorities client certificates may chain to.
    #[serde(default)]
    pub authorities: Vec<CertificateAuthorityConfig>,
    /// How a trusted reverse proxy forwards the client certificate (checked only from trusted proxies).
    #[serde(default)]
    pub forwarded: Option<ForwardedCertificateConfig>,
}

/// How the certificate is encoded in the forwarded header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedCertificateFormat {
    /// URL-encoded PEM (nginx `$ssl_client_escaped_cert`, Traefik `passTLSClientCert.pem`).
    #[default]
    PemUrlencoded,
    /// Plain PEM, possibly with the newlines replaced by spaces.
    Pem,
    /// Base64 of the DER bytes.
    DerBase64,
    /// Envoy's `x-forwarded-client-cert` (`Cert="…"` element).
    Xfcc,
}

/// The header a trusted proxy puts the client certificate in.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardedCertificateConfig {
    /// Header name, e.g. `X-Client-Cert`.
    pub header: String,
    /// Encoding of the value.
    #[serde(default)]
    pub format: ForwardedCertificateFormat,
}

/// Whether and how OCSP is asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcspMode {
    /// Never.
    #[default]
    Off,
    /// When a responder is configured or the certificate names one (AIA).
    IfAvailable,
}

/// What an unknown revocation status (responder down, CRL unreachable or stale) means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationFailureMode {
    /// The certificate is treated as not valid.
    #[default]
    FailClosed,
    /// The certificate stays valid with revocation status unknown; policies decide.
    FailOpen,
}

/// One trusted client certificate authority and its revocation policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateAuthorityConfig {
    /// Name used in logs, audit and `issuer` conditions.
    pub name: String,
    /// PEM file with the root certificate(s).
    pub ca_file: PathBuf,
    /// PEM file with intermediate certificates clients may omit.
    #[serde(default)]
    pub intermediates_file: Option<PathBuf>,
    /// Whether certificates from this CA identify devices (device binding by fingerprint).
    #[serde(default)]
    pub device_ca: bool,
    /// CRL files (DER or PEM), reloaded when they change.
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// CRL URLs, fetched and cached until their nextUpdate.
    #[serde(default)]
    pub crl_urls: Vec<String>,
    /// OCSP checking.
    #[serde(default)]
    pub ocsp: OcspMode,
    /// OCSP responder URL; overrides the certificate's AIA.
    #[serde(default)]
    pub ocsp_responder: Option<String>,
    /// Timeout for CRL and OCSP fetches.
    #[serde(default = "default_revocation_timeout")]
    pub revocation_timeout: HumanDuration,
    /// Upper bound on how long an OCSP answer is cached (its nextUpdate may shorten it).
    #[serde(default = "default_ocsp_cache")]
    pub ocsp_cache_max: HumanDuration,
    /// What an unknown revocation status means.
    #[serde(default)]
    pub on_revocation_unknown: RevocationFailureMode,
}

fn default_revocation_timeout() -> HumanDuration {
    HumanDuration::from_secs(3)
}
fn default_ocsp_cache() -> HumanDuration {
    HumanDuration::from_secs(3600)
}

/// The `devices:` section: device sources, compliance, CAEP, re-check and device cookies.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    /// Systems allowed to push posture to the device API.
    #[serde(default)]
    pub sources: Vec<DeviceSourceConfig>,
    /// Compliance policies and posture freshness.
    #[serde(default)]
    pub compliance: ComplianceConfig,
    /// Shared Signals / CAEP transmitters whose events are accepted.
    #[serde(default)]
    pub caep: CaepConfig,
    /// The "Re-check my device" webhook.
    #[serde(default)]
    pub recheck: Option<RecheckConfig>,
    /// The long-lived signed device cookie.
    #[serde(default)]
    pub cookie: DeviceCookieConfig,
    /// When a browser that signs in becomes a registered device by itself (default
    /// `after_mfa`); it can always be registered deliberately from the sessions page.
    #[serde(default)]
    pub auto_register: AutoRegister,
    /// Request budgets of the device API and the CAEP receiver, which anyone can reach.
    #[serde(default)]
    pub rate_limit: DevicesRateLimitConfig,
    /// UEMs stepgate pulls devices from (Hexnode, Intune, Jamf).
    #[serde(default)]
    pub connectors: Vec<crate::connectors::ConnectorConfig>,
}

/// `devices.rate_limit`: how many requests the device API and the CAEP receiver take before
/// answering `429`. Counted before a request is verified or audited, so a flood can neither
/// keep the node busy checking signatures nor grow the audit log beyond these budgets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DevicesRateLimitConfig {
    /// `POST {portal}/caep/events`.
    #[serde(default)]
    pub caep: CaepRateLimit,
    /// `PUT {portal}/api/devices/posture` and `GET {portal}/api/devices/{id}`.
    #[serde(default)]
    pub api: DeviceApiRateLimit,
}

/// The CAEP receiver's budgets; a SET must fit in both.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaepRateLimit {
    /// SETs per client address (an IPv6 client's /64).
    #[serde(default = "caep_per_address")]
    pub per_address: Rate,
    /// SETs per `iss` the SET names (read before verifying); every issuer that is not a
    /// configured transmitter's shares one budget.
    #[serde(default = "caep_per_issuer")]
    pub per_issuer: Rate,
}

fn caep_per_address() -> Rate {
    Rate::per_minute(60)
}
fn caep_per_issuer() -> Rate {
    Rate::per_minute(600)
}

impl Default for CaepRateLimit {
    fn default() -> Self {
        CaepRateLimit {
            per_address: caep_per_address(),
            per_issuer: caep_per_issuer(),
        }
    }
}

/// The device API's budgets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeviceApiRateLimit {
    /// Requests without a valid token, per client address (an IPv6 client's /64).
    #[serde(default = "api_per_address")]
    pub per_address: Rate,
    /// Requests per configured source (authenticated by its token), from any address.
    #[serde(default = "api_per_source")]
    pub per_source: Rate,
}

fn api_per_address() -> Rate {
    Rate::per_minute(60)
}
fn api_per_source() -> Rate {
    Rate::per_minute(600)
}

impl Default for DeviceApiRateLimit {
    fn default() -> Self {
        DeviceApiRateLimit {
            per_address: api_per_address(),
            per_source: api_per_source(),
        }
    }
}

/// A request budget, written `COUNT/WINDOW` (`60/1m`): at most `count` requests in each
/// `window`. Windows are fixed and aligned to the Unix epoch, so every node counts the same
/// window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per window (1 to [`Rate::MAX_COUNT`]).
    pub count: u32,
    /// The window ([`Rate::MIN_WINDOW`] to [`Rate::MAX_WINDOW`]).
    pub window: std::time::Duration,
}

impl Rate {
    /// The largest count a budget may have.
    pub const MAX_COUNT: u32 = 1_000_000;
    /// The shortest window.
    pub const MIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
    /// The longest window (and so the longest `Retry-After`).
    pub const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

    /// `count` requests a minute.
    pub const fn per_minute(count: u32) -> Self {
        Rate {
            count,
            window: std::time::Duration::from_secs(60),
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let expected = "expected COUNT/WINDOW such as `60/1m` (60 requests a minute)";
        let Some((count, window)) = s.split_once('/') else {
            return Err(format!("{expected}, got `{s}`"));
        };
        let count: u32 = match count.trim().parse() {
            Ok(n) if (1..=Rate::MAX_COUNT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "{expected}, got `{s}`: the count must be a whole number from 1 to {}",
                    Rate::MAX_COUNT
                ))
            }
        };
        let window: HumanDuration = window
            .parse()
            .map_err(|e| format!("{expected}, got `{s}`: {e}"))?;
        if window.0 < Rate::MIN_WINDOW || window.0 > Rate::MAX_WINDOW {
            return Err(format!(
                "{expected}, got `{s}`: the window must be from 1s to 1h"
            ));
        }
        Ok(Rate {
            count,
            window: window.0,
        })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, HumanDuration(self.window))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What kind of system a device source is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSourceKind {
    /// A UEM / MDM (Hexnode, Intune, Jamf, …).
    #[default]
    Uem,
    /// An EDR.
    Edr,
    /// An agent on the device itself.
    Agent,
}

/// What a device API token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeviceScope {
    /// Push posture (`devices:write`).
    #[serde(rename = "devices:write")]
    DevicesWrite,
    /// Read device records (`devices:read`).
    #[serde(rename = "devices:read")]
    DevicesRead,
}

impl DeviceScope {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceScope::DevicesWrite => "devices:write",
            DeviceScope::DevicesRead => "devices:read",
        }
    }
}

/// A system that pushes device posture with its own API token.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSourceConfig {
    /// Source name recorded on every device it writes (`hexnode`, `crowdstrike`).
    pub name: String,
    /// Kind of source.
    #[serde(default)]
    pub kind: DeviceSourceKind,
    /// Hex SHA-256 of the API token (`printf %s "$TOKEN" | sha256sum`); the token itself is never stored.
    pub token_sha256: String,
    /// What the token may do.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<DeviceScope>,
    /// Highest device state this source may assert (default: `managed` for a UEM,
    /// `managed_edr` for an EDR, `registered` for an agent).
    #[serde(default)]
    pub max_state: Option<DeviceState>,
}

fn default_scopes() -> Vec<DeviceScope> {
    vec![DeviceScope::DevicesWrite]
}

impl DeviceSourceConfig {
    /// The highest state this source may assert.
    pub fn effective_max_state(&self) -> DeviceState {
        self.max_state.unwrap_or(match self.kind {
            DeviceSourceKind::Uem => DeviceState::Managed,
            DeviceSourceKind::Edr => DeviceState::ManagedEdr,
            DeviceSourceKind::Agent => DeviceState::Registered,
        })
    }
}

/// Compliance policies.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    /// Posture older than this counts as unknown (compliance unknown; policies decide).
    #[serde(default = "default_posture_age")]
    pub max_posture_age: HumanDuration,
    /// The policies; each applies to the devices its `platforms`/`groups` select.
    #[serde(default)]
    pub policies: Vec<CompliancePolicyConfig>,
}

fn default_posture_age() -> HumanDuration {
    HumanDuration::from_secs(86_400)
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        ComplianceConfig {
            max_posture_age: default_posture_age(),
            policies: Vec::new(),
        }
    }
}

/// One named compliance policy: basic toggles plus advanced rules.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompliancePolicyConfig {
    /// Policy name (unique).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Platforms it applies to (`macos`, `windows`, `ios`, `android`, `linux`, …); empty: all.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Device groups it applies to; empty: all.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Non-compliant when `password_compliant` is false.
    #[serde(default)]
    pub require_password_compliant: bool,
    /// Non-compliant when `encrypted` is false.
    #[serde(default)]
    pub require_encryption: bool,
    /// Non-compliant when `jailbroken` is true.
    #[serde(default)]
    pub block_jailbroken: bool,
    /// Non-compliant when `inside_geofence` is false.
    #[serde(default)]
    pub require_geofence: bool,
    /// Non-compliant when `firewall` is false.
    #[serde(default)]
    pub require_firewall: bool,
    /// Non-compliant when `screen_lock` is false.
    #[serde(default)]
    pub require_screen_lock: bool,
    /// Non-compliant when `os_version` is below this (version-aware: `14.2.1` < `15`).
    #[serde(default)]
    pub min_os_version: Option<String>,
    /// Non-compliant when `edr_score` (0–100) is below this.
    #[serde(default)]
    pub min_edr_score: Option<u8>,
    /// Advanced rules over any posture attribute.
    #[serde(default)]
    pub rules: Vec<ComplianceRuleConfig>,
}

/// An advanced rule: the device is non-compliant when the expression holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceRuleConfig {
    /// Check id shown in conditions and audit (`legacy_macos_without_filevault`).
    pub id: String,
    /// Expression such as `os_version < 15.0 OR filevault == false`
    /// (`AND`, `OR`, `NOT`, parentheses; `==`, `!=`, `<`, `<=`, `>`, `>=`).
    pub non_compliant_if: String,
    /// What is wrong, for the remediation page.
    #[serde(default)]
    pub message: Option<String>,
    /// How to fix it.
    #[serde(default)]
    pub fix: Option<String>,
}

/// Shared Signals / CAEP receiving.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaepConfig {
    /// Transmitters whose SETs are accepted.
    #[serde(default)]
    pub transmitters: Vec<TransmitterConfig>,
}

/// A SET signing algorithm accepted from a transmitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetAlgorithm {
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// Ed25519.
    EdDSA,
}

/// A configured SET transmitter.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmitterConfig {
    /// Name used in logs and as the device source name.
    pub name: String,
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (this receiver).
    pub audience: String,
    /// PEM public key or JWKS JSON file with the transmitter's signing keys.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// JWKS URL of the transmitter (fetched at start and when an unknown `kid` arrives).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SetAlgorithm>,
    /// SETs issued longer ago than this are rejected; also how long `jti`s are remembered.
    #[serde(default = "default_set_max_age")]
    pub max_age: HumanDuration,
    /// Clock skew tolerated on `iat`/`exp`.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
}

fn default_algorithms() -> Vec<SetAlgorithm> {
    vec![SetAlgorithm::ES256, SetAlgorithm::RS256]
}
fn default_set_max_age() -> HumanDuration {
    HumanDuration::from_secs(600)
}
fn default_leeway() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// The "Re-check my device" webhook to the UEM.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecheckConfig {
    /// URL stepgate POSTs `{"device_id", "owner", "requested_at"}` to.
    pub url: String,
    /// Environment variable with a bearer token for the webhook.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Or a file holding it (relative to the configuration file).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Webhook request timeout.
    #[serde(default = "default_provider_timeout")]
    pub timeout: HumanDuration,
    /// How long the user waits for fresh posture before the page says "still checking".
    #[serde(default = "default_recheck_wait")]
    pub wait: HumanDuration,
}

fn default_recheck_wait() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// `devices.auto_register`: when a browser completing a sign-in is registered as a device
/// (a "registered", known but unmanaged, device with a signed cookie) without being asked.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AutoRegister {
    /// Only deliberately: the user registers it from the sessions page behind a fresh
    /// factor, or a UEM/admin registers the device.
    Never,
    /// When the sign-in passed a second factor (multi-factor): a password alone never
    /// makes a browser known.
    #[default]
    AfterMfa,
    /// After every completed sign-in ("unregistered" then matches only browsers that
    /// never finished one).
    Always,
}

/// The device cookie that makes a browser a known-but-unmanaged device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCookieConfig {
    /// Cookie name.
    #[serde(default = "default_cookie_name")]
    pub name: String,
    /// Lifetime.
    #[serde(default = "default_cookie_age")]
    pub max_age: HumanDuration,
    /// Environment variable holding the signing key (at least 32 bytes).
    #[serde(default = "default_cookie_key_env")]
    pub key_env: String,
    /// Or a file holding it (relative to the configuration file); when set, `key_env` is
    /// not read.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Reads a secret from the file a `*_file` key names: the whole file, without the line
/// break an editor or `echo` leaves at its end. `key` names the setting in errors.
pub fn read_secret_file(key: &str, path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key}: cannot read `{}`: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.trim().is_empty() {
        return Err(format!("{key}: `{}` is empty", path.display()));
    }
    Ok(secret.to_string())
}

fn default_cookie_name() -> String {
    "__Host-stepgate-device".into()
}
fn default_cookie_age() -> HumanDuration {
    HumanDuration::from_secs(400 * 86_400)
}
fn default_cookie_key_env() -> String {
    "STEPGATE_DEVICE_COOKIE_KEY".into()
}

impl Default for DeviceCookieConfig {
    fn default() -> Self {
        DeviceCookieConfig {
            name: default_cookie_name(),
            max_age: default_cookie_age(),
            key_env: default_cookie_key_env(),
            key_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        match marked_yaml::from_yaml(0, s) {
            Ok(v) => v,
            Err(e) => panic!("{e}\n---\n{s}"),
        }
    }

    #[test]
    fn signals_defaults_from_empty_map() {
        let c: SignalsConfig = yaml("{}");
        assert!(c.geoip.is_none());
        assert_eq!(c.risk, RiskConfig::default());
        assert_eq!(c.risk.medium_at, 30);
    }

    #[test]
    fn signals_full() {
        let c: SignalsConfig = yaml(
            r#"
geoip:
  database: /var/lib/GeoLite2-City.mmdb
  asn_database: /var/lib/GeoLite2-ASN.mmdb
  reload_interval: 5m
ip_risk:
  feeds:
    - path: /etc/stepgate/tor-exits.txt
      default_score: 90
  http:
    url: "https://risk.example/v1/ip/{ip}"
    score_path: data.abuseConfidenceScore
    score_max: 100
    api_key_header: Key
    api_key_env: RISK_API_KEY
    timeout: 1500ms
    cache_ttl: 30m
    cache_size: 500
    on_error: assume_score
    assume_score: 60
risk:
  weights:
    new_device: 30
    impossible_travel: 100
  medium_at: 25
  high_at: 60
  impossible_travel_kmpm: 12.5
  min_travel_km: 50
  failure_streak: 3
  failure_window: 15m
  risky_ip_score: 80
  history_size: 20
  history_max_age: 30d
client_certificates:
  forwarded:
    header: X-Client-Cert
    format: pem_urlencoded
  authorities:
    - name: device-ca
      ca_file: /etc/stepgate/device-ca.pem
      intermediates_file: /etc/stepgate/device-int.pem
      device_ca: true
      crl_files: [/etc/stepgate/device.crl]
      crl_urls: ["http://pki.example/device.crl"]
      ocsp: if_available
      ocsp_responder: http://ocsp.example
      revocation_timeout: 2s
      ocsp_cache_max: 10m
      on_revocation_unknown: fail_open
"#,
        );
        let geo = c.geoip.unwrap();
        assert_eq!(geo.reload_interval.as_secs(), 300);
        let http = c.ip_risk.http.unwrap();
        assert_eq!(http.on_error, ProviderFailure::AssumeScore);
        assert_eq!(http.timeout.0.as_millis(), 1500);
        assert_eq!(c.ip_risk.feeds[0].default_score, 90);
        assert_eq!(c.risk.weights.new_device, 30);
        assert_eq!(c.risk.weights.new_ip, 10);
        assert_eq!(c.risk.impossible_travel_kmpm, 12.5);
        let ca = &c.client_certificates.authorities[0];
        assert!(ca.device_ca);
        assert_eq!(ca.ocsp, OcspMode::IfAvailable);
        assert_eq!(ca.on_revocation_unknown, RevocationFailureMode::FailOpen);
    }

    #[test]
    fn devices_full() {
        let c: DevicesConfig = yaml(
            r#"
sources:
  - name: hexnode
    kind: uem
    token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    scopes: ["devices:write", "devices:read"]
  - name: falcon
    kind: edr
    token_sha256: 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
    max_state: managed_edr
compliance:
  max_posture_age: 12h
  policies:
    - name: macos-baseline
      description: Laptops
      platforms: [macos]
      groups: [engineering]
      require_password_compliant: true
      require_encryption: true
      block_jailbroken: true
      require_geofence: true
      require_firewall: true
      require_screen_lock: true
      min_os_version: 15.0
      min_edr_score: 70
      rules:
        - id: legacy_without_filevault
          non_compliant_if: "os_version < 15.0 OR filevault == false"
          message: Old macOS without FileVault
          fix: Update macOS or turn on FileVault
caep:
  transmitters:
    - name: hexnode
      issuer: https://uem.example/
      audience: https://stepgate.example/
      key_file: /etc/stepgate/hexnode-ssf.pem
      algorithms: [ES256]
      max_age: 5m
      leeway: 30s
recheck:
  url: https://uem.example/api/recheck
  bearer_token_env: UEM_TOKEN
  timeout: 3s
  wait: 20s
cookie:
  name: sg-device
  max_age: 180d
  key_env: DEVICE_KEY
"#,
        );
        assert_eq!(
            c.sources[0].scopes,
            vec![DeviceScope::DevicesWrite, DeviceScope::DevicesRead]
        );
        assert_eq!(c.sources[0].effective_max_state(), DeviceState::Managed);
        assert_eq!(c.sources[1].scopes, vec![DeviceScope::DevicesWrite]);
        assert_eq!(c.compliance.max_posture_age.as_secs(), 43_200);
        let p = &c.compliance.policies[0];
        assert_eq!(p.min_os_version.as_deref(), Some("15.0"));
        assert_eq!(p.min_edr_score, Some(70));
        assert!(p.require_geofence);
        assert_eq!(c.caep.transmitters[0].algorithms, vec![SetAlgorithm::ES256]);
        assert_eq!(c.recheck.unwrap().wait.as_secs(), 20);
        assert_eq!(c.cookie.name, "sg-device");
    }

    #[test]
    fn rate_limits_default_and_parse() {
        let c: DevicesConfig = yaml("{}");
        assert_eq!(c.rate_limit.caep.per_address, Rate::per_minute(60));
        assert_eq!(c.rate_limit.caep.per_issuer, Rate::per_minute(600));
        assert_eq!(c.rate_limit.api.per_address, Rate::per_minute(60));
        assert_eq!(c.rate_limit.api.per_source, Rate::per_minute(600));
        let c: DevicesConfig = yaml(
            "rate_limit:\n  caep: { per_address: 5/10s, per_issuer: 100/1h }\n  api: { per_source: 2000/1m }\n",
        );
        assert_eq!(c.rate_limit.caep.per_address.count, 5);
        assert_eq!(c.rate_limit.caep.per_address.window.as_secs(), 10);
        assert_eq!(c.rate_limit.caep.per_issuer.to_string(), "100/1h");
        assert_eq!(c.rate_limit.api.per_address, Rate::per_minute(60));
        assert_eq!(c.rate_limit.api.per_source.count, 2000);
    }

    #[test]
    fn bad_rates_name_the_key_and_the_fix() {
        for (bad, says) in [
            ("60", "COUNT/WINDOW"),
            ("0/1m", "from 1 to"),
            ("-3/1m", "from 1 to"),
            ("60/soon", "duration"),
            ("60/500ms", "from 1s to 1h"),
            ("60/2h", "from 1s to 1h"),
            ("2000000/1m", "from 1 to"),
        ] {
            let text = format!("rate_limit:\n  caep:\n    per_issuer: {bad}\n");
            let e = marked_yaml::from_yaml::<DevicesConfig>(0, &text).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("per_issuer") && e.contains(says), "{bad}: {e}");
        }
        let e = marked_yaml::from_yaml::<DevicesConfig>(
            0,
            "rate_limit:\n  api:\n    per_issuer: 1/1m\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("per_issuer"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e =
            marked_yaml::from_yaml::<DevicesConfig>(0, "compliance:\n  max_age: 1h\n").unwrap_err();
        assert!(e.to_string().contains("max_age"), "{e}");
        let e = marked_yaml::from_yaml::<SignalsConfig>(0, "risk:\n  hi_at: 3\n").unwrap_err();
        assert!(e.to_string().contains("hi_at"), "{e}");
    }
}
