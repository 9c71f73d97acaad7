//! `{portal}/admin/devices`: the registered devices (or one user's) with their compliance
//! as the pipeline judges it now and the failing checks (`admin::devices::listing`, the
//! API's `GET /devices`).

use std::collections::HashMap;

use axum::extract::Query;
use axum::response::Response;
use minijinja::context;

use super::{param, read, Admin};
use crate::admin::devices::listing;
use crate::portal::error::PortalError;

/// `GET {portal}/admin/devices?user=&noncompliant=1`.
pub async fn page(
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let user = param(&q, "user");
    let only_failing = q.get("noncompliant").is_some_and(|v| v == "1");
    let (status, mut devices, error) = read(listing(&a.st, user.as_deref()).await);
    if only_failing {
        devices.retain(|d| d["compliant"] == false);
    }
    Ok(a.render(
        status,
        "admin_devices.html",
        context! { devices => devices, user => user, noncompliant => only_failing, error => error },
    ))
}
