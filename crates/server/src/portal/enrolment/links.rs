//! The administrator's single-use links (an invitation, a password reset): the
//! set-password page they open (read only), and redeeming one, which sets the password,
//! uses the link up and decides the sign-in through the access pipeline.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::context;
use serde::Deserialize;
use stepgate_authn::service::AuthError;
use stepgate_authn::LinkPurpose;
use stepgate_store::UserRecord;

use super::welcome::{welcome_url, EnrolGrant};
use crate::app::state::Shared;
use crate::portal::error::PortalError;
use crate::portal::extract::{check_csrf, Here, Visit};
use crate::portal::pages::Pages;
use crate::portal::signin::{pre_session, sign_in, Arrival, FirstFactor, Incoming, Next};
use crate::portal::{audit, auth_message};
use crate::session::cookies::CookieJar;

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
    incoming: Incoming,
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
    let from = Arrival::of(&rt, &incoming);
    let ip = from.ip;
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
        if let Err(e) = sign_out_everywhere(&st, &user, ip).await {
            return e.into_response();
        }
    }
    let attempt = FirstFactor::new(user, factor, from);
    let user_id = attempt.user.id.clone();
    let next = sign_in(&st, &rt, &jar, attempt).await;
    let next = match purpose {
        LinkPurpose::Invitation => to_welcome(&st, &rt, user_id, next),
        _ => next,
    };
    next.respond(&rt, jar, false)
}

/// After a password reset: whoever knew the old password is signed out everywhere.
async fn sign_out_everywhere(
    st: &Shared,
    user: &UserRecord,
    ip: Option<std::net::IpAddr>,
) -> Result<(), PortalError> {
    st.sessions.end_all(&user.id).await?;
    audit(
        st,
        "sessions.ended",
        &user.username,
        ip,
        serde_json::json!({ "why": "password_reset" }),
    )
    .await;
    Ok(())
}

/// An invitation's sign-in that made a session goes to the welcome page first, with the
/// enrolment grant the link's use earned.
fn to_welcome(st: &Shared, rt: &Here, user_id: String, next: Next) -> Next {
    match next {
        Next::Go {
            url,
            session: Some((s, persistent)),
            device_cookie,
        } => {
            let grant = EnrolGrant {
                user_id,
                session: st.signer.session_handle(&s.id),
                next: url,
                complete: !s.data.pending,
                first_sign_in: false,
            };
            Next::Go {
                url: welcome_url(st, rt, &grant),
                session: Some((s, persistent)),
                device_cookie,
            }
        }
        other => other,
    }
}
