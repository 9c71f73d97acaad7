//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a session ends — a
//! sign-out, "sign out everywhere", an administrator's or CAEP's revoke, RP-initiated
//! logout — every client that got a code from it and registered a
//! `backchannel_logout_uri` is sent a logout token (`typ: logout+jwt`, `sid` and `sub`,
//! the back-channel logout event, no `nonce`), signed with the provider's keys. Which
//! clients signed in with a session is kept in the hot store beside it.
//!
//! A client endpoint that is down (no answer, a timeout, `5xx`, `408`, `429`) gets the
//! logout again, with a fresh token, after each of [`RETRY_AFTER`] (six tries in about two
//! minutes); at most [`MAX_PENDING`] logouts wait on a node. Every try is counted in
//! `stepgate_oidc_backchannel_logouts_total` by outcome. The retries live in the node's
//! memory: a node that stops drops the ones it holds.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::grant;
use crate::app::state::{AppState, Shared};
use crate::session::{EndListener, SessionData};

/// The event a logout token carries.
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long a delivery may take.
const TIMEOUT: Duration = Duration::from_secs(5);

fn key(uid: &str, sct: i64) -> String {
    format!("oidc:rps:{uid}:{sct}")
}

/// Records that `client` signed in with the session (`uid`, `sct`).
pub async fn signed_in(st: &Shared, uid: &str, sct: i64, client: &str) {
    let r = st
        .stores
        .hot
        .push_recent(
            &key(uid, sct),
            &json!(client),
            64,
            Duration::from_secs(31 * 24 * 3600),
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, client, "oidc: recording a client of the session failed; it will get no back-channel logout");
    }
}

/// The listener the session service calls for each session about to end: the session's
/// access tokens are marked dead (awaited), then its clients are notified (in the
/// background).
pub fn listener(state: Weak<AppState>) -> EndListener {
    Box::new(move |d: &SessionData| {
        let state = state.clone();
        let (uid, sct) = (d.user_id.clone(), grant::session_mark(d.created_at));
        Box::pin(async move {
            let Some(st) = state.upgrade() else {
                return Ok(());
            };
            let rt = st.runtime.load_full();
            // The longest an access token of this deployment lives, and the leeway.
            let Some(longest) = rt
                .config
                .oidc
                .clients
                .iter()
                .map(|c| c.access_token_lifetime.0)
                .max()
            else {
                return Ok(());
            };
            let sid = grant::sid(&st, &uid, sct);
            grant::end_session(
                st.stores.hot.as_ref(),
                &sid,
                longest + Duration::from_secs(60),
                Utc::now(),
            )
            .await?;
            tokio::spawn(async move { notify(&st, &uid, sct).await });
            Ok(())
        })
    })
}

/// Sends a logout token to each client of the session that registered a URI; a delivery
/// that fails is tried again in the background ([`retry`]).
async fn notify(st: &Shared, uid: &str, sct: i64) {
    let clients = match st.stores.hot.recent(&key(uid, sct)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "oidc: reading the session's clients failed; no back-channel logout sent");
            return;
        }
    };
    let rt = st.runtime.load_full();
    let sid = grant::sid(st, uid, sct);
    let mut sent = Vec::new();
    for c in clients.iter().filter_map(|c| c.as_str()) {
        if sent.contains(&c) {
            continue;
        }
        sent.push(c);
        let Some(client) = rt.config.oidc.client(c) else {
            continue;
        };
        if client.backchannel_logout_uri.is_none() {
            continue;
        }
        let logout = Logout {
            client: c.to_string(),
            uid: uid.to_string(),
            sid: sid.clone(),
        };
        if deliver(st, &logout).await == Tried::Failed {
            retry(st, logout);
        }
    }
}

/// Delays before each retry of a delivery that failed (the client's endpoint down or
/// failing): six tries in about two minutes, then the logout is dropped (and counted).
pub const RETRY_AFTER: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(9),
    Duration::from_secs(27),
    Duration::from_secs(81),
];

/// Logouts waiting for a retry on one node, at most: past it a failed delivery is dropped
/// (and counted), so a client that is down cannot make a node hold unbounded work.
pub const MAX_PENDING: usize = 1000;

