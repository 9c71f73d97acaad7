//! The proxy step: an allowed request sent to its app's upstream, and the answer streamed
//! back.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
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
}

/// Sends an allowed request to its app's upstream as `grant`'s subject and streams the
/// answer back: the client's own identity, forwarding, rewrite and hop-by-hop headers
/// removed, stepgate's identity headers, assertion and forwarding headers in their place,
/// stepgate's cookies kept out both ways, and only a WebSocket upgrade passed on (its
/// connection then lasts only as long as the grant).
pub async fn forward(st: &Shared, rt: &Runtime, req: Request, to: Destination<'_>) -> Response {
    let Destination {
        host,
        grant,
        app,
        ip,
        api,
    } = to;
    let bad_gateway = |api| RefusalKind::BadGateway.to(api, rt).into_response();
    let Some(target) = rt.upstreams.get(app.id.as_str()) else {
        return bad_gateway(api);
    };
    let Some(uri) = upstream_path(&target.prefix, req.uri()) else {
        return bad_gateway(api);
    };
    let over_tls = req.extensions().get::<crate::app::tls::Tls>().is_some();
    let mut out = req;
    // An HTTP/2 client names the host in the request's authority, not in a Host header:
    // the upstream gets it as Host all the same, as from an HTTP/1.1 client.
    if !out.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(host) {
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
    let own_cookies = &rt.own_cookies;
    let h = out.headers_mut();
    headers::strip_request(h, &rt.configured_identity_headers);
    headers::strip_own_cookies(h, own_cookies);
    // Room for the identity, assertion and forwarding headers at once: the map hyper
    // parsed is sized to the client's headers and would otherwise grow (rehash) twice.
    h.reserve(16);
    if upgrade {
        set_websocket_upgrade(h);
    }
    for (name, value) in headers::identity_headers(&grant.user, &grant.assurance) {
        h.insert(name, value);
    }
    if let Some(id) = &grant.bearer {
        for (name, value) in headers::identity_header_overrides(id) {
            match HeaderValue::from_str(&value) {
                Ok(v) if !value.is_empty() => {
                    h.insert(name, v);
                }
                _ => {
                    h.remove(name);
                }
            }
        }
    }
    if let Some((name, value)) = super::assertion::header_for(st, rt, app, grant) {
        h.insert(name, value);
    }
    let proto = if over_tls || rt.config.sessions.cookie.secure {
        "https"
    } else {
        "http"
    };
    // `strip_request` above removed every forwarding header the client sent.
    headers::put_forwarding(h, ip, host, proto);
    let timeout = rt.config.gateway.timeout_for(app.id.as_str());
    match tokio::time::timeout(timeout, st.upstream.send(&target.address, out)).await {
        Ok(Ok(mut resp)) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                // An upstream may not switch protocols the client did not ask for, nor to
                // another protocol than WebSocket.
                let Some(client) = client_upgrade.filter(|_| websocket_upgrade(resp.headers()))
                else {
                    tracing::warn!(app = %app.id.as_str(), "upstream switched protocols unasked; refused");
                    return bad_gateway(api);
                };
                let upstream = hyper::upgrade::on(&mut resp);
                headers::strip_hop_by_hop(resp.headers_mut());
                headers::strip_own_set_cookies(resp.headers_mut(), own_cookies);
                set_websocket_upgrade(resp.headers_mut());
                let watch = match &grant.bearer {
                    Some(b) => Watch::Until(b.expires),
                    None => Watch::Session {
                        st: st.clone(),
                        id: grant.session.id.clone(),
                        every: rt.config.gateway.upgraded_recheck(),
                    },
                };
                splice_upgraded(client, upstream, app.id.to_string(), watch);
                return resp;
            }
            headers::strip_hop_by_hop(resp.headers_mut());
            headers::strip_own_set_cookies(resp.headers_mut(), own_cookies);
            resp
        }
        Ok(Err(e)) => {
            tracing::warn!(app = %app.id.as_str(), error = %e, "upstream request failed");
            bad_gateway(api)
        }
        Err(_) => {
            tracing::warn!(app = %app.id.as_str(), timeout_secs = timeout.as_secs(), "upstream did not answer in time");
            RefusalKind::GatewayTimeout.to(api, rt).into_response()
        }
    }
}
