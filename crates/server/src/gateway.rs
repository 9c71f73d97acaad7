//! The access path for app hosts: session → context → policy → allow (proxy with identity
//! headers), step up (portal or RFC 9470 challenge) or deny (remediation page). Any store
//! failure on this path refuses the request with 503: stepgate fails closed.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use stepgate_authn::Assurance;
use stepgate_policy::{Outcome, RequestContext, RequestKind};
use stepgate_store::UserRecord;

use crate::context::{client_ip, request_context};
use crate::demo;
use crate::original::Original;
use crate::proxy::{self, bad_gateway, strip_hop_by_hop};
use crate::session::Session;
use crate::signals;
use crate::state::{Runtime, Shared};
use crate::web::{self, Peer, StepToken};
use stepgate_policy::{HumanDuration, MaxAge, StepUpRequirement};

/// Gathers the request context: the request itself, the user, and the device and network
/// signals (user agent, GeoIP, IP risk, client certificate, bound device with compliance,
/// behavioural risk); in demo mode the chosen demo device profile overrides the device.
/// A signal source that must not be skipped failing refuses the request (fail closed).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn gather(
    st: &Shared,
    rt: &Runtime,
    kind: RequestKind,
    app: Option<&str>,
    req_parts: (
        &axum::http::Method,
        &axum::http::Uri,
        &axum::http::HeaderMap,
    ),
    ip: Option<IpAddr>,
    jar: &(dyn web::CookieSource + Sync),
    user: Option<&UserRecord>,
    evidence: &signals::DeviceEvidence,
    now: DateTime<Utc>,
) -> Result<RequestContext, signals::SignalError> {
    let (method, uri, headers) = req_parts;
    let mut ctx = request_context(kind, app, method, uri, ip, user, now);
    signals::enrich(st, rt, &mut ctx, headers, jar, user, evidence, now).await?;
    if st.options.demo {
        let chosen = headers
            .get(demo::DEVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .or_else(|| jar.cookie(demo::DEVICE_COOKIE));
        let p = demo::profile(chosen);
        ctx.device = demo::device(p);
        if let Some(ip) = p.ip.and_then(|s| s.parse().ok()) {
            ctx.network.ip = Some(ip);
        }
    }
    Ok(ctx)
}

/// What the access decision came to for one request (borrowing the app from the runtime
/// configuration it was decided under).
pub enum Verdict<'a> {
    /// Let it through as this user.
    Allow {
        /// The user.
        user: std::sync::Arc<UserRecord>,
        /// Their session.
        session: Box<Session>,
        /// The app.
        app: &'a stepgate_policy::spec::AppSpec,
        /// The client address (`None`: unknown).
        ip: Option<IpAddr>,
        /// The verified bearer token the request was judged on (then `session` is a
        /// stand-in built from its claims, never stored).
        bearer: Option<Box<crate::bearer::BearerIdentity>>,
        /// The assurance the session reached (assessed once per request).
        assurance: Box<Assurance>,
    },
    /// No (complete) session: sign in first. `login` is the portal's absolute URL with a
    /// signed return target.
    SignIn {
        /// `{public_url}/_stepgate/login?t=…`
        login: String,
    },
    /// The session does not meet the policy's step-up requirement.
    StepUp {
        /// `{public_url}/_stepgate/step-up?t=…`
        step_up: String,
        /// What is required.
        req: StepUpRequirement,
        /// Why, in plain words.
        why: String,
    },
    /// Blocked by a policy.
    Deny {
        /// The reason.
        message: String,
        /// The failing checks.
        items: Vec<stepgate_policy::RemediationItem>,
        /// The deciding policy.
        policy: String,
        /// `{public_url}/_stepgate/blocked?t=…`
        blocked: String,
        /// The signed blocked-page token.
        token: String,
        /// The session (for the page's CSRF token and header).
        session: Box<Session>,
    },
    /// No app is configured for the host.
    NoApp,
    /// A store failed: refuse (fail closed).
    Unavailable(String),
}

