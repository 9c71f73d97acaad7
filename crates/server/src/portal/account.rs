//! Security settings: the user's factors, how strong each is, and adding or removing them
//! (each change behind a fresh factor, [`fresh_enough`]); the demo's device switch.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::context;
use serde::{Deserialize, Serialize};
use stepgate_authn::service::{AuthError, EnrolledInfo};
use stepgate_authn::{satisfies, FactorKind};
use stepgate_policy::{HumanDuration, MaxAge, StepUpRequirement};
use stepgate_store::UserRecord;

use super::error::PortalError;
use super::extract::{check_csrf, CsrfField, FreshForm, Here, SignedIn, Visit};
use super::links::{Links, StepToken};
use super::pages::Pages;
use super::stepup::otp_kind;
use super::{auth_message, factor_title};
use crate::app::responses::see_other;
use crate::app::state::Shared;
use crate::demo;
use crate::session::cookies::{plain_cookie, CookieJar};
use crate::session::Session;

/// `?done=`, `?pending=` and `?t=` on the account page (`t`: the step-up the user came
/// from to add a factor it needs, which the page offers to continue).
#[derive(Deserialize, Default)]
pub struct AccountQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    pending: String,
    #[serde(default)]
    t: String,
}

/// Where a step-up the user left to add a factor goes on: its page, and the app's name.
#[derive(Serialize)]
pub struct Resume {
    /// The step-up page.
    pub url: String,
    /// The app it protects (its name, else its host).
    pub app: String,
    /// The signed step-up token (carried through the enrolment forms).
    pub token: String,
}

/// The step-up `token` names, when it is genuine, unexpired and this user's.
pub fn resume(st: &Shared, rt: &Here, user: &UserRecord, token: &str) -> Option<Resume> {
    if token.is_empty() {
        return None;
    }
    let step = Links::new(&st.signer, rt)
        .verify_step(token, Utc::now())
        .filter(|s| s.user_id == user.id && !s.sign_in)?;
    let host = url::Url::parse(&step.rt)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    let app = rt
        .app_for_host(&host)
        .map(|a| a.name.clone().unwrap_or_else(|| a.id.to_string()))
        .unwrap_or(host);
    Some(Resume {
        url: rt.portal_url(&format!("/step-up?t={token}")),
        app,
        token: token.to_string(),
    })
}

/// One enrolled factor, as the page lists it.
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

/// How strong a way to sign in is, in words a user knows (the AAL stays in admin views and
/// the docs).
fn strength(e: &EnrolledInfo) -> (String, bool) {
    let mut s = crate::i18n::t(if e.phishing_resistant {
        "strength-strong"
    } else {
        match e.aal_alone {
            0 => "strength-only-with-another",
            1 => "strength-basic",
            2 => "strength-medium",
            _ => "strength-strongest",
        }
    });
    if e.hardware_bound {
        s.push_str(" · ");
        s.push_str(&crate::i18n::t("strength-on-security-key"));
    }
    (s, e.phishing_resistant)
}

fn notice_for(done: &str) -> Option<String> {
    Some(crate::i18n::t(match done {
        "totp" => "notice-totp",
        "webauthn" => "notice-webauthn",
        "contact" => "notice-contact",
        "questions" => "notice-questions",
        "removed" => "notice-removed",
        "password" => "notice-password",
        "password-others" => "notice-password-others",
        "device" => "notice-device",
        "confirmed" => "notice-confirmed",
        _ => return None,
    }))
}

/// `GET {portal}/account`.
pub async fn account_page(
    Visit { st, here: rt, jar }: Visit,
    SignedIn { session, user }: SignedIn,
    Query(q): Query<AccountQuery>,
) -> Response {
    let shown = Shown {
        notice: notice_for(&q.done),
        error: None,
        pending: (!q.pending.is_empty()).then_some(q.pending),
        resume: resume(&st, &rt, &user, &q.t),
    };
    render(&st, &rt, &jar, (&session, &user), shown).await
}

/// What the account page says besides the factors.
#[derive(Default)]
struct Shown {
    notice: Option<String>,
    error: Option<String>,
    /// The contact factor whose code was sent and awaits confirmation.
    pending: Option<String>,
    /// The step-up the user came from, to go back to once the factor it needs is added.
    resume: Option<Resume>,
}

impl Shown {
    fn error(e: &AuthError) -> Self {
        Shown {
            error: Some(auth_message(e)),
            ..Shown::default()
        }
    }
}

async fn render(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
    (session, user): (&Session, &UserRecord),
    shown: Shown,
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
    Pages::global().render(
        StatusCode::OK,
        "account.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => user.username,
            aal => session.data.aal(&rt.config.assurance), factors => rows, enabled => enabled,
            question_slots => slots, min_length => f.password.min_length, notice => shown.notice, error => shown.error,
            pending_contact => shown.pending, demo => st.options.demo, demo_profiles => profiles,
            demo_profile => demo::profile(jar.get(demo::DEVICE_COOKIE)).id, resume => shown.resume,
        },
    )
}

