//! Loads stepgate's configuration: one YAML file, optionally pulling in more files or whole
//! directories with `includes:`, checked completely before anything runs.
//!
//! Every problem — YAML syntax, an unknown key, a wrong type, a bad CIDR / regex / time
//! zone, an out-of-range number, a duplicate priority, a reference to an app or zone that
//! does not exist — comes back as a [`Diagnostic`] naming the file, line and column and
//! what was expected. A syntax error stops the file (the parser cannot go on); shape errors
//! (unknown keys, with the nearest valid one suggested, wrong types, missing keys) and
//! meaning errors are all collected. [`review`] then looks for what would break a
//! deployment (nobody able to sign in, passkeys bound to another origin, missing files).
//!
//! Lists (`apps`, `policies`) from included files are concatenated, maps (`networks`) are
//! merged (a zone defined twice is an error), and single sections (`sessions`,
//! `default_outcome`, …) may appear in only one file.
//!
//! No configuration can take down the process that loads it, since a reload runs inside the
//! serving gateway. Each file must be a regular file of at most [`MAX_FILE_BYTES`]
//! ([`MAX_TOTAL_BYTES`] for all of them); `includes:` chain at most [`MAX_INCLUDE_DEPTH`]
//! files deep; YAML nests at most [`MAX_YAML_DEPTH`] levels, checked before the recursive
//! parser runs; policy conditions and compliance-rule expressions nest at most
//! [`stepgate_policy::spec::MAX_CONDITION_DEPTH`] and
//! [`stepgate_signals::compliance::MAX_EXPR_DEPTH`] levels. Loading runs on a thread of its
//! own with a stack sized for those limits, so the caller's stack (a 2 MiB runtime worker)
//! does not matter, and a bug that panics comes back as a diagnostic.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::{LoaderOptions, Span, Spanned};
use serde::Deserialize;
use stepgate_authn::{AssuranceConfig, FactorsConfig, RegulationConfig};
use stepgate_policy::spec::{AppSpec, NetworksSpec, OutcomeSpec, PolicySpec};
use stepgate_policy::{PolicyInput, PolicySet};
use stepgate_signals::config::{DevicesConfig, SignalsConfig};
use stepgate_signals::CompliancePolicy;
use stepgate_store::{SecretsConfig, StoreConfig, UserSpec};

pub mod admin;
pub mod audit;
pub mod deployment;
pub mod enrolment;
mod files;
pub mod gateway;
pub mod identity;
pub mod logging;
mod nesting;
pub mod oidc;
pub mod portal;
pub mod server;
pub mod sessions;
mod structure;

pub use deployment::{review, Finding, Severity};
pub use files::{MAX_FILE_BYTES, MAX_TOTAL_BYTES};
pub use nesting::MAX_YAML_DEPTH;

/// How many files deep `includes:` may chain (the main file including one that includes
/// another, …).
pub const MAX_INCLUDE_DEPTH: usize = 64;

/// The loader thread's stack. Every recursion in loading is bounded by the limits above; a
/// debug build's serde needs a few MiB at [`MAX_YAML_DEPTH`], so this leaves a wide margin
/// (the pages are only reserved, not used).
const LOADER_STACK_BYTES: usize = 64 << 20;

pub use admin::{AdminConfig, PolicyEdits};
pub use audit::{AuditConfig, AuditStreamConfig, AuditStreamFormat, AuditStreamKind};
pub use enrolment::{AtFirstSignIn, EnrolmentConfig};
pub use gateway::{
    parse_upstream, AssertionConfig, BearerConfig, BearerIssuer, GatewayAppConfig, GatewayConfig,
    PathParameters, UpstreamTarget,
};
pub use logging::{DecisionLogConfig, LogConfig, LogFormat, OtlpConfig};
pub use oidc::{ClientType, OidcClient, OidcConfig};
pub use portal::{HelpDesk, PortalConfig};
pub use server::{ClientAddressHeader, ServerConfig, TlsConfig};
pub use sessions::{CookieConfig, NistRevision, SessionLimits, SessionsConfig};

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (as given or as resolved from an include).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// The configuration could not be loaded; holds every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// One file's worth of configuration, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Further files or directories (`*.yaml`, `*.yml`) to load, relative to this file.
    #[serde(default)]
    includes: Vec<Spanned<String>>,
    #[serde(default)]
    apps: Vec<AppSpec>,
    #[serde(default)]
    networks: NetworksSpec,
    #[serde(default)]
    policies: Vec<PolicySpec>,
    #[serde(default)]
    default_outcome: Option<Spanned<OutcomeSpec>>,
    #[serde(default)]
    sessions: Option<Spanned<SessionsConfig>>,
    #[serde(default)]
    gateway: Option<Spanned<GatewayConfig>>,
    #[serde(default)]
    server: Option<Spanned<ServerConfig>>,
    #[serde(default)]
    factors: Option<Spanned<FactorsConfig>>,
    #[serde(default)]
    assurance: Option<Spanned<AssuranceConfig>>,
    #[serde(default)]
    regulation: Option<Spanned<RegulationConfig>>,
    #[serde(default)]
    store: Option<Spanned<StoreConfig>>,
    #[serde(default)]
    secrets: Option<Spanned<SecretsConfig>>,
    #[serde(default)]
    users: Vec<UserSpec>,
    #[serde(default)]
    signals: Option<Spanned<SignalsConfig>>,
    #[serde(default)]
    devices: Option<Spanned<DevicesConfig>>,
    #[serde(default)]
    log: Option<Spanned<LogConfig>>,
    #[serde(default)]
    admin: Option<Spanned<AdminConfig>>,
    audit: Option<Spanned<AuditConfig>>,
    #[serde(default)]
    portal: Option<Spanned<PortalConfig>>,
    #[serde(default)]
    enrolment: Option<Spanned<EnrolmentConfig>>,
    oidc: Option<Spanned<OidcConfig>>,
    #[serde(default)]
    identity_providers: Vec<Spanned<identity::IdentityProviderConfig>>,
    #[serde(default)]
    ldap: Option<Spanned<identity::LdapConfig>>,
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Every file that contributed, the main one first.
    pub files: Vec<PathBuf>,
    /// The configuration's version: `sha256:` and the first 16 hex digits of a SHA-256 over
    /// every file's text in the order they were loaded (not their paths), so nodes that load
    /// the same files report the same version (`/readyz?details`).
    pub version: String,
    /// `apps`.
    pub apps: Vec<AppSpec>,
    /// `networks`.
    pub networks: NetworksSpec,
    /// `policies`, as written.
    pub policies: Vec<PolicySpec>,
    /// `sessions`.
    pub sessions: SessionsConfig,
    /// `gateway`: identity assertion, bearer tokens, per-app upstream settings.
    pub gateway: GatewayConfig,
    /// `server`.
    pub server: ServerConfig,
    /// `portal`.
    pub portal: PortalConfig,
    /// `enrolment`.
    pub enrolment: EnrolmentConfig,
    /// `factors`.
    pub factors: FactorsConfig,
    /// `assurance`.
    pub assurance: AssuranceConfig,
    /// `regulation`.
    pub regulation: RegulationConfig,
    /// `store`.
    pub store: StoreConfig,
    /// `secrets`.
    pub secrets: SecretsConfig,
    /// `users` declared in the file.
    pub users: Vec<UserSpec>,
    /// `signals`: GeoIP, IP risk, behavioural risk, client certificates.
    pub signals: SignalsConfig,
    /// `devices`: device sources, compliance, CAEP, re-check, device cookie.
    pub devices: DevicesConfig,
    /// `log`: level, format, file.
    pub log: LogConfig,
    /// `admin`: the admin API's group and write freshness.
    pub admin: AdminConfig,
    /// `audit`: SIEM streams of the audit log.
    pub audit: AuditConfig,
    /// `oidc`: stepgate as an OpenID Provider.
    pub oidc: OidcConfig,
    /// `identity_providers`: upstream OpenID Providers users sign in through.
    pub identity_providers: Vec<identity::IdentityProviderConfig>,
    /// `ldap`: a directory as a password source.
    pub ldap: Option<identity::LdapConfig>,
    /// `devices.compliance.policies`, compiled.
    pub compliance_policies: Arc<Vec<CompliancePolicy>>,
    /// The directory relative paths in the configuration resolve against.
    pub base_dir: PathBuf,
    /// The parsed `server.listen`.
    pub listen: std::net::SocketAddr,
    /// The parsed `server.trusted_proxies`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The compiled policy set.
    pub policy_set: Arc<PolicySet>,
    /// The files' YAML trees, to position [`deployment::review`]'s findings.
    sources: deployment::SourceMap,
}

