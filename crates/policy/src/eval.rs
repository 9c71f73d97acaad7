//! Evaluation: the fast path ([`PolicySet::decide`]), the explained path
//! ([`PolicySet::explain`], same answer plus a trace), and the remediation list for a deny.

use chrono::{Datelike, Timelike};
use serde::Serialize;

use crate::compile::{method_bit, AppEntry, CompiledPolicy, CompiledRoute, Cond, PolicySet};
use crate::netindex::{intersects, ZoneId};
use crate::outcome::{Outcome, OutcomeKind, RemediationItem, StepUpRequirement};
use crate::spec::{CompareOp, UserAgentField};
use crate::version::{compare_versions, looks_like_version};
use crate::{DeviceState, RequestContext, RequestKind};

/// The answer for one request.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'a> {
    /// What to do.
    pub outcome: &'a Outcome,
    /// The policy that decided (`None`: the default outcome).
    pub policy: Option<&'a str>,
    /// The first report-only policy that matched ahead of the deciding one: what would
    /// have happened had it been enforced.
    pub report_only: Option<&'a str>,
    policy_index: Option<u32>,
}

impl Decision<'_> {
    /// Shorthand for the outcome kind.
    pub fn kind(&self) -> OutcomeKind {
        self.outcome.kind()
    }
}

/// A report-only policy that matched a request ahead of the policy that decided it: had it
/// been enforced (on its own), it would have decided the request with `outcome`.
#[derive(Clone, Copy, Debug)]
pub struct ReportOnlyMatch<'a> {
    /// The report-only policy.
    pub policy: &'a str,
    /// What it would have done.
    pub outcome: &'a Outcome,
}

/// The request context with the per-request lookups done once.
struct Bound<'a> {
    ctx: &'a RequestContext,
    app: Option<(u32, &'a AppEntry)>,
    route: Option<&'a CompiledRoute>,
    method: u16,
    /// The app's paths are matched ignoring ASCII case.
    ignore_case: bool,
    zones: &'a [ZoneId],
    zone_names: &'a [Box<str>],
}

impl PolicySet {
    fn bind<'a>(&'a self, ctx: &'a RequestContext) -> Bound<'a> {
        let method = method_bit(&ctx.request.method);
        let app = ctx
            .request
            .app
            .as_deref()
            .and_then(|id| self.app_ids.0.get(id))
            .map(|&i| (i, &self.apps[i as usize]));
        let ignore_case = app.is_some_and(|(_, a)| a.ignore_case);
        let route = app.and_then(|(_, a)| matching_route(a, method, &ctx.request.path));
        let zones = match ctx.network.ip {
            Some(ip) => self.networks.zones_of(ip),
            None => &[],
        };
        Bound {
            ctx,
            app,
            route,
            method,
            ignore_case,
            zones,
            zone_names: &self.zone_names,
        }
    }

    /// The outcome when no policy decides: the app's own ([`crate::OwnApp`]), else the
    /// set's default.
    fn fallback(&self, b: &Bound<'_>) -> &Outcome {
        match b.app {
            Some((i, _)) if b.ctx.kind == RequestKind::Access => self.apps[i as usize]
                .default
                .as_ref()
                .unwrap_or(&self.default_outcome),
            _ => &self.default_outcome,
        }
    }

    fn candidates(&self, kind: RequestKind, app: Option<u32>) -> &[u32] {
        match (kind, app) {
            (RequestKind::SignIn, _) => &self.sign_in,
            (RequestKind::Access, Some(i)) => &self.apps[i as usize].candidates,
            (RequestKind::Access, None) => &self.unknown_app,
        }
    }

