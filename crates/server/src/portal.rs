//! The login portal: sign-in (password or passkey, then whatever the sign-in policy asks),
//! step-up, the blocked page with re-check, self-service factor management and sessions.
//! Every form carries a CSRF token bound to the session (or, before sign-in, to a
//! pre-session cookie); every page is `no-store` with a strict CSP.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::Form;
use chrono::{DateTime, Utc};
use minijinja::context;
use serde::{Deserialize, Serialize};
use stepgate_authn::service::{AuthError, Authenticator, EnrolledInfo};
use stepgate_authn::webauthn::RegistrationKind;
use stepgate_authn::{satisfies, FactorKind, PassedFactor};
use stepgate_policy::{Outcome, RequestKind};
use stepgate_store::UserRecord;

use crate::context::client_ip;
use crate::demo;
use crate::gateway::gather;
use crate::security::random_id;
use crate::session::{self, Session, SessionData};
use crate::state::Shared;
use crate::web::{self, factor_title, CookieJar, Peer, StepToken, PRE_COOKIE};
use stepgate_policy::{HumanDuration, MaxAge, StepUpRequirement};

type Rt = web::Here;

fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The CSRF binding for forms: the session id, or the pre-session cookie before sign-in.
fn binding(jar: &CookieJar, session: Option<&Session>) -> Option<String> {
    match session {
        Some(s) => Some(s.id.clone()),
        None => jar.get(PRE_COOKIE).map(str::to_string),
    }
}

fn csrf_ok(st: &Shared, jar: &CookieJar, session: Option<&Session>, submitted: &str) -> bool {
    binding(jar, session).is_some_and(|b| {
        st.signer.csrf_token(&b).len() == submitted.len() && st.signer.csrf_ok(&b, submitted)
    })
}

fn csrf_refused(st: &Shared, rt: &Rt) -> Response {
    st.pages.render(
        StatusCode::FORBIDDEN,
        "message.html",
        context! { portal => rt.portal(), title => "Form expired", message => "This form expired or did not come from stepgate. Go back, reload the page and try again.", link => rt.portal_url("/account"), link_text => "Continue" },
    )
}

fn ip_of(rt: &Rt, peer: &Peer, headers: &HeaderMap) -> Option<std::net::IpAddr> {
    client_ip(rt, peer.0, headers)
}

async fn live_session(st: &Shared, rt: &Rt, jar: &CookieJar) -> Result<Option<Session>, Response> {
    if jar.repeated(&rt.session_cookie) {
        return Err(st.pages.render(
            StatusCode::BAD_REQUEST,
            "message.html",
            context! { portal => rt.portal(), title => "Cookie problem", message => web::RepeatedSessionCookie.to_string() },
        ));
    }
    web::current_session(st, rt, jar, now()).await.map_err(|e| {
        tracing::error!(error = %e, "session store unavailable");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stepgate cannot reach its session store; try again shortly",
        )
            .into_response()
    })
}

async fn user_of(st: &Shared, s: &Session) -> Option<UserRecord> {
    st.stores
        .durable
        .get_user(&s.data.user_id)
        .await
        .ok()
        .flatten()
        .filter(|u| !u.disabled)
}

// ---------------------------------------------------------------------------------------
// Sign-in

#[derive(Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    t: String,
}

pub async fn login_page(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Query(q): Query<LoginQuery>,
) -> Response {
    render_login(&st, &rt, jar, &q.t, None, "", StatusCode::OK)
}

fn render_login(
    st: &Shared,
    rt: &Rt,
    jar: CookieJar,
    token: &str,
    error: Option<String>,
    username: &str,
    status: StatusCode,
) -> Response {
    let (jar, pre) = match jar.get(PRE_COOKIE) {
        Some(c) => (jar.clone(), c.to_string()),
        None => {
            let v = random_id();
            (
                jar.set(web::plain_cookie(
                    PRE_COOKIE,
                    v.clone(),
                    rt.config.sessions.cookie.secure,
                )),
                v,
            )
        }
    };
    let target = web::verify_return(st, rt, token, now());
    let app_name = target
        .as_deref()
        .and_then(|t| url::Url::parse(t).ok())
        .and_then(|u| {
            u.host_str()
                .and_then(|h| rt.app_for_host(h))
                .map(|a| a.name.clone().unwrap_or_else(|| a.id.to_string()))
        });
    let page = st.pages.render(
        status,
        "login.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&pre), token => token, error => error,
            app_name => app_name, username_value => username, remember_me => rt.config.sessions.remember_me,
        },
    );
    (jar, page).into_response()
}

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

pub async fn login_submit(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<LoginForm>,
) -> Response {
    if !csrf_ok(&st, &jar, None, &f.csrf) {
        return csrf_refused(&st, &rt);
    }
    let ip = ip_of(&rt, &peer, &headers);
    match st
        .authn
        .verify_password(f.username.trim(), &f.password, ip)
        .await
    {
        Ok((user, passed)) => {
            let target = web::verify_return(&st, &rt, &f.t, now());
            let next = sign_in(
                &st,
                &rt,
                &headers,
                ip,
                &jar,
                user,
                passed,
                target,
                f.remember.is_some(),
            )
            .await;
            next.into_response_for(&st, &rt, jar, false)
        }
        Err(e) => {
            if let Ok(Some(u)) = st
                .stores
                .durable
                .get_user_by_username(f.username.trim())
                .await
            {
                crate::signals::record_sign_in(
                    &st,
                    &rt,
                    &u.id,
                    ip,
                    headers.get("user-agent").and_then(|v| v.to_str().ok()),
                    None,
                    stepgate_signals::risk::SignInOutcome::Failure,
                    now(),
                )
                .await;
            }
            let status = if matches!(e, AuthError::Locked { .. }) {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::UNAUTHORIZED
            };
            let msg = match e {
                AuthError::InvalidCredentials => "Wrong username or password.".to_string(),
                other => web::auth_message(&other),
            };
            render_login(&st, &rt, jar, &f.t, Some(msg), &f.username, status)
        }
    }
}

/// Where a sign-in or factor step leads.
enum Next {
    /// Set this session cookie (if any) and go there.
    Go {
        url: String,
        session: Option<(Session, bool)>,
        /// A new device cookie for a browser seen for the first time.
        device_cookie: Option<Box<axum_extra::extract::cookie::Cookie<'static>>>,
    },
    /// An error page.
    Page(Response),
}

