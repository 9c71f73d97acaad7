//! OAuth 2.0 errors: sent back to a client's verified redirect URI (with `state` and, per
//! RFC 9207, `iss`), answered as JSON by the back-channel endpoints, or — when the client
//! or its redirect URI cannot be trusted — shown to the person and never redirected.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::responses::{json_error, see_other};
use crate::portal::pages::Pages;

/// An error from a back-channel endpoint (token, revocation, introspection, userinfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The status.
    pub status: StatusCode,
    /// The RFC 6749 error code.
    pub error: &'static str,
    /// What went wrong, naming no internals.
    pub description: String,
}

impl OAuthError {
    /// `400` with `error`.
    pub fn bad(error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    /// `401 invalid_client`.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
        }
    }

    /// `400 invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::bad("invalid_grant", description)
    }

    /// `500 server_error`: something of stepgate's own (signing, sealing) failed.
    pub fn server_error(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: description.into(),
        }
    }

    /// `503 temporarily_unavailable` (a store failed: fail closed).
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "oidc: a store failed; refusing");
        OAuthError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "temporarily_unavailable",
            description: "try again shortly".into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut r = json_error(self.status, self.error, &self.description);
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"stepgate\""),
            );
        }
        r
    }
}

/// Where an authorization request's answer goes: the client's registered (exactly
/// matched) redirect URI, with its `state` and the issuer.
pub struct Back<'a> {
    /// The redirect URI, as registered.
    pub redirect_uri: &'a str,
    /// The request's `state`.
    pub state: Option<&'a str>,
    /// The issuer (`iss`, RFC 9207).
    pub issuer: &'a str,
}

impl Back<'_> {
    /// The redirect URI with `params`, `state` and `iss` added to its query.
    pub fn url(&self, params: &[(&str, &str)]) -> String {
        let Ok(mut u) = url::Url::parse(self.redirect_uri) else {
            // Registered URIs are checked at load: unreachable.
            return String::new();
        };
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = self.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", self.issuer);
        }
        u.to_string()
    }

    /// The error `error` sent back to the client.
    pub fn error(&self, error: &str, description: &str) -> Response {
        see_other(&self.url(&[("error", error), ("error_description", description)]))
    }
}

/// A request whose client or redirect URI cannot be trusted: shown, never redirected (an
/// attacker's redirect URI must not receive anything, not even an error).
pub fn not_redirected(portal: &str, message: &str) -> Response {
    Pages::global().render(
        StatusCode::BAD_REQUEST,
        "message.html",
        minijinja::context! { portal => portal, title => "This sign-in request is not valid", message => message },
    )
}
