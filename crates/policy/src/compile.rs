//! Turns the admin's [`spec`](crate::spec) into a [`PolicySet`] ready for fast evaluation:
//! policies sorted by priority, a candidate list per app and for the sign-in, network zones
//! in an interval index, regexes compiled, strings owned once. Every problem is reported
//! with the span of the offending value; compilation collects all of them.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use chrono_tz::Tz;
use ipnet::IpNet;
use marked_yaml::{Span, Spanned};
use regex::Regex;

use crate::netindex::{NetworkIndex, ZoneId};
use crate::outcome::{DenyOutcome, Outcome, StepUpRequirement, KNOWN_FACTORS};
use crate::path::PathPattern;
use crate::spec::*;
use crate::{DeviceState, RiskLevel};

/// A problem in the configuration, at a position in a source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// Where (the span's source index names the file).
    pub span: Span,
    /// What is wrong and what was expected.
    pub message: String,
}

impl SpecError {
    fn new(span: &Span, message: impl Into<String>) -> Self {
        SpecError {
            span: *span,
            message: message.into(),
        }
    }
}

/// Everything the compiler reads.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// `apps`.
    pub apps: &'a [AppSpec],
    /// `networks`.
    pub networks: &'a NetworksSpec,
    /// `policies`.
    pub policies: &'a [PolicySpec],
    /// `default_outcome` (absent: deny, fail closed).
    pub default_outcome: Option<&'a OutcomeSpec>,
    /// The apps stepgate serves itself (the admin console and API: `admin.app`), which
    /// policies target by id like the ids under `apps`.
    pub own_apps: &'a [OwnApp<'a>],
}

/// An app stepgate serves itself (its admin console and API): no hosts and no routes of
/// its own, targeted by id, tags or conditions like any app. When no policy decides one of
/// its requests, the request is allowed: the surface's own checks (the admin group, a fresh
/// AAL3 for a change) stand in for `default_outcome`, and apply whatever the policies say.
#[derive(Clone, Copy, Debug)]
pub struct OwnApp<'a> {
    /// Its id (`admin.app`, default `stepgate-admin`).
    pub id: &'a str,
    /// The configuration key that names it, for messages (`admin.app`).
    pub key: &'a str,
    /// Its impact level (what `app_sensitivity` conditions read).
    pub sensitivity: Sensitivity,
}

/// HTTP methods known to route and request conditions, one bit each.
pub(crate) const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// The bit of a method (0 for one stepgate does not know, which no method list matches).
pub(crate) fn method_bit(m: &str) -> u16 {
    METHODS
        .iter()
        .position(|k| k.eq_ignore_ascii_case(m))
        .map_or(0, |i| 1 << i)
}

/// A string comparison, compiled. Negative operators are the exact negation of their
/// positive twin, including for missing values (`not_equals` holds when the value is absent).
#[derive(Clone, Debug)]
pub(crate) struct StrMatch {
    pub(crate) op: StringOp,
    pub(crate) test: StrTest,
    pub(crate) negated: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum StrTest {
    Equals(Box<str>),
    Contains(Box<str>),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Regex(Regex),
    In(Box<[Box<str>]>),
}

impl StrMatch {
    fn positive(&self, s: &str) -> bool {
        match &self.test {
            StrTest::Equals(v) => s == &**v,
            StrTest::Contains(v) => s.contains(&**v),
            StrTest::StartsWith(v) => s.starts_with(&**v),
            StrTest::EndsWith(v) => s.ends_with(&**v),
            StrTest::Regex(r) => r.is_match(s),
            StrTest::In(vs) => vs.iter().any(|v| **v == *s),
        }
    }

    /// Tests one optional value.
    pub(crate) fn test(&self, v: Option<&str>) -> bool {
        v.is_some_and(|s| self.positive(s)) != self.negated
    }

    /// Tests a multi-valued attribute: positive operators hold when any value matches.
    pub(crate) fn test_many<'a>(&self, mut vs: impl Iterator<Item = &'a str>) -> bool {
        vs.any(|s| self.positive(s)) != self.negated
    }

    pub(crate) fn describe(&self) -> String {
        let operand = match &self.test {
            StrTest::Equals(v)
            | StrTest::Contains(v)
            | StrTest::StartsWith(v)
            | StrTest::EndsWith(v) => {
                format!("`{v}`")
            }
            StrTest::Regex(r) => {
                let s = r.as_str();
                let inner = s
                    .strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s);
                format!("/{inner}/")
            }
            StrTest::In(vs) => format!("[{}]", vs.join(", ")),
        };
        format!("{} {operand}", self.op.as_str())
    }
}

/// A compiled condition.
#[derive(Clone, Debug)]
pub(crate) enum Cond {
    All(Box<[Cond]>),
    Any(Box<[Cond]>),
    Not(Box<Cond>),
    UserAttr {
        attr: Box<str>,
        m: StrMatch,
    },
    GroupsAny(Box<[Box<str>]>),
    GroupsAll(Box<[Box<str>]>),
    Network {
        zones: Box<[ZoneId]>,
        negated: bool,
        label: Box<str>,
    },
    Location {
        countries: Box<[Box<str>]>,
        regions: Box<[Box<str>]>,
        cities: Box<[Box<str>]>,
        /// `region_contains`, `region_not_contains`, `city_contains`, `city_not_contains`.
        contains: Box<LocationContains>,
        /// `places`: (country, region, city), each part `None` when not named.
        places: Box<[Place]>,
    },
    IpRisk {
        min: u8,
        max: u8,
    },
    UserAgent {
        field: UserAgentField,
        m: StrMatch,
    },
    DeviceHostname(StrMatch),
    DeviceDomain(StrMatch),
    DeviceMac(StrMatch),
    DeviceState {
        mask: u8,
    },
    DeviceCompliant(bool),
    DeviceFailing(Box<[Box<str>]>),
    Posture {
        attr: Box<str>,
        op: CompareOp,
        value: Box<str>,
    },
    Certificate {
        present: Option<bool>,
        valid: Option<bool>,
        issuer: Option<StrMatch>,
        not_revoked: Option<bool>,
    },
    Time {
        tz: Tz,
        hours: Option<(u8, u8)>,
        weekdays: u8,
    },
    /// Holds when the velocity is known and `low < v` (`low_inclusive`: `<=`) and `v < high`
    /// (`high_inclusive`: `<=`); an absent bound does not limit.
    Velocity {
        low: Option<f64>,
        high: Option<f64>,
        inclusive: bool,
    },
    Risk {
        levels: u8,
        reasons: Box<[Box<str>]>,
    },
    Sensitivity {
        mask: u8,
    },
    Request {
        methods: u16,
        path: Option<PathPattern>,
    },
}

