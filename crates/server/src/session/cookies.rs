//! stepgate's cookies: their names, how they are set, and how requests' `Cookie` headers
//! are read (with [`stepgate_request::cookies`]: exact names, nothing decoded, a cookie
//! sent twice is no cookie). The session cookie carries an opaque id only; what it names
//! is in the hot store ([`crate::session`]).

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use stepgate_config::SessionsConfig;

use crate::app::state::Runtime;

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
/// prefix), the device cookie, the sign-in flow's and the hand-off's cookies and the demo's
/// chosen device.
pub fn own_cookie_names(rt_config: &stepgate_config::Config) -> Vec<String> {
    vec![
        session_cookie_name(&rt_config.sessions),
        rt_config.sessions.cookie.name.clone(),
        rt_config.devices.cookie.name.clone(),
        PRE_COOKIE.to_string(),
        crate::portal::upstream::FLOW_COOKIE.to_string(),
        crate::portal::handoff::NONCE_COOKIE.to_string(),
        crate::demo::DEVICE_COOKIE.to_string(),
        crate::i18n::LANG_COOKIE.to_string(),
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
    /// What the request's `Cookie` line holds of stepgate's own cookies, when it was read
    /// with [`decision_cookies_sorting`] (the reverse proxy, which strips them).
    pub own: Option<stepgate_request::cookies::OwnInLine>,
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
    let names = decision_cookie_names(rt);
    let found = stepgate_request::cookies::lookup_many(headers, names);
    decided(names, found, None)
}

/// [`decision_cookies`], and in the same pass over the `Cookie` line, what it holds of
/// stepgate's own cookies ([`DecisionCookies::own`]) for the proxy to strip them by.
pub fn decision_cookies_sorting<'a>(
    rt: &'a Runtime,
    headers: &'a HeaderMap,
) -> Result<DecisionCookies<'a>, RepeatedSessionCookie> {
    let names = decision_cookie_names(rt);
    let (found, own) =
        stepgate_request::cookies::lookup_many_sorting(headers, names, &rt.own_cookies);
    decided(names, found, own)
}

/// The names [`DecisionCookies`] holds, in its order.
fn decision_cookie_names(rt: &Runtime) -> [&str; 3] {
    [
        rt.session_cookie.as_str(),
        rt.config.devices.cookie.name.as_str(),
        crate::demo::DEVICE_COOKIE,
    ]
}

fn decided<'a>(
    names: [&'a str; 3],
    found: [stepgate_request::cookies::Lookup<'a>; 3],
    own: Option<stepgate_request::cookies::OwnInLine>,
) -> Result<DecisionCookies<'a>, RepeatedSessionCookie> {
    use stepgate_request::cookies::Lookup;
    if found[0] == Lookup::Repeated {
        return Err(RepeatedSessionCookie);
    }
    Ok(DecisionCookies {
        names,
        values: found.map(Lookup::one),
        own,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo;

    fn runtime() -> Runtime {
        Runtime::new(stepgate_config::load_str("t.yaml", "apps: []\n", None).unwrap())
    }

    /// `h` with one more `Cookie` header line.
    fn cookie_line(h: &mut HeaderMap, line: &str) {
        h.append(header::COOKIE, HeaderValue::from_str(line).unwrap());
    }

    #[test]
    fn the_decision_reads_its_three_cookies_by_exact_name_and_no_others() {
        let rt = runtime();
        let session = session_cookie_name(&rt.config.sessions);
        let device = rt.config.devices.cookie.name.clone();
        let mut h = HeaderMap::new();
        cookie_line(
            &mut h,
            &format!("_ga=GA1.2.3; {session}=s1; theme=dark; {device}=dv"),
        );
        // HTTP/2 sends one header per cookie; an encoded or case-folded spelling of the
        // session cookie's name is another cookie.
        let encoded = session.replace('_', "%5F");
        let folded = session.to_ascii_lowercase();
        let kiosk = demo::DEVICE_COOKIE;
        cookie_line(
            &mut h,
            &format!("{encoded}=forged; {folded}=forged; {kiosk}=kiosk"),
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
        cookie_line(&mut h, &format!("{device}=a; {device}=b"));
        let jar = decision_cookies(&rt, &h).unwrap();
        assert_eq!(jar.cookie(&device), None);
        cookie_line(&mut h, &format!("{session}=a"));
        cookie_line(&mut h, &format!("{session}=a"));
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
