//! The access path for app hosts: session → context → policy → allow (proxy with identity
//! headers), step up (portal or RFC 9470 challenge) or deny (remediation page). Any store
//! failure on this path refuses the request with 503: stepgate fails closed.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use chrono::{DateTime, Utc};
use stepgate_authn::satisfies;
use stepgate_policy::{Outcome, RequestContext, RequestKind};
use stepgate_store::UserRecord;

use crate::context::{client_ip, request_context};
use crate::demo;
use crate::proxy::{bad_gateway, strip_hop_by_hop, strip_identity, upstream_uri};
use crate::session::Session;
use crate::state::{Runtime, Shared};
use crate::web::{self, Peer, RequirementToken, StepToken};

/// Gathers the request context: the request itself, the user, and the device and network
/// signals (in demo mode, the chosen demo device profile).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gather(
    st: &Shared,
    rt: &Runtime,
    kind: RequestKind,
    app: Option<&str>,
    req_parts: (
        &axum::http::Method,
        &axum::http::Uri,
        &axum::http::HeaderMap,
    ),
    ip: IpAddr,
    jar: &CookieJar,
    user: Option<&UserRecord>,
    now: DateTime<Utc>,
) -> RequestContext {
    let (method, uri, headers) = req_parts;
    let mut ctx = request_context(kind, app, method, uri, headers, ip, user, now);
    if st.options.demo {
        let chosen = headers
            .get(demo::DEVICE_HEADER)
            .and_then(|v| v.to_str().ok())
            .or_else(|| jar.get(demo::DEVICE_COOKIE).map(|c| c.value()));
        let p = demo::profile(chosen);
        ctx.device = demo::device(p);
        if let Some(ip) = p.ip.and_then(|s| s.parse().ok()) {
            ctx.network.ip = Some(ip);
        }
    }
    let _ = rt;
    ctx
}

/// Fallback handler: every request that is not for the portal.
pub async fn handle(
    State(st): State<Shared>,
    peer: Peer,
    jar: CookieJar,
    req: Request,
) -> Response {
    let rt = st.runtime.load_full();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("")
        .to_string();
    let api = web::is_api(req.headers());
    let Some(app) = rt.app_for_host(&host).cloned() else {
        if req.uri().path() == "/" {
            return web::see_other(&format!("{}/account", rt.portal()));
        }
        return st.pages.render(
            StatusCode::NOT_FOUND,
            "message.html",
            minijinja::context! { portal => rt.portal(), title => "Not found", message => "No application is configured for this address." },
        );
    };
    let now = Utc::now();
    let ip = client_ip(peer.0, req.headers(), &rt.config.trusted_proxies);
    let here = web::request_url(req.headers(), req.uri(), rt.config.sessions.cookie.secure);

    let session = match web::current_session(&st, &rt, &jar, now).await {
        Ok(s) => s,
        Err(e) => return unavailable(api, &e.to_string()),
    };
    let Some(session) = session.filter(|s| !s.data.pending) else {
        return sign_in_needed(&st, &rt, api, &here, now);
    };
    let user = match st.stores.durable.get_user(&session.data.user_id).await {
        Ok(Some(u)) if !u.disabled => u,
        Ok(_) => {
            let _ = st.stores.hot.delete_session(&session.id).await;
            return sign_in_needed(&st, &rt, api, &here, now);
        }
        Err(e) => return unavailable(api, &e.to_string()),
    };

    let (parts, body) = req.into_parts();
    let ctx = gather(
        &st,
        &rt,
        RequestKind::Access,
        Some(app.id.as_str()),
        (&parts.method, &parts.uri, &parts.headers),
        ip,
        &jar,
        Some(&user),
        now,
    );
    let decision = rt.config.policy_set.decide(&ctx);
    match decision.outcome {
        Outcome::Allow if !session.data.needs_step_up => {}
        Outcome::Allow | Outcome::StepUp(_) => {
            let req_token = match decision.outcome {
                Outcome::StepUp(r) => RequirementToken::from(r),
                // A signal asked for re-authentication: a fresh second factor.
                _ => RequirementToken {
                    min_aal: Some(2),
                    max_age_secs: Some(300),
                    ..Default::default()
                },
            };
            let sat = satisfies(
                &session.data.auth_state(),
                &req_token.to_authn(),
                &rt.config.assurance,
                &[],
                now,
            );
            if !sat.satisfied || session.data.needs_step_up {
                let why = match decision.outcome {
                    Outcome::StepUp(r) => r.message.clone(),
                    _ => None,
                }
                .unwrap_or_else(|| format!("This needs {}.", req_token.describe()));
                return step_up_needed(&st, &rt, api, &here, &parts, req_token, why, &session, now);
            }
        }
        Outcome::Deny(d) => {
            let items = rt.config.policy_set.remediation(&decision, &ctx);
            let message = d
                .message
                .clone()
                .unwrap_or_else(|| "Your access to this application is blocked.".into());
            if api {
                return web::json_error(StatusCode::FORBIDDEN, "access_denied", &message);
            }
            let token = web::sign_blocked(
                &st,
                &rt,
                &web::BlockedToken {
                    rt: here.clone(),
                    message: message.clone(),
                    items: items.clone(),
                    policy: decision.policy.unwrap_or("default").into(),
                },
                now,
            );
            let csrf = st.signer.csrf_token(&session.id);
            return st.pages.render(
                StatusCode::FORBIDDEN,
                "blocked.html",
                minijinja::context! {
                    portal => rt.portal(), csrf => csrf, username => user.username, message => message, items => items,
                    recheck => true, token => token, demo => st.options.demo, policy => decision.policy.unwrap_or("default"),
                },
            );
        }
    }

    // Allowed: forward with stepgate's identity headers.
    let Some(base) = app.upstream.as_ref() else {
        return bad_gateway(api);
    };
    let Some(uri) = upstream_uri(base, &parts.uri) else {
        return bad_gateway(api);
    };
    let mut out = Request::from_parts(parts, body);
    *out.uri_mut() = uri;
    let h = out.headers_mut();
    strip_hop_by_hop(h);
    strip_identity(h);
    let assurance = session.data.assurance(&rt.config.assurance);
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    set(h, "remote-user", &user.username);
    set(h, "remote-groups", &user.groups.join(","));
    if let Some(e) = &user.email {
        set(h, "remote-email", e);
    }
    if let Some(n) = &user.name {
        set(h, "remote-name", n);
    }
    set(h, "remote-aal", &assurance.aal.to_string());
    set(h, "remote-amr", &assurance.amr.join(","));
    if let Some(t) = assurance.auth_time {
        set(h, "remote-auth-time", &t.timestamp().to_string());
    }
    set(h, "x-forwarded-for", &ip.to_string());
    set(h, "x-forwarded-host", &host);
    set(
        h,
        "x-forwarded-proto",
        if rt.config.sessions.cookie.secure {
            "https"
        } else {
            "http"
        },
    );
    match st.upstream.send(out).await {
        Ok(mut resp) => {
            strip_hop_by_hop(resp.headers_mut());
            resp
        }
        Err(e) => {
            tracing::warn!(app = %app.id.as_str(), error = %e, "upstream request failed");
            bad_gateway(api)
        }
    }
}

