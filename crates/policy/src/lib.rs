//! stepgate's pure decision core.
//!
//! Given a fully gathered [`RequestContext`] (who, from what device, from where, when, for
//! which app and route), a compiled [`PolicySet`] answers allow, step up (with a
//! [`StepUpRequirement`]) or deny (with remediation), and on request explains itself with a
//! trace of every policy and condition it looked at.
//!
//! The crate does no I/O and no async. The configuration layer deserialises the admin's YAML
//! into the [`spec`] types and calls [`compile`], which checks everything (CIDRs, regexes,
//! time zones, ranges, references to apps and zones, unique priorities) and reports each
//! problem with its source span. Evaluation then does no parsing:
//!
//! * policies are sorted by priority and indexed per app and for the sign-in, so a request
//!   only looks at the policies that can target it;
//! * every network zone and inline CIDR list is flattened into one sorted interval table,
//!   so "which zones contain this IP" is a single binary search;
//! * regexes are compiled once, strings are owned once, sets are bit masks.
//!
//! [`PolicySet::decide`] is the allocation-free fast path; [`PolicySet::explain`] gives the
//! same decision with a trace and is what `stepgate what-if` prints.
//!
//! What does not belong here: gathering the context (signals, sessions, stores — the
//! server's access pipeline does that and is the only caller of `decide`/`explain`), and
//! judging a decision against a session's factors (the server's `access::judge`).

pub mod compile;
pub mod context;
pub mod duration;
pub mod eval;
pub mod netindex;
pub mod outcome;
pub mod path;
pub mod spec;
pub mod version;

pub use compile::{compile, OwnApp, PolicyInput, PolicySet, SignalsRead, SpecError};
pub use context::*;
pub use duration::HumanDuration;
pub use eval::{ConditionTrace, Decision, Explanation, PolicyTrace, ReportOnlyMatch};
pub use outcome::{
    DenyOutcome, Outcome, OutcomeKind, RemediationItem, StepUpRequirement, KNOWN_FACTORS,
};
pub use spec::MaxAge;
