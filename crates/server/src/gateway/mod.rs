//! The gateway: stepgate in front of apps, as their reverse proxy or as the forward-auth
//! service of a front proxy (nginx, Traefik, Caddy, Envoy). Both read their request into an
//! [`AccessRequest`], ask [`crate::access`], and render the verdict their own way.
//!
//! - [`original`]: what the client asked for, read once per entry point with one parser.
//! - [`handle`] (here): the reverse proxy's entry; [`proxy`] sends an allowed request on,
//!   over the [`upstream`] pool within its time limit ([`deadline`]), with the [`headers`]
//!   stepgate asserts and strips, and [`websocket`] upgrades; [`render`] answers
//!   everything else.
//! - [`forward_auth`]: the `/auth/nginx`, `/auth/forward` and `/auth/envoy` endpoints.
//! - [`assertion`]: the signed identity JWT and its JWKS; [`asserted`]: a session's
//!   identity headers and assertion, built once per session state and reused.
//!
//! What does not belong here: deciding (that is [`crate::access`]) or the portal's pages.

pub mod asserted;
pub mod assertion;
pub mod deadline;
pub mod forward_auth;
pub mod headers;
pub mod original;
pub mod proxy;
pub mod render;
pub mod upstream;
pub mod websocket;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use stepgate_policy::RequestKind;

use crate::access::decision_log::set_header;
use crate::access::request::client_ip;
use crate::access::{AccessRequest, Connection, Credentials, RequestId, Verdict};
use crate::app::responses::{is_api, see_other, Peer};
use crate::app::state::{Runtime, Shared};
use crate::session::cookies::{decision_cookies_sorting, DecisionCookies};
use original::Original;
use render::{RefusalKind, Return};
use stepgate_policy::spec::AppSpec;

/// The reverse proxy: every request that is not for the portal is an app request, read
/// (`read`), decided, and then proxied or answered.
pub async fn handle(State(st): State<Shared>, peer: Peer, mut req: Request) -> Response {
    let started = std::time::Instant::now();
    let rt = st.runtime.load_full();
    let api = is_api(req.headers());
    let (original, app, cookies) = match read(&rt, &req) {
        Ok(r) => r,
        Err(Read::Refused(kind)) => return kind.to(api, &rt).into_response(),
        Err(Read::PortalRoot) => return see_other(&rt.portal_url("/account")),
    };
    let now = Utc::now();
    let ip = client_ip(&rt, peer.0, req.headers());
    let h = req.headers();
    let id = RequestId::current();
    let ar = AccessRequest {
        id,
        kind: RequestKind::Access,
        app: Some(app.id.as_str()),
        method: &original.method,
        path: original.target.path(),
        headers: h,
        ip,
        credentials: Credentials::of_app_request(h, &cookies),
        connection: Connection {
            peer: Some(peer.0.ip()),
            tls: req.extensions().get(),
        },
        now,
    };
    let verdict = st.access.decide(&rt, &ar).await.verdict;
    let own_cookies = cookies.own;
    let (mut r, outcome) = match verdict {
        Verdict::Allow(grant) => {
            let Original { host, target, .. } = original;
            *req.uri_mut() = target;
            let to = proxy::Destination {
                host: &host,
                grant: &grant,
                app,
                ip,
                api,
                own_cookies,
                now,
            };
            // Boxed, like the decision: this future is copied whole wherever it moves.
            (Box::pin(proxy::forward(&st, &rt, req, to)).await, "allow")
        }
        verdict => {
            let outcome = crate::metrics::outcome(&verdict);
            (refuse(&st, &rt, verdict, &original, h, now, id), outcome)
        }
    };
    set_header(&mut r, id);
    st.metrics.request(&app.id, outcome, started.elapsed());
    r
}

/// A verdict other than allow, answered: the portal's pages are linked on the host the
/// request came to, and the refusal names the request to return to.
fn refuse(
    st: &Shared,
    rt: &Runtime,
    verdict: Verdict,
    original: &Original,
    headers: &axum::http::HeaderMap,
    now: chrono::DateTime<Utc>,
    id: RequestId,
) -> Response {
    let origin = [original.scheme, "://", &original.host.to_ascii_lowercase()].concat();
    // An app host that gets its session by hand-off signs in and steps up on the public
    // URL's portal, where the session cookie lives; the sign-in link carries the nonce of
    // the hand-off cookie set here, so the code that comes back is bound to this browser.
    let hand_off = rt.hands_off(&original.host);
    let nonce =
        (hand_off && matches!(verdict, Verdict::SignIn(_))).then(crate::portal::handoff::nonce);
    let ret = Return {
        portal_origin: if hand_off { &rt.public_url } else { &origin },
        url: original.url(),
        method: &original.method,
        referer: headers.get(header::REFERER).and_then(|v| v.to_str().ok()),
        request_id: id.as_str(),
        hand_off: nonce.as_deref(),
    };
    let r = render::refused(&st.signer, rt, verdict, &ret, headers, st.options.demo, now);
    match nonce {
        Some(n) => crate::portal::handoff::with_nonce_cookie(rt, r, &n),
        None => r,
    }
}

/// Why a proxied request is not decided.
enum Read {
    /// It cannot be read as the upstream would read it, names a host not served here, or
    /// names no app on the portal's own host.
    Refused(RefusalKind),
    /// The portal's own host's root: the account page.
    PortalRoot,
}

/// Reads a request for the reverse proxy: the target in its one normal form (a method
/// stepgate does not proxy is 405), a configured host, its app, and the cookies the
/// decision reads (a repeated session cookie is 400).
fn read<'r: 'q, 'q>(
    rt: &'r Runtime,
    req: &'q Request,
) -> Result<(Original, &'r AppSpec, DecisionCookies<'q>), Read> {
    let over_tls = req.extensions().get::<crate::app::tls::Tls>().is_some();
    let original = original::proxied(rt, req.method(), req.uri(), req.headers(), over_tls)
        .map_err(|e| {
            Read::Refused(if e.unsupported_method() {
                RefusalKind::MethodNotAllowed(e.to_string())
            } else {
                RefusalKind::BadRequest(e.to_string())
            })
        })?;
    let Some(app) = original.app.and_then(|i| rt.app_at(i)) else {
        if !rt.serves_host(&original.host) {
            return Err(Read::Refused(RefusalKind::Misdirected));
        }
        return Err(if original.target.path() == "/" {
            Read::PortalRoot
        } else {
            Read::Refused(RefusalKind::NotFound)
        });
    };
    let cookies = decision_cookies_sorting(rt, req.headers())
        .map_err(|e| Read::Refused(RefusalKind::BadRequest(e.to_string())))?;
    Ok((original, app, cookies))
}