/// The request as the access decision sees it (the proxy passes the real request; the
/// forward-auth endpoints pass what the front proxy reported).
pub struct AccessRequest<'a> {
    /// Method, host and target in normal form ([`crate::original`]).
    pub original: &'a Original,
    /// The original request's headers (cookies, user agent, accept).
    pub headers: &'a axum::http::HeaderMap,
    /// The client address (after trusted-proxy handling); `None` when unknown.
    pub ip: Option<IpAddr>,
    /// Where the portal is for this request: `None` on the host the client asked for (the
    /// reverse proxy serves the portal on every app host, so its host-only session cookie
    /// is the app's), or the public URL (forward-auth: the front proxy sends every app
    /// path to the app).
    pub portal_origin: Option<&'a str>,
}

impl AccessRequest<'_> {
    /// The absolute URL of the portal page `path` for this request: on the host the client
    /// asked for (already checked to be a configured one) or on the public URL. Never
    /// anywhere else.
    pub fn portal_url(&self, rt: &Runtime, path: &str) -> String {
        match self.portal_origin {
            Some(origin) => [origin, rt.portal(), path].concat(),
            None => {
                let host = self.original.host.to_ascii_lowercase();
                [self.original.scheme, "://", &host, rt.portal(), path].concat()
            }
        }
    }
}

/// Decides one app request: session, context, policy, step-up satisfaction.
pub async fn decide<'a>(
    st: &Shared,
    rt: &'a Runtime,
    jar: &(dyn web::CookieSource + Sync),
    r: &AccessRequest<'_>,
) -> Verdict<'a> {
    decide_with(st, rt, jar, r, None).await
}