impl Next {
    fn into_response_for(self, st: &Shared, rt: &Rt, jar: CookieJar, json: bool) -> Response {
        match self {
            Next::Page(r) => r,
            Next::Go {
                url,
                session,
                device_cookie,
            } => {
                let jar = match device_cookie {
                    Some(c) => jar.set(*c),
                    None => jar,
                };
                let jar = match session {
                    Some((s, persistent)) => {
                        let age = persistent.then(|| {
                            session::limits(&rt.config.sessions, s.data.aal(&rt.config.assurance)).0
                        });
                        jar.set(web::session_cookie(&rt.config.sessions, s.id, age))
                    }
                    None => jar,
                };
                let _ = st;
                if json {
                    (jar, Json(serde_json::json!({ "redirect": url }))).into_response()
                } else {
                    (jar, web::see_other(&url)).into_response()
                }
            }
        }
    }
}

/// After the first factor: evaluate the sign-in policy and either finish, ask for more, or block.
#[allow(clippy::too_many_arguments)]
async fn sign_in(
    st: &Shared,
    rt: &Rt,
    headers: &HeaderMap,
    ip: Option<std::net::IpAddr>,
    jar: &CookieJar,
    user: UserRecord,
    first: PassedFactor,
    target: Option<String>,
    remember: bool,
) -> Next {
    let t = now();
    let home = rt.portal_url("/account");
    let target = target.unwrap_or(home);
    let evidence = crate::signals::DeviceEvidence {
        certificates: None,
        passkey_factors: first
            .factor_id
            .clone()
            .filter(|_| first.kind == FactorKind::Webauthn)
            .into_iter()
            .collect(),
    };
    let ctx = match gather(
        st,
        rt,
        RequestKind::SignIn,
        None,
        (
            &axum::http::Method::POST,
            &"/".parse().unwrap_or_default(),
            headers,
        ),
        ip,
        jar,
        Some(&user),
        &evidence,
        t,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "signals unavailable during sign-in: refusing");
            return Next::Page(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stepgate cannot verify this sign-in right now; try again shortly",
                )
                    .into_response(),
            );
        }
    };
    let decision = rt.config.policy_set.decide(&ctx);
    let device_id = ctx.device.as_ref().and_then(|d| d.id.clone());
    let record = |outcome| {
        crate::signals::record_sign_in(
            st,
            rt,
            &user.id,
            ip,
            headers.get("user-agent").and_then(|v| v.to_str().ok()),
            device_id.as_deref(),
            outcome,
            t,
        )
    };
    let mut data = SessionData::new(&user.id, &user.username, first, t);
    data.device_id = device_id.clone();
    data.ip = ip.map(|ip| ip.to_string());
    data.user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect());
    data.persistent = remember && rt.config.sessions.remember_me;
    let old = jar.get(&rt.session_cookie).map(str::to_string);
    let requirement = match decision.outcome {
        Outcome::Deny(d) => {
            let items = rt.config.policy_set.remediation(&decision, &ctx);
            let token = web::sign_blocked(
                st,
                rt,
                &web::BlockedToken {
                    rt: target,
                    message: d
                        .message
                        .clone()
                        .unwrap_or_else(|| "Signing in is blocked.".into()),
                    items,
                    policy: decision.policy.unwrap_or("default").into(),
                },
                t,
            );
            audit(
                st,
                "signin.denied",
                &user.username,
                ip,
                serde_json::json!({ "policy": decision.policy, "risk": ctx.risk }),
            )
            .await;
            // A refused sign-in must not make its location or device look familiar.
            record(stepgate_signals::risk::SignInOutcome::Failure).await;
            return Next::Go {
                url: rt.portal_url(&format!("/blocked?t={token}")),
                session: None,
                device_cookie: None,
            };
        }
        Outcome::Allow => None,
        Outcome::StepUp(r) => Some((r.clone(), r.message.clone())),
    };
    if let Some((req, why)) = &requirement {
        let sat = satisfies(&data.auth_state(), req, &rt.config.assurance, &[], t);
        if !sat.satisfied {
            data.pending = true;
            let s = match session::save_new(
                st.stores.hot.as_ref(),
                &st.signer,
                old.as_deref(),
                data,
                &rt.config.sessions,
                &rt.config.assurance,
                t,
            )
            .await
            {
                Ok(s) => s,
                Err(e) => return Next::Page(store_down(&e)),
            };
            let token = web::sign_step(
                st,
                rt,
                &StepToken {
                    rt: target,
                    back: None,
                    req: req.clone(),
                    why: why.clone().unwrap_or_else(|| {
                        format!("Signing in from here needs {}.", req.describe())
                    }),
                    sign_in: true,
                    user_id: user.id.clone(),
                },
                t,
            );
            let persistent = s.data.persistent;
            return Next::Go {
                url: rt.portal_url(&format!("/step-up?t={token}")),
                session: Some((s, persistent)),
                device_cookie: None,
            };
        }
    }
    match session::save_new(
        st.stores.hot.as_ref(),
        &st.signer,
        old.as_deref(),
        data,
        &rt.config.sessions,
        &rt.config.assurance,
        t,
    )
    .await
    {
        Ok(s) => {
            audit(
                st,
                "signin.success",
                &user.username,
                ip,
                serde_json::json!({ "policy": decision.policy, "risk": ctx.risk }),
            )
            .await;
            record(stepgate_signals::risk::SignInOutcome::Success).await;
            if let Some(d) = &s.data.device_id {
                crate::signals::index_device_session(st, d, &s.id).await;
            }
            let persistent = s.data.persistent;
            let device_cookie = crate::signals::issue_device_cookie(st, rt, jar, &user, t)
                .await
                .map(Box::new);
            Next::Go {
                url: target,
                session: Some((s, persistent)),
                device_cookie,
            }
        }
        Err(e) => Next::Page(store_down(&e)),
    }
}

fn store_down(e: &stepgate_store::StoreError) -> Response {
    tracing::error!(error = %e, "store unavailable during sign-in");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "stepgate cannot reach its store; try again shortly",
    )
        .into_response()
}

