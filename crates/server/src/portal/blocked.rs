//! The blocked page — which checks failed and how to fix each — and "Re-check my device",
//! which reads the device fresh from its connector's UEM (or asks the re-check webhook) and goes back to where the user was going,
//! so every policy is judged again with it.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::context;
use serde::Deserialize;

use super::error::PortalError;
use super::extract::{check_csrf, live_session, Visit};
use super::links::Links;
use super::pages::Pages;
use super::stepup::TokenQuery;
use crate::app::responses::see_other;
use crate::app::signer::random_id;
use crate::devices::connectors::Connectors;
use crate::session::cookies::{plain_cookie, PRE_COOKIE};

/// What every blocked page shows besides the policy's words: the app's name, when, the
/// help desk (`portal.help`), and "Re-check my device" only when the deciding policy reads
/// the device or a device check failed — a refusal by group, network or time does not
/// change when the device is re-checked.
pub fn outcome_context(
    rt: &crate::app::state::Runtime,
    target: &str,
    policy: &str,
    items: &[stepgate_policy::RemediationItem],
) -> minijinja::Value {
    let host = url::Url::parse(target)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let app_name = host.as_deref().and_then(|h| {
        rt.app_for_host(h)
            .map(|a| a.name.clone().unwrap_or_else(|| a.id.to_string()))
    });
    let device =
        rt.config.policy_set.reads_device(policy) || items.iter().any(|i| i.check != "policy");
    let now = Utc::now();
    context! {
        recheck => device, app_name => app_name, help => rt.config.portal.help.as_deref(),
        at => now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        at_text => now.format("%-d %B %Y, %H:%M UTC").to_string(),
    }
}

/// `GET {portal}/blocked?t=…`.
pub async fn blocked_page(
    Visit { st, here: rt, jar }: Visit,
    Query(q): Query<TokenQuery>,
) -> Result<Response, PortalError> {
    let session = live_session(&st, &rt, &jar).await?;
    let Some(b) = Links::new(&st.signer, &rt).verify_blocked(q.token(), Utc::now()) else {
        return Err(PortalError::LinkExpired {
            portal: rt.portal().to_string(),
            username: session.map(|s| s.data.username.clone()),
        });
    };
    // The re-check form is bound to the session, or before sign-in to a pre-session cookie.
    let (jar, binding) = match (&session, jar.get(PRE_COOKIE)) {
        (Some(s), _) => (jar.clone(), s.id.clone()),
        (None, Some(pre)) => (jar.clone(), pre.to_string()),
        (None, None) => {
            let v = random_id();
            let secure = rt.config.sessions.cookie.secure;
            (jar.set(plain_cookie(PRE_COOKIE, v.clone(), secure)), v)
        }
    };
    let outcome = outcome_context(&rt, &b.rt, &b.policy, &b.items);
    let page = Pages::global().render(
        StatusCode::FORBIDDEN,
        "blocked.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&binding),
            username => session.as_ref().map(|s| s.data.username.clone()),
            token => q.token(), demo => st.options.demo,
            message => b.message, items => crate::i18n::checks(&b.items), policy => b.policy, give_up => crate::oidc::authorize::cancel_link(&rt, &b.rt),
            request_id => b.rid,
            ..outcome
        },
    );
    Ok((jar, page).into_response())
}

/// The re-check form.
#[derive(Deserialize)]
pub struct RecheckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    t: String,
}

/// `POST {portal}/recheck`: ask the UEM to re-check the device, wait (bounded) for its
/// fresh posture, then go back to the target, which re-evaluates every policy with it.
pub async fn recheck(
    Visit { st, here: rt, jar }: Visit,
    Form(f): Form<RecheckForm>,
) -> Result<Response, PortalError> {
    let session = live_session(&st, &rt, &jar).await?;
    check_csrf(&st, &rt, &jar, session.as_ref(), &f.csrf)?;
    let device = session.as_ref().and_then(|s| s.data.device_id.clone());
    // A device a connector wrote is read fresh from its UEM; others ask the webhook.
    let pulled = match &device {
        Some(id) => Connectors::recheck(&st, id).await.is_some(),
        None => false,
    };
    if let (false, Some(client), Some(device_id)) = (pulled, st.signals.recheck.as_ref(), device) {
        let waiter = st.signals.hub.subscribe();
        let owner = session.as_ref().map(|s| s.data.username.clone());
        match client
            .request(&device_id, owner.as_deref(), Utc::now())
            .await
        {
            Ok(()) => {
                if !waiter.wait_for(&device_id, client.wait()).await {
                    tracing::info!(device = %device_id, "re-check: no fresh posture within the wait");
                }
            }
            Err(e) => tracing::warn!(device = %device_id, error = %e, "re-check webhook failed"),
        }
    }
    let links = Links::new(&st.signer, &rt);
    Ok(match links.verify_blocked(&f.t, Utc::now()) {
        Some(b) if session.is_some() => see_other(&b.rt),
        // A blocked sign-in: start the sign-in again.
        Some(b) => {
            let t = links.sign_return(&b.rt, Utc::now()).unwrap_or_default();
            see_other(&rt.portal_url(&format!("/login?t={t}")))
        }
        None => see_other(&rt.portal_url("/login")),
    })
}
