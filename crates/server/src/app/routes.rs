//! The router: the portal's pages and APIs under the portal path, stepgate's own root
//! paths, and — past the router, for speed — the gateway and the two forward-auth
//! endpoints most traffic goes to (`direct_route`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tower::ServiceExt as _;

use super::state::Shared;
use crate::portal;
use crate::portal::pages::{PORTAL_JS, STYLE_CSS, WEBAUTHN_JS};

/// Builds the whole application router.
pub fn router(state: Shared) -> Router {
    let portal_path = state.runtime.load().portal().to_string();
    router_at(state, &portal_path)
}

/// [`router`] with the portal's routes under `portal_path`.
pub(super) fn router_at(state: Shared, portal_path: &str) -> Router {
    let p = |s: &str| format!("{portal_path}{s}");
    // Every route is either one of ROOT_PATHS or under the portal path: `direct_route`
    // sends everything else straight to the gateway, past this router.
    let [healthz, readyz, jwks, openid] = ROOT_PATHS;
    Router::new()
        .route(healthz, own_path(OwnPath::Healthz))
        .route(readyz, own_path(OwnPath::Readyz))
        .route(jwks, own_path(OwnPath::Jwks))
        .route(openid, own_path(OwnPath::OpenIdConfiguration))
        .route(
            &p("/static/style.css"),
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            &p("/static/webauthn.js"),
            get(|| async { asset("text/javascript; charset=utf-8", WEBAUTHN_JS) }),
        )
        .route(
            &p("/static/portal.js"),
            get(|| async { asset("text/javascript; charset=utf-8", PORTAL_JS) }),
        )
        .merge(portal::routes(portal_path))
        .merge(crate::devices::routes(portal_path))
        .merge(crate::gateway::forward_auth::routes(portal_path))
        .merge(crate::oidc::routes(portal_path))
        .merge(crate::admin::routes(&state, portal_path))
        .fallback(crate::gateway::handle)
        .with_state(state)
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The router's only paths outside the portal path (see [`OwnPath`]).
const ROOT_PATHS: [&str; 4] = [
    "/healthz",
    "/readyz",
    "/.well-known/jwks.json",
    crate::oidc::DISCOVERY_PATH,
];

/// Stepgate's own root paths. On an app's host (other than the public URL's) they are the
/// app's and go through the gateway like any other path, so an app keeps its own
/// `/healthz` or `/.well-known/jwks.json`. Stepgate answers only `GET` and `HEAD` on them.
#[derive(Clone, Copy)]
enum OwnPath {
    Healthz,
    Readyz,
    Jwks,
    /// The OpenID Provider's discovery document.
    OpenIdConfiguration,
}

/// The route for one of stepgate's own root paths (any method: see [`OwnPath`]).
fn own_path(which: OwnPath) -> axum::routing::MethodRouter<Shared> {
    any(
        move |State(st): State<Shared>,
              peer: super::responses::Peer,
              req: axum::extract::Request| { answer_own_path(which, st, peer, req) },
    )
}

async fn answer_own_path(
    which: OwnPath,
    st: Shared,
    peer: super::responses::Peer,
    req: axum::extract::Request,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let for_app = st.runtime.load().is_app_host(host);
    if for_app {
        return crate::gateway::handle(State(st), peer, req).await;
    }
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match which {
        OwnPath::Healthz => "ok".into_response(),
        OwnPath::Readyz => ready(&st, req.uri().query()).await,
        OwnPath::Jwks => crate::gateway::assertion::jwks_handler(State(st)).await,
        OwnPath::OpenIdConfiguration => crate::oidc::discovery::document(&st),
    }
}

async fn ready(st: &Shared, query: Option<&str>) -> Response {
    if !st.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    // Ready means the stores answer.
    if let Err(e) = st.stores.hot.get_counter("readyz").await {
        tracing::warn!(error = %e, "not ready: hot store");
        return (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response();
    }
    // `/readyz?details`: the device connectors' health too (a failing connector does not
    // make the node unready: its devices' posture goes stale instead).
    if query.is_some_and(|q| q.split('&').any(|p| p == "details")) {
        let now = chrono::Utc::now();
        let connectors: serde_json::Map<String, serde_json::Value> = st
            .connectors
            .status()
            .into_iter()
            .map(|(name, s)| {
                let lag = s.last_success.map(|t| (now - t).num_seconds().max(0));
                let stale = st.connectors.health().stale(&name, now).is_some();
                let v = serde_json::json!({
                    "stale": stale,
                    "last_success": s.last_success, "lag_seconds": lag,
                    "consecutive_errors": s.consecutive_errors, "errors_total": s.errors_total,
                    "last_error": s.last_error, "last_counts": s.last_counts,
                });
                (name, v)
            })
            .collect();
        let rt = st.runtime.load();
        // Nodes of one deployment should report one configuration version; the cache is
        // off while a multi-node subscription is down.
        return axum::Json(serde_json::json!({
            "status": "ready",
            "config_version": rt.config.version,
            "cache": { "ttl_ms": st.cache.ttl().as_millis() as u64, "in_use": st.cache.in_use() },
            "connectors": connectors,
        }))
        .into_response();
    }
    "ready".into_response()
}

/// A handler a request reaches without going through the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direct {
    /// [`crate::gateway::handle`], the router's fallback.
    Gateway,
    /// [`crate::gateway::forward_auth::nginx`].
    NginxAuth,
    /// [`crate::gateway::forward_auth::forward`].
    ForwardAuth,
}

/// Which handler the router would give `path` to, for the hot paths: any path outside the
/// portal and [`ROOT_PATHS`] (the router has no route there, so its fallback, the gateway,
/// answers) and the nginx and Traefik/Caddy forward-auth endpoints. `None` leaves the
/// request to the router. Paths are compared as sent, as the router matches them.
fn direct_route(path: &str, portal: &str) -> Option<Direct> {
    if ROOT_PATHS.contains(&path) {
        return None;
    }
    match path.strip_prefix(portal) {
        None => Some(Direct::Gateway),
        Some("/auth/nginx") => Some(Direct::NginxAuth),
        Some("/auth/forward") => Some(Direct::ForwardAuth),
        Some(_) => None,
    }
}

/// The per-connection service: with the peer address (and, over TLS, the client
/// certificate chain and the [`super::tls::Tls`] mark), each request counted in
/// `in_progress` until its answer ends (see [`super::idle`]), a request goes to the handler
/// [`direct_route`] names, else through the router. Proxied and forward-auth requests skip
/// the router's matching, extensions and boxing: they are most of the traffic.
pub(super) fn service(
    router: Router,
    state: Shared,
    portal: Arc<str>,
    peer: SocketAddr,
    tls: Option<crate::access::signals::PeerCertificates>,
    in_progress: super::idle::InProgress,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(certs) = &tls {
            mark_tls(&mut req, certs);
        }
        let direct = direct_route(req.uri().path(), &portal);
        let (router, st) = (router.clone(), state.clone());
        // Counted from now until its response body ends (see `super::idle`).
        let guard = in_progress.enter();
        // The request's id, for its decision and every log line of it: the span carries it
        // into the logs (free when `info` is off), the task-local to the entry points.
        let id = crate::access::RequestId::new();
        // The reader's language, for every page and message of the answer (`crate::i18n`).
        let reader = crate::i18n::Reader::of(req.method(), req.uri(), req.headers());
        let span = request_span(id, peer);
        // With traces on (`log.otlp`): the method, and the caller's trace as the parent.
        crate::telemetry::request(&span, req.method(), req.headers());
        // One async block: a future is copied whole each time it moves, and the gateway's
        // is large, so nesting it in another block cost more than the router it skips.
        let answer = async move {
            let res = match direct {
                None => {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    router.oneshot(req).await
                }
                Some(direct) => {
                    let head = req.method() == axum::http::Method::HEAD;
                    let (req, peer) = (req.map(axum::body::Body::new), ConnectInfo(peer));
                    let res = match direct {
                        Direct::Gateway => crate::gateway::handle(State(st), peer, req).await,
                        Direct::NginxAuth => {
                            crate::gateway::forward_auth::nginx(State(st), peer, req).await
                        }
                        Direct::ForwardAuth => {
                            crate::gateway::forward_auth::forward(State(st), peer, req).await
                        }
                    };
                    Ok(finish_like_router(res, head))
                }
            };
            res.map(|r| answered(r, id, guard))
        };
        let serving = super::serving::Serving { id, reader };
        super::serving::SERVING.scope(serving, tracing::Instrument::instrument(answer, span))
    })
}

