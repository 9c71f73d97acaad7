//! The configuration in force: its version (the hash nodes of one deployment agree on) and
//! a reload, the same path SIGHUP takes (`app::reload`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::problem::Problem;
use crate::app::reload::{reload_checked, ReloadRefused};
use crate::app::state::Shared;

/// `GET /config`.
pub async fn show(State(st): State<Shared>) -> Response {
    let rt = st.runtime.load_full();
    let c = &rt.config;
    Json(json!({
        "version": c.version,
        "files": c.files,
        "apps": c.apps.len(),
        "policies": c.policies.len(),
        "portal_path": rt.portal(),
        "admin_group": c.admin.group,
    }))
    .into_response()
}

/// `POST /config/reload`.
pub async fn reload(State(st): State<Shared>) -> Result<Response, Problem> {
    let before = st.runtime.load().config.version.clone();
    // A version saved by `stepgate policy rollback`, which no running node heard of.
    crate::app::stored_policies::follow(&st, "reload").await;
    let st2 = st.clone();
    let done = tokio::task::spawn_blocking(move || reload_checked(&st2))
        .await
        .map_err(|e| Problem::unavailable("reload", e))?;
    match done {
        Ok(version) => Ok(Json(json!({
            "reloaded": true, "version": version, "previous_version": before,
            "changed": version != before,
        }))
        .into_response()),
        Err(ReloadRefused::NoFile) => Err(Problem::conflict(
            "this server runs the built-in demo configuration: there is no file to reload",
        )),
        Err(ReloadRefused::Invalid(errors)) => {
            let mut p = Problem::unprocessable(
                "invalid-configuration",
                "the configuration file does not load; the running configuration is kept",
            );
            p.errors = Some(json!(errors));
            Err(p)
        }
    }
}
