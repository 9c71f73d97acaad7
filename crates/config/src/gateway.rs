//! The `gateway:` section: what the proxy adds to requests it lets through (the signed
//! identity assertion), how it judges bearer tokens on API requests, and per-app upstream
//! settings.
//!
//! ```yaml
//! gateway:
//!   assertion:
//!     ttl: 60s              # lifetime of each X-Stepgate-Assertion JWT
//!     rotate_every: 24h     # a new signing key this often; the old one stays in the JWKS
//!   bearer:
//!     issuers:
//!       - issuer: https://idp.example.com
//!         jwks_url: https://idp.example.com/.well-known/jwks.json
//!         audiences: [licence-api]
//!         algorithms: [RS256, ES256]
//!   timeout: 60s            # default upstream timeout
//!   apps:
//!     console: { timeout: 10s }
//!     licences: { audiences: [licence-api] }   # bearer tokens must be minted for it
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use stepgate_policy::HumanDuration;

/// `gateway:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The signed identity assertion added to every proxied request.
    #[serde(default)]
    pub assertion: AssertionConfig,
    /// Bearer tokens on API requests.
    #[serde(default)]
    pub bearer: BearerConfig,
    /// Default time an upstream gets to send its response headers. Default `60s`.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Per-app settings, by app id.
    #[serde(default)]
    pub apps: BTreeMap<String, GatewayAppConfig>,
    /// How often a WebSocket (or other upgraded connection) is checked against its session:
    /// once the user signs out, is signed out or disabled, or the session ends, the
    /// connection is closed at the next check. Default `30s`.
    #[serde(default)]
    pub upgraded_recheck: Option<HumanDuration>,
}

/// `gateway.assertion`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    /// Add the assertion at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The request header it travels in. Default `X-Stepgate-Assertion`.
    #[serde(default = "default_header")]
    pub header: String,
    /// Lifetime of each assertion. Default `60s`.
    #[serde(default = "default_ttl")]
    pub ttl: HumanDuration,
    /// How often a new signing key is made. Default `24h`.
    #[serde(default = "default_rotate")]
    pub rotate_every: HumanDuration,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        AssertionConfig {
            enabled: true,
            header: default_header(),
            ttl: default_ttl(),
            rotate_every: default_rotate(),
        }
    }
}

/// `gateway.bearer`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerConfig {
    /// Issuers whose JWT access tokens are accepted. Empty: every bearer token is refused.
    #[serde(default)]
    pub issuers: Vec<BearerIssuer>,
    /// How long a JWKS fetch may take. Default `5s`.
    #[serde(default = "default_jwks_timeout")]
    pub jwks_timeout: HumanDuration,
    /// How long fetched keys are used before they are fetched again. Default `10m`.
    #[serde(default = "default_jwks_cache")]
    pub jwks_cache: HumanDuration,
    /// Clock skew allowed on `exp` / `nbf`. Default `30s`.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
}

impl Default for BearerConfig {
    fn default() -> Self {
        BearerConfig {
            issuers: Vec::new(),
            jwks_timeout: default_jwks_timeout(),
            jwks_cache: default_jwks_cache(),
            leeway: default_leeway(),
        }
    }
}

/// One trusted token issuer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerIssuer {
    /// The `iss` value, exactly.
    pub issuer: String,
    /// Where its public keys are published (fetched, cached, refetched on an unknown `kid`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Or a local JWKS file (relative to the configuration file).
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// Accepted `aud` values (at least one must match). Required.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted signature algorithms. Default `[RS256, ES256]`; `none` and HMAC are refused.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// `acr` values of this issuer and the AAL each stands for; `aal1`–`aal3` (and NIST's
    /// `http://idmanagement.gov/ns/assurance/aal/N`) are understood without it.
    #[serde(default)]
    pub acr_values: BTreeMap<String, u8>,
    /// The claim holding the username. Default `preferred_username`, then `sub`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim holding the groups. Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

/// `gateway.apps.<id>`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAppConfig {
    /// Time the upstream gets to send its response headers (overrides `gateway.timeout`).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// The `aud` values a bearer token must carry (one of them) to reach this app, on top of
    /// its issuer's `audiences`. Empty: any audience the issuer accepts. Set it when one
    /// issuer mints tokens for several apps, so a token for one is not accepted by another.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// What to do with `;` path parameters (`/a;jsessionid=1/b`), which some upstreams
    /// (Tomcat, Jetty, Spring) strip before routing and others keep: `refuse` them (400 from
    /// the proxy, 403 from forward-auth; the default), or `strip` them from every segment
    /// before the request is matched and forwarded. `strip` needs stepgate's own proxy: a
    /// front proxy (forward-auth) forwards the target as the client sent it.
    #[serde(default)]
    pub path_parameters: PathParameters,
}