/// Loads and validates the configuration at `path` and everything it includes.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    on_loader_thread(path, || {
        let mut loader = Loader::default();
        loader.load_file(path, None, 0);
        loader.finish()
    })
}

/// Loads a configuration from text (e.g. the demo built into the binary). `name` is used
/// in messages; `includes:` resolve against `base_dir` and are refused without one.
pub fn load_str(name: &str, text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
    on_loader_thread(Path::new(name), || {
        let mut loader = Loader::default();
        loader.load_text(
            PathBuf::from(name),
            text.to_string(),
            base_dir.map(Path::to_path_buf),
            0,
        );
        loader.finish()
    })
}

/// Loads the configuration at `path` with the policy set `text` (a YAML mapping holding
/// `policies:` and nothing else, e.g. a version saved through the admin API) in place of
/// the files' `policies:`. The set's errors name it `name`, with their line and column in
/// `text`; it counts towards [`Config::version`] like a file.
pub fn load_with_policies(path: &Path, name: &str, text: &str) -> Result<Config, ConfigError> {
    on_loader_thread(path, || {
        let mut loader = Loader::default();
        loader.load_file(path, None, 0);
        for f in &mut loader.parsed {
            f.policies.clear();
        }
        loader.load_policy_set(PathBuf::from(name), text.to_string());
        loader.finish()
    })
}

/// Runs `load` on a thread with a stack of [`LOADER_STACK_BYTES`] and waits for it.
fn on_loader_thread(
    file: &Path,
    load: impl FnOnce() -> Result<Config, ConfigError> + Send,
) -> Result<Config, ConfigError> {
    let failed = |message: String| ConfigError {
        diagnostics: vec![Diagnostic {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message,
        }],
    };
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("stepgate-config".into())
            .stack_size(LOADER_STACK_BYTES)
            .spawn_scoped(scope, load);
        match spawned {
            Ok(handle) => handle.join().unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(failed(format!(
                    "{INTERNAL_ERROR} ({what}); nothing was loaded: please report this with the file"
                )))
            }),
            Err(e) => Err(failed(format!(
                "cannot start the configuration loader thread: {e}"
            ))),
        }
    })
}

/// How a diagnostic for a bug in the loader begins (the fuzz target looks for it).
#[doc(hidden)]
pub const INTERNAL_ERROR: &str = "internal error while loading the configuration";

#[derive(Default)]
struct Loader {
    files: Vec<PathBuf>,
    /// Each file's YAML tree, by source index (`None`: empty, or it did not parse), kept to
    /// position errors found after deserialising (compliance rules).
    nodes: Vec<Option<marked_yaml::Node>>,
    seen: HashSet<PathBuf>,
    parsed: Vec<ConfigFile>,
    diagnostics: Vec<Diagnostic>,
    /// Bytes read from files so far.
    bytes: u64,
    /// Every file's text, in load order, for [`Config::version`].
    digest: sha2::Sha256,
}

impl Loader {
    fn diag_at(&mut self, span: &Span, message: impl Into<String>) {
        let (file, line, column) = match span.start() {
            Some(m) => (
                self.files.get(m.source()).cloned().unwrap_or_default(),
                Some(m.line()),
                Some(m.column()),
            ),
            None => (self.files.first().cloned().unwrap_or_default(), None, None),
        };
        self.diagnostics.push(Diagnostic {
            file,
            line,
            column,
            message: message.into(),
        });
    }

    fn load_file(&mut self, path: &Path, from: Option<&Span>, depth: usize) {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if !self.seen.insert(canonical) {
            if let Some(span) = from {
                self.diag_at(
                    span,
                    format!(
                        "`{}` is included more than once (or includes itself)",
                        path.display()
                    ),
                );
            }
            return;
        }
        let read = files::read_config_file(path).map_err(|e| {
            let what = if from.is_some() {
                "`includes` takes YAML files and directories of them"
            } else {
                "the configuration must be a YAML file"
            };
            match e {
                files::ReadError::NotRegular(_) => format!("{e}; {what}"),
                e => e.to_string(),
            }
        });
        let read = read.and_then(|text| {
            self.bytes += text.len() as u64;
            if self.bytes > MAX_TOTAL_BYTES {
                Err(format!(
                    "the configuration's files together hold more than the {} MiB allowed: include fewer or smaller files",
                    MAX_TOTAL_BYTES >> 20
                ))
            } else {
                Ok(text)
            }
        });
        match read {
            Ok(text) => {
                let base = path.parent().map(Path::to_path_buf);
                self.load_text(path.to_path_buf(), text, base, depth);
            }
            Err(e) => {
                let msg = format!("cannot read `{}`: {e}", path.display());
                match from {
                    Some(span) => self.diag_at(span, msg),
                    None => self.diagnostics.push(Diagnostic {
                        file: path.to_path_buf(),
                        line: None,
                        column: None,
                        message: msg,
                    }),
                }
            }
        }
    }

