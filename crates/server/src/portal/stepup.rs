//! Step-up (also the second half of a sign-in): the page that offers the factors that would
//! meet what the policy asked for, one form handler for every code-like factor, and what
//! passing one does — the factor recorded, the session id rotated, and on to the target once
//! the requirement is met.

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use minijinja::context;
use serde::{Deserialize, Serialize};
use stepgate_authn::service::{AuthError, Authenticator};
use stepgate_authn::{satisfies, FactorKind, PassedFactor};
use stepgate_policy::StepUpRequirement;
use stepgate_store::UserRecord;

use super::error::PortalError;
use super::extract::{step_context, CsrfField, Here, StepFields, StepForm, Visit};
use super::links::StepToken;
use super::pages::Pages;
use super::signin::{completed, Done, Next};
use super::{audit, auth_message, factor_title};
use crate::access::request::client_ip;
use crate::app::responses::Peer;
use crate::app::state::Shared;
use crate::session::cookies::{session_cookie, CookieJar};
use crate::session::Session;

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

/// One factor the page offers.
#[derive(Serialize)]
struct Offer {
    kind: &'static str,
    title: &'static str,
    questions: Vec<String>,
    asked: String,
}

/// The factors that would meet `req` on top of what the session has, passkeys first; and
/// whether the user may go and enrol one (not in the middle of a sign-in).
async fn offers(
    st: &Shared,
    user: &UserRecord,
    session: &Session,
    req: &StepUpRequirement,
    rt: &Here,
) -> (Vec<Offer>, bool) {
    let t = Utc::now();
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
    let had_password = session
        .data
        .factors
        .iter()
        .any(|f| f.kind == FactorKind::Password);
    for k in sat.candidates.iter().flatten() {
        // The password was just given for this sign-in: never ask for it twice.
        let password_again = *k == FactorKind::Password && had_password;
        if !(kinds.contains(k) || session.data.pending && password_again) {
            kinds.push(*k);
        }
    }
    // Strongest first; recovery codes last, for emergencies.
    kinds.sort_by_key(|k| match k {
        FactorKind::Webauthn => 0,
        FactorKind::Totp => 1,
        FactorKind::EmailOtp | FactorKind::SmsOtp => 2,
        FactorKind::RecoveryCodes => 9,
        _ => 5,
    });
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
    (out, !session.data.pending)
}

/// What a step-up page is about.
#[derive(Clone, Copy)]
pub(super) struct Page<'a> {
    session: &'a Session,
    user: &'a UserRecord,
    token: &'a str,
    step: &'a StepToken,
}

/// What the page says besides its offers.
#[derive(Default)]
struct Shown {
    error: Option<String>,
    notice: Option<String>,
    status: Option<StatusCode>,
    /// Sign-in is paused (the forms are disabled until then).
    paused: Option<super::Paused>,
    /// The kind of the form the person just used (its field gets the focus and the error,
    /// and "Try another way" stays open when it is one of the other ways).
    tried: Option<&'static str>,
}

/// The offers as the page lays them out: the strongest first and alone; the others behind
/// "Try another way"; recovery codes last, apart, as the way for emergencies.
#[derive(Serialize)]
struct Layout<'a> {
    primary: Option<&'a Offer>,
    others: Vec<&'a Offer>,
    emergency: Option<&'a Offer>,
    /// Which form's field has the focus.
    focus: Option<&'static str>,
    /// Whether "Try another way" is open (the form just used is in it).
    open: bool,
}

fn layout<'a>(offers: &'a [Offer], tried: Option<&'static str>) -> Layout<'a> {
    let recovery = FactorKind::RecoveryCodes.as_str();
    let (primary, rest) = match offers.split_first() {
        Some((p, rest)) => (Some(p), rest),
        None => (None, &[][..]),
    };
    let others: Vec<&Offer> = rest.iter().filter(|o| o.kind != recovery).collect();
    let emergency = rest.iter().find(|o| o.kind == recovery);
    let focus = tried
        .filter(|t| offers.iter().any(|o| o.kind == *t))
        .or(primary.map(|p| p.kind));
    let open = focus.is_some_and(|f| primary.is_none_or(|p| p.kind != f));
    Layout {
        primary,
        others,
        emergency,
        focus,
        open,
    }
}

