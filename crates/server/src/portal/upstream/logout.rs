//! Signing out with the provider: RP-initiated logout at the provider when stepgate's
//! session ends ([`end_session_url`], [`signed_out`]), and the provider's back-channel
//! logout tokens ending stepgate's sessions ([`backchannel_logout`]), found by the
//! provider's session id each sign-in remembered ([`remember_sid`]).

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use stepgate_authn::session::UpstreamSignIn;
use stepgate_config::identity::IdentityProviderConfig;
use stepgate_store::UPSTREAM_LINK_KIND;

use super::configured;
use crate::access::request::client_ip;
use crate::app::responses::Peer;
use crate::app::state::Shared;
use crate::idp::id_token;
use crate::idp::logout_token::LogoutToken;
use crate::idp::{accounts, UpstreamError};
use crate::portal::audit;
use crate::portal::error::PortalError;
use crate::portal::extract::{Here, Visit};

/// How long the users behind a provider's session id are remembered (longer than any
/// session lives).
const SID_MEMORY: std::time::Duration = std::time::Duration::from_secs(31 * 24 * 3600);

fn sid_key(provider: &str, sid: &str) -> String {
    format!("upstream-sid:{provider}:{sid}")
}

/// Remembers that `user_id` signed in with the provider's session `sid`.
pub(super) async fn remember_sid(st: &Shared, provider: &str, sid: &str, user_id: &str) {
    let r = st
        .stores
        .hot
        .push_recent(
            &sid_key(provider, sid),
            &serde_json::json!(user_id),
            8,
            SID_MEMORY,
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(provider, error = %e, "remembering the provider's session id failed; a logout token naming only it will end nothing");
    }
}

/// Where the browser goes to sign out at the provider too (RP-Initiated Logout 1.0), for a
/// session that signed in through a provider with `sign_out_upstream`: its
/// `end_session_endpoint` with the ID token as `id_token_hint`, the client id, and
/// `{portal}/login/upstream/{id}/signed-out` to come back to. `None` when the provider
/// does not take part (off, no endpoint, unreachable: the stepgate session is ended anyway).
pub async fn end_session_url(st: &Shared, rt: &Here, up: &UpstreamSignIn) -> Option<String> {
    let cfg = configured(rt, &up.provider).filter(|c| c.sign_out_upstream)?;
    let hint = up.id_token.as_deref()?;
    let provider = match st.idps.provider(cfg).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %e, "signing out at the provider skipped");
            return None;
        }
    };
    let endpoint = provider.metadata.end_session_endpoint.as_deref()?;
    let mut url = url::Url::parse(endpoint).ok()?;
    url.query_pairs_mut()
        .append_pair("id_token_hint", hint)
        .append_pair("client_id", &cfg.client_id)
        .append_pair(
            "post_logout_redirect_uri",
            &rt.portal_url(&format!("/login/upstream/{}/signed-out", cfg.id.as_str())),
        );
    Some(url.into())
}

/// `GET {portal}/login/upstream/{id}/signed-out`: back from signing out at the provider.
pub async fn signed_out(Visit { here: rt, jar, .. }: Visit, Path(id): Path<String>) -> Response {
    if configured(&rt, &id).is_none() {
        return PortalError::BadRequest.into_response();
    }
    crate::portal::sessions::signed_out_page(&rt, jar, false)
}

/// The form a provider posts a logout token in.
#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    logout_token: String,
}

/// `POST {portal}/login/upstream/{id}/backchannel-logout`: the provider says a session of
/// its ended (Back-Channel Logout 1.0). A verified token (its `jti` accepted once) ends the
/// stepgate sessions signed in through that provider session — by `sid`, or every one of
/// the subject's without a `sid` — and with them their grants to stepgate's own OpenID
/// clients (which are told in turn). 200 when verified (whether or not a session was
/// still open), 400 otherwise.
pub async fn backchannel_logout(
    Visit { st, here: rt, .. }: Visit,
    Path(id): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    axum_extra::extract::Form(f): axum_extra::extract::Form<LogoutForm>,
) -> Response {
    let Some(cfg) = configured(&rt, &id).filter(|c| c.back_channel_logout) else {
        return answer(StatusCode::NOT_FOUND, Some("no back-channel logout here"));
    };
    let ip = client_ip(&rt, peer.0, &headers);
    let token = match verified_once(&st, cfg, &f.logout_token).await {
        Ok(t) => t,
        Err(NotTaken::Invalid(e)) => {
            tracing::warn!(provider = cfg.id.as_str(), ip = ?ip, error = %e, "upstream logout token refused");
            return answer(
                StatusCode::BAD_REQUEST,
                Some("the logout token is not valid"),
            );
        }
        Err(NotTaken::Unchecked(e)) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %e, "upstream logout token not checked");
            return answer(StatusCode::SERVICE_UNAVAILABLE, Some("try again later"));
        }
    };
    match end_upstream_sessions(&st, &id, &token).await {
        Ok((username, ended)) => {
            audit(
                &st,
                "signout.upstream",
                username.as_deref().unwrap_or(&format!("upstream:{id}")),
                ip,
                serde_json::json!({
                    "provider": id, "sid": token.sid, "sub": token.sub, "ended": ended,
                }),
            )
            .await;
            answer(StatusCode::OK, None)
        }
        Err(e) => {
            tracing::warn!(provider = cfg.id.as_str(), error = %e, "upstream logout: the store failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, Some("try again later"))
        }
    }
}