    fn load_text(&mut self, file: PathBuf, text: String, base: Option<PathBuf>, depth: usize) {
        let source = self.files.len();
        self.files.push(file.clone());
        self.nodes.push(None);
        {
            use sha2::Digest as _;
            // Length-prefixed, so that moving text from one file to the next changes it.
            self.digest.update((text.len() as u64).to_be_bytes());
            self.digest.update(text.as_bytes());
        }
        if let Some(at) = text.find('\0') {
            // The YAML scanner takes a NUL for the end of the input and would silently drop
            // everything after it.
            let line = text[..at].matches('\n').count() + 1;
            let column = text[..at]
                .rsplit('\n')
                .next()
                .map_or(0, |l| l.chars().count())
                + 1;
            self.diagnostics.push(Diagnostic {
                file,
                line: Some(line),
                column: Some(column),
                message: "a NUL byte: this is not YAML text (is it a binary file?)".into(),
            });
            return;
        }
        if let Some((line, column)) = nesting::too_deep(&text) {
            self.diagnostics.push(Diagnostic {
                file,
                line: Some(line),
                column: Some(column),
                message: format!(
                    "mappings and sequences nest more than {MAX_YAML_DEPTH} levels deep here: flatten the structure (deeply nested `all`/`any`/`not` conditions can be split into several policies)"
                ),
            });
            return;
        }
        let opts = LoaderOptions::default().error_on_duplicate_keys(true);
        let parsed: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            let node = match marked_yaml::parse_yaml_with_options(source, &text, opts) {
                Ok(n) => n,
                Err(e) => {
                    self.yaml_error(&file, e.into());
                    return;
                }
            };
            let parsed = structure::deserialize(&node);
            self.nodes[source] = Some(node);
            match parsed {
                Ok(c) => c,
                Err(problems) => {
                    for p in problems {
                        self.diagnostics.push(Diagnostic {
                            file: file.clone(),
                            line: p.marker.map(|m| m.line()),
                            column: p.marker.map(|m| m.column()),
                            message: p.message,
                        });
                    }
                    return;
                }
            }
        };
        let includes = parsed.includes.clone();
        self.parsed.push(parsed);
        for inc in &includes {
            let Some(base) = &base else {
                self.diag_at(
                    inc.span(),
                    "`includes` cannot be used here (no base directory)",
                );
                continue;
            };
            let target = base.join(inc.as_str());
            if depth >= MAX_INCLUDE_DEPTH {
                self.diag_at(
                    inc.span(),
                    format!(
                        "cannot include `{}`: includes chain more than {MAX_INCLUDE_DEPTH} files deep; include the files from one place instead of from each other",
                        target.display()
                    ),
                );
                continue;
            }
            if target.is_dir() {
                match yaml_files_in(&target) {
                    Ok(files) => {
                        for f in files {
                            self.load_file(&f, Some(inc.span()), depth + 1);
                        }
                    }
                    Err(e) => self.diag_at(
                        inc.span(),
                        format!("cannot list `{}`: {e}", target.display()),
                    ),
                }
            } else {
                self.load_file(&target, Some(inc.span()), depth + 1);
            }
        }
    }

    /// Loads a policy set kept apart from the files: `policies:` and nothing else, and no
    /// `includes:` (it has no directory).
    fn load_policy_set(&mut self, file: PathBuf, text: String) {
        let source = self.files.len();
        let before = self.diagnostics.len();
        self.load_text(file.clone(), text, None, 0);
        if self.diagnostics.len() > before {
            return;
        }
        let keys: Vec<(Span, String)> = match self.nodes.get(source).and_then(|n| n.as_ref()) {
            Some(node) => match node.as_mapping() {
                Some(m) => m
                    .keys()
                    .map(|k| (*k.span(), k.as_str().to_string()))
                    .collect(),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        if !keys.iter().any(|(_, k)| k == "policies") {
            self.diagnostics.push(Diagnostic {
                file,
                line: Some(1),
                column: Some(1),
                message: "a policy set is a YAML mapping with one key, `policies:`, holding the list of policies".into(),
            });
            return;
        }
        for (span, key) in keys.iter().filter(|(_, k)| k != "policies") {
            self.diag_at(
                span,
                format!("`{key}` cannot be set in a policy set: it holds `policies:` only (the rest stays in the configuration file)"),
            );
        }
    }

    /// Where the rule expression `rule` of compliance policy `policy` was written, when the
    /// `devices` section came from file `source`.
    fn compliance_rule_span(&self, source: usize, policy: &str, rule: &str) -> Option<Span> {
        let root = self.nodes.get(source)?.as_ref()?.as_mapping()?;
        let policies = root
            .get_mapping("devices")?
            .get_mapping("compliance")?
            .get_sequence("policies")?;
        let p = policies.iter().find_map(|p| {
            let p = p.as_mapping()?;
            (p.get_scalar("name")?.as_str() == policy).then_some(p)
        })?;
        let r = p.get_sequence("rules")?.iter().find_map(|r| {
            let r = r.as_mapping()?;
            (r.get_scalar("id")?.as_str() == rule).then_some(r)
        })?;
        Some(*r.get_scalar("non_compliant_if")?.span())
    }

    /// Where `log.level` was written in file `source`.
    fn log_level_span(&self, source: Option<usize>) -> Option<Span> {
        let root = self.nodes.get(source?)?.as_ref()?.as_mapping()?;
        Some(*root.get_mapping("log")?.get_scalar("level")?.span())
    }

    fn yaml_error(&mut self, file: &Path, e: marked_yaml::FromYamlError) {
        use marked_yaml::{FromYamlError, LoadError};
        let (marker, message) = match &e {
            FromYamlError::ParseYaml(le) => match le {
                LoadError::TopLevelMustBeMapping(m) => (
                    Some(*m),
                    "the top level must be a mapping of sections (apps:, policies:, …)".to_string(),
                ),
                LoadError::TopLevelMustBeSequence(m) => {
                    (Some(*m), "the top level must be a sequence".to_string())
                }
                LoadError::UnexpectedAnchor(m) => (
                    Some(*m),
                    "YAML anchors and aliases are not supported: write the value out".to_string(),
                ),
                LoadError::MappingKeyMustBeScalar(m) => {
                    (Some(*m), "mapping keys must be plain scalars".to_string())
                }
                LoadError::UnexpectedTag(m) => {
                    (Some(*m), "YAML tags (`!foo`) are not supported".to_string())
                }
                LoadError::ScanError(m, se) => {
                    (Some(*m), format!("YAML syntax error: {}", se.info()))
                }
                LoadError::DuplicateKey(d) => (
                    d.key.span().start().copied(),
                    format!(
                        "duplicate key `{}` (first defined on line {})",
                        d.key.as_str(),
                        d.prev_key.span().start().map_or(0, |m| m.line())
                    ),
                ),
            },
            FromYamlError::FromNode(ne) => {
                let path = ne.path().map(str::to_string);
                let inner = ne.to_string();
                // The library prefixes the path; keep our own "at `path`" wording.
                let detail = match &path {
                    Some(p) => inner
                        .strip_prefix(&format!("{p}: "))
                        .unwrap_or(&inner)
                        .to_string(),
                    None => inner,
                };
                let msg = match path {
                    Some(p) if !p.is_empty() && p != "." => format!("at `{p}`: {detail}"),
                    _ => detail,
                };
                (ne.start_mark(), msg)
            }
        };
        self.diagnostics.push(Diagnostic {
            file: file.to_path_buf(),
            line: marker.map(|m| m.line()),
            column: marker.map(|m| m.column()),
            message,
        });
    }

    fn finish(mut self) -> Result<Config, ConfigError> {
        if !self.diagnostics.is_empty() {
            return Err(ConfigError {
                diagnostics: self.diagnostics,
            });
        }
        let mut apps = Vec::new();
        let mut networks = NetworksSpec::new();
        let mut policies = Vec::new();
        let mut default_outcome: Option<Spanned<OutcomeSpec>> = None;
        let mut sessions: Option<Spanned<SessionsConfig>> = None;
        let mut gateway: Option<Spanned<GatewayConfig>> = None;
        let mut server: Option<Spanned<ServerConfig>> = None;
        let mut factors: Option<Spanned<FactorsConfig>> = None;
        let mut assurance: Option<Spanned<AssuranceConfig>> = None;
        let mut regulation: Option<Spanned<RegulationConfig>> = None;
        let mut store: Option<Spanned<StoreConfig>> = None;
        let mut secrets: Option<Spanned<SecretsConfig>> = None;
        let mut users: Vec<UserSpec> = Vec::new();
        let mut signals: Option<Spanned<SignalsConfig>> = None;
        let mut devices: Option<Spanned<DevicesConfig>> = None;
        let mut log: Option<Spanned<LogConfig>> = None;
        let mut admin: Option<Spanned<AdminConfig>> = None;
        let mut audit: Option<Spanned<AuditConfig>> = None;
        let mut portal: Option<Spanned<PortalConfig>> = None;
        let mut enrolment: Option<Spanned<EnrolmentConfig>> = None;
        let mut oidc: Option<Spanned<OidcConfig>> = None;
        let mut identity_providers = Vec::new();
        let mut ldap: Option<Spanned<identity::LdapConfig>> = None;
        let parsed = std::mem::take(&mut self.parsed);
        for f in parsed {
            apps.extend(f.apps);
            policies.extend(f.policies);
            for (name, cidrs) in f.networks {
                if let Some(prev) = networks.get(&name) {
                    let line = prev.span().start().map_or(0, |m| m.line());
                    self.diag_at(
                        cidrs.span(),
                        format!("network zone `{name}` is defined twice (first on line {line})"),
                    );
                } else {
                    networks.insert(name, cidrs);
                }
            }
            self.single(&mut default_outcome, f.default_outcome, "default_outcome");
            self.single(&mut sessions, f.sessions, "sessions");
            self.single(&mut gateway, f.gateway, "gateway");
            self.single(&mut server, f.server, "server");
            self.single(&mut factors, f.factors, "factors");
            self.single(&mut assurance, f.assurance, "assurance");
            self.single(&mut regulation, f.regulation, "regulation");
            self.single(&mut store, f.store, "store");
            self.single(&mut secrets, f.secrets, "secrets");
            self.single(&mut signals, f.signals, "signals");
            self.single(&mut devices, f.devices, "devices");
            self.single(&mut log, f.log, "log");
            self.single(&mut admin, f.admin, "admin");
            self.single(&mut audit, f.audit, "audit");
            self.single(&mut portal, f.portal, "portal");
            self.single(&mut enrolment, f.enrolment, "enrolment");
            self.single(&mut oidc, f.oidc, "oidc");
            users.extend(f.users);
            identity_providers.extend(f.identity_providers);
            self.single(&mut ldap, f.ldap, "ldap");
        }
        for (at, problem) in ldap.iter().flat_map(identity::ldap_problems) {
            self.diag_at(&at, problem);
        }
        for (at, problem) in identity::problems(&identity_providers) {
            self.diag_at(&at, problem);
        }
        if let Some(d) = server.as_ref().and_then(|s| s.default_provider.as_ref()) {
            if !identity_providers
                .iter()
                .any(|p| p.id.as_str() == d.as_str())
            {
                self.diag_at(
                    d.span(),
                    format!("server.default_provider `{}` is not an identity provider's id (identity_providers[].id)", d.as_str()),
                );
            }
        }
        let admin_app = admin
            .as_ref()
            .map_or_else(|| AdminConfig::default().app, |a| a.app.clone());
        let own_apps = [stepgate_policy::OwnApp {
            id: &admin_app,
            key: "admin.app",
            sensitivity: stepgate_policy::spec::Sensitivity::High,
        }];
        let compiled = stepgate_policy::compile(PolicyInput {
            apps: &apps,
            networks: &networks,
            policies: &policies,
            default_outcome: default_outcome.as_deref(),
            own_apps: &own_apps,
        });
        let policy_set = match compiled {
            Ok(set) => Some(set),
            Err(errors) => {
                for e in errors {
                    self.diag_at(&e.span, e.message);
                }
                None
            }
        };
        if let Some(f) = &factors {
            if let Err(e) = f.validate() {
                self.diag_at(f.span(), format!("factors: {e}"));
            }
        }
        if let Some(a) = &assurance {
            if let Err(e) = a.validate() {
                self.diag_at(a.span(), format!("assurance: {e}"));
            }
        }
        if let Some(r) = &regulation {
            if let Err(e) = r.validate() {
                self.diag_at(r.span(), format!("regulation: {e}"));
            }
        }
        if let Some(st) = &store {
            if let Err(e) = st.validate() {
                self.diag_at(st.span(), format!("store: {e}"));
            }
        }
        for app in &apps {
            if let Some(u) = &app.upstream {
                if let Err(e) = parse_upstream(u.as_str()) {
                    self.diag_at(
                        u.span(),
                        format!(
                            "app `{}`: bad upstream `{}`: {e}",
                            app.id.as_str(),
                            u.as_str()
                        ),
                    );
                }
            }
        }
        if let Some(g) = &gateway {
            let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
            for problem in g.validate(&ids) {
                self.diag_at(g.span(), problem);
            }
        }
        if let Some(s) = &signals {
            for problem in signals_problems(s) {
                self.diag_at(s.span(), format!("signals: {problem}"));
            }
        }
        if let Some(a) = &admin {
            for problem in a.problems() {
                self.diag_at(a.span(), problem);
            }
        }
        if let Some(l) = &log {
            if let Err(e) = logging::check_level(&l.level) {
                let at = self
                    .log_level_span(l.span().start().map(|m| m.source()))
                    .unwrap_or(*l.span());
                self.diag_at(&at, format!("log.level {e}"));
            }
            for problem in l.decisions.problems() {
                self.diag_at(l.span(), problem);
            }
            for problem in l.otlp.iter().flat_map(logging::OtlpConfig::problems) {
                self.diag_at(l.span(), problem);
            }
        }
        if let Some(a) = &audit {
            for problem in a.problems() {
                self.diag_at(a.span(), problem);
            }
        }
        if let Some(p) = &portal {
            for problem in p.problems() {
                let at = p.help.as_ref().map_or(*p.span(), |h| *h.span());
                self.diag_at(&at, problem);
            }
        }
        if let Some(e) = &enrolment {
            let zones: Vec<&str> = networks.keys().map(String::as_str).collect();
            for (span, problem) in e.problems(&zones) {
                let at = if span.start().is_some() {
                    span
                } else {
                    *e.span()
                };
                self.diag_at(&at, problem);
            }
        }
        if let Some(o) = &oidc {
            let ids: Vec<&str> = apps.iter().map(|a| a.id.as_str()).collect();
            for (span, problem) in o.problems(&ids) {
                // Problems in plain (unspanned) values are placed at the section.
                let at = if span.start().is_some() {
                    span
                } else {
                    *o.span()
                };
                self.diag_at(&at, problem);
            }
        }
        let mut compliance_policies = Vec::new();
        if let Some(d) = &devices {
            for problem in devices_problems(d) {
                self.diag_at(d.span(), format!("devices: {problem}"));
            }
            match stepgate_signals::compliance::compile_policies(&d.compliance.policies) {
                Ok(p) => compliance_policies = p,
                Err(e) => {
                    use stepgate_signals::compliance::ComplianceConfigError as E;
                    let at = match (&e, d.span().start()) {
                        (E::Expression { policy, rule, .. }, Some(m)) => {
                            self.compliance_rule_span(m.source(), policy, rule)
                        }
                        _ => None,
                    };
                    self.diag_at(&at.unwrap_or(*d.span()), format!("devices.compliance: {e}"));
                }
            }
        }
        let mut usernames = HashSet::new();
        for u in &users {
            if !usernames.insert(u.username.clone()) {
                self.diag_at(
                    &Span::new_blank(),
                    format!("user `{}` is declared twice under `users`", u.username),
                );
            }
        }
        let server = server.map(|s| (*s).clone()).unwrap_or_default();
        let listen = match server.listen.trim().parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.diag_at(
                    server.listen.span(),
                    format!(
                        "bad listen address `{}`: expected IP:PORT like 127.0.0.1:8080 or [::]:443",
                        server.listen.as_str()
                    ),
                );
                None
            }
        };
        if let Some(m) = &server.metrics_listen {
            match m.trim().parse::<std::net::SocketAddr>() {
                Ok(a) if Some(a) == listen => self.diag_at(
                    m.span(),
                    format!(
                        "server.metrics_listen `{}` is the same address as server.listen: give metrics a port of their own",
                        m.as_str()
                    ),
                ),
                Ok(_) => {}
                Err(_) => self.diag_at(
                    m.span(),
                    format!(
                        "bad server.metrics_listen address `{}`: expected IP:PORT like 127.0.0.1:9464",
                        m.as_str()
                    ),
                ),
            }
        }
        let ht = server.header_timeout.as_secs();
        if !(1..=3600).contains(&ht) {
            self.diag_at(
                &Span::new_blank(),
                format!("server.header_timeout is {ht}s: expected between 1s and 1h (e.g. 30s)"),
            );
        }
        if let Some(w) = &server.workers {
            if **w == 0 || **w > 1024 {
                self.diag_at(
                    w.span(),
                    format!(
                        "bad workers `{}`: expected the number of serving threads, 1 to 1024 (leave it out for one per CPU core)",
                        **w
                    ),
                );
            }
        }
        let mut trusted_proxies = Vec::new();
        for p in &server.trusted_proxies {
            match p
                .trim()
                .parse::<ipnet::IpNet>()
                .or_else(|_| p.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(n) => trusted_proxies.push(n),
                Err(_) => self.diag_at(
                    p.span(),
                    format!(
                        "bad CIDR `{}` in trusted_proxies: expected e.g. 10.0.0.0/8 or 127.0.0.1",
                        p.as_str()
                    ),
                ),
            }
        }
        if let Some(u) = &server.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.trim_end_matches('/').contains(char::is_whitespace)
            {
                self.diag_at(
                    u.span(),
                    format!(
                        "bad public_url `{}`: expected http(s)://host[:port]",
                        u.as_str()
                    ),
                );
            }
        }
        if !server.portal_path.starts_with('/')
            || server.portal_path.len() < 2
            || server.portal_path.ends_with('/')
        {
            self.diag_at(
                &Span::new_blank(),
                format!(
                    "bad server.portal_path `{}`: expected a path like /_stepgate",
                    server.portal_path
                ),
            );
        }
        let base_dir = self
            .files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match (policy_set, listen) {
            (Some(set), Some(listen)) if self.diagnostics.is_empty() => Ok(Config {
                version: {
                    use sha2::Digest as _;
                    let d = std::mem::take(&mut self.digest).finalize();
                    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                    format!("sha256:{hex}")
                },
                factors: factors.map(|s| (*s).clone()).unwrap_or_default(),
                assurance: assurance.map(|s| (*s).clone()).unwrap_or_default(),
                regulation: regulation.map(|s| (*s).clone()).unwrap_or_default(),
                store: {
                    let mut st: StoreConfig = store.map(|s| (*s).clone()).unwrap_or_default();
                    // A relative `password_file` is relative to the configuration file.
                    if let Some(r) = &mut st.redis {
                        r.password_file = r.password_file.take().map(|p| base_dir.join(p));
                    }
                    st
                },
                secrets: secrets.map(|s| (*s).clone()).unwrap_or_default(),
                users,
                signals: signals.map(|s| (*s).clone()).unwrap_or_default(),
                devices: devices.map(|s| (*s).clone()).unwrap_or_default(),
                log: log.map(|s| (*s).clone()).unwrap_or_default(),
                admin: admin.map(|s| (*s).clone()).unwrap_or_default(),
                // Relative paths in it are relative to `base_dir` (read at start).
                audit: audit.map(|s| (*s).clone()).unwrap_or_default(),
                portal: portal.map(|s| (*s).clone()).unwrap_or_default(),
                enrolment: enrolment.map(|s| (*s).clone()).unwrap_or_default(),
                oidc: oidc.map(|s| (*s).clone()).unwrap_or_default(),
                ldap: ldap.map(|l| (*l).clone()),
                identity_providers: identity_providers
                    .into_iter()
                    .map(|p| (*p).clone())
                    .collect(),
                compliance_policies: Arc::new(compliance_policies),
                server,
                base_dir,
                listen,
                trusted_proxies,
                sources: deployment::SourceMap {
                    files: self.files.clone(),
                    nodes: std::mem::take(&mut self.nodes),
                },
                files: self.files,
                apps,
                networks,
                policies,
                sessions: sessions.map(|s| (*s).clone()).unwrap_or_default(),
                gateway: gateway.map(|s| (*s).clone()).unwrap_or_default(),
                policy_set: Arc::new(set),
            }),
            _ => {
                self.diagnostics
                    .sort_by_key(|d| (d.file.clone(), d.line, d.column));
                Err(ConfigError {
                    diagnostics: self.diagnostics,
                })
            }
        }
    }

    fn single<T>(&mut self, slot: &mut Option<Spanned<T>>, value: Option<Spanned<T>>, key: &str) {
        let Some(v) = value else { return };
        if let Some(prev) = slot {
            let line = prev.span().start().map_or(0, |m| m.line());
            let file = prev
                .span()
                .start()
                .and_then(|m| self.files.get(m.source()))
                .map_or_else(String::new, |f| f.display().to_string());
            self.diag_at(v.span(), format!("`{key}` is already defined in {file} on line {line}: expected it in one file only"));
        } else {
            *slot = Some(v);
        }
    }
}

