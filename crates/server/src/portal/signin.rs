//! Sign-in: the login page and its password form; and what happens once a first factor is
//! passed (here, or with a passkey in [`super::webauthn`]): the sign-in is one more request
//! for the access pipeline, whose verdict completes it, asks for more (a pending session
//! and the step-up page) or blocks it.

use std::net::IpAddr;

use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::cookie::Cookie;
use axum_extra::extract::Form;
use chrono::{DateTime, Utc};
use minijinja::context;
use serde::Deserialize;
use stepgate_authn::service::AuthError;
use stepgate_policy::RequestKind;
use stepgate_signals::risk::SignInOutcome;
use stepgate_store::UserRecord;

use super::error::PortalError;
use super::extract::{check_csrf, Here, Visit};
use super::links::{BlockedToken, Links, StepToken};
use super::pages::Pages;
use super::{audit, auth_message};
use crate::access::signals::SignInRecord;
use crate::access::{AccessRequest, Credentials, RequestId, Verdict};
use crate::app::responses::see_other;
use crate::app::signer::random_id;
use crate::app::state::Shared;
use crate::session::cookies::{plain_cookie, session_cookie, CookieJar, PRE_COOKIE};
use crate::session::{limits, Session, SessionData};

pub use super::first_factor::{Arrival, FirstFactor, Incoming};
use super::Failure;

/// `?t=` on the login page: the signed return target; `?n=`, from an app host that gets
/// its session by hand-off, the nonce of its hand-off cookie.
#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    t: String,
    #[serde(default)]
    n: String,
    /// Show the sign-in page even with `server.default_provider`.
    #[serde(default)]
    local: Option<String>,
}

/// `GET {portal}/login`. Already signed in here and sent by an app host that gets its
/// session by hand-off: straight back to it with a hand-off code, no page.
pub async fn login_page(
    Visit { st, here: rt, jar }: Visit,
    Query(q): Query<LoginQuery>,
) -> Result<Response, PortalError> {
    if !q.n.is_empty() {
        let target = Links::new(&st.signer, &rt).verify_return(&q.t, Utc::now());
        if let (Some(target), Some(session)) =
            (target, super::extract::live_session(&st, &rt, &jar).await?)
        {
            if let Some(url) = super::handoff::hand_over(&st, &rt, &session, &target, &q.n).await? {
                return Ok(see_other(&url));
            }
        }
    }
    // One provider for everyone: straight there (`?local` still shows the page).
    if let (Some(id), None) = (&rt.config.server.default_provider, &q.local) {
        if let Some(url) = super::upstream::start_url(&rt, id, &q.t, None) {
            return Ok(see_other(&url));
        }
    }
    Ok(render_login(&st, &rt, jar, &q.t, None))
}

/// What a failed attempt shows on the login page again.
struct Attempted<'a> {
    error: String,
    username: &'a str,
    status: StatusCode,
    /// Sign-in is paused (the form is disabled until then).
    paused: Option<super::Paused>,
}

fn render_login(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    token: &str,
    again: Option<Attempted<'_>>,
) -> Response {
    let (error, username, status, paused) = match again {
        Some(a) => (Some(a.error), a.username, a.status, a.paused),
        None => (None, "", StatusCode::OK, None),
    };
    let (jar, pre) = pre_session(rt, jar);
    let target = Links::new(&st.signer, rt).verify_return(token, Utc::now());
    let app_name = target
        .as_deref()
        .and_then(|t| url::Url::parse(t).ok())
        .and_then(|u| {
            u.host_str()
                .and_then(|h| rt.app_for_host(h))
                .map(|a| a.name.clone().unwrap_or_else(|| a.id.to_string()))
        });
    let page = Pages::global().render(
        status,
        "login.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&pre), token => token, error => error,
            app_name => app_name, username_value => username, remember_me => rt.config.sessions.remember_me,
            providers => super::upstream::buttons(rt, token),
            home_realm => super::upstream::discovers_home_realm(rt),
            paused => paused, help => rt.config.portal.help.as_deref(),
        },
    );
    let form_redirect = target
        .as_deref()
        .and_then(|t| crate::oidc::authorize::form_action_origin(rt, t));
    let page = crate::app::responses::allow_form_redirect_to(page, form_redirect.as_deref());
    (jar, page).into_response()
}

/// The pre-session cookie that binds the CSRF token of a form shown before sign-in: the
/// request's, or a new one set on the answer. Returns the jar and the binding.
pub(super) fn pre_session(rt: &Here, jar: CookieJar) -> (CookieJar, String) {
    match jar.get(PRE_COOKIE) {
        Some(c) => {
            let v = c.to_string();
            (jar, v)
        }
        None => {
            let v = random_id();
            let secure = rt.config.sessions.cookie.secure;
            (jar.set(plain_cookie(PRE_COOKIE, v.clone(), secure)), v)
        }
    }
}

