//! Who calls the admin API, and whether they may: an API token with the endpoint's scope,
//! or an administrator's portal session. A session's call is decided by the access
//! pipeline as a request to the admin app (`admin.app`, [`super::admission`]): in the
//! decision log under the response's request id, and refused as the policies say (a step-up
//! the policies ask: 401 `step-up-required` naming the requirement, with `step_up_url`; a
//! denial: 403 `access-denied` with the failing checks; a store or signal source down: 503).
//! The floor stays on top, whatever the policies say: a member of `admin.group` for a read,
//! and for a change also a fresh AAL3 (`admin.write_max_age`, 403 `step-up-required`),
//! judged by the same assurance rules as every step-up of the pipeline. API tokens are not
//! sessions: they are checked by scope alone, and policies do not decide their calls.
//! Every call that gets past authentication is audited here, in one place, with the
//! token's name or the administrator's.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use stepgate_store::UserRecord;

use super::admission::{self, in_group, Asked};
use super::problem::Problem;
use super::tokens::{self, Scope, TokenRefused};
use super::Endpoint;
use crate::access::signals::PeerCertificates;
use crate::access::Verdict;
use crate::app::responses::Peer;
use crate::app::state::{Runtime, Shared};
use crate::session::cookies::CookieJar;
use crate::session::Session;

pub use super::admission::write_requirement;

/// The authenticated caller of an endpoint (a request extension handlers read).
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who, as the audit log names them: `admin:token:<name>` or `admin:<username>`.
    pub actor: String,
    /// The same without the `admin:` prefix, as the authenticator's audit events take it.
    pub name: String,
    /// The client address.
    pub ip: Option<std::net::IpAddr>,
}

/// The middleware in front of every endpoint but the OpenAPI document: authenticates,
/// checks the endpoint's scope, runs it, and audits the call.
pub async fn guard(
    endpoint: &'static Endpoint,
    State(st): State<Shared>,
    peer: Peer,
    mut req: Request,
    next: Next,
) -> Response {
    let rt = st.runtime.load_full();
    let ip = crate::access::request::client_ip(&rt, peer.0, req.headers());
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let call = Call {
        st: &st,
        rt: &rt,
        endpoint,
        method: &method,
        path: &path,
        headers: req.headers(),
        peer: peer.0,
        tls: req.extensions().get::<PeerCertificates>(),
        ip,
        now: Utc::now(),
    };
    let caller = match authenticate(&call).await {
        Ok(c) => c,
        Err((p, None)) => return with_instance(p, &path),
        Err((p, Some(caller))) => {
            // Authenticated but not allowed: audited, so a probing token shows up.
            let status = p.status;
            audit(&st, &caller, endpoint, &method, &path, status).await;
            return with_instance(p, &path);
        }
    };
    req.extensions_mut().insert(caller.clone());
    let res = next.run(req).await;
    let status = res.status().as_u16();
    audit(&st, &caller, endpoint, &method, &path, status).await;
    res
}

fn with_instance(mut p: Problem, path: &str) -> Response {
    p.instance = Some(path.to_string());
    p.into_response()
}

impl Caller {
    /// Records an audit event of `kind` about `subject`, by this caller (its actor and
    /// client address).
    pub async fn audit(
        &self,
        st: &Shared,
        kind: &str,
        subject: Option<String>,
        detail: serde_json::Value,
    ) {
        let mut e = stepgate_store::NewAuditEvent::now(kind);
        e.actor = Some(self.actor.clone());
        e.subject = subject;
        e.ip = self.ip.map(|i| i.to_string());
        e.detail = detail;
        st.audit.append(e).await;
    }
}

/// The `admin.read` or `admin.write` audit event of a call.
async fn audit(
    st: &Shared,
    caller: &Caller,
    endpoint: &Endpoint,
    method: &Method,
    path: &str,
    status: u16,
) {
    let kind = if endpoint.scope.is_write() {
        "admin.write"
    } else {
        "admin.read"
    };
    let detail = serde_json::json!({
        "method": method.as_str(), "path": path, "status": status,
        "operation": endpoint.operation, "scope": endpoint.scope.as_str(),
    });
    caller.audit(st, kind, None, detail).await;
}

