//! The gateway's answers: a [`Verdict`] rendered for the reverse proxy (a redirect to the
//! portal or the blocked page for a browser, an RFC 9470 challenge or a JSON error for an
//! API), the signed portal links both the proxy and forward-auth send browsers to, and the
//! gateway's own refusals ([`Refusal`]), each with the security headers.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use stepgate_policy::{MaxAge, StepUpRequirement};

use crate::access::{SignInReason, Verdict};
use crate::app::responses::{json_error, security_headers, see_other};
use crate::app::signer::Signer;
use crate::app::state::Runtime;
use crate::portal::links::{BlockedToken, Links, StepToken};
use crate::portal::pages::Pages;

/// A request the gateway will not decide on, or cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalKind {
    /// 400: it cannot be read as the upstream would read it.
    BadRequest(String),
    /// 405: a method stepgate does not proxy (`CONNECT`, `TRACE`).
    MethodNotAllowed(String),
    /// 421: a host that is neither the portal's nor an app's.
    Misdirected,
    /// 404: the portal's own host, and no app there.
    NotFound,
    /// 502: the upstream is unreachable or misbehaved.
    BadGateway,
    /// 504: the upstream did not answer in time.
    GatewayTimeout,
    /// 503: a store or signal source failed (fail closed).
    Unavailable(String),
}

/// A refusal, for a browser (HTML or text) or an API (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What went wrong.
    pub kind: RefusalKind,
    /// Whether the client asked for a machine answer.
    pub api: bool,
    /// The portal path (a page's stylesheet is under it).
    pub portal: String,
}

impl RefusalKind {
    /// For a client that wants JSON (`api`) or a page, under `rt`'s portal path.
    pub fn to(self, api: bool, rt: &Runtime) -> Refusal {
        Refusal {
            kind: self,
            api,
            portal: rt.portal().to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        use RefusalKind::*;
        let (api, portal) = (self.api, self.portal.as_str());
        let (status, error, why): (StatusCode, &str, String) = match self.kind {
            BadRequest(why) => {
                tracing::info!(reason = %why, "refused a malformed request");
                (StatusCode::BAD_REQUEST, "invalid_request", why)
            }
            MethodNotAllowed(why) => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request", why),
            Misdirected => {
                return page_or_json(
                    api,
                    portal,
                    StatusCode::MISDIRECTED_REQUEST,
                    "Not served here",
                    "This address is not one stepgate serves. Check the link, or ask your administrator which address to use.",
                )
            }
            NotFound => {
                return page_or_json(
                    api,
                    portal,
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "No application is configured for this address.",
                )
            }
            BadGateway => return bad_gateway(api, StatusCode::BAD_GATEWAY),
            GatewayTimeout => return bad_gateway(api, StatusCode::GATEWAY_TIMEOUT),
            Unavailable(detail) => {
                tracing::error!(error = %detail, "a store or signal source failed: refusing the request");
                let mut r = text_or_json(
                    api,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "stepgate cannot verify this request right now; try again shortly",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return r;
            }
        };
        let mut r = text_or_json(api, status, error, &why);
        if status == StatusCode::METHOD_NOT_ALLOWED {
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        r
    }
}

/// A plain-text (browsers) or JSON (APIs) answer with the security headers.
fn text_or_json(api: bool, status: StatusCode, error: &str, why: &str) -> Response {
    if api {
        return json_error(status, error, why);
    }
    let reason = status.canonical_reason().unwrap_or("Refused");
    let r = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{reason}: {why}."),
    )
        .into_response();
    security_headers(r)
}

/// A portal message page (browsers) or a JSON error (APIs).
fn page_or_json(
    api: bool,
    portal: &str,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    if api {
        return json_error(status, "invalid_request", message);
    }
    Pages::global().render(
        status,
        "message.html",
        minijinja::context! { portal => portal, title => title, message => message },
    )
}

/// A gateway error page that says nothing of internals.
fn bad_gateway(api: bool, status: StatusCode) -> Response {
    let timeout = status == StatusCode::GATEWAY_TIMEOUT;
    if api {
        let (error, why) = if timeout {
            (
                "gateway_timeout",
                "the upstream application did not answer in time",
            )
        } else {
            ("bad_gateway", "the upstream application is unavailable")
        };
        return json_error(status, error, why);
    }
    let r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>Unavailable</title><h1>The application is unavailable</h1><p>Please try again in a moment.</p>",
    )
        .into_response();
    security_headers(r)
}

/// What a browser sent to the portal comes back to: the request's URL, and, for a step-up
/// triggered by a request that cannot be replayed (a POST), the page it came from.
pub struct Return<'a> {
    /// Where the portal is: `scheme://host` of a configured host.
    pub portal_origin: &'a str,
    /// The absolute URL the client asked for.
    pub url: String,
    /// Its method.
    pub method: &'a Method,
    /// The `Referer` it came with.
    pub referer: Option<&'a str>,
    /// The request's id (shown on the step-up and blocked pages).
    pub request_id: &'a str,
    /// For an app host that gets its session by hand-off: the nonce its hand-off cookie
    /// holds, passed to the login page so a code can be bound to this browser.
    pub hand_off: Option<&'a str>,
}

