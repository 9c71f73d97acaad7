//! Small answers every surface writes, each with the security headers: a redirect, a JSON
//! error, and the headers themselves; and how a request says it wants a machine answer.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The peer address extension, as set by `into_make_service_with_connect_info`.
pub type Peer = axum::extract::ConnectInfo<SocketAddr>;

/// Whether the client wants a machine answer (API): a bearer token, or an `Accept` that
/// asks for JSON and not HTML. Never guessed from the path.
pub fn is_api(headers: &HeaderMap) -> bool {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
    {
        return true;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !accept.contains("text/html")
        && (accept.contains("application/json") || accept.contains("+json"))
}

/// A redirect (303 See Other, so a POST becomes a GET).
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    security_headers(r)
}

/// `resp` (with [`security_headers`]) whose forms may also be redirected to `origin`
/// (`form-action 'self' <origin>`): a sign-in page returning to an OpenID Connect client.
pub fn allow_form_redirect_to(mut resp: Response, origin: Option<&str>) -> Response {
    let Some(origin) = origin else { return resp };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self' {origin}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// A JSON error body for APIs.
pub fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    security_headers(r)
}

/// Adds the portal's security headers: a strict CSP, no framing, no sniffing, no referrer
/// leaks, and `no-store` so authentication pages are never cached.
pub fn security_headers<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    put_security_headers(resp.headers_mut());
    resp
}

/// The headers [`security_headers`] adds, put into `h` (a map answered again and again,
/// such as forward-auth's kept answer, gets them once: see
/// [`crate::gateway::asserted::Asserted::answer`]).
pub fn put_security_headers(h: &mut axum::http::HeaderMap) {
    /// Parsed once, not per response (a name given as `&str` is parsed and hashed anew).
    const CROSS_ORIGIN_OPENER_POLICY: HeaderName =
        HeaderName::from_static("cross-origin-opener-policy");
    // Room for all six at once (every response gets them).
    h.reserve(6);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        CROSS_ORIGIN_OPENER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}
