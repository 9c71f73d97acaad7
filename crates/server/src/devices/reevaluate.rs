//! A device's live sessions judged again when what is known of the device changes (a CAEP
//! `device-compliance-change`, a posture push), through the access pipeline: each session
//! is a [`Credentials::Stored`] sign-in, from the address and browser it signed in with, on
//! the device as it now is. One the sign-in policy would now deny ends; one that would now
//! need more must step up before its next request; the rest are kept. App policies see the
//! new device on the session's very next request anyway (the device is read per request).

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use chrono::{DateTime, Utc};
use serde_json::json;
use stepgate_policy::RequestKind;
use stepgate_signals::device::Device;

use crate::access::{AccessRequest, Connection, Credentials, Verdict};
use crate::app::state::{Runtime, Shared};
use crate::session::{Session, SessionData};

/// What a re-evaluation did to one session.
enum Effect {
    Ended,
    SteppedUp,
    Kept,
}

/// Re-evaluates the live sessions bound to `device_id`. Returns
/// `{"ended": n, "step_up": m, "kept": k}`.
pub async fn device_sessions(st: &Shared, device_id: &str) -> serde_json::Value {
    let Ok(Some(device)) = st.devices.load(device_id).await else {
        return json!({});
    };
    let sessions = bound_sessions(st, &device).await;
    judge_again(st, sessions).await
}

/// The live sessions bound to `device`: the device's index, plus the owner's sessions
/// that name it.
pub async fn bound_sessions(st: &Shared, device: &Device) -> Vec<Session> {
    let mut ids = st.devices.sessions_of(&device.id).await.unwrap_or_default();
    if let Some(owner) = &device.owner {
        if let Ok(Some(u)) = st.stores.durable.get_user_by_username(owner).await {
            ids.extend(st.sessions.of_user(&u.id).await.unwrap_or_default());
        }
    }
    ids.sort();
    ids.dedup();
    let mut sessions = Vec::new();
    for id in ids {
        let Ok(Some((_, data))) = st.sessions.peek(&id).await else {
            continue;
        };
        if data.device_id.as_deref() == Some(device.id.as_str()) {
            sessions.push(Session {
                id,
                data: Arc::new(data),
            });
        }
    }
    sessions
}

/// Judges `sessions` again, each on its device as the registry now has it (none, once
/// the device is removed). Returns `{"ended": n, "step_up": m, "kept": k}`.
pub async fn judge_again(st: &Shared, sessions: Vec<Session>) -> serde_json::Value {
    let rt = st.runtime.load_full();
    let now = Utc::now();
    let (mut ended, mut stepped, mut kept) = (0, 0, 0);
    for session in sessions {
        match session_again(st, &rt, session, now).await {
            Some(Effect::Ended) => ended += 1,
            Some(Effect::SteppedUp) => stepped += 1,
            Some(Effect::Kept) => kept += 1,
            None => {}
        }
    }
    json!({ "ended": ended, "step_up": stepped, "kept": kept })
}

/// Judges one stored session again as a sign-in, and acts on the verdict; `None` when it
/// could not be judged (a store failed: the session is left as it is, and logged).
async fn session_again(
    st: &Shared,
    rt: &Runtime,
    session: Session,
    now: DateTime<Utc>,
) -> Option<Effect> {
    let mut headers = HeaderMap::new();
    if let Some(ua) = session
        .data
        .user_agent
        .as_deref()
        .and_then(|ua| HeaderValue::from_str(ua).ok())
    {
        headers.insert(header::USER_AGENT, ua);
    }
    let id = session.id.clone();
    let req = AccessRequest {
        id: crate::access::RequestId::new(),
        kind: RequestKind::SignIn,
        app: None,
        method: &Method::POST,
        path: "/",
        headers: &headers,
        ip: session.data.ip.as_deref().and_then(|s| s.parse().ok()),
        credentials: Credentials::Stored(session),
        connection: Connection::default(),
        now,
    };
    match st.access.decide(rt, &req).await.verdict {
        Verdict::Allow(_) => Some(Effect::Kept),
        Verdict::StepUp(s) => {
            let Some(s) = s.session else {
                return Some(Effect::Kept);
            };
            match st.sessions.modify(rt, &s.id, now, mark_for_step_up).await {
                Ok(Some(_)) => Some(Effect::SteppedUp),
                // Ended since it was judged: nothing left to mark.
                Ok(None) => Some(Effect::Ended),
                Err(e) => {
                    tracing::error!(error = %e, "session not marked for step-up");
                    None
                }
            }
        }
        // Denied, or its user is gone or disabled.
        Verdict::Deny(_) | Verdict::SignIn(_) => match st.sessions.end(&id).await {
            Ok(()) => Some(Effect::Ended),
            Err(e) => {
                tracing::error!(error = %e, "session not ended");
                None
            }
        },
        Verdict::Unavailable(e) => {
            tracing::error!(error = %e, "a session could not be re-evaluated");
            None
        }
    }
}

/// Marks every session of a user to step up before its next request (a credential
/// changed, the assurance level went down). How many were marked.
pub async fn mark_user_sessions(st: &Shared, user_id: &str) -> usize {
    let rt = st.runtime.load();
    let now = Utc::now();
    let ids = st.sessions.of_user(user_id).await.unwrap_or_default();
    let mut n = 0;
    for id in ids {
        match st.sessions.modify(&rt, &id, now, mark_for_step_up).await {
            Ok(Some(_)) => n += 1,
            // Ended since it was listed: it stays ended, which is what the event asks at most.
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "session not marked for step-up"),
        }
    }
    n
}

/// Marks a session to step up before its next request ([`Sessions::modify`]'s change:
/// whether it was not marked yet, so an already marked session is not written again).
///
/// [`Sessions::modify`]: crate::session::Sessions::modify
fn mark_for_step_up(d: &mut SessionData) -> bool {
    !std::mem::replace(&mut d.needs_step_up, true)
}