/// A call being authenticated: what it asks for and where it comes from.
struct Call<'a> {
    st: &'a Shared,
    rt: &'a Runtime,
    endpoint: &'a Endpoint,
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
    peer: std::net::SocketAddr,
    tls: Option<&'a PeerCertificates>,
    ip: Option<std::net::IpAddr>,
    now: DateTime<Utc>,
}

impl Call<'_> {
    /// The caller named `name` (`token:<name>` or a username).
    fn caller(&self, name: String) -> Caller {
        Caller {
            actor: format!("admin:{name}"),
            name,
            ip: self.ip,
        }
    }
}

/// A refusal, with the caller when they were authenticated.
type Refusal = (Problem, Option<Caller>);

/// A refusal before the caller is known.
fn unknown(p: Problem) -> Refusal {
    (p, None)
}

async fn authenticate(call: &Call<'_>) -> Result<Caller, Refusal> {
    match call.headers.get(header::AUTHORIZATION) {
        // A token alone counts: a cookie beside it does not.
        Some(auth) => by_token(call, auth).await,
        None => by_session(call).await,
    }
}

/// An API token's caller: `Authorization: Bearer` with a token stepgate issued, in force,
/// with the endpoint's scope.
async fn by_token(call: &Call<'_>, auth: &HeaderValue) -> Result<Caller, Refusal> {
    let token = auth
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            unknown(Problem::unauthorized(
                "send the token as `Authorization: Bearer <token>`",
            ))
        })?;
    let t = match tokens::verify(call.st.stores.durable.as_ref(), token, call.now).await {
        Ok(t) => t,
        Err(TokenRefused::Store(e)) => return Err(unknown(Problem::unavailable("store", e))),
        Err(e) => {
            tracing::info!(reason = %e, "admin API: token refused");
            return Err(unknown(Problem::unauthorized(e.to_string())));
        }
    };
    let caller = call.caller(format!("token:{}", t.name));
    let scope = call.endpoint.scope;
    if !t.scopes.iter().any(|s| s == scope.as_str()) {
        let has = if t.scopes.is_empty() {
            "none".to_string()
        } else {
            t.scopes.join(", ")
        };
        let mut p = Problem::forbidden(
            "missing-scope",
            format!(
                "the token `{}` lacks the scope `{scope}` this needs (it has: {has})",
                t.name
            ),
        );
        p.required_scope = Some(scope.as_str().to_string());
        return Err((p, Some(caller)));
    }
    Ok(caller)
}

/// An administrator's caller: the access pipeline's `Allow` for the admin app on the
/// request's session, for an enabled member of `admin.group`; for a change, also sent as
/// JSON with a fresh AAL3.
async fn by_session(call: &Call<'_>) -> Result<Caller, Refusal> {
    let jar = CookieJar::from_headers(call.headers);
    let asked = Asked {
        method: call.method,
        path: call.path,
        headers: call.headers,
        jar: &jar,
        peer: call.peer,
        ip: call.ip,
        change: call.endpoint.scope.is_write(),
        tls: call.tls,
        now: call.now,
    };
    let verdict = admission::decide(call.st, call.rt, &asked)
        .await
        .map_err(|e| {
            unknown(Problem::bad_request(format!(
                "the path cannot be read: {e}"
            )))
        })?;
    let (session, user) = match verdict {
        Verdict::Allow(g) => (g.session, g.user),
        refused => return Err(not_allowed(call, refused)),
    };
    let caller = call.caller(user.username.clone());
    if !in_group(call.rt, &user) {
        return Err((not_an_administrator(call.rt, &user), Some(caller)));
    }
    if call.endpoint.scope.is_write() {
        if let Err(p) = may_change(call, &session, (*user).clone()) {
            return Err((p, Some(caller)));
        }
    }
    Ok(caller)
}

/// The 403 for someone signed in but not in `admin.group`.
fn not_an_administrator(rt: &Runtime, user: &UserRecord) -> Problem {
    let group = &rt.config.admin.group;
    Problem::forbidden(
        "not-an-administrator",
        format!(
            "`{}` is not in the administrators' group `{group}` (admin.group)",
            user.username
        ),
    )
}

