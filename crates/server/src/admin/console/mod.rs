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
//! are inline SVG drawn here). Every page (and every form posted to one) starts from the
//! [`Admin`] extractor: the access pipeline decides the request as one to the admin app
//! (`admin.app`, default `stepgate-admin`: its method and path, the session's cookies,
//! client address and request id — in the decision log like any other decision), and its
//! verdict is rendered here as the gateway renders one for a browser: `Allow` goes on; a
//! step-up the policies ask sends the administrator to the portal's step-up page, which
//! returns here; a denial is the blocked page with the failing checks; a store or signal
//! source down, the 503 page. The floor stays on top, as in the API: a member of
//! `admin.group` reads (else the 403 page); a change (a CSRF form) also needs AAL3 within
//! `admin.write_max_age`, whatever the policies allowed, else the step-up page, which
//! returns here; a step-up the policies ask of a change is raised to that floor
//! ([`Changing`]), so one step-up meets both. Every change is audited under the
//! administrator's name. What
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
use axum::http::header::REFERER;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use minijinja::{context, Value};
use serde::Serialize;
use stepgate_store::UserRecord;

use super::admission::{self, in_group, Asked};
use super::caller::step_up_needed;
use super::{Caller, Problem};
use crate::access::signals::PeerCertificates;
use crate::access::Verdict;
use crate::app::responses::{see_other, Peer};
use crate::app::state::Shared;
use crate::gateway::render::Return;
use crate::portal::error::PortalError;
use crate::portal::extract::{check_csrf, Here, Visit};
use crate::portal::pages::{Message, Pages, WayOn};
use crate::session::cookies::CookieJar;
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

/// An administrator's visit to a console page. As an extractor: the access pipeline's
/// `Allow` for the admin app on the request's session ([`admission`]), for a member of
/// `admin.group` (else the 403 page); any other verdict is answered as the gateway answers
/// a browser ([`refused`]).
pub(super) struct Admin {
    st: Shared,
    here: Here,
    jar: CookieJar,
    session: Session,
    user: UserRecord,
    /// The client address, as the API reads it (trusted proxies).
    ip: Option<std::net::IpAddr>,
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
        Admin::visit(parts, st, false).await
    }
}

/// An administrator's visit to make a change (a console form that changes something:
/// unlock, end sessions, revoke, save, roll back). As [`Admin`], but a step-up the policies
/// ask is raised to the floor of a change ([`admission::with_floor`]), so that one step-up
/// meets both — the console's forms are posted with the session alone, so the route, not
/// the method, tells a change (validating a draft is a POST that changes nothing).
pub(super) struct Changing(pub(super) Admin);

impl FromRequestParts<Shared> for Changing {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Response> {
        Admin::visit(parts, st, true).await.map(Changing)
    }
}

impl Admin {
    /// The pipeline's decision on the request in `parts` (for a `change`, a step-up it
    /// asks raised to the floor), and the administrator it lets in or the page saying why
    /// not.
    async fn visit(parts: &mut Parts, st: &Shared, change: bool) -> Result<Admin, Response> {
        let visit = Visit::from_request_parts(parts, st).await?;
        if visit.jar.repeated(&visit.here.session_cookie) {
            let portal = visit.here.portal().to_string();
            return Err(PortalError::RepeatedCookie { portal }.into_response());
        }
        let peer = Peer::from_request_parts(parts, st)
            .await
            .map_err(IntoResponse::into_response)?;
        let now = Utc::now();
        let ip = crate::access::request::client_ip(&visit.here, peer.0, &parts.headers);
        let asked = Asked {
            method: &parts.method,
            path: parts.uri.path(),
            headers: &parts.headers,
            jar: &visit.jar,
            peer: peer.0,
            ip,
            change,
            tls: parts.extensions.get::<PeerCertificates>(),
            now,
        };
        let verdict = admission::decide(st, &visit.here, &asked)
            .await
            .map_err(|_| PortalError::BadRequest.into_response())?;
        Admin::admitted(visit, verdict, ip).map_err(|v| refused(st, parts, v, now))
    }
}

