//! Recorded decisions decided again: one (`explain --rerun`, the admin API's re-run) or
//! every one of a period under a draft configuration (`stepgate replay`, `POST
//! /decisions/replay`), through the what-if pipeline ([`super::what_if`]) with the facts the
//! record holds. What a re-decided record is compared on lives here once, for the CLI and
//! the API alike.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use stepgate_policy::{Explanation, OutcomeKind, RequestContext};
use stepgate_signals::geoip::GeoIp;
use stepgate_store::{DecisionQuery, DecisionRecord, DurableStore, StoreError};

use super::what_if::{what_if, StatedFacts};
use crate::app::state::Runtime;

/// The context `d` was decided on, when it reached the policies.
pub fn context_of(d: &DecisionRecord) -> Result<Option<RequestContext>, serde_json::Error> {
    Ok(d.detail
        .field::<Option<RequestContext>>("context")?
        .flatten())
}

/// Whether `e` (a decision again) is the recorded policy decision: the same outcome and,
/// for a step-up, the same requirement.
pub fn same_decision(d: &DecisionRecord, e: &Explanation) -> bool {
    let Some(before) = d.policy_outcome.as_deref() else {
        return true;
    };
    if before != e.outcome.as_str() {
        return false;
    }
    if e.outcome != OutcomeKind::StepUp {
        return true;
    }
    match d.detail.member("policy_requirement") {
        Some(was) => serde_json::to_value(&e.requirement).ok() == Some(was),
        // Recorded under a configuration no longer in force: the outcome alone compares.
        None => true,
    }
}

/// `ctx` decided under `rt` with the facts it states (and what `geoip` knows of its
/// address); `None` when it does not reach the policies.
pub async fn redecide(
    rt: &Runtime,
    ctx: &RequestContext,
    geoip: Option<&GeoIp>,
) -> Option<Explanation> {
    let source = StatedFacts::new(ctx, None, geoip);
    let (_, explained) = what_if(rt, ctx, &source).await;
    explained.map(|e| e.explanation)
}

/// The trace of `ctx` under the policies in force in `rt`, for a recorded decision that was
/// kept without one (an allowed request's). Explaining happens here, in the access room, so
/// that the policy set is consulted by the pipeline and its replays only.
pub fn trace(rt: &Runtime, ctx: &RequestContext) -> Explanation {
    rt.config.policy_set.explain(ctx)
}

/// Why a replay stopped: the decision log could not be read at all (a record that does not
/// read is skipped and counted in [`ReplayReport::unreadable`] instead).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The decision log could not be read.
    #[error("reading the decision log: {0}")]
    Store(#[from] StoreError),
}

/// One group of changed outcomes: the same app, outcomes and deciding policies.
#[derive(Debug, Serialize)]
pub struct Changed {
    /// The app (`(sign-in)` for a sign-in).
    pub app: String,
    /// The recorded outcome.
    pub from: String,
    /// The outcome under the draft.
    pub to: String,
    /// The policy that decided before (`(default)`: none).
    pub policy_before: String,
    /// The draft's deciding policy.
    pub policy_after: String,
    /// How many.
    pub count: usize,
    /// The first few request ids.
    pub examples: Vec<String>,
}

/// What a replay found.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    /// The start of the period.
    pub since: DateTime<Utc>,
    /// Decisions recorded in the period.
    pub decisions: usize,
    /// Those that reached the policies (and were decided again).
    pub compared: usize,
    /// Those whose outcome would change.
    pub changed: usize,
    /// Records that could not be decided again (a row or its recorded context does not
    /// read): skipped, counted here, and in neither `compared` nor `changed`.
    pub unreadable: usize,
    /// The first few of those, with why.
    pub unreadable_examples: Vec<String>,
    /// The changes, grouped by app, outcomes and policies.
    pub groups: Vec<Changed>,
}

/// A group's key: app, outcome before and after, policy before and after.
type GroupKey = (String, String, String, String, String);

