//! Decisions: the decision log searched (newest first, a cursor for the next page), one
//! decision shown with its trace, and one decided again under the configuration in force
//! through the access pipeline (`access::what_if`, as `stepgate explain --rerun` does); and
//! every decision of a period decided again under a draft (`access::replay`, as `stepgate
//! replay` does).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use stepgate_policy::{Explanation, RequestContext};
use stepgate_store::{DecisionQuery, DecisionRecord};

use super::problem::{Params, Problem};
use super::Page;
use crate::access::replay::{self, same_decision};
use crate::app::state::Shared;

/// The query of `GET /decisions` (and of the console's decisions page).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Only this username's.
    pub user: Option<String>,
    /// Only this app's.
    pub app: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only those this policy decided.
    pub policy: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// The previous page's `next`.
    pub cursor: Option<String>,
}

/// The outcomes a decision can have.
const OUTCOMES: [&str; 5] = ["allow", "step_up", "deny", "sign_in", "unavailable"];

/// An RFC 3339 time parameter.
pub fn time_param(name: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, Problem> {
    v.as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    Problem::bad_field(name, format!("{name} must be an RFC 3339 time such as 2026-01-31T09:00:00Z, not `{t}`: {e}"))
                })
        })
        .transpose()
}

/// A `limit` parameter (default 50, capped).
pub fn limit_param(v: &Option<String>) -> Result<u32, Problem> {
    let n = match v {
        None => super::DEFAULT_LIMIT,
        Some(t) => t.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Problem::bad_field(
                "limit",
                format!("limit must be a whole number from 1, not `{t}`"),
            )
        })?,
    };
    Ok(n.min(super::MAX_LIMIT) as u32)
}

/// `GET /decisions`.
pub async fn search(
    State(st): State<Shared>,
    Params(q): Params<Search>,
) -> Result<Response, Problem> {
    let (items, next) = find(&st, q).await?;
    Ok(Json(Page {
        items,
        total: None,
        next,
    })
    .into_response())
}

/// The decisions `q` asks for, newest first, and the cursor of the next page (none on the
/// last): the API's search and the console's decisions page.
pub async fn find(
    st: &Shared,
    q: Search,
) -> Result<(Vec<DecisionRecord>, Option<String>), Problem> {
    if let Some(o) = &q.outcome {
        if !OUTCOMES.contains(&o.as_str()) {
            return Err(Problem::bad_field(
                "outcome",
                format!("outcome `{o}` is not one of {}", OUTCOMES.join(", ")),
            ));
        }
    }
    let after = match &q.cursor {
        None => None,
        Some(c) => {
            let bad = || {
                Problem::bad_field(
                    "cursor",
                    "cursor is not one this API gave (use a page's `next`)",
                )
            };
            let (ms, id) = c.split_once('.').ok_or_else(bad)?;
            let ms: i64 = ms.parse().map_err(|_| bad())?;
            let t = DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(bad)?;
            Some((t, id.to_string()))
        }
    };
    let limit = limit_param(&q.limit)?;
    let query = DecisionQuery {
        user: q.user,
        app: q.app,
        outcome: q.outcome,
        policy: q.policy,
        since: time_param("since", &q.since)?,
        until: time_param("until", &q.until)?,
        oldest_first: false,
        after,
        limit,
    };
    written(st).await;
    let items = st.stores.durable.list_decisions(&query).await?;
    let next = (items.len() == limit as usize)
        .then(|| {
            items
                .last()
                .map(|d| format!("{}.{}", d.time.timestamp_millis(), d.request_id))
        })
        .flatten();
    Ok((items, next))
}

/// How many of the last 24 hours' decisions [`last_day`] reads at most.
pub const DAY_SCAN: u32 = 10_000;

/// The decisions of the last 24 hours (newest first, at most [`DAY_SCAN`]), and when the
/// period began: the policies' report-only impact and the console's dashboard.
pub async fn last_day(st: &Shared) -> Result<(DateTime<Utc>, Vec<DecisionRecord>), Problem> {
    let since = Utc::now() - chrono::Duration::hours(24);
    let recent = st
        .stores
        .durable
        .list_decisions(&DecisionQuery {
            since: Some(since),
            limit: DAY_SCAN,
            ..Default::default()
        })
        .await?;
    Ok((since, recent))
}

/// The decision recorded for request `id`; 404 when none is.
pub async fn record(st: &Shared, id: &str) -> Result<DecisionRecord, Problem> {
    written(st).await;
    st.stores.durable.get_decision(id).await?.ok_or_else(|| {
        Problem::not_found(format!(
            "no decision is recorded for request `{id}` (check the id; decisions older than log.decisions.retention are deleted)"
        ))
    })
}

/// The context a record was decided on, when it reached the policies.
pub fn context_of(d: &DecisionRecord) -> Result<Option<RequestContext>, Problem> {
    replay::context_of(d).map_err(|e| {
        Problem::unprocessable(
            "unreadable-record",
            format!(
                "the context recorded for {} does not read: {e}",
                d.request_id
            ),
        )
    })
}

/// The records the decision log's writer still gathers (up to half a second's) written
/// first, so that a request id a user was just shown can be looked up at once; bounded, so
/// that a writer waiting for an unreachable store does not hold the read up.
async fn written(st: &Shared) {
    if let Some(log) = st.access.decision_log() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), log.flush()).await;
    }
}

