//! Forward-auth: stepgate decides, a front proxy (nginx, Traefik, Caddy, Envoy) proxies.
//!
//! The front proxy asks one of these endpoints about each request, telling it what the
//! client asked for in forwarding headers, and passes the original request's cookies,
//! `Accept` and `Authorization`. stepgate runs the same access decision as its own reverse
//! proxy ([`gateway::decide`]) and answers:
//!
//! | endpoint | allow | sign in / step up | deny | stores down |
//! |---|---|---|---|---|
//! | `{portal}/auth/nginx` (nginx `auth_request`) | `200` + identity headers | `401` + `X-Stepgate-Redirect` (browsers) or an RFC 9470 challenge (APIs) | `403` (+ `X-Stepgate-Redirect` to the blocked page for browsers) | `503` |
//! | `{portal}/auth/forward` (Traefik `ForwardAuth`, Caddy `forward_auth`) | `200` + identity headers | `302` to the portal (browsers), `401` (APIs; RFC 9470 for step-up) | `302` to the blocked page (browsers), `403` (APIs) | `503` |
//! | `{portal}/auth/envoy/*` (Envoy `ext_authz`, HTTP mode) | as `/auth/forward` | | | |
//!
//! nginx's `auth_request` only understands 2xx, 401 and 403, so its endpoint never
//! redirects itself: the nginx configuration turns a 401/403 carrying
//! `X-Stepgate-Redirect` into a 302 (see `examples/nginx/`).
//!
//! The forwarding headers steer the decision (which app, which path, which method), so they
//! are believed only from `server.trusted_proxies`: any other peer gets `403`, whatever it
//! sends. Every answer is `Cache-Control: no-store`.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::context::client_ip;
use crate::gateway::{self, AccessRequest, Verdict};
use crate::state::{Runtime, Shared};
use crate::web::{self, Peer};

/// The header carrying the absolute portal URL (sign-in, step-up or blocked page) on the
/// nginx endpoint's `401`/`403`, for `auth_request_set` and a redirect in `error_page`.
pub const REDIRECT_HEADER: &str = "x-stepgate-redirect";

/// Which front proxy is asking: they differ in how a refusal must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    /// nginx `auth_request`: only 2xx / 401 / 403 are meaningful; no redirects.
    Nginx,
    /// Traefik, Caddy, Envoy: the response is returned to the client as is.
    Forward,
}

/// What the front proxy says the client asked for.
struct Original {
    method: Method,
    /// Path and query.
    uri: Uri,
    /// `host[:port]`.
    host: String,
    /// The absolute URL (return target).
    url: String,
}

/// `GET {portal}/auth/nginx`: nginx `auth_request`. Reads `X-Original-URL` (absolute) and
/// `X-Original-Method` (default `GET`).
pub async fn nginx(State(st): State<Shared>, peer: Peer, req: Request) -> Response {
    let headers = req.headers();
    let rt = st.runtime.load_full();
    if let Some(r) = refuse_untrusted(&rt, peer) {
        return r;
    }
    let Some(url) = header_str(headers, "x-original-url") else {
        return bad_request("X-Original-URL is missing: set it to $scheme://$http_host$request_uri in the auth_request location");
    };
    let method = header_str(headers, "x-original-method").unwrap_or("GET");
    let Some(orig) = from_url(method, url) else {
        return bad_request("X-Original-URL or X-Original-Method is not valid: expected an absolute http(s) URL and a method name");
    };
    respond(&st, &rt, peer, headers, orig, Flavour::Nginx).await
}

/// `GET {portal}/auth/forward`: Traefik `ForwardAuth` and Caddy `forward_auth`. Reads
/// `X-Forwarded-Method`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Uri`.
pub async fn forward(State(st): State<Shared>, peer: Peer, req: Request) -> Response {
    let headers = req.headers();
    let rt = st.runtime.load_full();
    if let Some(r) = refuse_untrusted(&rt, peer) {
        return r;
    }
    let Some(host) = header_str(headers, "x-forwarded-host") else {
        return bad_request(
            "X-Forwarded-Host is missing: the front proxy must send the original host",
        );
    };
    let proto = header_str(headers, "x-forwarded-proto").unwrap_or(default_scheme(&rt));
    let path = header_str(headers, "x-forwarded-uri").unwrap_or("/");
    let method = header_str(headers, "x-forwarded-method").unwrap_or("GET");
    let Some(orig) = from_parts(method, proto, host, path) else {
        return bad_request(
            "the X-Forwarded-Method/-Proto/-Host/-Uri headers do not make a valid http(s) request",
        );
    };
    respond(&st, &rt, peer, headers, orig, Flavour::Forward).await
}

