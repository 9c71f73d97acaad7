//! Step-up (also the second half of a sign-in): the page that offers the factors that would
//! meet what the policy asked for, one form handler for every code-like factor, and what
//! passing one does — the factor recorded, the session id rotated, and on to the target once
//! the requirement is met.
//!
//! The page itself (offers, layout, rendering) is in [`page`]; what passing a factor does
//! in [`passing`].

mod page;
mod passing;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use minijinja::context;
use serde::Deserialize;
use stepgate_authn::service::AuthError;
use stepgate_authn::FactorKind;
use stepgate_store::UserRecord;

use crate::app::state::Shared;
use crate::portal::error::PortalError;
use crate::portal::extract::{
    step_context, ClientAddr, CsrfField, Here, StepFields, StepForm, Visit,
};
use crate::portal::links::StepToken;
use crate::portal::pages::Pages;
use crate::portal::{audit, audit_failure, auth_message, Failure};
use crate::session::cookies::CookieJar;
use crate::session::Session;
use page::{render, Shown};

pub(super) use passing::{passed, passed_all};

/// `?t=` on the step-up and blocked pages: the signed link.
#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    t: String,
}

impl TokenQuery {
    /// The signed link.
    pub fn token(&self) -> &str {
        &self.t
    }
}

/// `GET {portal}/step-up`.
pub async fn step_up_page(
    Visit { st, here: rt, jar }: Visit,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PortalError> {
    let (session, user, step) = step_context(&st, &rt, &jar, &q.t).await?;
    let on = page(&session, &user, &q.t, &step);
    Ok(render(&st, &rt, on, Shown::default()).await)
}

/// What a step-up page is about.
#[derive(Clone, Copy)]
pub(super) struct Page<'a> {
    session: &'a Session,
    user: &'a UserRecord,
    token: &'a str,
    step: &'a StepToken,
}

/// A step-up form.
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

impl CsrfField for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl StepFields for CodeForm {
    fn token(&self) -> &str {
        &self.t
    }
}

fn kind_of(s: &str) -> Option<FactorKind> {
    FactorKind::ALL.into_iter().find(|k| k.as_str() == s)
}

/// The one-time-code kinds (e-mail, SMS) a form may name.
pub fn otp_kind(s: &str) -> Option<FactorKind> {
    kind_of(s).filter(|k| matches!(k, FactorKind::EmailOtp | FactorKind::SmsOtp))
}

/// `POST {portal}/step-up/{totp|password|otp|recovery|questions}`: one factor's answer;
/// `POST {portal}/step-up/send`: send an e-mail or SMS code for the `otp` form.
pub async fn step_up_factor(
    Visit { st, here: rt, jar }: Visit,
    ClientAddr(ip): ClientAddr,
    Path(factor): Path<String>,
    f: StepForm<CodeForm>,
) -> Response {
    let StepForm {
        session,
        user,
        step,
        form,
    } = f;
    let on = page(&session, &user, &form.t, &step);
    if factor == "send" {
        return send(&st, &rt, on, &form.kind).await;
    }
    if factor == "cancel" {
        return cancel(&st, &rt, jar, on, ip).await;
    }
    let Some(kind) = answered_kind(&factor, &form) else {
        return PortalError::BadRequest.into_response();
    };
    match verify(&st, &user, kind, &form, ip).await {
        Ok(p) => passed(&st, &rt, jar, on, p, false).await,
        Err(e) => {
            let failure = Failure::of(on.step.sign_in, kind.as_str());
            audit_failure(&st, &rt, Some(&user), ip, failure, &e).await;
            failed(&st, &rt, on, e, Some(kind.as_str())).await
        }
    }
}

/// The factor a step-up form (`/step-up/{factor}`) answers: for `otp`, the one-time-code
/// kind it names.
fn answered_kind(factor: &str, form: &CodeForm) -> Option<FactorKind> {
    match factor {
        "otp" => otp_kind(&form.kind),
        "recovery" => Some(FactorKind::RecoveryCodes),
        "questions" => Some(FactorKind::SecurityQuestions),
        "totp" => Some(FactorKind::Totp),
        "password" => Some(FactorKind::Password),
        _ => None,
    }
}

/// The form's answer for factor `kind` (one [`answered_kind`] gives), checked.
async fn verify(
    st: &Shared,
    user: &UserRecord,
    kind: FactorKind,
    form: &CodeForm,
    ip: Option<std::net::IpAddr>,
) -> Result<stepgate_authn::PassedFactor, AuthError> {
    let a = &st.authn;
    match kind {
        FactorKind::Totp => a.verify_totp(user, &form.code, ip).await,
        FactorKind::Password => a
            .verify_password(&user.username, &form.password, ip)
            .await
            .map(|(_, p)| p),
        FactorKind::RecoveryCodes => a.verify_recovery_code(user, &form.code, ip).await,
        FactorKind::SecurityQuestions => {
            let now = Utc::now().timestamp();
            let Some(asked) = st.signer.verify("asked", &form.asked, now) else {
                return Err(AuthError::Expired);
            };
            let asked: Vec<usize> = asked.split(',').filter_map(|s| s.parse().ok()).collect();
            a.verify_questions(user, &asked, &form.answer, ip).await
        }
        // What remains is an e-mail or SMS code (`otp_kind`).
        otp => a.verify_otp(user, otp, &form.code, ip).await,
    }
}

