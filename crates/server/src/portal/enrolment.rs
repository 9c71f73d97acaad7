//! Getting in the first time, and back in after a lost password: the single-use links an
//! administrator issues (`stepgate user invite`, `stepgate user reset-link`; see
//! [`stepgate_authn::LinkPurpose`]).
//!
//! - `GET {portal}/invite/{token}`: "Choose a password" (the link is only read, so a mail
//!   scanner that follows it does not use it up); `POST`: the password set, the link used up
//!   for good, and the sign-in decided through the access pipeline like any other
//!   ([`super::signin::sign_in`]). Where the policy asks for more than the password, the user
//!   is not left at a step-up page with nothing to offer: they land on the welcome page
//!   (`GET {portal}/welcome?g=…`), where the *enrolment grant* the link's use earned lets
//!   this one session add a passkey or an authenticator app, then go on to the step-up page
//!   and pass it with the new factor. A sign-in started with a password alone earns no such
//!   grant: it cannot enrol a factor before it is complete.
//! - `GET|POST {portal}/reset/{token}`: the same for a new password; every other session of
//!   the user is ended, and the sign-in goes on with the factors the user has.
//! - `enrolment.at_first_sign_in` ([`at_first_sign_in`], off by default): a password
//!   sign-in that stops at the step-up page, for a user with nothing but a password, from
//!   one of the named networks, earns the same grant and goes to the welcome page.

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::context;
use serde::{Deserialize, Serialize};
use stepgate_authn::service::AuthError;
use stepgate_authn::{FactorKind, LinkPurpose};
use stepgate_store::UserRecord;

use super::error::PortalError;
use super::extract::{check_csrf, live_session, user_of, Here, Visit};
use super::pages::Pages;
use super::signin::{pre_session, sign_in, FirstFactor, Next};
use super::{audit, auth_message};
use crate::access::request::client_ip;
use crate::access::signals::PeerCertificates;
use crate::access::Connection;
use crate::app::responses::{see_other, Peer};
use crate::app::state::Shared;
use crate::session::cookies::CookieJar;
use crate::session::Session;

/// What the welcome page's signed `g` carries: whose session may enrol its first factors
/// without a fresh factor (it just redeemed a link), and where the sign-in goes on after.
#[derive(Serialize, Deserialize)]
pub struct EnrolGrant {
    /// The user.
    pub user_id: String,
    /// The session's handle ([`crate::app::signer::Signer::session_handle`]): the grant is
    /// worthless with any other session.
    pub session: String,
    /// Where the sign-in goes on (the step-up page, or the app when the password was enough).
    pub next: String,
    /// Whether the sign-in is complete already (then the welcome page offers "Skip").
    pub complete: bool,
    /// Earned by `enrolment.at_first_sign_in` (the password was typed, not just set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_sign_in: bool,
}

const GRANT: &str = "enrol-grant";

/// `?g=` on the welcome page.
#[derive(Deserialize)]
pub struct GrantQuery {
    #[serde(default)]
    g: String,
}

fn purpose_of(path: &str) -> LinkPurpose {
    if path.contains("/reset/") {
        LinkPurpose::PasswordReset
    } else {
        LinkPurpose::Invitation
    }
}

/// What the link page says when the link cannot be used.
fn link_refused(rt: &Here, e: &AuthError) -> Response {
    let (status, title, message) = match e {
        AuthError::Disabled => (
            StatusCode::FORBIDDEN,
            crate::i18n::t("link-disabled-title"),
            crate::i18n::t("auth-disabled"),
        ),
        AuthError::Store(_) | AuthError::Internal(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            crate::i18n::t("error-store-down-title"),
            auth_message(e),
        ),
        _ => (
            StatusCode::GONE,
            crate::i18n::t("link-expired-title"),
            crate::i18n::t("link-expired-text"),
        ),
    };
    Pages::global().render(
        status,
        "message.html",
        context! { portal => rt.portal(), title => title, message => message,
        link => rt.portal_url("/login"), link_text => crate::i18n::t("back-to-sign-in") },
    )
}

