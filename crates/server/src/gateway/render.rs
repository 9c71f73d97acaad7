//! The gateway's answers: a [`Verdict`] rendered for the reverse proxy (a redirect to the
//! portal or the blocked page for a browser, an RFC 9470 challenge or a JSON error for an
//! API), the signed portal links both the proxy and forward-auth send browsers to, and the
//! gateway's own refusals ([`Refusal`]), each with the security headers.

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use stepgate_policy::{MaxAge, StepUpRequirement};

use crate::access::{SignInReason, Verdict};
use crate::app::responses::{json_error, see_other};
use crate::app::signer::Signer;
use crate::app::state::Runtime;
use crate::portal::links::{BlockedToken, Links, StepToken};
use crate::portal::pages::{Message, Pages, WayOn};

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

/// A refusal, for a browser (a page in the portal's layout) or an API (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What went wrong.
    pub kind: RefusalKind,
    /// Whether the client asked for a machine answer.
    pub api: bool,
    /// The portal path (a page's stylesheet is under it).
    pub portal: String,
    /// The account page, on the public URL: the way on when there is no better one.
    pub account: String,
    /// A better way on, when the refusal knows one: the same address again (a GET to an
    /// application that did not answer), or the application's start page.
    pub back: Option<WayOn>,
}

impl RefusalKind {
    /// For a client that wants JSON (`api`) or a page, under `rt`'s portal path.
    pub fn to(self, api: bool, rt: &Runtime) -> Refusal {
        Refusal {
            kind: self,
            api,
            portal: rt.portal().to_string(),
            account: rt.portal_url("/account"),
            back: None,
        }
    }
}

impl Refusal {
    /// With `back` as the page's main way on.
    pub fn back(mut self, back: WayOn) -> Self {
        self.back = Some(back);
        self
    }
}

/// The way back for a request to an application that failed: the same address again when
/// it was a GET (or HEAD), else the application's start page (a form's address must not be
/// opened by a link).
pub fn try_again(method: &Method, target: &str, app: &stepgate_policy::spec::AppSpec) -> WayOn {
    if (*method == Method::GET || *method == Method::HEAD) && target.starts_with('/') {
        WayOn::new(target, crate::i18n::t("try-again"))
    } else {
        let name = app.name.as_deref().unwrap_or(app.id.as_str());
        WayOn::new(
            "/",
            crate::i18n::t_with("gateway-start-page-of", &[("app", name.into())]),
        )
    }
}

impl RefusalKind {
    /// The status, the API's error code, and the keys of the page's title and text.
    fn words(&self) -> (StatusCode, &'static str, &'static str, &'static str) {
        use RefusalKind::*;
        match self {
            BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "gateway-bad-request-title",
                "gateway-bad-request-text",
            ),
            MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "gateway-method-title",
                "gateway-method-text",
            ),
            Misdirected => (
                StatusCode::MISDIRECTED_REQUEST,
                "invalid_request",
                "gateway-misdirected-title",
                "gateway-misdirected-text",
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request",
                "gateway-not-found-title",
                "gateway-not-found-text",
            ),
            BadGateway => (
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "gateway-bad-gateway-title",
                "gateway-bad-gateway-text",
            ),
            GatewayTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "gateway-timeout-title",
                "gateway-timeout-text",
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "error-store-down-title",
                "gateway-unavailable-text",
            ),
        }
    }

    /// The refusals worth a log line: a malformed request, and a failure to decide.
    fn log(&self) {
        match self {
            RefusalKind::BadRequest(why) => {
                tracing::info!(reason = %why, "refused a malformed request");
            }
            RefusalKind::Unavailable(detail) => {
                tracing::error!(error = %detail, "a store or signal source failed: refusing the request");
            }
            _ => {}
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        // APIs are answered in English (their descriptions are for developers and logs).
        let lang = if self.api {
            crate::i18n::Lang::En
        } else {
            crate::i18n::lang()
        };
        self.kind.log();
        let (status, error, title, text) = self.kind.words();
        let text = match &self.kind {
            RefusalKind::BadRequest(why) | RefusalKind::MethodNotAllowed(why) => {
                crate::i18n::tr(lang, text, &[("why", why.as_str().into())])
            }
            _ => crate::i18n::tr(lang, text, &[]),
        };
        let mut r = if self.api {
            json_error(status, error, &api_description(&self.kind, &text))
        } else {
            let title = crate::i18n::tr(lang, title, &[]);
            self.page(lang, status, &title, &text)
        };
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        r
    }
}

impl Refusal {
    /// The refusal as a page in the portal's layout: its way on is the better one it
    /// knows, with the account page beside it, or else the account page.
    fn page(
        self,
        lang: crate::i18n::Lang,
        status: StatusCode,
        title: &str,
        text: &str,
    ) -> Response {
        let home = WayOn::new(
            self.account.as_str(),
            crate::i18n::tr(lang, "go-to-account", &[]),
        );
        let (way_on, also) = match self.back {
            Some(back) => (back, Some(home)),
            None => (home, None),
        };
        Message {
            portal: &self.portal,
            title,
            text,
            way_on: Some(way_on),
            also,
        }
        .render(status)
    }
}

/// What an API client is told (the words it was told before the pages existed: clients
/// may match on them).
fn api_description(kind: &RefusalKind, text: &str) -> String {
    match kind {
        RefusalKind::BadRequest(why) | RefusalKind::MethodNotAllowed(why) => why.clone(),
        RefusalKind::BadGateway => "the upstream application is unavailable".into(),
        RefusalKind::GatewayTimeout => "the upstream application did not answer in time".into(),
        RefusalKind::Unavailable(_) => {
            "stepgate cannot verify this request right now; try again shortly".into()
        }
        RefusalKind::Misdirected | RefusalKind::NotFound => text.to_string(),
    }
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
        Verdict::Unavailable(e) => {
            let refusal = RefusalKind::Unavailable(e).to(api, rt);
            // The same address again, for a request a link may repeat.
            match *ret.method == Method::GET || *ret.method == Method::HEAD {
                true => refusal.back(WayOn::new(ret.url.as_str(), "Try again")),
                false => refusal,
            }
            .into_response()
        }
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
