//! Shared server state: the configuration in force (swapped whole on reload), the stores,
//! the authenticator and the signer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use stepgate_authn::service::Authenticator;
use stepgate_config::Config;
use stepgate_store::Stores;

use super::signer::Signer;
use crate::access::signals::Signals;
use crate::access::Access;
use crate::devices::connectors::Connectors;
use crate::devices::Registry;
use crate::gateway::assertion::{AssertionCache, AssertionKeys};
use crate::gateway::upstream::UpstreamClient;
use crate::session::cache::Caches;
use crate::session::Sessions;

/// Everything that comes from the configuration file and can be replaced by a reload.
pub struct Runtime {
    /// The validated configuration, with its compiled policy set.
    pub config: Config,
    /// Lower-cased host name (without port) → index into `config.apps`. Built from the
    /// configuration alone, so a fast hash is safe: a client's host is only looked up.
    pub hosts: HashMap<String, usize, foldhash::fast::RandomState>,
    /// The portal's public base URL, without a trailing slash.
    pub public_url: String,
    /// App id → its upstream, split once (the configuration was validated, so every app
    /// with an `upstream:` has one here).
    pub upstreams: HashMap<String, stepgate_config::UpstreamTarget, foldhash::fast::RandomState>,
    /// The public URL's authority (`host[:port]`), as a client names it in `Host`.
    pub public_authority: String,
    /// The public URL's host name, lower-cased and without its port.
    pub own_host: String,
    /// The session cookie's name (`__Host-` prefixed when it can be).
    pub session_cookie: String,
    /// The names of the cookies stepgate sets, which never pass between client and upstream
    /// under any spelling: their [`stepgate_request::cookies::name_key`]s.
    pub own_cookies: Vec<String>,
    /// How each app's request targets are read (by index into `config.apps`).
    pub target_rules: Vec<stepgate_request::TargetRules>,
    /// Headers only stepgate (or the trusted proxy in front) may send upstream besides the
    /// fixed identity headers: the configured assertion header and the forwarded client
    /// certificate header, folded as an upstream may read them
    /// ([`stepgate_request::names::fold`]), so that every spelling of them is stripped.
    pub configured_identity_headers: Vec<String>,
    /// This configuration's number, distinct from every other `Runtime` this process
    /// built: what is derived from a configuration and kept across requests (the identity
    /// headers of a session) names the one it was derived from.
    pub generation: u64,
}

/// The next [`Runtime::generation`].
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Runtime {
    /// Indexes a configuration.
    pub fn new(config: Config) -> Self {
        let public_url = match &config.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", config.listen),
        };
        let public_authority = public_url
            .split_once("://")
            .map_or(public_url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        Runtime {
            hosts: app_hosts(&config),
            upstreams: app_upstreams(&config),
            own_host: strip_port(&public_authority).to_ascii_lowercase(),
            public_url,
            public_authority,
            session_cookie: crate::session::cookies::session_cookie_name(&config.sessions),
            own_cookies: crate::session::cookies::own_cookie_names(&config)
                .iter()
                .map(|n| stepgate_request::cookies::name_key(n))
                .collect(),
            target_rules: app_target_rules(&config),
            configured_identity_headers: configured_identity_headers(&config),
            generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            config,
        }
    }

    /// How the targets of requests for the app `app` ([`Runtime::app_index`] of their host)
    /// are read: the rules of that app, or the strict ones when no app is configured for
    /// the host (the request is refused later anyway).
    pub fn target_rules_of(&self, app: Option<usize>) -> stepgate_request::TargetRules {
        app.map(|i| self.target_rules[i]).unwrap_or_default()
    }

    /// The scheme clients use when no one says otherwise: `https` when the session cookie
    /// is `Secure`.
    pub fn default_scheme(&self) -> &'static str {
        if self.config.sessions.cookie.secure {
            "https"
        } else {
            "http"
        }
    }

    /// The absolute URL of the portal page `path` (`/login?t=…`), on the configured public
    /// URL: never built from the request's `Host`.
    pub fn portal_url(&self, path: &str) -> String {
        [self.public_url.as_str(), self.portal(), path].concat()
    }

    /// Whether `host` (with or without a port) is one stepgate serves: the public URL's or
    /// an app's. Anything else is answered 421, never redirected.
    pub fn serves_host(&self, host: &str) -> bool {
        strip_port(host).eq_ignore_ascii_case(&self.own_host) || self.app_index(host).is_some()
    }

    /// Whether `host` is an app host that gets its session by hand-off
    /// (`sessions.hand_off`): an app's host other than the public URL's, and not one the
    /// session cookie's domain covers (it shares that cookie; a second, host-only one of
    /// the same name would make every request carry the session cookie twice).
    pub fn hands_off(&self, host: &str) -> bool {
        let host = strip_port(host);
        let covered = self
            .config
            .sessions
            .cookie
            .domain
            .as_deref()
            .is_some_and(|d| {
                let (h, d) = (
                    host.to_ascii_lowercase(),
                    d.trim_start_matches('.').to_ascii_lowercase(),
                );
                h == d || h.ends_with(&format!(".{d}"))
            });
        self.config.sessions.hand_off
            && !covered
            && !host.eq_ignore_ascii_case(&self.own_host)
            && self.app_index(host).is_some()
    }

    /// The app served on `host`, if any.
    pub fn app_for_host(&self, host: &str) -> Option<&stepgate_policy::spec::AppSpec> {
        self.app_index(host).map(|i| &self.config.apps[i])
    }

    /// The app at `i` of [`Runtime::app_index`].
    pub fn app_at(&self, i: usize) -> Option<&stepgate_policy::spec::AppSpec> {
        self.config.apps.get(i)
    }

    /// The index of the app served on `host` (with or without a port), if any.
    pub fn app_index(&self, host: &str) -> Option<usize> {
        let host = strip_port(host);
        let i = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(&host.to_ascii_lowercase())
        } else {
            self.hosts.get(host)
        };
        i.copied()
    }

    /// Whether a request for `host` is an app's rather than stepgate's own: `host` is an
    /// app's and not the public URL's. Stepgate's root paths (`/healthz`, `/readyz`,
    /// `/.well-known/jwks.json`) on an app's host belong to the app.
    pub fn is_app_host(&self, host: &str) -> bool {
        self.app_for_host(host).is_some() && !strip_port(host).eq_ignore_ascii_case(&self.own_host)
    }

    /// The portal path prefix (`/_stepgate`).
    pub fn portal(&self) -> &str {
        &self.config.server.portal_path
    }
}

