//! The start of the admin console: server-rendered pages under the portal (its layout,
//! CSP and scripts; no script of their own) for an administrator's portal session — the
//! users with unlock and end-sessions buttons, and a decision looked up by request id with
//! its trace. The rules are the API's: a member of `admin.group` reads; a change (a CSRF
//! form) also needs AAL3 within `admin.write_max_age`, else the step-up page, which
//! returns here. Every change is audited under the administrator's name.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::Form;
use chrono::Utc;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::caller::step_up_needed;
use crate::app::responses::see_other;
use crate::portal::error::PortalError;
use crate::portal::extract::{check_csrf, Here, SignedIn, Visit};
use crate::portal::pages::{Message, Pages, WayOn};

/// The page for someone signed in but not in `admin.group`.
fn not_an_administrator(here: &Here, username: &str) -> Response {
    let text = format!(
        "{username} is not an administrator of this stepgate (the `{}` group).",
        here.config.admin.group
    );
    Message {
        portal: here.portal(),
        title: "Administrators only",
        text: &text,
        way_on: Some(WayOn::new(here.portal_url("/account"), "Security settings")),
        also: None,
    }
    .render(StatusCode::FORBIDDEN)
}

fn is_admin(here: &Here, user: &stepgate_store::UserRecord) -> bool {
    user.groups.iter().any(|g| *g == here.config.admin.group)
}

/// `GET {portal}/admin/users?search=`.
pub async fn users_page(
    Visit { st, here, .. }: Visit,
    SignedIn { session, user }: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    if !is_admin(&here, &user) {
        return Ok(not_an_administrator(&here, &user.username));
    }
    let search = q
        .get("search")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default();
    let mut rows = Vec::new();
    for u in st.stores.durable.list_users().await? {
        let hit = search.is_empty()
            || [Some(&u.username), u.name.as_ref(), u.email.as_ref()]
                .into_iter()
                .flatten()
                .any(|v| v.to_lowercase().contains(&search));
        if !hit {
            continue;
        }
        let locked = st
            .authn
            .lock_state(&u)
            .await
            .ok()
            .flatten()
            .map(|e| e.to_string());
        let sessions = st.sessions.of_user(&u.id).await?.len();
        let path =
            percent_encoding::utf8_percent_encode(&u.username, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        rows.push(context! {
            path => path, username => u.username, email => u.email, disabled => u.disabled,
            locked => locked, sessions => sessions,
        });
    }
    let aal = crate::session::assurance(&here, &session.data).aal;
    Ok(Pages::global().render(
        StatusCode::OK,
        "admin_users.html",
        context! {
            portal => here.portal(), csrf => st.signer.csrf_token(&session.id),
            username => user.username, aal => aal, users => rows, search => search,
            done => q.get("done"), write_max_age => here.config.admin.write_max_age.to_string(),
        },
    ))
}

/// A console form: its CSRF token.
#[derive(Deserialize)]
pub struct ConsoleForm {
    #[serde(default)]
    csrf: String,
}

/// What a console change does.
#[derive(Clone, Copy)]
enum Change {
    Unlock,
    EndSessions,
}

/// `POST {portal}/admin/users/{username}/unlock`.
pub async fn unlock(
    visit: Visit,
    signed: SignedIn,
    Path(username): Path<String>,
    Form(f): Form<ConsoleForm>,
) -> Result<Response, PortalError> {
    change(visit, signed, &username, &f, Change::Unlock).await
}

/// `POST {portal}/admin/users/{username}/end-sessions`.
pub async fn end_sessions(
    visit: Visit,
    signed: SignedIn,
    Path(username): Path<String>,
    Form(f): Form<ConsoleForm>,
) -> Result<Response, PortalError> {
    change(visit, signed, &username, &f, Change::EndSessions).await
}

async fn change(
    Visit { st, here, jar }: Visit,
    SignedIn { session, user }: SignedIn,
    username: &str,
    f: &ConsoleForm,
    what: Change,
) -> Result<Response, PortalError> {
    check_csrf(&st, &here, &jar, Some(&session), &f.csrf)?;
    if !is_admin(&here, &user) {
        return Ok(not_an_administrator(&here, &user.username));
    }
    let back = here.portal_url("/admin/users");
    if let Some(url) = step_up_needed(&st, &here, &session, user.clone(), &back, Utc::now()) {
        return Ok(see_other(&url));
    }
    let Some(target) = st.stores.durable.get_user_by_username(username).await? else {
        return Ok(Message {
            portal: here.portal(),
            title: "No such user",
            text: &format!("There is no user `{username}`."),
            way_on: Some(WayOn::new(back, "Users")),
            also: None,
        }
        .render(StatusCode::NOT_FOUND));
    };
    let (operation, done) = match what {
        Change::Unlock => {
            // The authenticator audits it (`authn.unlock`, actor `admin:<name>`).
            st.authn
                .unlock(&target, &user.username)
                .await
                .map_err(|e| PortalError::StoreDown(e.to_string()))?;
            ("console.unlock", format!("Unlocked {}.", target.username))
        }
        Change::EndSessions => {
            let n = st.sessions.end_all(&target.id).await?;
            let mut e = stepgate_store::NewAuditEvent::now("sessions.ended");
            e.actor = Some(format!("admin:{}", user.username));
            e.subject = Some(target.id.clone());
            e.detail = json!({ "why": "ended_by_admin", "ended": n });
            st.audit.append(e).await;
            (
                "console.end_sessions",
                format!("Ended {n} session(s) of {}.", target.username),
            )
        }
    };
    let mut e = stepgate_store::NewAuditEvent::now("admin.write");
    e.actor = Some(format!("admin:{}", user.username));
    e.subject = Some(target.id.clone());
    e.detail = json!({ "operation": operation, "username": target.username, "via": "console" });
    st.audit.append(e).await;
    let done: String = url::form_urlencoded::byte_serialize(done.as_bytes()).collect();
    Ok(see_other(&format!("{back}?done={done}")))
}

/// `GET {portal}/admin/decisions?id=`: a decision and its trace.
pub async fn decision_page(
    Visit { st, here, .. }: Visit,
    SignedIn { session, user }: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    if !is_admin(&here, &user) {
        return Ok(not_an_administrator(&here, &user.username));
    }
    let id = q
        .get("id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let record = if id.is_empty() || id.len() > 128 {
        None
    } else {
        st.stores.durable.get_decision(&id).await?
    };
    // The trace as recorded, or worked out again from the recorded context.
    let (trace, traced_again) = match &record {
        Some(d) => match d.detail.get("trace").filter(|t| !t.is_null()) {
            Some(t) => (Some(t.clone()), false),
            None => match d.detail.get("context").and_then(|c| {
                serde_json::from_value::<stepgate_policy::RequestContext>(c.clone()).ok()
            }) {
                Some(ctx) => (
                    serde_json::to_value(here.config.policy_set.explain(&ctx)).ok(),
                    true,
                ),
                None => (None, false),
            },
        },
        None => (None, false),
    };
    let aal = crate::session::assurance(&here, &session.data).aal;
    Ok(Pages::global().render(
        StatusCode::OK,
        "admin_decision.html",
        context! {
            portal => here.portal(), csrf => st.signer.csrf_token(&session.id),
            username => user.username, aal => aal, id => id,
            missing => !id.is_empty() && record.is_none(),
            d => record, trace => trace, traced_again => traced_again,
        },
    ))
}