/// [`decide`] with the client certificate chain the request presented (mTLS or a trusted
/// proxy's header), for device binding and certificate conditions.
pub async fn decide_with<'a>(
    st: &Shared,
    rt: &'a Runtime,
    jar: &(dyn web::CookieSource + Sync),
    r: &AccessRequest<'_>,
    certificates: Option<Vec<Vec<u8>>>,
) -> Verdict<'a> {
    let Some(app) = rt.app_for_host(&r.original.host) else {
        return Verdict::NoApp;
    };
    // A bearer token is judged on its own; a cookie beside it does not count.
    if let Some(token) = crate::bearer::bearer_token(r.headers) {
        // Boxed: a cookie request's future would otherwise carry (and copy) the space of
        // the bearer decision's, several kilobytes.
        return Box::pin(crate::bearer::decide(st, rt, app, token, r, certificates)).await;
    }
    let now = Utc::now();
    let session = match web::current_session(st, rt, jar, now).await {
        Ok(s) => s,
        Err(e) => return Verdict::Unavailable(e.to_string()),
    };
    let sign_in = |st: &Shared| Verdict::SignIn {
        login: r.portal_url(
            rt,
            &format!(
                "/login?t={}",
                web::sign_return(st, rt, &r.original.url(), now).unwrap_or_default()
            ),
        ),
    };
    let Some(session) = session.filter(|s| !s.data.pending) else {
        return sign_in(st);
    };
    let user = match st.cache.user(&session.data.user_id).await {
        Ok(Some(u)) if !u.disabled => u,
        Ok(_) => {
            let _ = st.stores.hot.delete_session(&session.id).await;
            return sign_in(st);
        }
        Err(e) => return Verdict::Unavailable(e.to_string()),
    };
    let evidence = signals::DeviceEvidence {
        certificates,
        passkey_factors: session
            .data
            .factors
            .iter()
            .filter(|f| f.kind == stepgate_authn::FactorKind::Webauthn)
            .filter_map(|f| f.factor_id.clone())
            .collect(),
    };
    let ctx = match gather(
        st,
        rt,
        RequestKind::Access,
        Some(app.id.as_str()),
        (&r.original.method, &r.original.target, r.headers),
        r.ip,
        jar,
        Some(&user),
        &evidence,
        now,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return Verdict::Unavailable(e.to_string()),
    };
    signals::bind_session_device(st, &session, ctx.device.as_ref()).await;
    let decision = rt.config.policy_set.decide(&ctx);
    let assurance = session.data.assurance(&rt.config.assurance);
    match decision.outcome {
        Outcome::Allow if !session.data.needs_step_up => {}
        Outcome::Allow | Outcome::StepUp(_) => {
            let req = match decision.outcome {
                Outcome::StepUp(q) => q.clone(),
                // A signal asked for re-authentication: a fresh second factor.
                _ => StepUpRequirement {
                    min_aal: Some(2),
                    max_age: Some(MaxAge::Within(HumanDuration::from_secs(300))),
                    ..Default::default()
                },
            };
            let met = stepgate_authn::meets_assessed(
                &session.data.factors,
                &assurance,
                &req,
                &rt.config.assurance,
                now,
            );
            if !met || session.data.needs_step_up {
                let why = match decision.outcome {
                    Outcome::StepUp(q) => q.message.clone(),
                    _ => None,
                }
                .unwrap_or_else(|| format!("This needs {}.", req.describe()));
                let url = r.original.url();
                // A GET is replayed by redirecting back to it. Any other method cannot be
                // replayed safely (its body is gone, and re-sending it unseen would surprise
                // the user), so the user returns to the page they submitted from.
                let method = &r.original.method;
                let back =
                    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
                        None
                    } else {
                        r.headers
                            .get(header::REFERER)
                            .and_then(|v| v.to_str().ok())
                            .filter(|u| web::allowed_target(rt, u))
                            .map(str::to_string)
                            .or_else(|| Some(url.clone()))
                    };
                let token = web::sign_step(
                    st,
                    rt,
                    &StepToken {
                        rt: url,
                        back,
                        req: req.clone(),
                        why: why.clone(),
                        sign_in: false,
                        user_id: session.data.user_id.clone(),
                    },
                    now,
                );
                return Verdict::StepUp {
                    step_up: r.portal_url(rt, &format!("/step-up?t={token}")),
                    req,
                    why,
                };
            }
        }
        Outcome::Deny(d) => {
            let items = rt.config.policy_set.remediation(&decision, &ctx);
            let message = d
                .message
                .clone()
                .unwrap_or_else(|| "Your access to this application is blocked.".into());
            let policy = decision.policy.unwrap_or("default").to_string();
            let token = web::sign_blocked(
                st,
                rt,
                &web::BlockedToken {
                    rt: r.original.url(),
                    message: message.clone(),
                    items: items.clone(),
                    policy: policy.clone(),
                },
                now,
            );
            return Verdict::Deny {
                blocked: r.portal_url(rt, &format!("/blocked?t={token}")),
                message,
                items,
                policy,
                token,
                session: Box::new(session),
            };
        }
    }
    Verdict::Allow {
        user,
        session: Box::new(session),
        app,
        ip: r.ip,
        bearer: None,
        assurance: Box::new(assurance),
    }
}

/// The identity headers an allowed request carries to its upstream.
///
/// Each value must reach the upstream as it is meant. HTTP drops whitespace around a field
/// value, so a username ` admin` would arrive as `admin`: such a value is left out, as is
/// one that is not a valid field value. Groups and methods are one comma-separated header,
/// so a group named `eng,admins` would arrive as two, one of them `admins`: such an item is
/// left out of the list. (The signed assertion carries them as JSON, unchanged.)
pub fn identity_headers(
    user: &UserRecord,
    assurance: &Assurance,
) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    use crate::proxy::names;
    let mut out = Vec::with_capacity(7);
    // Each value is copied once, straight into its header value.
    let mut single = |name, v: &str| {
        if !padded(v) {
            if let Ok(v) = HeaderValue::from_str(v) {
                out.push((name, v));
            }
        }
    };
    single(names::REMOTE_USER, &user.username);
    if let Some(e) = &user.email {
        single(names::REMOTE_EMAIL, e);
    }
    if let Some(n) = &user.name {
        single(names::REMOTE_NAME, n);
    }
    let mut list = |name, items: &[String]| {
        // The list is built owned and handed over without another copy.
        if let Ok(v) = HeaderValue::try_from(header_list(items)) {
            out.push((name, v));
        }
    };
    list(names::REMOTE_GROUPS, &user.groups);
    list(names::REMOTE_AMR, &assurance.amr);
    out.push((
        names::REMOTE_AAL,
        HeaderValue::from(u16::from(assurance.aal)),
    ));
    if let Some(t) = assurance.auth_time {
        out.push((names::REMOTE_AUTH_TIME, HeaderValue::from(t.timestamp())));
    }
    out
}