impl Return<'_> {
    fn portal_url(&self, rt: &Runtime, path: &str) -> String {
        [self.portal_origin, rt.portal(), path].concat()
    }
}

/// The portal page a browser is sent to for `verdict` (sign in, step up, blocked), with
/// its signed token; `None` for a verdict that sends it nowhere.
pub fn portal_link(
    signer: &Signer,
    rt: &Runtime,
    verdict: &Verdict,
    ret: &Return<'_>,
    now: DateTime<Utc>,
) -> Option<String> {
    let links = Links::new(signer, rt);
    match verdict {
        Verdict::SignIn(_) => {
            let t = links.sign_return(&ret.url, now).unwrap_or_default();
            Some(match ret.hand_off {
                Some(n) => ret.portal_url(rt, &format!("/login?t={t}&n={n}")),
                None => ret.portal_url(rt, &format!("/login?t={t}")),
            })
        }
        Verdict::StepUp(s) => {
            // A GET is replayed by redirecting back to it. Any other method cannot be
            // replayed safely (its body is gone, and re-sending it unseen would surprise the
            // user), so the user returns to the page they submitted from.
            let replayable = *ret.method == Method::GET || *ret.method == Method::HEAD;
            let back = (!replayable).then(|| {
                ret.referer
                    .filter(|u| crate::portal::links::allowed_target(rt, u))
                    .map_or_else(|| ret.url.clone(), str::to_string)
            });
            let token = links.sign_step(
                &StepToken {
                    rt: ret.url.clone(),
                    back,
                    req: s.requirement.clone(),
                    why: s.why.clone(),
                    sign_in: false,
                    user_id: s.user.id.clone(),
                    rid: ret.request_id.to_string(),
                },
                now,
            );
            Some(ret.portal_url(rt, &format!("/step-up?t={token}")))
        }
        Verdict::Deny(d) => Some(ret.portal_url(
            rt,
            &format!("/blocked?t={}", blocked_token(&links, d, ret, now)),
        )),
        Verdict::Allow(_) | Verdict::Unavailable(_) => None,
    }
}

fn blocked_token(
    links: &Links<'_>,
    d: &crate::access::verdict::Deny,
    ret: &Return<'_>,
    now: DateTime<Utc>,
) -> String {
    links.sign_blocked(
        &BlockedToken {
            rt: ret.url.clone(),
            message: d.message.clone(),
            items: d.remediation.clone(),
            policy: d.policy.clone(),
            rid: ret.request_id.to_string(),
        },
        now,
    )
}

/// The reverse proxy's answer to a request not let through.
pub fn refused(
    signer: &Signer,
    rt: &Runtime,
    verdict: Verdict,
    ret: &Return<'_>,
    headers: &HeaderMap,
    demo: bool,
    now: DateTime<Utc>,
) -> Response {
    let api = crate::app::responses::is_api(headers);
    match verdict {
        Verdict::Unavailable(e) => RefusalKind::Unavailable(e).to(api, rt).into_response(),
        Verdict::SignIn(reason) if api => sign_in_challenge(reason),
        Verdict::StepUp(s) if api => insufficient_user_authentication(&s.requirement, &s.why),
        Verdict::Deny(d) if api => json_error(StatusCode::FORBIDDEN, "access_denied", &d.message),
        Verdict::Deny(d) => {
            let links = Links::new(signer, rt);
            let token = blocked_token(&links, &d, ret, now);
            let (csrf, username) = match &d.session {
                Some(s) => (signer.csrf_token(&s.id), Some(s.data.username.clone())),
                None => (String::new(), None),
            };
            let outcome =
                crate::portal::blocked::outcome_context(rt, &ret.url, &d.policy, &d.remediation);
            Pages::global().render(
                StatusCode::FORBIDDEN,
                "blocked.html",
                minijinja::context! {
                    portal => rt.portal(), csrf => csrf, username => username, token => token, demo => demo,
                    message => d.message, items => d.remediation, policy => d.policy, request_id => ret.request_id, ..outcome
                },
            )
        }
        v => match portal_link(signer, rt, &v, ret, now) {
            Some(to) => see_other(&to),
            None => RefusalKind::BadGateway.to(api, rt).into_response(),
        },
    }
}

/// `401` for an API request with no (valid) credentials: RFC 6750's `invalid_token` when a
/// token was sent and refused.
pub fn sign_in_challenge(reason: SignInReason) -> Response {
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "authentication required",
    );
    let challenge = match reason {
        SignInReason::TokenRefused => {
            "Bearer error=\"invalid_token\", error_description=\"the access token is not valid here\""
        }
        SignInReason::NoSession => "Bearer",
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
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
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "insufficient_user_authentication",
        why,
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
