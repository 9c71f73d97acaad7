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
//! generated request, that both engines reach the same verdict *and* the same deciding
//! policy, with no Cedar evaluation error. Where the languages differ:
//!
//! * **Combining.** stepgate takes the first matching policy by priority; Cedar allows when
//!   some `permit` holds and no `forbid` does. The generator's default [`Layout::Layered`]
//!   gives every `deny` / `step_up` policy a lower priority number than every `allow` (how
//!   real sets are written), and under that ordering the two rules give the same verdict;
//!   stepgate's deciding policy is then the lowest-priority policy among Cedar's
//!   `reason()` set. [`Layout::Interleaved`] breaks that and the tests show the verdicts
//!   then differ.
//! * **Step-up.** Cedar has two effects. `step_up` becomes a `forbid` annotated
//!   `@outcome("step_up")`: both engines agree the request is not allowed as it is; which
//!   requirement applies is recovered from the deciding policy, not from Cedar's decision.
//! * **Time.** Cedar has no time zones: the request builder converts the request time to
//!   each zone's local hour and weekday (with chrono-tz, as stepgate does) and puts them in
//!   the context. stepgate does that conversion inside the decision, Cedar gets it for free.
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

use std::sync::Arc;

use cedar_policy::{Authorizer, Decision as CedarDecision, Entities};
use stepgate_policy::{OutcomeKind, PolicySet, RequestContext};

pub mod cedar;
pub mod model;
pub mod yaml;

pub use model::Layout;

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
    /// Cedar's policy set.
    pub cedar_policies: cedar_policy::PolicySet,
    /// Cedar's entity store.
    pub cedar_entities: Entities,
    /// The requests.
    pub requests: Vec<BenchRequest>,
}

/// Whether a request is allowed, and which policy decided (`None`: the default deny).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed as it is (a step-up is not allowed).
    pub allow: bool,
    /// The deciding policy.
    pub policy: Option<String>,
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
        let cedar_entities = cedar::entities(&model)?;
        let requests = model
            .requests(requests, seed)
            .into_iter()
            .map(|r| {
                Ok(BenchRequest {
                    context: yaml::request_context(&model, &r),
                    cedar: cedar::request(&model, &r)?,
                    model: r,
                })
            })
            .collect::<Result<Vec<_>, FixtureError>>()?;
        Ok(Fixture {
            model,
            yaml,
            policy_set: config.policy_set,
            cedar_text,
            cedar_policies,
            cedar_entities,
            requests,
        })
    }

    /// stepgate's verdict on request `i`.
    pub fn stepgate_verdict(&self, i: usize) -> Verdict {
        let d = self.policy_set.decide(&self.requests[i].context);
        Verdict {
            allow: d.kind() == OutcomeKind::Allow,
            policy: d.policy.map(str::to_string),
        }
    }

    /// Cedar's verdict on request `i`: the deciding policy is the lowest-priority one among
    /// those Cedar reports as determining the decision. An evaluation error is an `Err`
    /// (Cedar would silently skip the policy, which would hide a broken encoding).
    pub fn cedar_verdict(&self, authorizer: &Authorizer, i: usize) -> Result<Verdict, String> {
        let resp = authorizer.is_authorized(
            &self.requests[i].cedar,
            &self.cedar_policies,
            &self.cedar_entities,
        );
        let errors: Vec<String> = resp
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let priority = |name: &str| {
            self.model
                .policies
                .iter()
                .find(|p| p.name == name)
                .map_or(u32::MAX, |p| p.priority)
        };
        let policy = resp
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .min_by_key(|name| priority(name));
        Ok(Verdict {
            allow: resp.decision() == CedarDecision::Allow,
            policy,
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

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Cond, Effect};

    fn check_equivalent(policies: usize, requests: usize, seed: u64) -> OutcomeMix {
        let f = Fixture::build(policies, requests, seed).expect("fixture builds");
        let authorizer = Authorizer::new();
        for i in 0..f.requests.len() {
            let s = f.stepgate_verdict(i);
            let c = f
                .cedar_verdict(&authorizer, i)
                .unwrap_or_else(|e| panic!("cedar error on request {i}: {e}"));
            assert_eq!(
                s, c,
                "request {i} ({:?}) differs at {policies} policies, seed {seed}",
                f.requests[i].model
            );
        }
        f.outcome_mix()
    }

    #[test]
    fn same_verdict_and_deciding_policy_on_every_request() {
        let mut total = OutcomeMix::default();
        for (n, seed) in [(10, 1), (10, 2), (100, 3), (100, 4), (1000, 5)] {
            let mix = check_equivalent(n, 1000, seed);
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
