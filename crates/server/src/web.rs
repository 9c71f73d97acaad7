//! Helpers shared by the portal and the gateway: cookies, the current session, signed
//! step-up / blocked tokens, return-target checks and requirement conversion.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_authn::service::AuthError;
use stepgate_authn::{MaxAge as AuthMaxAge, StepUpRequirement as AuthRequirement};
use stepgate_config::SessionsConfig;
use stepgate_policy::{HumanDuration, MaxAge, RemediationItem, StepUpRequirement};

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

/// The name in `name=value` (a `Cookie` header's piece, a `Set-Cookie`'s first part).
pub fn cookie_name(piece: &str) -> &str {
    piece.split_once('=').map_or(piece, |(n, _)| n).trim()
}

/// Where the access decision reads cookies by name: the request's full jar (portal pages)
/// or just the few it needs ([`DecisionCookies`], app requests).
pub trait CookieSource {
    /// The (decoded) value of the cookie called `name`.
    fn cookie(&self, name: &str) -> Option<&str>;
}

impl CookieSource for CookieJar {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.get(name).map(|c| c.value())
    }
}

/// The cookies the access decision reads: the session cookie, the device cookie and the
/// demo's chosen device, and no others. See [`decision_cookies`].
pub struct DecisionCookies<'a> {
    names: [&'a str; 3],
    values: [Option<Cow<'a, str>>; 3],
}

impl CookieSource for DecisionCookies<'_> {
    fn cookie(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values[i].as_deref()
    }
}

/// Reads the cookies the access decision reads (see [`DecisionCookies`]). Each is parsed
/// as `CookieJar::from_headers` parses it (percent-decoded; of two with one name the later
/// wins); every other cookie (an app's own, often many) is skipped without being decoded
/// or copied, and an unencoded value is borrowed from the header, not copied.
pub fn decision_cookies<'a>(rt: &'a Runtime, headers: &'a HeaderMap) -> DecisionCookies<'a> {
    let names = [
        rt.session_cookie.as_str(),
        rt.config.devices.cookie.name.as_str(),
        crate::demo::DEVICE_COOKIE,
    ];
    let mut values: [Option<Cow<'a, str>>; 3] = Default::default();
    let slot = |name: &str| names.iter().position(|n| *n == name);
    for v in headers.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for piece in s.split(';') {
            // Nothing to decode: the name and value are the trimmed text either side of
            // the first `=`, as the parser takes them, without running the whole parser.
            if !piece.contains('%') {
                let Some((name, value)) = piece.split_once('=') else {
                    continue;
                };
                let name = name.trim();
                if let Some(i) = slot(name).filter(|_| !name.is_empty()) {
                    values[i] = Some(Cow::Borrowed(value.trim()));
                }
                continue;
            }
            let name = cookie_name(piece);
            // A percent-encoded name may decode to a wanted one: parse it to see.
            if slot(name).is_none() && !name.contains('%') {
                continue;
            }
            if let Ok(c) = Cookie::parse_encoded(piece) {
                if let Some(i) = slot(c.name()) {
                    values[i] = Some(Cow::Owned(c.value().to_string()));
                }
            }
        }
    }
    DecisionCookies { names, values }
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

/// A step-up requirement as carried in a signed token.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequirementToken {
    /// Minimum AAL.
    #[serde(default)]
    pub min_aal: Option<u8>,
    /// Acceptable factors.
    #[serde(default)]
    pub factors: Vec<String>,
    /// Phishing-resistant only.
    #[serde(default)]
    pub phishing_resistant: bool,
    /// Hardware-bound only.
    #[serde(default)]
    pub hardware_bound: bool,
    /// `max_age` in seconds.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// `every_time`.
    #[serde(default)]
    pub every_time: bool,
}

impl From<&StepUpRequirement> for RequirementToken {
    fn from(r: &StepUpRequirement) -> Self {
        RequirementToken {
            min_aal: r.min_aal,
            factors: r.factors.clone(),
            phishing_resistant: r.phishing_resistant,
            hardware_bound: r.hardware_bound,
            max_age_secs: match r.max_age {
                Some(MaxAge::Within(d)) => Some(d.as_secs()),
                _ => None,
            },
            every_time: r.max_age == Some(MaxAge::EveryTime),
        }
    }
}

impl RequirementToken {
    /// For the assurance module.
    pub fn to_authn(&self) -> AuthRequirement {
        AuthRequirement {
            min_aal: self.min_aal,
            factors: self.factors.clone(),
            phishing_resistant: self.phishing_resistant,
            hardware_bound: self.hardware_bound,
            max_age: if self.every_time {
                Some(AuthMaxAge::EveryTime)
            } else {
                self.max_age_secs
                    .map(|s| AuthMaxAge::Within(HumanDuration::from_secs(s)))
            },
        }
    }

