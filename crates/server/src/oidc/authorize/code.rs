//! The end of an allowed authorization request: what the request itself asks is checked
//! against the session (a fresh enough sign-in, the level asked for), and the code is
//! issued to the client's redirect URI (once per pushed request).

use axum::response::Response;
use chrono::{DateTime, Utc};
use stepgate_authn::service::Authenticator;
use stepgate_policy::StepUpRequirement;

use super::flow::Flow;
use super::request::Asked;
use crate::access::Grant;
use crate::app::responses::see_other;
use crate::app::state::Shared;
use crate::oidc::grant::{self, Authorization, Code};
use crate::portal::extract::Here;

/// What the code is issued with, from the request's checks.
pub(super) struct Issue<'a> {
    /// The registered redirect URI the request named.
    pub(super) redirect_uri: &'a str,
    /// The granted scopes.
    pub(super) scope: String,
    /// The PKCE challenge.
    pub(super) challenge: Option<String>,
    /// The pushed request's id, when it was one.
    pub(super) pushed_jti: Option<&'a str>,
}

/// An allowed request: a fresh enough sign-in, the level asked for, then the code.
pub(super) async fn allow(flow: &Flow<'_>, g: &Grant, issue: Issue<'_>) -> Response {
    let auth_time = g.assurance.auth_time.unwrap_or(g.session.data.created_at);
    if !fresh_enough(&flow.asked, flow.reauth_since, auth_time, flow.now) {
        if flow.asked.none {
            return flow
                .back
                .error("login_required", "a fresh sign-in is needed");
        }
        return flow.to_login(Some(flow.now.timestamp()));
    }
    if let Some(level) = flow.asked.level.filter(|l| g.assurance.aal < *l) {
        if let Some(answer) = level_unmet(flow, g, level).await {
            return answer;
        }
    }
    issue_code(flow, g, auth_time, issue).await
}

/// `prompt=login`, `max_age`: a sign-in newer than the request's mark, or (max_age)
/// recent enough.
fn fresh_enough(
    asked: &Asked,
    reauth_since: Option<i64>,
    auth_time: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    match (asked.login, asked.max_age) {
        (false, None) => true,
        (login, max_age) => {
            let by_mark = reauth_since.is_some_and(|t| auth_time.timestamp() >= t);
            let by_age = !login && max_age.is_some_and(|m| (now - auth_time).num_seconds() <= m);
            by_mark || by_age
        }
    }
}

/// The session is below the level the request asks: the answer (an error, or the step-up
/// page when the user can reach it), or `None` to go on (a voluntary level the user
/// cannot reach: what the user can do is what they get).
async fn level_unmet(flow: &Flow<'_>, g: &Grant, level: u8) -> Option<Response> {
    let (asked, back) = (&flow.asked, flow.back);
    let req = StepUpRequirement {
        min_aal: Some(level),
        ..StepUpRequirement::default()
    };
    match reachable(flow.st, flow.rt, &g.user, &g.session, &req, flow.now).await {
        Err(e) => {
            tracing::error!(error = %e, "oidc authorize: reading the user's factors failed");
            Some(back.error("temporarily_unavailable", "try again shortly"))
        }
        Ok(false) if asked.essential => Some(back.error(
            "unmet_authentication_requirements",
            "the requested authentication level cannot be reached",
        )),
        // Voluntary: what the user can do is what they get.
        Ok(false) => None,
        Ok(true) if asked.none => Some(back.error("interaction_required", "a step-up is needed")),
        Ok(true) => Some(flow.to_step_up(g, req)),
    }
}

/// Seals the code (claiming a pushed request first, so it gives one code) and sends it to
/// the client.
async fn issue_code(
    flow: &Flow<'_>,
    g: &Grant,
    auth_time: DateTime<Utc>,
    issue: Issue<'_>,
) -> Response {
    let (st, client, back, now) = (flow.st, flow.client, flow.back, flow.now);
    let sct = grant::session_mark(g.session.data.created_at);
    let code = Code {
        auth: Authorization {
            cid: client.id.to_string(),
            uid: g.user.id.clone(),
            sct,
            aal: g.assurance.aal,
            amr: g.assurance.amr.clone(),
            auth_time: auth_time.timestamp(),
            scope: issue.scope,
            gid: grant::new_id(),
            nonce: flow.p.nonce.clone(),
        },
        ruri: issue.redirect_uri.to_string(),
        chal: issue.challenge,
        exp: now.timestamp() + flow.rt.config.oidc.code_lifetime.as_secs() as i64,
    };
    if let Some(jti) = issue.pushed_jti {
        // One code per pushed request.
        match st
            .stores
            .hot
            .remember_once(
                &format!("oidc:par:{jti}"),
                std::time::Duration::from_secs(300),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return back.error("invalid_request", "this request_uri was already used"),
            Err(e) => {
                tracing::error!(error = %e, "oidc authorize: the hot store failed");
                return back.error("temporarily_unavailable", "try again shortly");
            }
        }
    }
    crate::oidc::backchannel::signed_in(st, &g.user.id, sct, client.id.as_str()).await;
    match st.oidc.seal_code(&code) {
        Some(c) => {
            tracing::info!(client = %client.id.as_str(), user = %g.user.username, aal = g.assurance.aal, "oidc: code issued");
            see_other(&back.url(&[("code", &c)]))
        }
        None => back.error("server_error", "the code could not be issued"),
    }
}

/// Whether the user can reach `req` with the factors they have enrolled.
async fn reachable(
    st: &Shared,
    rt: &Here,
    user: &stepgate_store::UserRecord,
    session: &crate::session::Session,
    req: &StepUpRequirement,
    now: DateTime<Utc>,
) -> Result<bool, stepgate_authn::service::AuthError> {
    let enrolled = st.authn.enrolled(user).await?;
    let for_step = Authenticator::enrolled_for_step_up(&enrolled);
    let sat = stepgate_authn::satisfies(
        &session.data.auth_state(),
        req,
        &rt.config.assurance,
        &for_step,
        now,
    );
    Ok(sat.satisfied || !sat.candidates.is_empty())
}
