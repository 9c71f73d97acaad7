//! The proxy step: an allowed request sent to its app's upstream, and the answer streamed
//! back.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::headers;
use super::render::RefusalKind;
use super::upstream::upstream_path;
use super::websocket::{set_websocket_upgrade, splice_upgraded, websocket_upgrade, Watch};
use crate::access::Grant;
use crate::app::state::{Runtime, Shared};

/// Where an allowed request goes, and as whom.
pub struct Destination<'a> {
    /// The host the client asked for (the upstream sees it as `Host`).
    pub host: &'a str,
    /// Who it is let through as.
    pub grant: &'a Grant,
    /// The app.
    pub app: &'a stepgate_policy::spec::AppSpec,
    /// The client address (`None`: unknown).
    pub ip: Option<IpAddr>,
    /// Whether the client wants machine answers (for the gateway's own errors).
    pub api: bool,
    /// What the client's `Cookie` line holds of stepgate's cookies, as the decision's
    /// cookie lookup found it (`None`: read it again).
    pub own_cookies: Option<stepgate_request::cookies::OwnInLine>,
    /// The request's time, as the decision judged it.
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Sends an allowed request to its app's upstream as `grant`'s subject and streams the
/// answer back: the client's own identity, forwarding, rewrite and hop-by-hop headers
/// removed, stepgate's identity headers, assertion and forwarding headers in their place,
/// stepgate's cookies kept out both ways, and only a WebSocket upgrade passed on (its
/// connection then lasts only as long as the grant).
pub async fn forward(st: &Shared, rt: &Runtime, req: Request, to: Destination<'_>) -> Response {
    // A failure page's way back: the same address again for a GET, else the app's start
    // page (kept as the cheap clones of method and URI, built only on a failure).
    let (method, asked) = (req.method().clone(), req.uri().clone());
    let failed = |kind: RefusalKind| {
        let target = asked.path_and_query().map_or("/", |p| p.as_str());
        let back = super::render::try_again(&method, target, to.app);
        kind.to(to.api, rt).back(back).into_response()
    };
    let bad_gateway = |_api| failed(RefusalKind::BadGateway);
    let Some(target) = rt.upstreams.get(to.app.id.as_str()) else {
        return bad_gateway(to.api);
    };
    let Some(uri) = upstream_path(&target.prefix, req.uri()) else {
        return bad_gateway(to.api);
    };
    let (mut out, client_upgrade) = upstream_request(st, rt, req, uri, &to);
    let timeout = rt.config.gateway.timeout_for(to.app.id.as_str());
    let app = to.app.id.as_str();
    // The upstream call's span; with traces on, its trace context goes in `traceparent`.
    let span = tracing::debug_span!("upstream", app);
    crate::telemetry::propagate(&span, out.headers_mut());
    let sent = tracing::Instrument::instrument(st.upstream.send(&target.address, out), span);
    let sent = std::pin::pin!(sent);
    match super::deadline::within(timeout, sent).await {
        Ok(Ok(resp)) => upstream_response(st, rt, resp, client_upgrade, &to),
        Ok(Err(e)) => {
            tracing::warn!(app, error = %e, "upstream request failed");
            bad_gateway(to.api)
        }
        Err(_) => {
            tracing::warn!(
                app,
                timeout_secs = timeout.as_secs(),
                "upstream did not answer in time"
            );
            failed(RefusalKind::GatewayTimeout)
        }
    }
}

