//! What the pipeline comes to: one [`Verdict`] per request, rendered by each entry point in
//! its own way (a redirect, an RFC 9470 challenge, a blocked page, a 403 to a front proxy).

use std::sync::Arc;

use stepgate_authn::Assurance;
use stepgate_policy::{Outcome, RemediationItem, StepUpRequirement};
use stepgate_store::UserRecord;

use super::bearer::BearerIdentity;
use crate::session::Session;

/// The verdict on one request.
pub enum Verdict {
    /// Let it through as this subject.
    Allow(Box<Grant>),
    /// No (complete) session, or a bearer token that does not verify: sign in first.
    SignIn(SignInReason),
    /// The policy asks for more than the session has.
    StepUp(Box<StepUp>),
    /// Blocked by a policy.
    Deny(Box<Deny>),
    /// A store or signal source failed: refuse (fail closed).
    Unavailable(String),
}

/// Who an allowed request is let through as.
pub struct Grant {
    /// The user (from the store, or standing for a bearer token's subject).
    pub user: Arc<UserRecord>,
    /// The session (a stand-in for a bearer token; the would-be session at sign-in).
    pub session: Session,
    /// The assurance it reached (shared with the per-thread memo of [`crate::session::assurance`]).
    pub assurance: Arc<Assurance>,
    /// The verified bearer token, when the request was judged on one.
    pub bearer: Option<Box<BearerIdentity>>,
}

/// Why a request must sign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignInReason {
    /// No session cookie, or one naming no live, complete session.
    NoSession,
    /// A bearer token was sent and refused (RFC 6750 `invalid_token`).
    TokenRefused,
}

/// A step-up the request needs.
pub struct StepUp {
    /// What is required.
    pub requirement: StepUpRequirement,
    /// Why, in plain words.
    pub why: String,
    /// The user.
    pub user: Arc<UserRecord>,
    /// The session to step up: stored, or (with an empty id) the one a sign-in would
    /// create; none for a bearer token.
    pub session: Option<Session>,
}

/// A refusal by policy.
pub struct Deny {
    /// The reason.
    pub message: String,
    /// The failing checks and how to fix them.
    pub remediation: Vec<RemediationItem>,
    /// The deciding policy (`default` for the default outcome).
    pub policy: String,
    /// The session, when there is one (the blocked page shows who is signed in); an empty
    /// id for a sign-in's would-be session.
    pub session: Option<Session>,
}

/// The policy decision behind a verdict: what `stepgate what-if` prints and a decision log
/// records. Borrowed from the configuration it was made under.
#[derive(Clone, Copy, Debug)]
pub struct Decided<'rt> {
    /// The outcome.
    pub outcome: &'rt Outcome,
    /// The deciding policy (`None`: the default outcome).
    pub policy: Option<&'rt str>,
}

/// A verdict with the decision it came from (none when the request never reached the
/// policies: no session, a refused token, a failed store).
pub struct Judged<'rt> {
    /// The verdict.
    pub verdict: Verdict,
    /// The decision.
    pub decision: Option<Decided<'rt>>,
}

impl From<Verdict> for Judged<'_> {
    fn from(verdict: Verdict) -> Self {
        Judged {
            verdict,
            decision: None,
        }
    }
}
