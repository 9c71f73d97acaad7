//! `/users`: list and search, show, create, disable and enable, unlock, reset factors —
//! through the same services `stepgate user` and the portal use.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use stepgate_authn::service::AuthError;
use stepgate_store::{UserRecord, UserSource};

use super::problem::{Body, Params, Problem};
use super::{Caller, Paging};
use crate::app::state::Shared;

/// A user as the API shows one (never a secret).
#[derive(Serialize)]
pub struct UserView {
    id: String,
    username: String,
    email: Option<String>,
    name: Option<String>,
    groups: Vec<String>,
    disabled: bool,
    source: &'static str,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            groups: u.groups.clone(),
            disabled: u.disabled,
            source: match u.source {
                UserSource::Local => "local",
                UserSource::Config => "config",
                UserSource::Upstream => "upstream",
            },
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// The query of `GET /users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    search: Option<String>,
    #[serde(flatten)]
    paging: PagingQuery,
}

/// The query of a listing by owner (`GET /devices`, `GET /sessions`): only the user
/// named `user`'s, a page at a time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerQuery {
    /// Only this username's.
    pub user: Option<String>,
    /// The page.
    #[serde(flatten)]
    pub paging: PagingQuery,
}

/// `limit`/`offset` as a flattened query reads them (numbers arrive as text).
#[derive(Default, Deserialize)]
pub struct PagingQuery {
    limit: Option<String>,
    offset: Option<String>,
}

impl PagingQuery {
    /// The paging these ask for; a parameter that is not a number answers 400 naming it.
    pub fn paging(&self) -> Result<Paging, Problem> {
        let num = |name: &str, v: &Option<String>, default: usize| match v {
            None => Ok(default),
            Some(t) => t.parse::<usize>().map_err(|_| {
                Problem::bad_field(name, format!("{name} must be a whole number, not `{t}`"))
            }),
        };
        Ok(Paging {
            limit: num("limit", &self.limit, super::DEFAULT_LIMIT)?,
            offset: num("offset", &self.offset, 0)?,
        })
    }
}

/// `GET /users`.
pub async fn list(
    State(st): State<Shared>,
    Params(q): Params<UserQuery>,
) -> Result<Response, Problem> {
    let paging = q.paging.paging()?;
    let users = st.stores.durable.list_users().await?;
    let needle = q.search.as_deref().map(str::to_lowercase);
    let hits: Vec<UserView> = users
        .iter()
        .filter(|u| {
            needle.as_deref().is_none_or(|n| {
                [Some(&u.username), u.name.as_ref(), u.email.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|v| v.to_lowercase().contains(n))
            })
        })
        .map(UserView::from)
        .collect();
    Ok(Json(paging.page(hits)?).into_response())
}

/// The user called `username`, or 404.
pub async fn find(st: &Shared, username: &str) -> Result<UserRecord, Problem> {
    st.stores
        .durable
        .get_user_by_username(username)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no user `{username}`")))
}

fn auth_problem(e: AuthError) -> Problem {
    match e {
        AuthError::Store(e) => Problem::unavailable("store", e),
        other => Problem::unprocessable("refused", other.public_message()),
    }
}

/// `GET /users/{username}`.
pub async fn show(
    State(st): State<Shared>,
    Path(username): Path<String>,
) -> Result<Response, Problem> {
    let u = find(&st, &username).await?;
    let lock = st.authn.lock_state(&u).await.map_err(auth_problem)?;
    let factors = st.authn.enrolled(&u).await.map_err(auth_problem)?;
    let sessions = st.sessions.of_user(&u.id).await?.len();
    Ok(Json(json!({
        "user": UserView::from(&u),
        "locked": lock.as_ref().map(|e| e.to_string()),
        "factors": factors,
        "sessions": sessions,
    }))
    .into_response())
}

/// The body of `POST /users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// `POST /users`.
pub async fn create(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Body(n): Body<NewUser>,
) -> Result<Response, Problem> {
    let username = n.username.trim();
    if username.is_empty() || username.len() > 128 || username.chars().any(char::is_control) {
        return Err(Problem::bad_field(
            "username",
            "username must be 1 to 128 characters, without control characters",
        ));
    }
    if let Some(e) = &n.email {
        if !e.contains('@') {
            return Err(Problem::bad_field(
                "email",
                format!("`{e}` is not an e-mail address"),
            ));
        }
    }
    if st
        .stores
        .durable
        .get_user_by_username(username)
        .await?
        .is_some()
    {
        return Err(Problem::conflict(format!(
            "user `{username}` already exists"
        )));
    }
    let mut u = UserRecord::new(username);
    u.email = n.email;
    u.name = n.name;
    u.groups = n.groups;
    st.stores.durable.create_user(&u).await?;
    let detail = json!({ "username": u.username });
    caller
        .audit(&st, "user.created", Some(u.id.clone()), detail)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": UserView::from(&u) })),
    )
        .into_response())
}

/// `POST /users/{username}/disable`.
pub async fn disable(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> Result<Response, Problem> {
    set_disabled(&st, &caller, &username, true).await
}

/// `POST /users/{username}/enable`.
pub async fn enable(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> Result<Response, Problem> {
    set_disabled(&st, &caller, &username, false).await
}

async fn set_disabled(
    st: &Shared,
    caller: &Caller,
    username: &str,
    disabled: bool,
) -> Result<Response, Problem> {
    let mut u = find(st, username).await?;
    if u.disabled != disabled {
        u.disabled = disabled;
        u.updated_at = stepgate_store::now_ms();
        st.stores.durable.update_user(&u).await?;
        let mut ended = 0;
        if disabled {
            ended = st.sessions.end_all(&u.id).await?;
        }
        let kind = if disabled {
            "user.disabled"
        } else {
            "user.enabled"
        };
        let detail = json!({ "username": u.username, "sessions_ended": ended });
        caller.audit(st, kind, Some(u.id.clone()), detail).await;
    }
    Ok(Json(json!({ "user": UserView::from(&u) })).into_response())
}

/// `POST /users/{username}/unlock`.
pub async fn unlock(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
) -> Result<Response, Problem> {
    let u = find(&st, &username).await?;
    // The authenticator audits the unlock (`authn.unlock`) with the caller's name.
    st.authn
        .unlock(&u, &caller.name)
        .await
        .map_err(auth_problem)?;
    Ok(Json(json!({ "user": UserView::from(&u), "locked": null })).into_response())
}

/// The body of `POST /users/{username}/reset-factors`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetFactors {
    #[serde(default)]
    include_password: bool,
}

/// `POST /users/{username}/reset-factors`.
pub async fn reset_factors(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(username): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let r: ResetFactors = super::problem::optional_json(&body)?;
    let u = find(&st, &username).await?;
    let n = st
        .authn
        .admin_reset_factors(&u, r.include_password, &caller.name)
        .await
        .map_err(auth_problem)?;
    Ok(Json(json!({ "user": UserView::from(&u), "removed": n })).into_response())
}