fn unavailable(api: bool, detail: &str) -> Response {
    tracing::error!(
        error = detail,
        "session store unavailable: refusing the request"
    );
    if api {
        return web::json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "stepgate cannot verify this request right now",
        );
    }
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        "stepgate cannot verify this request right now; try again shortly",
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

fn sign_in_needed(
    st: &Shared,
    rt: &Runtime,
    api: bool,
    here: &str,
    now: DateTime<Utc>,
) -> Response {
    if api {
        let mut r = web::json_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "authentication required",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let t = web::sign_return(st, rt, here, now).unwrap_or_default();
    web::see_other(&format!("{}/login?t={}", rt.portal(), t))
}

#[allow(clippy::too_many_arguments)]
fn step_up_needed(
    st: &Shared,
    rt: &Runtime,
    api: bool,
    here: &str,
    parts: &axum::http::request::Parts,
    req: RequirementToken,
    why: String,
    session: &Session,
    now: DateTime<Utc>,
) -> Response {
    if api {
        let mut v = format!(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"{}\"",
            why.replace('"', "'")
        );
        if let Some(a) = req.min_aal {
            v.push_str(&format!(", acr_values=\"aal{a}\""));
        }
        if let Some(m) = req.max_age_secs {
            v.push_str(&format!(", max_age={m}"));
        } else if req.every_time {
            v.push_str(", max_age=0");
        }
        let mut r = web::json_error(
            StatusCode::UNAUTHORIZED,
            "insufficient_user_authentication",
            &why,
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return r;
    }
    // A GET is replayed by redirecting back to it. Any other method cannot be replayed
    // safely (its body is gone and re-sending it silently would surprise the user), so the
    // user goes back to the page they submitted from and submits again.
    let back =
        if parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD {
            None
        } else {
            parts
                .headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .filter(|r| web::allowed_target(rt, r))
                .map(str::to_string)
                .or_else(|| Some(here.to_string()))
        };
    let token = web::sign_step(
        st,
        rt,
        &StepToken {
            rt: here.to_string(),
            back,
            req,
            why,
            sign_in: false,
            user_id: session.data.user_id.clone(),
        },
        now,
    );
    web::see_other(&format!("{}/step-up?t={}", rt.portal(), token))
}