/// The password form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    t: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    remember: Option<String>,
}

/// `POST {portal}/login`: the password, then whatever the sign-in policy asks.
pub async fn login_submit(
    Visit { st, here: rt, jar }: Visit,
    incoming: Incoming,
    Form(f): Form<LoginForm>,
) -> Response {
    if let Err(e) = check_csrf(&st, &rt, &jar, None, &f.csrf) {
        return e.into_response();
    }
    let from = Arrival::of(&rt, &incoming);
    let username = f.username.trim();
    // Home-realm discovery: an address in a provider's domain signs in there.
    if let Some(there) = home_realm(&rt, username, &f.t) {
        return there;
    }
    let again = |error: String, status| Attempted {
        error,
        username: &f.username,
        status,
        paused: None,
    };
    // The address first, then the password: a name with no provider asks for it.
    if f.password.is_empty() && super::upstream::discovers_home_realm(&rt) {
        let again = again(String::new(), StatusCode::OK);
        return render_login(&st, &rt, jar, &f.t, Some(again));
    }
    // The directory's password for the names it holds (`ldap:`), the store's otherwise.
    let checked = match super::directory::password(&st, &rt, username, &f.password, from.ip).await {
        None => {
            st.authn
                .verify_password(username, &f.password, from.ip)
                .await
        }
        Some(super::directory::Checked::Passed(user, factor)) => Ok((*user, factor)),
        Some(super::directory::Checked::Refused(e)) => Err(e),
        Some(super::directory::Checked::Unavailable) => {
            let why = super::directory::UNAVAILABLE.to_string();
            let again = again(why, StatusCode::SERVICE_UNAVAILABLE);
            return render_login(&st, &rt, jar, &f.t, Some(again));
        }
    };
    let (user, factor) = match checked {
        Ok(passed) => passed,
        Err(e) => {
            let again = wrong_password(&st, &rt, e, &f.username, from).await;
            return render_login(&st, &rt, jar, &f.t, Some(again));
        }
    };
    let who = user.clone();
    let attempt = FirstFactor {
        target: Links::new(&st.signer, &rt).verify_return(&f.t, Utc::now()),
        remember: f.remember.is_some(),
        ..FirstFactor::new(user, factor, from)
    };
    let next = sign_in(&st, &rt, &jar, attempt).await;
    super::enrolment::at_first_sign_in(&st, &rt, &who, from.ip, next)
        .await
        .respond(&rt, jar, false)
}

/// The redirect to the provider whose domain holds the address `username`, if any,
/// returning to `token`'s target.
fn home_realm(rt: &Here, username: &str, token: &str) -> Option<Response> {
    let id = super::upstream::provider_for_email(rt, username)?;
    let url = super::upstream::start_url(rt, id, token, Some(username))?;
    Some(see_other(&url))
}

/// A password refused: counted in a known user's risk history, audited when wrong, and
/// what the login page says (the pause it began, the tries left).
async fn wrong_password<'a>(
    st: &Shared,
    rt: &Here,
    e: AuthError,
    typed: &'a str,
    from: Arrival<'_>,
) -> Attempted<'a> {
    let username = typed.trim();
    // An outage on our side is not the user's failed attempt.
    let ours = matches!(e, AuthError::Store(_) | AuthError::Internal(_));
    let mut known = None;
    if !ours {
        if let Ok(Some(u)) = st.stores.durable.get_user_by_username(username).await {
            failed(st, rt, &u, from.ip, from.headers).await;
            known = Some(u);
        }
    }
    let failure = Failure::SIGN_IN_PASSWORD;
    super::audit_failure(st, rt, known.as_ref(), from.ip, failure, &e).await;
    // Counted alike for every name typed, known or not (see `attempts_left`).
    let note = super::attempts_note(st, rt, &e, known.as_ref(), username, false).await;
    let e = match super::paused_by(st, &e, known.as_ref(), username).await {
        Some(pause) => pause,
        None => e,
    };
    let status = match e {
        AuthError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
        // Not the user's fault (a store down, a secret that does not open): a 401
        // would tell them, and any monitor, that the password was wrong.
        AuthError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNAUTHORIZED,
    };
    let paused = super::Paused::of(&e);
    let msg = match (&e, &paused) {
        (_, Some(p)) => p.message.clone(),
        (AuthError::InvalidCredentials, _) => crate::i18n::t("login-wrong"),
        (other, _) => auth_message(other),
    };
    Attempted {
        error: note.map_or(msg.clone(), |note| format!("{msg} {note}")),
        username: typed,
        status,
        paused,
    }
}