/// Whether `v` starts or ends with whitespace, which HTTP drops from a field value.
fn padded(v: &str) -> bool {
    v.trim_matches([' ', '\t']) != v
}

/// A comma-separated header value of `items`, leaving out any item the upstream would not
/// read back as itself (empty, with a comma, or with whitespace around it).
pub fn header_list(items: &[String]) -> String {
    let mut out = String::new();
    for i in items {
        if i.is_empty() || i.contains(',') || padded(i) {
            tracing::debug!(item = %i, "left out of a list header: it would not read back as itself");
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(i);
    }
    out
}

/// Fallback handler: every request that is not for the portal is an app request, read
/// ([`crate::original::proxied`]), decided and then proxied.
pub async fn handle(State(st): State<Shared>, peer: Peer, mut req: Request) -> Response {
    let rt = st.runtime.load_full();
    let api = web::is_api(req.headers());
    let over_tls = req.extensions().get::<crate::tls::Tls>().is_some();
    // Decided on, and sent upstream with, the target in its one normal form.
    let original =
        match crate::original::proxied(&rt, req.method(), req.uri(), req.headers(), over_tls) {
            Ok(o) => o,
            Err(e) if e.unsupported_method() => return method_not_allowed(api, &e.to_string()),
            Err(e) => return bad_request(api, &e.to_string()),
        };
    if !rt.serves_host(&original.host) {
        return misdirected(&st, &rt, api);
    }
    let jar = match web::decision_cookies(&rt, req.headers()) {
        Ok(j) => j,
        Err(e) => return bad_request(api, &e.to_string()),
    };
    let ip = client_ip(&rt, peer.0, req.headers());
    let verdict = {
        let ar = AccessRequest {
            original: &original,
            headers: req.headers(),
            ip,
            portal_origin: None,
        };
        let tls = req.extensions().get::<signals::PeerCertificates>();
        let certs = signals::presented_certificates(&rt, peer.0.ip(), req.headers(), tls);
        decide_with(&st, &rt, &jar, &ar, certs).await
    };
    match verdict {
        Verdict::Allow {
            user,
            session,
            app,
            ip,
            bearer,
            assurance,
        } => {
            let grant = Grant {
                user: &user,
                session: &session,
                assurance: &assurance,
                bearer: bearer.as_deref(),
            };
            let Original { host, target, .. } = original;
            *req.uri_mut() = target;
            proxy(&st, &rt, req, &host, grant, app, ip, api).await
        }
        Verdict::NoApp => {
            // The portal's own host: its root is the account page.
            if original.target.path() == "/" {
                return web::see_other(&rt.portal_url("/account"));
            }
            st.pages.render(
                StatusCode::NOT_FOUND,
                "message.html",
                minijinja::context! { portal => rt.portal(), title => "Not found", message => "No application is configured for this address." },
            )
        }
        Verdict::Unavailable(detail) => unavailable(api, &detail),
        Verdict::SignIn { login } => {
            if api {
                let mut r = web::json_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "authentication required",
                );
                // RFC 6750: a token that was sent and refused is `invalid_token`.
                let challenge = if crate::bearer::bearer_token(req.headers()).is_some() {
                    "Bearer error=\"invalid_token\", error_description=\"the access token is not valid here\""
                } else {
                    "Bearer"
                };
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
                return r;
            }
            web::see_other(&login)
        }
        Verdict::StepUp { step_up, req, why } => {
            if api {
                return insufficient_user_authentication(&req, &why);
            }
            web::see_other(&step_up)
        }
        Verdict::Deny {
            message,
            items,
            policy,
            token,
            session,
            ..
        } => {
            if api {
                return web::json_error(StatusCode::FORBIDDEN, "access_denied", &message);
            }
            st.pages.render(
                StatusCode::FORBIDDEN,
                "blocked.html",
                minijinja::context! {
                    portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => session.data.username,
                    message => message, items => items, recheck => true, token => token, demo => st.options.demo, policy => policy,
                },
            )
        }
    }
}

