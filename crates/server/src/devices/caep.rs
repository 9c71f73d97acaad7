//! The Shared Signals / CAEP receiver: `POST {portal}/caep/events` (RFC 8935 push of
//! `application/secevent+jwt`), answered `202` or `400 {"err", "description"}`, both
//! audited. Events act at once on live sessions:
//!
//! * `device-compliance-change`: the device's UEM verdict is updated, then each live
//!   session bound to the device is re-evaluated against the sign-in policy — one that
//!   would now be denied ends, one that would now need more gets `needs_step_up`. App
//!   policies see the new verdict on the session's very next request (the device is read
//!   fresh for every request).
//! * `session-revoked`: the subject's sessions end.
//! * `credential-change`, `assurance-level-change` (a decrease): the subject's sessions must
//!   step up before their next request.
//!
//! `jti` replay is checked in the hot store (`remember_once`, atomic across nodes) after the
//! SET verified, so a forged SET cannot burn a real one's id.
//!
//! Before anything else a push is counted against two budgets ([`rate_limit`],
//! `devices.rate_limit.caep`): its client address's, then the budget of the `iss` it names
//! (read unverified; every issuer that is not a configured transmitter's shares one), so
//! neither one sender nor many senders naming one issuer can make the receiver verify or
//! audit more than the budgets allow.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use stepgate_signals::caep::{DeviceComplianceUpdate, SecurityEvent, SetError, VerifiedSet};
use stepgate_signals::config::TransmitterConfig;
use stepgate_store::UserRecord;

use super::error::{ApiError, Endpoint::Caep};
use super::rate_limit::{self, Budget, Endpoint};
use crate::app::responses::Peer;
use crate::app::state::Shared;

/// A refused SET: audited (once its budgets admitted it), answered RFC 8935's way.
async fn refused(
    st: &Shared,
    e: &SetError,
    transmitter: Option<String>,
    jti: Option<&str>,
) -> ApiError {
    let mut detail = json!({ "reason": e.audit_kind(), "description": e.to_string() });
    if let Some(jti) = jti {
        detail["jti"] = json!(jti);
    }
    audit(st, "caep.rejected", transmitter, detail).await;
    ApiError::set(e.rfc8935_code(), e.to_string())
}

async fn audit(st: &Shared, kind: &str, actor: Option<String>, detail: serde_json::Value) {
    let mut e = stepgate_store::NewAuditEvent::now(kind);
    e.actor = actor;
    e.detail = detail;
    st.audit.append(e).await;
}

/// The issuer budget every SET whose `iss` is absent, unreadable or not a configured
/// transmitter's is counted against: made-up issuers get no budgets of their own.
const UNCONFIGURED_ISSUER: &str = "(unconfigured)";

/// The `iss` a SET names, read without verifying anything: only to pick its budget.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// The key of the issuer budget a SET is counted against.
fn issuer_budget<'a>(transmitters: &'a [TransmitterConfig], body: &str) -> &'a str {
    let iss = unverified_issuer(body);
    transmitters
        .iter()
        .find(|t| iss.as_deref() == Some(t.issuer.as_str()))
        .map_or(UNCONFIGURED_ISSUER, |t| t.issuer.as_str())
}

/// Counts the push against its address's and its issuer's budgets.
async fn admit(st: &Shared, peer: &Peer, headers: &HeaderMap, body: &str) -> Result<(), ApiError> {
    let rt = st.runtime.load_full();
    let limits = &rt.config.devices.rate_limit.caep;
    let ip = crate::access::request::client_ip(&rt, peer.0, headers);
    let address = rate_limit::address_key(ip);
    let issuer = issuer_budget(&rt.config.devices.caep.transmitters, body);
    for (budget, key, rate, what) in [
        (
            Budget::Address,
            address.as_str(),
            limits.per_address,
            "from this address",
        ),
        (
            Budget::Issuer,
            issuer,
            limits.per_issuer,
            "naming this issuer",
        ),
    ] {
        let too_many = format!("too many SETs {what}");
        rate_limit::admit_or_refuse(st, Endpoint::Caep, budget, key, rate, &too_many).await?;
    }
    Ok(())
}

/// `POST {portal}/caep/events`.
pub async fn receive(
    State(st): State<Shared>,
    peer: Peer,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let Some(receiver) = &st.signals.caep else {
        return Err(ApiError::not_found(
            Caep,
            "no CAEP transmitters are configured",
        ));
    };
    admit(&st, &peer, &headers, &body).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/secevent+jwt")
    {
        let why = format!("Content-Type must be application/secevent+jwt, got `{ct}`");
        return Err(refused(&st, &SetError::Malformed(why), None, None).await);
    }
    let set = match receiver.verify(&body, Utc::now()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(reason = e.audit_kind(), "CAEP SET rejected");
            return Err(refused(&st, &e, None, None).await);
        }
    };
    first_time(&st, &set).await?;
    let effects = apply(&st, &set).await;
    let detail =
        json!({ "jti": set.jti, "txn": set.txn, "events": set.events, "effects": effects });
    audit(&st, "caep.accepted", Some(set.transmitter.clone()), detail).await;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Refuses a SET whose `jti` was seen before: remembered across nodes until the SET could
