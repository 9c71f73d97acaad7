//! The audit log: searched through the store's `list_audit`, exported as JSON lines or OCSF
//! (`siem::export`, as `stepgate audit export` writes it), and its hash chain verified end
//! to end (`verify_audit_chain`).

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

/// The query of `GET /audit/export`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    format: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// `GET /audit/export`: every matching event in append order, one a line
/// (`application/x-ndjson`), streamed a page at a time.
pub async fn export(
    State(st): State<Shared>,
    Params(q): Params<Export>,
) -> Result<Response, Problem> {
    use crate::siem::export::{line, next_page};
    use stepgate_config::AuditStreamFormat;
    let format = match q.format.as_deref() {
        None | Some("jsonl") => AuditStreamFormat::Jsonl,
        Some("ocsf") => AuditStreamFormat::Ocsf,
        Some(o) => {
            return Err(Problem::bad_field(
                "format",
                format!("format must be jsonl or ocsf, not `{o}`"),
            ))
        }
    };
    let query = AuditQuery {
        kind: q.kind,
        since: time_param("since", &q.since)?,
        until: time_param("until", &q.until)?,
        ..Default::default()
    };
    let store = st.stores.durable.clone();
    let pages = futures_util::stream::unfold(Some(query), move |q| {
        let store = store.clone();
        async move {
            let mut q = q?;
            match next_page(store.as_ref(), &mut q).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let mut text = String::new();
                    for e in &page {
                        text.push_str(&line(e, format));
                        text.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(text)), Some(q)))
                }
                // The status is sent: a failure mid-way cuts the stream short, which the
                // client sees as an incomplete body.
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}