/// Marks a request that came over stepgate's TLS listener, with the client's certificate
/// chain when it sent one.
fn mark_tls<B>(req: &mut hyper::Request<B>, certs: &crate::access::signals::PeerCertificates) {
    let ext = req.extensions_mut();
    ext.insert(super::tls::Tls);
    if !certs.0.is_empty() {
        ext.insert(certs.clone());
    }
}

/// The span of a request's log lines. `client` starts as the peer; the access pipeline
/// puts the client's own address there (behind a trusted proxy) and fills in `user` once
/// it knows them ([`crate::access::Access::decide`]), so a failure logged later names both.
fn request_span(id: crate::access::RequestId, peer: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = %id,
        client = %peer.ip(),
        user = tracing::field::Empty,
        method = tracing::field::Empty,
        app = tracing::field::Empty,
        route = tracing::field::Empty,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// The answer as it leaves: naming its request, also when no entry point decided (a portal
/// page, a refusal before the decision), for the help desk and the logs; and counted as in
/// progress until its body ends (`guard`).
fn answered(
    mut res: Response,
    id: crate::access::RequestId,
    guard: super::idle::RequestGuard,
) -> Response {
    if !crate::access::decision_log::has_header(&res) {
        crate::access::decision_log::set_header(&mut res, id);
    }
    crate::telemetry::answered(res.status());
    if res.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        guard.switched();
    }
    res.map(|b| super::idle::GuardedBody::wrap(b, guard))
}

