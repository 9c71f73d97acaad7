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

/// `?done=` and `?pending=` on the account page.
#[derive(Deserialize, Default)]
pub struct AccountQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    pending: String,
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

/// `GET {portal}/account`.
pub async fn account_page(
    Visit { st, here: rt, jar }: Visit,
    SignedIn { session, user }: SignedIn,
    Query(q): Query<AccountQuery>,
) -> Response {
    let shown = Shown {
        notice: notice_for(&q.done).map(str::to_string),
        error: None,
        pending: (!q.pending.is_empty()).then_some(q.pending),
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
            question_slots => slots, notice => shown.notice, error => shown.error,
            pending_contact => shown.pending, demo => st.options.demo, demo_profiles => profiles,
            demo_profile => demo::profile(jar.get(demo::DEVICE_COOKIE)).id,
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
    let step = StepToken {
        rt: rt.portal_url("/account"),
        back: None,
        why: format!("Changing your sign-in factors needs {}.", req.describe()),
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
/// once), `remove`.
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
        "totp/start" => match a.enrol_totp_start(on.user).await {
            Ok(p) => on.page(
                "enrol_totp.html",
                context! { qr_svg => p.qr_svg, secret => p.seed_base32, token => p.token },
            ),
            Err(e) => on.again(Shown::error(&e)).await,
        },
        "totp/confirm" => match a.enrol_totp_confirm(on.user, &form.token, &form.code).await {
            Ok(_) => see_other(&rt.portal_url("/account?done=totp")),
            Err(e) => {
                let why = format!("The authenticator app was not added: {}", auth_message(&e));
                on.again(Shown {
                    error: Some(why),
                    ..Shown::default()
                })
                .await
            }
        },
        "contact/start" | "contact/confirm" => contact(on, &change, &form).await,
        "questions" => {
            let pairs: Vec<(String, String)> = form.question.into_iter().zip(form.answer).collect();
            on.after(
                a.enrol_questions(on.user, &pairs).await,
                "/account?done=questions",
            )
            .await
        }
        "recovery" => match a.regenerate_recovery_codes(on.user).await {
            Ok(codes) => on.page("recovery_codes.html", context! { codes => codes }),
            Err(e) => on.again(Shown::error(&e)).await,
        },
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
