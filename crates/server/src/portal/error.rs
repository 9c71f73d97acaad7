//! The portal's errors, each rendering itself as the page (or, for the passkey scripts, the
//! JSON) a person should see.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::pages::Pages;

/// Why a portal request cannot go on.
#[derive(Debug)]
pub enum PortalError {
    /// The form's CSRF token is missing, expired or not this session's.
    FormExpired {
        /// The portal path.
        portal: String,
    },
    /// The session ended (signed out, expired, revoked).
    SignedOut {
        /// The portal path.
        portal: String,
    },
    /// A step-up or blocked-page link that is forged, expired or someone else's.
    LinkExpired {
        /// The portal path.
        portal: String,
        /// Whose session it is, for the page's header.
        username: Option<String>,
    },
    /// The session cookie was sent more than once.
    RepeatedCookie {
        /// The portal path.
        portal: String,
    },
    /// The request names something that is not there or not the user's.
    BadRequest,
    /// A store failed: nothing was changed, try again (fail closed).
    StoreDown(String),
    /// A JSON endpoint's error (the passkey scripts show `error` to the person).
    Json(StatusCode, String),
    /// A sign-in through an upstream identity provider that did not happen.
    Upstream {
        /// The portal path.
        portal: String,
        /// The status.
        status: StatusCode,
        /// What the person is told.
        message: String,
    },
}

impl PortalError {
    /// A JSON error for the passkey scripts.
    pub fn json(status: StatusCode, message: &str) -> Self {
        PortalError::Json(status, message.to_string())
    }
}

impl From<stepgate_store::StoreError> for PortalError {
    fn from(e: stepgate_store::StoreError) -> Self {
        PortalError::StoreDown(e.to_string())
    }
}

fn message(status: StatusCode, portal: &str, ctx: minijinja::Value) -> Response {
    let ctx = minijinja::context! { portal => portal, ..ctx };
    Pages::global().render(status, "message.html", ctx)
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        use minijinja::context;
        match self {
            PortalError::FormExpired { portal } => message(
                StatusCode::FORBIDDEN,
                &portal,
                context! { title => "Form expired", message => "This form expired or did not come from stepgate. Go back, reload the page and try again.", link => format!("{portal}/account"), link_text => "Continue" },
            ),
            PortalError::SignedOut { portal } => message(
                StatusCode::UNAUTHORIZED,
                &portal,
                context! { title => "Signed out", message => "Your session ended. Sign in again.", link => format!("{portal}/login"), link_text => "Sign in" },
            ),
            PortalError::LinkExpired { portal, username } => message(
                StatusCode::BAD_REQUEST,
                &portal,
                context! { title => "Link expired", message => "This link is invalid or has expired. Go back to the application and try again.", username => username },
            ),
            PortalError::RepeatedCookie { portal } => message(
                StatusCode::BAD_REQUEST,
                &portal,
                context! { title => "Cookie problem", message => crate::session::cookies::RepeatedSessionCookie.to_string() },
            ),
            PortalError::Upstream {
                portal,
                status,
                message: text,
            } => message(
                status,
                &portal,
                context! { title => "Not signed in", message => text, link => format!("{portal}/login"), link_text => "Back to sign-in" },
            ),
            PortalError::BadRequest => {
                crate::app::responses::security_headers(StatusCode::BAD_REQUEST.into_response())
            }
            PortalError::StoreDown(e) => {
                tracing::error!(error = %e, "store unavailable in the portal");
                let r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stepgate cannot reach its store; try again shortly",
                )
                    .into_response();
                crate::app::responses::security_headers(r)
            }
            PortalError::Json(status, msg) => crate::app::responses::security_headers(
                (status, Json(serde_json::json!({ "error": msg }))).into_response(),
            ),
        }
    }
}