/// Where a sign-in or factor step leads.
pub enum Next {
    /// Set this session cookie (if any) and go there.
    Go {
        /// Where.
        url: String,
        /// The (new) session, and whether its cookie is persistent.
        session: Option<(Session, bool)>,
        /// A new device cookie for a browser seen for the first time.
        device_cookie: Option<Box<Cookie<'static>>>,
    },
    /// An error.
    Fail(PortalError),
}

impl Next {
    /// The answer: a redirect (or, for the passkey script, `{"redirect": …}`) setting the
    /// cookies.
    pub fn respond(self, rt: &Here, jar: CookieJar, json: bool) -> Response {
        let (url, session, device_cookie) = match self {
            Next::Fail(e) => return e.into_response(),
            Next::Go {
                url,
                session,
                device_cookie,
            } => (url, session, device_cookie),
        };
        let mut jar = jar;
        if let Some(c) = device_cookie {
            jar = jar.set(*c);
        }
        if let Some((s, persistent)) = session {
            let age =
                persistent.then(|| limits(&rt.config.sessions, s.data.aal(&rt.config.assurance)).0);
            jar = jar.set(session_cookie(&rt.config.sessions, s.id, age));
        }
        if json {
            (jar, Json(serde_json::json!({ "redirect": url }))).into_response()
        } else {
            (jar, see_other(&url)).into_response()
        }
    }
}

/// After the first factor: the sign-in decided through the access pipeline, then finished,
/// continued on the step-up page (a pending session), or blocked.
pub async fn sign_in(st: &Shared, rt: &Here, jar: &CookieJar, a: FirstFactor<'_>) -> Next {
    let now = Utc::now();
    let id = RequestId::current();
    let req = AccessRequest {
        id,
        kind: RequestKind::SignIn,
        app: None,
        method: &Method::POST,
        path: "/",
        headers: a.headers,
        ip: a.ip,
        credentials: Credentials::FirstFactor {
            user: &a.user,
            factor: &a.factor,
            also: &a.also,
            cookies: jar,
        },
        connection: a.connection,
        now,
    };
    // Sign-ins are few: the decision is explained, so the audit row carries its risk.
    let (judged, explained) = st.access.explain(rt, &req).await;
    let risk = explained.map(|e| e.context.risk);
    let policy = judged.decision.and_then(|d| d.policy);
    let target = a
        .target
        .clone()
        .unwrap_or_else(|| rt.portal_url("/account"));
    let detail = serde_json::json!({ "policy": policy, "risk": risk, "request_id": id.as_str() });
    let old = jar.get(&rt.session_cookie);
    match judged.verdict {
        Verdict::Unavailable(e) => Next::Fail(PortalError::StoreDown(e)),
        Verdict::SignIn(_) => Next::Fail(PortalError::SignedOut {
            portal: rt.portal().to_string(),
        }),
        Verdict::Deny(d) => blocked(st, rt, &a, *d, target, detail, id).await,
        Verdict::StepUp(s) => more_to_pass(st, rt, &a, *s, target, old, id).await,
        Verdict::Allow(grant) => {
            let data = new_session(&a, grant.session, rt);
            let session = match st.sessions.rotate(rt, old, data, now).await {
                Ok(s) => s,
                Err(e) => return Next::Fail(e.into()),
            };
            let done = Done {
                user: &a.user,
                session,
                target,
                detail,
            };
            completed(st, rt, jar, done, now).await
        }
    }
}

/// A sign-in the policy refuses: audited, counted as a failure in the risk history (it must
/// not make its location or device look familiar), and the blocked page.
async fn blocked(
    st: &Shared,
    rt: &Here,
    a: &FirstFactor<'_>,
    d: crate::access::verdict::Deny,
    target: String,
    detail: serde_json::Value,
    id: RequestId,
) -> Next {
    let blocked = BlockedToken {
        rt: target,
        message: d.message,
        items: d.remediation,
        policy: d.policy,
        rid: id.to_string(),
    };
    let token = Links::new(&st.signer, rt).sign_blocked(&blocked, Utc::now());
    audit(st, "signin.denied", &a.user.username, a.ip, detail).await;
    failed(st, rt, &a.user, a.ip, a.headers).await;
    Next::Go {
        url: rt.portal_url(&format!("/blocked?t={token}")),
        session: None,
        device_cookie: None,
    }
}

