//! Helpers shared by the portal and the gateway: cookies, the current session, signed
//! step-up / blocked tokens, return-target checks and requirement conversion.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_authn::service::AuthError;
use stepgate_config::SessionsConfig;
use stepgate_policy::{RemediationItem, StepUpRequirement};

use crate::session::{self, Session};
use crate::state::{AppState, Runtime};

/// The name of the pre-session cookie that binds the login form's CSRF token.
pub const PRE_COOKIE: &str = "stepgate_pre";

/// The session cookie's name: `__Host-` prefixed when host-only and secure.
pub fn session_cookie_name(cfg: &SessionsConfig) -> String {
    if cfg.cookie.secure && cfg.cookie.domain.is_none() {
        format!("__Host-{}", cfg.cookie.name)
    } else {
        cfg.cookie.name.clone()
    }
}

/// The session cookie for `id`.
pub fn session_cookie(
    cfg: &SessionsConfig,
    id: String,
    max_age: Option<Duration>,
) -> Cookie<'static> {
    let mut c = Cookie::new(session_cookie_name(cfg), id);
    c.set_http_only(true);
    c.set_secure(cfg.cookie.secure);
    c.set_same_site(SameSite::Lax);
    c.set_path("/");
    if let Some(d) = &cfg.cookie.domain {
        c.set_domain(d.clone());
    }
    if let Some(age) = max_age {
        c.set_max_age(time_duration(age));
    }
    c
}

/// A cookie that deletes the session cookie.
pub fn clear_session_cookie(cfg: &SessionsConfig) -> Cookie<'static> {
    let mut c = session_cookie(cfg, String::new(), None);
    c.set_max_age(time_duration(Duration::ZERO));
    c
}

fn time_duration(d: Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(d.as_secs().min(i64::MAX as u64) as i64)
}

/// A plain helper cookie (pre-session binding, demo profile): host-only, Lax.
pub fn plain_cookie(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    let mut c = Cookie::new(name, value);
    c.set_http_only(true);
    c.set_secure(secure);
    c.set_same_site(SameSite::Lax);
    c.set_path("/");
    c
}

/// Every cookie stepgate sets: the session cookie (and its name without the `__Host-`
/// prefix), the device cookie, the sign-in flow's cookie and the demo's chosen device.
pub fn own_cookie_names(rt_config: &stepgate_config::Config) -> Vec<String> {
    vec![
        session_cookie_name(&rt_config.sessions),
        rt_config.sessions.cookie.name.clone(),
        rt_config.devices.cookie.name.clone(),
        PRE_COOKIE.to_string(),
        crate::demo::DEVICE_COOKIE.to_string(),
    ]
}

/// Where the access decision reads cookies by name: the portal's [`CookieJar`] or just the
/// few the decision needs ([`DecisionCookies`], app requests). Both read `Cookie` headers
/// with [`stepgate_request::cookies`]: exact names, nothing decoded, and a cookie sent more
/// than once is no cookie.
pub trait CookieSource {
    /// The value of the cookie called exactly `name`, when it was sent exactly once.
    fn cookie(&self, name: &str) -> Option<&str>;
}

/// The cookies the access decision reads: the session cookie, the device cookie and the
/// demo's chosen device, and no others. See [`decision_cookies`].
pub struct DecisionCookies<'a> {
    names: [&'a str; 3],
    values: [Option<&'a str>; 3],
}

impl CookieSource for DecisionCookies<'_> {
    fn cookie(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values[i]
    }
}

/// The session cookie was sent more than once (one planted by a sibling host, say): which
/// one is meant cannot be told, so the request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request carries the session cookie more than once; clear this site's cookies and sign in again")]
pub struct RepeatedSessionCookie;

/// Reads the cookies the access decision reads (see [`DecisionCookies`]) in one pass,
/// borrowing their values from the headers. A repeated device or demo cookie counts as
/// absent; a repeated session cookie refuses the request.
pub fn decision_cookies<'a>(
    rt: &'a Runtime,
    headers: &'a HeaderMap,
) -> Result<DecisionCookies<'a>, RepeatedSessionCookie> {
    use stepgate_request::cookies::Lookup;
    let names = [
        rt.session_cookie.as_str(),
        rt.config.devices.cookie.name.as_str(),
        crate::demo::DEVICE_COOKIE,
    ];
    let found = stepgate_request::cookies::lookup_many(headers, names);
    if found[0] == Lookup::Repeated {
        return Err(RepeatedSessionCookie);
    }
    Ok(DecisionCookies {
        names,
        values: found.map(Lookup::one),
    })
}

