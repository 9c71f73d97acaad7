//! Benchmark fixtures: a deterministic, realistic stepgate policy set of any size, the
//! equivalent Cedar policy set, and the same requests for both engines.
//!
//! [`Fixture::build`] generates, from a seed, `n` policies over `max(1, n / 10)` apps (each
//! with an admin, an API-write and an export route), five named network zones (one nested
//! in another, IPv4 and IPv6), twenty groups and five hundred users. Each policy targets one
//! app (one to eight target every app: the security baseline), 30% of them also a route
//! tag (and sometimes the method), and has zero to three conditions drawn from group
//! membership (any / all), network zone in / not in, device state (in / at least),
//! compliance, posture `os_version < X.Y`, a time-of-day window on some weekdays in one of
//! four time zones, user attribute equals / not equals / regex on the e-mail domain,
//! behavioural risk, IP risk and app sensitivity, some negated; 10% of the policies are
//! `match: any`. Blocks and step-ups are built from narrow conditions, grants from broad
//! ones, so that about half the requests are allowed and the rest split between step-up,
//! deny and the default deny (the bench prints the mix). The outcome is `allow`, `step_up`
//! (AAL2 within 15 minutes) or `deny`.
//!
//! The model ([`model`]) is rendered twice: as stepgate YAML loaded by
//! `stepgate_config::load_str` ([`yaml`]), and as Cedar policies, entities and requests
//! ([`cedar`]).
//!
//! # What is and isn't equivalent
//!
//! Each policy's *condition* is expressed in both languages; the tests check, on every
//! generated request, that both engines reach the same verdict, the same deciding policy
//! and (for a step-up) the same requirement, with no Cedar evaluation error.
//!
//! ## The differences that dominate the timings
//!
//! Two differences in *how much work* each engine does, not in what it decides, account
//! for nearly all of the gap between the engines, and both favour stepgate:
//!
//! * **The per-app candidate index.** stepgate compiles, for each app, the list of
//!   policies that can apply to it (its own and the global ones) and evaluates only those;
//!   the unsliced Cedar set is one `PolicySet` that evaluates every policy's scope and
//!   conditions for every request. With `n / 10` apps, stepgate looks at about 10 + a few
//!   global policies whatever `n` is, unsliced Cedar at all `n`: the unsliced ratio grows
//!   with the number of apps and says little about the engines. The **sliced** Cedar arm
//!   ([`Fixture::cedar_sliced`]) gives Cedar the same index a latency-minded deployment
//!   would build: one `PolicySet` per app holding that app's policies and the global ones,
//!   picked by the request's app inside the timed region. That is the like-for-like
//!   comparison.
//! * **First match.** stepgate stops at the first matching policy by priority; Cedar
//!   evaluates every policy in the set it is given (it must, to know that no `forbid`
//!   applies and to report every determining policy). Even sliced, Cedar evaluates all
//!   ~10–20 candidate policies where stepgate often stops after a few. This one is
//!   inherent to the languages' combining rules and is left in.
//!
//! ## Differences in what each engine is handed
//!
//! * **Combining.** stepgate takes the first matching policy by priority; Cedar allows when
//!   some `permit` holds and no `forbid` does. The generator's default [`Layout::Layered`]
//!   gives every `deny` / `step_up` policy a lower priority number than every `allow` (how
//!   real sets are written), and under that ordering the two rules give the same verdict;
//!   stepgate's deciding policy is then the lowest-priority policy among Cedar's
//!   `reason()` set. [`Layout::Interleaved`] breaks that and the tests show the verdicts
//!   then differ.
//! * **Step-up.** Cedar has two effects. `step_up` becomes a `forbid` annotated
//!   `@outcome("step_up")`, `@min_aal` and `@max_age`: both engines agree the request is
//!   not allowed as it is; the requirement is read from the deciding policy's annotations
//!   (outside Cedar's decision) and compared with stepgate's. Step-up policies cycle
//!   through five requirements ([`model::Requirement::VARIANTS`]) so that a wrong deciding
//!   step-up policy shows as a wrong requirement.
//! * **Time.** Cedar has no time zones: the request builder converts the request time to
//!   each zone's local hour and weekday (with chrono-tz, as stepgate does) and puts them in
//!   the context, outside the timed region. stepgate does that conversion inside the
//!   decision.
//! * **Routes.** stepgate matches the method and path against the app's routes inside the
//!   decision; Cedar gets the matched route's tags precomputed in the context.
//! * **Versions.** Cedar has no version type: `os_version` `major.minor` is the number
//!   `major * 1000 + minor`. stepgate compares version strings component-wise.
//! * **Regex.** Cedar has no regular expressions; the only regexes generated are of the
//!   form `.*@domain\.tld`, which Cedar's `like "*@domain.tld"` matches identically.
//! * **Unknowns.** stepgate treats an absent value as "does not match" for positive tests
//!   and "matches" for negated ones; Cedar guards optional attributes with `has` to get the
//!   same truth table (`context has compliant && context.compliant == true`). Every request
//!   carries an IP (Cedar would error on a missing one; stepgate treats it as "in no
//!   zone"), and no IPv4-mapped IPv6 address (stepgate looks those up as IPv4, Cedar does
//!   not).
//! * **Entities.** Cedar reads users, groups and apps from one shared entity store built
//!   once; stepgate reads the user's groups and attributes from the request context.
//! * **Not generated:** report-only and disabled policies, sign-in targets, app tags,
//!   locations, user agents, certificates, velocity (Cedar has no report-only mode; the
//!   rest is left out to keep the two encodings checkably equal).

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{Authorizer, Decision as CedarDecision, Entities, PolicyId};
use stepgate_policy::{OutcomeKind, PolicySet, RequestContext};