/// A route of an app, compiled.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRoute {
    pub(crate) name: Option<Box<str>>,
    pub(crate) methods: u16,
    pub(crate) path: PathPattern,
    pub(crate) tags: Box<[Box<str>]>,
}

/// An app, compiled, with the policies that may apply to it.
#[derive(Clone, Debug)]
pub(crate) struct AppEntry {
    pub(crate) id: Box<str>,
    pub(crate) sensitivity: Sensitivity,
    pub(crate) tags: Box<[Box<str>]>,
    pub(crate) routes: Box<[CompiledRoute]>,
    /// Path patterns match this app's requests ignoring ASCII case.
    pub(crate) ignore_case: bool,
    /// Enabled policies targeting this app, by priority.
    pub(crate) candidates: Box<[u32]>,
    /// The outcome when no policy decides (`None`: the set's default outcome); an own app's
    /// is `allow` ([`OwnApp`]).
    pub(crate) default: Option<Outcome>,
}

#[derive(Clone, Debug)]
pub(crate) struct RouteSelector {
    pub(crate) tags: Box<[Box<str>]>,
    pub(crate) methods: u16,
    pub(crate) path: Option<PathPattern>,
}

#[derive(Clone, Debug)]
pub(crate) struct Targets {
    pub(crate) sign_in: bool,
    pub(crate) access: bool,
    pub(crate) apps: Box<[u32]>,
    pub(crate) app_tags: Box<[Box<str>]>,
    pub(crate) routes: Box<[RouteSelector]>,
}

impl Targets {
    /// Whether the policy may apply to access requests for this app (`None`: an app id
    /// that is not configured). Shared by the index builder and the tracer.
    pub(crate) fn applies_to_app(&self, app: Option<(u32, &AppEntry)>) -> bool {
        if !self.access {
            return false;
        }
        if self.apps.is_empty() && self.app_tags.is_empty() {
            return true;
        }
        app.is_some_and(|(i, a)| {
            self.apps.contains(&i) || self.app_tags.iter().any(|t| a.tags.contains(t))
        })
    }
}

/// A compiled policy.
#[derive(Clone, Debug)]
pub(crate) struct CompiledPolicy {
    pub(crate) name: Box<str>,
    pub(crate) description: Option<Box<str>>,
    pub(crate) priority: u32,
    pub(crate) enabled: bool,
    pub(crate) report_only: bool,
    pub(crate) targets: Targets,
    pub(crate) conditions: Cond,
    pub(crate) outcome: Outcome,
}

/// Substring tests of a `location` condition (each list OR'ed with the others).
#[derive(Clone, Debug, Default)]
pub(crate) struct LocationContains {
    pub(crate) region: Box<[Box<str>]>,
    pub(crate) region_not: Box<[Box<str>]>,
    pub(crate) city: Box<[Box<str>]>,
    pub(crate) city_not: Box<[Box<str>]>,
}

/// One `places` entry: country, and optionally region and city.
pub(crate) type Place = (Box<str>, Option<Box<str>>, Option<Box<str>>);

/// App ids and their index in [`PolicySet::apps`]. Shown sorted, so that two sets compiled
/// from the same input print the same.
#[derive(Clone, Default)]
pub(crate) struct AppIds(pub(crate) HashMap<Box<str>, u32>);

impl std::fmt::Debug for AppIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sorted: std::collections::BTreeMap<_, _> = self.0.iter().collect();
        sorted.fmt(f)
    }
}

/// A compiled, immutable policy set: cheap to share between threads, swapped whole on reload.
#[derive(Debug)]
pub struct PolicySet {
    pub(crate) policies: Box<[CompiledPolicy]>,
    pub(crate) apps: Box<[AppEntry]>,
    pub(crate) app_ids: AppIds,
    pub(crate) sign_in: Box<[u32]>,
    /// Candidates for an app id that is not configured.
    pub(crate) unknown_app: Box<[u32]>,
    pub(crate) networks: NetworkIndex,
    pub(crate) zone_names: Box<[Box<str>]>,
    pub(crate) default_outcome: Outcome,
    pub(crate) reads: SignalsRead,
    /// The longest `mfa_frequency` of any step-up outcome.
    pub(crate) mfa_memory: Option<crate::HumanDuration>,
}

/// What of the context some policy's conditions read, beyond who, where and what for: a
/// caller may leave out a signal no condition reads (parsing the user agent, fetching and
/// scoring the sign-in history), since no decision can depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalsRead {
    /// A `risk` or `velocity` condition (the behavioural risk of the sign-in history).
    pub risk: bool,
    /// A `user_agent` condition.
    pub user_agent: bool,
}

impl SignalsRead {
    fn of(c: &Cond, r: &mut SignalsRead) {
        match c {
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| Self::of(c, r)),
            Cond::Not(c) => Self::of(c, r),
            Cond::Risk { .. } | Cond::Velocity { .. } => r.risk = true,
            Cond::UserAgent { .. } => r.user_agent = true,
            _ => {}
        }
    }
}

/// Whether `c` reads the device: its state, compliance, posture, names or certificate.
fn reads_device(c: &Cond) -> bool {
    match c {
        Cond::All(cs) | Cond::Any(cs) => cs.iter().any(reads_device),
        Cond::Not(c) => reads_device(c),
        Cond::DeviceHostname(_)
        | Cond::DeviceDomain(_)
        | Cond::DeviceMac(_)
        | Cond::DeviceState { .. }
        | Cond::DeviceCompliant(_)
        | Cond::DeviceFailing(_)
        | Cond::Posture { .. }
        | Cond::Certificate { .. } => true,
        _ => false,
    }
}

impl PolicySet {
    /// What of the context the policies read (every policy counted: enabled or not, report
    /// only or not).
    pub fn reads(&self) -> SignalsRead {
        self.reads
    }

