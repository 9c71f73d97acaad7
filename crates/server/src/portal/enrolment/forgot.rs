//! "Forgot your password?": the recovery paths the product has. A recovery code, or a
//! code e-mailed to the address the user signs in with, earns a short-lived reset link of
//! the user's own, followed at once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use minijinja::context;
use serde::Deserialize;
use stepgate_authn::service::AuthError;
use stepgate_authn::{FactorKind, LinkPurpose};
use stepgate_store::UserRecord;

use crate::app::responses::see_other;
use crate::app::state::Shared;
use crate::portal::error::PortalError;
use crate::portal::extract::{check_csrf, ClientAddr, Here, Visit};
use crate::portal::pages::Pages;
use crate::portal::signin::pre_session;
use crate::portal::{audit, auth_message};
use crate::session::cookies::CookieJar;

/// `GET {portal}/forgot`: "Forgot your password?" — the recovery paths the product has.
pub async fn forgot_page(Visit { st, here: rt, jar }: Visit) -> Response {
    forgot(&st, &rt, jar, None, "")
}

fn forgot(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    error: Option<(StatusCode, String)>,
    username: &str,
) -> Response {
    forgot_with(st, rt, jar, error, username, None)
}

fn forgot_with(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    error: Option<(StatusCode, String)>,
    username: &str,
    code_sent: Option<&str>,
) -> Response {
    let (jar, pre) = pre_session(rt, jar);
    let (status, error) = match error {
        Some((s, e)) => (s, Some(e)),
        None => (StatusCode::OK, None),
    };
    let page = Pages::global().render(
        status,
        "forgot.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&pre), error => error,
            recovery_codes => rt.config.factors.recovery_codes.enabled, username_value => username,
            help => rt.config.portal.help.as_deref(),
            email_codes => rt.config.factors.email_otp.resets_passwords(), code_sent => code_sent,
        },
    );
    (jar, page).into_response()
}

/// The forms of "Forgot your password?": a recovery code, or an e-mailed code (sent to
/// `username`, then typed in `code`).
#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    code: String,
}

/// How long the reset link a recovery code earns stays valid.
const SELF_RESET_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// What the page says, with its status, when a code does not earn a link.
type Refusal = (StatusCode, String);

/// The enabled user named `username`; `no_match` when there is none.
async fn active_user(
    st: &Shared,
    username: &str,
    no_match: impl Fn() -> Refusal,
) -> Result<UserRecord, Refusal> {
    match st.authn.find_user(username).await {
        Ok(Some(u)) if !u.disabled => Ok(u),
        Ok(_) => Err(no_match()),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, auth_message(&e))),
    }
}

/// A reset link of the user's own: the URL of its set-password page.
async fn own_reset_link(st: &Shared, rt: &Here, user: &UserRecord) -> Result<String, Refusal> {
    match st
        .authn
        .issue_link(user, LinkPurpose::PasswordReset, SELF_RESET_TTL, None)
        .await
    {
        Ok(link) => Ok(rt.portal_url(&format!("/reset/{}", link.token.as_str()))),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, auth_message(&e))),
    }
}

/// `POST {portal}/forgot`: a recovery code (used up, regulated like any factor) earns a
/// reset link of the user's own, followed at once: the set-password page.
pub async fn forgot_submit(visit: Visit, ip: ClientAddr, Form(f): Form<ForgotForm>) -> Response {
    redeem(visit, ip, f, ResetCode::Recovery).await
}

/// The code a "Forgot your password?" form proves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResetCode {
    /// One of the user's recovery codes.
    Recovery,
    /// A code e-mailed to the address the user signs in with.
    Email,
}

/// A code that earns a reset link: the link followed at once, or the form again with why.
async fn redeem(
    Visit { st, here: rt, jar }: Visit,
    ClientAddr(ip): ClientAddr,
    f: ForgotForm,
    by: ResetCode,
) -> Response {
    if let Err(e) = check_csrf(&st, &rt, &jar, None, &f.csrf) {
        return e.into_response();
    }
    if by == ResetCode::Email && !rt.config.factors.email_otp.resets_passwords() {
        return PortalError::BadRequest.into_response();
    }
    let username = f.username.trim();
    let earned = async {
        let user = match by {
            ResetCode::Recovery => recovery_code_holder(&st, username, &f.code, ip).await?,
            ResetCode::Email => email_code_holder(&st, username, &f.code, ip).await?,
        };
        own_reset_link(&st, &rt, &user).await
    };
    match earned.await {
        Ok(url) => (jar, see_other(&url)).into_response(),
        Err(e) => {
            let code_sent = (by == ResetCode::Email).then_some(username);
            forgot_with(&st, &rt, jar, Some(e), username, code_sent)
        }
    }
}

