//! Step-up delegated to the provider: the step-up page's "Confirm with <provider>" offers
//! ([`step_up_offers`]), and the provider's answer checked ([`stepped_up`]) before what it
//! proved counts.

use axum::response::{IntoResponse, Response};
use chrono::Utc;
use stepgate_config::identity::IdentityProviderConfig;
use stepgate_policy::StepUpRequirement;
use stepgate_store::{UserRecord, UPSTREAM_LINK_KIND};

use super::{display_name, refused, Flow};
use crate::app::state::Shared;
use crate::idp::id_token;
use crate::idp::{accounts, claims, UpstreamError};
use crate::portal::audit;
use crate::portal::error::PortalError;
use crate::portal::extract::{step_context, Here};
use crate::session::cookies::CookieJar;
use crate::session::Session;

/// A delegated step-up's answer: the provider must have authenticated the session's own
/// user (the subject linked to them), again (`auth_time` not before the flow started), at
/// the level asked (`acr`); then what it proved counts as the trust mapping says, and the
/// step-up goes on as for any factor passed here.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stepped_up(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    cfg: &IdentityProviderConfig,
    flow: &Flow,
    token: &str,
    who: &claims::UpstreamIdentity,
    ip: Option<std::net::IpAddr>,
) -> Response {
    let (session, user, step) = match step_context(st, rt, &jar, token).await {
        Ok(c) => c,
        Err(e) => return (jar, e).into_response(),
    };
    let id = cfg.id.as_str();
    let link = match st
        .stores
        .durable
        .find_factor(UPSTREAM_LINK_KIND, &accounts::link_key(id, &who.sub))
        .await
    {
        Ok(l) => l,
        Err(e) => return (jar, PortalError::from(e)).into_response(),
    };
    let linked = link.is_some_and(|l| l.user_id == user.id);
    let problem = not_as_asked(cfg, flow, who, linked);
    if let Some(e) = problem {
        let page = refused(st, rt, cfg, &e, ip, Some(&user.username)).await;
        return (jar, page).into_response();
    }
    let factors = claims::factors(who, &cfg.trust, Utc::now());
    audit(
        st,
        "stepup.upstream",
        &user.username,
        ip,
        serde_json::json!({ "provider": id, "acr": who.acr, "counted": factors.iter().map(|f| &f.amr).collect::<Vec<_>>() }),
    )
    .await;
    let on = crate::portal::stepup::page(&session, &user, token, &step);
    crate::portal::stepup::passed_all(st, rt, jar, on, factors, false).await
}

/// Why the provider's answer does not count as the step-up asked, if it does not: another
/// account than the session's (`linked` false), another level than `step_up_acr`, or no
/// new authentication since the flow started.
fn not_as_asked(
    cfg: &IdentityProviderConfig,
    flow: &Flow,
    who: &claims::UpstreamIdentity,
    linked: bool,
) -> Option<UpstreamError> {
    let provider = cfg.id.to_string();
    let fresh = who
        .auth_time
        .is_some_and(|t| t.timestamp() >= flow.at - id_token::LEEWAY_SECS as i64);
    if !linked {
        Some(UpstreamError::Unusable {
            provider,
            detail: "you confirmed as another account at the provider".into(),
        })
    } else if who.acr.is_none() || who.acr != cfg.step_up_acr {
        Some(UpstreamError::Refused {
            provider,
            detail: format!(
                "it answered acr {:?}, not the {:?} asked for",
                who.acr, cfg.step_up_acr
            ),
        })
    } else if !fresh {
        Some(UpstreamError::Refused {
            provider,
            detail: "it did not authenticate you again (auth_time is older than the request)"
                .into(),
        })
    } else {
        None
    }
}

/// The providers the step-up page offers for `req`: those with delegated step-up that the
/// user is linked to, whose step-up answer (`trust.acr` of `step_up_acr`, passed now) would
/// meet it; `(label, start URL)`.
pub async fn step_up_offers(
    st: &Shared,
    rt: &Here,
    session: &Session,
    user: &UserRecord,
    req: &StepUpRequirement,
    token: &str,
) -> Vec<(String, String)> {
    let with_step_up: Vec<&IdentityProviderConfig> = rt
        .config
        .identity_providers
        .iter()
        .filter(|p| p.step_up_acr.is_some())
        .collect();
    if with_step_up.is_empty() {
        return Vec::new();
    }
    let links = st
        .stores
        .durable
        .list_factors(&user.id)
        .await
        .unwrap_or_default();
    let now = Utc::now();
    let mut out = Vec::new();
    for p in with_step_up {
        let linked = links.iter().any(|l| {
            l.kind == UPSTREAM_LINK_KIND
                && l.data.get("provider").and_then(|v| v.as_str()) == Some(p.id.as_str())
        });
        let answer = claims::UpstreamIdentity {
            sub: String::new(),
            username: String::new(),
            name: None,
            email: None,
            email_verified: false,
            groups: Vec::new(),
            attributes: Default::default(),
            amr: Vec::new(),
            acr: p.step_up_acr.clone(),
            auth_time: Some(now),
        };
        let mut factors = session.data.factors.clone();
        factors.extend(claims::factors(&answer, &p.trust, now));
        if linked && stepgate_authn::meets(&factors, req, &rt.config.assurance, now) {
            let url = format!(
                "{}/login/upstream/{}?step={}",
                rt.portal(),
                p.id.as_str(),
                url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
            );
            out.push((display_name(p), url));
        }
    }
    out
}
