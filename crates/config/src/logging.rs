//! The `log:` section: how much stepgate logs, in which format, and where.
//!
//! ```yaml
//! log:
//!   level: info                  # or directives: "info,stepgate_server=debug"
//!   format: json                 # text (default) or json, one object per line
//!   file: /var/log/stepgate.log  # default: standard output (journald under systemd)
//!   decisions:                   # the decision log, in the durable store
//!     enabled: true
//!     queue: 10000               # records waiting to be written, at most
//!     retention: 30d             # decisions older than this are deleted
//!     max_rows: 5000000          # and past this many, the oldest are deleted (0: no bound)
//!     allowed_one_in: 100        # allowed app requests: one in 100 recorded (1: all)
//!   otlp:                        # OpenTelemetry traces over OTLP/HTTP; absent: off (default)
//!     endpoint: http://127.0.0.1:4318   # the collector; spans are posted to {endpoint}/v1/traces
//!     service_name: stepgate     # the `service.name` of every span
//!     sample_ratio: 1.0          # share of new traces kept (0 to 1); a caller's traceparent decides its own
//!     headers:                   # sent with every export; each value from a file or variable
//!       x-api-key: { env: OTLP_API_KEY }
//! ```
//! `STEPGATE_LOG`, when set, overrides `level` (same syntax), for a one-off debug run.
//! Colour codes are written only to a terminal, never to a file or a pipe.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use stepgate_policy::HumanDuration;

use crate::identity::SecretSource;

/// `log:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The least severe level logged (`error`, `warn`, `info`, `debug`, `trace`), or
    /// `tracing` directives such as `info,stepgate_server=debug`. Default `info`.
    pub level: String,
    /// `text` (default) or `json` (one JSON object per line).
    pub format: LogFormat,
    /// Append to this file (relative to the configuration file's folder) instead of
    /// writing to standard output.
    pub file: Option<PathBuf>,
    /// `log.decisions`: the decision log.
    pub decisions: DecisionLogConfig,
    /// `log.otlp`: OpenTelemetry traces, exported over OTLP/HTTP. Absent (the default): no
    /// trace is made or sent.
    pub otlp: Option<OtlpConfig>,
}

/// `log.otlp`: where and how request traces are exported.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP base URL (`http://` or `https://`, no credentials, no
    /// query); spans are posted as protobuf to `{endpoint}/v1/traces`. Required.
    pub endpoint: String,
    /// The `service.name` resource attribute. Default `stepgate`.
    #[serde(default = "OtlpConfig::default_service_name")]
    pub service_name: String,
    /// The share of traces started here that are kept, from `0` to `1`. A request that
    /// arrives with a W3C `traceparent` follows its caller's sampling decision. Default `1`.
    #[serde(default = "OtlpConfig::default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export (a hosted collector's API key, a tenant id): the
    /// header's name → where its value comes from (`{ env: NAME }`, `{ file: PATH }`), read
    /// at start-up and never logged. Default none.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretSource>,
}

// `sample_ratio` is never NaN once checked (`problems`), so equality is an equivalence.
impl Eq for OtlpConfig {}

impl OtlpConfig {
    fn default_service_name() -> String {
        "stepgate".into()
    }

    fn default_sample_ratio() -> f64 {
        1.0
    }

    /// The URL spans are posted to: `{endpoint}/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim().trim_end_matches('/'))
    }

    /// The problems with these settings, in words (`log.otlp.…`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_endpoint(self.endpoint.trim()) {
            out.push(format!("log.otlp.endpoint `{}` {e}", self.endpoint));
        }
        let name = self.service_name.trim();
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            out.push(format!(
                "log.otlp.service_name `{}`: expected 1 to 255 printable characters, such as `stepgate`",
                self.service_name.escape_debug()
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            out.push(format!(
                "log.otlp.sample_ratio is {}: expected a share from 0 (no new trace kept) to 1 (every one)",
                self.sample_ratio
            ));
        }
        out.extend(self.headers.keys().filter_map(|name| {
            check_header_name(name)
                .err()
                .map(|e| format!("log.otlp.headers.{name}: {e}"))
        }));
        out
    }
}

/// Headers the exporter writes itself: one given here would contradict it.
const OWN_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "connection",
    "transfer-encoding",
    "te",
];

/// Checks a header name for `log.otlp.headers`; what is wrong with it in words otherwise.
fn check_header_name(name: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(
            "is not an HTTP header name: expected letters, digits and `-`, such as `x-api-key`"
                .into(),
        );
    }
    if OWN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return Err("the exporter sets this header itself; remove it".into());
    }
    Ok(())
}

/// Checks an OTLP/HTTP collector URL; what is wrong with it in words otherwise.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint)
        .map_err(|e| format!("is not a URL ({e}): expected one such as `http://127.0.0.1:4318`"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "has the scheme `{}`: OTLP/HTTP needs `http://` or `https://`",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "carries credentials: they would be sent and logged with every export; remove them"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "has a query or fragment: give the collector's base URL, stepgate adds `/v1/traces`"
                .into(),
        );
    }
    if url.path().trim_end_matches('/').ends_with("/v1/traces") {
        return Err(
            "ends in `/v1/traces`: give the collector's base URL, stepgate adds that path".into(),
        );
    }
    Ok(())
}