async fn render(st: &Shared, rt: &Here, on: Page<'_>, shown: Shown) -> Response {
    let (offers, can_enrol) = offers(st, on.user, on.session, &on.step.req, rt).await;
    let ways = layout(&offers, shown.tried);
    let upstream =
        super::upstream::step_up_offers(st, rt, on.session, on.user, &on.step.req, on.token).await;
    let form_redirect = crate::oidc::authorize::form_action_origin(rt, &on.step.rt);
    let page = Pages::global().render(
        shown.status.unwrap_or(StatusCode::OK),
        "step_up.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&on.session.id),
            username => (!on.session.data.pending).then_some(&on.user.username),
            reason => on.step.why, token => on.token, offers => offers, error => shown.error,
            notice => shown.notice, sign_in => on.step.sign_in, can_enrol => can_enrol,
            needs_passkey => needs_passkey(&on.step.req), help => rt.config.portal.help.as_deref(),
            upstream => upstream, ways => ways,
            signing_in_as => on.session.data.pending.then_some(&on.user.username),
            paused => shown.paused,
            request_id => on.step.rid,
        },
    );
    crate::app::responses::allow_form_redirect_to(page, form_redirect.as_deref())
}

/// Whether only a passkey or security key can meet `req`.
fn needs_passkey(req: &StepUpRequirement) -> bool {
    let f = &req.factors;
    req.phishing_resistant
        || (!f.is_empty() && f.iter().all(|k| k == FactorKind::Webauthn.as_str()))
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
    peer: Peer,
    Path(factor): Path<String>,
    headers: HeaderMap,
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
        return cancel(&st, &rt, jar, on, peer, &headers).await;
    }
    let tried = match factor.as_str() {
        "otp" => otp_kind(&form.kind).map(|k| k.as_str()),
        "recovery" => Some(FactorKind::RecoveryCodes.as_str()),
        "questions" => Some(FactorKind::SecurityQuestions.as_str()),
        "totp" => Some(FactorKind::Totp.as_str()),
        "password" => Some(FactorKind::Password.as_str()),
        _ => None,
    };
    let ip = client_ip(&rt, peer.0, &headers);
    let a = &st.authn;
    let result = match factor.as_str() {
        "totp" => a.verify_totp(&user, &form.code, ip).await,
        "password" => a
            .verify_password(&user.username, &form.password, ip)
            .await
            .map(|(_, p)| p),
        "otp" => match otp_kind(&form.kind) {
            Some(kind) => a.verify_otp(&user, kind, &form.code, ip).await,
            None => return PortalError::BadRequest.into_response(),
        },
        "recovery" => a.verify_recovery_code(&user, &form.code, ip).await,
        "questions" => match st
            .signer
            .verify("asked", &form.asked, Utc::now().timestamp())
        {
            Some(asked) => {
                let asked: Vec<usize> = asked.split(',').filter_map(|s| s.parse().ok()).collect();
                a.verify_questions(&user, &asked, &form.answer, ip).await
            }
            None => Err(AuthError::Expired),
        },
        _ => return PortalError::BadRequest.into_response(),
    };
    match result {
        Ok(p) => passed(&st, &rt, jar, on, p, false).await,
        Err(e) => failed(&st, &rt, on, e, tried).await,
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

/// A factor was passed: record it, rotate the session id, and continue if the requirement
/// is now met (`json`: the passkey script follows `{"redirect": …}`).
pub(super) async fn passed(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    on: Page<'_>,
    factor: PassedFactor,
    json: bool,
) -> Response {
    passed_all(st, rt, jar, on, vec![factor], json).await
}

/// [`passed`], for the factors one step proved together (an upstream provider's).
pub(super) async fn passed_all(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    on: Page<'_>,
    factors: Vec<PassedFactor>,
    json: bool,
) -> Response {
    // A user signed in through a provider is re-checked there first: one disabled there
    // since cannot step up.
    let rechecked = match super::upstream::at_step_up(st, rt, on.session, on.step.sign_in).await {
        Ok(s) => s,
        Err(e) => return (jar, e).into_response(),
    };
    let on = Page {
        session: &rechecked,
        ..on
    };
    let now = Utc::now();
    let (new, met) = match record(st, rt, on, factors, now).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if !met {
        return more_needed(
            st,
            rt,
            jar,
            Page {
                session: &new,
                ..on
            },
            json,
        )
        .await;
    }
    let detail = serde_json::json!({ "aal": new.data.aal(&rt.config.assurance) });
    // A request that cannot be replayed (a POST) was not sent: say so, and lead back to
    // the page it was made from (the "Confirmed" page, [`confirmed_page`]).
    let target = match &on.step.back {
        Some(_) if !on.step.sign_in => rt.portal_url(&format!("/confirmed?t={}", on.token)),
        Some(back) => back.clone(),
        None => on.step.rt.clone(),
    };
    if on.step.sign_in {
        let done = Done {
            user: on.user,
            session: new,
            target,
            detail,
        };
        return completed(st, rt, &jar, done, now)
            .await
            .respond(rt, jar, json);
    }
    let ip = new.data.ip.as_deref().and_then(|s| s.parse().ok());
    audit(st, "stepup.success", &on.user.username, ip, detail).await;
    if let Some(d) = &new.data.device_id {
        st.devices.index_session(d, &new.id).await;
    }
    let persistent = new.data.persistent;
    let next = Next::Go {
        url: target,
        session: Some((new, persistent)),
        device_cookie: None,
    };
    next.respond(rt, jar, json)
}

/// Records a passed factor in the session, under a new session id; and whether the
/// step-up's requirement is now met (which completes a pending sign-in).
async fn record(
    st: &Shared,
    rt: &Here,
    on: Page<'_>,
    factors: Vec<PassedFactor>,
    now: chrono::DateTime<Utc>,
) -> Result<(Session, bool), PortalError> {
    let mut data = (*on.session.data).clone();
    for f in factors {
        data.add_factor(f);
    }
    let assurance = &rt.config.assurance;
    let met = satisfies(&data.auth_state(), &on.step.req, assurance, &[], now).satisfied;
    if met {
        data.pending = false;
        data.needs_step_up = false;
    }
    let new = st
        .sessions
        .rotate(rt, Some(&on.session.id), data, now)
        .await?;
    Ok((new, met))
}

/// A factor passed that does not yet meet the requirement: the step-up page again, under
/// the session's new id.
async fn more_needed(st: &Shared, rt: &Here, jar: CookieJar, on: Page<'_>, json: bool) -> Response {
    let jar = jar.set(session_cookie(
        &rt.config.sessions,
        on.session.id.clone(),
        None,
    ));
    if json {
        let url = rt.portal_url(&format!("/step-up?t={}", on.token));
        return (jar, Json(serde_json::json!({ "redirect": url }))).into_response();
    }
    let shown = Shown {
        notice: Some(crate::i18n::t("stepup-one-more-step")),
        ..Shown::default()
    };
    let page = render(st, rt, on, shown).await;
    (jar, page).into_response()
}

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
    let (e, status) = match super::paused_by(st, &e, Some(on.user), &on.user.username).await {
        Some(pause) => (pause, StatusCode::TOO_MANY_REQUESTS),
        None => (e, status),
    };
    let paused = super::Paused::of(&e);
    let mut error = match &paused {
        Some(p) => p.message.clone(),
        None => auth_message(&e),
    };
    // The password is proved here (a step-up, or a sign-in's second step).
    let user = Some(on.user);
    if let Some(note) = super::attempts_note(st, rt, &e, user, &on.user.username, true).await {
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
    peer: Peer,
    headers: &HeaderMap,
) -> Response {
    if !(on.step.sign_in && on.session.data.pending) {
        return PortalError::BadRequest.into_response();
    }
    if let Err(e) = st.sessions.end(&on.session.id).await {
        return PortalError::from(e).into_response();
    }
    let ip = client_ip(rt, peer.0, headers);
    audit(
        st,
        "signin.cancelled",
        &on.user.username,
        ip,
        serde_json::json!({ "at": "step-up" }),
    )
    .await;
    let links = super::links::Links::new(&st.signer, rt);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(kind: FactorKind) -> Offer {
        Offer {
            kind: kind.as_str(),
            title: factor_title(kind.as_str()),
            questions: Vec::new(),
            asked: String::new(),
        }
    }

    #[test]
    fn the_strongest_way_comes_first_and_recovery_codes_apart() {
        use FactorKind::*;
        let offers = [
            offer(Webauthn),
            offer(Totp),
            offer(EmailOtp),
            offer(RecoveryCodes),
        ];
        let l = layout(&offers, None);
        assert_eq!(l.primary.map(|o| o.kind), Some("webauthn"));
        let others: Vec<_> = l.others.iter().map(|o| o.kind).collect();
        assert_eq!(others, ["totp", "email_otp"]);
        assert_eq!(l.emergency.map(|o| o.kind), Some("recovery_codes"));
        assert_eq!((l.focus, l.open), (Some("webauthn"), false));
        // The way just tried keeps the focus and its section open.
        let l = layout(&offers, Some("recovery_codes"));
        assert_eq!((l.focus, l.open), (Some("recovery_codes"), true));
        let l = layout(&offers, Some("webauthn"));
        assert_eq!((l.focus, l.open), (Some("webauthn"), false));
        // A kind the page does not offer (a forged form) moves nothing.
        let l = layout(&offers, Some("security_questions"));
        assert_eq!((l.focus, l.open), (Some("webauthn"), false));
        // Recovery codes alone are the one way, not an emergency beside nothing.
        let only = [offer(RecoveryCodes)];
        let l = layout(&only, None);
        assert_eq!(l.primary.map(|o| o.kind), Some("recovery_codes"));
        assert!(l.emergency.is_none() && l.others.is_empty());
        assert!(layout(&[], None).primary.is_none());
    }
}