fn link_page(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    (user, purpose): (&UserRecord, LinkPurpose),
    expires: chrono::DateTime<Utc>,
    error: Option<String>,
) -> Response {
    let (jar, pre) = pre_session(rt, jar);
    let status = match error {
        Some(_) => StatusCode::UNPROCESSABLE_ENTITY,
        None => StatusCode::OK,
    };
    let page = Pages::global().render(
        status,
        "set_password.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&pre),
            invitation => purpose == LinkPurpose::Invitation,
            username_value => user.username, display_name => user.name.as_deref().unwrap_or(&user.username),
            min_length => st.authn.settings().factors.password.min_length,
            expires => expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            expires_text => expires.format("%-d %B %Y, %H:%M UTC").to_string(),
            error => error,
        },
    );
    (jar, page).into_response()
}

/// `GET {portal}/invite/{token}` and `GET {portal}/reset/{token}`.
pub async fn link_open(
    Visit { st, here: rt, jar }: Visit,
    uri: axum::http::Uri,
    Path(token): Path<String>,
) -> Response {
    let purpose = purpose_of(uri.path());
    match st.authn.open_link(&token, purpose).await {
        Ok(link) => link_page(&st, &rt, jar, (&link.user, purpose), link.expires_at, None),
        Err(e) => link_refused(&rt, &e),
    }
}