/// What the console answers a verdict other than `Allow`: the 403 page for someone not in
/// `admin.group`; else as the gateway answers a browser — the sign-in or step-up page
/// returning here (a form's POST returns to the page it was sent from, or the dashboard),
/// the blocked page with the failing checks, the 503 page.
fn refused(st: &Shared, parts: &Parts, verdict: Refusal, now: DateTime<Utc>) -> Response {
    let (here, verdict) = match verdict {
        Refusal::NotAdmin(here, username) => return not_an_administrator(&here, &username),
        Refusal::Verdict(here, v) => (here, v),
    };
    let replayable = parts.method == Method::GET || parts.method == Method::HEAD;
    let url = match parts.uri.path_and_query() {
        Some(pq) if replayable => {
            here.portal_url(pq.as_str().strip_prefix(here.portal()).unwrap_or(""))
        }
        _ => here.portal_url("/admin/"),
    };
    let id = crate::access::RequestId::current();
    let ret = Return {
        portal_origin: here.origin(),
        url,
        method: &parts.method,
        referer: parts.headers.get(REFERER).and_then(|v| v.to_str().ok()),
        request_id: id.as_str(),
        hand_off: None,
    };
    let demo = st.options.demo;
    crate::gateway::render::refused(&st.signer, &here, verdict, &ret, &parts.headers, demo, now)
}

/// Why a visit is not an administrator's: not in `admin.group`, or the pipeline's verdict.
enum Refusal {
    NotAdmin(Here, String),
    Verdict(Here, Verdict),
}

impl Admin {
    /// The administrator the pipeline's `verdict` lets in, or why not.
    fn admitted(
        visit: Visit,
        verdict: Verdict,
        ip: Option<std::net::IpAddr>,
    ) -> Result<Admin, Refusal> {
        let Visit { st, here, jar } = visit;
        let user = match &verdict {
            Verdict::Allow(g) => Some(&g.user),
            Verdict::StepUp(s) => Some(&s.user),
            _ => None,
        };
        // The floor first: a step-up would not make someone else an administrator.
        if let Some(u) = user.filter(|u| !in_group(&here, u)) {
            let username = u.username.clone();
            return Err(Refusal::NotAdmin(here, username));
        }
        match verdict {
            Verdict::Allow(g) => Ok(Admin {
                st,
                here,
                jar,
                session: g.session,
                user: std::sync::Arc::unwrap_or_clone(g.user),
                ip,
            }),
            v => Err(Refusal::Verdict(here, v)),
        }
    }

    /// For a form that reads (validate, check): its CSRF token.
    fn check_csrf(&self, csrf: &str) -> Result<(), PortalError> {
        check_csrf(&self.st, &self.here, &self.jar, Some(&self.session), csrf)
    }

    /// For a change: the form's CSRF token, then the floor — AAL3 within
    /// `admin.write_max_age` (else the step-up page, returning to `back` under the portal),
    /// whatever the policies allowed. The caller as the API's audit names it.
    fn change(
        self,
        csrf: &str,
        back: &str,
    ) -> Result<(Admin, Caller), Box<Result<Response, PortalError>>> {
        self.check_csrf(csrf).map_err(|e| Box::new(Err(e)))?;
        let url = self.here.portal_url(back);
        let user = self.user.clone();
        if let Some(step) =
            step_up_needed(&self.st, &self.here, &self.session, user, &url, Utc::now())
        {
            return Err(Box::new(Ok(see_other(&step))));
        }
        let caller = self.caller();
        Ok((self, caller))
    }

    /// The administrator as the API's audit names a caller.
    fn caller(&self) -> Caller {
        Caller {
            actor: format!("admin:{}", self.user.username),
            name: self.user.username.clone(),
            ip: self.ip,
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
