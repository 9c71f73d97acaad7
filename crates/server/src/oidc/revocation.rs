//! Token revocation (RFC 7009) and introspection (RFC 7662), for the authenticated client's
//! own tokens. Revoking either a refresh or an access token revokes its whole grant.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::client_auth::{authenticate_client, Presented};
use super::error::OAuthError;
use super::grant;
use super::issuer;
use super::tokens::verify_access;
use super::userinfo::{access_stands, authorization_of};
use crate::app::state::Shared;

/// The revocation and introspection form.
#[derive(Deserialize, Default)]
pub struct TokenRef {
    #[serde(default)]
    token: String,
    #[serde(default)]
    token_type_hint: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_assertion_type: Option<String>,
    #[serde(default)]
    client_assertion: Option<String>,
}

/// What a token presented to these endpoints is.
enum Known {
    Refresh(grant::Refresh),
    Access(Value),
}

fn identify(st: &Shared, rt: &crate::app::state::Runtime, token: &str) -> Option<Known> {
    if let Some(r) = st.oidc.open_refresh(token) {
        return Some(Known::Refresh(r));
    }
    verify_access(&st.oidc_keys, &issuer(rt), token).map(Known::Access)
}

/// `POST {portal}/oidc/revoke`: `200` whatever the token (RFC 7009 §2.2), its grant
/// revoked when it is the client's.
pub async fn revoke(
    State(st): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<TokenRef>,
) -> Response {
    let rt = st.runtime.load_full();
    let client = match authenticate_client(
        &st,
        &rt,
        &headers,
        Presented {
            client_id: f.client_id.as_deref(),
            client_secret: f.client_secret.as_deref(),
            assertion_type: f.client_assertion_type.as_deref(),
            assertion: f.client_assertion.as_deref(),
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let _ = f.token_type_hint;
    let gid = match identify(&st, &rt, &f.token) {
        Some(Known::Refresh(r)) if r.auth.cid == client.id.as_str() => Some(r.auth.gid),
        Some(Known::Access(c)) => authorization_of(&st, &c)
            .filter(|a| a.cid == client.id.as_str())
            .map(|a| a.gid),
        _ => None,
    };
    if let Some(gid) = gid {
        if let Err(e) = grant::revoke(&st, &gid, Utc::now()).await {
            return OAuthError::unavailable(e).into_response();
        }
        tracing::info!(client = %client.id.as_str(), "oidc: grant revoked by its client");
    }
    let mut r = axum::http::StatusCode::OK.into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST {portal}/oidc/introspect`: whether the token is active, and what it says, for the
/// client's own tokens (another client's are "inactive").
pub async fn introspect(
    State(st): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<TokenRef>,
) -> Response {
    let rt = st.runtime.load_full();
    let client = match authenticate_client(
        &st,
        &rt,
        &headers,
        Presented {
            client_id: f.client_id.as_deref(),
            client_secret: f.client_secret.as_deref(),
            assertion_type: f.client_assertion_type.as_deref(),
            assertion: f.client_assertion.as_deref(),
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let now = Utc::now();
    let answer = match identify(&st, &rt, &f.token) {
        Some(Known::Refresh(r)) if r.auth.cid == client.id.as_str() && now.timestamp() <= r.exp => {
            let live = async {
                Ok::<_, stepgate_store::StoreError>(
                    !grant::refresh_used(&st, &r).await? && grant::stands(&st, &r.auth).await?,
                )
            };
            match live.await {
                Ok(true) => json!({
                    "active": true, "token_type": "refresh_token", "client_id": r.auth.cid,
                    "sub": match super::subject::subject(&rt, client, &r.auth.uid) {
                        Ok(s) => s,
                        Err(e) => return OAuthError::unavailable(e).into_response(),
                    }, "scope": r.auth.scope, "exp": r.exp, "iss": issuer(&rt),
                    "acr": rt.config.oidc.acr.name(r.auth.aal.max(1)), "auth_time": r.auth.auth_time,
                }),
                Ok(false) => json!({ "active": false }),
                Err(e) => return OAuthError::unavailable(e).into_response(),
            }
        }
        Some(Known::Access(c))
            if c.get("client_id").and_then(Value::as_str) == Some(client.id.as_str()) =>
        {
            match access_stands(&st, &c).await {
                Ok(true) => {
                    let mut m = c.as_object().cloned().unwrap_or_default();
                    m.insert("active".into(), json!(true));
                    m.insert("token_type".into(), json!("Bearer"));
                    m.remove("gid");
                    m.remove("sgu");
                    Value::Object(m)
                }
                Ok(false) => json!({ "active": false }),
                Err(e) => return OAuthError::unavailable(e).into_response(),
            }
        }
        _ => json!({ "active": false }),
    };
    let mut r = axum::Json(answer).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
