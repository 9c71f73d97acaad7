//! The reverse proxy to upstream apps: streaming bodies both ways over a pooled client.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Keep-alive connection pools to upstreams, one per thread: a request and the upstream
/// connection it uses are driven by the same thread (with `server.workers`, each serving
/// thread has its own event loop), so a proxied request costs no cross-thread wake-ups.
#[derive(Clone, Default)]
pub struct UpstreamClient {
    _private: (),
}

thread_local! {
    static POOL: std::cell::OnceCell<Client<HttpConnector, Body>> = const { std::cell::OnceCell::new() };
}

fn new_pool() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(connector)
}

impl UpstreamClient {
    /// The pools (created on first use in each thread).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` (already rewritten) and returns the upstream's response, streaming.
    pub async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Body>, hyper_util::client::legacy::Error> {
        let client = POOL.with(|p| p.get_or_init(new_pool).clone());
        let resp = client.request(req).await?;
        Ok(resp.map(Body::new))
    }
}

/// The header names stepgate sets or strips on every request, parsed once at compile time
/// (a name given as `&str` is parsed and hashed again on each use).
pub mod names {
    use axum::http::HeaderName;

    /// `Remote-User`.
    pub const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
    /// `Remote-Groups`.
    pub const REMOTE_GROUPS: HeaderName = HeaderName::from_static("remote-groups");
    /// `Remote-Email`.
    pub const REMOTE_EMAIL: HeaderName = HeaderName::from_static("remote-email");
    /// `Remote-Name`.
    pub const REMOTE_NAME: HeaderName = HeaderName::from_static("remote-name");
    /// `Remote-AAL`.
    pub const REMOTE_AAL: HeaderName = HeaderName::from_static("remote-aal");
    /// `Remote-AMR`.
    pub const REMOTE_AMR: HeaderName = HeaderName::from_static("remote-amr");
    /// `Remote-Auth-Time`.
    pub const REMOTE_AUTH_TIME: HeaderName = HeaderName::from_static("remote-auth-time");
    /// The signed identity assertion's default header.
    pub const X_STEPGATE_ASSERTION: HeaderName = HeaderName::from_static("x-stepgate-assertion");
    /// `X-Forwarded-For`.
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    /// `X-Forwarded-Host`.
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    /// `X-Forwarded-Proto`.
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    /// `X-Forwarded-Port`.
    pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    /// `X-Real-IP`.
    pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    /// `Forwarded` (RFC 7239).
    pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
}

/// The identity headers stepgate asserts on an allowed request (forward-auth answers
/// always carry all of them, empty when unknown).
pub static REMOTE_HEADERS: [HeaderName; 7] = [
    names::REMOTE_USER,
    names::REMOTE_GROUPS,
    names::REMOTE_EMAIL,
    names::REMOTE_NAME,
    names::REMOTE_AAL,
    names::REMOTE_AMR,
    names::REMOTE_AUTH_TIME,
];

/// Headers a client may never set towards an upstream besides [`REMOTE_HEADERS`]: identity
/// is stepgate's to assert.
static OTHER_IDENTITY_HEADERS: [HeaderName; 4] = [
    names::X_STEPGATE_ASSERTION,
    HeaderName::from_static("x-forwarded-user"),
    HeaderName::from_static("x-forwarded-email"),
    HeaderName::from_static("x-forwarded-groups"),
];

static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];
/// Removes hop-by-hop headers (including those named in `Connection`).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
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
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// Removes every identity header a client sent.
pub fn strip_identity(h: &mut HeaderMap) {
    for n in REMOTE_HEADERS.iter().chain(&OTHER_IDENTITY_HEADERS) {
        h.remove(n);
    }
}

/// The upstream URI for a request path and query.
pub fn upstream_uri(base: &str, uri: &Uri) -> Option<Uri> {
    let base = base.trim_end_matches('/');
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{base}{pq}").parse().ok()
}

/// The protocol a request asks to switch to (`Connection: upgrade` + `Upgrade: websocket`).
pub fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let wants = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !wants {
        return None;
    }
    h.get(header::UPGRADE).cloned()
}

/// Marks a message as switching to `protocol` (after the hop-by-hop headers were removed).
pub fn set_upgrade(h: &mut HeaderMap, protocol: HeaderValue) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, protocol);
}

/// Joins the client's upgraded connection to the upstream's, copying both ways until
/// either side closes.
pub fn splice_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    app: String,
) {
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%app, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
            tracing::debug!(%app, error = %e, "upgraded connection ended with an error");
        }
    });
}

/// Headers about the client that only stepgate may set towards an upstream.
pub static FORWARDING_HEADERS: [HeaderName; 6] = [
    names::FORWARDED,
    names::X_FORWARDED_FOR,
    names::X_FORWARDED_HOST,
    names::X_FORWARDED_PROTO,
    names::X_FORWARDED_PORT,
    names::X_REAL_IP,
];

/// Replaces every forwarding header with what stepgate knows: the client address (already
/// resolved through the trusted proxies), the host asked for and the scheme.
pub fn set_forwarding(h: &mut HeaderMap, client: std::net::IpAddr, host: &str, proto: &str) {
    for n in &FORWARDING_HEADERS {
        h.remove(n);
    }
    let ip = client.to_string();
    if let Ok(v) = HeaderValue::from_str(&ip) {
        h.insert(names::X_FORWARDED_FOR, v.clone());
        h.insert(names::X_REAL_IP, v);
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(names::X_FORWARDED_HOST, v);
    }
    h.insert(
        names::X_FORWARDED_PROTO,
        if proto == "https" {
            HeaderValue::from_static("https")
        } else {
            HeaderValue::from_static("http")
        },
    );
    let mut set = |name: HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    // RFC 7239: IPv6 addresses are bracketed and quoted; a host with odd bytes is quoted.
    let node = match client {
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        _ => ip,
    };
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if host_ok && !host.is_empty() {
        set(
            names::FORWARDED,
            format!("for={node};host=\"{host}\";proto={proto}"),
        );
    } else {
        set(names::FORWARDED, format!("for={node};proto={proto}"));
    }
}

/// The upstream did not answer in time (HTML for browsers, JSON for APIs).
pub fn gateway_timeout(api: bool) -> Response<Body> {
    let mut r = bad_gateway(api);
    *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    if api {
        *r.body_mut() = Body::from(
            r#"{"error":"gateway_timeout","error_description":"the upstream application did not answer in time"}"#,
        );
    }
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("forwarded", "for=6.6.6.6".parse().unwrap());
        set_forwarding(
            &mut h,
            "2001:db8::1".parse().unwrap(),
            "app.example.com",
            "https",
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";host=\"app.example.com\";proto=https"
        );
        assert_eq!(h.get_all("forwarded").iter().count(), 1);
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(upgrade_protocol(&h).is_none());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert_eq!(upgrade_protocol(&h).unwrap(), "websocket");
    }
}
