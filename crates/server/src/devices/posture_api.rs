//! The device API for UEM/MDM/EDR systems and admins: `PUT {portal}/api/devices/posture`
//! (one device, or `{"devices": [...]}`), `GET` and `DELETE {portal}/api/devices/{id}`, each caller authenticated by
//! its own bearer token (stored as SHA-256) with scopes. Pushes are idempotent and audited;
//! a push that changes a device re-evaluates its live sessions and wakes waiting re-checks.
//!
//! Every request is counted against a budget (`devices.rate_limit.api`) before its body is
//! read or anything is audited: its source's when the token names one, else its client
//! address's, so neither a source gone wild nor a stranger guessing tokens gets unbounded work
//! or audit rows out of the API.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::json;
use stepgate_signals::config::{DeviceScope, DeviceSourceConfig};
use stepgate_signals::device::{
    apply_push, check_bulk, BulkPosturePush, Device, DeviceApiAuthError, PosturePush, PushOutcome,
};

use super::error::{ApiError, Endpoint::PostureApi};
use super::rate_limit::{self, Budget, Endpoint};
use crate::app::responses::Peer;
use crate::app::state::Shared;

/// Counts the request against its source's budget when its token names a source (with or
/// without the scope asked for), else against its client address's; then the source the
/// token authenticates with `scope`.
async fn admit(
    st: &Shared,
    peer: &Peer,
    headers: &HeaderMap,
    scope: DeviceScope,
) -> Result<DeviceSourceConfig, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let auth = st.signals.device_api.authenticate(authorization, scope);
    let rt = st.runtime.load_full();
    let limits = &rt.config.devices.rate_limit.api;
    let address;
    let (budget, key, rate) = match &auth {
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
    let too_many = "too many device API requests";
    rate_limit::admit_or_refuse(st, Endpoint::DeviceApi, budget, key, rate, too_many).await?;
    auth.cloned().map_err(|e| ApiError::from(&e))
}

pub(crate) async fn audit(
    st: &Shared,
    kind: &str,
    source: &str,
    subject: &str,
    detail: serde_json::Value,
) {
    let mut e = stepgate_store::NewAuditEvent::now(kind);
    e.actor = Some(format!("device-source:{source}"));
    e.subject = Some(subject.to_string());
    e.detail = detail;
    st.audit.append(e).await;
}

/// The pushes a body holds: one posture object, or `{"devices": [...]}` (bulk).
fn pushes(body: &[u8]) -> Result<(Vec<PosturePush>, bool), ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(PostureApi, format!("the body is not JSON: {e}")))?;
    if value.get("devices").is_none() {
        let p = serde_json::from_value::<PosturePush>(value).map_err(|e| {
            ApiError::invalid(
                PostureApi,
                format!("expected a device posture object (see docs/devices.md): {e}"),
            )
        })?;
        return Ok((vec![p], false));
    }
    let b = serde_json::from_value::<BulkPosturePush>(value).map_err(|e| {
        ApiError::invalid(
            PostureApi,
            format!("expected {{\"devices\": [posture, …]}}: {e}"),
        )
    })?;
    check_bulk(&b).map_err(|e| ApiError::invalid(PostureApi, e.to_string()))?;
    Ok((b.devices, true))
}

/// `PUT {portal}/api/devices/posture`.
pub async fn put_posture(
    State(st): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let source = admit(&st, &peer, &headers, DeviceScope::DevicesWrite).await?;
    let (pushes, bulk) = pushes(&body)?;
    let now = Utc::now();
    let mut results = Vec::with_capacity(pushes.len());
    for push in &pushes {
        match push_one(&st, &source, push, now).await? {
            Ok(r) => results.push(r),
            // One bad device of a bulk push is reported in its place; alone, it is the answer.
            Err(e) if !bulk => return Err(ApiError::invalid(PostureApi, e)),
            Err(e) => results.push(json!({ "device_id": push.device_id, "error": e })),
        }
    }
    Ok(if bulk {
        Json(json!({ "results": results })).into_response()
    } else {
        Json(results.pop().unwrap_or_default()).into_response()
    })
}

