//! `GET /.well-known/openid-configuration`: OpenID Connect Discovery 1.0 with the RFC 8414
//! fields, describing exactly what the endpoints accept.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{endpoint, issuer};
use crate::app::state::Shared;

/// The discovery document (404 when no client is configured: stepgate is then no provider).
pub fn document(st: &Shared) -> Response {
    let rt = st.runtime.load();
    let cfg = &rt.config.oidc;
    if cfg.clients.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let acr: Vec<String> = (1..=3).map(|n| cfg.acr.name(n)).collect();
    let doc = json!({
        "issuer": issuer(&rt),
        "authorization_endpoint": endpoint(&rt, "/oidc/authorize"),
        "token_endpoint": endpoint(&rt, "/oidc/token"),
        "userinfo_endpoint": endpoint(&rt, "/oidc/userinfo"),
        "jwks_uri": endpoint(&rt, "/oidc/jwks"),
        "revocation_endpoint": endpoint(&rt, "/oidc/revoke"),
        "introspection_endpoint": endpoint(&rt, "/oidc/introspect"),
        "end_session_endpoint": endpoint(&rt, "/oidc/end_session"),
        "pushed_authorization_request_endpoint": endpoint(&rt, "/oidc/par"),
        "require_pushed_authorization_requests": false,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": crate::gateway::assertion::keys::KeyAlg::ALL.map(|a| a.as_str()),
        "userinfo_signing_alg_values_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": stepgate_config::oidc::SCOPES,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash", "name", "preferred_username", "email", "groups"],
        "claims_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "acr_values_supported": acr,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    });
    let mut r = axum::Json(doc).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// `GET {portal}/oidc/jwks`: the provider's own keys (`jwks_uri`): the current key of each
/// algorithm in use, and retired ones while tokens they signed may still be live.
pub async fn jwks(State(st): State<Shared>) -> Response {
    st.oidc_keys.jwks_response()
}
