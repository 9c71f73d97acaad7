//! Token revocation (RFC 7009) and introspection (RFC 7662), for the authenticated client's
//! own tokens. Revoking either a refresh or an access token revokes its whole grant.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use stepgate_config::OidcClient;

use super::client_auth::ClientFields;
use super::error::OAuthError;
use super::grant;
use super::issuer;
use super::no_store_json;
use super::tokens::verify_access;
use super::userinfo::{access_stands, authorization_of};
use crate::app::state::{Runtime, Shared};

/// The revocation and introspection form.
#[derive(Deserialize, Default)]
pub struct TokenRef {
    #[serde(default)]
    token: String,
    #[serde(default)]
    token_type_hint: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// What a token presented to these endpoints is.
enum Known {
    Refresh(grant::Refresh),
    Access(Value),
}

fn identify(st: &Shared, rt: &Runtime, token: &str) -> Option<Known> {
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
    revoked(&st, &headers, &f)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn revoked(st: &Shared, headers: &HeaderMap, f: &TokenRef) -> Result<Response, OAuthError> {
    let rt = st.runtime.load_full();
    let client = f.client.authenticate(st, &rt, headers).await?;
    let _ = &f.token_type_hint;
    let gid = match identify(st, &rt, &f.token) {
        Some(Known::Refresh(r)) if r.auth.cid == client.id.as_str() => Some(r.auth.gid),
        Some(Known::Access(c)) => authorization_of(st, &c)
            .filter(|a| a.cid == client.id.as_str())
            .map(|a| a.gid),
        _ => None,
    };
    if let Some(gid) = gid {
        grant::revoke(st, &gid, Utc::now())
            .await
            .map_err(OAuthError::unavailable)?;
        tracing::info!(client = %client.id.as_str(), "oidc: grant revoked by its client");
    }
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(r)
}

/// `POST {portal}/oidc/introspect`: whether the token is active, and what it says, for the
/// client's own tokens (another client's are "inactive").
pub async fn introspect(
    State(st): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<TokenRef>,
) -> Response {
    introspected(&st, &headers, &f)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn introspected(
    st: &Shared,
    headers: &HeaderMap,
    f: &TokenRef,
) -> Result<Response, OAuthError> {
    let rt = st.runtime.load_full();
    let client = f.client.authenticate(st, &rt, headers).await?;
    let now = Utc::now();
    let answer = match identify(st, &rt, &f.token) {
        Some(Known::Refresh(r)) if r.auth.cid == client.id.as_str() && now.timestamp() <= r.exp => {
            refresh_token_says(st, &rt, client, &r).await?
        }
        Some(Known::Access(c))
            if c.get("client_id").and_then(Value::as_str) == Some(client.id.as_str()) =>
        {
            access_token_says(st, c).await?
        }
        _ => inactive(),
    };
    Ok(no_store_json(StatusCode::OK, answer))
}

/// RFC 7662's answer for a token that is not (or no longer) active.
fn inactive() -> Value {
    json!({ "active": false })
}

/// What an unexpired refresh token of the client says, if it is unused and its grant
/// stands.
async fn refresh_token_says(
    st: &Shared,
    rt: &Runtime,
    client: &OidcClient,
    r: &grant::Refresh,
) -> Result<Value, OAuthError> {
    let live = async {
        Ok::<_, stepgate_store::StoreError>(
            !grant::refresh_used(st, r).await? && grant::stands(st, &r.auth).await?,
        )
    };
    if !live.await.map_err(OAuthError::unavailable)? {
        return Ok(inactive());
    }
    let sub = super::subject::subject(rt, client, &r.auth.uid).map_err(OAuthError::unavailable)?;
    Ok(json!({
        "active": true, "token_type": "refresh_token", "client_id": r.auth.cid,
        "sub": sub, "scope": r.auth.scope, "exp": r.exp, "iss": issuer(rt),
        "acr": rt.config.oidc.acr.name(r.auth.aal.max(1)), "auth_time": r.auth.auth_time,
    }))
}

/// What an access token of the client says (its claims, less stepgate's own), if its
/// grant stands.
async fn access_token_says(st: &Shared, claims: Value) -> Result<Value, OAuthError> {
    if !access_stands(st, &claims)
        .await
        .map_err(OAuthError::unavailable)?
    {
        return Ok(inactive());
    }
    let mut m = claims.as_object().cloned().unwrap_or_default();
    m.insert("active".into(), json!(true));
    m.insert("token_type".into(), json!("Bearer"));
    m.remove("gid");
    m.remove("sgu");
    Ok(Value::Object(m))
}