    /// Whether the policy called `name` reads the device (state, compliance, posture,
    /// names, client certificate): a refusal by it can end when the device is fixed, so a
    /// blocked page offers "Re-check my device" only then.
    pub fn reads_device(&self, name: &str) -> bool {
        self.policies
            .iter()
            .find(|p| &*p.name == name)
            .is_some_and(|p| reads_device(&p.conditions))
    }

    /// The longest `mfa_frequency` any policy allows (all modes): how long a sign-in's MFA
    /// is worth remembering per device; `None` when no policy remembers MFA.
    pub fn mfa_memory(&self) -> Option<crate::HumanDuration> {
        self.mfa_memory
    }

    /// Number of policies (all modes).
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether there are no policies.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The outcome when no policy matches.
    pub fn default_outcome(&self) -> &Outcome {
        &self.default_outcome
    }

    /// Names of the policies, by priority.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| &*p.name)
    }
}

struct Compiler<'a> {
    errors: Vec<SpecError>,
    zone_ids: HashMap<&'a str, ZoneId>,
    zone_names: Vec<Box<str>>,
    zone_nets: Vec<(ZoneId, IpNet)>,
    app_index: HashMap<&'a str, u32>,
    /// `all` / `any` / `not` levels open around the condition being compiled.
    depth: usize,
}

/// Compiles the policy part of a configuration. On error, returns every problem found.
pub fn compile(input: PolicyInput<'_>) -> Result<PolicySet, Vec<SpecError>> {
    let mut c = Compiler {
        errors: Vec::new(),
        zone_ids: HashMap::new(),
        zone_names: Vec::new(),
        zone_nets: Vec::new(),
        app_index: HashMap::new(),
        depth: 0,
    };

    // Named zones first, so conditions can refer to them.
    for (name, cidrs) in input.networks {
        let id = c.new_zone(name.clone().into());
        c.zone_ids.insert(name.as_str(), id);
        if cidrs.is_empty() {
            c.errors.push(SpecError::new(
                cidrs.span(),
                format!(
                    "network zone `{name}` lists no CIDRs: expected at least one, like 10.0.0.0/8"
                ),
            ));
        }
        for cidr in cidrs.iter() {
            if let Some(net) = c.cidr(cidr) {
                c.zone_nets.push((id, net));
            }
        }
    }

    let mut apps = c.apps(input.apps);
    c.own_apps(input.own_apps, input.apps, &mut apps);
    let mut policies: Vec<CompiledPolicy> = Vec::with_capacity(input.policies.len());
    let mut priorities: HashMap<u32, &Spanned<String>> = HashMap::new();
    let mut names: HashSet<&str> = HashSet::new();
    for p in input.policies {
        if let Some(first) = priorities.get(&*p.priority) {
            c.errors.push(SpecError::new(
                p.priority.span(),
                format!(
                    "duplicate priority {} (policy `{}` has it too): expected each policy to have its own priority",
                    *p.priority, first.as_str()
                ),
            ));
        } else {
            priorities.insert(*p.priority, &p.name);
        }
        if !names.insert(p.name.as_str()) {
            c.errors.push(SpecError::new(
                p.name.span(),
                format!("duplicate policy name `{}`: expected unique names", *p.name),
            ));
        }
        if let Some(compiled) = c.policy(p) {
            policies.push(compiled);
        }
    }
    let default_outcome = match input.default_outcome {
        // The default applies to app requests as well.
        Some(o) => c
            .outcome(o, true)
            .unwrap_or(Outcome::Deny(DenyOutcome::default())),
        None => Outcome::Deny(DenyOutcome::default()),
    };
    // A default deny says why, whether it was written out (`default_outcome: deny`) or
    // left to fail closed, unless it names its own message.
    let default_outcome = match default_outcome {
        Outcome::Deny(DenyOutcome {
            message: None,
            remediation,
        }) => Outcome::Deny(DenyOutcome {
            message: Some("No policy allows this request.".into()),
            remediation,
        }),
        other => other,
    };
    if c.zone_names.len() > usize::from(ZoneId::MAX) {
        c.errors.push(SpecError::new(
            &Span::new_blank(),
            format!(
                "too many network zones and inline CIDR lists ({}): at most {}",
                c.zone_names.len(),
                ZoneId::MAX
            ),
        ));
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }

    policies.sort_by_key(|p| p.priority);
    let enabled = |f: &dyn Fn(&CompiledPolicy) -> bool| -> Box<[u32]> {
        policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.enabled && f(p))
            .map(|(i, _)| i as u32)
            .collect()
    };
    let sign_in = enabled(&|p| p.targets.sign_in);
    let unknown_app = enabled(&|p| p.targets.applies_to_app(None));
    let candidates: Vec<Box<[u32]>> = apps
        .iter()
        .enumerate()
        .map(|(i, a)| enabled(&|p| p.targets.applies_to_app(Some((i as u32, a)))))
        .collect();
    for (a, c) in apps.iter_mut().zip(candidates) {
        a.candidates = c;
    }
    let app_ids = AppIds(
        apps.iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i as u32))
            .collect(),
    );
    let mut reads = SignalsRead::default();
    let mut mfa_memory = None;
    for p in &policies {
        SignalsRead::of(&p.conditions, &mut reads);
        if let Outcome::StepUp(q) = &p.outcome {
            mfa_memory = mfa_memory.max(q.mfa_frequency);
        }
    }
    Ok(PolicySet {
        reads,
        mfa_memory,
        networks: NetworkIndex::build(&c.zone_nets),
        zone_names: c.zone_names.into(),
        policies: policies.into(),
        apps: apps.into(),
        app_ids,
        sign_in,
        unknown_app,
        default_outcome,
    })
}

impl<'a> Compiler<'a> {
    fn err(&mut self, span: &Span, msg: impl Into<String>) {
        self.errors.push(SpecError::new(span, msg));
    }

    fn new_zone(&mut self, name: Box<str>) -> ZoneId {
        let id = self.zone_names.len().min(usize::from(ZoneId::MAX)) as ZoneId;
        self.zone_names.push(name);
        id
    }