    /// Decides one request. Pure and allocation-free.
    pub fn decide<'a>(&'a self, ctx: &RequestContext) -> Decision<'a> {
        let b = self.bind(ctx);
        let mut report_only = None;
        for &i in self.candidates(ctx.kind, b.app.map(|(i, _)| i)) {
            let p = &self.policies[i as usize];
            if !routes_match(p, &b) || !eval(&p.conditions, &b) {
                continue;
            }
            if p.report_only {
                report_only.get_or_insert(&*p.name);
                continue;
            }
            return Decision {
                outcome: &p.outcome,
                policy: Some(&p.name),
                report_only,
                policy_index: Some(i),
            };
        }
        Decision {
            outcome: self.fallback(&b),
            policy: None,
            report_only,
            policy_index: None,
        }
    }

    /// Every report-only policy that matched `ctx` ahead of the one that made `decision`
    /// (which must be this set's decision on `ctx`), in priority order: what each would have
    /// done had it been enforced. A second pass over the candidates, run only when
    /// [`PolicySet::decide`] saw a report-only match ([`Decision::report_only`]), so `decide`
    /// stays allocation-free and a request no report-only policy matches pays nothing here.
    /// (A report-only policy ranked after the deciding one could not have changed the
    /// outcome, so it is not listed.)
    pub fn report_only<'a>(
        &'a self,
        ctx: &'a RequestContext,
        decision: &Decision<'a>,
    ) -> impl Iterator<Item = ReportOnlyMatch<'a>> + 'a {
        let stop = decision.policy_index;
        let run = decision.report_only.is_some();
        let b = self.bind(ctx);
        let candidates: &[u32] = if run {
            self.candidates(ctx.kind, b.app.map(|(i, _)| i))
        } else {
            &[]
        };
        candidates
            .iter()
            .take_while(move |&&i| Some(i) != stop)
            .filter_map(move |&i| {
                let p = &self.policies[i as usize];
                (p.report_only && routes_match(p, &b) && eval(&p.conditions, &b)).then_some(
                    ReportOnlyMatch {
                        policy: &p.name,
                        outcome: &p.outcome,
                    },
                )
            })
    }

    /// The app route a request to `app` with `method` and `path` matches, as
    /// [`PolicySet::route_of`] names it, without a context: what a trace span may carry
    /// (a name or a pattern as configured, never the request's own path or query).
    pub fn route_for(&self, app: &str, method: &str, path: &str) -> Option<&str> {
        let a = &self.apps[*self.app_ids.0.get(app)? as usize];
        let r = matching_route(a, method_bit(method), path)?;
        Some(r.name.as_deref().unwrap_or(r.path.as_str()))
    }

    /// The app route `ctx`'s request matched: its name, or its path pattern when unnamed.
    pub fn route_of(&self, ctx: &RequestContext) -> Option<String> {
        self.bind(ctx).route.map(|r| {
            r.name
                .as_deref()
                .map_or_else(|| r.path.to_string(), str::to_string)
        })
    }

    /// Decides one request and records why: every policy in priority order up to the one
    /// that decided, whether it targeted the request, and each condition's seen value.
    pub fn explain(&self, ctx: &RequestContext) -> Explanation {
        let b = self.bind(ctx);
        let mut trace = Vec::new();
        let mut decided: Option<u32> = None;
        let mut report_only: Option<String> = None;
        for (i, p) in self.policies.iter().enumerate() {
            let mut t = PolicyTrace {
                policy: p.name.to_string(),
                description: p.description.as_deref().map(str::to_string),
                priority: p.priority,
                mode: if !p.enabled {
                    "disabled"
                } else if p.report_only {
                    "report_only"
                } else {
                    "enforce"
                },
                targeted: false,
                target: describe_target(p),
                conditions: Vec::new(),
                matched: None,
                decided: false,
            };
            if p.enabled {
                let app_ok = match ctx.kind {
                    RequestKind::SignIn => p.targets.sign_in,
                    RequestKind::Access => p.targets.applies_to_app(b.app) && routes_match(p, &b),
                };
                t.targeted = app_ok;
                if app_ok {
                    let held = eval_traced(&p.conditions, &b, "conditions", &mut t.conditions);
                    t.matched = Some(held);
                    if held && p.report_only {
                        report_only.get_or_insert_with(|| p.name.to_string());
                    } else if held {
                        t.decided = true;
                        decided = Some(i as u32);
                    }
                }
            }
            trace.push(t);
            if decided.is_some() {
                break;
            }
        }
        let decision = Decision {
            outcome: decided.map_or(self.fallback(&b), |i| &self.policies[i as usize].outcome),
            policy: decided.map(|i| &*self.policies[i as usize].name),
            report_only: None,
            policy_index: decided,
        };
        let remediation = self.remediation(&decision, ctx);
        let route = b.route.map(|r| RouteReport {
            name: r.name.as_deref().map(str::to_string),
            path: r.path.to_string(),
            tags: r.tags.iter().map(|t| t.to_string()).collect(),
        });
        Explanation {
            outcome: decision.kind(),
            policy: decision.policy.map(str::to_string),
            report_only,
            requirement: decision.outcome.requirement().cloned(),
            message: match decision.outcome {
                Outcome::Deny(d) => d.message.clone(),
                Outcome::StepUp(s) => s.message.clone(),
                Outcome::Allow => None,
            },
            remediation,
            route,
            trace,
        }
    }

    /// For a deny: the device checks and posture values the user can fix, in plain words,
    /// plus the policy's own remediation text. Empty for other outcomes.
    pub fn remediation(
        &self,
        decision: &Decision<'_>,
        ctx: &RequestContext,
    ) -> Vec<RemediationItem> {
        let Outcome::Deny(deny) = decision.outcome else {
            return Vec::new();
        };
        let mut out: Vec<RemediationItem> = Vec::new();
        if let Some(i) = decision.policy_index {
            let b = self.bind(ctx);
            collect_remediation(&self.policies[i as usize].conditions, &b, &mut out);
        }
        if let Some(text) = &deny.remediation {
            out.push(RemediationItem {
                check: "policy".into(),
                message: text.clone(),
                fix: None,
            });
        }
        out
    }
}

