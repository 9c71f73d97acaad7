//! The admin console: server-rendered pages under `{portal}/admin/` for an administrator's
//! portal session, one file per page — the dashboard ([`dashboard`]), users with unlock
//! and end-sessions ([`users`]), devices ([`devices`]), sessions with revoke
//! ([`sessions`]), decisions with filters and the trace view ([`decisions`]), policies with
//! their report-only impact, what-if and a draft validated with its replay diff
//! ([`policies`]), the versions saved in the store with their diffs, saving and rollback
//! (`admin.policy_edits: store`, [`policy_versions`]), and the audit log searched and
//! exported ([`audit`]).
//!
//! They use the portal's layout, CSP and scripts and have no script of their own (charts
//! are inline SVG drawn here). The rules are the API's: a member of `admin.group` reads; a
//! change (a CSRF form) also needs AAL3 within `admin.write_max_age`, else the step-up
//! page, which returns here. Every change is audited under the administrator's name. What
//! a page reads it reads through the API's resource code (`super::users`, `super::sessions`,
//! …), so a page and its endpoint cannot disagree; a decision is never made here (what-if
//! and the replay diff go through `access::what_if`).

mod audit;
mod dashboard;
mod decisions;
mod devices;
mod policies;
mod policy_versions;
mod sessions;
mod users;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use minijinja::{context, Value};
use serde::Serialize;
use stepgate_store::UserRecord;

use super::caller::step_up_needed;
use super::{Caller, Problem};
use crate::app::responses::see_other;
use crate::app::state::Shared;
use crate::portal::error::PortalError;
use crate::portal::extract::{check_csrf, Here, SignedIn, Visit};
use crate::portal::pages::{Message, Pages, WayOn};
use crate::session::Session;

/// The console's routes under `portal_path`.
pub fn routes(portal_path: &str) -> Router<Shared> {
    let c = |s: &str| format!("{portal_path}/admin{s}");
    Router::new()
        .route(&c(""), get(dashboard::page))
        .route(&c("/"), get(dashboard::page))
        .route(&c("/users"), get(users::page))
        .route(
            &c("/users/{username}/unlock"),
            users::post_change(users::Change::Unlock),
        )
        .route(
            &c("/users/{username}/end-sessions"),
            users::post_change(users::Change::EndSessions),
        )
        .route(&c("/devices"), get(devices::page))
        .route(&c("/sessions"), get(sessions::page))
        .route(&c("/sessions/revoke"), post(sessions::revoke))
        .route(&c("/decisions"), get(decisions::page))
        .route(&c("/what-if"), get(policies::what_if))
        .route(&c("/policies"), get(policies::page))
        .route(&c("/policies/validate"), post(policies::validate))
        .route(&c("/policies/versions"), get(policy_versions::page))
        .route(&c("/policies/versions/check"), post(policy_versions::check))
        .route(&c("/policies/versions/save"), post(policy_versions::save))
        .route(
            &c("/policies/versions/{version}/rollback"),
            post(policy_versions::rollback),
        )
        .route(&c("/audit"), get(audit::page))
        .route(&c("/audit/export"), get(audit::export))
}

/// An administrator's visit to a console page. As an extractor: a [`Visit`] by someone
/// [`SignedIn`] who is in `admin.group` (else the 403 page).
pub(super) struct Admin {
    st: Shared,
    here: Here,
    session: Session,
    user: UserRecord,
}

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

impl FromRequestParts<Shared> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Response> {
        let visit = Visit::from_request_parts(parts, st).await?;
        let signed = SignedIn::from_request_parts(parts, st).await?;
        Admin::check(visit, signed).map_err(|r| *r)
    }
}

impl Admin {
    /// The signed-in administrator, or the 403 page.
    fn check(visit: Visit, signed: SignedIn) -> Result<Admin, Box<Response>> {
        let Visit { st, here, .. } = visit;
        let SignedIn { session, user } = signed;
        if !user.groups.iter().any(|g| *g == here.config.admin.group) {
            return Err(Box::new(not_an_administrator(&here, &user.username)));
        }
        Ok(Admin {
            st,
            here,
            session,
            user,
        })
    }