/// Meaning errors in `signals:` (shape errors are reported by the parser).
fn signals_problems(s: &SignalsConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(g) = &s.geoip {
        if g.database.as_os_str().is_empty() {
            out.push("geoip.database is empty: expected the path of a MaxMind `.mmdb` file".into());
        }
        if g.reload_interval.0.is_zero() {
            out.push("geoip.reload_interval must be longer than 0s, e.g. `60s`".into());
        }
    }
    for (i, f) in s.ip_risk.feeds.iter().enumerate() {
        if f.default_score > 100 {
            out.push(format!(
                "ip_risk.feeds[{i}].default_score {} is above 100: expected 0–100",
                f.default_score
            ));
        }
    }
    if let Some(h) = &s.ip_risk.http {
        if !(h.url.starts_with("http://") || h.url.starts_with("https://"))
            || !h.url.contains("{ip}")
        {
            out.push(format!(
                "ip_risk.http.url `{}` must be an http(s) URL containing `{{ip}}`, e.g. https://risk.example/v1/ip/{{ip}}",
                h.url
            ));
        }
        if h.score_path.trim().is_empty() {
            out.push(
                "ip_risk.http.score_path is empty: expected a dotted path such as `data.score`"
                    .into(),
            );
        }
        if !(h.score_max.is_finite() && h.score_max > 0.0) {
            out.push(format!(
                "ip_risk.http.score_max {} must be a positive number",
                h.score_max
            ));
        }
        if h.assume_score > 100 {
            out.push(format!(
                "ip_risk.http.assume_score {} is above 100: expected 0–100",
                h.assume_score
            ));
        }
        if h.timeout.0.is_zero() {
            out.push("ip_risk.http.timeout must be longer than 0s, e.g. `2s`".into());
        }
        if h.api_key_env.is_some() && h.api_key_file.is_some() {
            out.push("ip_risk.http: set one of `api_key_env` and `api_key_file`, not both".into());
        }
        if h.api_key_header.is_some() != (h.api_key_env.is_some() || h.api_key_file.is_some()) {
            out.push(
                "ip_risk.http: set both `api_key_header` and the key (`api_key_env` or `api_key_file`), or neither".into(),
            );
        }
    }
    let r = &s.risk;
    if r.medium_at > r.high_at {
        out.push(format!(
            "risk.medium_at ({}) is above risk.high_at ({}): expected medium_at <= high_at",
            r.medium_at, r.high_at
        ));
    }
    if !(r.impossible_travel_kmpm.is_finite() && r.impossible_travel_kmpm > 0.0) {
        out.push(format!(
            "risk.impossible_travel_kmpm {} must be a positive number of km/min (15 = 900 km/h)",
            r.impossible_travel_kmpm
        ));
    }
    if !(r.min_travel_km.is_finite() && r.min_travel_km >= 0.0) {
        out.push(format!(
            "risk.min_travel_km {} must be 0 or more",
            r.min_travel_km
        ));
    }
    if r.risky_ip_score > 100 {
        out.push(format!(
            "risk.risky_ip_score {} is above 100: expected 0–100",
            r.risky_ip_score
        ));
    }
    if r.history_size == 0 {
        out.push("risk.history_size must be at least 1".into());
    }
    let mut names = HashSet::new();
    for a in &s.client_certificates.authorities {
        if !names.insert(a.name.clone()) {
            out.push(format!(
                "client_certificates.authorities: name `{}` is used twice",
                a.name
            ));
        }
        if a.ca_file.as_os_str().is_empty() {
            out.push(format!(
                "client_certificates authority `{}`: ca_file is empty",
                a.name
            ));
        }
        for u in a.crl_urls.iter().chain(a.ocsp_responder.iter()) {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                out.push(format!(
                    "client_certificates authority `{}`: `{u}` is not an http(s) URL",
                    a.name
                ));
            }
        }
    }
    if let Some(f) = &s.client_certificates.forwarded {
        if token_name_ok(&f.header).is_none() {
            out.push(format!(
                "client_certificates.forwarded.header `{}` is not a valid HTTP header name",
                f.header
            ));
        }
    }
    out
}