/// `log.decisions`: every decision of the access pipeline, written off the request path to
/// the durable store.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    /// Whether decisions are recorded. Default `true`.
    pub enabled: bool,
    /// How many records may wait to be written (1 to 1,000,000). When the queue is full,
    /// allowed requests' records are dropped (counted; one in 100 is kept by waiting for
    /// room), and deny and step-up records wait for room: they are never dropped.
    /// Default `10000`.
    pub queue: usize,
    /// How long decisions are kept (at least `1h`). Default `30d`.
    pub retention: HumanDuration,
    /// At most this many decisions are kept: past it, the oldest are deleted (by the same
    /// hourly task as `retention`). `0`: no bound but `retention`. Default `0`.
    pub max_rows: u64,
    /// Allowed app requests (proxy, forward-auth, bearer, OIDC authorize) are recorded one
    /// in this many (`1`: every one; `0`: none); sign-ins, step-ups, denials, refusals and
    /// re-evaluations are always recorded. Default `100`: recording every allowed request
    /// costs several times the request itself (docs/operations.md), which is not worth it
    /// for the requests nobody asks "why?" about.
    pub allowed_one_in: u64,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            enabled: true,
            queue: 10_000,
            retention: HumanDuration::from_secs(30 * 24 * 3600),
            max_rows: 0,
            allowed_one_in: 100,
        }
    }
}

impl DecisionLogConfig {
    /// The problems with these settings, in words (`log.decisions.…`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=1_000_000).contains(&self.queue) {
            out.push(format!(
                "log.decisions.queue is {}: expected 1 to 1000000 records",
                self.queue
            ));
        }
        if self.retention.as_secs() < 3600 {
            out.push(format!(
                "log.decisions.retention is {}s: keep decisions at least `1h`",
                self.retention.as_secs()
            ));
        }
        out
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            file: None,
            decisions: DecisionLogConfig::default(),
            otlp: None,
        }
    }
}

/// `log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Checks a level or directive list (`info`, `warn,stepgate_server=debug`); the problem
/// in words otherwise.
pub fn check_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("is empty: expected one of error, warn, info, debug, trace".into());
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, lvl) = match directive.rsplit_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if !LEVELS.contains(&lvl.to_ascii_lowercase().as_str()) {
            let within = match target {
                Some(_) => format!("in `{directive}`: "),
                None => String::new(),
            };
            return Err(format!(
                "{within}`{lvl}` is not a level: expected one of error, warn, info, debug, trace (or `module=level` pairs)"
            ));
        }
        if let Some(t) = target {
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
            {
                return Err(format!(
                    "in `{directive}`: `{t}` is not a module name such as `stepgate_server`"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_log_limits() {
        assert!(DecisionLogConfig::default().problems().is_empty());
        let bad = DecisionLogConfig {
            enabled: true,
            queue: 0,
            retention: HumanDuration::from_secs(60),
            max_rows: 0,
            allowed_one_in: 1,
        };
        let p = bad.problems();
        assert!(p[0].contains("log.decisions.queue is 0"), "{p:?}");
        assert!(p[1].contains("at least `1h`"), "{p:?}");
    }

    fn otlp(endpoint: &str, service_name: &str, sample_ratio: f64) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            service_name: service_name.into(),
            sample_ratio,
            headers: BTreeMap::new(),
        }
    }

    #[test]
    fn otlp_header_names() {
        let with = |name: &str| OtlpConfig {
            headers: [(name.to_string(), SecretSource::Env("K".into()))].into(),
            ..otlp("http://c:4318", "s", 1.0)
        };
        assert!(with("x-api-key").problems().is_empty());
        assert!(with("Authorization").problems().is_empty());
        for (name, expected) in [
            ("x api key", "is not an HTTP header name"),
            ("", "is not an HTTP header name"),
            ("x-key:", "is not an HTTP header name"),
            ("Content-Type", "sets this header itself"),
        ] {
            let p = with(name).problems();
            assert_eq!(p.len(), 1, "{name:?}: {p:?}");
            assert!(
                p[0].starts_with(&format!("log.otlp.headers.{name}: ")),
                "{p:?}"
            );
            assert!(p[0].contains(expected), "{name:?}: {p:?}");
        }
    }

    #[test]
    fn otlp_settings() {
        let good = otlp("http://127.0.0.1:4318/", "stepgate", 0.25);
        assert!(good.problems().is_empty(), "{:?}", good.problems());
        assert_eq!(good.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(
            otlp("https://otel.example/base", "s", 1.0).traces_url(),
            "https://otel.example/base/v1/traces"
        );
        let cases = [
            (otlp("127.0.0.1:4318", "s", 1.0), "is not a URL"),
            (otlp("grpc://c:4317", "s", 1.0), "scheme `grpc`"),
            (otlp("http://u:p@c:4318", "s", 1.0), "carries credentials"),
            (otlp("http://c:4318/?k=v", "s", 1.0), "query or fragment"),
            (otlp("http://c:4318/v1/traces", "s", 1.0), "adds that path"),
            (otlp("http://c:4318", " ", 1.0), "log.otlp.service_name"),
            (otlp("http://c:4318", "s", 1.5), "sample_ratio is 1.5"),
            (otlp("http://c:4318", "s", f64::NAN), "sample_ratio is NaN"),
            (otlp("http://c:4318", "s", -0.1), "sample_ratio is -0.1"),
        ];
        for (cfg, expected) in cases {
            let p = cfg.problems();
            assert_eq!(p.len(), 1, "{cfg:?}: {p:?}");
            assert!(p[0].contains(expected), "{cfg:?}: {p:?}");
        }
    }

    #[test]
    fn levels_and_directives() {
        assert!(check_level("info").is_ok());
        assert!(check_level("WARN").is_ok());
        assert!(check_level("info,stepgate_server=debug").is_ok());
        assert!(check_level("").is_err());
        assert!(check_level("verbose")
            .unwrap_err()
            .contains("`verbose` is not a level"));
        assert!(check_level("info,x=loud")
            .unwrap_err()
            .contains("`loud` is not a level"));
        assert!(check_level("a b=info")
            .unwrap_err()
            .contains("not a module name"));
    }
}