/// The portal's cookies: read from the request with [`stepgate_request::cookies`] (exact
/// names, nothing decoded, a repeated name read as absent and remembered), and the cookies
/// the response sets (`Set-Cookie`, emitted when the jar is part of the response).
#[derive(Clone, Debug, Default)]
pub struct CookieJar {
    sent: Vec<(String, String)>,
    repeated: Vec<String>,
    set: Vec<Cookie<'static>>,
}

impl CookieJar {
    /// An empty jar (nothing read, nothing to set).
    pub fn new() -> Self {
        Self::default()
    }

    /// The cookies `headers` carry.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut jar = CookieJar::default();
        for (name, value) in stepgate_request::cookies::pairs(headers) {
            if jar.repeated.iter().any(|r| r == name) {
                continue;
            }
            if let Some(i) = jar.sent.iter().position(|(n, _)| n == name) {
                jar.sent.remove(i);
                jar.repeated.push(name.to_string());
                continue;
            }
            jar.sent.push((name.to_string(), value.to_string()));
        }
        jar
    }

    /// The value of the cookie `name`, when the request sent it exactly once.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.sent
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request sent `name` more than once.
    pub fn repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|r| r == name)
    }

    /// The jar with `cookie` to be set on the response.
    pub fn set(mut self, cookie: Cookie<'static>) -> Self {
        self.set.push(cookie);
        self
    }
}

impl CookieSource for CookieJar {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CookieJar {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(CookieJar::from_headers(&parts.headers))
    }
}

impl axum::response::IntoResponseParts for CookieJar {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut res: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        for c in self.set {
            // Values are stepgate's own (ids, signed tokens): cookie-octets, never encoded.
            if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        Ok(res)
    }
}

impl IntoResponse for CookieJar {
    fn into_response(self) -> Response {
        (self, ()).into_response()
    }
}

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
}

impl axum::extract::FromRequestParts<crate::state::Shared> for Here {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        st: &crate::state::Shared,
    ) -> Result<Self, Response> {
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
            return Err(st.pages.render(
                StatusCode::MISDIRECTED_REQUEST,
                "message.html",
                minijinja::context! { portal => rt.portal(), title => "Not served here", message => "This address is not one stepgate serves. Check the link, or ask your administrator which address to use." },
            ));
        };
        let scheme = if parts.extensions.get::<crate::tls::Tls>().is_some() {
            "https"
        } else {
            rt.default_scheme()
        };
        let origin = [scheme, "://", &host.to_ascii_lowercase()].concat();
        Ok(Here { rt, origin })
    }
}

/// The current session, if the cookie names a live one. A store failure is returned as
/// an error so the caller can fail closed.
pub async fn current_session(
    st: &AppState,
    rt: &Runtime,
    jar: &(dyn CookieSource + Sync),
    now: DateTime<Utc>,
) -> Result<Option<Session>, stepgate_store::StoreError> {
    let Some(id) = jar.cookie(&rt.session_cookie) else {
        return Ok(None);
    };
    // An id stepgate did not issue (its MAC does not verify) is refused before the store
    // is asked. Only checked ids are ever cached, so a cached one needs no second check.
    if id.is_empty()
        || id.len() > 128
        || !(st.cache.session_cached(id) || st.signer.session_id_ok(id))
    {
        return Ok(None);
    }
    let r = session::load(
        st.stores.hot.as_ref(),
        &st.cache,
        id,
        &rt.config.sessions,
        &rt.config.assurance,
        now,
    )
    .await?;
    Ok(r.ok())
}