/// `gateway.apps.<id>.path_parameters`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// Requests with `;` in the path are refused.
    #[default]
    Refuse,
    /// Parameters are removed from each segment before matching and forwarding.
    Strip,
}

/// Algorithms a bearer issuer may list.
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// An app's `upstream:` URL, split once when the configuration is loaded: where to connect
/// and what goes before each request's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// `host:port` to connect to (port 80 when the URL names none).
    pub address: String,
    /// The URL's path without its trailing slash (`""` for none): `http://h/base/` sends a
    /// request for `/x?y` to `/base/x?y`.
    pub prefix: String,
}

/// Reads an app's `upstream:` URL: `http://host[:port][/path]`, with no credentials, query
/// or fragment (stepgate speaks plain HTTP/1.1 to upstreams; TLS to upstreams is not
/// supported yet). The error says what was expected.
pub fn parse_upstream(url: &str) -> Result<UpstreamTarget, String> {
    const EXPECTED: &str = "expected http://host[:port][/path], e.g. http://127.0.0.1:8080";
    if url.contains('#') {
        return Err(format!("a fragment (#) is not allowed: {EXPECTED}"));
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}): {EXPECTED}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "https upstreams are not supported yet (terminate TLS in front of the app or reach it over a private network): {EXPECTED}"
            ))
        }
        _ => return Err(EXPECTED.to_string()),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("no host: {EXPECTED}"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "credentials in the URL are not allowed: {EXPECTED}"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("no host: {EXPECTED}"));
    }
    if uri.query().is_some() {
        return Err(format!("a query (?) is not allowed: {EXPECTED}"));
    }
    if authority.port().is_some() && authority.port_u16().is_none_or(|p| p == 0) {
        return Err(format!("bad port: {EXPECTED}"));
    }
    let address = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:80", authority.host()),
    };
    Ok(UpstreamTarget {
        address,
        prefix: uri.path().trim_end_matches('/').to_string(),
    })
}

impl GatewayConfig {
    /// The upstream timeout for `app`.
    pub fn timeout_for(&self, app: &str) -> std::time::Duration {
        self.apps
            .get(app)
            .and_then(|a| a.timeout)
            .or(self.timeout)
            .unwrap_or(HumanDuration::from_secs(60))
            .0
    }

    /// How often an upgraded connection is checked against its session.
    pub fn upgraded_recheck(&self) -> std::time::Duration {
        self.upgraded_recheck
            .unwrap_or(HumanDuration::from_secs(30))
            .0
    }