fn routes_match(p: &CompiledPolicy, b: &Bound<'_>) -> bool {
    let sels = &p.targets.routes;
    if sels.is_empty() {
        return true;
    }
    sels.iter().any(|s| {
        (s.tags.is_empty()
            || b.route
                .is_some_and(|r| r.tags.iter().any(|t| s.tags.contains(t))))
            && (s.methods == 0 || s.methods & b.method != 0)
            && s.path
                .as_ref()
                .is_none_or(|pp| pp.matches_case(&b.ctx.request.path, b.ignore_case))
    })
}

fn eval(c: &Cond, b: &Bound<'_>) -> bool {
    let ctx = b.ctx;
    match c {
        Cond::All(cs) => cs.iter().all(|c| eval(c, b)),
        Cond::Any(cs) => cs.iter().any(|c| eval(c, b)),
        Cond::Not(c) => !eval(c, b),
        Cond::UserAttr { attr, m } => match ctx.user.as_ref().and_then(|u| u.attribute(attr)) {
            None => m.test(None),
            Some(crate::AttributeRef::One(s)) => m.test(Some(s)),
            Some(crate::AttributeRef::Many(vs)) => m.test_many(vs.iter().map(String::as_str)),
        },
        Cond::GroupsAny(gs) => ctx
            .user
            .as_ref()
            .is_some_and(|u| u.groups.iter().any(|g| gs.iter().any(|w| **w == **g))),
        Cond::GroupsAll(gs) => ctx
            .user
            .as_ref()
            .is_some_and(|u| gs.iter().all(|w| u.groups.iter().any(|g| **w == **g))),
        Cond::Network { zones, negated, .. } => intersects(b.zones, zones) != *negated,
        Cond::Location {
            countries,
            regions,
            cities,
            contains,
            places,
        } => {
            let n = &ctx.network;
            let hit = |list: &[Box<str>], v: &Option<String>| {
                v.as_deref()
                    .is_some_and(|v| list.iter().any(|w| w.eq_ignore_ascii_case(v)))
            };
            let has = |list: &[Box<str>], v: &Option<String>| {
                v.as_deref()
                    .is_some_and(|v| list.iter().any(|w| contains_ignore_case(v, w)))
            };
            let lacks = |list: &[Box<str>], v: &Option<String>| {
                !list.is_empty()
                    && v.as_deref()
                        .is_some_and(|v| !list.iter().any(|w| contains_ignore_case(v, w)))
            };
            let part = |want: &Option<Box<str>>, v: &Option<String>| match want {
                None => true,
                Some(w) => v.as_deref().is_some_and(|v| w.eq_ignore_ascii_case(v)),
            };
            hit(countries, &n.country)
                || hit(regions, &n.region)
                || hit(cities, &n.city)
                || has(&contains.region, &n.region)
                || has(&contains.city, &n.city)
                || lacks(&contains.region_not, &n.region)
                || lacks(&contains.city_not, &n.city)
                || places.iter().any(|(c, r, ci)| {
                    n.country
                        .as_deref()
                        .is_some_and(|v| c.eq_ignore_ascii_case(v))
                        && part(r, &n.region)
                        && part(ci, &n.city)
                })
        }
        Cond::IpRisk { min, max } => ctx
            .network
            .ip_risk_score
            .is_some_and(|s| (*min..=*max).contains(&s)),
        Cond::UserAgent { field, m } => m.test(ua_field(ctx, *field)),
        Cond::DeviceHostname(m) => m.test(ctx.device.as_ref().and_then(|d| d.hostname.as_deref())),
        Cond::DeviceDomain(m) => m.test(ctx.device.as_ref().and_then(|d| d.domain.as_deref())),
        Cond::DeviceMac(m) => match &ctx.device {
            Some(d) => m.test_many(d.mac_addresses.iter().map(String::as_str)),
            None => m.test_many(std::iter::empty()),
        },
        Cond::DeviceState { mask } => mask & (1 << (device_state(ctx) as u8)) != 0,
        Cond::DeviceCompliant(want) => ctx.device.as_ref().and_then(|d| d.compliant) == Some(*want),
        Cond::DeviceFailing(checks) => ctx.device.as_ref().is_some_and(|d| {
            d.failing_checks
                .iter()
                .any(|f| checks.iter().any(|c| **c == *f.id))
        }),
        Cond::Posture { attr, op, value } => {
            let seen = ctx.device.as_ref().and_then(|d| d.posture.get(&**attr));
            compare_posture(seen.map(|v| v.0.as_str()), *op, value)
        }
        Cond::Certificate {
            present,
            valid,
            issuer,
            not_revoked,
        } => {
            let cert = ctx.certificate.as_ref();
            present.is_none_or(|p| cert.is_some() == p)
                && valid.is_none_or(|v| cert.is_some_and(|c| c.valid) == v)
                && issuer
                    .as_ref()
                    .is_none_or(|m| m.test(cert.and_then(|c| c.issuer.as_deref())))
                && not_revoked.is_none_or(|nr| (cert.and_then(|c| c.revoked) == Some(false)) == nr)
        }
        Cond::Time {
            tz,
            hours,
            weekdays,
        } => {
            let local = ctx.time.with_timezone(tz);
            let day_ok = weekdays & (1 << local.weekday().num_days_from_monday()) != 0;
            day_ok && hours.is_none_or(|(from, to)| in_hours(local.hour() as u8, from, to))
        }
        Cond::Velocity {
            low,
            high,
            inclusive,
        } => ctx.risk.velocity_kmpm.is_some_and(|v| {
            let above_low = low.is_none_or(|l| if *inclusive { v >= l } else { v > l });
            let below_high = high.is_none_or(|h| if *inclusive { v <= h } else { v < h });
            above_low && below_high
        }),
        Cond::Risk { levels, reasons } => {
            levels & (1 << (ctx.risk.level as u8)) != 0
                && (reasons.is_empty()
                    || ctx
                        .risk
                        .reasons
                        .iter()
                        .any(|r| reasons.iter().any(|w| **w == **r)))
        }
        Cond::Sensitivity { mask } => b
            .app
            .is_some_and(|(_, a)| mask & (1 << (a.sensitivity as u8)) != 0),
        Cond::Request { methods, path } => {
            (*methods == 0 || methods & b.method != 0)
                && path
                    .as_ref()
                    .is_none_or(|p| p.matches_case(&ctx.request.path, b.ignore_case))
        }
    }
}