/// The back-channel logout endpoint's answer: empty, or an OAuth-style error; never cached.
fn answer(status: StatusCode, error: Option<&str>) -> Response {
    let body = match error {
        None => String::new(),
        Some(d) => {
            serde_json::json!({ "error": "invalid_request", "error_description": d }).to_string()
        }
    };
    (
        status,
        [
            ("cache-control", "no-store"),
            ("content-type", "application/json"),
        ],
        body,
    )
        .into_response()
}

/// Why a logout token was not taken.
enum NotTaken {
    /// It is not valid, or was used before.
    Invalid(UpstreamError),
    /// It could not be checked (the provider's keys or the hot store out of reach).
    Unchecked(String),
}

/// The logout token `raw` from provider `cfg`, verified and its `jti` accepted once.
async fn verified_once(
    st: &Shared,
    cfg: &IdentityProviderConfig,
    raw: &str,
) -> Result<LogoutToken, NotTaken> {
    let id = cfg.id.as_str();
    let invalid = |detail: String| {
        NotTaken::Invalid(UpstreamError::BadToken {
            provider: id.to_string(),
            detail,
        })
    };
    if raw.is_empty() || raw.len() > 16 * 1024 {
        return Err(invalid("no logout token, or one too large".into()));
    }
    let provider = st
        .idps
        .provider(cfg)
        .await
        .map_err(|e| NotTaken::Unchecked(e.to_string()))?;
    let http = st.idps.http();
    let token = crate::idp::logout_token::verify(&provider, http, raw, &cfg.issuer, &cfg.client_id)
        .await
        .map_err(NotTaken::Invalid)?;
    let jti_memory = std::time::Duration::from_secs(
        2 * crate::idp::logout_token::MAX_AGE_SECS as u64 + 2 * id_token::LEEWAY_SECS,
    );
    let key = format!("upstream-logout:{id}:{}", token.jti);
    match st.stores.hot.remember_once(&key, jti_memory).await {
        Ok(true) => Ok(token),
        Ok(false) => Err(invalid(format!(
            "logout token `{}` was already used",
            token.jti
        ))),
        Err(e) => Err(NotTaken::Unchecked(e.to_string())),
    }
}

/// Ends the sessions a logout token names; the user's name (when found) and how many ended.
async fn end_upstream_sessions(
    st: &Shared,
    id: &str,
    token: &crate::idp::logout_token::LogoutToken,
) -> Result<(Option<String>, usize), stepgate_store::StoreError> {
    let mut users: Vec<String> = Vec::new();
    if let Some(sub) = &token.sub {
        if let Some(link) = st
            .stores
            .durable
            .find_factor(UPSTREAM_LINK_KIND, &accounts::link_key(id, sub))
            .await?
        {
            users.push(link.user_id);
        }
    } else if let Some(sid) = &token.sid {
        for u in st.stores.hot.recent(&sid_key(id, sid)).await? {
            if let Some(u) = u.as_str() {
                if !users.iter().any(|x| x == u) {
                    users.push(u.to_string());
                }
            }
        }
    }
    let mut ended = 0;
    let mut username = None;
    for user_id in users {
        for sid in st.sessions.of_user(&user_id).await? {
            let Some((_, d)) = st.sessions.peek(&sid).await? else {
                continue;
            };
            let matches = d.upstream.as_ref().is_some_and(|u| {
                u.provider == id
                    && token.sub.as_ref().is_none_or(|s| *s == u.sub)
                    && token.sid.as_ref().is_none_or(|s| u.sid.as_ref() == Some(s))
            });
            if matches {
                st.sessions.end(&sid).await?;
                ended += 1;
                username = Some(d.username.clone());
            }
        }
    }
    Ok((username, ended))
}