    /// The requirement in plain words ("a passkey or security key, within the last 5 minutes").
    pub fn describe(&self) -> String {
        let mut what = if self.hardware_bound {
            "your security key".to_string()
        } else if self.phishing_resistant {
            "a passkey or security key".to_string()
        } else if self.factors.len() == 1 {
            factor_title(&self.factors[0]).to_lowercase()
        } else {
            match self.min_aal {
                Some(3) => "your strongest factors (AAL3)".to_string(),
                Some(2) => "a second factor".to_string(),
                _ => "your password".to_string(),
            }
        };
        if self.every_time {
            what.push_str(", every time");
        } else if let Some(s) = self.max_age_secs {
            what.push_str(&format!(", within the last {}", human(s)));
        }
        what
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 && s >= 86_400 => plural(s / 86_400, "day"),
        s if s % 3_600 == 0 && s >= 3_600 => plural(s / 3_600, "hour"),
        s if s % 60 == 0 && s >= 60 => plural(s / 60, "minute"),
        s => plural(s, "second"),
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("{n} {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// A factor kind's name for people.
pub fn factor_title(kind: &str) -> &'static str {
    match kind {
        "password" => "Password",
        "security_questions" => "Security questions",
        "totp" => "Authenticator app",
        "email_otp" => "E-mail code",
        "sms_otp" => "Text-message code",
        "recovery_codes" => "Recovery code",
        "webauthn" => "Passkey or security key",
        _ => "Factor",
    }
}

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
    pub req: RequirementToken,
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

/// The absolute URL of the current request as the browser sees it.
pub fn request_url(headers: &HeaderMap, uri: &axum::http::Uri, secure: bool) -> String {
    let host = match request_host(headers, uri) {
        "" => "localhost",
        h => h,
    };
    let scheme = if secure { "https" } else { "http" };
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{pq}")
}

/// The host a request asked for (with its port, if any; `""` when it names none): HTTP/1.1
/// names it in `Host`, HTTP/2 in the request's authority.
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a axum::http::Uri) -> &'a str {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// Checks that a request names one host: at most one `Host` header, and, when the target
/// carries an authority too (HTTP/1.1 absolute form, HTTP/2 `:authority`), the same one
/// (RFC 9112 §3.2, RFC 9113 §8.3.1). A request decided for one host must not reach an
/// upstream that may read another.
pub fn one_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host header");
    }
    if let (Some(h), Some(a)) = (first, uri.authority()) {
        if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) {
            return Err("the request target names another host than its Host header");
        }
    }
    Ok(())
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

    #[test]
    fn the_decision_reads_its_cookies_as_the_full_jar_would_and_no_others() {
        let cfg = stepgate_config::load_str("t.yaml", "apps: []\n", None).unwrap();
        let rt = Runtime::new(cfg);
        let session = session_cookie_name(&rt.config.sessions);
        let device = rt.config.devices.cookie.name.clone();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "_ga=GA1.2.3; {session}=first; theme=dark; {device}=d%41v"
            ))
            .unwrap(),
        );
        // A second Cookie header (HTTP/2 sends one per cookie): the later one wins, and an
        // encoded name counts under its decoded name, as in the full jar.
        let encoded = session.replace('_', "%5F");
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{encoded}=second; {}=kiosk", demo::DEVICE_COOKIE))
                .unwrap(),
        );
        // The decision's jar holds what the full jar holds for each cookie it reads.
        let read_as_the_full_jar = |h: &HeaderMap| {
            let full = CookieJar::from_headers(h);
            let jar = decision_cookies(&rt, h);
            for name in [session.as_str(), device.as_str(), demo::DEVICE_COOKIE] {
                assert_eq!(
                    jar.cookie(name),
                    full.get(name).map(|c| c.value()),
                    "{name} in {h:?}"
                );
            }
            // Only the three are read.
            for name in ["_ga", "theme", ""] {
                assert_eq!(jar.cookie(name), None, "{name}");
            }
            (
                jar.cookie(&session).map(str::to_string),
                jar.cookie(&device).map(str::to_string),
            )
        };
        let (s, d) = read_as_the_full_jar(&h);
        assert_eq!(s.as_deref(), Some("second"));
        assert_eq!(d.as_deref(), Some("dAv"));

        // Odd but plain (unencoded) pieces read as the parser reads them: spaces trimmed,
        // quotes and `=` in the value kept, a piece without `=` or without a name skipped.
        for line in [
            format!(" {session} = \"a=b\" ;{device}; ={device}"),
            format!("{session}=;{device}=x=y;{}", demo::DEVICE_COOKIE),
            format!("{session}\t=\tv\t; {device}=one; {device}=two"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(&line).unwrap());
            let _ = read_as_the_full_jar(&h);
        }
    }

    #[test]
    fn request_url_takes_the_host_from_host_or_from_an_http2_authority() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.test:8080"));
        let origin_form: axum::http::Uri = "/a?b=1".parse().unwrap();
        assert_eq!(
            request_url(&h, &origin_form, false),
            "http://app.test:8080/a?b=1"
        );
        // HTTP/2: no Host header, the authority is in the URI.
        let absolute: axum::http::Uri = "https://app.test:8443/a?b=1".parse().unwrap();
        assert_eq!(
            request_url(&HeaderMap::new(), &absolute, true),
            "https://app.test:8443/a?b=1"
        );
    }
}