/// Sends an e-mail or SMS code (`kind`) and shows the page again.
async fn send(st: &Shared, rt: &Here, on: Page<'_>, kind: &str) -> Response {
    let Some(kind) = otp_kind(kind) else {
        return PortalError::BadRequest.into_response();
    };
    match st.authn.send_otp(on.user, kind).await {
        Ok(dest) => {
            let shown = Shown {
                notice: Some(crate::i18n::t_with(
                    "stepup-code-sent",
                    &[("address", dest.into())],
                )),
                tried: Some(kind.as_str()),
                ..Shown::default()
            };
            render(st, rt, on, shown).await
        }
        Err(e) => failed(st, rt, on, e, Some(kind.as_str())).await,
    }
}

/// A factor was refused: the page again, with why (and how long sign-in is paused).
async fn failed(
    st: &Shared,
    rt: &Here,
    on: Page<'_>,
    e: AuthError,
    tried: Option<&'static str>,
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
    let (e, status) = match crate::portal::paused_by(st, &e, Some(on.user), &on.user.username).await
    {
        Some(pause) => (pause, StatusCode::TOO_MANY_REQUESTS),
        None => (e, status),
    };
    let paused = crate::portal::Paused::of(&e);
    let mut error = match &paused {
        Some(p) => p.message.clone(),
        None => auth_message(&e),
    };
    // The password is proved here (a step-up, or a sign-in's second step).
    let user = Some(on.user);
    if let Some(note) =
        crate::portal::attempts_note(st, rt, &e, user, &on.user.username, true).await
    {
        error = format!("{error} {note}");
    }
    let shown = Shown {
        error: Some(error),
        status: Some(status),
        paused,
        tried,
        ..Shown::default()
    };
    render(st, rt, on, shown).await
}

/// `POST {portal}/step-up/cancel` during a sign-in ("Not you? Cancel"): the half-done
/// sign-in is ended and forgotten here, and the login page opens again for the same
/// destination, for whoever is at the keyboard. A step-up of a complete session has no
/// cancel: the person simply does not go on.
async fn cancel(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    on: Page<'_>,
    ip: Option<std::net::IpAddr>,
) -> Response {
    if !(on.step.sign_in && on.session.data.pending) {
        return PortalError::BadRequest.into_response();
    }
    if let Err(e) = st.sessions.end(&on.session.id).await {
        return PortalError::from(e).into_response();
    }
    audit(
        st,
        "signin.cancelled",
        &on.user.username,
        ip,
        serde_json::json!({ "at": "step-up" }),
    )
    .await;
    let links = crate::portal::links::Links::new(&st.signer, rt);
    let t = links
        .sign_return(&on.step.rt, Utc::now())
        .unwrap_or_default();
    let jar = jar.set(crate::session::cookies::clear_session_cookie(
        &rt.config.sessions,
    ));
    (
        jar,
        crate::app::responses::see_other(&rt.portal_url(&format!("/login?t={t}"))),
    )
        .into_response()
}

/// The passkey step's context: the page a JSON ceremony belongs to.
pub(super) fn page<'a>(
    session: &'a Session,
    user: &'a UserRecord,
    token: &'a str,
    step: &'a StepToken,
) -> Page<'a> {
    Page {
        session,
        user,
        token,
        step,
    }
}

/// `GET {portal}/confirmed?t=…`: after a step-up for a request that cannot be replayed (a
/// POST: its body is gone, and re-sending it unseen would surprise the user), the user is
/// told it was not sent and led back to the page they made it from, to make it again.
pub async fn confirmed_page(
    Visit { st, here: rt, jar }: Visit,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PortalError> {
    let (session, user, step) = step_context(&st, &rt, &jar, &q.t).await?;
    let Some(back) = step.back.as_deref() else {
        return Ok(crate::app::responses::see_other(&step.rt));
    };
    let target = url::Url::parse(&step.rt).ok();
    let host = target.as_ref().and_then(|u| u.host_str()).unwrap_or("");
    let app = rt.app_for_host(&host.to_ascii_lowercase());
    let app_name = app
        .map(|a| a.name.clone().unwrap_or_else(|| a.id.to_string()))
        .unwrap_or_else(|| host.to_string());
    // The route the request was for, by name, when the configuration names it.
    let action = app.zip(target.as_ref()).and_then(|(a, u)| {
        a.routes.iter().find_map(|r| {
            let posts =
                r.methods.is_empty() || r.methods.iter().any(|m| !m.eq_ignore_ascii_case("GET"));
            let matches = stepgate_policy::path::PathPattern::parse(&r.path)
                .is_ok_and(|p| p.matches(u.path()));
            (posts && matches).then(|| r.name.clone()).flatten()
        })
    });
    let message = match action {
        Some(a) => crate::i18n::t_with("confirmed-action", &[("what", a.into())]),
        None => crate::i18n::t("confirmed-request"),
    };
    Ok(Pages::global().render(
        StatusCode::OK,
        "message.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => user.username,
            title => crate::i18n::t("confirmed-title"), message => message, link => back,
            link_text => crate::i18n::t_with("back-to-app", &[("app", app_name.into())]),
        },
    ))
}
