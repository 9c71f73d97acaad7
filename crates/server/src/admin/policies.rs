//! Policies: the set in force in priority order, with what each report-only policy would
//! have done over the last 24 hours (from the decision log); a draft configuration
//! validated with positioned errors; and what-if through the access pipeline.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stepgate_policy::spec::OutcomeSpec;
use stepgate_policy::RequestContext;

use super::problem::{Body, Problem};
use crate::access::what_if::{what_if as decide, StatedFacts};
use crate::app::state::Shared;

/// `GET /policies`.
pub async fn list(State(st): State<Shared>) -> Result<Response, Problem> {
    Ok(Json(overview(&st).await?).into_response())
}

/// The policies in priority order with each one's report-only matches over the last 24
/// hours: `GET /policies`'s document, which the console's policies page shows.
pub async fn overview(st: &Shared) -> Result<serde_json::Value, Problem> {
    let rt = st.runtime.load_full();
    // Report-only impact: per policy, how often it matched and what it would have decided.
    let (since, recent) = super::decisions::last_day(st).await?;
    let mut impact: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for d in &recent {
        for r in d.report_only.as_array().into_iter().flatten() {
            if let (Some(p), Some(o)) = (r["policy"].as_str(), r["outcome"].as_str()) {
                *impact
                    .entry(p.into())
                    .or_default()
                    .entry(o.into())
                    .or_default() += 1;
            }
        }
    }
    let mut policies: Vec<_> = rt.config.policies.iter().collect();
    policies.sort_by_key(|p| *p.priority);
    let items: Vec<_> = policies
        .into_iter()
        .map(|p| {
            let mode = if !p.enabled {
                "disabled"
            } else if p.report_only {
                "report_only"
            } else {
                "enforced"
            };
            let outcome = match &p.outcome {
                OutcomeSpec::Allow => "allow",
                OutcomeSpec::StepUp(_) => "step_up",
                OutcomeSpec::Deny(_) => "deny",
            };
            let t = &p.targets;
            json!({
                "name": p.name.as_str(),
                "priority": *p.priority,
                "description": p.description,
                "mode": mode,
                "outcome": outcome,
                "targets": {
                    "sign_in": t.sign_in,
                    "apps": t.apps.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                    "app_tags": t.app_tags,
                    "route_tags": t.routes.iter().flat_map(|r| r.tags.iter()).collect::<Vec<_>>(),
                },
                "conditions": p.conditions.len(),
                "report_only_last_24h": impact.get(p.name.as_str()),
            })
        })
        .collect();
    Ok(json!({
        "config_version": rt.config.version,
        "items": items,
        "impact_window": { "since": since, "decisions_read": recent.len() },
    }))
}

/// `POST /policies/validate`: the body is a whole draft configuration file (YAML). It is
/// loaded as `stepgate check` loads one (no `includes:`: they would name files on the
/// server); 200 with its version and counts when it loads, 422 with every error, each with
/// its line and column, when not.
pub async fn validate(body: String) -> Result<Response, Problem> {
    Ok(Json(check_draft(body).await?.0).into_response())
}

/// Loads a draft configuration as `POST /policies/validate` does (the console's validate
/// form too): its summary and the loaded configuration, or a 422 problem with every error
/// positioned.
pub async fn check_draft(
    body: String,
) -> Result<(serde_json::Value, stepgate_config::Config), Problem> {
    if body.trim().is_empty() {
        return Err(Problem::bad_request(
            "send the draft configuration (YAML) as the body",
        ));
    }
    let loaded =
        tokio::task::spawn_blocking(move || stepgate_config::load_str("draft.yaml", &body, None))
            .await
            .map_err(|e| Problem::unavailable("validator", e))?;
    match loaded {
        Ok(cfg) => Ok((
            json!({
                "valid": true,
                "version": cfg.version,
                "policies": cfg.policies.len(),
                "apps": cfg.apps.len(),
            }),
            cfg,
        )),
        Err(e) => Err(invalid_draft(e)),
    }
}

/// The 422 for a draft that does not load: every error with its line and column.
pub fn invalid_draft(e: stepgate_config::ConfigError) -> Problem {
    let errors: Vec<_> = e
        .diagnostics
        .iter()
        .map(|d| json!({ "file": d.file, "line": d.line, "column": d.column, "message": d.message, "text": d.to_string() }))
        .collect();
    let mut p = Problem::unprocessable(
        "invalid-configuration",
        format!(
            "the draft has {} error(s); each is in `errors` with its line and column",
            errors.len()
        ),
    );
    p.errors = Some(serde_json::Value::Array(errors));
    p
}

/// `POST /policies/what-if`: the body is a request context, as `stepgate what-if` reads.
pub async fn what_if(
    State(st): State<Shared>,
    Body(ctx): Body<RequestContext>,
) -> Result<Response, Problem> {
    Ok(Json(decide_stated(&st, &ctx).await?).into_response())
}

/// Decides a stated request context under the configuration in force through the access
/// pipeline (`access::what_if`): `POST /policies/what-if`'s answer, and the console's.
pub async fn decide_stated(
    st: &Shared,
    ctx: &RequestContext,
) -> Result<serde_json::Value, Problem> {
    let rt = st.runtime.load_full();
    let source = StatedFacts::new(ctx, None, st.signals.geoip.as_deref());
    let (_, explained) = decide(&rt, ctx, &source).await;
    let explained = explained.ok_or_else(|| {
        Problem::unprocessable(
            "never-decided",
            "the stated request did not reach the policies",
        )
    })?;
    Ok(json!({
        "config_version": rt.config.version,
        "decision": explained.explanation,
        "context": { "network": explained.context.network, "risk": explained.context.risk },
    }))
}