async fn audit(
    st: &Shared,
    kind: &str,
    actor: &str,
    ip: Option<std::net::IpAddr>,
    detail: serde_json::Value,
) {
    let mut e = stepgate_store::NewAuditEvent::now(kind);
    e.actor = Some(actor.to_string());
    e.ip = ip.map(|ip| ip.to_string());
    e.detail = detail;
    if let Err(err) = st.stores.durable.append_audit(&e).await {
        tracing::error!(error = %err, kind, "audit append failed");
    }
}

// ---------------------------------------------------------------------------------------
// Step-up (also the second half of a sign-in)

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    t: String,
}

#[derive(Serialize)]
struct Offer {
    kind: &'static str,
    title: &'static str,
    questions: Vec<String>,
    asked: String,
}

async fn offers(
    st: &Shared,
    rt: &Rt,
    user: &UserRecord,
    session: &Session,
    req: &StepUpRequirement,
) -> (Vec<Offer>, bool) {
    let t = now();
    let enrolled = st.authn.enrolled(user).await.unwrap_or_default();
    let for_step = Authenticator::enrolled_for_step_up(&enrolled);
    let sat = satisfies(
        &session.data.auth_state(),
        req,
        &rt.config.assurance,
        &for_step,
        t,
    );
    let mut kinds: Vec<FactorKind> = Vec::new();
    for set in &sat.candidates {
        for k in set {
            // The password was just given for this sign-in: never ask for it twice.
            let password_again = *k == FactorKind::Password
                && session
                    .data
                    .factors
                    .iter()
                    .any(|f| f.kind == FactorKind::Password);
            let skip = kinds.contains(k) || (session.data.pending && password_again);
            if !skip {
                kinds.push(*k);
            }
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(matches!(k, FactorKind::Webauthn)));
    let mut out = Vec::new();
    for k in kinds {
        let mut o = Offer {
            kind: k.as_str(),
            title: factor_title(k.as_str()),
            questions: Vec::new(),
            asked: String::new(),
        };
        if k == FactorKind::SecurityQuestions {
            if let Ok(qs) = st.authn.questions_challenge(user).await {
                let idx: Vec<String> = qs.iter().map(|(i, _)| i.to_string()).collect();
                o.asked = st.signer.sign("asked", &idx.join(","), t.timestamp() + 600);
                o.questions = qs.into_iter().map(|(_, q)| q).collect();
            }
        }
        out.push(o);
    }
    let can_enrol = !session.data.pending;
    (out, can_enrol)
}

async fn render_step_up(
    st: &Shared,
    rt: &Rt,
    session: &Session,
    user: &UserRecord,
    token: &str,
    tok: &StepToken,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Response {
    let (offers, can_enrol) = offers(st, rt, user, session, &tok.req).await;
    st.pages.render(
        status,
        "step_up.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => (!session.data.pending).then_some(&user.username),
            reason => tok.why, token => token, offers => offers, error => error, notice => notice, sign_in => tok.sign_in, can_enrol => can_enrol,
        },
    )
}

/// Loads the session, user and token a step-up form or page refers to.
async fn step_context(
    st: &Shared,
    rt: &Rt,
    jar: &CookieJar,
    token: &str,
) -> Result<(Session, UserRecord, StepToken), Response> {
    let session = live_session(st, rt, jar).await?;
    let Some(session) = session else {
        return Err(st.pages.render(
            StatusCode::UNAUTHORIZED,
            "message.html",
            context! { portal => rt.portal(), title => "Signed out", message => "Your session ended. Sign in again.", link => rt.portal_url("/login"), link_text => "Sign in" },
        ));
    };
    let Some(tok) =
        web::verify_step(st, rt, token, now()).filter(|t| t.user_id == session.data.user_id)
    else {
        return Err(st.pages.render(
            StatusCode::BAD_REQUEST,
            "message.html",
            context! { portal => rt.portal(), title => "Link expired", message => "This step-up link is invalid or has expired. Go back to the application and try again.", username => session.data.username },
        ));
    };
    let Some(user) = user_of(st, &session).await else {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    };
    Ok((session, user, tok))
}

pub async fn step_up_page(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Query(q): Query<TokenQuery>,
) -> Response {
    match step_context(&st, &rt, &jar, &q.t).await {
        Ok((s, u, tok)) => {
            render_step_up(&st, &rt, &s, &u, &q.t, &tok, None, None, StatusCode::OK).await
        }
        Err(r) => r,
    }
}

/// A factor was passed: record it, rotate the session id, and continue if the requirement
/// is now met.
async fn factor_passed(
    st: &Shared,
    rt: &Rt,
    jar: CookieJar,
    mut session: Session,
    user: &UserRecord,
    token: &str,
    tok: StepToken,
    passed: PassedFactor,
    json: bool,
) -> Response {
    let t = now();
    std::sync::Arc::make_mut(&mut session.data).add_factor(passed);
    let sat = satisfies(
        &session.data.auth_state(),
        &tok.req,
        &rt.config.assurance,
        &[],
        t,
    );
    if sat.satisfied {
        let data = std::sync::Arc::make_mut(&mut session.data);
        data.pending = false;
        data.needs_step_up = false;
    }
    let old = session.id.clone();
    let new = match session::save_new(
        st.stores.hot.as_ref(),
        &st.signer,
        Some(&old),
        std::sync::Arc::unwrap_or_clone(session.data),
        &rt.config.sessions,
        &rt.config.assurance,
        t,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return store_down(&e),
    };
    let persistent = new.data.persistent;
    if sat.satisfied {
        let kind = if tok.sign_in {
            "signin.success"
        } else {
            "stepup.success"
        };
        // The address the sign-in came from (unknown when it could not be read).
        let ip = new.data.ip.as_deref().and_then(|s| s.parse().ok());
        audit(
            st,
            kind,
            &user.username,
            ip,
            serde_json::json!({ "aal": sat.assurance.aal }),
        )
        .await;
        if tok.sign_in {
            crate::signals::record_sign_in(
                st,
                rt,
                &user.id,
                ip,
                new.data.user_agent.as_deref(),
                new.data.device_id.as_deref(),
                stepgate_signals::risk::SignInOutcome::Success,
                t,
            )
            .await;
        }
        if let Some(d) = &new.data.device_id {
            crate::signals::index_device_session(st, d, &new.id).await;
        }
        let url = tok.back.clone().unwrap_or(tok.rt.clone());
        let device_cookie = if tok.sign_in {
            crate::signals::issue_device_cookie(st, rt, &jar, user, t)
                .await
                .map(Box::new)
        } else {
            None
        };
        return Next::Go {
            url,
            session: Some((new, persistent)),
            device_cookie,
        }
        .into_response_for(st, rt, jar, json);
    }
    // More is needed: show the page again under the new session id.
    let jar = jar.set(web::session_cookie(
        &rt.config.sessions,
        new.id.clone(),
        None,
    ));
    if json {
        let url = rt.portal_url(&format!("/step-up?t={}", token));
        return (jar, Json(serde_json::json!({ "redirect": url }))).into_response();
    }
    let page = render_step_up(
        st,
        rt,
        &new,
        user,
        token,
        &tok,
        None,
        Some("Done. One more step is needed.".into()),
        StatusCode::OK,
    )
    .await;
    (jar, page).into_response()
}

async fn factor_failed(
    st: &Shared,
    rt: &Rt,
    session: &Session,
    user: &UserRecord,
    token: &str,
    tok: &StepToken,
    e: AuthError,
) -> Response {
    let status = match e {
        AuthError::Locked { .. }
        | AuthError::AccountLocked
        | AuthError::RateLimited(_)
        | AuthError::TooManyGuesses => StatusCode::TOO_MANY_REQUESTS,
        AuthError::Internal(_) | AuthError::Store(_) | AuthError::Delivery(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::UNAUTHORIZED,
    };
    render_step_up(
        st,
        rt,
        session,
        user,
        token,
        tok,
        Some(web::auth_message(&e)),
        None,
        status,
    )
    .await
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    t: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    asked: String,
    #[serde(default)]
    answer: Vec<String>,
}

fn kind_of(s: &str) -> Option<FactorKind> {
    FactorKind::ALL.into_iter().find(|k| k.as_str() == s)
}

/// The one-time-code kinds (e-mail, SMS) a form may name.
fn otp_kind(s: &str) -> Option<FactorKind> {
    kind_of(s).filter(|k| matches!(k, FactorKind::EmailOtp | FactorKind::SmsOtp))
}

macro_rules! step_form {
    ($st:ident, $rt:ident, $jar:ident, $f:ident) => {{
        let (session, user, tok) = match step_context(&$st, &$rt, &$jar, &$f.t).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        if !csrf_ok(&$st, &$jar, Some(&session), &$f.csrf) {
            return csrf_refused(&$st, &$rt);
        }
        (session, user, tok)
    }};
}

pub async fn step_up_totp(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<CodeForm>,
) -> Response {
    let (session, user, tok) = step_form!(st, rt, jar, f);
    match st
        .authn
        .verify_totp(&user, &f.code, ip_of(&rt, &peer, &headers))
        .await
    {
        Ok(p) => factor_passed(&st, &rt, jar, session, &user, &f.t, tok, p, false).await,
        Err(e) => factor_failed(&st, &rt, &session, &user, &f.t, &tok, e).await,
    }
}

pub async fn step_up_password(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<CodeForm>,
) -> Response {
    let (session, user, tok) = step_form!(st, rt, jar, f);
    match st
        .authn
        .verify_password(&user.username, &f.password, ip_of(&rt, &peer, &headers))
        .await
    {
        Ok((_, p)) => factor_passed(&st, &rt, jar, session, &user, &f.t, tok, p, false).await,
        Err(e) => factor_failed(&st, &rt, &session, &user, &f.t, &tok, e).await,
    }
}

pub async fn step_up_send(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<CodeForm>,
) -> Response {
    let (session, user, tok) = step_form!(st, rt, jar, f);
    let Some(kind) = otp_kind(&f.kind) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match st.authn.send_otp(&user, kind).await {
        Ok(dest) => {
            render_step_up(
                &st,
                &rt,
                &session,
                &user,
                &f.t,
                &tok,
                None,
                Some(format!("We sent a code to {dest}.")),
                StatusCode::OK,
            )
            .await
        }
        Err(e) => factor_failed(&st, &rt, &session, &user, &f.t, &tok, e).await,
    }
}

pub async fn step_up_otp(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<CodeForm>,
) -> Response {
    let (session, user, tok) = step_form!(st, rt, jar, f);
    let Some(kind) = otp_kind(&f.kind) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match st
        .authn
        .verify_otp(&user, kind, &f.code, ip_of(&rt, &peer, &headers))
        .await
    {
        Ok(p) => factor_passed(&st, &rt, jar, session, &user, &f.t, tok, p, false).await,
        Err(e) => factor_failed(&st, &rt, &session, &user, &f.t, &tok, e).await,
    }
}

pub async fn step_up_recovery(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<CodeForm>,
) -> Response {
    let (session, user, tok) = step_form!(st, rt, jar, f);
    match st
        .authn
        .verify_recovery_code(&user, &f.code, ip_of(&rt, &peer, &headers))
        .await
    {
        Ok(p) => factor_passed(&st, &rt, jar, session, &user, &f.t, tok, p, false).await,
        Err(e) => factor_failed(&st, &rt, &session, &user, &f.t, &tok, e).await,
    }
}

pub async fn step_up_questions(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<CodeForm>,
) -> Response {
    let (session, user, tok) = step_form!(st, rt, jar, f);
    let Some(asked) = st.signer.verify("asked", &f.asked, now().timestamp()) else {
        return factor_failed(&st, &rt, &session, &user, &f.t, &tok, AuthError::Expired).await;
    };
    let asked: Vec<usize> = asked.split(',').filter_map(|s| s.parse().ok()).collect();
    match st
        .authn
        .verify_questions(&user, &asked, &f.answer, ip_of(&rt, &peer, &headers))
        .await
    {
        Ok(p) => factor_passed(&st, &rt, jar, session, &user, &f.t, tok, p, false).await,
        Err(e) => factor_failed(&st, &rt, &session, &user, &f.t, &tok, e).await,
    }
}

// ---------------------------------------------------------------------------------------
// Blocked and re-check

pub async fn blocked_page(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Query(q): Query<TokenQuery>,
) -> Response {
    let session = match live_session(&st, &rt, &jar).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(b) = web::verify_blocked(&st, &rt, &q.t, now()) else {
        return st.pages.render(StatusCode::BAD_REQUEST, "message.html", context! { portal => rt.portal(), title => "Link expired", message => "This page has expired." });
    };
    let (jar, pre) = match binding(&jar, session.as_ref()) {
        Some(b) => (jar, b),
        None => {
            let v = random_id();
            (
                jar.set(web::plain_cookie(
                    PRE_COOKIE,
                    v.clone(),
                    rt.config.sessions.cookie.secure,
                )),
                v,
            )
        }
    };
    let page = st.pages.render(
        StatusCode::FORBIDDEN,
        "blocked.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&pre), username => session.as_ref().map(|s| s.data.username.clone()),
            message => b.message, items => b.items, recheck => true, token => q.t, demo => st.options.demo, policy => b.policy,
        },
    );
    (jar, page).into_response()
}

#[derive(Deserialize)]
pub struct RecheckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    t: String,
}

