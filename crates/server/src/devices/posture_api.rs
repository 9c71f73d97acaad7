//! The device API for UEM/MDM/EDR systems: `PUT {portal}/api/devices/posture` (one device,
//! or `{"devices": [...]}`) and `GET {portal}/api/devices/{id}`, each caller authenticated by
//! its own bearer token (stored as SHA-256) with scopes. Pushes are idempotent and audited;
//! a push that changes a device re-evaluates its live sessions and wakes waiting re-checks.
//!
//! Every request is counted against a budget (`devices.rate_limit.api`) before its body is
//! read or anything is audited: its source's when the token names one, else its client
//! address's, so neither a source gone wild nor a stranger guessing tokens gets unbounded work
//! or audit rows out of the API.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;
use stepgate_signals::config::{DeviceScope, DeviceSourceConfig};
use stepgate_signals::device::{
    apply_push, check_bulk, BulkPosturePush, DeviceApiAuthError, PosturePush, PushOutcome,
};

use super::rate_limit::{self, Admission, Budget, Endpoint};
use crate::app::responses::{json_error, Peer};
use crate::app::state::Shared;

fn auth_refused(e: &DeviceApiAuthError) -> Response {
    match e {
        DeviceApiAuthError::MissingScope { .. } => {
            json_error(StatusCode::FORBIDDEN, "insufficient_scope", &e.to_string())
        }
        _ => {
            let mut r = json_error(StatusCode::UNAUTHORIZED, "invalid_token", &e.to_string());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

/// Counts the request against its source's budget when its token names a source (with or
/// without the scope asked for), else against its client address's; the answer to send
/// instead of handling it, when it does not fit.
async fn over_budget(
    st: &Shared,
    peer: &Peer,
    headers: &HeaderMap,
    auth: &Result<&DeviceSourceConfig, DeviceApiAuthError>,
) -> Option<Response> {
    let rt = st.runtime.load_full();
    let limits = &rt.config.devices.rate_limit.api;
    let address;
    let (budget, key, rate) = match auth {
        Ok(s) => (Budget::Source, s.name.as_str(), limits.per_source),
        Err(DeviceApiAuthError::MissingScope { source_name, .. }) => {
            (Budget::Source, source_name.as_str(), limits.per_source)
        }
        Err(_) => {
            let ip = crate::access::request::client_ip(&rt, peer.0, headers);
            address = rate_limit::address_key(ip);
            (Budget::Address, address.as_str(), limits.per_address)
        }
    };
    match rate_limit::admit(st, Endpoint::DeviceApi, budget, key, rate).await {
        Ok(Admission::Admit) => None,
        Ok(Admission::Refuse { retry_after }) => Some(rate_limit::with_retry_after(
            json_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!("too many device API requests; retry after {retry_after} s"),
            ),
            retry_after,
        )),
        Err(e) => {
            tracing::error!(error = %e, "hot store unavailable: device API request not handled");
            Some(rate_limit::with_retry_after(
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the device API is unavailable; retry later",
                ),
                5,
            ))
        }
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn audit(st: &Shared, kind: &str, source: &str, subject: &str, detail: serde_json::Value) {
    let mut e = stepgate_store::NewAuditEvent::now(kind);
    e.actor = Some(format!("device-source:{source}"));
    e.subject = Some(subject.to_string());
    e.detail = detail;
    if let Err(err) = st.stores.durable.append_audit(&e).await {
        tracing::error!(error = %err, kind, "audit append failed");
    }
}

/// `PUT {portal}/api/devices/posture`.
pub async fn put_posture(
    State(st): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let auth = st
        .signals
        .device_api
        .authenticate(authorization(&headers), DeviceScope::DevicesWrite);
    if let Some(refused) = over_budget(&st, &peer, &headers, &auth).await {
        return refused;
    }
    let source = match auth {
        Ok(s) => s.clone(),
        Err(e) => return auth_refused(&e),
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("the body is not JSON: {e}"),
            )
        }
    };
    let bulk = value.get("devices").is_some();
    let pushes: Vec<PosturePush> = if bulk {
        match serde_json::from_value::<BulkPosturePush>(value) {
            Ok(b) => {
                if let Err(e) = check_bulk(&b) {
                    return json_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string());
                }
                b.devices
            }
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("expected {{\"devices\": [posture, …]}}: {e}"),
                )
            }
        }
    } else {
        match serde_json::from_value::<PosturePush>(value) {
            Ok(p) => vec![p],
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("expected a device posture object (see docs/devices.md): {e}"),
                )
            }
        }
    };
    let now = Utc::now();
    let mut results = Vec::with_capacity(pushes.len());
    for push in &pushes {
        let existing = match st.devices.load(&push.device_id).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "device registry unavailable");
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the device registry is unavailable; retry later",
                );
            }
        };
        match apply_push(existing, push, &source, now) {
            Ok((device, outcome)) => {
                if matches!(outcome, PushOutcome::Created | PushOutcome::Updated) {
                    if let Err(e) = st.devices.save(&device, now).await {
                        tracing::error!(error = %e, "device registry unavailable");
                        return json_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "temporarily_unavailable",
                            "the device registry is unavailable; retry later",
                        );
                    }
                    audit(
                        &st,
                        "device.posture",
                        &source.name,
                        &device.id,
                        json!({ "result": outcome, "owner": device.owner }),
                    )
                    .await;
                    super::reevaluate::device_sessions(&st, &device.id).await;
                    st.signals.hub.notify(&device.id);
                }
                results.push(json!({ "device_id": device.id, "result": outcome }));
            }
            Err(e) => {
                audit(
                    &st,
                    "device.posture.refused",
                    &source.name,
                    &push.device_id,
                    json!({ "error": e.to_string() }),
                )
                .await;
                if !bulk {
                    return json_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string());
                }
                results.push(json!({ "device_id": push.device_id, "error": e.to_string() }));
            }
        }
    }
    if bulk {
        Json(json!({ "results": results })).into_response()
    } else {
        Json(results.pop().unwrap_or_default()).into_response()
    }
}

/// `GET {portal}/api/devices/{id}`: the stored device with its current compliance verdict.
pub async fn get_device(
    State(st): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let auth = st
        .signals
        .device_api
        .authenticate(authorization(&headers), DeviceScope::DevicesRead);
    if let Some(refused) = over_budget(&st, &peer, &headers, &auth).await {
        return refused;
    }
    if let Err(e) = auth {
        return auth_refused(&e);
    }
    let rt = st.runtime.load_full();
    match st.devices.load(&id).await {
        Ok(Some(d)) => {
            let verdict = d.compliance(
                &rt.config.compliance_policies,
                rt.config.devices.compliance.max_posture_age.0,
                Utc::now(),
            );
            Json(json!({ "device": d, "compliance": verdict })).into_response()
        }
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no device `{id}` in the registry"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "device registry unavailable");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the device registry is unavailable; retry later",
            )
        }
    }
}