/// `GET /decisions/{request_id}`: the record, and its trace — as recorded, or (an allowed
/// request's, which is recorded without one) worked out again from its context under the
/// configuration in force.
pub async fn show(State(st): State<Shared>, Path(id): Path<String>) -> Result<Response, Problem> {
    let d = record(&st, &id).await?;
    let traced_again = traced_again(&st, &d)?;
    Ok(Json(json!({ "decision": d, "traced_again": traced_again })).into_response())
}

/// The trace of a decision recorded without one (an allowed request's), worked out again
/// from its context under the configuration in force; none when it has one or never
/// reached the policies.
pub fn traced_again(st: &Shared, d: &DecisionRecord) -> Result<Option<Explanation>, Problem> {
    let recorded = d.detail.member("trace").is_some();
    Ok(match (recorded, context_of(d)?) {
        (false, Some(ctx)) => Some(replay::trace(&st.runtime.load(), &ctx)),
        _ => None,
    })
}

/// `POST /decisions/{request_id}/rerun`.
pub async fn rerun(State(st): State<Shared>, Path(id): Path<String>) -> Result<Response, Problem> {
    let d = record(&st, &id).await?;
    let Some(ctx) = context_of(&d)? else {
        return Err(Problem::unprocessable(
            "never-decided",
            format!("request `{id}` never reached the policies (outcome {}): there is no context to decide again", d.outcome),
        ));
    };
    let rt = st.runtime.load_full();
    let e = replay::redecide(&rt, &ctx, None).await.ok_or_else(|| {
        Problem::unprocessable(
            "never-decided",
            "the recorded context did not reach the policies",
        )
    })?;
    let changed = !same_decision(&d, &e);
    Ok(Json(json!({
        "request_id": d.request_id,
        "config_version": rt.config.version,
        "recorded": { "outcome": d.policy_outcome, "policy": d.policy },
        "now": e,
        "changed": changed,
    }))
    .into_response())
}

/// The query of `POST /decisions/replay`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    since: Option<String>,
    examples: Option<usize>,
    policies_only: Option<bool>,
}

/// `POST /decisions/replay`: the body is a draft — a whole configuration (as `POST
/// /policies/validate` takes one), or with `policies_only=true` a policy set loaded with the
/// configuration files in force (as a saved version is). Every decision recorded over
/// `since` (default `24h`) is decided again under it: how many would change, grouped by app
/// and policy, with examples.
pub async fn replay_draft(
    State(st): State<Shared>,
    Params(q): Params<ReplayQuery>,
    body: String,
) -> Result<Response, Problem> {
    let since: stepgate_policy::HumanDuration = q
        .since
        .as_deref()
        .unwrap_or("24h")
        .parse()
        .map_err(|e| Problem::bad_field("since", format!("since: {e}")))?;
    if body.trim().is_empty() {
        return Err(Problem::bad_request("send the draft (YAML) as the body"));
    }
    let from = Utc::now() - chrono::Duration::from_std(since.0).unwrap_or_default();
    let st2 = st.clone();
    let policies_only = q.policies_only.unwrap_or(false);
    let loaded = tokio::task::spawn_blocking(move || {
        if policies_only {
            let name = crate::app::stored_policies::source_name(None);
            crate::app::reload::load_config(&st2, Some((&name, &body))).map_err(|e| {
                e.unwrap_or_else(|| stepgate_config::ConfigError {
                    diagnostics: vec![stepgate_config::Diagnostic {
                        file: name.into(),
                        line: None,
                        column: None,
                        message: "this server runs the built-in demo configuration: there is no file to load a policy set with; send a whole configuration".into(),
                    }],
                })
            })
        } else {
            stepgate_config::load_str("draft.yaml", &body, None)
        }
    })
    .await
    .map_err(|e| Problem::unavailable("replay", e))?
    .map_err(super::policies::invalid_draft)?;
    let rt = crate::app::state::Runtime::new(loaded);
    let examples = q.examples.unwrap_or(3).min(20);
    let report = replay_since(&st, &rt, from, examples, usize::MAX).await?;
    Ok(Json(json!({ "draft_version": rt.config.version, "replay": report })).into_response())
}

/// [`replay::replay`] over this server's decision log, its errors as problem documents.
async fn replay_since(
    st: &Shared,
    rt: &crate::app::state::Runtime,
    from: DateTime<Utc>,
    examples: usize,
    max: usize,
) -> Result<replay::ReplayReport, Problem> {
    replay::replay(
        st.stores.durable.as_ref(),
        rt,
        from,
        examples,
        max,
        st.signals.geoip.as_deref(),
    )
    .await
    .map_err(|replay::ReplayError::Store(e)| Problem::from(e))
}

/// How many changed decisions [`replay_last_day`] names per group.
const REPLAY_EXAMPLES: usize = 3;

/// Every decision of the last 24 hours (at most [`DAY_SCAN`], as the console read them
/// before) decided again under `draft` through the access pipeline, as `stepgate replay
/// --since 24h` and `POST /decisions/replay` do (one [`replay::replay`]): how many reached
/// the policies, how many would change, grouped by app, outcome before and after and the
/// deciding policies, with example request ids.
pub async fn replay_last_day(
    st: &Shared,
    draft: stepgate_config::Config,
) -> Result<serde_json::Value, Problem> {
    let rt = crate::app::state::Runtime::new(draft);
    let from = Utc::now() - chrono::Duration::hours(24);
    let report = replay_since(st, &rt, from, REPLAY_EXAMPLES, DAY_SCAN as usize).await?;
    serde_json::to_value(report).map_err(|e| Problem::unavailable("replay", e))
}