/// "Re-check my device": fresh posture is gathered on the next request, so going back to
/// the target re-evaluates every policy with it.
pub async fn recheck(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<RecheckForm>,
) -> Response {
    let session = match live_session(&st, &rt, &jar).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_ok(&st, &jar, session.as_ref(), &f.csrf) {
        return csrf_refused(&st, &rt);
    }
    // Ask the UEM to re-check the device, and wait (bounded) for its fresh posture before
    // going back to the target, which re-evaluates every policy with it.
    if let (Some(client), Some(device_id)) = (
        st.signals.recheck.as_ref(),
        session.as_ref().and_then(|s| s.data.device_id.clone()),
    ) {
        let waiter = st.signals.hub.subscribe();
        let owner = session.as_ref().map(|s| s.data.username.clone());
        match client.request(&device_id, owner.as_deref(), now()).await {
            Ok(()) => {
                if !waiter.wait_for(&device_id, client.wait()).await {
                    tracing::info!(device = %device_id, "re-check: no fresh posture within the wait");
                }
            }
            Err(e) => tracing::warn!(device = %device_id, error = %e, "re-check webhook failed"),
        }
    }
    match web::verify_blocked(&st, &rt, &f.t, now()) {
        Some(b) if session.is_some() => web::see_other(&b.rt),
        // A blocked sign-in: start the sign-in again.
        Some(b) => {
            let t = web::sign_return(&st, &rt, &b.rt, now()).unwrap_or_default();
            web::see_other(&rt.portal_url(&format!("/login?t={t}")))
        }
        None => web::see_other(&rt.portal_url("/login")),
    }
}