/// Whether the client wants a machine answer (API): a bearer token, or an `Accept` that
/// asks for JSON and not HTML. Never guessed from the path.
pub fn is_api(headers: &HeaderMap) -> bool {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
    {
        return true;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !accept.contains("text/html")
        && (accept.contains("application/json") || accept.contains("+json"))
}

/// A factor kind's name for people.
pub use stepgate_policy::outcome::factor_title;

/// What a step-up page needs, signed into the page's forms.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepToken {
    /// Where to go when done (absolute URL, checked against the configured apps).
    pub rt: String,
    /// For a step-up triggered by a non-GET request: the page to send the user back to, to
    /// resubmit.
    #[serde(default)]
    pub back: Option<String>,
    /// What is required.
    pub req: StepUpRequirement,
    /// Why, in plain words.
    pub why: String,
    /// Completing the sign-in rather than stepping up an established session.
    #[serde(default)]
    pub sign_in: bool,
    /// The session the token was issued to (stolen tokens are useless elsewhere).
    #[serde(default)]
    pub user_id: String,
}

/// What the blocked page shows, signed into its URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockedToken {
    /// Where the user was going.
    pub rt: String,
    /// The reason.
    pub message: String,
    /// The failing checks.
    pub items: Vec<RemediationItem>,
    /// The deciding policy.
    pub policy: String,
}

const STEP: &str = "step";
const BLOCKED: &str = "blocked";
const RETURN: &str = "rt";

/// Signs a step token.
pub fn sign_step(st: &AppState, rt: &Runtime, t: &StepToken, now: DateTime<Utc>) -> String {
    let ttl = rt.config.server.return_target_ttl.as_secs() as i64;
    st.signer.sign(
        STEP,
        &serde_json::to_string(t).unwrap_or_default(),
        now.timestamp() + ttl,
    )
}

/// Verifies a step token and its return target.
pub fn verify_step(
    st: &AppState,
    rt: &Runtime,
    token: &str,
    now: DateTime<Utc>,
) -> Option<StepToken> {
    let t: StepToken =
        serde_json::from_str(&st.signer.verify(STEP, token, now.timestamp())?).ok()?;
    (allowed_target(rt, &t.rt) && t.back.as_deref().is_none_or(|b| allowed_target(rt, b)))
        .then_some(t)
}

/// Signs a blocked-page token.
pub fn sign_blocked(st: &AppState, rt: &Runtime, t: &BlockedToken, now: DateTime<Utc>) -> String {
    let ttl = rt.config.server.return_target_ttl.as_secs() as i64;
    st.signer.sign(
        BLOCKED,
        &serde_json::to_string(t).unwrap_or_default(),
        now.timestamp() + ttl,
    )
}

/// Verifies a blocked-page token.
pub fn verify_blocked(
    st: &AppState,
    rt: &Runtime,
    token: &str,
    now: DateTime<Utc>,
) -> Option<BlockedToken> {
    let t: BlockedToken =
        serde_json::from_str(&st.signer.verify(BLOCKED, token, now.timestamp())?).ok()?;
    allowed_target(rt, &t.rt).then_some(t)
}

/// Signs a return target (after checking it).
pub fn sign_return(
    st: &AppState,
    rt: &Runtime,
    target: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    if !allowed_target(rt, target) {
        return None;
    }
    let ttl = rt.config.server.return_target_ttl.as_secs() as i64;
    Some(st.signer.sign(RETURN, target, now.timestamp() + ttl))
}

/// Verifies a signed return target: genuine, unexpired, and still under a configured app.
pub fn verify_return(
    st: &AppState,
    rt: &Runtime,
    token: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    let target = st.signer.verify(RETURN, token, now.timestamp())?;
    allowed_target(rt, &target).then_some(target)
}

/// Whether `target` is an absolute http(s) URL on a configured app host or the portal's
/// own host: the only places stepgate redirects to (no open redirect).
pub fn allowed_target(rt: &Runtime, target: &str) -> bool {
    let Ok(u) = url::Url::parse(target) else {
        return false;
    };
    if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some()
    {
        return false;
    }
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    if rt.hosts.contains_key(&host) {
        return true;
    }
    url::Url::parse(&rt.public_url)
        .ok()
        .and_then(|p| {
            p.host_str().map(|h| {
                h.eq_ignore_ascii_case(&host)
                    && p.port_or_known_default() == u.port_or_known_default()
            })
        })
        .unwrap_or(false)
}

/// A redirect (303 See Other, so a POST becomes a GET).
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    crate::security::portal_headers(r)
}

/// A JSON error body for APIs.
pub fn json_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    crate::security::portal_headers(r)
}

