//! Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a session ends — a
//! sign-out, "sign out everywhere", an administrator's or CAEP's revoke, RP-initiated
//! logout — every client that got a code from it and registered a
//! `backchannel_logout_uri` is sent a logout token (`typ: logout+jwt`, `sid` and `sub`,
//! the back-channel logout event, no `nonce`), signed with the provider's keys. Which
//! clients signed in with a session is kept in the hot store beside it.

use std::sync::Weak;
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

/// The listener the session service calls for each ended session.
pub fn listener(state: Weak<AppState>) -> EndListener {
    Box::new(move |d: &SessionData| {
        let Some(st) = state.upgrade() else { return };
        let (uid, sct) = (d.user_id.clone(), grant::session_mark(d.created_at));
        tokio::spawn(async move { notify(&st, &uid, sct).await });
    })
}

/// Sends a logout token to each client of the session that registered a URI.
async fn notify(st: &Shared, uid: &str, sct: i64) {
    let clients = match st.stores.hot.recent(&key(uid, sct)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "oidc: reading the session's clients failed; no back-channel logout sent");
            return;
        }
    };
    let rt = st.runtime.load_full();
    let iss = super::issuer(&rt);
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
        let Some(uri) = &client.backchannel_logout_uri else {
            continue;
        };
        let now = Utc::now().timestamp();
        let claims = json!({
            "iss": iss, "aud": c, "iat": now, "exp": now + 120, "jti": grant::new_id(),
            "sub": uid, "sid": sid, "events": { EVENT: {} },
        });
        let Some(token) = st.assertion.sign_claims("logout+jwt", &claims) else {
            continue;
        };
        let r = reqwest::Client::new()
            .post(uri.as_str())
            .timeout(TIMEOUT)
            .form(&[("logout_token", token.as_str())])
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                tracing::info!(client = c, "oidc: back-channel logout delivered")
            }
            Ok(r) => {
                tracing::warn!(client = c, status = %r.status(), "oidc: back-channel logout refused")
            }
            Err(e) => tracing::warn!(client = c, error = %e, "oidc: back-channel logout failed"),
        }
    }
}
