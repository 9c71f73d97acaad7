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
    /// A JSON endpoint's error after which the session is gone: the passkey script shows
    /// `error` and offers `redirect`, the way to sign in again.
    JsonSignedOut {
        /// The status.
        status: StatusCode,
        /// What the person is told.
        message: String,
        /// Where to sign in again.
        redirect: String,
    },
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

impl PortalError {
    /// This error as a passkey script reads it (JSON, the sentence in `error`), for a JSON
    /// endpoint that met it on its way: an upstream provider's refusal keeps its words, and
    /// one that ended the session (`401`) says where to sign in again. Others are unchanged.
    pub fn for_script(self) -> PortalError {
        match self {
            PortalError::Upstream {
                portal,
                status: StatusCode::UNAUTHORIZED,
                message,
            } => PortalError::JsonSignedOut {
                status: StatusCode::UNAUTHORIZED,
                message,
                redirect: format!("{portal}/login"),
            },
            PortalError::Upstream {
                status, message, ..
            } => PortalError::Json(status, message),
            PortalError::SignedOut { portal } => PortalError::JsonSignedOut {
                status: StatusCode::UNAUTHORIZED,
                message: t("error-signed-out-text"),
                redirect: format!("{portal}/login"),
            },
            other => other,
        }
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

/// The portal's pages that go back to signing in, with the link's words.
fn login(portal: &str, words: String) -> Option<WayOn> {
    Some(WayOn::new(format!("{portal}/login"), words))
}

/// The message page with `title`, `text` and one way on.
fn page(
    status: StatusCode,
    portal: &str,
    title: &str,
    text: &str,
    way_on: Option<WayOn>,
) -> Response {
    let also = None;
    Message {
        portal,
        title,
        text,
        way_on,
        also,
    }
    .render(status)
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
                portal,
                &t("error-bad-request-title"),
                &t("error-bad-request-text"),
                account(portal),
            ),
            Unrendered::StoreDown => {
                let mut r = page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    portal,
                    &t("error-store-down-title"),
                    &t("error-store-down-text"),
                    account(portal),
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
                &portal,
                &t("error-form-expired-title"),
                &t("error-form-expired-text"),
                account(&portal),
            ),
            PortalError::SignedOut { portal } => page(
                StatusCode::UNAUTHORIZED,
                &portal,
                &t("error-signed-out-title"),
                &t("error-signed-out-text"),
                login(&portal, t("sign-in")),
            ),
            PortalError::LinkExpired { portal, username } => link_expired(&portal, username),
            PortalError::RepeatedCookie { portal } => page(
                StatusCode::BAD_REQUEST,
                &portal,
                &t("error-cookie-title"),
                &crate::session::cookies::RepeatedSessionCookie.to_string(),
                login(&portal, t("sign-in-again")),
            ),
            PortalError::Upstream {
                portal,
                status,
                message,
            } => page(
                status,
                &portal,
                &t("error-not-signed-in-title"),
                &message,
                login(&portal, t("back-to-sign-in")),
            ),
            PortalError::BadRequest => unrendered(Unrendered::BadRequest),
            PortalError::StoreDown(e) => {
                tracing::error!(error = %e, "store unavailable in the portal");
                unrendered(Unrendered::StoreDown)
            }
            PortalError::Json(status, msg) => json(status, serde_json::json!({ "error": msg })),
            PortalError::JsonSignedOut {
                status,
                message,
                redirect,
            } => json(
                status,
                serde_json::json!({ "error": message, "redirect": redirect, "signed_out": true }),
            ),
        }
    }
}

/// A forged, expired or someone else's link: the page names whose session this is.
fn link_expired(portal: &str, username: Option<String>) -> Response {
    Pages::global().render(
        StatusCode::BAD_REQUEST,
        "message.html",
        minijinja::context! {
            portal => portal, username => username, title => t("error-link-expired-title"),
            message => t("error-link-expired-text"),
            link => format!("{portal}/account"), link_text => t("go-to-account"),
        },
    )
}

/// A JSON error, under the portal's security headers.
fn json(status: StatusCode, body: serde_json::Value) -> Response {
    crate::app::responses::security_headers((status, Json(body)).into_response())
}

fn unrendered(u: Unrendered) -> Response {
    // Rendered without the stylesheet should the layer be missing (a handler called
    // outside the portal router): still the page's words, status and headers.
    let mut r = u.render("");
    r.extensions_mut().insert(u);
    r
}