    fn cidr(&mut self, s: &Spanned<String>) -> Option<IpNet> {
        let t = s.trim();
        if let Ok(n) = t.parse::<IpNet>() {
            if n.trunc() != n {
                self.err(
                    s.span(),
                    format!(
                        "CIDR `{t}` has host bits set: expected the network address, `{}`",
                        n.trunc()
                    ),
                );
                return None;
            }
            return Some(n);
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.err(
            s.span(),
            format!(
                "bad CIDR `{t}`: expected an IPv4 or IPv6 network like 10.0.0.0/8 or 2001:db8::/32"
            ),
        );
        None
    }

    fn apps(&mut self, specs: &'a [AppSpec]) -> Vec<AppEntry> {
        let mut out = Vec::with_capacity(specs.len());
        for a in specs {
            let id = a.id.as_str();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                self.err(
                    a.id.span(),
                    format!("bad app id `{id}`: expected letters, digits, `-` and `_` only"),
                );
            }
            if self.app_index.insert(id, out.len() as u32).is_some() {
                self.err(
                    a.id.span(),
                    format!("duplicate app id `{id}`: expected unique ids"),
                );
            }
            let mut routes = Vec::with_capacity(a.routes.len());
            for r in &a.routes {
                let methods = self.methods(&r.methods);
                match PathPattern::parse(&r.path) {
                    Ok(path) => routes.push(CompiledRoute {
                        name: r.name.as_deref().map(Into::into),
                        methods,
                        path,
                        tags: boxed(&r.tags),
                    }),
                    Err(e) => self.err(r.path.span(), e),
                }
            }
            routes.sort_by(|x, y| {
                x.path
                    .specificity_cmp(&y.path)
                    // Method-specific routes before catch-all ones on the same path.
                    .then((x.methods == 0).cmp(&(y.methods == 0)))
            });
            out.push(AppEntry {
                id: id.into(),
                sensitivity: a.sensitivity,
                tags: boxed(&a.tags),
                routes: routes.into(),
                ignore_case: a.case_insensitive_paths,
                candidates: Box::new([]),
                default: None,
            });
        }
        out
    }

