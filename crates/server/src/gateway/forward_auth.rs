//! Forward-auth: stepgate decides, a front proxy (nginx, Traefik, Caddy, Envoy) proxies.
//!
//! The front proxy asks one of these endpoints about each request, telling it what the
//! client asked for in forwarding headers, and passes the original request's cookies,
//! `Accept` and `Authorization`. stepgate runs the same access decision as its own reverse
//! proxy ([`crate::access::Access::decide`]) and answers:
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
//! sends. Every answer is `Cache-Control: no-store`, with the security headers.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::Utc;
use stepgate_policy::RequestKind;

use super::headers::{
    identity_header_overrides, identity_headers, respelled_header, REMOTE_HEADERS,
};
use super::original::{Original, Unreadable};
use super::render::{insufficient_user_authentication, portal_link, sign_in_challenge, Return};
use crate::access::bearer::bearer_token;
use crate::access::decision_log::set_header;
use crate::access::request::client_ip;
use crate::access::{AccessRequest, Connection, Credentials, Grant, RequestId, Verdict};
use crate::app::responses::{is_api, json_error, security_headers, Peer};
use crate::app::state::{Runtime, Shared};
use crate::session::cookies::{decision_cookies, DecisionCookies};

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

/// `GET {portal}/auth/nginx`: nginx `auth_request`. Reads `X-Original-URL` (absolute) and
/// `X-Original-Method`, both required.
pub async fn nginx(State(st): State<Shared>, peer: Peer, req: Request) -> Response {
    let rt = st.runtime.load_full();
    let read = super::original::nginx_headers(&rt, req.headers());
    respond(&st, &rt, peer, req.headers(), read, Flavour::Nginx).await
}

/// `GET {portal}/auth/forward`: Traefik `ForwardAuth` and Caddy `forward_auth`. Reads
/// `X-Forwarded-Method`, `-Host` and `-Uri` (required) and `X-Forwarded-Proto`.
pub async fn forward(State(st): State<Shared>, peer: Peer, req: Request) -> Response {
    let rt = st.runtime.load_full();
    let read = super::original::forward_headers(&rt, req.headers());
    respond(&st, &rt, peer, req.headers(), read, Flavour::Forward).await
}

/// `{portal}/auth/envoy/*`: Envoy `ext_authz` in HTTP mode. Envoy sends the original method
/// and `Host`, and the original path and query after the configured `path_prefix`; the
/// scheme comes from `X-Forwarded-Proto` when Envoy passes it.
pub async fn envoy(State(st): State<Shared>, peer: Peer, req: Request) -> Response {
    let rt = st.runtime.load_full();
    let prefix = format!("{}/auth/envoy", rt.portal());
    let read = super::original::envoy(&rt, req.method(), req.uri(), req.headers(), &prefix);
    respond(&st, &rt, peer, req.headers(), read, Flavour::Forward).await
}

/// A request forward-auth will not decide on: 403, which every front proxy passes on to the
/// client (the front proxy forwards the request as it came, so it cannot be rewritten, and
/// nginx's `auth_request` turns anything but 2xx, 401 and 403 into a 500).
fn refuse(headers: &HeaderMap, why: &str) -> Response {
    tracing::info!(
        reason = why,
        "forward-auth: refused a request it cannot read as the upstream will"
    );
    let mut r = json_error(StatusCode::FORBIDDEN, "invalid_request", why);
    if !is_api(headers) {
        r = (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("Forbidden: {why}."),
        )
            .into_response();
    }
    security_headers(r)
}

/// Runs the decision and shapes the answer for the front proxy.
async fn respond(
    st: &Shared,
    rt: &Runtime,
    peer: Peer,
    headers: &HeaderMap,
    read: Result<Original, Unreadable>,
    flavour: Flavour,
) -> Response {
    if let Some(r) = refuse_untrusted(rt, peer) {
        return r;
    }
    // First, so the refusals below are logged with the client's address.
    let ip = client_ip(rt, peer.0, headers);
    let (orig, cookies) = match admit(rt, headers, read) {
        Ok(x) => x,
        Err(why) => return refuse(headers, &why),
    };
    let Some(app) = rt.app_for_host(&orig.host) else {
        return no_app(&orig.host);
    };
    let started = std::time::Instant::now();
    let now = Utc::now();
    let id = RequestId::current();
    let verdict = {
        let ar = AccessRequest {
            id,
            kind: RequestKind::Access,
            app: Some(app.id.as_str()),
            method: &orig.method,
            path: orig.target.path(),
            headers,
            ip,
            credentials: match bearer_token(headers) {
                Some(token) => Credentials::Bearer(token),
                None => Credentials::Cookies(&cookies),
            },
            // A trusted proxy may pass the client certificate it verified (the same header
            // the reverse proxy reads).
            connection: Connection {
                peer: Some(peer.0.ip()),
                tls: None,
            },
            now,
        };
        st.access.decide(rt, &ar).await.verdict
    };
    let outcome = crate::metrics::outcome(&verdict);
    let mut r = match verdict {
        Verdict::Allow(grant) => allow(st, rt, app, &grant, now),
        verdict => security_headers(answer(st, rt, verdict, &orig, headers, flavour, now, id)),
    };
    set_header(&mut r, id);
    st.metrics.request(&app.id, outcome, started.elapsed());
    r
}

