//! The portal's errors, each rendering itself as the page (or, for the passkey scripts, the
//! JSON) a person should see.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::pages::{Message, Pages, WayOn};
use crate::i18n::t;

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

/// The portal's pages that come back to the account page.
fn account(portal: &str) -> Option<WayOn> {
    Some(WayOn::new(format!("{portal}/account"), t("go-to-account")))
}

fn page(status: StatusCode, m: Message<'_>) -> Response {
    m.render(status)
}

/// A page rendered by [`with_portal`], for an error that does not know the portal path
/// (a store failure met through `?`, a request naming nothing of the user's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unrendered {
    BadRequest,
    StoreDown,
}

impl Unrendered {
    fn render(self, portal: &str) -> Response {
        match self {
            Unrendered::BadRequest => page(
                StatusCode::BAD_REQUEST,
                Message {
                    portal,
                    title: &t("error-bad-request-title"),
                    text: &t("error-bad-request-text"),
                    way_on: account(portal),
                    also: None,
                },
            ),
            Unrendered::StoreDown => {
                let mut r = page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Message {
                        portal,
                        title: &t("error-store-down-title"),
                        text: &t("error-store-down-text"),
                        way_on: account(portal),
                        also: None,
                    },
                );
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("5"),
                );
                r
            }
        }
    }
}

/// The portal router's last step: an error that could not render itself (it did not know
/// the portal path) is rendered here, where the path is known.
pub async fn with_portal(portal: std::sync::Arc<str>, mut r: Response) -> Response {
    match r.extensions_mut().remove::<Unrendered>() {
        Some(u) => u.render(&portal),
        None => r,
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        match self {
            PortalError::FormExpired { portal } => page(
                StatusCode::FORBIDDEN,
                Message {
                    portal: &portal,
                    title: &t("error-form-expired-title"),
                    text: &t("error-form-expired-text"),
                    way_on: account(&portal),
                    also: None,
                },
            ),
            PortalError::SignedOut { portal } => page(
                StatusCode::UNAUTHORIZED,
                Message {
                    portal: &portal,
                    title: &t("error-signed-out-title"),
                    text: &t("error-signed-out-text"),
                    way_on: Some(WayOn::new(format!("{portal}/login"), t("sign-in"))),
                    also: None,
                },
            ),
            PortalError::LinkExpired { portal, username } => Pages::global().render(
                StatusCode::BAD_REQUEST,
                "message.html",
                minijinja::context! {
                    portal => &portal, username => username, title => t("error-link-expired-title"),
                    message => t("error-link-expired-text"),
                    link => format!("{portal}/account"), link_text => t("go-to-account"),
                },
            ),
            PortalError::RepeatedCookie { portal } => page(
                StatusCode::BAD_REQUEST,
                Message {
                    portal: &portal,
                    title: &t("error-cookie-title"),
                    text: &crate::session::cookies::RepeatedSessionCookie.to_string(),
                    way_on: Some(WayOn::new(format!("{portal}/login"), t("sign-in-again"))),
                    also: None,
                },
            ),
            PortalError::Upstream {
                portal,
                status,
                message: text,
            } => page(
                status,
                Message {
                    portal: &portal,
                    title: &t("error-not-signed-in-title"),
                    text: &text,
                    way_on: Some(WayOn::new(format!("{portal}/login"), t("back-to-sign-in"))),
                    also: None,
                },
            ),
            PortalError::BadRequest => unrendered(Unrendered::BadRequest),
            PortalError::StoreDown(e) => {
                tracing::error!(error = %e, "store unavailable in the portal");
                unrendered(Unrendered::StoreDown)
            }
            PortalError::Json(status, msg) => crate::app::responses::security_headers(
                (status, Json(serde_json::json!({ "error": msg }))).into_response(),
            ),
        }
    }
}

fn unrendered(u: Unrendered) -> Response {
    // Rendered without the stylesheet should the layer be missing (a handler called
    // outside the portal router): still the page's words, status and headers.
    let mut r = u.render("");
    r.extensions_mut().insert(u);
    r
}
