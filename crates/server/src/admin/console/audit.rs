//! `{portal}/admin/audit`: the audit log searched (kind, actor, user, address, time;
//! `admin::audit::query`, the API's `GET /audit`), newest first, and the same search
//! downloaded as JSON lines or OCSF (`admin::audit::export`, the mapping `stepgate audit
//! export` and the SIEM streams use).

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minijinja::context;

use super::{param, read, shown, Admin};
use crate::admin::audit::{export_text as export_events, query, Search};
use crate::portal::error::PortalError;

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
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
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
    let (status, events, error) = read(found);
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
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let ocsf = match q.get("format").map(String::as_str) {
        None | Some("jsonl") => false,
        Some("ocsf") => true,
        Some(other) => {
            let text = format!("format must be jsonl or ocsf, not `{other}`");
            return Ok(no_export(&a, &q, StatusCode::BAD_REQUEST, text));
        }
    };
    let body = match query(search(&q)) {
        Ok(qy) => export_events(&a.st, qy, ocsf).await,
        Err(p) => Err(p),
    };
    let body = match body {
        Ok(b) => b,
        Err(p) => {
            let (status, e) = shown(&p);
            return Ok(no_export(&a, &q, status, e));
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
    Ok(download(body, name))
}

/// The audit page with why the export was refused, and no events.
fn no_export(
    a: &Admin,
    q: &HashMap<String, String>,
    status: StatusCode,
    error: String,
) -> Response {
    a.render(
        status,
        "admin_audit.html",
        context! { events => Vec::<()>::new(), f => q, error => error },
    )
}

/// `body` as a download named `name`: JSON lines, never sniffed or cached.
fn download(body: String, name: &str) -> Response {
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
    r
}