/// One logout to deliver: to whom, and for which session.
struct Logout {
    client: String,
    uid: String,
    sid: String,
}

/// How a try went.
#[derive(PartialEq, Eq)]
enum Tried {
    /// `2xx`.
    Delivered,
    /// A `4xx` other than `408` / `429`: the client refuses the token; trying again would
    /// not change that. Or nothing to send (the client is gone, signing failed).
    Refused,
    /// No answer, a timeout, a `5xx`, `408` or `429`: worth trying again.
    Failed,
}

/// One try: a fresh logout token (its own `jti`, `iat`, `exp`), posted to the client's
/// URI as the configuration says now.
async fn deliver(st: &Shared, l: &Logout) -> Tried {
    let rt = st.runtime.load_full();
    let Some(client) = rt.config.oidc.client(&l.client) else {
        return Tried::Refused;
    };
    let Some(uri) = &client.backchannel_logout_uri else {
        return Tried::Refused;
    };
    // The `sub` this client knows the user by (pairwise or not).
    let sub = match super::subject::subject(&rt, client, &l.uid) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(client = %l.client, error = %e, "oidc: back-channel logout has no subject identifier");
            st.metrics.backchannel_logout("dropped");
            return Tried::Refused;
        }
    };
    let now = Utc::now().timestamp();
    let claims = json!({
        "iss": super::issuer(&rt), "aud": l.client, "iat": now, "exp": now + 120,
        "jti": grant::new_id(), "sub": sub, "sid": l.sid, "events": { EVENT: {} },
    });
    let Some(token) = st.oidc_keys.sign_claims("logout+jwt", &claims) else {
        st.metrics.backchannel_logout("dropped");
        return Tried::Refused;
    };
    let r = reqwest::Client::new()
        .post(uri.as_str())
        .timeout(TIMEOUT)
        .form(&[("logout_token", token.as_str())])
        .send()
        .await;
    let c = l.client.as_str();
    match r {
        Ok(r) if r.status().is_success() => {
            tracing::info!(client = c, "oidc: back-channel logout delivered");
            st.metrics.backchannel_logout("delivered");
            Tried::Delivered
        }
        Ok(r)
            if r.status().is_client_error()
                && r.status() != reqwest::StatusCode::REQUEST_TIMEOUT
                && r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
        {
            tracing::warn!(client = c, status = %r.status(), "oidc: back-channel logout refused by the client");
            st.metrics.backchannel_logout("refused");
            Tried::Refused
        }
        Ok(r) => {
            tracing::warn!(client = c, status = %r.status(), "oidc: back-channel logout failed");
            Tried::Failed
        }
        Err(e) => {
            tracing::warn!(client = c, error = %e, "oidc: back-channel logout failed");
            Tried::Failed
        }
    }
}

/// Tries a failed logout again after each of [`RETRY_AFTER`], in the background, while
/// fewer than [`MAX_PENDING`] wait on this node; counts each failed try that is tried again
/// as `retried` and one given up as `dropped`.
fn retry(st: &Shared, l: Logout) {
    let pending = &st.oidc.backchannel_pending;
    if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
        pending.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(client = %l.client, "oidc: back-channel logout dropped: the retry queue is full");
        st.metrics.backchannel_logout("dropped");
        return;
    }
    let state = Arc::downgrade(st);
    tokio::spawn(async move {
        let mut done = false;
        for delay in RETRY_AFTER {
            match state.upgrade() {
                Some(st) => st.metrics.backchannel_logout("retried"),
                None => return,
            }
            tokio::time::sleep(delay).await;
            let Some(st) = state.upgrade() else { return };
            if deliver(&st, &l).await != Tried::Failed {
                done = true;
                break;
            }
        }
        if let Some(st) = state.upgrade() {
            if !done {
                tracing::warn!(client = %l.client, "oidc: back-channel logout dropped after its last retry");
                st.metrics.backchannel_logout("dropped");
            }
            st.oidc.backchannel_pending.fetch_sub(1, Ordering::AcqRel);
        }
    });
}