/// Applies one push: the device created or updated (audited, its sessions re-evaluated,
/// waiting re-checks woken), or left as it is; `Err` inside for a push the model refuses.
async fn push_one(
    st: &Shared,
    source: &DeviceSourceConfig,
    push: &PosturePush,
    now: DateTime<Utc>,
) -> Result<Result<serde_json::Value, String>, ApiError> {
    Ok(apply(st, source, push, now)
        .await?
        .map(|a| json!({ "device_id": a.device.id, "result": a.outcome })))
}

/// What one applied push did.
pub struct Applied {
    /// The device before (none when it is new).
    pub before: Option<Device>,
    /// The device as stored now.
    pub device: Device,
    /// Created, updated, unchanged or stale.
    pub outcome: PushOutcome,
}

/// Applies one push from `source` (the posture API's, or a connector's): the device
/// created or updated, audited (`device.posture`), its live sessions re-evaluated and
/// waiting re-checks woken; `Err` inside for a push the model refuses (audited
/// `device.posture.refused`).
pub async fn apply(
    st: &Shared,
    source: &DeviceSourceConfig,
    push: &PosturePush,
    now: DateTime<Utc>,
) -> Result<Result<Applied, String>, ApiError> {
    let unavailable = |e| ApiError::unavailable(PostureApi, "device registry", e);
    let existing = st
        .devices
        .load(&push.device_id)
        .await
        .map_err(unavailable)?;
    let before = existing.clone();
    let (device, outcome) = match apply_push(existing, push, source, now) {
        Ok(x) => x,
        Err(e) => {
            let detail = json!({ "error": e.to_string() });
            audit(
                st,
                "device.posture.refused",
                &source.name,
                &push.device_id,
                detail,
            )
            .await;
            return Ok(Err(e.to_string()));
        }
    };
    if matches!(outcome, PushOutcome::Created | PushOutcome::Updated) {
        st.devices.save(&device, now).await.map_err(unavailable)?;
        let detail = json!({ "result": outcome, "owner": device.owner });
        audit(st, "device.posture", &source.name, &device.id, detail).await;
        super::reevaluate::device_sessions(st, &device.id).await;
        st.signals.hub.notify(&device.id);
    }
    Ok(Ok(Applied {
        before,
        device,
        outcome,
    }))
}

/// `GET {portal}/api/devices/{id}`: the stored device with its current compliance verdict.
pub async fn get_device(
    State(st): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admit(&st, &peer, &headers, DeviceScope::DevicesRead).await?;
    let rt = st.runtime.load_full();
    let device = st
        .devices
        .load(&id)
        .await
        .map_err(|e| ApiError::unavailable(PostureApi, "device registry", e))?
        .ok_or_else(|| {
            ApiError::not_found(PostureApi, format!("no device `{id}` in the registry"))
        })?;
    let verdict = device.compliance(
        &rt.config.compliance_policies,
        rt.config.devices.compliance.max_posture_age.0,
        Utc::now(),
    );
    Ok(Json(json!({ "device": device, "compliance": verdict })).into_response())
}

/// `DELETE {portal}/api/devices/{id}` (scope `devices:write`): an admin or the UEM removes
/// a device — a UEM's record or a browser stepgate registered. Its live sessions are
/// re-evaluated without it; a browser holding its cookie is unregistered from its next request.
pub async fn delete_device(
    State(st): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let source = admit(&st, &peer, &headers, DeviceScope::DevicesWrite).await?;
    let unavailable = |e| ApiError::unavailable(PostureApi, "device registry", e);
    let Some(device) = st.devices.load(&id).await.map_err(unavailable)? else {
        return Err(ApiError::not_found(
            PostureApi,
            format!("no device `{id}` in the registry"),
        ));
    };
    let bound = super::reevaluate::bound_sessions(&st, &device).await;
    st.devices.delete(&id).await.map_err(unavailable)?;
    // Its sessions are judged again, now bound to no device.
    let effects = super::reevaluate::judge_again(&st, bound).await;
    let detail = json!({ "owner": device.owner, "by": "source", "sessions": effects });
    audit(&st, "device.removed", &source.name, &id, detail).await;
    Ok(Json(json!({ "device_id": id, "result": "deleted" })).into_response())
}