pub mod cedar;
pub mod model;
pub mod yaml;

pub use model::{Layout, Requirement};

/// The fixture could not be built: a bug in the generator.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// stepgate refused the generated YAML.
    #[error("stepgate rejected the generated configuration:\n{0}")]
    Config(#[from] stepgate_config::ConfigError),
    /// Cedar refused a generated policy, entity or request.
    #[error("cedar rejected generated input: {0}")]
    Cedar(String),
}

/// One request, ready for both engines.
pub struct BenchRequest {
    /// The engine-neutral request it was rendered from.
    pub model: model::Request,
    /// stepgate's request context.
    pub context: RequestContext,
    /// Cedar's request (the entities are shared, in [`Fixture::cedar_entities`]).
    pub cedar: cedar_policy::Request,
    /// The app the request is for (Cedar's resource id): the key of its slice in
    /// [`Fixture::cedar_sliced`].
    pub app_id: String,
}

/// A generated policy set in both engines and the requests to decide.
pub struct Fixture {
    /// The engine-neutral policy set.
    pub model: model::Model,
    /// The stepgate configuration text.
    pub yaml: String,
    /// stepgate's compiled policy set.
    pub policy_set: Arc<PolicySet>,
    /// The Cedar policy text.
    pub cedar_text: String,
    /// Cedar's policy set, unsliced: every policy, evaluated for every request.
    pub cedar_policies: cedar_policy::PolicySet,
    /// Cedar's policy set sliced per app: each app's policies plus the global ones, keyed
    /// by app id ([`cedar::sliced_policy_sets`]).
    pub cedar_sliced: HashMap<String, cedar_policy::PolicySet>,
    /// Cedar's entity store.
    pub cedar_entities: Entities,
    /// The requests.
    pub requests: Vec<BenchRequest>,
    /// Each policy's priority by name, to find the deciding one among Cedar's reasons.
    priorities: HashMap<String, u32>,
}

/// Whether a request is allowed, which policy decided (`None`: the default deny), and for
/// a step-up what it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed as it is (a step-up is not allowed).
    pub allow: bool,
    /// The deciding policy.
    pub policy: Option<String>,
    /// The step-up requirement, when the deciding policy asks for one.
    pub step_up: Option<Requirement>,
}

/// Which Cedar policy set a verdict is taken from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CedarSet {
    /// The one set of every policy.
    Unsliced,
    /// The request's app's slice.
    Sliced,
}