// ---------------------------------------------------------------------------------------
// Self-service

#[derive(Deserialize, Default)]
pub struct AccountQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    pending: String,
}

#[derive(Serialize)]
struct FactorRow {
    id: String,
    kind: String,
    title: &'static str,
    label: String,
    strength: String,
    strong: bool,
    created: String,
    last_used: Option<String>,
    removable: bool,
}

fn strength(e: &EnrolledInfo) -> (String, bool) {
    let mut s = match e.aal_alone {
        0 => "does not count on its own".to_string(),
        n => format!("AAL{n} on its own"),
    };
    if e.phishing_resistant {
        s.push_str(" · phishing-resistant");
    }
    if e.hardware_bound {
        s.push_str(" · hardware-bound");
    }
    if e.kind == FactorKind::Password || e.kind == FactorKind::SecurityQuestions {
        s = format!("knowledge · {s}");
    }
    (s, e.phishing_resistant)
}

fn notice_for(done: &str) -> Option<&'static str> {
    Some(match done {
        "totp" => "Authenticator app added.",
        "webauthn" => "Passkey added.",
        "contact" => "Verified and added.",
        "questions" => "Security questions saved.",
        "removed" => "Factor removed.",
        "device" => "Demo device profile changed.",
        _ => return None,
    })
}

async fn require_session(
    st: &Shared,
    rt: &Rt,
    jar: &CookieJar,
    path: &str,
) -> Result<(Session, UserRecord), Response> {
    let s = live_session(st, rt, jar).await?;
    match s.filter(|s| !s.data.pending) {
        Some(s) => match user_of(st, &s).await {
            Some(u) => Ok((s, u)),
            None => Err(web::see_other(&rt.portal_url("/login"))),
        },
        None => {
            let t = web::sign_return(st, rt, &rt.portal_url(path), now()).unwrap_or_default();
            Err(web::see_other(&rt.portal_url(&format!("/login?t={t}"))))
        }
    }
}

pub async fn account_page(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Query(q): Query<AccountQuery>,
) -> Response {
    let (session, user) = match require_session(&st, &rt, &jar, "/account").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    render_account(
        &st,
        &rt,
        &jar,
        &session,
        &user,
        notice_for(&q.done).map(str::to_string),
        None,
        (!q.pending.is_empty()).then_some(q.pending),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn render_account(
    st: &Shared,
    rt: &Rt,
    jar: &CookieJar,
    session: &Session,
    user: &UserRecord,
    notice: Option<String>,
    error: Option<String>,
    pending_contact: Option<String>,
) -> Response {
    let enrolled = st.authn.enrolled(user).await.unwrap_or_default();
    let rows: Vec<FactorRow> = enrolled
        .iter()
        .map(|e| {
            let (s, strong) = strength(e);
            FactorRow {
                id: e.id.clone(),
                kind: e.kind.as_str().to_string(),
                title: factor_title(e.kind.as_str()),
                label: e.label.clone(),
                strength: s,
                strong,
                created: e.created_at.format("%Y-%m-%d").to_string(),
                last_used: e
                    .last_used_at
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string()),
                removable: e.kind != FactorKind::Password,
            }
        })
        .collect();
    let f = &rt.config.factors;
    let enabled = context! {
        webauthn => f.webauthn.enabled, totp => f.totp.enabled, email_otp => f.email_otp.enabled, sms_otp => f.sms_otp.enabled,
        security_questions => f.security_questions.enabled, recovery_codes => f.recovery_codes.enabled,
    };
    let slots: Vec<usize> = (1..=f.security_questions.enrol.max(1)).collect();
    let profiles: Vec<_> = demo::PROFILES
        .iter()
        .map(|p| context! { id => p.id, title => p.title })
        .collect();
    let current = jar.get(demo::DEVICE_COOKIE).map(str::to_string);
    let aal = session.data.aal(&rt.config.assurance);
    st.pages.render(
        StatusCode::OK,
        "account.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => user.username, aal => aal,
            factors => rows, enabled => enabled, question_slots => slots, notice => notice, error => error,
            pending_contact => pending_contact, demo => st.options.demo, demo_profiles => profiles,
            demo_profile => demo::profile(current.as_deref()).id,
        },
    )
}

