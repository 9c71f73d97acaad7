//! A recording Hexnode UEM on loopback, answering like Hexnode's documented REST API:
//! `GET /api/v1/devices/?page=N&per_page=S` as `{"count", "next", "previous", "results"}`
//! (summaries), `GET /api/v1/devices/{id}/` (the detail), `Authorization: <api key>`
//! required; faults (429 with `Retry-After`, 500) can be queued before the real answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

/// The API key the fake accepts.
pub const API_KEY: &str = "hexnode-test-api-key-0123456789";

/// What the fake Hexnode holds and what it was asked.
#[derive(Default)]
pub struct Fleet {
    /// Device id → its detail object.
    pub devices: BTreeMap<u64, Value>,
    /// Every request: path and query, and whether it carried the API key.
    pub log: Vec<(String, bool)>,
    /// Answers to give before the real one, in order (status, Retry-After).
    pub faults: Vec<(u16, Option<&'static str>)>,
    /// When set, the list answers these summaries page by page (whatever `per_page` asked)
    /// instead of the fleet's — duplicates, oversized pages; details still come from
    /// `devices`.
    pub pages: Option<Vec<Vec<Value>>>,
}

pub type Hexnode = Arc<Mutex<Fleet>>;

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(API_KEY)
}

/// Records the request and answers a queued fault or 401 when there is one.
fn gate(fleet: &Hexnode, h: &HeaderMap, what: String) -> Option<Response> {
    let mut f = fleet.lock().unwrap();
    f.log.push((what, authorized(h)));
    if !authorized(h) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"detail": "Invalid API key"})),
            )
                .into_response(),
        );
    }
    if !f.faults.is_empty() {
        let (status, retry) = f.faults.remove(0);
        let mut r = (StatusCode::from_u16(status).unwrap(), "{}").into_response();
        if let Some(s) = retry {
            r.headers_mut().insert("retry-after", s.parse().unwrap());
        }
        return Some(r);
    }
    None
}

async fn list(
    State(fleet): State<Hexnode>,
    h: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = gate(&fleet, &h, format!("list page={:?}", q.get("page"))) {
        return r;
    }
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(25);
    let f = fleet.lock().unwrap();
    if let Some(pages) = &f.pages {
        let results = pages.get(page - 1).cloned().unwrap_or_default();
        let next = (page < pages.len())
            .then(|| format!("/api/v1/devices/?page={}&per_page={per}", page + 1));
        let count: usize = pages.iter().map(Vec::len).sum();
        return Json(json!({"count": count, "next": next, "previous": null, "results": results}))
            .into_response();
    }
    let all: Vec<Value> = f
        .devices
        .values()
        .map(|d| {
            // The list entry is a summary; the detail has the rest.
            json!({"id": d["id"], "device_name": d["device_name"], "os_name": d["os_name"],
                   "serial_number": d["serial_number"], "last_reported": d["last_reported"]})
        })
        .collect();
    let results: Vec<Value> = all
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .cloned()
        .collect();
    let next = (page * per < all.len())
        .then(|| format!("/api/v1/devices/?page={}&per_page={per}", page + 1));
    Json(json!({"count": all.len(), "next": next, "previous": null, "results": results}))
        .into_response()
}

async fn detail(State(fleet): State<Hexnode>, h: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Some(r) = gate(&fleet, &h, format!("detail {id}")) {
        return r;
    }
    match fleet.lock().unwrap().devices.get(&id) {
        Some(d) => Json(d.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response(),
    }
}

pub fn device(id: u64, email: &str, compliant: bool, reported: &str) -> Value {
    let failures: Vec<Value> = if compliant {
        vec![]
    } else {
        vec![json!({"name": "FileVault disk encryption required"})]
    };
    json!({
        "id": id, "device_name": format!("mac-{id}"), "model_name": "MacBookPro18,3",
        "os_name": "macOS", "os_version": "15.1", "platform": "Mac",
        "serial_number": format!("C02X{id}"), "enrollment_status": "Enrolled",
        "user": {"name": "Jane", "email": email},
        "encryption_status": if compliant { "Yes" } else { "No" },
        "compliant": compliant, "compliance_failures": failures,
        "last_reported": reported,
    })
}

pub fn now_s(offset: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::seconds(offset)).to_rfc3339()
}

/// Serves the fake; its address.
pub async fn hexnode(fleet: &Hexnode) -> String {
    let app = axum::Router::new()
        .route("/api/v1/devices/", get(list))
        .route("/api/v1/devices/{id}/", get(detail))
        .with_state(fleet.clone());
    super::upstream::serve(app).await.to_string()
}