/// The problem for a verdict other than `Allow`, with the caller when the verdict names
/// them.
fn not_allowed(call: &Call<'_>, verdict: Verdict) -> Refusal {
    let rt = call.rt;
    match verdict {
        // (`Allow` never comes here: `by_session` goes on with it.)
        Verdict::SignIn(_) | Verdict::Allow(_) => unknown(Problem::unauthorized(format!(
            "sign in to the portal ({}) as an administrator, or send an API token",
            rt.portal_url("/login")
        ))),
        Verdict::Unavailable(e) => {
            unknown(Problem::unavailable("session store or a signal source", e))
        }
        Verdict::Deny(d) => {
            let caller = d
                .session
                .as_ref()
                .map(|s| call.caller(s.data.username.clone()));
            (Problem::denied(&d), caller)
        }
        Verdict::StepUp(s) => {
            let caller = call.caller(s.user.username.clone());
            if !in_group(rt, &s.user) {
                return (not_an_administrator(rt, &s.user), Some(caller));
            }
            // (For a change, `admission::decide` raised the requirement to the floor.)
            // Back to the console, where an administrator goes on (the API's call is the
            // script's to send again).
            let back = rt.portal_url("/admin/");
            let requirement = s.requirement.clone();
            let url = step_up_link(call.st, rt, &Verdict::StepUp(s), &back, call.now);
            (Problem::step_up(&requirement, url), Some(caller))
        }
    }
}

/// Whether an administrator's session may make a change: sent as JSON, with AAL3 within
/// `admin.write_max_age`.
fn may_change(call: &Call<'_>, session: &Session, user: UserRecord) -> Result<(), Problem> {
    // A session's cookie rides along on any cross-site request; a cross-site page cannot
    // send JSON without a CORS preflight stepgate never grants.
    let json = call
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(Problem::forbidden(
            "json-required",
            "a change with a portal session must be sent with `Content-Type: application/json`",
        ));
    }
    let (st, rt) = (call.st, call.rt);
    // Back to the console, where an administrator goes on (the API's change is the
    // script's to send again).
    let back = rt.portal_url("/admin/");
    let Some(url) = step_up_needed(st, rt, session, user, &back, call.now) else {
        return Ok(());
    };
    let mut p = Problem::forbidden(
        "step-up-required",
        format!(
            "a change needs AAL3 (a hardware-bound authenticator) passed within the last {}; step up at step_up_url and send the request again",
            rt.config.admin.write_max_age
        ),
    );
    p.step_up_url = Some(url);
    Err(p)
}

/// The step-up page's URL (returning to `back`) when `session` does not meet
/// [`write_requirement`] now (the floor of a change); `None` when it does. The requirement
/// is judged as the pipeline judges every step-up.
pub fn step_up_needed(
    st: &Shared,
    rt: &Runtime,
    session: &Session,
    user: UserRecord,
    back: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    let requirement = write_requirement(rt);
    let assessed = crate::session::assurance(rt, &session.data);
    let met = !session.data.needs_step_up
        && stepgate_authn::meets_assessed(
            &session.data.factors,
            &assessed,
            &requirement,
            &rt.config.assurance,
            now,
        );
    if met {
        return None;
    }
    let verdict = Verdict::StepUp(Box::new(crate::access::verdict::StepUp {
        why: requirement.message.clone().unwrap_or_default(),
        requirement,
        user: std::sync::Arc::new(user),
        session: Some(session.clone()),
    }));
    step_up_link(st, rt, &verdict, back, now)
}

/// The portal's step-up page for a step-up `verdict`, returning to `back` (a page read
/// with GET) and naming the request's id.
pub fn step_up_link(
    st: &Shared,
    rt: &Runtime,
    verdict: &Verdict,
    back: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    let id = crate::access::RequestId::current();
    let ret = crate::gateway::render::Return {
        portal_origin: &rt.public_url,
        url: back.to_string(),
        method: &Method::GET,
        referer: None,
        request_id: id.as_str(),
        hand_off: None,
    };
    crate::gateway::render::portal_link(&st.signer, rt, verdict, &ret, now)
}

/// The scope an endpoint needs, in the words a 403 uses (for the docs' table).
pub fn describe(scope: Scope) -> &'static str {
    if scope.is_write() {
        "token scope, or a session the policies for `admin.app` allow, in `admin.group`, with AAL3 within `admin.write_max_age`"
    } else {
        "token scope, or a session the policies for `admin.app` allow, in `admin.group`"
    }
}