/// The account page again, with an authentication error in plain words.
async fn account_error(
    st: &Shared,
    rt: &Rt,
    jar: &CookieJar,
    session: &Session,
    user: &UserRecord,
    e: &AuthError,
) -> Response {
    render_account(
        st,
        rt,
        jar,
        session,
        user,
        None,
        Some(web::auth_message(e)),
        None,
    )
    .await
}

/// Changing factors needs a fresh step-up: AAL2 within 10 minutes once the user has a
/// second factor, a fresh password before that (to enrol the first one).
async fn fresh_enough(
    st: &Shared,
    rt: &Rt,
    session: &Session,
    user: &UserRecord,
    json: bool,
) -> Result<(), Response> {
    let enrolled = st.authn.enrolled(user).await.unwrap_or_default();
    let has_mfa = enrolled
        .iter()
        .any(|e| e.kind != FactorKind::Password && e.aal_alone > 0 || e.kind == FactorKind::Totp);
    let req = StepUpRequirement {
        min_aal: Some(if has_mfa { 2 } else { 1 }),
        max_age: Some(MaxAge::Within(HumanDuration::from_secs(600))),
        ..Default::default()
    };
    let t = now();
    if satisfies(
        &session.data.auth_state(),
        &req,
        &rt.config.assurance,
        &[],
        t,
    )
    .satisfied
    {
        return Ok(());
    }
    let token = web::sign_step(
        st,
        rt,
        &StepToken {
            rt: rt.portal_url("/account"),
            back: None,
            why: format!("Changing your sign-in factors needs {}.", req.describe()),
            req,
            sign_in: false,
            user_id: session.data.user_id.clone(),
        },
        t,
    );
    let url = rt.portal_url(&format!("/step-up?t={token}"));
    Err(if json {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "step_up_required", "redirect": url })),
        )
            .into_response()
    } else {
        web::see_other(&url)
    })
}

#[derive(Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    destination: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    question: Vec<String>,
    #[serde(default)]
    answer: Vec<String>,
    #[serde(default)]
    profile: String,
}

macro_rules! account_form {
    ($st:ident, $rt:ident, $jar:ident, $f:ident) => {{
        let (session, user) = match require_session(&$st, &$rt, &$jar, "/account").await {
            Ok(x) => x,
            Err(r) => return r,
        };
        if !csrf_ok(&$st, &$jar, Some(&session), &$f.csrf) {
            return csrf_refused(&$st, &$rt);
        }
        if let Err(r) = fresh_enough(&$st, &$rt, &session, &user, false).await {
            return r;
        }
        (session, user)
    }};
}

pub async fn totp_start(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = account_form!(st, rt, jar, f);
    match st.authn.enrol_totp_start(&user).await {
        Ok(p) => st.pages.render(
            StatusCode::OK,
            "enrol_totp.html",
            context! { portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => user.username, qr_svg => p.qr_svg, secret => p.seed_base32, token => p.token },
        ),
        Err(e) => account_error(&st, &rt, &jar, &session, &user, &e).await,
    }
}

pub async fn totp_confirm(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = account_form!(st, rt, jar, f);
    match st.authn.enrol_totp_confirm(&user, &f.token, &f.code).await {
        Ok(_) => web::see_other(&rt.portal_url("/account?done=totp")),
        Err(e) => {
            render_account(
                &st,
                &rt,
                &jar,
                &session,
                &user,
                None,
                Some(format!(
                    "The authenticator app was not added: {}",
                    web::auth_message(&e)
                )),
                None,
            )
            .await
        }
    }
}

pub async fn contact_start(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = account_form!(st, rt, jar, f);
    let Some(kind) = otp_kind(&f.kind) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match st
        .authn
        .enrol_contact_start(&user, kind, f.destination.trim())
        .await
    {
        Ok(()) => web::see_other(&rt.portal_url(&format!("/account?pending={}", kind.as_str()))),
        Err(e) => account_error(&st, &rt, &jar, &session, &user, &e).await,
    }
}

pub async fn contact_confirm(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = account_form!(st, rt, jar, f);
    let Some(kind) = otp_kind(&f.kind) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match st.authn.enrol_contact_confirm(&user, kind, &f.code).await {
        Ok(_) => web::see_other(&rt.portal_url("/account?done=contact")),
        Err(e) => {
            render_account(
                &st,
                &rt,
                &jar,
                &session,
                &user,
                None,
                Some(web::auth_message(&e)),
                Some(kind.as_str().to_string()),
            )
            .await
        }
    }
}

pub async fn questions(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = account_form!(st, rt, jar, f);
    let pairs: Vec<(String, String)> = f.question.into_iter().zip(f.answer).collect();
    match st.authn.enrol_questions(&user, &pairs).await {
        Ok(_) => web::see_other(&rt.portal_url("/account?done=questions")),
        Err(e) => account_error(&st, &rt, &jar, &session, &user, &e).await,
    }
}

pub async fn recovery(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = account_form!(st, rt, jar, f);
    match st.authn.regenerate_recovery_codes(&user).await {
        Ok(codes) => st.pages.render(StatusCode::OK, "recovery_codes.html", context! { portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => user.username, codes => codes }),
        Err(e) => account_error(&st, &rt, &jar, &session, &user, &e).await,
    }
}

pub async fn remove(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = account_form!(st, rt, jar, f);
    match st.authn.remove_factor(&user, &f.id).await {
        Ok(()) => web::see_other(&rt.portal_url("/account?done=removed")),
        Err(e) => account_error(&st, &rt, &jar, &session, &user, &e).await,
    }
}

