//! Loads stepgate's configuration: one YAML file, optionally pulling in more files or whole
//! directories with `includes:`, checked completely before anything runs.
//!
//! Every problem — YAML syntax, an unknown key, a wrong type, a bad CIDR / regex / time
//! zone, an out-of-range number, a duplicate priority, a reference to an app or zone that
//! does not exist — comes back as a [`Diagnostic`] naming the file, line and column and
//! what was expected. Syntax and shape errors stop at the first one per file (the parser
//! cannot go on); meaning errors are all collected.
//!
//! Lists (`apps`, `policies`) from included files are concatenated, maps (`networks`) are
//! merged (a zone defined twice is an error), and single sections (`sessions`,
//! `default_outcome`, …) may appear in only one file.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::{LoaderOptions, Span, Spanned};
use serde::Deserialize;
use stepgate_policy::spec::{AppSpec, NetworksSpec, OutcomeSpec, PolicySpec};
use stepgate_policy::{PolicyInput, PolicySet};

pub mod sessions;

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
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Every file that contributed, the main one first.
    pub files: Vec<PathBuf>,
    /// `apps`.
    pub apps: Vec<AppSpec>,
    /// `networks`.
    pub networks: NetworksSpec,
    /// `policies`, as written.
    pub policies: Vec<PolicySpec>,
    /// `sessions`.
    pub sessions: SessionsConfig,
    /// The compiled policy set.
    pub policy_set: Arc<PolicySet>,
}

/// Loads and validates the configuration at `path` and everything it includes.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let mut loader = Loader::default();
    loader.load_file(path, None);
    loader.finish()
}

/// Loads a configuration from text (e.g. the demo built into the binary). `name` is used
/// in messages; `includes:` resolve against `base_dir` and are refused without one.
pub fn load_str(name: &str, text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
    let mut loader = Loader::default();
    loader.load_text(PathBuf::from(name), text.to_string(), base_dir.map(Path::to_path_buf));
    loader.finish()
}

#[derive(Default)]
struct Loader {
    files: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
    parsed: Vec<ConfigFile>,
    diagnostics: Vec<Diagnostic>,
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

    fn load_file(&mut self, path: &Path, from: Option<&Span>) {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if !self.seen.insert(canonical) {
            if let Some(span) = from {
                self.diag_at(span, format!("`{}` is included more than once (or includes itself)", path.display()));
            }
            return;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let base = path.parent().map(Path::to_path_buf);
                self.load_text(path.to_path_buf(), text, base);
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

    fn load_text(&mut self, file: PathBuf, text: String, base: Option<PathBuf>) {
        let source = self.files.len();
        self.files.push(file.clone());
        let opts = LoaderOptions::default().error_on_duplicate_keys(true);
        let parsed: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            match marked_yaml::from_yaml_with_options(source, &text, opts) {
                Ok(c) => c,
                Err(e) => {
                    self.yaml_error(&file, e);
                    return;
                }
            }
        };
        let includes = parsed.includes.clone();
        self.parsed.push(parsed);
        for inc in &includes {
            let Some(base) = &base else {
                self.diag_at(inc.span(), "`includes` cannot be used here (no base directory)");
                continue;
            };
            let target = base.join(inc.as_str());
            if target.is_dir() {
                match yaml_files_in(&target) {
                    Ok(files) => {
                        for f in files {
                            self.load_file(&f, Some(inc.span()));
                        }
                    }
                    Err(e) => self.diag_at(inc.span(), format!("cannot list `{}`: {e}", target.display())),
                }
            } else {
                self.load_file(&target, Some(inc.span()));
            }
        }
    }

    fn yaml_error(&mut self, file: &Path, e: marked_yaml::FromYamlError) {
        use marked_yaml::{FromYamlError, LoadError};
        let (marker, message) = match &e {
            FromYamlError::ParseYaml(le) => match le {
                LoadError::TopLevelMustBeMapping(m) => (Some(*m), "the top level must be a mapping of sections (apps:, policies:, …)".to_string()),
                LoadError::TopLevelMustBeSequence(m) => (Some(*m), "the top level must be a sequence".to_string()),
                LoadError::UnexpectedAnchor(m) => (Some(*m), "YAML anchors and aliases are not supported: write the value out".to_string()),
                LoadError::MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain scalars".to_string()),
                LoadError::UnexpectedTag(m) => (Some(*m), "YAML tags (`!foo`) are not supported".to_string()),
                LoadError::ScanError(m, se) => (Some(*m), format!("YAML syntax error: {}", se.info())),
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
                    Some(p) => inner.strip_prefix(&format!("{p}: ")).unwrap_or(&inner).to_string(),
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
            return Err(ConfigError { diagnostics: self.diagnostics });
        }
        let mut apps = Vec::new();
        let mut networks = NetworksSpec::new();
        let mut policies = Vec::new();
        let mut default_outcome: Option<Spanned<OutcomeSpec>> = None;
        let mut sessions: Option<Spanned<SessionsConfig>> = None;
        let parsed = std::mem::take(&mut self.parsed);
        for f in parsed {
            apps.extend(f.apps);
            policies.extend(f.policies);
            for (name, cidrs) in f.networks {
                if let Some(prev) = networks.get(&name) {
                    let line = prev.span().start().map_or(0, |m| m.line());
                    self.diag_at(cidrs.span(), format!("network zone `{name}` is defined twice (first on line {line})"));
                } else {
                    networks.insert(name, cidrs);
                }
            }
            self.single(&mut default_outcome, f.default_outcome, "default_outcome");
            self.single(&mut sessions, f.sessions, "sessions");
        }
        let compiled = stepgate_policy::compile(PolicyInput {
            apps: &apps,
            networks: &networks,
            policies: &policies,
            default_outcome: default_outcome.as_deref(),
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
        match policy_set {
            Some(set) if self.diagnostics.is_empty() => Ok(Config {
                files: self.files,
                apps,
                networks,
                policies,
                sessions: sessions.map(|s| (*s).clone()).unwrap_or_default(),
                policy_set: Arc::new(set),
            }),
            _ => {
                self.diagnostics.sort_by(|a, b| (a.file.clone(), a.line, a.column).cmp(&(b.file.clone(), b.line, b.column)));
                Err(ConfigError { diagnostics: self.diagnostics })
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

fn yaml_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}
