//! What passing a step-up factor does: the factor recorded in the session under a new
//! session id, then on to the target once the requirement is met (completing a pending
//! sign-in), or the page again for the next factor.

use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use stepgate_authn::{satisfies, PassedFactor};

use super::page::{render, Shown};
use super::Page;
use crate::app::state::Shared;
use crate::portal::audit;
use crate::portal::error::PortalError;
use crate::portal::extract::Here;
use crate::portal::signin::{completed, Done, Next};
use crate::session::cookies::{session_cookie, CookieJar};
use crate::session::Session;

/// A factor was passed: record it, rotate the session id, and continue if the requirement
/// is now met (`json`: the passkey script follows `{"redirect": …}`).
pub(in crate::portal) async fn passed(
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
pub(in crate::portal) async fn passed_all(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    on: Page<'_>,
    factors: Vec<PassedFactor>,
    json: bool,
) -> Response {
    // A user signed in through a provider is re-checked there first: one disabled there
    // since cannot step up. The passkey script reads the refusal as JSON.
    let rechecked =
        match crate::portal::upstream::at_step_up(st, rt, on.session, on.step.sign_in).await {
            Ok(s) => s,
            Err(e) if json => return (jar, e.for_script()).into_response(),
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
        let on = Page {
            session: &new,
            ..on
        };
        return more_needed(st, rt, jar, on, json).await;
    }
    let detail = serde_json::json!({ "aal": new.data.aal(&rt.config.assurance) });
    let target = target_after(rt, on);
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
    step_up_recorded(st, on.user, &new, detail).await;
    let persistent = new.data.persistent;
    let next = Next::Go {
        url: target,
        session: Some((new, persistent)),
        device_cookie: None,
    };
    next.respond(rt, jar, json)
}

/// Where a met requirement leads: the target, or — for a request that cannot be replayed
/// (a POST) and was not sent — the "Confirmed" page ([`super::confirmed_page`]) leading back
/// to the page it was made from (a sign-in goes straight back there).
fn target_after(rt: &Here, on: Page<'_>) -> String {
    match &on.step.back {
        Some(_) if !on.step.sign_in => rt.portal_url(&format!("/confirmed?t={}", on.token)),
        Some(back) => back.clone(),
        None => on.step.rt.clone(),
    }
}

/// A step-up of a complete session made: audited, and the new session id indexed under
/// its device.
async fn step_up_recorded(
    st: &Shared,
    user: &stepgate_store::UserRecord,
    new: &Session,
    detail: serde_json::Value,
) {
    let ip = new.data.ip.as_deref().and_then(|s| s.parse().ok());
    audit(st, "stepup.success", &user.username, ip, detail).await;
    if let Some(d) = &new.data.device_id {
        st.devices.index_session(d, &new.id).await;
    }
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