/// `{portal}/auth/envoy/*`: Envoy `ext_authz` in HTTP mode. Envoy sends the original method
/// and `Host`, and the original path and query after the configured `path_prefix`; the
/// scheme comes from `X-Forwarded-Proto` when Envoy passes it.
pub async fn envoy(State(st): State<Shared>, peer: Peer, req: Request) -> Response {
    let (method, uri, headers) = (req.method(), req.uri(), req.headers());
    let rt = st.runtime.load_full();
    if let Some(r) = refuse_untrusted(&rt, peer) {
        return r;
    }
    let prefix = format!("{}/auth/envoy", rt.portal());
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let rest = pq.strip_prefix(prefix.as_str()).unwrap_or("/");
    let path = if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    };
    let Some(host) =
        header_str(headers, header::HOST.as_str()).or_else(|| uri.authority().map(|a| a.as_str()))
    else {
        return bad_request("Host is missing: Envoy must pass the original request's host");
    };
    let proto = header_str(headers, "x-forwarded-proto").unwrap_or(default_scheme(&rt));
    let Some(orig) = from_parts(method.as_str(), proto, host, &path) else {
        return bad_request("the original request (method, host, path) is not valid");
    };
    respond(&st, &rt, peer, headers, orig, Flavour::Forward).await
}