/// Changing factors needs a fresh step-up: AAL2 within 10 minutes once the user has a
/// second factor, a fresh password before that (to enrol the first one). Not fresh: the
/// step-up page (`json`: `{"error": "step_up_required", "redirect": …}` for the passkey
/// script), and back to the account page after.
pub async fn fresh_enough(
    st: &Shared,
    rt: &Here,
    session: &Session,
    user: &UserRecord,
    json: bool,
    then: &str,
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
    let t = Utc::now();
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
    // Back to the account page: still knowing which step-up the user came to it from
    // (its words say what to add), or saying that the change itself was not made (a
    // form's POST is never replayed).
    let back = match resume(st, rt, user, then) {
        Some(r) => format!("/account?t={}", r.token),
        None => "/account?done=confirmed".to_string(),
    };
    let step = StepToken {
        rt: rt.portal_url(&back),
        back: None,
        why: crate::i18n::t_with(
            "reason-changing-sign-in",
            &[("what", crate::i18n::describe(&req).into())],
        ),
        req,
        sign_in: false,
        user_id: session.data.user_id.clone(),
        rid: String::new(),
    };
    let token = Links::new(&st.signer, rt).sign_step(&step, t);
    let url = rt.portal_url(&format!("/step-up?t={token}"));
    Err(if json {
        let body = serde_json::json!({ "error": "step_up_required", "redirect": url });
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    } else {
        see_other(&url)
    })
}

/// The account page's forms.
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
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    sign_out_others: Option<String>,
    /// The step-up the user came from (see [`resume`]).
    #[serde(default)]
    then: String,
}

impl AccountForm {
    /// The session handle an "End" button carries.
    pub fn handle(&self) -> &str {
        &self.id
    }
}