fn token_name_ok(h: &str) -> Option<()> {
    (!h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')))
    .then_some(())
}

/// Meaning errors in `devices:` (compliance rules are compiled separately).
fn devices_problems(d: &DevicesConfig) -> Vec<String> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for s in &d.sources {
        if s.name.trim().is_empty() {
            out.push("sources: a source has an empty name".into());
        } else if !names.insert(s.name.clone()) {
            out.push(format!("sources: name `{}` is used twice", s.name));
        }
        if s.scopes.is_empty() {
            out.push(format!(
                "source `{}` has no scopes: expected [\"devices:write\"] and/or [\"devices:read\"]",
                s.name
            ));
        }
    }
    if let Err(e) = stepgate_signals::device::DeviceApiAuth::new(&d.sources) {
        out.push(e.to_string());
    }
    let mut connectors = HashSet::new();
    for c in &d.connectors {
        if !connectors.insert(c.name.as_str()) || names.contains(&c.name) {
            out.push(format!(
                "connectors: name `{}` is used twice (connectors and sources share names: each is a device source)",
                c.name
            ));
        }
        out.extend(c.problems().into_iter().map(|p| format!("connectors: {p}")));
    }
    let mut issuers = HashSet::new();
    for t in &d.caep.transmitters {
        if t.key_file.is_none() && t.jwks_url.is_none() {
            out.push(format!(
                "caep transmitter `{}`: set `key_file` (PEM public key or JWKS file) or `jwks_url`",
                t.name
            ));
        }
        if t.issuer.trim().is_empty() || t.audience.trim().is_empty() {
            out.push(format!(
                "caep transmitter `{}`: `issuer` and `audience` must not be empty",
                t.name
            ));
        }
        if !issuers.insert(t.issuer.clone()) {
            out.push(format!("caep: issuer `{}` is configured twice", t.issuer));
        }
        if t.algorithms.is_empty() {
            out.push(format!(
                "caep transmitter `{}`: `algorithms` is empty: expected e.g. [ES256]",
                t.name
            ));
        }
        if t.max_age.0.is_zero() {
            out.push(format!(
                "caep transmitter `{}`: max_age must be longer than 0s",
                t.name
            ));
        }
    }
    if let Some(r) = &d.recheck {
        if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            out.push(format!("recheck.url `{}` is not an http(s) URL", r.url));
        }
        if r.wait.0 > std::time::Duration::from_secs(120) {
            out.push(format!(
                "recheck.wait {} is longer than 2m: the user's browser would time out; use e.g. `30s`",
                r.wait
            ));
        }
    }
    if d.cookie.name.trim().is_empty() || token_name_ok(&d.cookie.name).is_none() {
        out.push(format!(
            "cookie.name `{}` is not a valid cookie name (letters, digits, `-`, `_`)",
            d.cookie.name
        ));
    }
    if let Some(r) = &d.recheck {
        if r.bearer_token_env.is_some() && r.bearer_token_file.is_some() {
            out.push(
                "recheck: set one of `bearer_token_env` and `bearer_token_file`, not both".into(),
            );
        }
    }
    if d.cookie.key_env.trim().is_empty() {
        out.push("cookie.key_env is empty: expected the name of an environment variable".into());
    }
    out
}