/// The set-password form.
#[derive(Deserialize)]
pub struct SetPasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST {portal}/invite/{token}` and `POST {portal}/reset/{token}`: the new password.
pub async fn link_redeem(
    Visit { st, here: rt, jar }: Visit,
    uri: axum::http::Uri,
    Path(token): Path<String>,
    peer: Peer,
    tls: Option<Extension<PeerCertificates>>,
    headers: HeaderMap,
    Form(f): Form<SetPasswordForm>,
) -> Response {
    if let Err(e) = check_csrf(&st, &rt, &jar, None, &f.csrf) {
        return e.into_response();
    }
    let purpose = purpose_of(uri.path());
    let link = match st.authn.open_link(&token, purpose).await {
        Ok(l) => l,
        Err(e) => return link_refused(&rt, &e),
    };
    if f.password != f.confirm {
        let why = crate::i18n::t("password-not-same");
        let again = (&link.user, purpose);
        return link_page(&st, &rt, jar, again, link.expires_at, Some(why));
    }
    let ip = client_ip(&rt, peer.0, &headers);
    let (user, factor) = match st.authn.redeem_link(&token, purpose, &f.password, ip).await {
        Ok(r) => r,
        Err(AuthError::Rejected(why)) => {
            let why = crate::i18n::t_with("password-choose-another", &[("why", why.into())]);
            let again = (&link.user, purpose);
            return link_page(&st, &rt, jar, again, link.expires_at, Some(why));
        }
        Err(e) => return link_refused(&rt, &e),
    };
    if purpose == LinkPurpose::PasswordReset {
        // Whoever knew the old password is signed out everywhere.
        if let Err(e) = st.sessions.end_all(&user.id).await {
            return PortalError::from(e).into_response();
        }
        audit(
            &st,
            "sessions.ended",
            &user.username,
            ip,
            serde_json::json!({ "why": "password_reset" }),
        )
        .await;
    }
    let attempt = FirstFactor {
        user,
        factor,
        also: Vec::new(),
        target: None,
        remember: false,
        ip,
        headers: &headers,
        connection: Connection {
            peer: Some(peer.0.ip()),
            tls: tls.as_ref().map(|t| &t.0),
        },
        upstream: None,
    };
    let user_id = attempt.user.id.clone();
    let next = sign_in(&st, &rt, &jar, attempt).await;
    let next = match (purpose, next) {
        (
            LinkPurpose::Invitation,
            Next::Go {
                url,
                session: Some((s, persistent)),
                device_cookie,
            },
        ) => {
            let grant = EnrolGrant {
                user_id,
                session: st.signer.session_handle(&s.id),
                next: url,
                complete: !s.data.pending,
                first_sign_in: false,
            };
            Next::Go {
                url: welcome_url(&st, &rt, &grant),
                session: Some((s, persistent)),
                device_cookie,
            }
        }
        (_, other) => other,
    };
    next.respond(&rt, jar, false)
}

/// The zone of `enrolment.at_first_sign_in.networks` that `ip` is in, if any.
fn first_sign_in_zone(rt: &Here, ip: Option<std::net::IpAddr>) -> Option<&str> {
    let ip = ip?;
    rt.config.enrolment.first_sign_in_networks().find(|zone| {
        rt.config.networks.get(*zone).is_some_and(|cidrs| {
            cidrs.iter().any(|c| {
                let c = c.as_str().trim();
                c.parse::<ipnet::IpNet>()
                    .map(|n| n.contains(&ip))
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(|a| a == ip))
                    .unwrap_or(false)
            })
        })
    })
}

/// `enrolment.at_first_sign_in`: a password sign-in the policy asks more of (`next`, a
/// pending session bound for the step-up page), for `user` who has nothing but a password,
/// from one of the named zones, goes to the welcome page with an enrolment grant instead:
/// add a passkey or an authenticator app, then pass the step-up with it. Audited. From
/// anywhere else, with any other factor, or when the user's factors cannot be read (fail
/// closed), `next` is unchanged: the step-up page's "ask your administrator".
pub async fn at_first_sign_in(
    st: &Shared,
    rt: &Here,
    user: &UserRecord,
    ip: Option<std::net::IpAddr>,
    next: Next,
) -> Next {
    let (url, session, persistent, device_cookie) = match next {
        Next::Go {
            url,
            session: Some((session, persistent)),
            device_cookie,
        } => (url, session, persistent, device_cookie),
        other => return other,
    };
    let unchanged = |url, session, device_cookie| Next::Go {
        url,
        session: Some((session, persistent)),
        device_cookie,
    };
    let f = &rt.config.factors;
    let Some(zone) = first_sign_in_zone(rt, ip) else {
        return unchanged(url, session, device_cookie);
    };
    if !session.data.pending || !(f.webauthn.enabled || f.totp.enabled) {
        return unchanged(url, session, device_cookie);
    }
    let only_password = match st.authn.enrolled(user).await {
        Ok(e) => e.iter().all(|e| e.kind == FactorKind::Password),
        Err(_) => false,
    };
    if !only_password {
        return unchanged(url, session, device_cookie);
    }
    audit(
        st,
        "enrolment.at_first_sign_in",
        &user.username,
        ip,
        serde_json::json!({ "network": zone }),
    )
    .await;
    let grant = EnrolGrant {
        user_id: user.id.clone(),
        session: st.signer.session_handle(&session.id),
        next: url,
        complete: false,
        first_sign_in: true,
    };
    Next::Go {
        url: welcome_url(st, rt, &grant),
        session: Some((session, persistent)),
        device_cookie,
    }
}

fn welcome_url(st: &Shared, rt: &Here, grant: &EnrolGrant) -> String {
    let payload = serde_json::to_string(grant).unwrap_or_default();
    let expires = Utc::now().timestamp() + rt.config.server.return_target_ttl.as_secs() as i64;
    let g = st.signer.sign(GRANT, &payload, expires);
    rt.portal_url(&format!("/welcome?g={g}"))
}

/// The session and user an enrolment grant `g` is for: genuine, unexpired, and this
/// request's live session (pending or complete).
pub async fn granted(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
    g: &str,
) -> Result<(Session, UserRecord, EnrolGrant), PortalError> {
    let expired = || PortalError::LinkExpired {
        portal: rt.portal().to_string(),
        username: None,
    };
    let grant: EnrolGrant = st
        .signer
        .verify(GRANT, g, Utc::now().timestamp())
        .and_then(|p| serde_json::from_str(&p).ok())
        .ok_or_else(expired)?;
    if !super::links::allowed_target(rt, &grant.next) {
        return Err(expired());
    }
    let Some(session) = live_session(st, rt, jar).await? else {
        return Err(PortalError::SignedOut {
            portal: rt.portal().to_string(),
        });
    };
    if session.data.user_id != grant.user_id
        || !st.signer.session_handle_ok(&session.id, &grant.session)
    {
        return Err(expired());
    }
    let Some(user) = user_of(st, &session).await? else {
        return Err(PortalError::SignedOut {
            portal: rt.portal().to_string(),
        });
    };
    Ok((session, user, grant))
}

/// `GET {portal}/welcome?g=…`: add a passkey or an authenticator app, then go on.
pub async fn welcome_page(
    Visit { st, here: rt, jar }: Visit,
    Query(q): Query<GrantQuery>,
) -> Result<Response, PortalError> {
    let (session, user, grant) = granted(&st, &rt, &jar, &q.g).await?;
    Ok(render_welcome(&st, &rt, (&session, &user, &grant), &q.g, None).await)
}

async fn render_welcome(
    st: &Shared,
    rt: &Here,
    (session, user, grant): (&Session, &UserRecord, &EnrolGrant),
    g: &str,
    error: Option<String>,
) -> Response {
    let enrolled = st.authn.enrolled(user).await.unwrap_or_default();
    let has_second = enrolled
        .iter()
        .any(|e| e.kind != FactorKind::Password && e.kind != FactorKind::RecoveryCodes);
    let f = &rt.config.factors;
    Pages::global().render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        "welcome.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&session.id),
            display_name => user.name.as_deref().unwrap_or(&user.username),
            grant => g, next => grant.next, complete => grant.complete, has_second => has_second,
            first_sign_in => grant.first_sign_in,
            webauthn => f.webauthn.enabled, totp => f.totp.enabled, error => error,
        },
    )
}

/// The welcome page's authenticator-app forms.
#[derive(Deserialize)]
pub struct WelcomeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    g: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    code: String,
}

/// `POST {portal}/welcome/totp/start` (the QR code) and `/welcome/totp/confirm` (its first
/// code, then on to `next`).
pub async fn welcome_totp(
    Visit { st, here: rt, jar }: Visit,
    Path(step): Path<String>,
    Form(f): Form<WelcomeForm>,
) -> Result<Response, PortalError> {
    let (session, user, grant) = granted(&st, &rt, &jar, &f.g).await?;
    check_csrf(&st, &rt, &jar, Some(&session), &f.csrf)?;
    let a = &st.authn;
    let on = (&session, &user, &grant);
    let frame = context! {
        portal => rt.portal(), csrf => st.signer.csrf_token(&session.id),
        action => rt.portal_url("/welcome/totp/confirm"), grant => f.g,
    };
    Ok(match step.as_str() {
        "start" => match a.enrol_totp_start(&user).await {
            Ok(p) => Pages::global().render(
                StatusCode::OK,
                "enrol_totp.html",
                context! { ..frame, ..context! { qr_svg => p.qr_svg, secret => p.seed_base32, token => p.token } },
            ),
            Err(e) => render_welcome(&st, &rt, on, &f.g, Some(auth_message(&e))).await,
        },
        "confirm" => match a.enrol_totp_confirm(&user, &f.token, &f.code).await {
            Ok(_) => see_other(&grant.next),
            Err(e) => {
                let why =
                    crate::i18n::t_with("totp-not-added", &[("why", auth_message(&e).into())]);
                render_welcome(&st, &rt, on, &f.g, Some(why)).await
            }
        },
        _ => return Err(PortalError::BadRequest),
    })
}

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

/// The recovery-code form.
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

/// `POST {portal}/forgot`: a recovery code (used up, regulated like any factor) earns a
/// reset link of the user's own, followed at once: the set-password page.
pub async fn forgot_submit(
    Visit { st, here: rt, jar }: Visit,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<ForgotForm>,
) -> Response {
    if let Err(e) = check_csrf(&st, &rt, &jar, None, &f.csrf) {
        return e.into_response();
    }
    let ip = client_ip(&rt, peer.0, &headers);
    let username = f.username.trim();
    let no_match = || (StatusCode::UNAUTHORIZED, crate::i18n::t("forgot-no-match"));
    let user = match st.authn.find_user(username).await {
        Ok(Some(u)) if !u.disabled => u,
        Ok(_) => return forgot(&st, &rt, jar, Some(no_match()), username),
        Err(e) => {
            let e = (StatusCode::SERVICE_UNAVAILABLE, auth_message(&e));
            return forgot(&st, &rt, jar, Some(e), username);
        }
    };
    if let Err(e) = st.authn.verify_recovery_code(&user, &f.code, ip).await {
        let e = match e {
            AuthError::InvalidCredentials | AuthError::NotEnrolled(_) => no_match(),
            AuthError::Locked { .. } | AuthError::AccountLocked => {
                (StatusCode::TOO_MANY_REQUESTS, auth_message(&e))
            }
            other => (StatusCode::SERVICE_UNAVAILABLE, auth_message(&other)),
        };
        return forgot(&st, &rt, jar, Some(e), username);
    }
    let purpose = LinkPurpose::PasswordReset;
    match st
        .authn
        .issue_link(&user, purpose, SELF_RESET_TTL, None)
        .await
    {
        Ok(link) => {
            let url = rt.portal_url(&format!("/reset/{}", link.token.as_str()));
            (jar, see_other(&url)).into_response()
        }
        Err(e) => {
            let e = (StatusCode::SERVICE_UNAVAILABLE, auth_message(&e));
            forgot(&st, &rt, jar, Some(e), username)
        }
    }
}

/// The e-mail code forms of "Forgot your password?".
#[derive(Deserialize)]
pub struct ForgotEmailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    code: String,
}

/// `POST {portal}/forgot/email/send`: e-mails a code to the address the user signs in with
/// (`factors.email_otp` enabled and an address confirmed). The answer is the same whether
/// or not the name exists or has an address, and the message is sent after the answer, so
/// neither the words nor the time tell who has an account.
pub async fn forgot_email_send(
    Visit { st, here: rt, jar }: Visit,
    Form(f): Form<ForgotEmailForm>,
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
    Visit { st, here: rt, jar }: Visit,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<ForgotEmailForm>,
) -> Response {
    if let Err(e) = check_csrf(&st, &rt, &jar, None, &f.csrf) {
        return e.into_response();
    }
    if !rt.config.factors.email_otp.resets_passwords() {
        return PortalError::BadRequest.into_response();
    }
    let ip = client_ip(&rt, peer.0, &headers);
    let username = f.username.trim();
    let no_match = || {
        (
            StatusCode::UNAUTHORIZED,
            crate::i18n::t("forgot-code-no-match"),
        )
    };
    let again = |st: &Shared, jar, e| forgot_with(st, &rt, jar, Some(e), username, Some(username));
    let user = match st.authn.find_user(username).await {
        Ok(Some(u)) if !u.disabled => u,
        Ok(_) => return again(&st, jar, no_match()),
        Err(e) => {
            return again(
                &st,
                jar,
                (StatusCode::SERVICE_UNAVAILABLE, auth_message(&e)),
            )
        }
    };
    if let Err(e) = st
        .authn
        .verify_otp(&user, FactorKind::EmailOtp, &f.code, ip)
        .await
    {
        let e = match e {
            AuthError::InvalidCredentials
            | AuthError::NotEnrolled(_)
            | AuthError::Expired
            | AuthError::Replayed => no_match(),
            AuthError::Locked { .. } | AuthError::AccountLocked | AuthError::TooManyGuesses => {
                (StatusCode::TOO_MANY_REQUESTS, auth_message(&e))
            }
            other => (StatusCode::SERVICE_UNAVAILABLE, auth_message(&other)),
        };
        return again(&st, jar, e);
    }
    audit(
        &st,
        "password.reset_code_used",
        &user.username,
        ip,
        serde_json::json!({ "by": "email_otp" }),
    )
    .await;
    match st
        .authn
        .issue_link(&user, LinkPurpose::PasswordReset, SELF_RESET_TTL, None)
        .await
    {
        Ok(link) => {
            let url = rt.portal_url(&format!("/reset/{}", link.token.as_str()));
            (jar, see_other(&url)).into_response()
        }
        Err(e) => again(
            &st,
            jar,
            (StatusCode::SERVICE_UNAVAILABLE, auth_message(&e)),
        ),
    }
}
