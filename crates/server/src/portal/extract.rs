//! What portal handlers extract from a request: where it reached the portal ([`Here`]),
//! the client's address ([`ClientAddr`]),
//! a signed-in user ([`SignedIn`]), and the checked form of a step-up ([`StepForm`]) or of
//! a change to one's own factors ([`FreshForm`]) — the session, the CSRF token, the signed
//! step-up link and the freshness each needs, checked once here.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use serde::de::DeserializeOwned;
use stepgate_store::UserRecord;

use super::error::PortalError;
use super::links::{Links, StepToken};
use crate::app::state::{Runtime, Shared};
use crate::session::cookies::CookieJar;
use crate::session::Session;

/// The configuration in force and where this request reached the portal: a portal
/// handler's view of the runtime. It derefs to [`Runtime`]; [`Here::portal_url`] builds
/// the portal's own URLs on the host the request came to — checked to be the public URL's
/// or an app's (the portal is served on every app host, so a host-only session cookie set
/// there is the app's) — and never from an unchecked `Host`: any other host is answered
/// 421.
pub struct Here {
    rt: std::sync::Arc<Runtime>,
    origin: String,
}

impl std::ops::Deref for Here {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.rt
    }
}

impl Here {
    /// The absolute URL of the portal page `path` (`/account?done=totp`).
    pub fn portal_url(&self, path: &str) -> String {
        [self.origin.as_str(), self.rt.portal(), path].concat()
    }

    /// `scheme://host[:port]` the request reached the portal on (a served host).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl FromRequestParts<Shared> for Here {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Response> {
        let rt = st.runtime.load_full();
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h.to_str().ok(),
            (None, _) => parts.uri.authority().map(|a| a.as_str()),
            _ => None,
        };
        let Some(host) = host.filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
                && rt.serves_host(h)
        }) else {
            return Err(super::pages::Message {
                portal: rt.portal(),
                title: &crate::i18n::t("gateway-misdirected-title"),
                text: &crate::i18n::t("gateway-misdirected-text"),
                way_on: Some(super::pages::WayOn::new(
                    rt.portal_url("/account"),
                    crate::i18n::t("go-to-account"),
                )),
                also: None,
            }
            .render(StatusCode::MISDIRECTED_REQUEST));
        };
        let scheme = if parts.extensions.get::<crate::app::tls::Tls>().is_some() {
            "https"
        } else {
            rt.default_scheme()
        };
        let origin = [scheme, "://", &host.to_ascii_lowercase()].concat();
        Ok(Here { rt, origin })
    }
}

/// What every portal handler starts from: the shared state, where the request reached the
/// portal ([`Here`]; unknown hosts are answered 421 before the handler runs) and the
/// request's cookies.
pub struct Visit {
    /// The shared state.
    pub st: Shared,
    /// Where the request reached the portal.
    pub here: Here,
    /// The request's cookies.
    pub jar: CookieJar,
}

impl FromRequestParts<Shared> for Visit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Response> {
        let here = Here::from_request_parts(parts, st).await?;
        let jar = CookieJar::from_headers(&parts.headers);
        Ok(Visit {
            st: st.clone(),
            here,
            jar,
        })
    }
}

/// The client's address: the peer's, or — behind a trusted proxy — the one it names
/// ([`crate::access::request::client_ip`]).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl FromRequestParts<Shared> for ClientAddr {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Response> {
        let peer = crate::app::responses::Peer::from_request_parts(parts, st)
            .await
            .map_err(IntoResponse::into_response)?;
        let rt = st.runtime.load();
        let ip = crate::access::request::client_ip(&rt, peer.0, &parts.headers);
        Ok(ClientAddr(ip))
    }
}

/// The session the request's cookie names, live (complete or pending); `None` when there is
/// none. The session cookie sent twice is refused.
pub async fn live_session(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
) -> Result<Option<Session>, PortalError> {
    if jar.repeated(&rt.session_cookie) {
        return Err(PortalError::RepeatedCookie {
            portal: rt.portal().to_string(),
        });
    }
    Ok(st.sessions.current(rt, jar, chrono::Utc::now()).await?)
}

/// The user a session is of, unless gone or disabled.
pub async fn user_of(st: &Shared, s: &Session) -> Result<Option<UserRecord>, PortalError> {
    Ok(st
        .stores
        .durable
        .get_user(&s.data.user_id)
        .await?
        .filter(|u| !u.disabled))
}

/// Whether `submitted` is the CSRF token of the session (or, before sign-in, of the
/// pre-session cookie).
pub fn csrf_ok(st: &Shared, jar: &CookieJar, session: Option<&Session>, submitted: &str) -> bool {
    let binding = match session {
        Some(s) => Some(s.id.as_str()),
        None => jar.get(crate::session::cookies::PRE_COOKIE),
    };
    binding.is_some_and(|b| st.signer.csrf_ok(b, submitted))
}

/// The live, complete session the request's cookie names and its user, if any (for the
/// JSON endpoints, which answer "sign in first" rather than redirect).
pub async fn signed_in(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
) -> Result<Option<(Session, UserRecord)>, PortalError> {
    let Some(session) = live_session(st, rt, jar).await?.filter(|s| !s.data.pending) else {
        return Ok(None);
    };
    Ok(user_of(st, &session).await?.map(|u| (session, u)))
}

