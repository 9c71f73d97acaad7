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

/// The query of `GET /audit` (and of the console's audit page).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only events this user did or underwent.
    pub user: Option<String>,
    /// Only events from this client address.
    pub address: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// Only events after this sequence number.
    pub after_seq: Option<String>,
    /// `true` for newest first.
    pub newest_first: Option<String>,
    /// Page size.
    pub limit: Option<String>,
}

/// `GET /audit`.
pub async fn search(
    State(st): State<Shared>,
    Params(q): Params<Search>,
) -> Result<Response, Problem> {
    let query = query(q)?;
    let items = st.stores.durable.list_audit(&query).await?;
    // Paging forward by sequence number (append order only).
    let next = (!query.newest_first && items.len() == query.limit as usize)
        .then(|| items.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(json!({ "items": items, "next_after_seq": next })).into_response())
}

/// The store's query for `q`, or a 400 problem naming the parameter that does not read.
pub fn query(q: Search) -> Result<AuditQuery, Problem> {
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
    Ok(AuditQuery {
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
    })
}

/// The most events one export writes (a bigger one: `stepgate audit export`).
pub const EXPORT_MAX: usize = 100_000;

/// Every event `q` matches, in append order (at most [`EXPORT_MAX`]), one JSON document a
/// line: stepgate's record (`jsonl`, as `stepgate audit export` writes it) or its OCSF
/// event (`ocsf`, the mapping the SIEM streams use) — the lines `GET /audit/export`
/// streams, gathered for the console's download.
pub async fn export_text(st: &Shared, mut q: AuditQuery, ocsf: bool) -> Result<String, Problem> {
    use crate::siem::export::{line, next_page};
    let format = if ocsf {
        stepgate_config::AuditStreamFormat::Ocsf
    } else {
        stepgate_config::AuditStreamFormat::Jsonl
    };
    let (mut out, mut n) = (String::new(), 0usize);
    while n < EXPORT_MAX {
        let page = next_page(st.stores.durable.as_ref(), &mut q).await?;
        if page.is_empty() {
            break;
        }
        for e in page.iter().take(EXPORT_MAX - n) {
            out.push_str(&line(e, format));
            out.push('\n');
            n += 1;
        }
    }
    Ok(out)
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
