//! The enrolment grant and the welcome page: the one session a link's use (or
//! `enrolment.at_first_sign_in`) lets add a passkey or an authenticator app without a
//! fresh factor, then go on to where the sign-in was going.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::context;
use serde::{Deserialize, Serialize};
use stepgate_authn::FactorKind;
use stepgate_store::UserRecord;

use crate::app::responses::see_other;
use crate::app::state::Shared;
use crate::portal::error::PortalError;
use crate::portal::extract::{check_csrf, live_session, user_of, Here, Visit};
use crate::portal::pages::Pages;
use crate::portal::signin::Next;
use crate::portal::{audit, auth_message};
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

pub(super) fn welcome_url(st: &Shared, rt: &Here, grant: &EnrolGrant) -> String {
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
    if !crate::portal::links::allowed_target(rt, &grant.next) {
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