    /// For a change: the form's CSRF token, the group, then a fresh AAL3 (else the step-up
    /// page, returning to `back` under the portal). The caller as the API's audit names it.
    async fn check_change(
        visit: Visit,
        signed: SignedIn,
        from: Client,
        csrf: &str,
        back: &str,
    ) -> Result<(Admin, Caller), Box<Result<Response, PortalError>>> {
        check_csrf(
            &visit.st,
            &visit.here,
            &visit.jar,
            Some(&signed.session),
            csrf,
        )
        .map_err(|e| Box::new(Err(e)))?;
        let a = Admin::check(visit, signed).map_err(|r| Box::new(Ok(*r)))?;
        let url = a.here.portal_url(back);
        if let Some(step) =
            step_up_needed(&a.st, &a.here, &a.session, a.user.clone(), &url, Utc::now())
        {
            return Err(Box::new(Ok(see_other(&step))));
        }
        let mut caller = a.caller();
        caller.ip = crate::access::request::client_ip(&a.here, from.0 .0, &from.1);
        Ok((a, caller))
    }

    /// The administrator as the API's audit names a caller.
    fn caller(&self) -> Caller {
        Caller {
            actor: format!("admin:{}", self.user.username),
            name: self.user.username.clone(),
            ip: None,
        }
    }

    /// Renders a console page: `ctx` with what every page shows (the navigation, the
    /// administrator, the CSRF token).
    fn render<S: Serialize>(&self, status: StatusCode, name: &str, ctx: S) -> Response {
        let aal = crate::session::assurance(&self.here, &self.session.data).aal;
        Pages::global().render(
            status,
            name,
            context! {
                ..Value::from_serialize(&ctx),
                ..context! {
                    portal => self.here.portal(), csrf => self.st.signer.csrf_token(&self.session.id),
                    username => self.user.username, aal => aal,
                    write_max_age => self.here.config.admin.write_max_age.to_string(),
                    policy_edits => self.st.stored_policies.enabled(),
                }
            },
        )
    }

    /// Back to a console page (`path` under the portal) with `done` said there.
    fn done(&self, path: &str, done: &str) -> Response {
        let done: String = url::form_urlencoded::byte_serialize(done.as_bytes()).collect();
        let sep = if path.contains('?') { '&' } else { '?' };
        see_other(&format!("{}{sep}done={done}", self.here.portal_url(path)))
    }
}

/// What a page says about a problem the API's code answered (a filter that does not read,
/// a store down): its status and its detail, shown on the page.
fn shown(p: &Problem) -> (StatusCode, String) {
    (
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST),
        p.detail.clone(),
    )
}

/// What a page shows of what the API's code read: it, with 200; or nothing
/// (`T::default()`) with the problem's status and detail ([`shown`]).
fn read<T: Default>(found: Result<T, Problem>) -> (StatusCode, T, Option<String>) {
    match found {
        Ok(v) => (StatusCode::OK, v, None),
        Err(p) => {
            let (status, e) = shown(&p);
            (status, T::default(), Some(e))
        }
    }
}

/// Where a change came from: the connection's peer and the request's headers, read as the
/// API reads the client address (trusted proxies).
type Client = (crate::app::responses::Peer, axum::http::HeaderMap);

/// The one form field every console change sends.
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// The `admin.write` audit event of a console change (`operation` such as
/// `console.unlock`), under the administrator's name, as the API audits its writes.
async fn audit_write(
    st: &Shared,
    caller: &Caller,
    subject: Option<&str>,
    operation: &str,
    detail: serde_json::Value,
) {
    audit_admin(st, "admin.write", caller, subject, operation, detail).await;
}

/// An `admin.read` or `admin.write` audit event of the console.
async fn audit_admin(
    st: &Shared,
    kind: &str,
    caller: &Caller,
    subject: Option<&str>,
    operation: &str,
    mut detail: serde_json::Value,
) {
    if let Some(m) = detail.as_object_mut() {
        m.insert("operation".into(), operation.into());
        m.insert("via".into(), "console".into());
    }
    caller
        .audit(st, kind, subject.map(str::to_string), detail)
        .await;
}

/// A query parameter's value, trimmed; none when absent or blank (a form's empty field is
/// no filter).
fn param(q: &std::collections::HashMap<String, String>, name: &str) -> Option<String> {
    q.get(name)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}