/// RFC 9470's challenge: `401` with `WWW-Authenticate: Bearer error="insufficient_user_authentication"`.
pub fn insufficient_user_authentication(req: &StepUpRequirement, why: &str) -> Response {
    let mut v = format!(
        "Bearer error=\"insufficient_user_authentication\", error_description=\"{}\"",
        why.replace(['"', '\\'], "'")
    );
    if let Some(a) = req.min_aal {
        v.push_str(&format!(", acr_values=\"aal{a}\""));
    }
    match req.max_age {
        Some(MaxAge::Within(m)) => v.push_str(&format!(", max_age={}", m.as_secs())),
        Some(MaxAge::EveryTime) => v.push_str(", max_age=0"),
        None => {}
    }
    let mut r = web::json_error(
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
        why,
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Who an allowed request is let through as.
pub struct Grant<'a> {
    /// The user (from the store, or standing for a bearer token's subject).
    pub user: &'a UserRecord,
    /// The session (a stand-in for a bearer token).
    pub session: &'a Session,
    /// The assurance the session reached (computed once per request).
    pub assurance: &'a Assurance,
    /// The verified bearer token, when the request was judged on one.
    pub bearer: Option<&'a crate::bearer::BearerIdentity>,
}

async fn proxy(
    st: &Shared,
    rt: &Runtime,
    req: Request,
    host: &str,
    grant: Grant<'_>,
    app: &stepgate_policy::spec::AppSpec,
    ip: Option<IpAddr>,
    api: bool,
) -> Response {
    let Some(target) = rt.upstreams.get(app.id.as_str()) else {
        return bad_gateway(api);
    };
    let Some(uri) = proxy::upstream_path(&target.prefix, req.uri()) else {
        return bad_gateway(api);
    };
    let over_tls = req.extensions().get::<crate::tls::Tls>().is_some();
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
    let upgrade = proxy::websocket_upgrade(out.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut out));
    let own_cookies = &rt.own_cookies;
    let h = out.headers_mut();
    proxy::strip_request(h, &rt.configured_identity_headers);
    proxy::strip_own_cookies(h, own_cookies);
    // Room for the identity, assertion and forwarding headers at once: the map hyper
    // parsed is sized to the client's headers and would otherwise grow (rehash) twice.
    h.reserve(16);
    if upgrade {
        proxy::set_websocket_upgrade(h);
    }
    for (name, value) in identity_headers(grant.user, grant.assurance) {
        h.insert(name, value);
    }
    if let Some(id) = grant.bearer {
        for (name, value) in crate::bearer::identity_header_overrides(id) {
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
    if let Some((name, value)) = crate::assertion::header_for(st, rt, app, &grant) {
        h.insert(name, value);
    }
    let proto = if over_tls || rt.config.sessions.cookie.secure {
        "https"
    } else {
        "http"
    };
    // `strip_request` above removed every forwarding header the client sent.
    proxy::put_forwarding(h, ip, host, proto);
    let timeout = rt.config.gateway.timeout_for(app.id.as_str());
    match tokio::time::timeout(timeout, st.upstream.send(&target.address, out)).await {
        Ok(Ok(mut resp)) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                // An upstream may not switch protocols the client did not ask for, nor to
                // another protocol than WebSocket.
                let Some(client) =
                    client_upgrade.filter(|_| proxy::websocket_upgrade(resp.headers()))
                else {
                    tracing::warn!(app = %app.id.as_str(), "upstream switched protocols unasked; refused");
                    return bad_gateway(api);
                };
                let upstream = hyper::upgrade::on(&mut resp);
                strip_hop_by_hop(resp.headers_mut());
                proxy::strip_own_set_cookies(resp.headers_mut(), own_cookies);
                proxy::set_websocket_upgrade(resp.headers_mut());
                let watch = match grant.bearer {
                    Some(b) => proxy::Watch::Until(b.expires),
                    None => proxy::Watch::Session {
                        st: st.clone(),
                        id: grant.session.id.clone(),
                        every: rt.config.gateway.upgraded_recheck(),
                    },
                };
                proxy::splice_upgraded(client, upstream, app.id.to_string(), watch);
                return resp;
            }
            strip_hop_by_hop(resp.headers_mut());
            proxy::strip_own_set_cookies(resp.headers_mut(), own_cookies);
            resp
        }
        Ok(Err(e)) => {
            tracing::warn!(app = %app.id.as_str(), error = %e, "upstream request failed");
            bad_gateway(api)
        }
        Err(_) => {
            tracing::warn!(app = %app.id.as_str(), timeout_secs = timeout.as_secs(), "upstream did not answer in time");
            proxy::gateway_timeout(api)
        }
    }
}

