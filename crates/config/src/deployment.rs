//! What `stepgate check` finds in a configuration that loads but would not work once
//! deployed: nobody able to sign in, passkeys bound to the wrong origin, a session cookie
//! the browser never sends back, files that are not there.
//!
//! These are not load errors: `what-if`, `test` and the test suites load configurations
//! whose TLS and GeoIP files live elsewhere, and a policy file can be checked before its
//! sign-in policy is written. [`review`] is run by `check` (and by `serve`, which logs
//! them) over a loaded [`Config`]; each finding is an error (`check` exits 1) or a warning.

use std::path::{Path, PathBuf};

use marked_yaml::{Node, Span};
use stepgate_policy::spec::Sensitivity;
use stepgate_policy::Outcome;

use crate::{Config, Diagnostic};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The deployment would not work: `check` exits 1.
    Error,
    /// Likely a mistake, or weaker than intended: printed, `check` exits 0.
    Warning,
}

/// One thing [`review`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Where and what.
    pub diagnostic: Diagnostic,
}

/// The files and YAML trees a configuration came from, to position findings about values
/// that keep no span of their own (defaults have none: those point at the main file).
#[derive(Debug, Default)]
pub(crate) struct SourceMap {
    pub files: Vec<PathBuf>,
    pub nodes: Vec<Option<Node>>,
}

impl SourceMap {
    fn at_span(&self, span: &Span) -> Option<Diagnostic> {
        let m = span.start()?;
        Some(Diagnostic {
            file: self.files.get(m.source())?.clone(),
            line: Some(m.line()),
            column: Some(m.column()),
            message: String::new(),
        })
    }

    /// Whether the key at `path` is written in some file (not left to its default).
    fn is_written(&self, path: &[&str]) -> bool {
        self.nodes.iter().flatten().any(|node| {
            let mut here = node;
            for key in path {
                match here.as_mapping().and_then(|m| m.get_node(key)) {
                    Some(v) => here = v,
                    None => return false,
                }
            }
            true
        })
    }

    /// Where the deepest existing part of `path` (`["sessions", "cookie", "secure"]`) was
    /// written, in whichever file defines it.
    fn at_path(&self, path: &[&str]) -> Diagnostic {
        let mut best: Option<(usize, Diagnostic)> = None;
        for node in self.nodes.iter().flatten() {
            let mut here = node;
            for (depth, key) in path.iter().enumerate() {
                let Some(map) = here.as_mapping() else { break };
                let Some((k, v)) = map.iter().find(|(k, _)| k.as_str() == *key) else {
                    break;
                };
                if best.as_ref().is_none_or(|(d, _)| depth + 1 > *d) {
                    if let Some(d) = self.at_span(k.span()) {
                        best = Some((depth + 1, d));
                    }
                }
                here = v;
            }
        }
        best.map(|(_, d)| d).unwrap_or_else(|| Diagnostic {
            file: self.files.first().cloned().unwrap_or_default(),
            line: None,
            column: None,
            message: String::new(),
        })
    }
}

/// Everything that would break (or weaken) a deployment of `cfg`, in file order.
pub fn review(cfg: &Config) -> Vec<Finding> {
    let mut r = Review {
        cfg,
        out: Vec::new(),
    };
    r.sign_in();
    r.webauthn();
    r.cookie();
    r.files();
    r.apps();
    r.out.sort_by(|a, b| {
        let key = |f: &Finding| {
            (
                f.diagnostic.file.clone(),
                f.diagnostic.line,
                f.diagnostic.column,
            )
        };
        key(a).cmp(&key(b))
    });
    r.out
}

struct Review<'a> {
    cfg: &'a Config,
    out: Vec<Finding>,
}

/// The URL browsers reach the portal at: `server.public_url`, else `http://` + `listen`.
fn public_url(cfg: &Config) -> Option<url::Url> {
    match &cfg.server.public_url {
        Some(u) => url::Url::parse(u.as_str()).ok(),
        None => url::Url::parse(&format!("http://{}", cfg.listen)).ok(),
    }
}