fn in_hours(h: u8, from: u8, to: u8) -> bool {
    match from.cmp(&to) {
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => from <= h && h < to,
        std::cmp::Ordering::Greater => h >= from || h < to,
    }
}

fn device_state(ctx: &RequestContext) -> DeviceState {
    ctx.device
        .as_ref()
        .map_or(DeviceState::Unregistered, |d| d.state)
}

fn ua_field(ctx: &RequestContext, f: UserAgentField) -> Option<&str> {
    let ua = &ctx.user_agent;
    match f {
        UserAgentField::Raw => ua.raw.as_deref(),
        UserAgentField::Browser => ua.browser.as_deref(),
        UserAgentField::Os => ua.os.as_deref(),
        UserAgentField::DeviceClass => ua.device_class.as_deref(),
    }
}

fn as_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Compares a posture value: booleans as booleans, versions/numbers version-aware, text
/// for (in)equality only. A missing value never satisfies `eq`/ordering and always `ne`.
pub(crate) fn compare_posture(seen: Option<&str>, op: CompareOp, want: &str) -> bool {
    let Some(seen) = seen else {
        return op == CompareOp::Ne;
    };
    let equal = match (as_bool(seen), as_bool(want)) {
        (Some(a), Some(b)) => Some(a == b),
        (None, None) if looks_like_version(seen) && looks_like_version(want) => None,
        (None, None) => Some(seen == want),
        _ => Some(false),
    };
    match (op, equal) {
        (CompareOp::Eq, Some(e)) => e,
        (CompareOp::Ne, Some(e)) => !e,
        (_, Some(_)) => false,
        (op, None) => {
            let ord = compare_versions(seen, want);
            match op {
                CompareOp::Eq => ord.is_eq(),
                CompareOp::Ne => ord.is_ne(),
                CompareOp::Lt => ord.is_lt(),
                CompareOp::Le => ord.is_le(),
                CompareOp::Gt => ord.is_gt(),
                CompareOp::Ge => ord.is_ge(),
            }
        }
    }
}