/// Decides every decision `log` recorded since `since` (the oldest `max` of them) again
/// under `rt`, oldest first, and groups the changed outcomes (with up to `examples` request
/// ids each).
pub async fn replay(
    log: &dyn DurableStore,
    rt: &Runtime,
    since: DateTime<Utc>,
    examples: usize,
    max: usize,
    geoip: Option<&GeoIp>,
) -> Result<ReplayReport, ReplayError> {
    let mut q = DecisionQuery {
        since: Some(since),
        oldest_first: true,
        limit: 1000,
        ..Default::default()
    };
    let mut tally = Tally::default();
    while tally.total < max {
        let page = log.scan_decisions(&q).await?;
        let Some(last) = page.last() else { break };
        q.after = Some(match last {
            Ok(d) => (d.time, d.request_id.clone()),
            Err(u) => (u.time, u.request_id.clone()),
        });
        for row in page.iter().take(max - tally.total) {
            tally.total += 1;
            match row {
                Ok(d) => tally.redecide(d, rt, geoip, examples).await,
                Err(u) => tally.unreadable.skip(&u.request_id, &u.error),
            }
        }
    }
    Ok(tally.report(since))
}

/// What a replay has seen so far.
#[derive(Default)]
struct Tally {
    total: usize,
    compared: usize,
    changed: usize,
    unreadable: Unreadable,
    groups: Groups,
}

impl Tally {
    /// `d` decided again under `rt`: compared with what was recorded, unless its context
    /// does not read (skipped and counted) or it never reached the policies.
    async fn redecide(
        &mut self,
        d: &DecisionRecord,
        rt: &Runtime,
        geoip: Option<&GeoIp>,
        examples: usize,
    ) {
        let ctx = match context_of(d) {
            Ok(Some(ctx)) => ctx,
            Ok(None) => return,
            Err(e) => return self.unreadable.skip(&d.request_id, &e),
        };
        let Some(e) = redecide(rt, &ctx, geoip).await else {
            return;
        };
        self.compared += 1;
        if !same_decision(d, &e) {
            self.changed += 1;
            self.groups.add(d, &e, examples);
        }
    }

    fn report(self, since: DateTime<Utc>) -> ReplayReport {
        ReplayReport {
            since,
            decisions: self.total,
            compared: self.compared,
            changed: self.changed,
            unreadable: self.unreadable.count,
            unreadable_examples: self.unreadable.examples,
            groups: self.groups.into_changes(),
        }
    }
}

/// The changed outcomes, grouped.
#[derive(Default)]
struct Groups(BTreeMap<GroupKey, (usize, Vec<String>)>);

impl Groups {
    /// `d` decided `e` under the draft: counted in its group (named among the first
    /// `examples`).
    fn add(&mut self, d: &DecisionRecord, e: &Explanation, examples: usize) {
        let key = (
            d.app.clone().unwrap_or_else(|| "(sign-in)".into()),
            d.policy_outcome.clone().unwrap_or_default(),
            e.outcome.as_str().to_string(),
            d.policy.clone().unwrap_or_else(|| "(default)".into()),
            e.policy.clone().unwrap_or_else(|| "(default)".into()),
        );
        let g = self.0.entry(key).or_default();
        g.0 += 1;
        if g.1.len() < examples {
            g.1.push(d.request_id.clone());
        }
    }

    fn into_changes(self) -> Vec<Changed> {
        self.0
            .into_iter()
            .map(|((app, from, to, pb, pa), (count, examples))| Changed {
                app,
                from,
                to,
                policy_before: pb,
                policy_after: pa,
                count,
                examples,
            })
            .collect()
    }
}

/// The records a replay skipped.
#[derive(Default)]
struct Unreadable {
    count: usize,
    examples: Vec<String>,
}

impl Unreadable {
    /// How many skipped records a report names.
    const EXAMPLES: usize = 5;

    fn skip(&mut self, request_id: &str, why: &dyn std::fmt::Display) {
        self.count += 1;
        tracing::warn!(request_id, error = %why, "replay: a recorded decision does not read; skipped");
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(format!("{request_id}: {why}"));
        }
    }
}