/// `localhost` and loopback addresses: browsers treat them as secure contexts, and the
/// demo's `http://localhost` works with secure cookies and passkeys.
fn is_local(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host` is `domain` or below it.
fn within(host: &str, domain: &str) -> bool {
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    host == domain || host.ends_with(&format!(".{domain}"))
}

impl Review<'_> {
    fn push(&mut self, severity: Severity, mut at: Diagnostic, message: String) {
        at.message = message;
        self.out.push(Finding {
            severity,
            diagnostic: at,
        });
    }

    fn at(&self, path: &[&str]) -> Diagnostic {
        self.cfg.sources.at_path(path)
    }

    /// No enabled policy targets the sign-in and the default denies: nobody can sign in.
    fn sign_in(&mut self) {
        let cfg = self.cfg;
        let targeted = cfg
            .policies
            .iter()
            .any(|p| p.enabled && !p.report_only && p.targets.sign_in);
        if targeted || matches!(cfg.policy_set.default_outcome(), Outcome::Allow) {
            return;
        }
        let at = if cfg.policies.is_empty() {
            self.at(&["default_outcome"])
        } else {
            self.at(&["policies"])
        };
        self.push(
            Severity::Error,
            at,
            "no enabled policy targets the sign-in and `default_outcome` is not `allow`: every sign-in would be denied and nobody could sign in; add a policy with `targets: { sign_in: true }`, e.g. `{ name: sign-in, priority: 1000, targets: { sign_in: true }, outcome: { step_up: { min_aal: 2 } } }`".into(),
        );
    }

    /// Passkeys only work when `rp_origin` is exactly the origin the browser is on.
    fn webauthn(&mut self) {
        let cfg = self.cfg;
        let w = &cfg.factors.webauthn;
        if !w.enabled {
            return;
        }
        let (Some(public), Ok(origin)) = (public_url(cfg), url::Url::parse(&w.rp_origin)) else {
            return;
        };
        let public_host = public.host_str().unwrap_or_default().to_string();
        let origin_host = origin.host_str().unwrap_or_default().to_string();
        let whence = match &cfg.server.public_url {
            Some(_) => "`server.public_url`",
            None => "`http://` + `server.listen` (no `server.public_url` is set)",
        };
        let app_hosts: Vec<&str> = cfg
            .apps
            .iter()
            .flat_map(|a| a.hosts.iter().map(|h| h.as_str()))
            .collect();
        let same_host = origin_host.eq_ignore_ascii_case(&public_host)
            || (is_local(&origin_host)
                && is_local(&public_host)
                && cfg.server.public_url.is_none());
        let fix = format!(
            "set `factors.webauthn.rp_id: {public_host}` and `rp_origin: {}`",
            public.origin().ascii_serialization()
        );
        if same_host {
            if origin.scheme() != public.scheme()
                || origin.port_or_known_default() != public.port_or_known_default()
            {
                let at = self.at(&["factors", "webauthn", "rp_origin"]);
                self.push(
                    Severity::Error,
                    at,
                    format!(
                        "WebAuthn `rp_origin` `{}` differs from {whence} `{}` in scheme or port: browsers refuse passkeys from any other origin; {fix}",
                        w.rp_origin,
                        public.origin().ascii_serialization()
                    ),
                );
            }
        } else if !app_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&origin_host))
        {
            let at = self.at(&["factors", "webauthn", "rp_origin"]);
            let default = if !self
                .cfg
                .sources
                .is_written(&["factors", "webauthn", "rp_origin"])
            {
                " (the default: it is not set)"
            } else {
                ""
            };
            self.push(
                Severity::Error,
                at,
                format!(
                    "WebAuthn `rp_origin` `{}`{default} is not where the portal is served ({whence} is `{}`, and no app host is `{origin_host}`): passkeys would fail in the browser; {fix}",
                    w.rp_origin, public
                ),
            );
        }
        if !within(&public_host, &w.rp_id) && same_host {
            let at = self.at(&["factors", "webauthn", "rp_id"]);
            self.push(
                Severity::Error,
                at,
                format!(
                    "WebAuthn `rp_id` `{}` does not cover the portal's host `{public_host}`: {fix}",
                    w.rp_id
                ),
            );
        }
    }

    /// The session cookie must reach the portal's host and suit its scheme.
    fn cookie(&mut self) {
        let cfg = self.cfg;
        let Some(public) = public_url(cfg) else {
            return;
        };
        let host = public.host_str().unwrap_or_default().to_string();
        let cookie = &cfg.sessions.cookie;
        if let Some(domain) = &cookie.domain {
            if !within(&host, domain) {
                let at = self.at(&["sessions", "cookie", "domain"]);
                self.push(
                    Severity::Error,
                    at,
                    format!(
                        "cookie domain `{domain}` does not cover the public URL's host `{host}`: the browser would refuse the session cookie and sign-in would loop; use `{}` or a parent domain of it",
                        host
                    ),
                );
            }
        }
        let https = public.scheme() == "https";
        if https && !cookie.secure {
            let at = self.at(&["sessions", "cookie", "secure"]);
            self.push(
                Severity::Warning,
                at,
                format!(
                    "`sessions.cookie.secure: false` with the https public URL `{public}`: the session cookie would also be sent over plain http, where it can be stolen; remove `secure: false`"
                ),
            );
        }
        if !https && cookie.secure && !is_local(&host) {
            let at = self.at(&["sessions", "cookie", "secure"]);
            let default = if !self
                .cfg
                .sources
                .is_written(&["sessions", "cookie", "secure"])
            {
                " (secure cookies are the default)"
            } else {
                ""
            };
            self.push(
                Severity::Error,
                at,
                format!(
                    "secure session cookies{default} with the plain-http public URL `{public}`: browsers drop secure cookies on http, so nobody would stay signed in; serve stepgate over https (set `server.public_url: https://…`), or for a test only set `sessions.cookie.secure: false`"
                ),
            );
        }
    }

    /// Files named in the configuration must be there and readable by stepgate.
    fn files(&mut self) {
        let cfg = self.cfg;
        let mut wanted: Vec<(&[&str], PathBuf, &str)> = Vec::new();
        if let Some(tls) = &cfg.server.tls {
            wanted.push((
                &["server", "tls", "cert_file"],
                tls.cert_file.clone().into(),
                "TLS certificate",
            ));
            wanted.push((
                &["server", "tls", "key_file"],
                tls.key_file.clone().into(),
                "TLS private key",
            ));
            if let Some(ca) = &tls.client_ca_file {
                wanted.push((
                    &["server", "tls", "client_ca_file"],
                    ca.clone().into(),
                    "client CA bundle",
                ));
            }
        }
        if let Some(g) = &cfg.signals.geoip {
            wanted.push((
                &["signals", "geoip", "database"],
                g.database.clone(),
                "GeoIP database",
            ));
            if let Some(asn) = &g.asn_database {
                wanted.push((
                    &["signals", "geoip", "asn_database"],
                    asn.clone(),
                    "GeoIP ASN database",
                ));
            }
        }
        for f in &cfg.signals.ip_risk.feeds {
            wanted.push((
                &["signals", "ip_risk", "feeds"],
                f.path.clone(),
                "IP risk feed",
            ));
        }
        for (path, file, what) in wanted {
            if file.as_os_str().is_empty() {
                continue;
            }
            let full = cfg.base_dir.join(&file);
            if let Err(e) = readable(&full) {
                let at = self.at(path);
                self.push(
                    Severity::Error,
                    at,
                    format!(
                        "{what} `{}` cannot be read: {e} (relative paths are relative to the configuration file's folder)",
                        full.display()
                    ),
                );
            }
        }
    }

    /// A high-sensitivity app with no routes: nothing marks its sensitive operations.
    fn apps(&mut self) {
        let cfg = self.cfg;
        for app in &cfg.apps {
            if app.sensitivity == Sensitivity::High && app.routes.is_empty() {
                let Some(at) = cfg.sources.at_span(app.id.span()) else {
                    continue;
                };
                self.push(
                    Severity::Warning,
                    at,
                    format!(
                        "app `{}` has sensitivity `high` but no `routes`: no route can be tagged for step-up, so every path gets the same treatment; list its sensitive routes (e.g. `- {{ path: /admin/**, tags: [sensitive] }}`)",
                        app.id.as_str()
                    ),
                );
            }
        }
    }
}

/// Opens `path` for reading (and refuses a directory).
fn readable(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::other("it is a directory"));
    }
    Ok(())
}