pub async fn demo_device(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    if !st.options.demo {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (session, _user) = match require_session(&st, &rt, &jar, "/account").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !csrf_ok(&st, &jar, Some(&session), &f.csrf) {
        return csrf_refused(&st, &rt);
    }
    let p = demo::profile(Some(&f.profile));
    let jar = jar.set(web::plain_cookie(
        demo::DEVICE_COOKIE,
        p.id.to_string(),
        rt.config.sessions.cookie.secure,
    ));
    (jar, web::see_other(&rt.portal_url("/account?done=device"))).into_response()
}

// ---------------------------------------------------------------------------------------
// Sessions and sign-out

pub async fn sessions_page(State(st): State<Shared>, rt: Rt, jar: CookieJar) -> Response {
    let (session, user) = match require_session(&st, &rt, &jar, "/sessions").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ids = st
        .stores
        .hot
        .list_sessions_for_user(&user.id)
        .await
        .unwrap_or_default();
    let mut rows = Vec::new();
    for id in ids {
        let Ok(Some(e)) = st.stores.hot.get_session(&id).await else {
            continue;
        };
        let Ok(d) = serde_json::from_value::<SessionData>(e.data) else {
            continue;
        };
        if d.pending {
            continue;
        }
        let aal = d.aal(&rt.config.assurance);
        rows.push(context! {
            created => d.created_at.format("%Y-%m-%d %H:%M UTC").to_string(), ip => d.ip.unwrap_or_default(),
            user_agent => d.user_agent.unwrap_or_default(), aal => aal,
            current => id == session.id, handle => st.signer.session_handle(&id),
        });
    }
    st.pages.render(StatusCode::OK, "sessions.html", context! { portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => user.username, sessions => rows })
}

pub async fn end_session(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    let (session, user) = match require_session(&st, &rt, &jar, "/sessions").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !csrf_ok(&st, &jar, Some(&session), &f.csrf) {
        return csrf_refused(&st, &rt);
    }
    // The handle names one of the user's own sessions, or none: only those can be ended.
    let ids = match st.stores.hot.list_sessions_for_user(&user.id).await {
        Ok(ids) => ids,
        Err(e) => return store_down(&e),
    };
    if let Some(id) = ids.iter().find(|id| st.signer.session_handle_ok(id, &f.id)) {
        if let Err(e) = st.stores.hot.delete_session(id).await {
            return store_down(&e);
        }
    }
    web::see_other(&rt.portal_url("/sessions"))
}

pub async fn logout(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    sign_out(st, rt, jar, f, false).await
}

pub async fn logout_all(
    State(st): State<Shared>,
    rt: Rt,
    jar: CookieJar,
    Form(f): Form<AccountForm>,
) -> Response {
    sign_out(st, rt, jar, f, true).await
}

async fn sign_out(
    st: Shared,
    rt: Rt,
    jar: CookieJar,
    f: AccountForm,
    everywhere: bool,
) -> Response {
    let session = match live_session(&st, &rt, &jar).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Some(s) = &session {
        if !csrf_ok(&st, &jar, Some(s), &f.csrf) {
            return csrf_refused(&st, &rt);
        }
        if everywhere {
            let _ = st
                .stores
                .hot
                .delete_sessions_for_user(&s.data.user_id)
                .await;
        } else {
            let _ = st.stores.hot.delete_session(&s.id).await;
        }
    }
    let jar = jar.set(web::clear_session_cookie(&rt.config.sessions));
    let page = st.pages.render(
        StatusCode::OK,
        "message.html",
        context! { portal => rt.portal(), title => "Signed out", message => if everywhere { "You are signed out on every device." } else { "You are signed out." }, link => rt.portal_url("/login"), link_text => "Sign in again" },
    );
    (jar, page).into_response()
}

// ---------------------------------------------------------------------------------------
// WebAuthn (JSON; CSRF token in the `x-csrf-token` header)

#[derive(Deserialize)]
pub struct WebauthnBody {
    #[serde(default)]
    id: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    response: serde_json::Value,
}

fn header_csrf(headers: &HeaderMap) -> &str {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn json_err(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn keep_ceremony(st: &Shared, state: serde_json::Value) -> Result<String, Response> {
    let id = random_id();
    st.stores
        .hot
        .push_recent(
            &format!("webauthn:{id}"),
            &state,
            1,
            std::time::Duration::from_secs(300),
        )
        .await
        .map_err(|e| store_down(&e))?;
    Ok(id)
}

async fn take_ceremony(st: &Shared, id: &str) -> Result<serde_json::Value, Response> {
    if id.is_empty() || id.len() > 64 {
        return Err(json_err(StatusCode::BAD_REQUEST, "unknown ceremony"));
    }
    // Each ceremony state can be finished once.
    let first = st
        .stores
        .hot
        .remember_once(
            &format!("webauthn-used:{id}"),
            std::time::Duration::from_secs(600),
        )
        .await
        .map_err(|e| store_down(&e))?;
    let state = st
        .stores
        .hot
        .recent(&format!("webauthn:{id}"))
        .await
        .map_err(|e| store_down(&e))?
        .into_iter()
        .next();
    match (first, state) {
        (true, Some(s)) => Ok(s),
        _ => Err(json_err(
            StatusCode::BAD_REQUEST,
            "this passkey prompt expired; try again",
        )),
    }
}

pub async fn webauthn_login_start(
    State(st): State<Shared>,
    headers: HeaderMap,
    jar: CookieJar,
    // The body carries nothing this step needs; it must still be a JSON request.
    Json(_body): Json<WebauthnBody>,
) -> Response {
    if !csrf_ok(&st, &jar, None, header_csrf(&headers)) {
        return json_err(StatusCode::FORBIDDEN, "form expired; reload the page");
    }
    let resp = match st.authn.webauthn_auth_start(None).await {
        Ok((mut options, state)) => match keep_ceremony(&st, state).await {
            Ok(id) => {
                // The prompt is started by a click, not by form autofill.
                if let Some(o) = options.as_object_mut() {
                    o.remove("mediation");
                }
                Json(serde_json::json!({ "id": id, "options": options })).into_response()
            }
            Err(r) => r,
        },
        Err(e) => json_err(StatusCode::BAD_REQUEST, &web::auth_message(&e)),
    };
    crate::security::portal_headers(resp)
}

pub async fn webauthn_login_finish(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Json(b): Json<WebauthnBody>,
) -> Response {
    if !csrf_ok(&st, &jar, None, header_csrf(&headers)) {
        return json_err(StatusCode::FORBIDDEN, "form expired; reload the page");
    }
    let state = match take_ceremony(&st, &b.id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ip = ip_of(&rt, &peer, &headers);
    match st.authn.webauthn_auth_finish(state, b.response, ip).await {
        Ok((user, passed)) => {
            let target = web::verify_return(&st, &rt, &b.token, now());
            sign_in(&st, &rt, &headers, ip, &jar, user, passed, target, false)
                .await
                .into_response_for(&st, &rt, jar, true)
        }
        Err(e) => json_err(StatusCode::UNAUTHORIZED, &web::auth_message(&e)),
    }
}

pub async fn webauthn_step_start(
    State(st): State<Shared>,
    rt: Rt,
    headers: HeaderMap,
    jar: CookieJar,
    Json(b): Json<WebauthnBody>,
) -> Response {
    let (session, user, _tok) = match step_context(&st, &rt, &jar, &b.token).await {
        Ok(x) => x,
        Err(_) => return json_err(StatusCode::UNAUTHORIZED, "session or link expired"),
    };
    if !csrf_ok(&st, &jar, Some(&session), header_csrf(&headers)) {
        return json_err(StatusCode::FORBIDDEN, "form expired; reload the page");
    }
    match st.authn.webauthn_auth_start(Some(&user)).await {
        Ok((options, state)) => match keep_ceremony(&st, state).await {
            Ok(id) => Json(serde_json::json!({ "id": id, "options": options })).into_response(),
            Err(r) => r,
        },
        Err(e) => json_err(StatusCode::BAD_REQUEST, &web::auth_message(&e)),
    }
}

pub async fn webauthn_step_finish(
    State(st): State<Shared>,
    rt: Rt,
    peer: Peer,
    headers: HeaderMap,
    jar: CookieJar,
    Json(b): Json<WebauthnBody>,
) -> Response {
    let (session, user, tok) = match step_context(&st, &rt, &jar, &b.token).await {
        Ok(x) => x,
        Err(_) => return json_err(StatusCode::UNAUTHORIZED, "session or link expired"),
    };
    if !csrf_ok(&st, &jar, Some(&session), header_csrf(&headers)) {
        return json_err(StatusCode::FORBIDDEN, "form expired; reload the page");
    }
    let state = match take_ceremony(&st, &b.id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match st
        .authn
        .webauthn_auth_finish(state, b.response, ip_of(&rt, &peer, &headers))
        .await
    {
        Ok((who, passed)) if who.id == user.id => {
            factor_passed(&st, &rt, jar, session, &user, &b.token, tok, passed, true).await
        }
        Ok(_) => json_err(
            StatusCode::UNAUTHORIZED,
            "that passkey belongs to someone else",
        ),
        Err(e) => json_err(StatusCode::UNAUTHORIZED, &web::auth_message(&e)),
    }
}

pub async fn webauthn_register_start(
    State(st): State<Shared>,
    rt: Rt,
    headers: HeaderMap,
    jar: CookieJar,
    Json(b): Json<WebauthnBody>,
) -> Response {
    let (session, user) = match require_session(&st, &rt, &jar, "/account").await {
        Ok(x) => x,
        Err(_) => return json_err(StatusCode::UNAUTHORIZED, "sign in first"),
    };
    if !csrf_ok(&st, &jar, Some(&session), header_csrf(&headers)) {
        return json_err(StatusCode::FORBIDDEN, "form expired; reload the page");
    }
    if let Err(r) = fresh_enough(&st, &rt, &session, &user, true).await {
        return r;
    }
    let kind = match b.kind.as_str() {
        "security_key" => RegistrationKind::SecurityKey,
        _ => RegistrationKind::Passkey,
    };
    match st.authn.webauthn_register_start(&user, kind).await {
        Ok((mut options, state)) => match keep_ceremony(&st, state).await {
            Ok(id) => {
                if kind == RegistrationKind::Passkey {
                    require_resident_key(&mut options);
                }
                Json(serde_json::json!({ "id": id, "options": options })).into_response()
            }
            Err(r) => r,
        },
        Err(e) => json_err(StatusCode::BAD_REQUEST, &web::auth_message(&e)),
    }
}

/// A passkey must be discoverable so that "Sign in with a passkey" can find it without a
/// username: ask the authenticator for a resident (client-side discoverable) credential.
/// The server-side verification does not depend on this hint.
fn require_resident_key(options: &mut serde_json::Value) {
    if let Some(sel) = options
        .pointer_mut("/publicKey/authenticatorSelection")
        .and_then(|v| v.as_object_mut())
    {
        sel.insert(
            "residentKey".into(),
            serde_json::Value::String("required".into()),
        );
        sel.insert("requireResidentKey".into(), serde_json::Value::Bool(true));
    }
}

pub async fn webauthn_register_finish(
    State(st): State<Shared>,
    rt: Rt,
    headers: HeaderMap,
    jar: CookieJar,
    Json(b): Json<WebauthnBody>,
) -> Response {
    let (session, user) = match require_session(&st, &rt, &jar, "/account").await {
        Ok(x) => x,
        Err(_) => return json_err(StatusCode::UNAUTHORIZED, "sign in first"),
    };
    if !csrf_ok(&st, &jar, Some(&session), header_csrf(&headers)) {
        return json_err(StatusCode::FORBIDDEN, "form expired; reload the page");
    }
    let state = match take_ceremony(&st, &b.id).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let label = if b.label.trim().is_empty() {
        "Passkey"
    } else {
        b.label.trim()
    };
    match st
        .authn
        .webauthn_register_finish(&user, state, b.response, label)
        .await
    {
        Ok(_) => Json(serde_json::json!({ "redirect": rt.portal_url("/account?done=webauthn") }))
            .into_response(),
        Err(e) => json_err(StatusCode::BAD_REQUEST, &web::auth_message(&e)),
    }
}
