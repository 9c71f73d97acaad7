//! `{portal}/admin/policies`: the policies in force in priority order with each report-only
//! policy's would-be outcomes over the last 24 hours (`admin::policies::overview`, the
//! API's `GET /policies`) and the draft form: a configuration pasted, validated as `POST
//! /policies/validate` does (errors with line and column) and, when it loads, replayed
//! against the last 24 hours' decisions (`admin::decisions::replay_last_day`).
//! `{portal}/admin/what-if`: a stated request decided through the access pipeline
//! (`admin::policies::decide_stated`, the API's `POST /policies/what-if`), with its trace.
//! Policies stay in the YAML files: nothing here changes them.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::Form;
use minijinja::context;
use serde_json::{json, Value};

use super::{shown, Admin};
use crate::admin::policies::{check_draft, decide_stated, overview};
use crate::portal::error::PortalError;

/// The largest draft the form takes.
const DRAFT_MAX: usize = 256 * 1024;

/// `GET {portal}/admin/policies`.
pub async fn page(a: Admin) -> Result<Response, PortalError> {
    show(&a, StatusCode::OK, "", None).await
}

/// The policies page, with the draft form's text and its result.
async fn show(
    a: &Admin,
    status: StatusCode,
    draft: &str,
    result: Option<Value>,
) -> Result<Response, PortalError> {
    let (status, doc, error) = match overview(&a.st).await {
        Ok(d) => (status, d, None),
        Err(p) => {
            let (s, e) = shown(&p);
            (s, Value::Null, Some(e))
        }
    };
    Ok(a.render(
        status,
        "admin_policies.html",
        context! { doc => doc, error => error, draft => draft, result => result },
    ))
}

/// The draft form.
#[derive(serde::Deserialize)]
pub struct Draft {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    draft: String,
}

/// `POST {portal}/admin/policies/validate` (`draft`: a whole configuration file). A read:
/// CSRF-checked, no AAL3.
pub async fn validate(a: Admin, Form(f): Form<Draft>) -> Result<Response, PortalError> {
    a.check_csrf(&f.csrf)?;
    if f.draft.len() > DRAFT_MAX {
        let r = json!({ "valid": false, "detail": format!("the draft is over {} KiB; check a bigger one with `stepgate check`", DRAFT_MAX / 1024) });
        return show(&a, StatusCode::PAYLOAD_TOO_LARGE, "", Some(r)).await;
    }
    let result = match check_draft(f.draft.clone()).await {
        Ok((summary, cfg)) => {
            let replay = crate::admin::decisions::replay_last_day(&a.st, cfg)
                .await
                .unwrap_or(Value::Null);
            json!({ "valid": true, "summary": summary, "replay": replay })
        }
        Err(p) => json!({ "valid": false, "detail": p.detail, "errors": p.errors }),
    };
    let status = if result["valid"] == true {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    show(&a, status, &f.draft, Some(result)).await
}

/// The context the what-if form states: the JSON pasted when there is one, else one built
/// from the fields.
fn stated(q: &HashMap<String, String>) -> Result<stepgate_policy::RequestContext, String> {
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let v = match get("context") {
        Some(text) => serde_json::from_str::<Value>(text)
            .map_err(|e| format!("the context is not JSON: {e}"))?,
        None => {
            let mut v = json!({
                "kind": get("kind").unwrap_or("access"),
                "request": { "app": get("app"), "method": get("method").unwrap_or("GET"), "path": get("path").unwrap_or("/") },
            });
            if let Some(u) = get("user") {
                let groups: Vec<&str> = get("groups")
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .collect();
                v["user"] = json!({ "username": u, "groups": groups });
            }
            if let Some(ip) = get("ip") {
                v["network"] = json!({ "ip": ip });
            }
            v
        }
    };
    serde_json::from_value(v).map_err(|e| {
        format!("the request context does not read: {e} (docs/configuration.md#request-context)")
    })
}

/// `GET {portal}/admin/what-if?app=&method=&path=&user=&groups=&ip=&kind=` or `?context=`.
pub async fn what_if(
    a: Admin,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PortalError> {
    let asked = q.contains_key("go");
    let (status, answer, error) = if !asked {
        (StatusCode::OK, None, None)
    } else {
        match stated(&q) {
            Err(e) => (StatusCode::BAD_REQUEST, None, Some(e)),
            Ok(ctx) => match decide_stated(&a.st, &ctx).await {
                Ok(v) => (StatusCode::OK, Some(v), None),
                Err(p) => {
                    let (s, e) = shown(&p);
                    (s, None, Some(e))
                }
            },
        }
    };
    let rt = a.st.runtime.load_full();
    // The configured apps, and stepgate's own admin app (`admin.app`): policies target it too.
    let own = std::iter::once(rt.config.admin.app.as_str());
    let apps: Vec<&str> = rt
        .config
        .apps
        .iter()
        .map(|x| x.id.as_str())
        .chain(own)
        .collect();
    Ok(a.render(
        status,
        "admin_what_if.html",
        context! { f => q, answer => answer, error => error, apps => apps },
    ))
}
