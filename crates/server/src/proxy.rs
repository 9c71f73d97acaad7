//! The reverse proxy to upstream apps: streaming bodies both ways over a pooled client.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A keep-alive connection pool to upstreams.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, Body>,
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamClient {
    /// A pool with sensible keep-alive settings.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        UpstreamClient { client }
    }

    /// Sends `req` (already rewritten) and returns the upstream's response, streaming.
    pub async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Body>, hyper_util::client::legacy::Error> {
        let resp = self.client.request(req).await?;
        Ok(resp.map(Body::new))
    }
}

/// Headers a client may never set towards an upstream: identity is stepgate's to assert.
pub const IDENTITY_HEADERS: &[&str] = &[
    "remote-user",
    "remote-groups",
    "remote-email",
    "remote-name",
    "remote-aal",
    "remote-amr",
    "remote-auth-time",
    "x-stepgate-assertion",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
];

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// Removes hop-by-hop headers (including those named in `Connection`).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// Removes every identity header a client sent.
pub fn strip_identity(h: &mut HeaderMap) {
    for n in IDENTITY_HEADERS {
        h.remove(*n);
    }
}

/// The upstream URI for a request path and query.
pub fn upstream_uri(base: &str, uri: &Uri) -> Option<Uri> {
    let base = base.trim_end_matches('/');
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{base}{pq}").parse().ok()
}

/// A gateway error page (HTML for browsers, JSON for APIs) that says nothing of internals.
pub fn bad_gateway(api: bool) -> Response<Body> {
    let (ct, body) = if api {
        ("application/json", r#"{"error":"bad_gateway","error_description":"the upstream application is unavailable"}"#.to_string())
    } else {
        (
            "text/html; charset=utf-8",
            "<!doctype html><title>Unavailable</title><h1>The application is unavailable</h1><p>Please try again in a moment.</p>".to_string(),
        )
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}