/// A sign-in the policy asks more of: a pending session, and the step-up page.
async fn more_to_pass(
    st: &Shared,
    rt: &Here,
    a: &FirstFactor<'_>,
    s: crate::access::verdict::StepUp,
    target: String,
    old: Option<&str>,
    id: RequestId,
) -> Next {
    let now = Utc::now();
    let Some(prospective) = s.session else {
        return Next::Fail(PortalError::BadRequest);
    };
    let mut data = new_session(a, prospective, rt);
    data.pending = true;
    let persistent = data.persistent;
    let session = match st.sessions.rotate(rt, old, data, now).await {
        Ok(s) => s,
        Err(e) => return Next::Fail(e.into()),
    };
    let step = StepToken {
        rt: target,
        back: None,
        req: s.requirement,
        why: s.why,
        sign_in: true,
        user_id: a.user.id.clone(),
        rid: id.to_string(),
    };
    let token = Links::new(&st.signer, rt).sign_step(&step, now);
    Next::Go {
        url: rt.portal_url(&format!("/step-up?t={token}")),
        session: Some((session, persistent)),
        device_cookie: None,
    }
}

/// The session a first factor starts: the pipeline's would-be session (with the device it
/// bound), and where and what it signed in from.
fn new_session(a: &FirstFactor<'_>, prospective: Session, rt: &Here) -> SessionData {
    let mut data = std::sync::Arc::unwrap_or_clone(prospective.data);
    data.ip = a.ip.map(|ip| ip.to_string());
    data.user_agent = a
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect());
    data.persistent = a.remember && rt.config.sessions.remember_me;
    data.upstream = a.upstream.clone();
    data
}

/// A completed sign-in: who, its session (stored under its new id), where it goes back
/// to, and what the audit row says of the decision.
pub struct Done<'a> {
    /// The user.
    pub user: &'a UserRecord,
    /// The session.
    pub session: Session,
    /// Where to go.
    pub target: String,
    /// The audit row's detail.
    pub detail: serde_json::Value,
}

/// A sign-in complete: audited, recorded in the risk history, the session indexed under its
/// device, a device cookie for a new browser when `devices.auto_register` says so, and
/// back to the target.
pub async fn completed(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
    done: Done<'_>,
    now: DateTime<Utc>,
) -> Next {
    let Done {
        user,
        session,
        target,
        detail,
    } = done;
    let ip = session.data.ip.as_deref().and_then(|s| s.parse().ok());
    audit(st, "signin.success", &user.username, ip, detail).await;
    let record = SignInRecord {
        user_id: &user.id,
        ip,
        user_agent: session.data.user_agent.as_deref(),
        device_id: session.data.device_id.as_deref(),
        outcome: SignInOutcome::Success,
        now,
    };
    st.signals
        .record_sign_in(st.stores.hot.as_ref(), rt, record)
        .await;
    if let Some(d) = &session.data.device_id {
        st.devices.index_session(d, &session.id).await;
    }
    let persistent = session.data.persistent;
    let issued = match crate::devices::Registry::registers_on_sign_in(rt, &session) {
        true => st.devices.issue_cookie(rt, jar, user, now).await,
        false => None,
    };
    let device = session.data.device_id.as_deref();
    remember_mfa(
        st,
        rt,
        &session,
        device.or(issued.as_ref().map(|(id, _)| id.as_str())),
    )
    .await;
    Next::Go {
        url: target,
        session: Some((session, persistent)),
        device_cookie: issued.map(|(_, c)| Box::new(c)),
    }
}

/// After a multi-factor sign-in on a known device, when some sign-in policy has an
/// `mfa_frequency`: the device remembers the user's MFA ([`stepgate_authn::mfa_memory`]).
/// Logged, never fatal: without it the next sign-in asks for MFA again.
async fn remember_mfa(st: &Shared, rt: &Here, session: &Session, device: Option<&str>) {
    let (Some(keep), Some(device)) = (rt.config.policy_set.mfa_memory(), device) else {
        return;
    };
    if session.data.aal(&rt.config.assurance) < 2 {
        return;
    }
    let hot = st.stores.hot.as_ref();
    let d = &session.data;
    if let Err(e) =
        stepgate_authn::mfa_memory::remember(hot, &d.user_id, device, &d.factors, keep.0).await
    {
        tracing::error!(error = %e, "MFA not remembered for the device");
    }
}

/// Records a failed sign-in of `user` in their risk history.
async fn failed(
    st: &Shared,
    rt: &Here,
    user: &UserRecord,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
) {
    let record = SignInRecord {
        user_id: &user.id,
        ip,
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()),
        device_id: None,
        outcome: SignInOutcome::Failure,
        now: Utc::now(),
    };
    st.signals
        .record_sign_in(st.stores.hot.as_ref(), rt, record)
        .await;
}