    /// The apps stepgate serves itself, after the configured ones; an id taken by a
    /// configured app is refused there.
    fn own_apps(&mut self, own: &'a [OwnApp<'a>], specs: &[AppSpec], out: &mut Vec<AppEntry>) {
        for o in own {
            if let Some(a) = specs.iter().find(|a| a.id.as_str() == o.id) {
                self.err(
                    a.id.span(),
                    format!(
                        "app id `{}` is stepgate's own admin app ({} names it): give this app another id, or set {} to another",
                        o.id, o.key, o.key
                    ),
                );
                continue;
            }
            self.app_index.insert(o.id, out.len() as u32);
            out.push(AppEntry {
                id: o.id.into(),
                sensitivity: o.sensitivity,
                tags: Box::new([]),
                routes: Box::new([]),
                ignore_case: false,
                candidates: Box::new([]),
                default: Some(Outcome::Allow),
            });
        }
    }

    fn methods(&mut self, ms: &[Spanned<String>]) -> u16 {
        let mut mask = 0;
        for m in ms {
            match method_bit(m) {
                0 => self.err(
                    m.span(),
                    format!(
                        "unknown HTTP method `{}`: expected one of {}",
                        m.as_str(),
                        METHODS.join(", ")
                    ),
                ),
                b => mask |= b,
            }
        }
        mask
    }

    fn policy(&mut self, p: &'a PolicySpec) -> Option<CompiledPolicy> {
        let before = self.errors.len();
        let t = &p.targets;
        let mut apps = Vec::with_capacity(t.apps.len());
        for a in &t.apps {
            match self.app_index.get(a.as_str()) {
                Some(&i) => apps.push(i),
                None => {
                    let known: Vec<&str> = self.app_index.keys().copied().collect();
                    let mut known = known;
                    known.sort_unstable();
                    self.err(
                        a.span(),
                        format!(
                            "unknown app id `{}` in policy `{}` targets: expected one of the ids under `apps` or stepgate's own admin app ({})",
                            a.as_str(),
                            p.name.as_str(),
                            if known.is_empty() { "none defined".to_string() } else { known.join(", ") }
                        ),
                    );
                }
            }
        }
        let mut routes = Vec::with_capacity(t.routes.len());
        for r in &t.routes {
            let methods = self.methods(&r.methods);
            let path = r.path.as_ref().and_then(|s| self.path(s));
            if r.tags.is_empty() && r.methods.is_empty() && r.path.is_none() {
                self.err(
                    p.name.span(),
                    format!("policy `{}` has an empty route selector: expected `tags`, `methods` or `path`", p.name.as_str()),
                );
            }
            routes.push(RouteSelector {
                tags: boxed(&r.tags),
                methods,
                path,
            });
        }
        let access =
            !t.sign_in || !t.apps.is_empty() || !t.app_tags.is_empty() || !t.routes.is_empty();
        let conds: Vec<Cond> = p.conditions.iter().filter_map(|c| self.cond(c)).collect();
        let conditions = match p.match_mode {
            MatchMode::All => Cond::All(conds.into()),
            MatchMode::Any if p.conditions.is_empty() => Cond::All(Box::new([])),
            MatchMode::Any => Cond::Any(conds.into()),
        };
        let outcome = self.outcome(&p.outcome, access);
        if self.errors.len() != before {
            return None;
        }
        Some(CompiledPolicy {
            name: p.name.as_str().into(),
            description: p.description.as_deref().map(Into::into),
            priority: *p.priority,
            enabled: p.enabled,
            report_only: p.report_only,
            targets: Targets {
                sign_in: t.sign_in,
                access,
                apps: apps.into(),
                app_tags: boxed(&t.app_tags),
                routes: routes.into(),
            },
            conditions,
            outcome: outcome?,
        })
    }

    fn path(&mut self, s: &Spanned<String>) -> Option<PathPattern> {
        match PathPattern::parse(s) {
            Ok(p) => Some(p),
            Err(e) => {
                self.err(s.span(), e);
                None
            }
        }
    }

    /// `velocity`: exactly one of `above_kmpm`, `below_kmpm`, `between_kmpm: [low, high]`,
    /// each speed 1–999 km/min.
    fn velocity(&mut self, v: &VelocitySpec, at: &Span) -> Option<Cond> {
        let mut ok = true;
        let mut in_range = |c: &mut Self, kmpm: f64, at: &Span| {
            if !(1.0..=999.0).contains(&kmpm) {
                c.err(at, format!("velocity {kmpm} km/min is out of range: expected 1 to 999 (an airliner does about 15)"));
                ok = false;
            }
        };
        let cond = match (&v.above_kmpm, &v.below_kmpm, &v.between_kmpm) {
            (Some(a), None, None) => {
                in_range(self, **a, a.span());
                Cond::Velocity {
                    low: Some(**a),
                    high: None,
                    inclusive: false,
                }
            }
            (None, Some(b), None) => {
                in_range(self, **b, b.span());
                Cond::Velocity {
                    low: None,
                    high: Some(**b),
                    inclusive: false,
                }
            }
            (None, None, Some(r)) => {
                let [low, high] = r.as_slice() else {
                    self.err(
                        r.span(),
                        "between_kmpm expects two speeds, [low, high], e.g. [1, 15]".to_string(),
                    );
                    return None;
                };
                in_range(self, *low, r.span());
                in_range(self, *high, r.span());
                if low > high {
                    self.err(r.span(), format!("between_kmpm [{low}, {high}]: the low speed is above the high one; expected [low, high]"));
                    return None;
                }
                Cond::Velocity {
                    low: Some(*low),
                    high: Some(*high),
                    inclusive: true,
                }
            }
            _ => {
                self.err(at, "velocity expects exactly one of above_kmpm, below_kmpm or between_kmpm: [low, high]".to_string());
                return None;
            }
        };
        ok.then_some(cond)
    }

    /// The outcome; `access`: the policy targets app requests (where a sign-in's
    /// `mfa_frequency` means nothing).
    fn outcome(&mut self, o: &OutcomeSpec, access: bool) -> Option<Outcome> {
        Some(match o {
            OutcomeSpec::Allow => Outcome::Allow,
            OutcomeSpec::Deny(d) => Outcome::Deny(DenyOutcome {
                message: d.message.clone(),
                remediation: d.remediation.clone(),
            }),
            OutcomeSpec::StepUp(s) => {
                let mut ok = true;
                if let Some(aal) = &s.min_aal {
                    if !(1..=3).contains(&**aal) {
                        self.err(
                            aal.span(),
                            format!("min_aal {} is out of range: expected 1, 2 or 3", **aal),
                        );
                        ok = false;
                    }
                }
                for f in &s.factors {
                    if !KNOWN_FACTORS.contains(&f.as_str()) {
                        self.err(
                            f.span(),
                            format!(
                                "unknown factor `{}`: expected one of {}",
                                f.as_str(),
                                KNOWN_FACTORS.join(", ")
                            ),
                        );
                        ok = false;
                    }
                }
                if let Some(f) = &s.mfa_frequency {
                    if access {
                        self.err(
                            f.span(),
                            "mfa_frequency applies to sign-ins only: target the policy with `sign_in: true` and no apps or routes, or use `max_age` for app requests".to_string(),
                        );
                        ok = false;
                    } else if f.as_secs() < 60 {
                        self.err(
                            f.span(),
                            "mfa_frequency must be at least 1m: MFA is remembered per device for minutes to days (e.g. `30m`, `12h`)".to_string(),
                        );
                        ok = false;
                    }
                }
                if !ok {
                    return None;
                }
                Outcome::StepUp(StepUpRequirement {
                    min_aal: s.min_aal.as_ref().map(|a| **a),
                    factors: s.factors.iter().map(|f| f.to_string()).collect(),
                    phishing_resistant: s.phishing_resistant,
                    hardware_bound: s.hardware_bound,
                    max_age: s.max_age,
                    mfa_frequency: s.mfa_frequency.as_ref().map(|f| **f),
                    message: s.message.clone(),
                })
            }
        })
    }

    fn str_match(
        &mut self,
        op: &Spanned<StringOp>,
        value: &Option<Spanned<String>>,
        values: &[String],
    ) -> Option<StrMatch> {
        let (negated, multi) = match **op {
            StringOp::NotEquals | StringOp::NotContains | StringOp::NotIn => {
                (true, matches!(**op, StringOp::NotIn))
            }
            StringOp::In => (false, true),
            _ => (false, false),
        };
        if multi {
            if values.is_empty() || value.is_some() {
                self.err(
                    op.span(),
                    format!(
                        "operator `{}` takes `values: [..]` (a non-empty list), not `value`",
                        op.as_str()
                    ),
                );
                return None;
            }
            return Some(StrMatch {
                op: **op,
                test: StrTest::In(boxed(values)),
                negated,
            });
        }
        let Some(v) = value else {
            self.err(
                op.span(),
                format!("operator `{}` needs `value`", op.as_str()),
            );
            return None;
        };
        if !values.is_empty() {
            self.err(
                op.span(),
                format!(
                    "operator `{}` takes `value`, not `values` (use `in` for a list)",
                    op.as_str()
                ),
            );
            return None;
        }
        let s: Box<str> = v.as_str().into();
        let test = match **op {
            StringOp::Equals | StringOp::NotEquals => StrTest::Equals(s),
            StringOp::Contains | StringOp::NotContains => StrTest::Contains(s),
            StringOp::StartsWith => StrTest::StartsWith(s),
            StringOp::EndsWith => StrTest::EndsWith(s),
            StringOp::Regex => match Regex::new(&format!("^(?:{s})$")) {
                Ok(r) => StrTest::Regex(r),
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or("").trim().to_string();
                    self.err(v.span(), format!("bad regex `{s}`: {last}; expected a Rust regex (matched against the whole value)"));
                    return None;
                }
            },
            StringOp::In | StringOp::NotIn => unreachable!("handled above"),
        };
        Some(StrMatch {
            op: **op,
            test,
            negated,
        })
    }

    fn cond(&mut self, c: &'a Spanned<ConditionSpec>) -> Option<Cond> {
        let nests = matches!(
            &**c,
            ConditionSpec::All(_) | ConditionSpec::Any(_) | ConditionSpec::Not(_)
        );
        if !nests {
            return self.leaf_or_nested(c);
        }
        // Compiling, evaluating and explaining recurse once per level: refuse a tree deeper
        // than the limit before descending into it.
        if self.depth >= MAX_CONDITION_DEPTH {
            self.err(
                c.span(),
                format!(
                    "conditions nest more than {MAX_CONDITION_DEPTH} levels deep (`all`, `any` and `not` inside each other): flatten them or split the policy into several"
                ),
            );
            return None;
        }
        self.depth += 1;
        let out = self.leaf_or_nested(c);
        self.depth -= 1;
        out
    }

    fn leaf_or_nested(&mut self, c: &'a Spanned<ConditionSpec>) -> Option<Cond> {
        let span = *c.span();
        let span = &span;
        Some(match &**c {
            ConditionSpec::All(cs) => Cond::All(self.conds(cs)?),
            ConditionSpec::Any(cs) => Cond::Any(self.conds(cs)?),
            ConditionSpec::Not(inner) => Cond::Not(Box::new(self.cond(inner)?)),
            ConditionSpec::UserAttribute(a) => Cond::UserAttr {
                attr: a.attribute.as_str().into(),
                m: self.str_match(&a.op, &a.value, &a.values)?,
            },
            ConditionSpec::Groups(g) => match (g.any.is_empty(), g.all.is_empty()) {
                (false, true) => Cond::GroupsAny(boxed(&g.any)),
                (true, false) => Cond::GroupsAll(boxed(&g.all)),
                (false, false) => Cond::All(Box::new([
                    Cond::GroupsAny(boxed(&g.any)),
                    Cond::GroupsAll(boxed(&g.all)),
                ])),
                (true, true) => {
                    self.err(span, "`groups` needs `any: [..]` or `all: [..]`");
                    return None;
                }
            },
            ConditionSpec::Network(n) => {
                let (list, negated) = match (n.in_.is_empty(), n.not_in.is_empty()) {
                    (false, true) => (&n.in_, false),
                    (true, false) => (&n.not_in, true),
                    (false, false) => {
                        self.err(
                            n.in_[0].span(),
                            "`network` takes either `in` or `not_in`, not both",
                        );
                        return None;
                    }
                    (true, true) => {
                        self.err(
                            span,
                            "`network` needs `in: [..]` or `not_in: [..]` with zone names or CIDRs",
                        );
                        return None;
                    }
                };
                let mut zones: Vec<ZoneId> = Vec::new();
                let mut inline: Vec<IpNet> = Vec::new();
                for entry in list {
                    let e = entry.trim();
                    let looks_like_net = e.contains('/')
                        || e.contains(':')
                        || e.starts_with(|ch: char| ch.is_ascii_digit());
                    if looks_like_net {
                        if let Some(net) = self.cidr(entry) {
                            inline.push(net);
                        }
                    } else if let Some(&z) = self.zone_ids.get(e) {
                        zones.push(z);
                    } else {
                        let mut known: Vec<&str> = self.zone_ids.keys().copied().collect();
                        known.sort_unstable();
                        self.err(
                            entry.span(),
                            format!(
                                "unknown network zone `{e}`: expected a zone under `networks` ({}) or a CIDR like 10.0.0.0/8",
                                if known.is_empty() { "none defined".to_string() } else { known.join(", ") }
                            ),
                        );
                    }
                }
                if !inline.is_empty() {
                    let label: Vec<String> = inline.iter().map(ToString::to_string).collect();
                    let z = self.new_zone(label.join(", ").into());
                    for net in inline {
                        self.zone_nets.push((z, net));
                    }
                    zones.push(z);
                }
                zones.sort_unstable();
                zones.dedup();
                Cond::Network {
                    zones: zones.into(),
                    negated,
                    label: list
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                        .into(),
                }
            }
            ConditionSpec::Location(l) => {
                let contains = LocationContains {
                    region: boxed(&l.region_contains),
                    region_not: boxed(&l.region_not_contains),
                    city: boxed(&l.city_contains),
                    city_not: boxed(&l.city_not_contains),
                };
                if l.countries.is_empty()
                    && l.regions.is_empty()
                    && l.cities.is_empty()
                    && l.places.is_empty()
                    && [
                        &contains.region,
                        &contains.region_not,
                        &contains.city,
                        &contains.city_not,
                    ]
                    .iter()
                    .all(|v| v.is_empty())
                {
                    self.err(
                        span,
                        "`location` needs at least one of `countries`, `regions`, `cities`, `places`, `region_contains`, `region_not_contains`, `city_contains`, `city_not_contains`",
                    );
                    return None;
                }
                if let Some(empty) = [
                    &contains.region,
                    &contains.region_not,
                    &contains.city,
                    &contains.city_not,
                ]
                .iter()
                .flat_map(|v| v.iter())
                .find(|w| w.trim().is_empty())
                {
                    self.err(span, format!("`location`: an empty name `{empty}` in a contains list would match every name; remove it"));
                    return None;
                }
                let mut places = Vec::with_capacity(l.places.len());
                for p in &l.places {
                    let parts: Vec<&str> = p.split('/').map(str::trim).collect();
                    let cc = parts[0];
                    let ok = parts.len() <= 3
                        && cc.len() == 2
                        && cc.chars().all(|ch| ch.is_ascii_alphabetic())
                        && parts.iter().all(|x| !x.is_empty());
                    if !ok {
                        self.err(p.span(), format!("bad place `{}`: expected COUNTRY, COUNTRY/REGION or COUNTRY/REGION/CITY, e.g. FR, US/NY or US/NY/New York", p.as_str()));
                        continue;
                    }
                    places.push((
                        cc.to_ascii_uppercase().into(),
                        parts.get(1).map(|r| (*r).into()),
                        parts.get(2).map(|c| (*c).into()),
                    ));
                }
                for cc in &l.countries {
                    if cc.len() != 2 || !cc.chars().all(|ch| ch.is_ascii_alphabetic()) {
                        self.err(cc.span(), format!("bad country `{}`: expected an ISO 3166-1 alpha-2 code like FR or US", cc.as_str()));
                    }
                }
                Cond::Location {
                    countries: l
                        .countries
                        .iter()
                        .map(|c| c.to_ascii_uppercase().into())
                        .collect(),
                    regions: boxed(&l.regions),
                    cities: boxed(&l.cities),
                    contains: Box::new(contains),
                    places: places.into(),
                }
            }
            ConditionSpec::IpRisk(r) => {
                let min = self.score(r.min.as_ref(), 0)?;
                let max = self.score(r.max.as_ref(), 100)?;
                if min > max {
                    if let Some(s) = &r.min {
                        self.err(s.span(), format!("ip_risk min {min} is above max {max}"));
                    }
                    return None;
                }
                Cond::IpRisk { min, max }
            }
            ConditionSpec::UserAgent(u) => Cond::UserAgent {
                field: u.field,
                m: self.str_match(&u.op, &u.value, &u.values)?,
            },
            ConditionSpec::DeviceHostname(m) => {
                Cond::DeviceHostname(self.str_match(&m.op, &m.value, &m.values)?)
            }
            ConditionSpec::DeviceDomain(m) => {
                Cond::DeviceDomain(self.str_match(&m.op, &m.value, &m.values)?)
            }
            ConditionSpec::DeviceMac(m) => {
                Cond::DeviceMac(self.str_match(&m.op, &m.value, &m.values)?)
            }
            ConditionSpec::DeviceState(d) => {
                let mut mask = 0u8;
                for s in &d.in_ {
                    mask |= 1 << (*s as u8);
                }
                if let Some(min) = d.at_least {
                    for s in DeviceState::ALL {
                        if s >= min {
                            mask |= 1 << (s as u8);
                        }
                    }
                }
                if mask == 0 {
                    self.err(span, "`device_state` needs `in: [..]` or `at_least: <state>` (unregistered, registered, managed, managed_edr)");
                    return None;
                }
                Cond::DeviceState { mask }
            }
            ConditionSpec::DeviceCompliance(d) => match (d.compliant, d.failing.is_empty()) {
                (Some(b), true) => Cond::DeviceCompliant(b),
                (None, false) => Cond::DeviceFailing(boxed(&d.failing)),
                (Some(b), false) => Cond::All(Box::new([
                    Cond::DeviceCompliant(b),
                    Cond::DeviceFailing(boxed(&d.failing)),
                ])),
                (None, true) => {
                    self.err(span, "`device_compliance` needs `compliant: true|false` or `failing: [check ids]`");
                    return None;
                }
            },
            ConditionSpec::DevicePosture(p) => {
                let ordered = !matches!(p.op, CompareOp::Eq | CompareOp::Ne);
                if ordered && !crate::version::looks_like_version(&p.value) {
                    self.err(
                        span,
                        format!(
                            "device_posture `{} {} {}`: `{}` needs a number or version like 15.0",
                            p.attribute,
                            p.op.symbol(),
                            p.value,
                            p.op.symbol()
                        ),
                    );
                    return None;
                }
                Cond::Posture {
                    attr: p.attribute.as_str().into(),
                    op: p.op,
                    value: p.value.as_str().into(),
                }
            }
            ConditionSpec::Certificate(cs) => {
                let issuer = match &cs.issuer {
                    Some(m) => Some(self.str_match(&m.op, &m.value, &m.values)?),
                    None => None,
                };
                if cs.present.is_none()
                    && cs.valid.is_none()
                    && issuer.is_none()
                    && cs.not_revoked.is_none()
                {
                    self.err(span, "`certificate` needs at least one of `present`, `valid`, `issuer`, `not_revoked`");
                    return None;
                }
                Cond::Certificate {
                    present: cs.present,
                    valid: cs.valid,
                    issuer,
                    not_revoked: cs.not_revoked,
                }
            }
            ConditionSpec::Time(t) => {
                let tz = match &t.timezone {
                    None => Tz::UTC,
                    Some(s) => match s.parse::<Tz>() {
                        Ok(tz) => tz,
                        Err(_) => {
                            self.err(s.span(), format!("bad time zone `{}`: expected an IANA name like Europe/Paris or America/New_York", s.as_str()));
                            return None;
                        }
                    },
                };
                let hours = match &t.hours {
                    None => None,
                    Some(h) => {
                        let from = self.hour(&h.from)?;
                        let to = self.hour(&h.to)?;
                        Some((from, to))
                    }
                };
                let mut weekdays = 0u8;
                for d in &t.weekdays {
                    match weekday(d) {
                        Some(i) => weekdays |= 1 << i,
                        None => {
                            self.err(d.span(), format!("bad weekday `{}`: expected mon, tue, wed, thu, fri, sat or sun", d.as_str()));
                            return None;
                        }
                    }
                }
                if weekdays == 0 {
                    weekdays = 0x7f;
                }
                Cond::Time {
                    tz,
                    hours,
                    weekdays,
                }
            }
            ConditionSpec::Velocity(v) => self.velocity(v, span)?,
            ConditionSpec::Risk(r) => {
                let mut levels = 0u8;
                for l in &r.levels {
                    levels |= 1 << (*l as u8);
                }
                if let Some(min) = r.at_least {
                    for l in [RiskLevel::Low, RiskLevel::Medium, RiskLevel::High] {
                        if l >= min {
                            levels |= 1 << (l as u8);
                        }
                    }
                }
                if levels == 0 && r.reasons.is_empty() {
                    self.err(span, "`risk` needs `at_least`, `levels` or `reasons`");
                    return None;
                }
                if levels == 0 {
                    levels = 0b111;
                }
                Cond::Risk {
                    levels,
                    reasons: boxed(&r.reasons),
                }
            }
            ConditionSpec::AppSensitivity(s) => {
                let mut mask = 0u8;
                for l in &s.in_ {
                    mask |= 1 << (*l as u8);
                }
                if let Some(min) = s.at_least {
                    for l in [Sensitivity::Low, Sensitivity::Medium, Sensitivity::High] {
                        if l >= min {
                            mask |= 1 << (l as u8);
                        }
                    }
                }
                if mask == 0 {
                    self.err(
                        span,
                        "`app_sensitivity` needs `in: [..]` or `at_least` (low, medium, high)",
                    );
                    return None;
                }
                Cond::Sensitivity { mask }
            }
            ConditionSpec::Request(r) => {
                let methods = self.methods(&r.methods);
                let path = match &r.path {
                    Some(p) => Some(self.path(p)?),
                    None => None,
                };
                if r.methods.is_empty() && path.is_none() {
                    self.err(span, "`request` needs `methods` or `path`");
                    return None;
                }
                Cond::Request { methods, path }
            }
        })
    }

    fn conds(&mut self, cs: &'a [Spanned<ConditionSpec>]) -> Option<Box<[Cond]>> {
        let before = self.errors.len();
        let out: Vec<Cond> = cs.iter().filter_map(|c| self.cond(c)).collect();
        (self.errors.len() == before).then(|| out.into())
    }

    fn score(&mut self, v: Option<&Spanned<i64>>, default: u8) -> Option<u8> {
        match v {
            None => Some(default),
            Some(s) if (0..=100).contains(&**s) => Some(**s as u8),
            Some(s) => {
                self.err(
                    s.span(),
                    format!("ip risk score {} is out of range: expected 0 to 100", **s),
                );
                None
            }
        }
    }

    fn hour(&mut self, h: &Spanned<i64>) -> Option<u8> {
        if (0..=23).contains(&**h) {
            Some(**h as u8)
        } else {
            self.err(
                h.span(),
                format!("hour {} is out of range: expected 0 to 23", **h),
            );
            None
        }
    }
}