/// A path whose meaning depends on the upstream: 403, which every front proxy passes on to
/// the client (the front proxy sends the request on as it came, so it cannot be rewritten).
fn refuse_ambiguous(headers: &HeaderMap, e: crate::reqpath::AmbiguousPath) -> Response {
    let mut r = gateway::ambiguous_path(web::is_api(headers), e);
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// Runs the decision and shapes the answer for the front proxy.
async fn respond(
    st: &Shared,
    rt: &Runtime,
    peer: Peer,
    headers: &HeaderMap,
    orig: Original,
    flavour: Flavour,
) -> Response {
    // The path is decided on in its one normal form. The front proxy sends the request on
    // as it came, so a spelling whose meaning depends on the upstream is refused.
    let mut orig = orig;
    match crate::reqpath::normalize_uri(&orig.uri) {
        Ok(None) => {}
        Ok(Some(uri)) => orig.uri = uri,
        Err(e) => return refuse_ambiguous(headers, e),
    }
    // Only the cookies the decision reads are parsed.
    let jar = &web::decision_cookies(rt, headers);
    let api = web::is_api(headers);
    let ip: IpAddr = client_ip(peer.0, headers, &rt.config.trusted_proxies);
    let verdict = {
        let ar = AccessRequest {
            method: &orig.method,
            uri: &orig.uri,
            headers,
            host: &orig.host,
            url: Some(&orig.url),
            ip,
        };
        // A trusted proxy may pass the client certificate it verified (the same header the
        // reverse proxy reads).
        let certs = crate::signals::presented_certificates(rt, peer.0.ip(), headers, None);
        gateway::decide_with(st, rt, jar, &ar, certs).await
    };
    let absolute = |path: &str| format!("{}{path}", rt.public_url);
    let r = match verdict {
        Verdict::Allow {
            user,
            session,
            app,
            bearer,
            assurance,
            ..
        } => {
            let grant = gateway::Grant {
                user: &user,
                session: &session,
                assurance: &assurance,
                bearer: bearer.as_deref(),
            };
            allow(st, rt, app, &grant)
        }
        Verdict::SignIn { login } => {
            if api {
                let mut r = web::json_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "authentication required",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            } else {
                redirect(flavour, StatusCode::UNAUTHORIZED, &absolute(&login))
            }
        }
        Verdict::StepUp { step_up, req, why } => {
            if api {
                gateway::insufficient_user_authentication(&req, &why)
            } else {
                redirect(flavour, StatusCode::UNAUTHORIZED, &absolute(&step_up))
            }
        }
        Verdict::Deny {
            message, blocked, ..
        } => {
            if api {
                web::json_error(StatusCode::FORBIDDEN, "access_denied", &message)
            } else {
                redirect(flavour, StatusCode::FORBIDDEN, &absolute(&blocked))
            }
        }
        Verdict::AmbiguousPath(e) => refuse_ambiguous(headers, e),
        Verdict::NoApp => {
            tracing::warn!(host = %orig.host, "forward-auth: no application is configured for the host; refusing");
            web::json_error(
                StatusCode::FORBIDDEN,
                "access_denied",
                "no application is configured for this host",
            )
        }
        Verdict::Unavailable(detail) => {
            tracing::error!(
                error = detail,
                "forward-auth: store unavailable; refusing the request"
            );
            let mut r = web::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "stepgate cannot verify this request right now",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    };
    no_store(r)
}

/// `200` with every identity header, empty when there is nothing to say, so a front proxy
/// that copies them (Traefik `authResponseHeaders`, Envoy `allowed_upstream_headers`)
/// overwrites whatever the client sent under those names; plus the signed assertion when
/// `gateway.assertion` is on.
fn allow(
    st: &Shared,
    rt: &Runtime,
    app: &stepgate_policy::spec::AppSpec,
    grant: &gateway::Grant<'_>,
) -> Response {
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    // Room for every header at once: an empty map would grow (rehash) three times.
    h.reserve(crate::proxy::REMOTE_HEADERS.len() + 4);
    for (name, value) in gateway::identity_headers(grant.user, grant.assurance) {
        h.insert(name, value);
    }
    if let Some(id) = grant.bearer {
        for (name, value) in crate::bearer::identity_header_overrides(id) {
            h.insert(
                name,
                HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
            );
        }
    }
    // Every identity header is answered, empty when there is nothing to assert, so the
    // front proxy's copy of it replaces whatever the client sent.
    for name in &crate::proxy::REMOTE_HEADERS {
        h.entry(name)
            .or_insert_with(|| HeaderValue::from_static(""));
    }
    if let Some((name, value)) = crate::assertion::header_for(st, rt, app, grant) {
        h.insert(name, value);
    }
    r
}

/// A browser refusal: nginx gets `status` with the target in [`REDIRECT_HEADER`] (its
/// configuration redirects); the others get a `302` they hand to the client.
fn redirect(flavour: Flavour, status: StatusCode, target: &str) -> Response {
    let Ok(v) = HeaderValue::from_str(target) else {
        return status.into_response();
    };
    match flavour {
        Flavour::Nginx => {
            let body = serde_json::json!({ "redirect": target }).to_string();
            let mut r = (status, body).into_response();
            r.headers_mut().insert(REDIRECT_HEADER, v);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Flavour::Forward => {
            let mut r = StatusCode::FOUND.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
    }
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `403` unless the peer is a configured trusted proxy: the forwarding headers choose what
/// is decided, so a client reaching the endpoint directly must not be able to steer it.
fn refuse_untrusted(rt: &Runtime, peer: Peer) -> Option<Response> {
    let ip = match peer.0.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if rt.config.trusted_proxies.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    tracing::warn!(peer = %ip, "forward-auth request from a peer outside server.trusted_proxies; refused");
    Some(no_store(web::json_error(
        StatusCode::FORBIDDEN,
        "access_denied",
        "forward-auth answers only the proxies listed in server.trusted_proxies",
    )))
}

fn bad_request(why: &str) -> Response {
    no_store(web::json_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        why,
    ))
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn default_scheme(rt: &Runtime) -> &'static str {
    if rt.config.sessions.cookie.secure {
        "https"
    } else {
        "http"
    }
}

/// The original request from an absolute URL (nginx's `X-Original-URL`).
fn from_url(method: &str, url: &str) -> Option<Original> {
    let u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "http" | "https") || u.cannot_be_a_base() {
        return None;
    }
    let host = match u.port() {
        Some(p) => format!("{}:{p}", u.host_str()?),
        None => u.host_str()?.to_string(),
    };
    let pq = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    from_parts(method, u.scheme(), &host, &pq)
}

/// Origins (`proto://host[:port]`) [`from_parts`] has seen parse, per serving thread: a
/// handful per deployment, so a full set starts over.
const REMEMBERED_ORIGINS: usize = 256;

thread_local! {
    static PARSED_ORIGINS: std::cell::RefCell<std::collections::HashSet<String>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// The original request from its pieces (Traefik/Caddy/Envoy headers).
fn from_parts(method: &str, proto: &str, host: &str, path: &str) -> Option<Original> {
    let method = Method::from_bytes(method.trim().as_bytes()).ok()?;
    let proto = match proto.split(',').next().unwrap_or("").trim() {
        p if p.eq_ignore_ascii_case("http") => "http",
        p if p.eq_ignore_ascii_case("https") => "https",
        _ => return None,
    };
    // One authority, no userinfo or path smuggled in through the host.
    let host = host.split(',').next().unwrap_or("").trim();
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ', '\\']) {
        return None;
    }
    if !path.starts_with('/') {
        return None;
    }
    let uri: Uri = path.parse().ok()?;
    uri.path_and_query()?;
    // Appended, not formatted: this runs on every forward-auth request.
    let mut url = String::with_capacity(proto.len() + 3 + host.len() + path.len());
    for part in [proto, "://", host, path] {
        url.push_str(part);
    }
    // The URL must parse the same way the redirect checks will read it. Parsing fails only
    // in the scheme, host or port (WHATWG URL parsing never fails on a path or query), so
    // an origin that parsed once is not parsed again.
    let origin = &url[..proto.len() + 3 + host.len()];
    if !PARSED_ORIGINS.with(|o| o.borrow().contains(origin)) {
        let parsed = url::Url::parse(&url).ok()?;
        parsed.host_str()?;
        if origin.len() <= 255 {
            PARSED_ORIGINS.with(|o| {
                let mut o = o.borrow_mut();
                if o.len() >= REMEMBERED_ORIGINS {
                    o.clear();
                }
                o.insert(origin.to_string());
            });
        }
    }
    Some(Original {
        method,
        uri,
        host: host.to_string(),
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_url_is_split_into_host_and_path() {
        let o = from_url("POST", "https://app.example.com:8443/a/b?x=1").unwrap();
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.host, "app.example.com:8443");
        assert_eq!(o.uri.path(), "/a/b");
        assert_eq!(o.uri.query(), Some("x=1"));
        assert_eq!(o.url, "https://app.example.com:8443/a/b?x=1");
        let o = from_url("GET", "http://app.example.com/").unwrap();
        assert_eq!(o.host, "app.example.com");
    }

    #[test]
    fn malformed_originals_are_rejected() {
        assert!(from_url("GET", "/relative").is_none());
        assert!(from_url("GET", "ftp://app.example.com/").is_none());
        assert!(from_url("BAD METHOD", "http://app.example.com/").is_none());
        assert!(from_parts("GET", "gopher", "app.example.com", "/").is_none());
        assert!(from_parts("GET", "http", "evil.com/x@app.example.com", "/").is_none());
        assert!(from_parts("GET", "http", "", "/").is_none());
        assert!(from_parts("GET", "http", "app.example.com", "no-slash").is_none());
        let o = from_parts("GET", "HTTPS, http", "app.example.com, other", "/p?q").unwrap();
        assert_eq!(o.url, "https://app.example.com/p?q");
    }

    #[test]
    fn a_remembered_origin_answers_as_a_fresh_parse_would() {
        let hosts = [
            "app.example.com",
            "APP.Example.com:8443",
            "app.example.com:99999",
            "app.example.com:",
            "[::1]:8443",
            "[zz]",
            "a..b",
            "xn--nxasmq6b.example",
            "a%41.example.com",
            "a%.example.com",
            "app.example.com.",
            "1.2.3.4",
            "256.1.1.1",
        ];
        let paths = ["/", "/a b", "/%zz?q=%", "/\u{e9}?x#y", "/..%2f"];
        let fresh = |proto: &str, host: &str, path: &str| {
            PARSED_ORIGINS.with(|o| o.borrow_mut().clear());
            from_parts("GET", proto, host, path).map(|o| o.url)
        };
        let mut remembered = 0;
        for proto in ["http", "HTTPS"] {
            for host in hosts {
                for path in paths {
                    // Every origin that parses is remembered, from other hosts and paths ...
                    let _ = fresh(proto, "app.example.com", "/");
                    for other in hosts {
                        for p in paths {
                            let _ = from_parts("GET", proto, other, p);
                        }
                    }
                    remembered += PARSED_ORIGINS.with(|o| o.borrow().len());
                    // ... and this one is answered from that memory as without it.
                    let cached = from_parts("GET", proto, host, path).map(|o| o.url);
                    assert_eq!(cached, fresh(proto, host, path), "{proto}://{host}{path}");
                }
            }
        }
        assert!(remembered > 0);
    }
}