fn collect_remediation(c: &Cond, b: &Bound<'_>, out: &mut Vec<RemediationItem>) {
    let mut push = |item: RemediationItem| {
        if !out.iter().any(|o| o.check == item.check) {
            out.push(item);
        }
    };
    match c {
        Cond::All(cs) | Cond::Any(cs) => {
            for c in cs.iter() {
                collect_remediation(c, b, out);
            }
        }
        Cond::DeviceCompliant(false) | Cond::DeviceFailing(_) if eval(c, b) => {
            let only: Option<&[Box<str>]> = match c {
                Cond::DeviceFailing(checks) => Some(checks),
                _ => None,
            };
            if let Some(d) = &b.ctx.device {
                for f in &d.failing_checks {
                    if only.is_some_and(|o| !o.iter().any(|w| **w == *f.id)) {
                        continue;
                    }
                    push(RemediationItem {
                        check: f.id.clone(),
                        message: f
                            .message
                            .clone()
                            .unwrap_or_else(|| format!("The device check `{}` failed", f.id)),
                        fix: f.fix.clone(),
                    });
                }
            }
        }
        Cond::Posture { attr, op, value } if eval(c, b) => {
            let seen = b
                .ctx
                .device
                .as_ref()
                .and_then(|d| d.posture.get(&**attr))
                .map_or("unknown", |v| v.0.as_str());
            let message = match op {
                CompareOp::Lt => format!("{attr} {seen} is below the required {value}"),
                CompareOp::Le => {
                    format!("{attr} {seen} is at or below {value}; above {value} is required")
                }
                CompareOp::Gt => format!("{attr} {seen} is above the allowed {value}"),
                CompareOp::Ge => {
                    format!("{attr} {seen} is at or above {value}; below {value} is required")
                }
                CompareOp::Eq => format!("{attr} is {seen}"),
                CompareOp::Ne => format!("{attr} is {seen}, not {value}"),
            };
            let check = attr.to_string();
            let fix = b
                .ctx
                .device
                .as_ref()
                .and_then(|d| d.failing_checks.iter().find(|f| f.id == check))
                .and_then(|f| f.fix.clone());
            push(RemediationItem {
                check,
                message,
                fix,
            });
        }
        Cond::DeviceState { mask } if eval(c, b) => device_state_remediation(*mask, b, out),
        Cond::Not(inner) => {
            // "not at least managed" blocks the states outside the inner set.
            if let Cond::DeviceState { mask } = &**inner {
                if !eval(inner, b) {
                    device_state_remediation(!*mask & 0x0f, b, out);
                }
            }
        }
        _ => {}
    }
}

/// Explains a device-state condition that blocked, when the states it blocks are the less
/// trusted ones (a condition that holds for fully managed devices is not something the
/// user can fix by enrolling).
fn device_state_remediation(blocking: u8, b: &Bound<'_>, out: &mut Vec<RemediationItem>) {
    if blocking & (1 << DeviceState::ManagedEdr as u8) != 0
        || out.iter().any(|o| o.check == "device_state")
    {
        return;
    }
    let message = match device_state(b.ctx) {
        DeviceState::Unregistered => "This device is not registered with your organisation",
        DeviceState::Registered => "This device is registered but not managed by your organisation",
        DeviceState::Managed => "This device is managed but has no EDR agent reporting",
        DeviceState::ManagedEdr => return,
    };
    out.push(RemediationItem {
        check: "device_state".into(),
        message: message.into(),
        fix: Some("Use a company-managed device, or enrol this one in device management".into()),
    });
}

/// Why one policy did or did not apply.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyTrace {
    /// Policy name.
    pub policy: String,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its priority.
    pub priority: u32,
    /// `enforce`, `report_only` or `disabled`.
    pub mode: &'static str,
    /// Whether its targets covered this request.
    pub targeted: bool,
    /// What it targets, in words.
    pub target: String,
    /// Each condition evaluated (when targeted), depth-first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionTrace>,
    /// Whether all its conditions held (absent: not evaluated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<bool>,
    /// Whether it made the decision.
    pub decided: bool,
}