/// How many requests each outcome got from stepgate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeMix {
    /// Allowed by a policy.
    pub allow: usize,
    /// Step-up required by a policy.
    pub step_up: usize,
    /// Denied by a policy.
    pub deny: usize,
    /// No policy matched: the default deny.
    pub default_deny: usize,
}

impl Fixture {
    /// `policies` policies and `requests` requests from `seed`, in the layered order.
    pub fn build(policies: usize, requests: usize, seed: u64) -> Result<Fixture, FixtureError> {
        Self::build_with(policies, requests, seed, Layout::Layered)
    }

    /// As [`Fixture::build`], with the policy order chosen.
    pub fn build_with(
        policies: usize,
        requests: usize,
        seed: u64,
        layout: Layout,
    ) -> Result<Fixture, FixtureError> {
        let model = model::Model::generate(policies, seed, layout);
        let yaml = yaml::config_yaml(&model);
        let config = stepgate_config::load_str("bench.yaml", &yaml, None)?;
        let cedar_text = cedar::policies_text(&model);
        let cedar_policies = cedar::policy_set(&model)?;
        let cedar_sliced = cedar::sliced_policy_sets(&model, &cedar_policies)?;
        let cedar_entities = cedar::entities(&model)?;
        let requests = model
            .requests(requests, seed)
            .into_iter()
            .map(|r| {
                Ok(BenchRequest {
                    context: yaml::request_context(&model, &r),
                    cedar: cedar::request(&model, &r)?,
                    app_id: model.apps[r.app].id.clone(),
                    model: r,
                })
            })
            .collect::<Result<Vec<_>, FixtureError>>()?;
        let priorities = model
            .policies
            .iter()
            .map(|p| (p.name.clone(), p.priority))
            .collect();
        Ok(Fixture {
            model,
            yaml,
            policy_set: config.policy_set,
            cedar_text,
            cedar_policies,
            cedar_sliced,
            cedar_entities,
            requests,
            priorities,
        })
    }

    /// stepgate's verdict on request `i`.
    pub fn stepgate_verdict(&self, i: usize) -> Verdict {
        let d = self.policy_set.decide(&self.requests[i].context);
        Verdict {
            allow: d.kind() == OutcomeKind::Allow,
            policy: d.policy.map(str::to_string),
            step_up: d.outcome.requirement().map(stepgate_requirement),
        }
    }

    /// The slice of Cedar policies for request `i`'s app: what the sliced arm evaluates.
    pub fn cedar_slice(&self, i: usize) -> &cedar_policy::PolicySet {
        &self.cedar_sliced[&self.requests[i].app_id]
    }

    /// Cedar's verdict on request `i` from the unsliced set (see [`Fixture::cedar_verdict_from`]).
    pub fn cedar_verdict(&self, authorizer: &Authorizer, i: usize) -> Result<Verdict, String> {
        self.cedar_verdict_from(authorizer, i, CedarSet::Unsliced)
    }

    /// Cedar's verdict on request `i` from the given set: the deciding policy is the
    /// lowest-priority one among those Cedar reports as determining the decision, and a
    /// step-up's requirement is read from that policy's annotations. An evaluation error is
    /// an `Err` (Cedar would silently skip the policy, which would hide a broken encoding).
    pub fn cedar_verdict_from(
        &self,
        authorizer: &Authorizer,
        i: usize,
        which: CedarSet,
    ) -> Result<Verdict, String> {
        let set = match which {
            CedarSet::Unsliced => &self.cedar_policies,
            CedarSet::Sliced => self.cedar_slice(i),
        };
        let resp = authorizer.is_authorized(&self.requests[i].cedar, set, &self.cedar_entities);
        let errors: Vec<String> = resp
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let priority = |name: &str| self.priorities.get(name).copied().unwrap_or(u32::MAX);
        let policy = resp
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .min_by_key(|name| priority(name));
        let deciding = policy
            .as_deref()
            .and_then(|name| set.policy(&PolicyId::new(name)));
        let step_up = deciding
            .filter(|p| p.annotation("outcome") == Some("step_up"))
            .map(|p| {
                cedar::requirement(p)
                    .ok_or_else(|| format!("policy {} has no readable requirement", p.id()))
            })
            .transpose()?;
        Ok(Verdict {
            allow: resp.decision() == CedarDecision::Allow,
            policy,
            step_up,
        })
    }