/// no longer pass the `iat` check.
async fn first_time(st: &Shared, set: &VerifiedSet) -> Result<(), ApiError> {
    let rt = st.runtime.load_full();
    let ttl = rt
        .config
        .devices
        .caep
        .transmitters
        .iter()
        .find(|t| t.issuer == set.issuer)
        .map_or(Duration::from_secs(3600), |t| {
            t.max_age.0 + t.leeway.0 * 3 + Duration::from_secs(60)
        });
    let key = format!("caep-jti:{}:{}", set.issuer, set.jti);
    match st.stores.hot.remember_once(&key, ttl).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            let e = SetError::Replayed(set.jti.clone());
            Err(refused(st, &e, Some(set.transmitter.clone()), Some(&set.jti)).await)
        }
        Err(e) => Err(ApiError::unavailable(Caep, "hot store", e)),
    }
}

/// What a verified SET does: each device update recorded (and the device's sessions
/// re-evaluated), each session or credential event applied to its user's sessions; one
/// effect (or error) per item, for the transmitter's answer and the audit log.
async fn apply(st: &Shared, set: &VerifiedSet) -> Vec<serde_json::Value> {
    let mut effects = Vec::new();
    for u in set.device_updates() {
        effects.push(update_device(st, &u).await);
    }
    effects.extend(user_effects(st, set).await);
    effects
}

/// One device's new posture, recorded unless older than what the registry holds.
async fn update_device(st: &Shared, u: &DeviceComplianceUpdate) -> serde_json::Value {
    if stepgate_signals::device::is_reserved_id(&u.device_id) {
        tracing::warn!(device = %u.device_id, "CAEP event names a reserved device id; ignored");
        return json!({ "device": u.device_id, "error": "reserved device id" });
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "device registry unavailable");
        json!({ "device": u.device_id, "error": "store unavailable" })
    };
    let mut device = match st.devices.load(&u.device_id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let mut d = stepgate_signals::device::Device::new(u.device_id.clone());
            d.source = Some(u.source.clone());
            d
        }
        Err(e) => return unavailable(&e),
    };
    if !u.apply(&mut device) {
        return json!({ "device": u.device_id, "result": "stale" });
    }
    if let Err(e) = st.devices.save(&device, Utc::now()).await {
        return unavailable(&e);
    }
    let r = super::reevaluate::device_sessions(st, &device.id).await;
    st.signals.hub.notify(&device.id);
    json!({ "device": u.device_id, "compliant": u.compliant, "sessions": r })
}

/// The session, credential and assurance events: the user's sessions ended, or marked to
/// step up again.
async fn user_effects(st: &Shared, set: &VerifiedSet) -> Vec<serde_json::Value> {
    let mut effects = Vec::new();
    for ev in &set.events {
        match ev {
            SecurityEvent::SessionRevoked { common } => {
                if let Some(user) = find_user(st, common.subject.user()).await {
                    let n = st.sessions.end_all(&user.id).await.unwrap_or(0);
                    effects.push(json!({ "user": user.username, "sessions_ended": n }));
                }
            }
            SecurityEvent::CredentialChange { common, .. } => {
                if let Some(user) = find_user(st, common.subject.user()).await {
                    let n = super::reevaluate::mark_user_sessions(st, &user.id).await;
                    effects.push(json!({ "user": user.username, "step_up_required": n }));
                }
            }
            SecurityEvent::AssuranceLevelChange {
                common,
                change_direction,
                ..
            } if change_direction.as_deref() != Some("increase") => {
                if let Some(user) = find_user(st, common.subject.user()).await {
                    let n = super::reevaluate::mark_user_sessions(st, &user.id).await;
                    effects.push(json!({ "user": user.username, "step_up_required": n }));
                }
            }
            _ => {}
        }
    }
    effects
}

/// The user a subject names: by username, else by e-mail address.
async fn find_user(st: &Shared, who: Option<&str>) -> Option<UserRecord> {
    let who = who?;
    if let Ok(Some(u)) = st.stores.durable.get_user_by_username(who).await {
        return Some(u);
    }
    st.stores
        .durable
        .list_users()
        .await
        .ok()?
        .into_iter()
        .find(|u| {
            u.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(who))
        })
}