/// One evaluated condition.
#[derive(Clone, Debug, Serialize)]
pub struct ConditionTrace {
    /// Where it sits (`conditions.all[1].not`).
    pub path: String,
    /// The condition, in words.
    pub condition: String,
    /// The value the request had.
    pub seen: String,
    /// Whether it held.
    pub held: bool,
}

/// The matched route of the request's app.
#[derive(Clone, Debug, Serialize)]
pub struct RouteReport {
    /// Route name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its path pattern.
    pub path: String,
    /// Its tags.
    pub tags: Vec<String>,
}

/// A decision with its reasons; the JSON shape of `stepgate what-if --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// `allow`, `step_up` or `deny`.
    pub outcome: OutcomeKind,
    /// The deciding policy (absent: the default outcome).
    pub policy: Option<String>,
    /// A report-only policy that would have decided first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_only: Option<String>,
    /// The step-up requirement.
    pub requirement: Option<StepUpRequirement>,
    /// The policy's message for the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a deny, what to fix.
    pub remediation: Vec<RemediationItem>,
    /// The app route the request matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteReport>,
    /// The policies considered, in order.
    pub trace: Vec<PolicyTrace>,
}

fn describe_target(p: &CompiledPolicy) -> String {
    let t = &p.targets;
    let mut parts = Vec::new();
    if t.sign_in {
        parts.push("sign-in".to_string());
    }
    if t.access {
        if t.apps.is_empty() && t.app_tags.is_empty() {
            parts.push("all apps".into());
        }
        if !t.apps.is_empty() {
            parts.push(format!("apps [{}]", t.apps.len()));
        }
        if !t.app_tags.is_empty() {
            parts.push(format!("app tags [{}]", t.app_tags.join(", ")));
        }
        for s in t.routes.iter() {
            let mut r = Vec::new();
            if !s.tags.is_empty() {
                r.push(format!("tags [{}]", s.tags.join(", ")));
            }
            if s.methods != 0 {
                r.push(methods_str(s.methods));
            }
            if let Some(path) = &s.path {
                r.push(path.to_string());
            }
            parts.push(format!("route {}", r.join(" ")));
        }
    }
    parts.join("; ")
}

fn methods_str(mask: u16) -> String {
    crate::compile::METHODS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, m)| *m)
        .collect::<Vec<_>>()
        .join("|")
}

fn eval_traced(c: &Cond, b: &Bound<'_>, path: &str, out: &mut Vec<ConditionTrace>) -> bool {
    let (held, condition, seen) = match c {
        Cond::All(cs) | Cond::Any(cs) => {
            let all = matches!(c, Cond::All(_));
            let word = if all { "all" } else { "any" };
            let mut results = Vec::with_capacity(cs.len());
            let slot = out.len();
            for (i, c) in cs.iter().enumerate() {
                results.push(eval_traced(c, b, &format!("{path}.{word}[{i}]"), out));
            }
            let held = if all {
                results.iter().all(|r| *r)
            } else {
                results.iter().any(|r| *r)
            };
            let n = results.iter().filter(|r| **r).count();
            out.insert(
                slot,
                ConditionTrace {
                    path: path.to_string(),
                    condition: format!("{word} of {} conditions", cs.len()),
                    seen: format!("{n} of {} held", cs.len()),
                    held,
                },
            );
            return held;
        }
        Cond::Not(inner) => {
            let slot = out.len();
            let inner_held = eval_traced(inner, b, &format!("{path}.not"), out);
            out.insert(
                slot,
                ConditionTrace {
                    path: path.to_string(),
                    condition: "not".into(),
                    seen: format!(
                        "inner condition {}",
                        if inner_held { "held" } else { "did not hold" }
                    ),
                    held: !inner_held,
                },
            );
            return !inner_held;
        }
        leaf => (eval(leaf, b), describe(leaf), seen(leaf, b)),
    };
    out.push(ConditionTrace {
        path: path.to_string(),
        condition,
        seen,
        held,
    });
    held
}

/// Whether `hay` contains `needle`, ASCII letters compared case-insensitively; no
/// allocation (evaluated per request).
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "(none)".to_string(), |s| format!("`{s}`"))
}

