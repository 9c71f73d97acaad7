//! The userinfo endpoint: the claims of the access token's scopes, for a token this
//! provider issued whose grant still stands.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::grant::{self, Authorization};
use super::issuer;
use super::tokens::verify_access;
use crate::access::bearer::bearer_token;
use crate::app::state::Shared;

fn refused(error: &str) -> Response {
    let mut r = crate::app::responses::json_error(
        StatusCode::UNAUTHORIZED,
        error,
        "the access token is not valid",
    );
    let v = format!("Bearer error=\"{error}\"");
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// What an access token's claims say of its grant, for the grant checks: the user is the
/// sealed `sgu` of a pairwise client's token, else `sub`.
pub fn authorization_of(st: &Shared, claims: &Value) -> Option<Authorization> {
    let s = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let uid = match s("sgu") {
        Some(sealed) => st.oidc.open_uid(&sealed)?,
        None => s("sub")?,
    };
    Some(Authorization {
        cid: s("client_id")?,
        uid,
        sct: 0,
        aal: 0,
        amr: Vec::new(),
        auth_time: claims.get("auth_time").and_then(Value::as_i64).unwrap_or(0),
        scope: s("scope").unwrap_or_default(),
        gid: s("gid")?,
        nonce: None,
    })
}

/// Whether an access token's grant still stands: not revoked, and its session (named by
/// `sid`) still live.
pub async fn access_stands(
    st: &Shared,
    claims: &Value,
) -> Result<bool, stepgate_store::StoreError> {
    // A client_credentials token: no user, no grant to revoke; it stands until `exp`.
    if claims.get("gid").is_none()
        && claims.get("sub").is_some()
        && claims.get("sub") == claims.get("client_id")
    {
        return Ok(true);
    }
    let Some(a) = authorization_of(st, claims) else {
        return Ok(false);
    };
    if grant::revoked(st, &a.gid).await? {
        return Ok(false);
    }
    match st.cache.user(&a.uid).await? {
        Some(u) if !u.disabled => {}
        _ => return Ok(false),
    }
    let Some(sid) = claims.get("sid").and_then(Value::as_str) else {
        return Ok(false);
    };
    // The session is found by its `sid` among the user's live sessions.
    for id in st.sessions.of_user(&a.uid).await? {
        if let Some((_, d)) = st.sessions.peek(&id).await? {
            if !d.pending && grant::sid(st, &a.uid, grant::session_mark(d.created_at)) == sid {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `GET|POST {portal}/oidc/userinfo` with `Authorization: Bearer`.
pub async fn userinfo(State(st): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = bearer_token(&headers) else {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let rt = st.runtime.load_full();
    let Some(claims) = verify_access(&st.oidc_keys, &issuer(&rt), token) else {
        return refused("invalid_token");
    };
    match access_stands(&st, &claims).await {
        Ok(true) => {}
        Ok(false) => return refused("invalid_token"),
        Err(e) => return super::error::OAuthError::unavailable(e).into_response(),
    }
    let mut out = serde_json::Map::new();
    out.insert("sub".into(), claims["sub"].clone());
    for k in ["name", "preferred_username", "email", "groups"] {
        if let Some(v) = claims.get(k) {
            // `preferred_username` is in every access token for the gateway; userinfo
            // gives it only for `profile`.
            let scope = claims["scope"].as_str().unwrap_or("");
            if k == "preferred_username" && !scope.split(' ').any(|s| s == "profile") {
                continue;
            }
            out.insert(k.into(), v.clone());
        }
    }
    let mut r = axum::Json(json!(out)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
