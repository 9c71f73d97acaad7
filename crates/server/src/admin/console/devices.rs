//! `{portal}/admin/devices`: the registered devices (or one user's) with their compliance
//! as the pipeline judges it now and the failing checks (`admin::devices::listing`, the
//! API's `GET /devices`).

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;

use super::{shown, Admin};
use crate::admin::devices::listing;
use crate::portal::error::PortalError;
use crate::portal::extract::{SignedIn, Visit};

/// `GET {portal}/admin/devices?user=&noncompliant=1`.
pub async fn page(
    visit: Visit,
    signed: SignedIn,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let a = match Admin::check(visit, signed) {
        Ok(a) => a,
        Err(r) => return Ok(*r),
    };
    let user = q.get("user").map(|u| u.trim()).filter(|u| !u.is_empty());
    let only_failing = q.get("noncompliant").is_some_and(|v| v == "1");
    let (status, mut devices, error) = match listing(&a.st, user).await {
        Ok(d) => (StatusCode::OK, d, None),
        Err(p) => {
            let (status, e) = shown(&p);
            (status, Vec::new(), Some(e))
        }
    };
    if only_failing {
        devices.retain(|d| d["compliant"] == false);
    }
    Ok(a.render(
        status,
        "admin_devices.html",
        context! { devices => devices, user => user, noncompliant => only_failing, error => error },
    ))
}
