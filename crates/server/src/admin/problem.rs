//! The admin API's errors: RFC 9457 problem documents (`application/problem+json`), never
//! an HTML page; and the extractors that turn a bad query or body into one naming the field.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document and its status (boxed: it travels in every `Err`).
#[derive(Debug)]
pub struct Problem(Box<ProblemDocument>);

impl std::ops::Deref for Problem {
    type Target = ProblemDocument;

    fn deref(&self) -> &ProblemDocument {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDocument {
        &mut self.0
    }
}

/// The document's members.
#[derive(Debug, Serialize)]
pub struct ProblemDocument {
    /// A URI naming the kind of problem (`about:blank` for a plain HTTP status).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's words.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case, and the fix.
    pub detail: String,
    /// What the problem is about (the request's path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension: where to step up (a write without a fresh AAL3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_up_url: Option<String>,
    /// Extension: what a step-up the policies ask for must prove (`min_aal`, `factors`,
    /// `max_age`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirement: Option<stepgate_policy::StepUpRequirement>,
    /// Extension: the policy that denied the request (`default` for the default outcome).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Extension: the failing checks of a denial, and how to fix them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Vec<stepgate_policy::RemediationItem>>,
    /// Extension: the scope the request needed (a token without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    /// Extension: the field or parameter that was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Extension: positioned errors (a draft configuration that does not load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<serde_json::Value>,
}

/// The `type` URIs of stepgate's own problems (documented in docs/admin-api.md).
const TYPE_BASE: &str = "https://stepgate.dev/problems/";

impl Problem {
    /// A problem of `status`, kind `kind` (a short slug, or `None` for `about:blank`).
    pub fn new(status: StatusCode, kind: Option<&str>, detail: impl Into<String>) -> Self {
        Problem(Box::new(ProblemDocument {
            kind: kind.map_or_else(|| "about:blank".into(), |k| format!("{TYPE_BASE}{k}")),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            step_up_url: None,
            requirement: None,
            policy: None,
            remediation: None,
            required_scope: None,
            field: None,
            errors: None,
        }))
    }

    /// 400: the request cannot be read.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, Some("bad-request"), detail)
    }

    /// 400 naming the field or parameter that was wrong.
    pub fn bad_field(field: &str, detail: impl Into<String>) -> Self {
        let mut p = Problem::bad_request(detail);
        p.field = Some(field.to_string());
        p
    }

    /// 401: no credentials, or credentials that do not hold.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, Some("unauthenticated"), detail)
    }

    /// 403: authenticated, not allowed.
    pub fn forbidden(kind: &str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, Some(kind), detail)
    }

    /// 401: the policies ask for a step-up the session has not made: `requirement`, at
    /// `step_up_url` (the portal's step-up page).
    pub fn step_up(
        requirement: &stepgate_policy::StepUpRequirement,
        step_up_url: Option<String>,
    ) -> Self {
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            Some("step-up-required"),
            format!(
                "the policies ask for {}; step up at step_up_url and send the request again{}",
                requirement.describe(),
                requirement
                    .message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
        );
        p.requirement = Some(requirement.clone());
        p.step_up_url = step_up_url;
        p
    }

    /// 403: a policy denied the request, with its message and the failing checks.
    pub fn denied(d: &crate::access::verdict::Deny) -> Self {
        let mut p = Problem::forbidden(
            "access-denied",
            format!("denied by policy `{}`: {}", d.policy, d.message),
        );
        p.policy = Some(d.policy.clone());
        p.remediation = Some(d.remediation.clone());
        p
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, Some("not-found"), detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, Some("conflict"), detail)
    }

    /// 422: well formed, but not acceptable.
    pub fn unprocessable(kind: &str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, Some(kind), detail)
    }

    /// 503: a store stepgate needs did not answer.
    pub fn unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, what, "admin API: store unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("unavailable"),
            format!("the {what} did not answer; try again shortly"),
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<stepgate_store::StoreError> for Problem {
    fn from(e: stepgate_store::StoreError) -> Self {
        match e {
            stepgate_store::StoreError::Conflict { what, key } => {
                Problem::conflict(format!("a {what} `{key}` already exists"))
            }
            stepgate_store::StoreError::NotFound { what, key } => {
                Problem::not_found(format!("no {what} `{key}`"))
            }
            other => Problem::unavailable("store", other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_string(&*self.0).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stepgate-admin\""),
            );
        }
        crate::app::responses::security_headers(r)
    }
}

/// A JSON body; a body that does not read answers 400 naming the field (axum's rejection
/// carries serde's path to it).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(json_problem(&e)),
        }
    }
}

fn json_problem(e: &JsonRejection) -> Problem {
    let text = e.body_text();
    match e {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::bad_request("send the body as JSON with `Content-Type: application/json`")
        }
        JsonRejection::JsonDataError(_) => {
            // "Failed to deserialize the JSON body into the target type: groups: invalid type…"
            let detail = text
                .split_once("target type: ")
                .map_or(text.as_str(), |(_, d)| d)
                .to_string();
            let field = named_field(&detail).unwrap_or_else(|| ".".into());
            Problem::bad_field(&field, detail)
        }
        _ => Problem::bad_request(format!("the body is not valid JSON: {text}")),
    }
}

/// The field serde's error `detail` names: the path before its first `: ` (`groups:
/// invalid type…`), or serde's own words' backquoted name of a missing or unknown field.
fn named_field(detail: &str) -> Option<String> {
    detail
        .split_once(": ")
        .map(|(f, _)| f.to_string())
        .filter(|f| !f.contains(' '))
        .or_else(|| detail.split('`').nth(1).map(str::to_string))
}

/// A body that may be empty (the defaults) or JSON; JSON that does not read answers 400
/// naming the field serde names.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let detail = e.to_string();
        match detail.split('`').nth(1) {
            Some(field) => Problem::bad_field(field, detail.clone()),
            None => Problem::bad_request(format!("the body is not valid JSON: {detail}")),
        }
    })
}

/// A query string; one that does not read answers 400 naming the parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(e) => Err(query_problem(&e)),
        }
    }
}

fn query_problem(e: &QueryRejection) -> Problem {
    let text = e.body_text();
    let detail = text
        .split_once("Failed to deserialize query string: ")
        .map_or(text.as_str(), |(_, d)| d)
        .to_string();
    let field = named_field(&detail).unwrap_or_else(|| "query".into());
    Problem::bad_field(&field, format!("bad query parameter: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_a_problem_document() {
        let r = Problem::not_found("no user `x`").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let r = Problem::unauthorized("no token").into_response();
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
