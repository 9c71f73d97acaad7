//! Passkeys and security keys: the JSON ceremonies the portal's script drives — signing in
//! with a passkey alone, stepping up with one, and registering one (behind a fresh
//! factor). The CSRF token travels in the `x-csrf-token` header; each ceremony's state is
//! kept in the hot store for five minutes and can be finished once.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use stepgate_authn::service::AuthError;
use stepgate_authn::webauthn::RegistrationKind;
use stepgate_authn::FactorKind;

use super::error::PortalError;
use super::extract::{csrf_ok, signed_in, step_context, Here, Visit};
use super::links::Links;
use super::links::StepToken;
use super::signin::{sign_in, Arrival, FirstFactor, Incoming};
use super::stepup::{page, passed};
use super::{account, audit_failure, auth_message, enrolment, Failure};
use crate::access::request::client_ip;
use crate::app::responses::{security_headers, Peer};
use crate::app::signer::random_id;
use crate::app::state::Shared;
use crate::session::cookies::CookieJar;
use crate::session::Session;
use stepgate_store::UserRecord;

/// What the script posts.
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
    /// Registration: the step-up the user came to add this factor for.
    #[serde(default)]
    then: String,
}

fn header_csrf(headers: &HeaderMap) -> &str {
    headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn form_expired() -> PortalError {
    PortalError::json(
        StatusCode::FORBIDDEN,
        &crate::i18n::t("webauthn-page-expired"),
    )
}

/// The CSRF header, checked against the session's (or before sign-in the pre-session
/// cookie's) token.
fn check_header(
    st: &Shared,
    jar: &CookieJar,
    session: Option<&Session>,
    headers: &HeaderMap,
) -> Result<(), PortalError> {
    match csrf_ok(st, jar, session, header_csrf(headers)) {
        true => Ok(()),
        false => Err(form_expired()),
    }
}

/// A failed ceremony step, as the script shows it.
fn refused(status: StatusCode, e: &stepgate_authn::service::AuthError) -> PortalError {
    let message = match e {
        stepgate_authn::service::AuthError::InvalidCredentials => {
            crate::i18n::t("webauthn-not-this-account")
        }
        other => auth_message(other),
    };
    PortalError::json(status, &message)
}

/// How long a ceremony's state is kept, and how long its id is remembered as used.
const CEREMONY_TTL: std::time::Duration = std::time::Duration::from_secs(300);
const USED_TTL: std::time::Duration = std::time::Duration::from_secs(600);

async fn keep_ceremony(st: &Shared, state: serde_json::Value) -> Result<String, PortalError> {
    let id = random_id();
    st.stores
        .hot
        .push_recent(&format!("webauthn:{id}"), &state, 1, CEREMONY_TTL)
        .await?;
    Ok(id)
}

async fn take_ceremony(st: &Shared, id: &str) -> Result<serde_json::Value, PortalError> {
    let expired = || {
        PortalError::json(
            StatusCode::BAD_REQUEST,
            &crate::i18n::t("webauthn-prompt-expired"),
        )
    };
    if id.is_empty() || id.len() > 64 {
        return Err(PortalError::json(
            StatusCode::BAD_REQUEST,
            &crate::i18n::t("webauthn-prompt-expired"),
        ));
    }
    // Each ceremony state can be finished once.
    let first = st
        .stores
        .hot
        .remember_once(&format!("webauthn-used:{id}"), USED_TTL)
        .await?;
    let state = st
        .stores
        .hot
        .recent(&format!("webauthn:{id}"))
        .await?
        .into_iter()
        .next();
    match (first, state) {
        (true, Some(s)) => Ok(s),
        _ => Err(expired()),
    }
}

/// The ceremony's options, under a new ceremony id.
async fn started(
    st: &Shared,
    options: serde_json::Value,
    state: serde_json::Value,
) -> Result<Response, PortalError> {
    let id = keep_ceremony(st, state).await?;
    Ok(Json(serde_json::json!({ "id": id, "options": options })).into_response())
}

/// `POST {portal}/webauthn/login/start`: a passkey sign-in's challenge.
pub async fn webauthn_login_start(
    Visit { st, jar, .. }: Visit,
    headers: HeaderMap,
    // The body carries nothing this step needs; it must still be a JSON request.
    Json(_body): Json<WebauthnBody>,
) -> Result<Response, PortalError> {
    check_header(&st, &jar, None, &headers)?;
    let (mut options, state) = st
        .authn
        .webauthn_auth_start(None)
        .await
        .map_err(|e| refused(StatusCode::BAD_REQUEST, &e))?;
    // The prompt is started by a click, not by form autofill.
    if let Some(o) = options.as_object_mut() {
        o.remove("mediation");
    }
    Ok(security_headers(started(&st, options, state).await?))
}

/// `POST {portal}/webauthn/login/finish`: the passkey as the first factor of a sign-in.
pub async fn webauthn_login_finish(
    Visit { st, here: rt, jar }: Visit,
    incoming: Incoming,
    Json(b): Json<WebauthnBody>,
) -> Result<Response, PortalError> {
    check_header(&st, &jar, None, incoming.headers())?;
    let state = take_ceremony(&st, &b.id).await?;
    let from = Arrival::of(&rt, &incoming);
    let assertion = b.response.clone();
    let (user, factor) = match st
        .authn
        .webauthn_auth_finish(state, b.response, from.ip)
        .await
    {
        Ok(passed) => passed,
        Err(e) => {
            // Whose passkey it claims to be, when the store knows the credential.
            let owner = st.authn.passkey_owner(&assertion).await;
            let failure = Failure::of(true, FactorKind::Webauthn.as_str());
            audit_failure(&st, &rt, owner.as_ref(), from.ip, failure, &e).await;
            return Err(refused(StatusCode::UNAUTHORIZED, &e));
        }
    };
    let attempt = FirstFactor {
        target: Links::new(&st.signer, &rt).verify_return(&b.token, Utc::now()),
        ..FirstFactor::new(user, factor, from)
    };
    let next = sign_in(&st, &rt, &jar, attempt).await;
    Ok(next.respond(&rt, jar, true))
}

/// The step-up a passkey ceremony belongs to: the live session, its user and the signed
/// step-up link, with the CSRF header matched.
async fn stepping(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
    headers: &HeaderMap,
    token: &str,
) -> Result<(Session, UserRecord, StepToken), PortalError> {
    let Ok((session, user, step)) = step_context(st, rt, jar, token).await else {
        return Err(PortalError::json(
            StatusCode::UNAUTHORIZED,
            &crate::i18n::t("webauthn-session-expired"),
        ));
    };
    check_header(st, jar, Some(&session), headers)?;
    Ok((session, user, step))
}

/// Who a registration is for, with the CSRF header matched: the signed-in user, or, with
/// an enrolment grant (`token`, from a redeemed invitation), that grant's session — pending
/// too — and where the sign-in goes on after.
async fn registering(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
    headers: &HeaderMap,
    grant: &str,
) -> Result<(Session, UserRecord, Option<String>), PortalError> {
    if !grant.is_empty() {
        let Ok((session, user, g)) = enrolment::granted(st, rt, jar, grant).await else {
            return Err(PortalError::json(
                StatusCode::UNAUTHORIZED,
                &crate::i18n::t("webauthn-invitation-expired"),
            ));
        };
        check_header(st, jar, Some(&session), headers)?;
        return Ok((session, user, Some(g.next)));
    }
    let Some((session, user)) = signed_in(st, rt, jar).await? else {
        return Err(PortalError::json(
            StatusCode::UNAUTHORIZED,
            &crate::i18n::t("webauthn-signed-out"),
        ));
    };
    check_header(st, jar, Some(&session), headers)?;
    Ok((session, user, None))
}

/// `POST {portal}/webauthn/step-up/start`: a step-up's challenge, for those of the user's
/// own keys that can satisfy it.
pub async fn webauthn_step_start(
    Visit { st, here: rt, jar }: Visit,
    headers: HeaderMap,
    Json(b): Json<WebauthnBody>,
) -> Result<Response, PortalError> {
    let (_, user, step) = stepping(&st, &rt, &jar, &headers, &b.token).await?;
    // The allow-list comes from what the step-up needs, not from which kinds exist.
    let (options, state) = st
        .authn
        .webauthn_step_up_start(&user, &step.req)
        .await
        .map_err(|e| refused(StatusCode::BAD_REQUEST, &e))?;
    started(&st, options, state).await
}

/// `POST {portal}/webauthn/step-up/finish`: the passkey as a step-up factor.
pub async fn webauthn_step_finish(
    Visit { st, here: rt, jar }: Visit,
    peer: Peer,
    headers: HeaderMap,
    Json(b): Json<WebauthnBody>,
) -> Result<Response, PortalError> {
    let (session, user, step) = stepping(&st, &rt, &jar, &headers, &b.token).await?;
    let state = take_ceremony(&st, &b.id).await?;
    let ip = client_ip(&rt, peer.0, &headers);
    let failure = Failure::of(step.sign_in, FactorKind::Webauthn.as_str());
    let (who, factor) = match st.authn.webauthn_auth_finish(state, b.response, ip).await {
        Ok(passed) => passed,
        Err(e) => {
            audit_failure(&st, &rt, Some(&user), ip, failure, &e).await;
            return Err(refused(StatusCode::UNAUTHORIZED, &e));
        }
    };
    if who.id != user.id {
        let e = AuthError::InvalidCredentials;
        audit_failure(&st, &rt, Some(&user), ip, failure, &e).await;
        return Err(PortalError::json(
            StatusCode::UNAUTHORIZED,
            &crate::i18n::t("webauthn-other-account"),
        ));
    }
    let on = page(&session, &user, &b.token, &step);
    Ok(passed(&st, &rt, jar, on, factor, true).await)
}

/// `POST {portal}/webauthn/register/start`: a new passkey's (or security key's) options.
pub async fn webauthn_register_start(
    Visit { st, here: rt, jar }: Visit,
    headers: HeaderMap,
    Json(b): Json<WebauthnBody>,
) -> Result<Response, PortalError> {
    let (session, user, granted) = registering(&st, &rt, &jar, &headers, &b.token).await?;
    // A grant is a fresh password of this very session; anyone else confirms it's them.
    if granted.is_none() {
        if let Err(r) = account::fresh_enough(&st, &rt, &session, &user, true, &b.then).await {
            return Ok(r);
        }
    }
    let kind = match b.kind.as_str() {
        "security_key" => RegistrationKind::SecurityKey,
        _ => RegistrationKind::Passkey,
    };
    let (mut options, state) = st
        .authn
        .webauthn_register_start(&user, kind)
        .await
        .map_err(|e| refused(StatusCode::BAD_REQUEST, &e))?;
    if kind == RegistrationKind::Passkey {
        require_resident_key(&mut options);
    }
    started(&st, options, state).await
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

/// `POST {portal}/webauthn/register/finish`: the new credential, stored.
pub async fn webauthn_register_finish(
    Visit { st, here: rt, jar }: Visit,
    headers: HeaderMap,
    Json(b): Json<WebauthnBody>,
) -> Result<Response, PortalError> {
    let (_, user, granted) = registering(&st, &rt, &jar, &headers, &b.token).await?;
    let state = take_ceremony(&st, &b.id).await?;
    let label = match b.label.trim() {
        "" => "Passkey",
        l => l,
    };
    st.authn
        .webauthn_register_finish(&user, state, b.response, label)
        .await
        .map_err(|e| refused(StatusCode::BAD_REQUEST, &e))?;
    let done = granted.unwrap_or_else(|| {
        rt.portal_url(&account::after_enrolment(
            &st, &rt, &user, "webauthn", &b.then,
        ))
    });
    Ok(Json(serde_json::json!({ "redirect": done })).into_response())
}