fn weekday(s: &str) -> Option<u8> {
    let s = s.to_ascii_lowercase();
    let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| s == *d || (s.len() > 3 && full_weekday(d) == s))?;
    Some(i as u8)
}

fn full_weekday(d: &str) -> &'static str {
    match d {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

fn boxed(v: &[String]) -> Box<[Box<str>]> {
    v.iter().map(|s| s.as_str().into()).collect()
}

#[cfg(test)]
mod depth_tests {
    use super::*;
    use crate::OutcomeKind;

    #[test]
    fn reads_device_names_the_policies_that_look_at_the_device() {
        let device =
            compile_condition("{ not: { device_compliance: { compliant: true } } }".into())
                .unwrap();
        assert!(device.reads_device("p"));
        assert!(!device.reads_device("another"));
        let network = compile_condition("{ network: { in: [10.0.0.0/8] } }".into()).unwrap();
        assert!(!network.reads_device("p"));
    }

    #[derive(serde::Deserialize)]
    struct Doc {
        policies: Vec<PolicySpec>,
    }

    const HEAD: &str = "policies:\n  - { name: p, priority: 1, outcome: allow, conditions: [ ";

    /// Compiles one policy whose single condition is `cond` (YAML flow text, on line 2).
    fn compile_condition(cond: String) -> Result<PolicySet, Vec<SpecError>> {
        // Deserialising a deep tree recurses in serde too; give it room in debug builds (the
        // configuration loader bounds the YAML depth before serde runs).
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || {
                let doc: Doc = marked_yaml::from_yaml(0, &format!("{HEAD}{cond} ] }}\n"))
                    .unwrap_or_else(|e| panic!("{e}"));
                compile(PolicyInput {
                    apps: &[],
                    networks: &NetworksSpec::new(),
                    policies: &doc.policies,
                    default_outcome: None,
                    own_apps: &[],
                })
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn nested(levels: &[&str]) -> String {
        let mut s = String::new();
        for l in levels {
            s.push_str(&format!("{{ {l}: "));
            if *l != "not" {
                s.push('[');
            }
        }
        s.push_str("{ network: { in: [10.0.0.0/8] } }");
        for l in levels.iter().rev() {
            if *l != "not" {
                s.push(']');
            }
            s.push_str(" }");
        }
        s
    }

    #[test]
    fn conditions_nest_at_most_the_limit() {
        let ctx = |ip: &str| {
            let mut c = crate::RequestContext::default();
            c.network.ip = Some(ip.parse().unwrap());
            c
        };
        // 64 levels: accepted, and an even number of `not`s is the leaf itself, on the fast
        // and the explained path alike.
        let set = compile_condition(nested(&["not"; MAX_CONDITION_DEPTH]))
            .unwrap_or_else(|e| panic!("{e:?}"));
        for (ip, outcome) in [
            ("10.1.2.3", OutcomeKind::Allow),
            ("192.0.2.1", OutcomeKind::Deny),
        ] {
            assert_eq!(set.decide(&ctx(ip)).kind(), outcome, "{ip}");
            assert_eq!(set.explain(&ctx(ip)).outcome, outcome, "{ip}");
        }
        // 65, however they are mixed: refused at the 65th, with the fix.
        for levels in [
            vec!["not"; 65],
            vec!["all"; 65],
            ["any", "not", "all"].repeat(22)[..65].to_vec(),
        ] {
            let Err(errors) = compile_condition(nested(&levels)) else {
                panic!("{} levels were accepted", levels.len());
            };
            assert_eq!(errors.len(), 1, "{errors:?}");
            let e = &errors[0];
            let column = HEAD.lines().last().unwrap().len()
                + levels[..64]
                    .iter()
                    .map(|l| l.len() + if *l == "not" { 4 } else { 5 })
                    .sum::<usize>()
                + 1;
            let at = e.span.start().expect("positioned");
            assert_eq!((at.line(), at.column()), (2, column), "{e:?}");
            assert!(e.message.contains("more than 64 levels deep"), "{e:?}");
            assert!(e.message.contains("split the policy"), "{e:?}");
        }
    }
}

#[cfg(test)]
mod default_outcome_tests {
    use super::*;

    fn default_of(yaml: Option<&str>) -> Outcome {
        #[derive(serde::Deserialize)]
        struct Doc {
            o: OutcomeSpec,
        }
        let spec: Option<OutcomeSpec> = yaml.map(|y| {
            marked_yaml::from_yaml::<Doc>(0, &format!("o: {y}\n"))
                .unwrap()
                .o
        });
        compile(PolicyInput {
            apps: &[],
            networks: &NetworksSpec::new(),
            policies: &[],
            default_outcome: spec.as_ref(),
            own_apps: &[],
        })
        .unwrap()
        .default_outcome()
        .clone()
    }

    fn message(o: &Outcome) -> Option<&str> {
        match o {
            Outcome::Deny(d) => d.message.as_deref(),
            _ => panic!("not a deny: {o:?}"),
        }
    }

    #[test]
    fn a_default_deny_says_why_whether_written_out_or_left_out() {
        let why = Some("No policy allows this request.");
        assert_eq!(message(&default_of(None)), why, "left out");
        assert_eq!(message(&default_of(Some("deny"))), why, "written out");
        assert_eq!(
            message(&default_of(Some(
                "{ deny: { message: Ask the help desk. } }"
            ))),
            Some("Ask the help desk."),
            "its own message is kept"
        );
    }
}