    /// Checks the section; `app_ids` are the configured apps. Each message names the key.
    pub fn validate(&self, app_ids: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(r) = self.upgraded_recheck {
            if r.as_secs() < 1 || r.as_secs() > 3600 {
                out.push(format!(
                    "gateway.upgraded_recheck is {}s: expected between 1s and 1h (e.g. 30s)",
                    r.as_secs()
                ));
            }
        }
        let a = &self.assertion;
        if a.ttl.as_secs() < 5 || a.ttl.as_secs() > 3600 {
            out.push(format!(
                "gateway.assertion.ttl is {}s: expected between 5s and 1h (e.g. 60s)",
                a.ttl.as_secs()
            ));
        }
        if a.rotate_every.as_secs() < 600 || a.rotate_every.0 <= a.ttl.0 {
            out.push(
                "gateway.assertion.rotate_every must be at least 10m and longer than the ttl (e.g. 24h)"
                    .to_string(),
            );
        }
        if axum_header_name_ok(&a.header).is_none() {
            out.push(format!(
                "gateway.assertion.header `{}` is not a valid header name",
                a.header
            ));
        }
        let b = &self.bearer;
        if b.jwks_timeout.0.is_zero() {
            out.push("gateway.bearer.jwks_timeout must be above zero (e.g. 5s)".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, iss) in b.issuers.iter().enumerate() {
            let at = format!("gateway.bearer.issuers[{i}]");
            if iss.issuer.trim().is_empty() {
                out.push(format!(
                    "{at}.issuer is empty: expected the tokens' `iss` value"
                ));
            } else if !seen.insert(iss.issuer.clone()) {
                out.push(format!("{at}: issuer `{}` is listed twice", iss.issuer));
            }
            match (&iss.jwks_url, &iss.jwks_file) {
                (Some(u), None) => {
                    if !(u.starts_with("https://") || u.starts_with("http://")) {
                        out.push(format!("{at}.jwks_url `{u}`: expected an http(s) URL"));
                    }
                }
                (None, Some(_)) => {}
                _ => out.push(format!(
                    "{at}: set exactly one of `jwks_url` and `jwks_file`"
                )),
            }
            if iss.audiences.is_empty() {
                out.push(format!(
                    "{at}.audiences is empty: list the `aud` values this gateway accepts"
                ));
            }
            if iss.algorithms.is_empty() {
                out.push(format!("{at}.algorithms is empty: e.g. [RS256, ES256]"));
            }
            for alg in &iss.algorithms {
                if !ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
                    out.push(format!(
                        "{at}.algorithms: `{alg}` is not accepted: expected one of {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ));
                }
            }
            for (acr, aal) in &iss.acr_values {
                if !(1..=3).contains(aal) {
                    out.push(format!(
                        "{at}.acr_values: `{acr}` maps to {aal}: expected an AAL 1, 2 or 3"
                    ));
                }
            }
        }
        for (id, app) in &self.apps {
            if !app_ids.contains(&id.as_str()) {
                out.push(format!(
                    "gateway.apps.{id}: no app with id `{id}` is configured under `apps`"
                ));
            }
            if app.timeout.is_some_and(|t| t.0.is_zero()) {
                out.push(format!("gateway.apps.{id}.timeout must be above zero"));
            }
            if app.audiences.iter().any(|a| a.trim().is_empty()) {
                out.push(format!(
                    "gateway.apps.{id}.audiences: an empty audience; list the `aud` values tokens for this app carry"
                ));
            }
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            out.push("gateway.timeout must be above zero (e.g. 60s)".into());
        }
        out
    }
}

fn axum_header_name_ok(name: &str) -> Option<()> {
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(())
}

fn yes() -> bool {
    true
}

fn default_header() -> String {
    "X-Stepgate-Assertion".into()
}

fn default_ttl() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_rotate() -> HumanDuration {
    HumanDuration::from_secs(86_400)
}

fn default_jwks_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

fn default_jwks_cache() -> HumanDuration {
    HumanDuration::from_secs(600)
}

fn default_leeway() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

fn default_username_claim() -> String {
    "preferred_username".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_split_once_and_bad_ones_are_named() {
        let t = parse_upstream("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (t.address.as_str(), t.prefix.as_str()),
            ("127.0.0.1:8080", "")
        );
        let t = parse_upstream("http://app.internal/base/").unwrap();
        assert_eq!(
            (t.address.as_str(), t.prefix.as_str()),
            ("app.internal:80", "/base")
        );
        let t = parse_upstream("http://[::1]:9000/").unwrap();
        assert_eq!(t.address, "[::1]:9000");
        for (bad, says) in [
            ("https://app.internal", "https upstreams are not supported"),
            ("ftp://app.internal", "expected http://"),
            ("app.internal:8080", "expected http://"),
            ("http://user:pw@app.internal", "credentials"),
            ("http://app.internal/?a=1", "query"),
            ("http://app.internal/#x", "fragment"),
            ("http://app.internal:0", "bad port"),
            ("http://app internal", "not a URL"),
        ] {
            let e = parse_upstream(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let g: GatewayConfig = marked_yaml::from_yaml(
            0,
            "bearer:\n  issuers:\n    - issuer: https://idp\n      jwks_url: https://idp/jwks\n      audiences: [api]\napps:\n  console: { timeout: 5s }\n",
        )
        .unwrap();
        assert_eq!(g.assertion.ttl.as_secs(), 60);
        assert_eq!(g.assertion.rotate_every.as_secs(), 86_400);
        assert_eq!(g.bearer.issuers[0].algorithms, vec!["RS256", "ES256"]);
        assert!(g.validate(&["console"]).is_empty());
        assert_eq!(g.timeout_for("console").as_secs(), 5);
        assert_eq!(g.timeout_for("other").as_secs(), 60);
        let errs = g.validate(&[]);
        assert!(errs[0].contains("gateway.apps.console"), "{errs:?}");
        let g: GatewayConfig =
            marked_yaml::from_yaml(0, "apps:\n  console: { audiences: [\" \"] }\n").unwrap();
        let errs = g.validate(&["console"]);
        assert!(
            errs[0].contains("gateway.apps.console.audiences"),
            "{errs:?}"
        );
    }

    #[test]
    fn refuses_hmac_and_missing_keys() {
        let g: GatewayConfig = marked_yaml::from_yaml(
            0,
            "bearer:\n  issuers:\n    - issuer: https://idp\n      audiences: []\n      algorithms: [HS256]\n",
        )
        .unwrap();
        let errs = g.validate(&[]).join("\n");
        assert!(
            errs.contains("exactly one of `jwks_url` and `jwks_file`"),
            "{errs}"
        );
        assert!(errs.contains("audiences is empty"), "{errs}");
        assert!(errs.contains("`HS256` is not accepted"), "{errs}");
    }
}
