//! The judge stage: the policy's outcome against what the subject has shown — a session's
//! factors, a bearer token's claims, or nothing (a stated user) — comes to a [`Verdict`].
//! Pure.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use stepgate_authn::{Assurance, AssuranceConfig};
use stepgate_policy::{
    Decision, HumanDuration, MaxAge, Outcome, RequestContext, RequestKind, StepUpRequirement,
};

use super::bearer::token_meets;
use super::request::{Subject, Who};
use super::verdict::{Deny, Grant, StepUp, Verdict};
use crate::app::state::Runtime;
use crate::session::{Session, SessionData};

/// What a session marked by a signal (CAEP, an administrator) must pass before its next
/// request: a second factor, fresh.
pub fn fresh_second_factor() -> StepUpRequirement {
    StepUpRequirement {
        min_aal: Some(2),
        max_age: Some(MaxAge::Within(HumanDuration::from_secs(300))),
        ..StepUpRequirement::default()
    }
}

/// The verdict on `subject` for `decision` (made on `ctx`).
pub fn judge(
    rt: &Runtime,
    subject: Subject,
    decision: &Decision<'_>,
    ctx: &RequestContext,
    now: DateTime<Utc>,
) -> Verdict {
    let cfg = &rt.config.assurance;
    let sign_in = ctx.kind == RequestKind::SignIn;
    let marked = subject.who.session_data().is_some_and(|d| d.needs_step_up);
    let requirement = match decision.outcome {
        Outcome::Deny(d) => {
            let message = d.message.clone().unwrap_or_else(|| {
                if sign_in {
                    crate::i18n::t("reason-sign-in-denied")
                } else {
                    crate::i18n::t("reason-denied")
                }
            });
            return Verdict::Deny(Box::new(Deny {
                message,
                remediation: rt.config.policy_set.remediation(decision, ctx),
                policy: decision.policy.unwrap_or("default").to_string(),
                session: session_of(subject.who),
            }));
        }
        Outcome::Allow if !marked => None,
        // A signal asked for re-authentication.
        Outcome::Allow => Some(Cow::Owned(fresh_second_factor())),
        // Borrowed: copied only into a step-up verdict, not on every allowed request.
        Outcome::StepUp(q) => Some(Cow::Borrowed(q)),
    };
    // A session's assurance, assessed once for the requirement and the grant.
    let assurance = match &subject.who {
        Who::Session(s) => Some(crate::session::assurance(rt, &s.data)),
        _ => None,
    };
    if let Some(requirement) = requirement {
        if marked || !meets(&subject.who, assurance.as_deref(), &requirement, cfg, now) {
            let why = requirement.message.clone().unwrap_or_else(|| {
                let what = crate::i18n::describe(&requirement);
                let key = if sign_in {
                    "reason-signing-in-needs"
                } else {
                    "reason-this-needs"
                };
                crate::i18n::t_with(key, &[("what", what.into())])
            });
            return Verdict::StepUp(Box::new(StepUp {
                requirement: requirement.into_owned(),
                why,
                user: subject.user,
                session: session_of(subject.who),
            }));
        }
    }
    grant(subject.user, subject.who, assurance, cfg)
}

/// Whether what `who` has shown meets `req` (`assessed`: a session's assurance).
fn meets(
    who: &Who,
    assessed: Option<&Assurance>,
    req: &StepUpRequirement,
    cfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> bool {
    match who {
        Who::Session(s) => {
            // `judge` assesses every session before asking; without one, nothing is met.
            assessed
                .is_some_and(|a| stepgate_authn::meets_assessed(&s.data.factors, a, req, cfg, now))
        }
        Who::Prospective(d) => {
            stepgate_authn::satisfies(&d.auth_state(), req, cfg, &[], now).satisfied
        }
        Who::Bearer(id, _) => token_meets(id, req, cfg, now),
        // Stated, not shown: a requirement is never met.
        Who::Assumed => false,
    }
}

/// The session a refused subject has (or a sign-in would create, not yet stored).
fn session_of(who: Who) -> Option<Session> {
    match who {
        Who::Session(s) => Some(s),
        Who::Prospective(d) => Some(Session::unsaved(*d)),
        Who::Bearer(..) | Who::Assumed => None,
    }
}

fn grant(
    user: Arc<stepgate_store::UserRecord>,
    who: Who,
    assessed: Option<Arc<Assurance>>,
    cfg: &AssuranceConfig,
) -> Verdict {
    let (session, bearer) = match who {
        Who::Session(s) => (s, None),
        Who::Bearer(id, s) => (s, Some(id)),
        Who::Prospective(d) => (Session::unsaved(*d), None),
        Who::Assumed => (
            Session::unsaved(SessionData::stated(&user.id, &user.username, Utc::now())),
            None,
        ),
    };
    Verdict::Allow(Box::new(Grant {
        assurance: assessed.unwrap_or_else(|| Arc::new(session.data.assurance(cfg))),
        user,
        session,
        bearer,
    }))
}
