//! Sessions: listed by handle (a MAC of the id, as the portal's sessions page shows them;
//! never the id), revoked one by one or all of a user's. A revoked session's next request
//! is refused on every node (the session store, then the cache's invalidation).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;
use stepgate_store::{StoreResult, UserRecord};

use super::problem::{Params, Problem};
use super::users::{find, OwnerQuery};
use super::Caller;
use crate::app::state::Shared;

/// A live session as the API shows one.
#[derive(Serialize)]
pub struct SessionView {
    handle: String,
    username: String,
    aal: u8,
    created_at: chrono::DateTime<chrono::Utc>,
    last_seen: chrono::DateTime<chrono::Utc>,
    ip: Option<String>,
    user_agent: Option<String>,
    device: Option<String>,
    persistent: bool,
    marked_for_step_up: bool,
}

/// The live sessions of `u`, oldest first.
async fn sessions_of(st: &Shared, u: &UserRecord) -> Result<Vec<SessionView>, Problem> {
    let rt = st.runtime.load_full();
    let mut out = Vec::new();
    for id in st.sessions.of_user(&u.id).await? {
        let Some((_, d)) = st.sessions.peek(&id).await? else {
            continue;
        };
        if d.pending {
            continue;
        }
        out.push(SessionView {
            handle: st.signer.session_handle(&id),
            username: u.username.clone(),
            aal: d.aal(&rt.config.assurance),
            created_at: d.created_at,
            last_seen: d.last_seen,
            ip: d.ip.clone(),
            user_agent: d.user_agent.clone(),
            device: d.device_id.clone(),
            persistent: d.persistent,
            marked_for_step_up: d.needs_step_up,
        });
    }
    out.sort_by_key(|s| s.created_at);
    Ok(out)
}

/// `GET /users/{username}/sessions`.
pub async fn of_user(
    State(st): State<Shared>,
    Path(username): Path<String>,
) -> Result<Response, Problem> {
    let u = find(&st, &username).await?;
    Ok(Json(json!({ "items": sessions_of(&st, &u).await? })).into_response())
}

/// `DELETE /users/{username}/sessions`.
pub async fn revoke_of_user(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> Result<Response, Problem> {
    let u = find(&st, &username).await?;
    let n = end_all_of(&st, &caller, &u).await?;
    Ok(Json(json!({ "ended": n })).into_response())
}

/// Ends every session of `u` for an administrator, audited as `sessions.ended` (the
/// API's `DELETE /users/{username}/sessions` and the console's end-sessions button).
pub async fn end_all_of(st: &Shared, caller: &Caller, u: &UserRecord) -> StoreResult<usize> {
    let n = st.sessions.end_all(&u.id).await?;
    let detail = json!({ "why": "ended_by_admin", "ended": n });
    caller
        .audit(st, "sessions.ended", Some(u.id.clone()), detail)
        .await;
    Ok(n)
}

/// `GET /sessions`: every user's live sessions (read user by user: fine for thousands of
/// users; name `user` for one).
pub async fn list(
    State(st): State<Shared>,
    Params(q): Params<OwnerQuery>,
) -> Result<Response, Problem> {
    let paging = q.paging.paging()?;
    let all = live(&st, q.user.as_deref()).await?;
    Ok(Json(paging.page(all)?).into_response())
}

/// The live sessions of every user, or of the user named `user`, each user's oldest first
/// (what `GET /sessions` pages through and the console's sessions page shows).
pub async fn live(st: &Shared, user: Option<&str>) -> Result<Vec<SessionView>, Problem> {
    let users = match user {
        Some(name) => vec![find(st, name).await?],
        None => st.stores.durable.list_users().await?,
    };
    let mut all = Vec::new();
    for u in &users {
        all.extend(sessions_of(st, u).await?);
    }
    Ok(all)
}

/// `DELETE /sessions/{handle}`.
pub async fn revoke(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<Response, Problem> {
    let username = end_by_handle(&st, &caller, &handle).await?;
    Ok(Json(json!({ "ended": 1, "username": username })).into_response())
}

/// Ends the live session with `handle` (audited as `caller`'s); its owner's username. The
/// API's `DELETE /sessions/{handle}` and the console's revoke button.
pub async fn end_by_handle(st: &Shared, caller: &Caller, handle: &str) -> Result<String, Problem> {
    for u in st.stores.durable.list_users().await? {
        for id in st.sessions.of_user(&u.id).await? {
            if st.signer.session_handle_ok(&id, handle) {
                st.sessions.end(&id).await?;
                let detail = json!({ "why": "ended_by_admin", "ended": 1, "session": handle });
                caller
                    .audit(st, "sessions.ended", Some(u.id.clone()), detail)
                    .await;
                return Ok(u.username);
            }
        }
    }
    Err(Problem::not_found(format!(
        "no live session with handle `{handle}`"
    )))
}
