//! stepgate as an OpenID Provider: each configured client (`oidc.clients`) is an app of the
//! policy model, and its authorize endpoint is one more entry point of the access pipeline
//! ([`authorize`]: the request is read into an [`crate::access::AccessRequest`] for the
//! client's app, [`crate::access::Access::decide`] decides, and the verdict is rendered as
//! a code, the portal's sign-in / step-up / blocked page with a return to the request, or
//! an OAuth error). Nothing here evaluates a policy.
//!
//! - [`discovery`]: the document at `/.well-known/openid-configuration`.
//! - [`authorize`]: the authorization endpoint, and what a request asks on top of the
//!   app's policies (`acr_values`, essential `acr`, `max_age`, `prompt`).
//! - [`token`]: the token endpoint (`authorization_code` with PKCE, `refresh_token` with
//!   rotation and reuse detection) and client authentication ([`client_auth`]).
//! - [`grant`]: what codes and refresh tokens carry (sealed with the secrets key), their
//!   single use, a grant's revocation and its tie to the session it came from.
//! - [`tokens`]: ID tokens and RFC 9068 access tokens, signed with the assertion keys and
//!   verified again here.
//! - [`userinfo`], [`revocation`] (RFC 7009 and RFC 7662 introspection), [`logout`]
//!   (RP-initiated logout).
//! - [`par`]: pushed authorization requests (RFC 9126).
//! - [`backchannel`]: logout tokens to the clients of a session that ends, retried with
//!   backoff while a client's endpoint is down.
//! - [`subject`]: `sub` per client, public or pairwise per sector.
//! - [`error`]: OAuth errors, to the client's redirect URI or as JSON.
//!
//! No token is stored: codes and refresh tokens are sealed (ChaCha20-Poly1305 under the
//! secrets key) and their single use, and a grant's revocation, are kept in the hot store;
//! a grant lives only as long as the session it came from (signing out ends it).

pub mod authorize;
pub mod backchannel;
pub mod client_auth;
pub mod discovery;
pub mod error;
pub mod grant;
pub mod logout;
pub mod par;
pub mod revocation;
pub mod subject;
pub mod token;
pub mod tokens;
pub mod userinfo;

use axum::routing::{get, post};
use axum::Router;
use stepgate_store::SecretKey;

use crate::app::state::{Runtime, Shared};

/// The well-known path of the discovery document (a root path: see `app::routes`).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// What the provider keeps: the key codes and refresh tokens are sealed with.
pub struct Provider {
    secret: SecretKey,
    /// Back-channel logouts waiting for a retry on this node.
    backchannel_pending: std::sync::atomic::AtomicUsize,
}

impl Provider {
    /// The provider sealing with `secret` (the deployment's secrets key).
    pub fn new(secret: SecretKey) -> Self {
        Provider {
            secret,
            backchannel_pending: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// The issuer: `oidc.issuer`, else the public URL.
pub fn issuer(rt: &Runtime) -> String {
    match &rt.config.oidc.issuer {
        Some(i) => i.as_str().trim_end_matches('/').to_string(),
        None => rt.public_url.clone(),
    }
}

/// The absolute URL of the provider endpoint `path` (`/oidc/token`), on the public URL.
pub fn endpoint(rt: &Runtime, path: &str) -> String {
    rt.portal_url(path)
}

/// `body` as a JSON answer no cache keeps (tokens and what they say: RFC 6749 §5.1).
pub fn no_store_json(
    status: axum::http::StatusCode,
    body: serde_json::Value,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// The provider's endpoints under the portal path.
pub fn routes(portal_path: &str) -> Router<Shared> {
    let p = |s: &str| format!("{portal_path}/oidc{s}");
    Router::new()
        .route(
            &p("/authorize"),
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route(&p("/token"), post(token::token))
        .route(&p("/jwks"), get(discovery::jwks))
        .route(&p("/par"), post(par::push))
        .route(
            &p("/userinfo"),
            get(userinfo::userinfo).post(userinfo::userinfo),
        )
        .route(&p("/revoke"), post(revocation::revoke))
        .route(&p("/introspect"), post(revocation::introspect))
        .route(
            &p("/end_session"),
            get(logout::end_session_get).post(logout::end_session_post),
        )
}
