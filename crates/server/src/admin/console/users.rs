//! `{portal}/admin/users`: users found by name or address, with their lock state and
//! session count, an unlock button for a locked one and end-sessions for one with sessions.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{post, MethodRouter};
use axum_extra::extract::Form;
use minijinja::context;
use serde_json::json;

use super::{Admin, Changing, CsrfOnly};
use crate::admin::sessions::end_all_of;
use crate::app::state::Shared;
use crate::portal::error::PortalError;
use crate::portal::pages::{Message, WayOn};

/// A user's row: the template's fields.
#[derive(serde::Serialize)]
pub(super) struct Row {
    pub(super) path: String,
    pub(super) username: String,
    email: Option<String>,
    disabled: bool,
    /// When the lock ends (or that it lasts until unlocked), when locked.
    pub(super) locked: Option<String>,
    sessions: usize,
}

/// The users whose username, name or e-mail contains `search` (any case; every user for
/// an empty one), with their lock state and live session count.
pub(super) async fn rows(st: &Shared, search: &str) -> Result<Vec<Row>, PortalError> {
    let search = search.trim().to_lowercase();
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
        rows.push(Row {
            path,
            username: u.username,
            email: u.email,
            disabled: u.disabled,
            locked,
            sessions,
        });
    }
    Ok(rows)
}

/// `GET {portal}/admin/users?search=`.
pub async fn page(
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let search = q.get("search").cloned().unwrap_or_default();
    let users = rows(&a.st, &search).await?;
    Ok(a.render(
        StatusCode::OK,
        "admin_users.html",
        context! { users => users, search => search, done => q.get("done") },
    ))
}

/// What a console change to a user does.
#[derive(Clone, Copy)]
pub(super) enum Change {
    /// `POST {portal}/admin/users/{username}/unlock`.
    Unlock,
    /// `POST {portal}/admin/users/{username}/end-sessions`.
    EndSessions,
}

/// The route of a change's form (`csrf`), which does `what` to the user in the path.
pub(super) fn post_change(what: Change) -> MethodRouter<Shared> {
    post(
        move |Changing(a): Changing, Path(username): Path<String>, Form(f): Form<CsrfOnly>| async move {
            change(a, &username, &f, what).await
        },
    )
}

async fn change(
    a: Admin,
    username: &str,
    f: &CsrfOnly,
    what: Change,
) -> Result<Response, PortalError> {
    let (a, caller) = match a.change(&f.csrf, "/admin/users") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(target) = a.st.stores.durable.get_user_by_username(username).await? else {
        return Ok(Message {
            portal: a.here.portal(),
            title: "No such user",
            text: &format!("There is no user `{username}`."),
            way_on: Some(WayOn::new(a.here.portal_url("/admin/users"), "Users")),
            also: None,
        }
        .render(StatusCode::NOT_FOUND));
    };
    let (operation, done) = match what {
        Change::Unlock => {
            // The authenticator audits it (`authn.unlock`, actor `admin:<name>`).
            a.st.authn
                .unlock(&target, &caller.name)
                .await
                .map_err(|e| PortalError::StoreDown(e.to_string()))?;
            ("console.unlock", format!("Unlocked {}.", target.username))
        }
        Change::EndSessions => {
            let n = end_all_of(&a.st, &caller, &target).await?;
            (
                "console.end_sessions",
                format!("Ended {n} session(s) of {}.", target.username),
            )
        }
    };
    super::audit_write(
        &a.st,
        &caller,
        Some(target.id.as_str()),
        operation,
        json!({ "username": target.username }),
    )
    .await;
    Ok(a.done("/admin/users", &done))
}