/// Each app's host names, lower-cased and without a port → the app's index.
fn app_hosts(config: &Config) -> HashMap<String, usize, foldhash::fast::RandomState> {
    let mut hosts = HashMap::default();
    for (i, app) in config.apps.iter().enumerate() {
        for h in &app.hosts {
            hosts.insert(strip_port(h).to_ascii_lowercase(), i);
        }
    }
    hosts
}

/// App id → its upstream, for each app with one.
fn app_upstreams(
    config: &Config,
) -> HashMap<String, stepgate_config::UpstreamTarget, foldhash::fast::RandomState> {
    config
        .apps
        .iter()
        .filter_map(|a| {
            let t = stepgate_config::parse_upstream(a.upstream.as_ref()?).ok()?;
            Some((a.id.to_string(), t))
        })
        .collect()
}

/// How each app's request targets are read (by index into `config.apps`).
fn app_target_rules(config: &Config) -> Vec<stepgate_request::TargetRules> {
    config
        .apps
        .iter()
        .map(|a| stepgate_request::TargetRules {
            strip_path_parameters: config
                .gateway
                .apps
                .get(a.id.as_str())
                .is_some_and(|g| g.path_parameters == stepgate_config::PathParameters::Strip),
            case_insensitive: a.case_insensitive_paths,
        })
        .collect()
}

/// The assertion header and the forwarded client certificate header, lower case.
fn configured_identity_headers(config: &Config) -> Vec<String> {
    let fold = |name: &str| stepgate_request::names::fold(name).into_owned();
    let mut headers = vec![fold(&config.gateway.assertion.header)];
    if let Some(f) = &config.signals.client_certificates.forwarded {
        headers.push(fold(&f.header));
    }
    headers
}

/// `host` without a `:port` suffix (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

/// How the server was started.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Demo switches (device profiles) are on.
    pub demo: bool,
    /// The file to re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
}

/// State shared by every handler.
pub struct AppState {
    /// The configuration in force.
    pub runtime: ArcSwap<Runtime>,
    /// Durable and hot stores (through the node's read cache).
    pub stores: Stores,
    /// Factor verification and enrolment.
    pub authn: Authenticator,
    /// Signs return targets, CSRF tokens, pending steps.
    pub signer: Signer,
    /// Connection pool to upstreams.
    pub upstream: UpstreamClient,
    /// Start-up options.
    pub options: ServeOptions,
    /// False while draining on shutdown.
    pub ready: AtomicBool,
    /// GeoIP, IP risk, certificates, device API tokens, CAEP, re-check (built at start).
    pub signals: Arc<Signals>,
    /// Keys for the signed identity assertion (shared by all nodes through the store).
    pub assertion: Arc<AssertionKeys>,
    /// The OpenID Provider's own signing keys (ID, access and logout tokens; published at
    /// its `jwks_uri`), apart from the assertion's.
    pub oidc_keys: Arc<AssertionKeys>,
    /// Signed identity assertions reused while most of their lifetime remains.
    pub assertions: AssertionCache,
    /// The per-node read cache in front of the stores (`sessions.cache_ttl`).
    pub cache: Arc<Caches>,
    /// Sessions: load, check, rotate.
    pub sessions: Arc<Sessions>,
    /// The device registry and device–session bindings.
    pub devices: Arc<Registry>,
    /// The UEM connectors (`devices.connectors`), built at start.
    pub connectors: Connectors,
    /// The access pipeline: every decision.
    pub access: Access,
    /// The OpenID Provider's sealing key (codes, refresh tokens).
    pub oidc: crate::oidc::Provider,
    /// Upstream identity providers' metadata and keys (`identity_providers`).
    pub idps: crate::idp::IdentityProviders,
    /// The node's Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Audit events of what already happened, kept while the durable store is out of reach.
    pub audit: Arc<crate::app::audit::AuditOutbox>,
    /// The SIEM streams of the audit log (`audit.stream`).
    pub siem: crate::siem::Streams,
    /// The stored policy set in force (`admin.policy_edits: store`).
    pub stored_policies: super::stored_policies::StoredPolicies,
}

/// The state as handlers receive it.
pub type Shared = Arc<AppState>;

#[cfg(test)]
mod tests {
    use super::{configured_identity_headers, strip_port};

    /// A configured header is stripped under every spelling an upstream reads as it: the
    /// names are folded, so `X-Client_Cert` is matched as `x-client-cert` is.
    #[test]
    fn configured_identity_headers_are_folded() {
        let yaml = "gateway: { assertion: { enabled: true, header: X-My-Assertion } }\n\
                    signals: { client_certificates: { forwarded: { header: X-Client_Cert, format: pem } } }\n";
        let config = stepgate_config::load_str("t.yaml", yaml, None).unwrap();
        assert_eq!(
            configured_identity_headers(&config),
            ["x-my-assertion", "x-client-cert"]
        );
    }

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:1"), "127.0.0.1");
    }
}