/// `403` for a host no application is configured for.
fn no_app(host: &str) -> Response {
    tracing::warn!(%host, "forward-auth: no application is configured for the host; refusing");
    json_error(
        StatusCode::FORBIDDEN,
        "access_denied",
        "no application is configured for this host",
    )
}

/// The checks before a trusted proxy's request is decided: what it reports can be read as
/// the upstream will read it, it carries no respelled identity header, and the session
/// cookie once at most. Why not, otherwise.
fn admit<'h>(
    rt: &'h Runtime,
    headers: &'h HeaderMap,
    read: Result<Original, Unreadable>,
) -> Result<(Original, DecisionCookies<'h>), String> {
    let orig = read.map_err(|e| e.to_string())?;
    if let Some(name) = respelled_header(headers, &rt.configured_identity_headers) {
        return Err(format!(
            "the request carries `{name}`, a spelling of a header only stepgate sets"
        ));
    }
    // Only the cookies the decision reads are parsed.
    let cookies = decision_cookies(rt, headers).map_err(|e| e.to_string())?;
    Ok((orig, cookies))
}

/// The answer to a request not let through: for a browser the portal page to go to (in
/// [`REDIRECT_HEADER`] for nginx, a `302` for the others), for an API a challenge or error.
#[allow(clippy::too_many_arguments)]
fn answer(
    st: &Shared,
    rt: &Runtime,
    verdict: Verdict,
    orig: &Original,
    headers: &HeaderMap,
    flavour: Flavour,
    now: chrono::DateTime<Utc>,
    id: RequestId,
) -> Response {
    let api = is_api(headers);
    let status = match &verdict {
        Verdict::Deny(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    match verdict {
        Verdict::Unavailable(detail) => {
            tracing::error!(
                error = detail,
                "forward-auth: store unavailable; refusing the request"
            );
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "stepgate cannot verify this request right now",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
        Verdict::SignIn(reason) if api => sign_in_challenge(reason),
        Verdict::StepUp(s) if api => insufficient_user_authentication(&s.requirement, &s.why),
        Verdict::Deny(d) if api => json_error(StatusCode::FORBIDDEN, "access_denied", &d.message),
        verdict => {
            let ret = Return {
                portal_origin: &rt.public_url,
                url: orig.url(),
                method: &orig.method,
                referer: headers.get(header::REFERER).and_then(|v| v.to_str().ok()),
                request_id: id.as_str(),
                hand_off: None,
            };
            match portal_link(&st.signer, rt, &verdict, &ret, now) {
                Some(to) => redirect(flavour, status, &to),
                None => status.into_response(),
            }
        }
    }
}

/// `200` with every identity header, empty when there is nothing to say, so a front proxy
/// that copies them (Traefik `authResponseHeaders`, Envoy `allowed_upstream_headers`)
/// overwrites whatever the client sent under those names; plus the signed assertion when
/// `gateway.assertion` is on; with the security headers (a session's kept answer carries
/// them already).
fn allow(
    st: &Shared,
    rt: &Runtime,
    app: &stepgate_policy::spec::AppSpec,
    grant: &Grant,
    now: chrono::DateTime<Utc>,
) -> Response {
    let mut r = StatusCode::OK.into_response();
    let Some(id) = &grant.bearer else {
        // A session's: built once per session state, with the security headers (see
        // [`super::asserted`]).
        *r.headers_mut() = super::asserted::session_block(st, rt, app, grant, now).answer();
        return r;
    };
    let h = r.headers_mut();
    // Room for every header at once — the identity headers, the assertion and the six
    // security headers added on the way out: an empty map would grow (rehash) each time.
    h.reserve(REMOTE_HEADERS.len() + 10);
    for (name, value) in identity_headers(&grant.user, &grant.assurance) {
        h.insert(name, value);
    }
    for (name, value) in identity_header_overrides(id) {
        h.insert(
            name,
            HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("")),
        );
    }
    // Every identity header is answered, empty when there is nothing to assert, so the
    // front proxy's copy of it replaces whatever the client sent.
    for name in &REMOTE_HEADERS {
        h.entry(name)
            .or_insert_with(|| HeaderValue::from_static(""));
    }
    if let Some((name, value)) = super::assertion::header_for(st, rt, app, grant) {
        h.insert(name, value);
    }
    security_headers(r)
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
    Some(json_error(
        StatusCode::FORBIDDEN,
        "access_denied",
        "forward-auth answers only the proxies listed in server.trusted_proxies",
    ))
}

/// The forward-auth endpoints for front proxies (nginx, Traefik/Caddy, Envoy): decide only.
pub fn routes(portal_path: &str) -> Router<Shared> {
    let p = |s: &str| format!("{portal_path}{s}");
    Router::new()
        .route(&p("/auth/nginx"), any(nginx))
        .route(&p("/auth/forward"), any(forward))
        .route(&p("/auth/envoy"), any(envoy))
        .route(&p("/auth/envoy/"), any(envoy))
        .route(&p("/auth/envoy/{*path}"), any(envoy))
}
