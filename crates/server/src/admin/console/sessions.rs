//! `{portal}/admin/sessions`: every live session (or one user's) by handle, with a revoke
//! button; a revoked session's next request is refused (`admin::sessions::end_by_handle`,
//! the API's `DELETE /sessions/{handle}`).

use std::collections::HashMap;

use axum::extract::Query;
use axum::response::Response;
use axum_extra::extract::Form;
use minijinja::context;
use serde_json::json;

use super::{param, read, Admin, Changing};
use crate::admin::sessions::{end_by_handle, live};
use crate::portal::error::PortalError;

/// `GET {portal}/admin/sessions?user=`.
pub async fn page(
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let user = param(&q, "user");
    let (status, sessions, error) = read(live(&a.st, user.as_deref()).await);
    Ok(a.render(
        status,
        "admin_sessions.html",
        context! { sessions => sessions, user => user, error => error, done => q.get("done") },
    ))
}

/// The revoke form.
#[derive(serde::Deserialize)]
pub struct Revoke {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    handle: String,
}

/// `POST {portal}/admin/sessions/revoke` (`handle`).
pub async fn revoke(Changing(a): Changing, Form(f): Form<Revoke>) -> Result<Response, PortalError> {
    let (a, caller) = match a.change(&f.csrf, "/admin/sessions") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let handle = f.handle.trim();
    let done = match end_by_handle(&a.st, &caller, handle).await {
        Ok(username) => {
            super::audit_write(
                &a.st,
                &caller,
                None,
                "console.revoke_session",
                json!({ "username": username, "session": handle }),
            )
            .await;
            format!("Revoked a session of {username}: its next request is refused.")
        }
        Err(p) if p.status == 404 => "That session has already ended.".to_string(),
        Err(p) => return Err(PortalError::StoreDown(p.detail.clone())),
    };
    Ok(a.done("/admin/sessions", &done))
}
