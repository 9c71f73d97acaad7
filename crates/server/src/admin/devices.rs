//! Devices: listed by owner, and one with its posture and its compliance result (the
//! failing checks named), as the access pipeline evaluates it now.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use super::problem::{Params, Problem};
use super::users::{find, OwnerQuery};
use crate::app::state::Shared;

/// `GET /devices`: the devices registered to users (read user by user; devices no user
/// owns are reached by id).
pub async fn list(
    State(st): State<Shared>,
    Params(q): Params<OwnerQuery>,
) -> Result<Response, Problem> {
    let paging = q.paging.paging()?;
    let all = listing(&st, q.user.as_deref()).await?;
    Ok(Json(paging.page(all)?).into_response())
}

/// The devices registered to every user, or to the user named `user`, each with its
/// compliance as the pipeline judges it now and the failing checks' ids (what `GET
/// /devices` pages through and the console's devices page shows).
pub async fn listing(st: &Shared, user: Option<&str>) -> Result<Vec<serde_json::Value>, Problem> {
    let users = match user {
        Some(name) => vec![find(st, name).await?],
        None => st.stores.durable.list_users().await?,
    };
    let rt = st.runtime.load_full();
    let now = Utc::now();
    let mut all = Vec::new();
    for u in &users {
        for r in st.stores.durable.list_devices(&u.id).await? {
            let Some(d) = crate::devices::load(st.stores.durable.as_ref(), &r.id).await? else {
                continue;
            };
            let verdict = d.compliance(
                &rt.config.compliance_policies,
                rt.config.devices.compliance.max_posture_age.0,
                now,
            );
            all.push(json!({
                "id": r.id, "owner": u.username, "updated_at": r.updated_at,
                "compliant": verdict.compliant,
                "failing": verdict.failing.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
            }));
        }
    }
    Ok(all)
}

/// `GET /devices/{id}`.
pub async fn show(State(st): State<Shared>, Path(id): Path<String>) -> Result<Response, Problem> {
    let rt = st.runtime.load_full();
    let device = st
        .devices
        .load(&id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no device `{id}` in the registry")))?;
    let verdict = device.compliance(
        &rt.config.compliance_policies,
        rt.config.devices.compliance.max_posture_age.0,
        Utc::now(),
    );
    Ok(Json(json!({ "device": device, "compliance": verdict })).into_response())
}