/// A signed-in user: a live, complete session and its user. Anyone else is sent to sign
/// in, and back to this page after.
pub struct SignedIn {
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: UserRecord,
}

impl FromRequestParts<Shared> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> Result<Self, Response> {
        let here = Here::from_request_parts(parts, st).await?;
        let jar = CookieJar::from_headers(&parts.headers);
        let session = live_session(st, &here, &jar)
            .await
            .map_err(IntoResponse::into_response)?;
        let user = match &session {
            Some(s) if !s.data.pending => {
                user_of(st, s).await.map_err(IntoResponse::into_response)?
            }
            _ => None,
        };
        match (session, user) {
            (Some(session), Some(user)) => Ok(SignedIn { session, user }),
            _ => {
                // A page read with GET comes back with its query (`/admin/decisions?id=…`):
                // the return is signed and kept to this server's hosts. Anything else
                // comes back to its path, read with GET, never re-sent.
                let asked = match (&parts.method, parts.uri.path_and_query()) {
                    (&axum::http::Method::GET, Some(pq)) => pq.as_str(),
                    _ => parts.uri.path(),
                };
                let back = here.portal_url(asked.strip_prefix(here.portal()).unwrap_or(""));
                let links = Links::new(&st.signer, &here);
                let t = links
                    .sign_return(&back, chrono::Utc::now())
                    .unwrap_or_default();
                Err(crate::app::responses::see_other(
                    &here.portal_url(&format!("/login?t={t}")),
                ))
            }
        }
    }
}

/// A form that carries a CSRF token and a signed step-up link.
pub trait StepFields: CsrfField {
    /// The signed step-up link (`t`).
    fn token(&self) -> &str;
}

/// The form a request's body holds.
async fn parse_form<F: DeserializeOwned>(
    parts: Parts,
    body: axum::body::Body,
    st: &Shared,
) -> Result<F, Response> {
    let req = Request::from_parts(parts, body);
    let Form(form) = Form::<F>::from_request(req, st)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(form)
}

/// A form's CSRF token, checked against the session's (or, before sign-in, the
/// pre-session cookie's): a mismatch is [`PortalError::FormExpired`].
pub fn check_csrf(
    st: &Shared,
    here: &Here,
    jar: &CookieJar,
    session: Option<&Session>,
    submitted: &str,
) -> Result<(), PortalError> {
    if csrf_ok(st, jar, session, submitted) {
        return Ok(());
    }
    Err(PortalError::FormExpired {
        portal: here.portal().to_string(),
    })
}

/// A checked step-up form: the live session (pending, during a sign-in) and its user, the
/// step-up link it was issued with (for this user), and the CSRF token matched.
pub struct StepForm<F> {
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: UserRecord,
    /// The verified step-up link.
    pub step: StepToken,
    /// The form.
    pub form: F,
}

impl<F: DeserializeOwned + StepFields + Send> FromRequest<Shared> for StepForm<F> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &Shared) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let here = Here::from_request_parts(&mut parts, st).await?;
        let jar = CookieJar::from_headers(&parts.headers);
        let form: F = parse_form(parts, body, st).await?;
        let (session, user, step) = step_context(st, &here, &jar, form.token())
            .await
            .map_err(IntoResponse::into_response)?;
        check_csrf(st, &here, &jar, Some(&session), form.csrf())
            .map_err(IntoResponse::into_response)?;
        Ok(StepForm {
            session,
            user,
            step,
            form,
        })
    }
}

/// The session, user and step-up link a step-up page or form refers to.
pub async fn step_context(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
    token: &str,
) -> Result<(Session, UserRecord, StepToken), PortalError> {
    let portal = || rt.portal().to_string();
    let Some(session) = live_session(st, rt, jar).await? else {
        return Err(PortalError::SignedOut { portal: portal() });
    };
    let links = Links::new(&st.signer, rt);
    let Some(step) = links
        .verify_step(token, chrono::Utc::now())
        .filter(|t| t.user_id == session.data.user_id)
    else {
        return Err(PortalError::LinkExpired {
            portal: portal(),
            username: Some(session.data.username.clone()),
        });
    };
    let Some(user) = user_of(st, &session).await? else {
        return Err(PortalError::SignedOut { portal: portal() });
    };
    Ok((session, user, step))
}

/// A form that carries a CSRF token.
pub trait CsrfField {
    /// The CSRF token.
    fn csrf(&self) -> &str;
}

/// A checked form that changes the user's own factors: signed in, the CSRF token matched,
/// and a fresh factor passed (see [`super::account::fresh_enough`]); a session that is not
/// fresh enough is sent to step up first.
pub struct FreshForm<F> {
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: UserRecord,
    /// The form.
    pub form: F,
}

impl<F: DeserializeOwned + CsrfField + Send> FromRequest<Shared> for FreshForm<F> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &Shared) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let here = Here::from_request_parts(&mut parts, st).await?;
        let SignedIn { session, user } = SignedIn::from_request_parts(&mut parts, st).await?;
        let jar = CookieJar::from_headers(&parts.headers);
        let form: F = parse_form(parts, body, st).await?;
        check_csrf(st, &here, &jar, Some(&session), form.csrf())
            .map_err(IntoResponse::into_response)?;
        super::account::fresh_enough(st, &here, &session, &user, false, "").await?;
        Ok(FreshForm {
            session,
            user,
            form,
        })
    }
}