impl CsrfField for AccountForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST {portal}/account/{change}`: one change to the user's own factors, behind a fresh
/// factor ([`FreshForm`]): `totp/start` (a new authenticator app's QR code) and
/// `totp/confirm` (its first code), `contact/start` (a code to a new e-mail address or
/// phone) and `contact/confirm` (that code), `questions`, `recovery` (new codes, shown
/// once), `password` (a new one), `remove`.
pub async fn change(
    Visit { st, here: rt, jar }: Visit,
    Path(change): Path<String>,
    f: FreshForm<AccountForm>,
) -> Response {
    let on = Change {
        st: &st,
        rt: &rt,
        jar: &jar,
        session: &f.session,
        user: &f.user,
    };
    let form = f.form;
    let a = &st.authn;
    match change.as_str() {
        "totp/start" | "totp/confirm" => totp(on, &change, &form).await,
        "contact/start" | "contact/confirm" => contact(on, &change, &form).await,
        "questions" => {
            let pairs: Vec<(String, String)> = form.question.into_iter().zip(form.answer).collect();
            on.after(
                a.enrol_questions(on.user, &pairs).await,
                "/account?done=questions",
            )
            .await
        }
        "recovery" => recovery_codes(on).await,
        "password" => password(on, &form).await,
        "remove" => {
            on.after(
                a.remove_factor(on.user, &form.id).await,
                "/account?done=removed",
            )
            .await
        }
        _ => PortalError::BadRequest.into_response(),
    }
}

/// `totp/start`: a new authenticator app's QR code; `totp/confirm`: its first code, which
/// adds it.
async fn totp(on: Change<'_>, change: &str, form: &AccountForm) -> Response {
    let a = &on.st.authn;
    if change == "totp/start" {
        return match a.enrol_totp_start(on.user).await {
            Ok(p) => on.page(
                "enrol_totp.html",
                context! { qr_svg => p.qr_svg, secret => p.seed_base32, token => p.token, then => form.then },
            ),
            Err(e) => on.again(Shown::error(&e)).await,
        };
    }
    match a.enrol_totp_confirm(on.user, &form.token, &form.code).await {
        Ok(_) => {
            let to = after_enrolment(on.st, on.rt, on.user, "totp", &form.then);
            see_other(&on.rt.portal_url(&to))
        }
        Err(e) => {
            let why = crate::i18n::t_with("totp-not-added", &[("why", auth_message(&e).into())]);
            on.again(Shown {
                error: Some(why),
                ..Shown::default()
            })
            .await
        }
    }
}

/// `recovery`: new recovery codes, shown once (and offered as a file).
async fn recovery_codes(on: Change<'_>) -> Response {
    use base64::Engine as _;
    let codes = match on.st.authn.regenerate_recovery_codes(on.user).await {
        Ok(codes) => codes,
        Err(e) => return on.again(Shown::error(&e)).await,
    };
    let heading = crate::i18n::t_with(
        "codes-file-heading",
        &[("user", on.user.username.clone().into())],
    );
    let text = format!("{heading}\n\n{}\n", codes.join("\n"));
    let download = format!(
        "data:text/plain;charset=utf-8;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(text)
    );
    on.page(
        "recovery_codes.html",
        context! { codes => codes, download => download },
    )
}

/// The account page after a factor `done` was added: with the step-up the user came from
/// (`then`), when there is one, to continue it.
pub fn after_enrolment(
    st: &Shared,
    rt: &Here,
    user: &UserRecord,
    done: &str,
    then: &str,
) -> String {
    match resume(st, rt, user, then) {
        Some(r) => format!("/account?done={done}&t={}", r.token),
        None => format!("/account?done={done}"),
    }
}

/// A change in progress: who makes it, and where.
#[derive(Clone, Copy)]
struct Change<'a> {
    st: &'a Shared,
    rt: &'a Here,
    jar: &'a CookieJar,
    session: &'a Session,
    user: &'a UserRecord,
}

impl Change<'_> {
    /// A page of the change's own (with the portal's frame).
    fn page(&self, name: &str, ctx: minijinja::Value) -> Response {
        let frame = context! {
            portal => self.rt.portal(), csrf => self.st.signer.csrf_token(&self.session.id),
            username => self.user.username,
        };
        Pages::global().render(StatusCode::OK, name, context! { ..frame, ..ctx })
    }

    /// The account page again, saying what went wrong.
    async fn again(&self, shown: Shown) -> Response {
        render(self.st, self.rt, self.jar, (self.session, self.user), shown).await
    }

    /// Back to the account page at `then`, or again with the error.
    async fn after<T>(&self, result: Result<T, AuthError>, then: &str) -> Response {
        match result {
            Ok(_) => see_other(&self.rt.portal_url(then)),
            Err(e) => self.again(Shown::error(&e)).await,
        }
    }
}

/// A new password (the NIST SP 800-63B rules and the breached list apply), typed twice;
/// the user's other sessions ended when asked (the form's default).
async fn password(on: Change<'_>, form: &AccountForm) -> Response {
    if form.password != form.confirm {
        return on
            .again(Shown {
                error: Some(crate::i18n::t("password-not-same")),
                ..Shown::default()
            })
            .await;
    }
    if let Err(e) = on.st.authn.set_password(on.user, &form.password).await {
        let why = match e {
            AuthError::Rejected(r) => {
                crate::i18n::t_with("password-not-changed", &[("why", r.into())])
            }
            other => auth_message(&other),
        };
        return on
            .again(Shown {
                error: Some(why),
                ..Shown::default()
            })
            .await;
    }
    let mut ended = 0;
    if form.sign_out_others.is_some() {
        let ids = on
            .st
            .sessions
            .of_user(&on.user.id)
            .await
            .unwrap_or_default();
        for id in ids.iter().filter(|id| **id != on.session.id) {
            if on.st.sessions.end(id).await.is_ok() {
                ended += 1;
            }
        }
        let ip = on.session.data.ip.as_deref().and_then(|s| s.parse().ok());
        let detail = serde_json::json!({ "why": "password_changed", "ended": ended });
        super::audit(on.st, "sessions.ended", &on.user.username, ip, detail).await;
    }
    let done = if ended > 0 {
        "password-others"
    } else {
        "password"
    };
    see_other(&on.rt.portal_url(&format!("/account?done={done}")))
}

/// An e-mail address or phone number as a one-time-code factor: the code sent, then
/// confirmed.
async fn contact(on: Change<'_>, change: &str, form: &AccountForm) -> Response {
    let Some(kind) = otp_kind(&form.kind) else {
        return PortalError::BadRequest.into_response();
    };
    let a = &on.st.authn;
    if change == "contact/start" {
        let sent = a
            .enrol_contact_start(on.user, kind, form.destination.trim())
            .await;
        return on
            .after(sent, &format!("/account?pending={}", kind.as_str()))
            .await;
    }
    match a.enrol_contact_confirm(on.user, kind, &form.code).await {
        Ok(_) => see_other(&on.rt.portal_url("/account?done=contact")),
        Err(e) => {
            let pending = Some(kind.as_str().to_string());
            on.again(Shown {
                pending,
                ..Shown::error(&e)
            })
            .await
        }
    }
}

/// `POST {portal}/demo/device` (demo only): which device profile the browser pretends to be.
pub async fn demo_device(
    Visit { st, here: rt, jar }: Visit,
    SignedIn { session, .. }: SignedIn,
    Form(f): Form<AccountForm>,
) -> Result<Response, PortalError> {
    if !st.options.demo {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    check_csrf(&st, &rt, &jar, Some(&session), &f.csrf)?;
    let p = demo::profile(Some(&f.profile));
    let secure = rt.config.sessions.cookie.secure;
    let jar = jar.set(plain_cookie(demo::DEVICE_COOKIE, p.id.to_string(), secure));
    Ok((jar, see_other(&rt.portal_url("/account?done=device"))).into_response())
}