/// A request stepgate will not decide on (400), saying why.
fn bad_request(api: bool, why: &str) -> Response {
    tracing::info!(reason = why, "refused a malformed request");
    refusal(api, StatusCode::BAD_REQUEST, "invalid_request", why)
}

/// A method stepgate does not proxy (`CONNECT`, `TRACE`): 405.
fn method_not_allowed(api: bool, why: &str) -> Response {
    let mut r = refusal(api, StatusCode::METHOD_NOT_ALLOWED, "invalid_request", why);
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    r
}

/// A host that is neither the portal's nor an app's: 421, never a redirect built from it.
fn misdirected(st: &Shared, rt: &Runtime, api: bool) -> Response {
    if api {
        return web::json_error(
            StatusCode::MISDIRECTED_REQUEST,
            "invalid_request",
            "this host is not served here",
        );
    }
    st.pages.render(
        StatusCode::MISDIRECTED_REQUEST,
        "message.html",
        minijinja::context! { portal => rt.portal(), title => "Not served here", message => "This address is not one stepgate serves. Check the link, or ask your administrator which address to use." },
    )
}

/// A plain-text (browsers) or JSON (APIs) refusal with the portal's security headers.
fn refusal(api: bool, status: StatusCode, error: &str, why: &str) -> Response {
    if api {
        return web::json_error(status, error, why);
    }
    let mut r = (
        status,
        format!("{}: {why}.", status.canonical_reason().unwrap_or("Refused")),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    crate::security::portal_headers(r)
}

fn unavailable(api: bool, detail: &str) -> Response {
    tracing::error!(
        error = detail,
        "session store unavailable: refusing the request"
    );
    let mut r = refusal(
        api,
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "stepgate cannot verify this request right now; try again shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assurance() -> Assurance {
        Assurance {
            aal: 2,
            amr: vec!["pwd".into(), "otp".into(), "x,hwk".into()],
            phishing_resistant: false,
            hardware_bound: false,
            restricted: false,
            auth_time: None,
        }
    }

    #[test]
    fn identity_headers_reach_the_upstream_as_they_are_meant() {
        let mut u = UserRecord::new("jane");
        u.groups = vec![
            "staff".into(),
            "eng,admins".into(),
            " admins".into(),
            "admins\t".into(),
            String::new(),
            "ops".into(),
        ];
        u.email = Some("jane@example.com".into());
        let h: std::collections::HashMap<_, _> = identity_headers(&u, &assurance())
            .into_iter()
            .map(|(n, v)| (n.as_str().to_string(), v))
            .collect();
        assert_eq!(h["remote-user"], "jane");
        assert_eq!(h["remote-email"], "jane@example.com");
        // A group that would split into others, or be trimmed into another, is left out.
        assert_eq!(h["remote-groups"], "staff,ops");
        assert_eq!(h["remote-amr"], "pwd,otp");
        // A name HTTP would trim into another user's is not asserted at all.
        let padded = UserRecord::new(" admin");
        let h = identity_headers(&padded, &assurance());
        assert!(h
            .iter()
            .all(|(n, _)| *n != crate::proxy::names::REMOTE_USER));
    }
}
