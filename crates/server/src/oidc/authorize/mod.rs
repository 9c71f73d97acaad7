//! The authorization endpoint: one more entry point of the access pipeline. The request is
//! checked (client, exact redirect URI — before anything is sent there — response type,
//! scopes, PKCE), read into an [`AccessRequest`] for the client's app, and decided by
//! [`crate::access::Access::decide`]; the [`Verdict`] is rendered here, in one place:
//!
//! | verdict | answer |
//! |---|---|
//! | `Allow` | a code, once what the request itself asks is met too (below) |
//! | `SignIn` | the portal's sign-in page, returning to this request (`prompt=none`: `login_required`) |
//! | `StepUp` | the portal's step-up page for the policy's requirement, raised by the request's (`prompt=none`: `interaction_required`) |
//! | `Deny` | the portal's blocked page, with the failing checks (`prompt=none`: `access_denied`) |
//! | `Unavailable` | `temporarily_unavailable` |
//!
//! What the request asks can raise what the app's policies require, never lower it:
//! `acr_values` (voluntary: a level the user cannot reach is not asked for), an essential
//! `acr` in `claims` (unreachable: `unmet_authentication_requirements`), `max_age` and
//! `prompt=login` (a fresh sign-in: the return carries a signed mark of when it was asked
//! for, and the sign-in must be newer).
//!
//! The request's parameters and checks are in [`request`], its way through the portal
//! pages in [`flow`], the code an allowed request ends with in [`code`].

mod code;
mod flow;
mod request;

use axum::extract::{Query, RawForm};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Extension;
use chrono::{DateTime, Utc};
use stepgate_policy::RequestKind;

pub use flow::{cancel_link, form_action_origin};
pub use request::{asked, precheck, Asked, AuthorizeParams};

use crate::access::request::client_ip;
use crate::access::signals::PeerCertificates;
use crate::access::{AccessRequest, Connection, Credentials};
use crate::app::responses::Peer;
use crate::app::state::Shared;
use crate::oidc::error::{not_redirected, Back};
use crate::oidc::issuer;
use crate::portal::extract::{Here, Visit};
use crate::session::cookies::CookieJar;
use code::Issue;
use flow::Flow;
use request::{serde_urlencoded_params, unpushed, validated};

/// `GET {portal}/oidc/authorize`.
pub async fn authorize_get(
    visit: Visit,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    authorize(visit, peer, tls, headers, p).await
}

/// `POST {portal}/oidc/authorize` (form-encoded, OIDC Core §3.1.2.1).
pub async fn authorize_post(
    visit: Visit,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    let p: AuthorizeParams = match serde_urlencoded_params(&body) {
        Some(p) => p,
        None => return not_redirected(visit.here.portal(), "The request could not be read."),
    };
    authorize(visit, peer, tls, headers, p).await
}

/// The request's parameters: a pushed request's (RFC 9126) replace the query's, with its
/// `request_uri` and id; `None` when it names a pushed request that is not valid (expired,
/// or not this client's).
fn resolve_pushed(
    st: &Shared,
    p: AuthorizeParams,
    now: DateTime<Utc>,
) -> Option<(AuthorizeParams, Option<(String, String)>)> {
    match &p.request_uri {
        Some(uri) if uri.starts_with(crate::oidc::par::URN) => {
            let (params, jti) = unpushed(st, &p, now)?;
            Some((params, Some((uri.clone(), jti))))
        }
        _ => Some((p, None)),
    }
}

/// The access pipeline's request for the client's app, on the browser's session.
fn access_request<'a>(
    rt: &Here,
    jar: &'a CookieJar,
    peer: &Peer,
    tls: Option<&'a PeerCertificates>,
    headers: &'a HeaderMap,
    app: &'a str,
    now: DateTime<Utc>,
) -> AccessRequest<'a> {
    AccessRequest {
        id: crate::access::RequestId::current(),
        kind: RequestKind::Access,
        app: Some(app),
        method: &Method::GET,
        path: "/",
        headers,
        ip: client_ip(rt, peer.0, headers),
        credentials: Credentials::Cookies(jar),
        connection: Connection {
            peer: Some(peer.0.ip()),
            tls,
        },
        now,
    }
}

/// Checks the request (nothing is sent anywhere until the client and its redirect URI are
/// known good), decides it, and answers.
async fn authorize(
    Visit { st, here: rt, jar }: Visit,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
    p: AuthorizeParams,
) -> Response {
    let now = Utc::now();
    let cfg = &rt.config.oidc;
    let Some((p, pushed)) = resolve_pushed(&st, p, now) else {
        return not_redirected(
            rt.portal(),
            "This sign-in request has expired or is not valid. Start again from the application.",
        );
    };
    // Until the client and its redirect URI are known good, nothing is sent anywhere.
    let Some(client) = p.client_id.as_deref().and_then(|id| cfg.client(id)) else {
        return not_redirected(
            rt.portal(),
            "The application that sent you here is not registered with stepgate.",
        );
    };
    let Some(redirect_uri) = p.redirect_uri.as_deref().filter(|u| client.redirect_ok(u)) else {
        return not_redirected(rt.portal(), "The application asked to return to an address it has not registered, so stepgate will not send you there.");
    };
    let iss = issuer(&rt);
    let back = Back {
        redirect_uri,
        state: p.state.as_deref(),
        issuer: &iss,
    };
    if p.sg_cancel.is_some() {
        return back.error("access_denied", "the user did not complete the sign-in");
    }
    let (scope, challenge, asked) = match validated(&p, client, &cfg.acr) {
        Ok(v) => v,
        Err((e, d)) => return back.error(e, &d),
    };
    let tls = tls.as_ref().map(|t| &t.0);
    let request = access_request(&rt, &jar, &peer, tls, &headers, client.app.as_str(), now);
    let judged = st.access.decide(&rt, &request).await;
    let flow = Flow {
        st: &st,
        rt: &rt,
        p: &p,
        pushed: pushed.as_ref().map(|(uri, _)| uri.as_str()),
        back: &back,
        now,
        client,
        asked,
        reauth_since: flow::reauth_since(&st, &p, client, now),
    };
    let issue = Issue {
        redirect_uri,
        scope,
        challenge,
        pushed_jti: pushed.as_ref().map(|(_, jti)| jti.as_str()),
    };
    flow.answer(judged.verdict, issue).await
}