/// What to tell a person about an authentication failure.
pub fn auth_message(e: &AuthError) -> String {
    match e {
        AuthError::InvalidCredentials => "That did not match. Check and try again.".into(),
        AuthError::Locked { until } => format!(
            "Too many failed attempts. Try again after {} UTC.",
            until.format("%H:%M")
        ),
        AuthError::Replayed => "That code was already used. Wait for the next one.".into(),
        AuthError::Expired => "That code has expired. Ask for a new one.".into(),
        AuthError::TooManyGuesses => {
            "Too many wrong guesses for that code. Ask for a new one.".into()
        }
        AuthError::NotEnrolled(k) => format!(
            "You have no {} set up.",
            factor_title(k.as_str()).to_lowercase()
        ),
        AuthError::Disabled => "This account is disabled. Contact your administrator.".into(),
        AuthError::RateLimited(_) => "Too many codes requested. Wait a few minutes.".into(),
        AuthError::Rejected(why) => why.clone(),
        other => capitalise(&other.public_message()),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => {
            f.to_uppercase().chain(c).collect::<String>() + if s.ends_with('.') { "" } else { "." }
        }
        None => String::new(),
    }
}

/// The peer address extension, as set by `into_make_service_with_connect_info`.
pub type Peer = axum::extract::ConnectInfo<SocketAddr>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo;

    fn runtime() -> Runtime {
        Runtime::new(stepgate_config::load_str("t.yaml", "apps: []\n", None).unwrap())
    }

    #[test]
    fn the_decision_reads_its_three_cookies_by_exact_name_and_no_others() {
        let rt = runtime();
        let session = session_cookie_name(&rt.config.sessions);
        let device = rt.config.devices.cookie.name.clone();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "_ga=GA1.2.3; {session}=s1; theme=dark; {device}=dv"
            ))
            .unwrap(),
        );
        // HTTP/2 sends one header per cookie; an encoded or case-folded spelling of the
        // session cookie's name is another cookie.
        let encoded = session.replace('_', "%5F");
        let folded = session.to_ascii_lowercase();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "{encoded}=forged; {folded}=forged; {}=kiosk",
                demo::DEVICE_COOKIE
            ))
            .unwrap(),
        );
        let jar = decision_cookies(&rt, &h).unwrap();
        assert_eq!(jar.cookie(&session), Some("s1"));
        assert_eq!(jar.cookie(&device), Some("dv"));
        assert_eq!(jar.cookie(demo::DEVICE_COOKIE), Some("kiosk"));
        for name in ["_ga", "theme", "", encoded.as_str()] {
            assert_eq!(jar.cookie(name), None, "{name}");
        }
        // The portal's jar reads the same.
        let full = CookieJar::from_headers(&h);
        for name in [session.as_str(), device.as_str(), demo::DEVICE_COOKIE] {
            assert_eq!(full.get(name), jar.cookie(name), "{name}");
        }
    }

    #[test]
    fn a_repeated_session_cookie_refuses_and_other_repeats_read_as_absent() {
        let rt = runtime();
        let session = session_cookie_name(&rt.config.sessions);
        let device = rt.config.devices.cookie.name.clone();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{device}=a; {device}=b")).unwrap(),
        );
        let jar = decision_cookies(&rt, &h).unwrap();
        assert_eq!(jar.cookie(&device), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{session}=a")).unwrap(),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{session}=a")).unwrap(),
        );
        assert_eq!(decision_cookies(&rt, &h).err(), Some(RepeatedSessionCookie));
        let full = CookieJar::from_headers(&h);
        assert!(full.repeated(&session));
        assert_eq!(full.get(&session), None);
        assert!(full.repeated(&device));
    }

    #[test]
    fn the_jar_sets_cookies_as_they_are() {
        let cfg = stepgate_config::load_str("t.yaml", "apps: []\n", None).unwrap();
        let r = (
            CookieJar::new().set(session_cookie(&cfg.sessions, "abc.DEF-_".into(), None)),
            "ok",
        )
            .into_response();
        let set: Vec<_> = r.headers().get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(set.len(), 1);
        let v = set[0].to_str().unwrap();
        assert!(v.starts_with("__Host-stepgate_session=abc.DEF-_;"), "{v}");
        assert!(
            v.contains("HttpOnly") && v.contains("Secure") && v.contains("SameSite=Lax"),
            "{v}"
        );
    }
}
