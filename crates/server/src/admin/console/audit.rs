//! `{portal}/admin/audit`: the audit log searched (kind, actor, user, address, time;
//! `admin::audit::query`, the API's `GET /audit`), newest first, and the same search
//! downloaded as JSON lines or OCSF (`admin::audit::export`, the mapping `stepgate audit
//! export` and the SIEM streams use).

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::context;

use super::{param, shown, Admin};
use crate::admin::audit::{export_text as export_events, query, Search};
use crate::portal::error::PortalError;
use crate::portal::extract::{SignedIn, Visit};

/// The search the page's form sends.
fn search(q: &HashMap<String, String>) -> Search {
    let get = |k: &str| param(q, k);
    Search {
        kind: get("kind"),
        actor: get("actor"),
        subject: None,
        user: get("user"),
        address: get("address"),
        since: get("since"),
        until: get("until"),
        after_seq: None,
        newest_first: None,
        limit: None,
    }
}

/// `GET {portal}/admin/audit?kind=&actor=&user=&address=&since=&until=`.
pub async fn page(
    visit: Visit,
    signed: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let a = match Admin::check(visit, signed) {
        Ok(a) => a,
        Err(r) => return Ok(*r),
    };
    let found = match query(search(&q)) {
        Ok(mut qy) => {
            qy.newest_first = true;
            qy.limit = 100;
            a.st.stores
                .durable
                .list_audit(&qy)
                .await
                .map_err(crate::admin::Problem::from)
        }
        Err(p) => Err(p),
    };
    let (status, events, error) = match found {
        Ok(e) => (StatusCode::OK, e, None),
        Err(p) => {
            let (s, e) = shown(&p);
            (s, Vec::new(), Some(e))
        }
    };
    // The export links carry the same filters.
    let mut filters = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q {
        if k != "format" && !v.trim().is_empty() {
            filters.append_pair(k, v);
        }
    }
    Ok(a.render(
        status,
        "admin_audit.html",
        context! { events => events, f => q, error => error, filters => filters.finish() },
    ))
}

/// `GET {portal}/admin/audit/export?format=jsonl|ocsf&…`: the search's every event, oldest
/// first, as a download.
pub async fn export(
    visit: Visit,
    signed: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let a = match Admin::check(visit, signed) {
        Ok(a) => a,
        Err(r) => return Ok(*r),
    };
    let ocsf = match q.get("format").map(String::as_str) {
        None | Some("jsonl") => false,
        Some("ocsf") => true,
        Some(other) => {
            let text = format!("format must be jsonl or ocsf, not `{other}`");
            return Ok(a.render(
                StatusCode::BAD_REQUEST,
                "admin_audit.html",
                context! { events => Vec::<()>::new(), f => q, error => text },
            ));
        }
    };
    let body = match query(search(&q)) {
        Ok(qy) => export_events(&a.st, qy, ocsf).await,
        Err(p) => Err(p),
    };
    let body = match body {
        Ok(b) => b,
        Err(p) => {
            let (s, e) = shown(&p);
            return Ok(a.render(
                s,
                "admin_audit.html",
                context! { events => Vec::<()>::new(), f => q, error => e },
            ));
        }
    };
    super::audit_admin(
        &a.st,
        "admin.read",
        &a.caller(),
        None,
        "console.audit_export",
        serde_json::json!({ "format": if ocsf { "ocsf" } else { "jsonl" }, "bytes": body.len() }),
    )
    .await;
    let name = if ocsf {
        "audit-ocsf.jsonl"
    } else {
        "audit.jsonl"
    };
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}