/// The request as the upstream gets it: in origin form under the upstream's path prefix,
/// HTTP/1.1 with a `Host`, what only stepgate may say removed and said by stepgate, and a
/// WebSocket upgrade (only) passed on — with the client's side of it, to splice later.
fn upstream_request(
    st: &Shared,
    rt: &Runtime,
    mut out: Request,
    uri: axum::http::Uri,
    to: &Destination<'_>,
) -> (Request, Option<hyper::upgrade::OnUpgrade>) {
    let over_tls = out.extensions().get::<crate::app::tls::Tls>().is_some();
    // An HTTP/2 client names the host in the request's authority, not in a Host header:
    // the upstream gets it as Host all the same, as from an HTTP/1.1 client.
    if !out.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(to.host) {
            out.headers_mut().insert(header::HOST, v);
        }
    }
    *out.uri_mut() = uri;
    // Upstreams are spoken to in HTTP/1.1 whatever the client used (h2 included).
    *out.version_mut() = axum::http::Version::HTTP_11;
    // Only a WebSocket upgrade is passed on; any other is stripped with the hop-by-hop
    // headers and the request goes on as plain HTTP.
    let upgrade = websocket_upgrade(out.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut out));
    let h = out.headers_mut();
    headers::strip_request(h, &rt.configured_identity_headers);
    headers::strip_own_cookies(h, &rt.own_cookies, to.own_cookies);
    // Room for the identity, assertion and forwarding headers at once: the map hyper
    // parsed is sized to the client's headers and would otherwise grow (rehash) twice.
    h.reserve(16);
    if upgrade {
        set_websocket_upgrade(h);
    }
    put_identity(st, rt, h, to);
    let proto = if over_tls || rt.config.sessions.cookie.secure {
        "https"
    } else {
        "http"
    };
    // `strip_request` above removed every forwarding header the client sent.
    headers::put_forwarding(h, to.ip, to.host, proto);
    (out, client_upgrade)
}

/// What stepgate asserts about the grant's subject: a session's kept block of identity
/// headers and assertion, or a bearer token's, built for this request.
fn put_identity(st: &Shared, rt: &Runtime, h: &mut HeaderMap, to: &Destination<'_>) {
    match &to.grant.bearer {
        None => {
            for (name, value) in
                super::asserted::session_block(st, rt, to.app, to.grant, to.now).iter()
            {
                h.insert(name.clone(), value.clone());
            }
        }
        Some(id) => {
            for (name, value) in headers::identity_headers(&to.grant.user, &to.grant.assurance) {
                h.insert(name, value);
            }
            for (name, value) in headers::identity_header_overrides(id) {
                match HeaderValue::from_str(&value) {
                    Ok(v) if !value.is_empty() => h.insert(name, v),
                    _ => h.remove(name),
                };
            }
            if let Some((name, value)) = super::assertion::header_for(st, rt, to.app, to.grant) {
                h.insert(name, value);
            }
        }
    }
}

/// The upstream's answer as the client gets it: hop-by-hop headers and stepgate's cookies
/// removed; a switch to WebSocket spliced to the client's connection for as long as the
/// grant lasts, any other switch refused.
fn upstream_response(
    st: &Shared,
    rt: &Runtime,
    mut resp: Response,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    to: &Destination<'_>,
) -> Response {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    // An upstream may not switch protocols the client did not ask for, nor to another
    // protocol than WebSocket.
    let client = match client_upgrade.filter(|_| websocket_upgrade(resp.headers())) {
        Some(c) if switching => c,
        _ if switching => {
            tracing::warn!(app = %to.app.id.as_str(), "upstream switched protocols unasked; refused");
            return RefusalKind::BadGateway.to(to.api, rt).into_response();
        }
        _ => {
            headers::strip_hop_by_hop(resp.headers_mut());
            headers::strip_own_set_cookies(resp.headers_mut(), &rt.own_cookies);
            return resp;
        }
    };
    let upstream = hyper::upgrade::on(&mut resp);
    headers::strip_hop_by_hop(resp.headers_mut());
    headers::strip_own_set_cookies(resp.headers_mut(), &rt.own_cookies);
    set_websocket_upgrade(resp.headers_mut());
    let watch = match &to.grant.bearer {
        Some(b) => Watch::Until(b.expires),
        None => Watch::Session {
            st: st.clone(),
            id: to.grant.session.id.clone(),
            every: rt.config.gateway.upgraded_recheck(),
        },
    };
    splice_upgraded(client, upstream, to.app.id.to_string(), watch);
    resp
}