/// The user whose recovery code `code` is (used up by this).
async fn recovery_code_holder(
    st: &Shared,
    username: &str,
    code: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<UserRecord, Refusal> {
    let no_match = || (StatusCode::UNAUTHORIZED, crate::i18n::t("forgot-no-match"));
    let user = active_user(st, username, no_match).await?;
    if let Err(e) = st.authn.verify_recovery_code(&user, code, ip).await {
        return Err(match e {
            AuthError::InvalidCredentials | AuthError::NotEnrolled(_) => no_match(),
            AuthError::Locked { .. } | AuthError::AccountLocked => {
                (StatusCode::TOO_MANY_REQUESTS, auth_message(&e))
            }
            other => (StatusCode::SERVICE_UNAVAILABLE, auth_message(&other)),
        });
    }
    Ok(user)
}

/// `POST {portal}/forgot/email/send`: e-mails a code to the address the user signs in with
/// (`factors.email_otp` enabled and an address confirmed). The answer is the same whether
/// or not the name exists or has an address, and the message is sent after the answer, so
/// neither the words nor the time tell who has an account.
pub async fn forgot_email_send(
    Visit { st, here: rt, jar }: Visit,
    Form(f): Form<ForgotForm>,
) -> Response {
    if let Err(e) = check_csrf(&st, &rt, &jar, None, &f.csrf) {
        return e.into_response();
    }
    if !rt.config.factors.email_otp.resets_passwords() {
        return PortalError::BadRequest.into_response();
    }
    let username = f.username.trim().to_string();
    if username.is_empty() || username.len() > 256 {
        let e = (
            StatusCode::BAD_REQUEST,
            crate::i18n::t("forgot-type-username"),
        );
        return forgot(&st, &rt, jar, Some(e), &username);
    }
    let sender = st.clone();
    let name = username.clone();
    tokio::spawn(async move {
        let user = match sender.authn.find_user(&name).await {
            Ok(Some(u)) if !u.disabled => u,
            _ => return,
        };
        match sender.authn.send_otp(&user, FactorKind::EmailOtp).await {
            Ok(_) => {
                audit(
                    &sender,
                    "password.reset_code_sent",
                    &user.username,
                    None,
                    serde_json::json!({ "by": "email_otp" }),
                )
                .await;
            }
            Err(e) => tracing::info!(error = %e, "no password-reset code sent"),
        }
    });
    forgot_with(&st, &rt, jar, None, &username, Some(&username))
}

/// `POST {portal}/forgot/email`: the e-mailed code (single use, regulated like any factor)
/// earns a reset link of the user's own, followed at once, as a recovery code does.
pub async fn forgot_email_submit(
    visit: Visit,
    ip: ClientAddr,
    Form(f): Form<ForgotForm>,
) -> Response {
    redeem(visit, ip, f, ResetCode::Email).await
}

/// The user the e-mailed code `code` was sent to (used up by this; audited).
async fn email_code_holder(
    st: &Shared,
    username: &str,
    code: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<UserRecord, Refusal> {
    let no_match = || {
        (
            StatusCode::UNAUTHORIZED,
            crate::i18n::t("forgot-code-no-match"),
        )
    };
    let user = active_user(st, username, no_match).await?;
    if let Err(e) = st
        .authn
        .verify_otp(&user, FactorKind::EmailOtp, code, ip)
        .await
    {
        return Err(match e {
            AuthError::InvalidCredentials
            | AuthError::NotEnrolled(_)
            | AuthError::Expired
            | AuthError::Replayed => no_match(),
            AuthError::Locked { .. } | AuthError::AccountLocked | AuthError::TooManyGuesses => {
                (StatusCode::TOO_MANY_REQUESTS, auth_message(&e))
            }
            other => (StatusCode::SERVICE_UNAVAILABLE, auth_message(&other)),
        });
    }
    audit(
        st,
        "password.reset_code_used",
        &user.username,
        ip,
        serde_json::json!({ "by": "email_otp" }),
    )
    .await;
    Ok(user)
}
