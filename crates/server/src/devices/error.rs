//! The device endpoints' errors, each rendering itself: the posture API answers
//! `{"error", "error_description"}` (RFC 6750 for its tokens), the CAEP receiver RFC 8935's
//! `{"err", "description"}`; both send `Retry-After` when trying again later can help.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which endpoint is answering (their error bodies differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `PUT/GET {portal}/api/devices/…`.
    PostureApi,
    /// `POST {portal}/caep/events`.
    Caep,
}

/// A refusal by a device endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Who answers.
    pub endpoint: Endpoint,
    /// The status.
    pub status: StatusCode,
    /// The machine-readable code (`invalid_request`, `rate_limited`, an RFC 8935 `err`).
    pub code: String,
    /// What is wrong, for the sender's logs.
    pub description: String,
    /// Seconds after which trying again may work.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(endpoint: Endpoint, status: StatusCode, code: &str, description: String) -> Self {
        ApiError {
            endpoint,
            status,
            code: code.to_string(),
            description,
            retry_after: None,
        }
    }

    /// 400: the request is malformed.
    pub fn invalid(endpoint: Endpoint, description: impl Into<String>) -> Self {
        Self::new(
            endpoint,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            description.into(),
        )
    }

    /// 404.
    pub fn not_found(endpoint: Endpoint, description: impl Into<String>) -> Self {
        Self::new(
            endpoint,
            StatusCode::NOT_FOUND,
            "not_found",
            description.into(),
        )
    }

    /// 400 with an RFC 8935 error code (a SET that is refused).
    pub fn set(code: &str, description: impl Into<String>) -> Self {
        Self::new(
            Endpoint::Caep,
            StatusCode::BAD_REQUEST,
            code,
            description.into(),
        )
    }

    /// 429: over a budget; try again after `retry_after` seconds.
    pub fn rate_limited(
        endpoint: Endpoint,
        description: impl Into<String>,
        retry_after: u64,
    ) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                endpoint,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                description.into(),
            )
        }
    }

    /// 503: a store failed (nothing was changed); try again shortly.
    pub fn unavailable(endpoint: Endpoint, what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{what} unavailable");
        ApiError {
            retry_after: Some(5),
            ..Self::new(
                endpoint,
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("the {what} is unavailable; retry later"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.endpoint {
            Endpoint::PostureApi => {
                json!({ "error": self.code, "error_description": self.description })
            }
            Endpoint::Caep => json!({ "err": self.code, "description": self.description }),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        crate::app::responses::security_headers(r)
    }
}

impl From<&stepgate_signals::device::DeviceApiAuthError> for ApiError {
    fn from(e: &stepgate_signals::device::DeviceApiAuthError) -> Self {
        use stepgate_signals::device::DeviceApiAuthError::MissingScope;
        let (status, code) = match e {
            MissingScope { .. } => (StatusCode::FORBIDDEN, "insufficient_scope"),
            _ => (StatusCode::UNAUTHORIZED, "invalid_token"),
        };
        Self::new(Endpoint::PostureApi, status, code, e.to_string())
    }
}
