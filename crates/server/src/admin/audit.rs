//! The audit log: searched through the store's `list_audit`, and its hash chain verified
//! end to end (`verify_audit_chain`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use stepgate_store::AuditQuery;

use super::decisions::{limit_param, time_param};
use super::problem::{Params, Problem};
use crate::app::state::Shared;

/// The query of `GET /audit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    kind: Option<String>,
    actor: Option<String>,
    subject: Option<String>,
    user: Option<String>,
    address: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after_seq: Option<String>,
    newest_first: Option<String>,
    limit: Option<String>,
}

/// `GET /audit`.
pub async fn search(
    State(st): State<Shared>,
    Params(q): Params<Search>,
) -> Result<Response, Problem> {
    let after_seq = q
        .after_seq
        .as_deref()
        .map(|s| {
            s.parse::<i64>().map_err(|_| {
                Problem::bad_field(
                    "after_seq",
                    format!("after_seq must be a whole number, not `{s}`"),
                )
            })
        })
        .transpose()?;
    let newest_first = match q.newest_first.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(o) => {
            return Err(Problem::bad_field(
                "newest_first",
                format!("newest_first must be true or false, not `{o}`"),
            ))
        }
    };
    let limit = limit_param(&q.limit)?;
    let query = AuditQuery {
        kind: q.kind,
        actor: q.actor,
        subject: q.subject,
        user: q.user.into_iter().collect(),
        ip: q.address,
        since: time_param("since", &q.since)?,
        until: time_param("until", &q.until)?,
        after_seq,
        newest_first,
        limit,
    };
    let items = st.stores.durable.list_audit(&query).await?;
    // Paging forward by sequence number (append order only).
    let next = (!newest_first && items.len() == limit as usize)
        .then(|| items.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(json!({ "items": items, "next_after_seq": next })).into_response())
}

/// `GET /audit/verify`.
pub async fn verify(State(st): State<Shared>) -> Result<Response, Problem> {
    match stepgate_store::verify_audit_chain(st.stores.durable.as_ref()).await {
        Ok(n) => Ok(Json(json!({ "intact": true, "events": n })).into_response()),
        Err(stepgate_store::AuditChainError::Store(e)) => Err(Problem::unavailable("store", e)),
        Err(e) => Ok(Json(json!({ "intact": false, "error": e.to_string() })).into_response()),
    }
}