/// The `*.yaml` / `*.yml` entries of `dir`, by name. Entries of any type are listed: the
/// loader refuses those that are not regular files (a `conf.yaml` FIFO or directory is a
/// mistake to report, not to skip).
fn yaml_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod signals_tests {
    use super::*;

    #[test]
    fn signals_and_devices_sections_load() {
        let cfg = load_str(
            "t.yaml",
            "signals:\n  geoip: { database: /x/City.mmdb }\n  risk: { medium_at: 20 }\ndevices:\n  sources:\n    - { name: hexnode, token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, scopes: [\"devices:write\"] }\n  compliance:\n    policies:\n      - { name: base, require_encryption: true, rules: [{ id: old, non_compliant_if: \"os_version < 15\" }] }\n",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.signals.risk.medium_at, 20);
        assert_eq!(cfg.devices.sources[0].name, "hexnode");
        assert_eq!(cfg.compliance_policies.len(), 1);
    }

    #[test]
    fn connectors_load_and_their_mistakes_are_named() {
        let cfg = load_str(
            "t.yaml",
            "devices:\n  connectors:\n    - name: hexnode\n      kind: hexnode\n      url: https://acme.hexnodemdm.com\n      secret: { env: HEXNODE_API_KEY }\n      interval: 5m\n",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = &cfg.devices.connectors[0];
        assert_eq!(c.interval.as_secs(), 300);
        assert_eq!(c.page_size, 100);
        // A secret written straight into the file is refused unless marked as such.
        let e = load_str(
            "t.yaml",
            "devices:\n  connectors:\n    - name: hexnode\n      kind: hexnode\n      url: https://acme.hexnodemdm.com\n      secret: abc123\n",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("t.yaml:"), "{e}");
        assert!(e.to_string().contains("secret"), "{e}");
        let e = load_str(
            "t.yaml",
            "devices:\n  connectors:\n    - name: intune\n      kind: intune\n      url: https://graph.microsoft.com\n      secret: { file: s.txt }\n      page_size: 0\n      owner_match: local_part\n",
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        for needle in ["token_url", "client_id", "page_size 0", "owner_domains"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(e.diagnostics.iter().all(|d| d.line.is_some()), "{text}");
    }

    #[test]
    fn bad_values_are_reported_with_positions() {
        let e = load_str(
            "t.yaml",
            "apps: []\nsignals:\n  risk: { medium_at: 90, high_at: 50 }\ndevices:\n  sources:\n    - { name: x, token_sha256: nothex }\n  compliance:\n    policies:\n      - { name: p, rules: [{ id: r, non_compliant_if: \"os_version <\" }] }\n",
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("t.yaml:3:") && text.contains("medium_at"),
            "{text}"
        );
        assert!(text.contains("token_sha256"), "{text}");
        assert!(text.contains("compliance policy `p`, rule `r`"), "{text}");
        assert!(e.diagnostics.iter().all(|d| d.line.is_some()), "{text}");
        let e = load_str(
            "t.yaml",
            "devices:\n  caep:\n    transmitters:\n      - { name: u, issuer: i, audience: a }\n",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("key_file"), "{e}");
        let e = load_str("t.yaml", "signals:\n  geoip: { databse: x }\n", None).unwrap_err();
        assert!(e.to_string().contains("t.yaml:2:"), "{e}");
        let e = load_str(
            "t.yaml",
            "apps:\n  - id: a\n    hosts: [a.test]\n    upstream: https://a.internal\n",
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("t.yaml:4:") && text.contains("app `a`: bad upstream"),
            "{text}"
        );
    }

    #[test]
    fn location_contains_not_contains_and_places() {
        let cfg = |l: &str| {
            let yaml = format!("apps: []\npolicies:\n  - name: p\n    priority: 1\n    conditions: [ {{ location: {l} }} ]\n    outcome: allow\n");
            load_str("t.yaml", &yaml, None)
        };
        let holds = |c: &Config, country: &str, region: &str, city: &str| {
            let mut ctx = stepgate_policy::RequestContext::default();
            ctx.network.country = Some(country.into());
            ctx.network.region = Some(region.into());
            ctx.network.city = Some(city.into());
            c.policy_set.decide(&ctx).policy == Some("p")
        };
        let c = cfg("{ city_contains: [york] }").unwrap();
        assert!(holds(&c, "US", "NY", "New York"));
        assert!(!holds(&c, "GB", "ENG", "London"));
        let c = cfg("{ region_not_contains: [Île, IDF] }").unwrap();
        assert!(!holds(&c, "FR", "IDF", "Paris"));
        assert!(holds(&c, "FR", "ARA", "Lyon"));
        let c = cfg("{ places: [\"US/NY\", \"FR/IDF/Paris\"] }").unwrap();
        assert!(holds(&c, "us", "ny", "Buffalo"));
        assert!(holds(&c, "FR", "IDF", "paris"));
        assert!(!holds(&c, "FR", "IDF", "Versailles"));
        assert!(!holds(&c, "US", "CA", "New York"));
        let e = cfg("{ places: [\"France/IDF\"] }").unwrap_err().to_string();
        assert!(
            e.contains("t.yaml:5:") && e.contains("bad place `France/IDF`"),
            "{e}"
        );
        let e = cfg("{ city_contains: [\"\"] }").unwrap_err().to_string();
        assert!(e.contains("would match every name"), "{e}");
    }

    #[test]
    fn velocity_above_below_and_between_decide_as_written() {
        let cfg = |v: &str| {
            let yaml = format!("apps: []\npolicies:\n  - name: p\n    priority: 1\n    conditions: [ {{ velocity: {v} }} ]\n    outcome: allow\n");
            load_str("t.yaml", &yaml, None).unwrap()
        };
        let holds = |c: &Config, kmpm: Option<f64>| {
            let mut ctx = stepgate_policy::RequestContext::default();
            ctx.risk.velocity_kmpm = kmpm;
            c.policy_set.decide(&ctx).policy == Some("p")
        };
        let between = cfg("{ between_kmpm: [1, 15] }");
        for (v, want) in [
            (Some(0.5), false),
            (Some(1.0), true),
            (Some(15.0), true),
            (Some(15.5), false),
            (None, false),
        ] {
            assert_eq!(holds(&between, v), want, "between {v:?}");
        }
        let below = cfg("{ below_kmpm: 5 }");
        for (v, want) in [(Some(0.0), true), (Some(5.0), false), (None, false)] {
            assert_eq!(holds(&below, v), want, "below {v:?}");
        }
        let above = cfg("{ above_kmpm: 15 }");
        for (v, want) in [(Some(15.0), false), (Some(16.0), true)] {
            assert_eq!(holds(&above, v), want, "above {v:?}");
        }
    }

    #[test]
    fn mfa_frequency_is_a_sign_in_policys_and_at_least_a_minute() {
        let policy = |targets: &str, every: &str| {
            format!("apps: []\npolicies:\n  - name: p\n    priority: 1\n{targets}    outcome:\n      step_up:\n        min_aal: 2\n        mfa_frequency: {every}\n")
        };
        let sign_in = "    targets: { sign_in: true }\n";
        let cfg = load_str("t.yaml", &policy(sign_in, "30m"), None).unwrap();
        assert!(cfg.policy_set.decide(&Default::default()).policy.is_none());
        let e = load_str("t.yaml", &policy("", "30m"), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("t.yaml:8:") && text.contains("mfa_frequency applies to sign-ins only"),
            "{text}"
        );
        let e = load_str("t.yaml", &policy(sign_in, "30s"), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("t.yaml:9:") && text.contains("at least 1m"),
            "{text}"
        );
        let e = load_str("t.yaml", &policy(sign_in, "soon"), None).unwrap_err();
        assert!(e.to_string().contains("t.yaml:9:"), "{e}");
    }
}

#[cfg(test)]
mod policy_set_tests {
    use super::*;

    const FILE: &str = "apps:\n  - { id: wiki, hosts: [wiki.test] }\ndefault_outcome: allow\npolicies:\n  - { name: from-file, priority: 1, targets: { apps: [wiki] }, outcome: { deny: {} } }\n";

    fn file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stepgate.yaml");
        std::fs::write(&path, FILE).unwrap();
        (dir, path)
    }

    #[test]
    fn a_policy_set_replaces_the_files_policies_and_changes_the_version() {
        let (_dir, path) = file();
        let plain = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let set = "policies:\n  - { name: stored, priority: 2, targets: { apps: [wiki] }, outcome: allow }\n";
        let cfg = load_with_policies(&path, "v1.yaml", set).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = cfg.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["stored"], "the file's `from-file` is gone");
        assert_ne!(cfg.version, plain.version);
    }

    #[test]
    fn a_policy_set_holds_policies_only_and_its_errors_are_its_own() {
        let (_dir, path) = file();
        let e = load_with_policies(&path, "v2.yaml", "policies: []\napps: []\n").unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!((d.line, d.column), (Some(2), Some(1)), "{e}");
        assert!(
            d.message.contains("`apps` cannot be set in a policy set"),
            "{e}"
        );
        assert_eq!(d.file, PathBuf::from("v2.yaml"));
        let e = load_with_policies(&path, "v3.yaml", "default_outcome: deny\n").unwrap_err();
        assert!(
            e.diagnostics
                .iter()
                .any(|d| d.message.contains("one key, `policies:`")),
            "{e}"
        );
        let e = load_with_policies(
            &path,
            "v4.yaml",
            "policies:\n  - { name: x, priority: 1, targets: { apps: [nope] }, outcome: allow }\n",
        )
        .unwrap_err();
        assert!(
            e.diagnostics.iter().all(|d| d.file == Path::new("v4.yaml")),
            "{e}"
        );
    }
}