fn mask_names<T: Copy>(mask: u8, all: &[T], name: fn(T) -> &'static str) -> String {
    all.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, v)| name(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(c: &Cond) -> String {
    use crate::spec::Sensitivity;
    use crate::RiskLevel;
    match c {
        Cond::All(_) | Cond::Any(_) | Cond::Not(_) => String::new(),
        Cond::UserAttr { attr, m } => format!("user attribute `{attr}` {}", m.describe()),
        Cond::GroupsAny(g) => format!("member of any of [{}]", g.join(", ")),
        Cond::GroupsAll(g) => format!("member of all of [{}]", g.join(", ")),
        Cond::Network { negated, label, .. } => {
            format!(
                "network {} [{label}]",
                if *negated { "not in" } else { "in" }
            )
        }
        Cond::Location {
            countries,
            regions,
            cities,
            contains,
            places,
        } => {
            let mut parts = Vec::new();
            for (k, v) in [
                ("countries", countries),
                ("regions", regions),
                ("cities", cities),
                ("region containing", &contains.region),
                ("region not containing", &contains.region_not),
                ("city containing", &contains.city),
                ("city not containing", &contains.city_not),
            ] {
                if !v.is_empty() {
                    parts.push(format!("{k} [{}]", v.join(", ")));
                }
            }
            if !places.is_empty() {
                let named: Vec<String> = places
                    .iter()
                    .map(|(c, r, ci)| {
                        [Some(c), r.as_ref(), ci.as_ref()]
                            .into_iter()
                            .flatten()
                            .map(|s| s.as_ref())
                            .collect::<Vec<&str>>()
                            .join("/")
                    })
                    .collect();
                parts.push(format!("places [{}]", named.join(", ")));
            }
            format!("location in {}", parts.join(" or "))
        }
        Cond::IpRisk { min, max } => format!("ip risk score in {min}..={max}"),
        Cond::UserAgent { field, m } => {
            format!("user agent {field:?} {}", m.describe()).to_lowercase()
        }
        Cond::DeviceHostname(m) => format!("device hostname {}", m.describe()),
        Cond::DeviceDomain(m) => format!("device domain {}", m.describe()),
        Cond::DeviceMac(m) => format!("device MAC {}", m.describe()),
        Cond::DeviceState { mask } => {
            format!(
                "device state in [{}]",
                mask_names(*mask, &DeviceState::ALL, DeviceState::as_str)
            )
        }
        Cond::DeviceCompliant(b) => format!("device compliant == {b}"),
        Cond::DeviceFailing(c) => format!("device failing any of [{}]", c.join(", ")),
        Cond::Posture { attr, op, value } => {
            format!("device posture {attr} {} {value}", op.symbol())
        }
        Cond::Certificate {
            present,
            valid,
            issuer,
            not_revoked,
        } => {
            let mut parts = Vec::new();
            if let Some(p) = present {
                parts.push(format!("present == {p}"));
            }
            if let Some(v) = valid {
                parts.push(format!("valid == {v}"));
            }
            if let Some(m) = issuer {
                parts.push(format!("issuer {}", m.describe()));
            }
            if let Some(n) = not_revoked {
                parts.push(format!("not_revoked == {n}"));
            }
            format!("client certificate {}", parts.join(", "))
        }
        Cond::Time {
            tz,
            hours,
            weekdays,
        } => {
            let days = if *weekdays == 0x7f {
                "every day".to_string()
            } else {
                mask_names(
                    *weekdays,
                    &["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    |d| d,
                )
            };
            match hours {
                Some((f, t)) => format!("time in {tz}: {days}, {f:02}:00–{t:02}:00"),
                None => format!("time in {tz}: {days}"),
            }
        }
        Cond::Velocity {
            low: Some(l),
            high: Some(h),
            ..
        } => format!("velocity between {l} and {h} km/min"),
        Cond::Velocity { low: Some(l), .. } => format!("velocity above {l} km/min"),
        Cond::Velocity { high: Some(h), .. } => format!("velocity below {h} km/min"),
        Cond::Velocity { .. } => "velocity known".to_string(),
        Cond::Risk { levels, reasons } => {
            let mut s = format!(
                "risk level in [{}]",
                mask_names(
                    *levels,
                    &[RiskLevel::Low, RiskLevel::Medium, RiskLevel::High],
                    RiskLevel::as_str
                )
            );
            if !reasons.is_empty() {
                s.push_str(&format!(" with a reason in [{}]", reasons.join(", ")));
            }
            s
        }
        Cond::Sensitivity { mask } => format!(
            "app sensitivity in [{}]",
            mask_names(
                *mask,
                &[Sensitivity::Low, Sensitivity::Medium, Sensitivity::High],
                Sensitivity::as_str
            )
        ),
        Cond::Request { methods, path } => {
            let mut parts = Vec::new();
            if *methods != 0 {
                parts.push(format!("method {}", methods_str(*methods)));
            }
            if let Some(p) = path {
                parts.push(format!("path {p}"));
            }
            format!("request {}", parts.join(", "))
        }
    }
}

fn seen(c: &Cond, b: &Bound<'_>) -> String {
    let ctx = b.ctx;
    let dev = ctx.device.as_ref();
    match c {
        Cond::All(_) | Cond::Any(_) | Cond::Not(_) => String::new(),
        Cond::UserAttr { attr, .. } => match ctx.user.as_ref().and_then(|u| u.attribute(attr)) {
            None => "(none)".into(),
            Some(crate::AttributeRef::One(s)) => format!("`{s}`"),
            Some(crate::AttributeRef::Many(v)) => format!("[{}]", v.join(", ")),
        },
        Cond::GroupsAny(_) | Cond::GroupsAll(_) => match &ctx.user {
            Some(u) => format!("[{}]", u.groups.join(", ")),
            None => "(anonymous)".into(),
        },
        Cond::Network { .. } => match ctx.network.ip {
            Some(ip) => {
                let zones: Vec<&str> = b
                    .zones
                    .iter()
                    .map(|z| &*b.zone_names[*z as usize])
                    .collect();
                if zones.is_empty() {
                    format!("{ip} (in no zone)")
                } else {
                    format!("{ip} (in {})", zones.join("; "))
                }
            }
            None => "(no IP)".into(),
        },
        Cond::Location { .. } => {
            let n = &ctx.network;
            format!(
                "country {}, region {}, city {}",
                opt(n.country.as_deref()),
                opt(n.region.as_deref()),
                opt(n.city.as_deref())
            )
        }
        Cond::IpRisk { .. } => ctx
            .network
            .ip_risk_score
            .map_or("(unknown)".into(), |s| s.to_string()),
        Cond::UserAgent { field, .. } => opt(ua_field(ctx, *field)),
        Cond::DeviceHostname(_) => opt(dev.and_then(|d| d.hostname.as_deref())),
        Cond::DeviceDomain(_) => opt(dev.and_then(|d| d.domain.as_deref())),
        Cond::DeviceMac(_) => dev.map_or("(no device)".into(), |d| {
            format!("[{}]", d.mac_addresses.join(", "))
        }),
        Cond::DeviceState { .. } => device_state(ctx).as_str().into(),
        Cond::DeviceCompliant(_) => match dev.and_then(|d| d.compliant) {
            Some(b) => b.to_string(),
            None => "(unknown)".into(),
        },
        Cond::DeviceFailing(_) => dev.map_or("(no device)".into(), |d| {
            format!(
                "failing [{}]",
                d.failing_checks
                    .iter()
                    .map(|f| f.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        Cond::Posture { attr, .. } => opt(dev
            .and_then(|d| d.posture.get(&**attr))
            .map(|v| v.0.as_str())),
        Cond::Certificate { .. } => match &ctx.certificate {
            None => "(no certificate)".into(),
            Some(c) => format!(
                "valid {}, issuer {}, revoked {}",
                c.valid,
                opt(c.issuer.as_deref()),
                c.revoked.map_or("(unknown)".into(), |r| r.to_string())
            ),
        },
        Cond::Time { tz, .. } => ctx
            .time
            .with_timezone(tz)
            .format("%a %Y-%m-%d %H:%M %Z")
            .to_string(),
        Cond::Velocity { .. } => ctx
            .risk
            .velocity_kmpm
            .map_or("(unknown)".into(), |v| format!("{v} km/min")),
        Cond::Risk { .. } => format!(
            "{} [{}]",
            ctx.risk.level.as_str(),
            ctx.risk.reasons.join(", ")
        ),
        Cond::Sensitivity { .. } => b
            .app
            .map_or("(no app)".into(), |(_, a)| a.sensitivity.as_str().into()),
        Cond::Request { .. } => format!("{} {}", ctx.request.method, ctx.request.path),
    }
}

/// The first of `app`'s routes matching `method` (a [`method_bit`]) and `path`.
fn matching_route<'a>(app: &'a AppEntry, method: u16, path: &str) -> Option<&'a CompiledRoute> {
    app.routes.iter().find(|r| {
        (r.methods == 0 || r.methods & method != 0) && r.path.matches_case(path, app.ignore_case)
    })
}