/// What the router does to each handler's response, done for the ones that skip it: a
/// body of known size gets its `Content-Length` if it has none, and the answer to a `HEAD`
/// request loses its body (hyper's HTTP/1 server drops it itself, its HTTP/2 server not).
fn finish_like_router(mut res: Response, head: bool) -> Response {
    use axum::body::HttpBody as _;
    if !res.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(n) = res.body().size_hint().exact() {
            // An empty body (every forward-auth answer) without formatting the number.
            let len = match n {
                0 => HeaderValue::from_static("0"),
                n => HeaderValue::from(n),
            };
            res.headers_mut().insert(header::CONTENT_LENGTH, len);
        }
    }
    if head {
        *res.body_mut() = axum::body::Body::empty();
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_routes_are_the_gateway_and_forward_auth_and_nothing_the_router_serves() {
        let portal = "/_stepgate";
        for path in [
            "/",
            "/admin/users",
            "/_stepgat",
            "/healthz/",
            "/readyz.json",
            "",
            "*",
        ] {
            assert_eq!(direct_route(path, portal), Some(Direct::Gateway), "{path}");
        }
        assert_eq!(
            direct_route("/_stepgate/auth/nginx", portal),
            Some(Direct::NginxAuth)
        );
        assert_eq!(
            direct_route("/_stepgate/auth/forward", portal),
            Some(Direct::ForwardAuth)
        );
        // Stepgate's own root paths answer for an app's host only through the router, and
        // every other portal path is the router's (or its fallback's).
        for path in [
            "/healthz",
            "/readyz",
            "/.well-known/jwks.json",
            "/_stepgate",
            "/_stepgate/login",
            "/_stepgate/auth/forward/",
            "/_stepgate/auth/envoy/x",
            "/_stepgate/auth/%6eginx",
            "/_stepgatex",
        ] {
            assert_eq!(direct_route(path, portal), None, "{path}");
        }
        assert_eq!(
            direct_route("/_stepgate/login", "/sso"),
            Some(Direct::Gateway)
        );
        assert_eq!(
            direct_route("/sso/auth/nginx", "/sso"),
            Some(Direct::NginxAuth)
        );
    }

    #[test]
    fn a_direct_answer_is_finished_as_the_router_finishes_one() {
        let r = finish_like_router("four".into_response(), false);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "4");
        let r = finish_like_router(StatusCode::OK.into_response(), false);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "0");
        let r = finish_like_router("four".into_response(), true);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "4");
        assert_eq!(axum::body::HttpBody::size_hint(r.body()).exact(), Some(0));
        let mut told = "four".into_response();
        told.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        let r = finish_like_router(told, false);
        assert_eq!(
            r.headers().get_all(header::CONTENT_LENGTH).iter().count(),
            1
        );
    }
}