    /// What stepgate decided across all the requests.
    pub fn outcome_mix(&self) -> OutcomeMix {
        let mut mix = OutcomeMix::default();
        for r in &self.requests {
            let d = self.policy_set.decide(&r.context);
            match (d.kind(), d.policy) {
                (_, None) => mix.default_deny += 1,
                (OutcomeKind::Allow, _) => mix.allow += 1,
                (OutcomeKind::StepUp, _) => mix.step_up += 1,
                (OutcomeKind::Deny, _) => mix.deny += 1,
            }
        }
        mix
    }
}

/// stepgate's requirement in the model's terms (`min_aal` and `max_age` are all the
/// generated policies set; anything else they would set reads as "no requirement").
fn stepgate_requirement(r: &stepgate_policy::StepUpRequirement) -> Requirement {
    use stepgate_policy::MaxAge;
    let max_age = match r.max_age {
        None => model::Freshness::Any,
        Some(MaxAge::EveryTime) => model::Freshness::EveryTime,
        Some(MaxAge::Within(d)) => {
            model::Freshness::WithinMinutes(u32::try_from(d.as_secs() / 60).unwrap_or(u32::MAX))
        }
    };
    Requirement {
        min_aal: r.min_aal.unwrap_or(0),
        max_age,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Cond, Effect};

    /// Every request: stepgate, unsliced Cedar and sliced Cedar give the same verdict,
    /// deciding policy and step-up requirement. Returns the mix and how many requests
    /// stepped up.
    fn check_equivalent(f: &Fixture, seed: u64) -> OutcomeMix {
        let policies = f.policy_set.len();
        let authorizer = Authorizer::new();
        for i in 0..f.requests.len() {
            let s = f.stepgate_verdict(i);
            assert_eq!(
                s.step_up.is_some(),
                !s.allow && s.policy.as_deref().is_some_and(|p| p.ends_with("step-up"))
            );
            for which in [CedarSet::Unsliced, CedarSet::Sliced] {
                let c = f
                    .cedar_verdict_from(&authorizer, i, which)
                    .unwrap_or_else(|e| panic!("cedar ({which:?}) error on request {i}: {e}"));
                assert_eq!(
                    s, c,
                    "request {i} ({:?}) differs from cedar ({which:?}) at {policies} policies, seed {seed}",
                    f.requests[i].model
                );
            }
        }
        f.outcome_mix()
    }

    #[test]
    fn same_verdict_deciding_policy_and_requirement_on_every_request() {
        let mut total = OutcomeMix::default();
        for (n, seed) in [(10, 1), (10, 2), (100, 3), (100, 4), (1000, 5)] {
            let f = Fixture::build(n, 1000, seed).expect("fixture builds");
            let mix = check_equivalent(&f, seed);
            assert!(mix.allow > 100, "{n}/{seed}: {mix:?}");
            total.allow += mix.allow;
            total.step_up += mix.step_up;
            total.deny += mix.deny;
            total.default_deny += mix.default_deny;
        }
        // Not a vacuous agreement: every kind of decision occurs, often.
        assert!(
            total.step_up > 300 && total.deny > 300 && total.default_deny > 100,
            "{total:?}"
        );
    }

    #[test]
    fn ten_thousand_policies_agree_on_as_many_requests_as_the_other_sizes() {
        let f = Fixture::build(10_000, 1000, 6).expect("fixture builds");
        let mix = check_equivalent(&f, 6);
        assert!(
            mix.allow > 100 && mix.step_up > 50 && mix.deny > 50,
            "{mix:?}"
        );
    }

    #[test]
    fn step_up_requirements_vary_and_are_compared() {
        // Every requirement variant decides some request, so a wrong deciding step-up
        // policy would show as a different requirement, not only as a different name.
        let f = Fixture::build(1000, 2000, 8).expect("fixture builds");
        let seen: std::collections::HashSet<_> = (0..f.requests.len())
            .filter_map(|i| f.stepgate_verdict(i).step_up)
            .map(|r| format!("{r:?}"))
            .collect();
        assert_eq!(seen.len(), Requirement::VARIANTS.len(), "{seen:?}");
        // And the comparison sees a requirement that differs.
        let authorizer = Authorizer::new();
        let i = (0..f.requests.len())
            .find(|&i| f.stepgate_verdict(i).step_up.is_some())
            .expect("some step-up");
        let mut c = f.cedar_verdict(&authorizer, i).expect("no cedar error");
        let mut other = c.step_up.expect("cedar reads the requirement");
        other.min_aal = if other.min_aal == 2 { 3 } else { 2 };
        c.step_up = Some(other);
        assert_ne!(f.stepgate_verdict(i), c);
    }

    #[test]
    fn slices_hold_the_apps_policies_and_the_global_ones() {
        let f = Fixture::build(1000, 10, 5).expect("fixture builds");
        let globals = f.model.policies.iter().filter(|p| p.app.is_none()).count();
        assert!(globals > 0);
        assert_eq!(f.cedar_sliced.len(), f.model.apps.len());
        for (a, app) in f.model.apps.iter().enumerate() {
            let own = f.model.policies.iter().filter(|p| p.app == Some(a)).count();
            assert_eq!(f.cedar_sliced[&app.id].policies().count(), own + globals);
        }
    }

    #[test]
    fn the_requests_exercise_every_policy_kind_both_ways() {
        // Across a 100-policy set, many distinct policies decide, of every effect.
        let f = Fixture::build(100, 2000, 7).expect("fixture builds");
        let mut deciding = std::collections::HashSet::new();
        for i in 0..f.requests.len() {
            if let Some(p) = f.stepgate_verdict(i).policy {
                deciding.insert(p);
            }
        }
        assert!(
            deciding.len() > 40,
            "only {} policies ever decide",
            deciding.len()
        );
        for kind in ["allow", "step-up", "deny"] {
            assert!(
                deciding.iter().any(|p| p.ends_with(kind)),
                "no {kind} policy decides"
            );
        }
    }

    #[test]
    fn generator_covers_every_condition_kind() {
        let m = model::Model::generate(1000, 5, Layout::Layered);
        let mut kinds = std::collections::HashSet::new();
        fn visit(c: &Cond, kinds: &mut std::collections::HashSet<std::mem::Discriminant<Cond>>) {
            kinds.insert(std::mem::discriminant(c));
            if let Cond::Not(inner) = c {
                visit(inner, kinds);
            }
        }
        for p in &m.policies {
            for c in &p.conds {
                visit(c, &mut kinds);
            }
        }
        assert_eq!(kinds.len(), 16, "every Cond variant is generated");
        assert!(m.policies.iter().any(|p| p.match_any));
        assert!(m
            .policies
            .iter()
            .any(|p| p.route.as_ref().is_some_and(|r| !r.methods.is_empty())));
        assert!(m.policies.iter().any(|p| p.app.is_none()));
    }

    #[test]
    fn generation_is_deterministic() {
        let a = Fixture::build(100, 50, 42).expect("fixture builds");
        let b = Fixture::build(100, 50, 42).expect("fixture builds");
        assert_eq!(a.yaml, b.yaml);
        assert_eq!(a.cedar_text, b.cedar_text);
        assert_eq!(a.model.apps.len(), 10);
        assert_eq!(a.policy_set.len(), 100);
        assert_eq!(a.cedar_policies.policies().count(), 100);
        let c = Fixture::build(100, 50, 43).expect("fixture builds");
        assert_ne!(a.yaml, c.yaml);
    }

    #[test]
    fn layered_order_puts_every_block_before_every_grant() {
        let m = model::Model::generate(1000, 9, Layout::Layered);
        let last_block = m
            .policies
            .iter()
            .filter(|p| p.effect != Effect::Allow)
            .map(|p| p.priority)
            .max();
        let first_grant = m
            .policies
            .iter()
            .filter(|p| p.effect == Effect::Allow)
            .map(|p| p.priority)
            .min();
        assert!(last_block < first_grant);
    }

    #[test]
    fn interleaved_order_is_where_first_match_and_forbid_overrides_disagree() {
        // The same kind of policies, priorities shuffled across outcomes: some request is
        // allowed by an early `allow` in stepgate and refused by a later-matching `forbid`
        // in Cedar. This is the combining difference the layered order removes.
        let f = Fixture::build_with(100, 2000, 11, Layout::Interleaved).expect("fixture builds");
        let authorizer = Authorizer::new();
        let differing = (0..f.requests.len())
            .filter(|&i| {
                let s = f.stepgate_verdict(i);
                let c = f.cedar_verdict(&authorizer, i).expect("no cedar error");
                s.allow != c.allow
            })
            .count();
        assert!(differing > 0);
    }

    #[test]
    fn one_policy_per_condition_kind_agrees_request_by_request() {
        // Sharper than the whole-set check: every generated condition alone, as a single
        // `allow` policy for one app, over the same requests.
        let base = model::Model::generate(300, 13, Layout::Layered);
        let mut conds: Vec<Cond> = Vec::new();
        for p in &base.policies {
            for c in &p.conds {
                if !conds.contains(c) {
                    conds.push(c.clone());
                }
            }
        }
        let mut probe = base.clone();
        probe.apps.truncate(1);
        probe.policies = conds
            .iter()
            .enumerate()
            .map(|(i, c)| model::Policy {
                name: format!("probe{i:04}"),
                priority: (i as u32 + 1) * 10,
                app: Some(0),
                route: None,
                match_any: false,
                conds: vec![c.clone()],
                effect: Effect::Allow,
                requirement: None,
            })
            .collect();
        let mut requests = base.requests(400, 13);
        for r in &mut requests {
            r.app = 0;
        }
        // Each probe policy on its own: allowed by both engines or by neither.
        let authorizer = Authorizer::new();
        let entities = cedar::entities(&probe).expect("entities");
        let contexts: Vec<_> = requests
            .iter()
            .map(|r| yaml::request_context(&probe, r))
            .collect();
        let cedar_requests: Vec<_> = requests
            .iter()
            .map(|r| cedar::request(&probe, r).expect("request"))
            .collect();
        let mut held = vec![0usize; probe.policies.len()];
        for (pi, p) in probe.policies.iter().enumerate() {
            let mut one = probe.clone();
            one.policies = vec![p.clone()];
            let set = stepgate_config::load_str("probe.yaml", &yaml::config_yaml(&one), None)
                .expect("probe yaml loads")
                .policy_set;
            let cedar_set = cedar::policy_set(&one).expect("probe cedar parses");
            for (r, (ctx, req)) in requests.iter().zip(contexts.iter().zip(&cedar_requests)) {
                let s = set.decide(ctx).kind() == OutcomeKind::Allow;
                let resp = authorizer.is_authorized(req, &cedar_set, &entities);
                assert_eq!(resp.diagnostics().errors().count(), 0);
                let c = resp.decision() == CedarDecision::Allow;
                assert_eq!(s, c, "condition {:?} on {r:?}", p.conds[0]);
                held[pi] += usize::from(s);
            }
        }
        // And each condition both holds and fails on some request (bar rare ones).
        let both_ways = held
            .iter()
            .filter(|&&h| h > 0 && h < requests.len())
            .count();
        assert!(
            both_ways * 10 >= held.len() * 9,
            "{both_ways} of {} conditions go both ways",
            held.len()
        );
    }

    #[test]
    fn cedar_text_reads_like_the_yaml() {
        let f = Fixture::build(10, 1, 1).expect("fixture builds");
        assert!(f.cedar_text.contains(
            "@outcome(\"allow\")\npermit (principal, action, resource == App::\"app-0000\")"
        ));
        assert!(f.yaml.contains("  - id: app-0000\n"));
    }
}
