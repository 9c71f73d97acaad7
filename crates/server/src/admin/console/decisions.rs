//! `{portal}/admin/decisions`: the decision log searched with filters (user, app, outcome,
//! policy, time; `admin::decisions::find`, the API's `GET /decisions`), each decision
//! linking to its trace view, `?id=REQUEST_ID` (the API's `GET /decisions/{id}`).

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDateTime, Utc};
use minijinja::context;

use super::{param, read, Admin};
use crate::admin::decisions::{find, record, traced_again, Search};
use crate::portal::error::PortalError;

/// The filters the page's form sends, and how far back `period` (`1h`, `24h`, `7d`) goes.
const PERIODS: [(&str, i64); 3] = [("1h", 1), ("24h", 24), ("7d", 24 * 7)];

/// A time field as RFC 3339: as typed, or a browser's `datetime-local` value read as UTC.
fn rfc3339(v: Option<&String>) -> Option<String> {
    let v = v.map(|s| s.trim()).filter(|s| !s.is_empty())?;
    Some(match NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M") {
        Ok(t) => t.and_utc().to_rfc3339(),
        Err(_) => v.to_string(),
    })
}

/// The search the page's filters ask for, 50 decisions a page.
fn search(q: &HashMap<String, String>) -> Search {
    let since = match q
        .get("period")
        .and_then(|p| PERIODS.iter().find(|(n, _)| *n == p.as_str()))
    {
        Some((_, hours)) => Some((Utc::now() - chrono::Duration::hours(*hours)).to_rfc3339()),
        None => rfc3339(q.get("since")),
    };
    Search {
        user: param(q, "user"),
        app: param(q, "app"),
        outcome: param(q, "outcome"),
        policy: param(q, "policy"),
        since,
        until: rfc3339(q.get("until")),
        limit: Some("50".into()),
        cursor: param(q, "cursor"),
    }
}

/// The next page's query: the same filters, from `cursor`.
fn next_page(q: &HashMap<String, String>, cursor: &str) -> String {
    let mut u = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in q {
        if k != "cursor" {
            u.append_pair(k, v);
        }
    }
    u.append_pair("cursor", cursor);
    u.finish()
}

/// `GET {portal}/admin/decisions?id=` (one decision and its trace) or `?user=&app=&
/// outcome=&policy=&period=&since=&until=&cursor=` (the log, newest first).
pub async fn page(
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let id = q
        .get("id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !id.is_empty() {
        return one(&a, &id).await;
    }
    let (status, (items, next), error) = read(find(&a.st, search(&q)).await);
    let next = next.map(|c| next_page(&q, &c));
    let rt = a.st.runtime.load_full();
    let apps: Vec<&str> = rt.config.apps.iter().map(|x| x.id.as_str()).collect();
    let policies: Vec<&str> = rt.config.policies.iter().map(|p| p.name.as_str()).collect();
    Ok(a.render(
        status,
        "admin_decisions.html",
        context! {
            items => items, next => next, error => error, f => q, apps => apps,
            policies => policies, periods => PERIODS.map(|(n, _)| n),
        },
    ))
}

/// One decision by request id, and its trace.
async fn one(a: &Admin, id: &str) -> Result<Response, PortalError> {
    let found = if id.len() > 128 {
        None
    } else {
        match record(&a.st, id).await {
            Ok(d) => Some(d),
            Err(p) if p.status == 404 => None,
            Err(p) => return Err(PortalError::StoreDown(p.detail.clone())),
        }
    };
    let (trace, again) = match &found {
        Some(d) => match traced_again(&a.st, d) {
            Ok(Some(e)) => (serde_json::to_value(e).ok(), true),
            _ => (d.detail.member("trace"), false),
        },
        None => (None, false),
    };
    Ok(a.render(
        if found.is_some() {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        "admin_decision.html",
        context! {
            id => id, missing => found.is_none(), d => found, trace => trace,
            traced_again => again,
        },
    ))
}
