//! What the client asked for — method, host, target — read once at each entry point, with
//! one parser ([`stepgate_request`]) and the app's rules.
//!
//! The reverse proxy reads the request itself; the forward-auth endpoints read what the
//! front proxy reports in its headers (`X-Forwarded-*` for Traefik and Caddy,
//! `X-Original-URL` for nginx, the path after the prefix for Envoy). Each ends in the same
//! [`Original`], or in an [`Unreadable`] that the entry point refuses: 400 from the proxy,
//! 403 from forward-auth, never a guess or a default.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use stepgate_request::{read_method, read_target, MethodRefusal, TargetRefusal};

use crate::app::state::Runtime;

/// The request as the client made it, in the form it is decided on and forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Original {
    /// The method.
    pub method: Method,
    /// `host[:port]` as the client named it.
    pub host: String,
    /// The path in normal form and the query as sent (origin form): what routes are
    /// matched on and what the proxy forwards.
    pub target: Uri,
    /// `http` or `https`, as the client spoke to the front proxy (or to stepgate).
    pub scheme: &'static str,
    /// The app the host names (its index, [`Runtime::app_index`]): looked up once, for the
    /// target's rules and then by the entry point.
    pub app: Option<usize>,
}

impl Original {
    /// `scheme://host` + [`Original::target`]: where to send the client back after signing
    /// in or stepping up (built only when a refusal needs it).
    pub fn url(&self) -> String {
        let pq = self.target.path_and_query().map_or("/", |p| p.as_str());
        [self.scheme, "://", &self.host, pq].concat()
    }
}

/// Why the original request could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// A header the entry point needs is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A header is sent more than once, or is not printable ASCII.
    #[error("{0} is sent more than once or is not readable text")]
    Garbled(&'static str),
    /// The scheme is not `http` or `https`.
    #[error("the scheme is not http or https")]
    Scheme,
    /// The host is empty, names more than one host, or carries userinfo or a path.
    #[error("the host is not one host name (optionally with a port)")]
    Host,
    /// The request names two different hosts (two `Host` headers, or a `Host` and an
    /// absolute target that disagree).
    #[error("{0}")]
    TwoHosts(&'static str),
    /// The method.
    #[error("{0}")]
    Method(#[from] MethodRefusal),
    /// The target.
    #[error("{0}")]
    Target(#[from] TargetRefusal),
}

impl Unreadable {
    /// Whether the method is one stepgate does not proxy (the reverse proxy answers 405).
    pub fn unsupported_method(&self) -> bool {
        matches!(self, Unreadable::Method(MethodRefusal::Unsupported(_)))
    }
}

/// The forwarded-request headers the entry points read, parsed once: a name given as
/// `&str` would be parsed and hashed again on every request. `static`s, so that an error
/// can name the header for as long as it lives.
mod names {
    use axum::http::HeaderName;

    pub static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
    pub static X_FORWARDED_HOST: HeaderName = crate::gateway::headers::names::X_FORWARDED_HOST;
    pub static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
    pub static X_FORWARDED_PROTO: HeaderName = crate::gateway::headers::names::X_FORWARDED_PROTO;
    pub static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
    pub static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
    pub static HOST: HeaderName = axum::http::header::HOST;
}

/// A header the front proxy must send at most once, as a request has it.
#[derive(Clone, Copy)]
enum Once<'a> {
    Absent,
    One(&'a HeaderValue),
    Repeated,
}

impl<'a> Once<'a> {
    /// The value (`None` when absent); a repeated header is garbled.
    fn value(self, name: &'static HeaderName) -> Result<Option<&'a HeaderValue>, Unreadable> {
        match self {
            Once::Absent => Ok(None),
            Once::One(v) => Ok(Some(v)),
            Once::Repeated => Err(Unreadable::Garbled(name.as_str())),
        }
    }
}

/// The headers `names` as `headers` has them, found in one pass over the request's
/// headers: a lookup of each would hash each name (four on every forward-auth request),
/// while a front proxy's check request carries a few headers more than those.
fn find_once<'a, const N: usize>(
    headers: &'a HeaderMap,
    names: [&'static HeaderName; N],
) -> [Once<'a>; N] {
    let mut found = [Once::Absent; N];
    for (name, value) in headers {
        if let Some(i) = names.iter().position(|n| *n == name) {
            found[i] = match found[i] {
                Once::Absent => Once::One(value),
                _ => Once::Repeated,
            };
        }
    }
    found
}

/// A header sent once (`found`) as text, required.
fn required<'a>(found: Once<'a>, name: &'static HeaderName) -> Result<&'a str, Unreadable> {
    let v = found
        .value(name)?
        .ok_or(Unreadable::Missing(name.as_str()))?;
    let name = name.as_str();
    let s = v.to_str().map_err(|_| Unreadable::Garbled(name))?.trim();
    if s.is_empty() {
        return Err(Unreadable::Missing(name));
    }
    Ok(s)
}

/// A header value that carries a target: its bytes must be printable ASCII, or the target
/// is refused for the first byte that is not (a front proxy passes raw UTF-8 on as is).
fn target_text<'a>(found: Once<'a>, name: &'static HeaderName) -> Result<&'a str, Unreadable> {
    let v = found
        .value(name)?
        .ok_or(Unreadable::Missing(name.as_str()))?;
    let name = name.as_str();
    if let Some(&b) = v.as_bytes().iter().find(|b| !(0x21..=0x7E).contains(*b)) {
        return Err(TargetRefusal::RawByte(b).into());
    }
    v.to_str().map_err(|_| Unreadable::Garbled(name))
}

/// `http` or `https`, in any case.
fn scheme(s: &str) -> Result<&'static str, Unreadable> {
    if s.eq_ignore_ascii_case("https") {
        Ok("https")
    } else if s.eq_ignore_ascii_case("http") {
        Ok("http")
    } else {
        Err(Unreadable::Scheme)
    }
}

/// The scheme a front proxy reports in `X-Forwarded-Proto` (once); the portal's when it
/// reports none, as it changes nothing but the return URL.
fn forwarded_proto(rt: &Runtime, found: Once<'_>) -> Result<&'static str, Unreadable> {
    match found.value(&names::X_FORWARDED_PROTO)? {
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| Unreadable::Garbled("x-forwarded-proto"))?;
            scheme(v.trim())
        }
        None => Ok(rt.default_scheme()),
    }
}

/// One authority: a host name or IP literal with an optional port, nothing else.
fn checked_host(host: &str) -> Result<&str, Unreadable> {
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if !ok {
        return Err(Unreadable::Host);
    }
    Ok(host)
}

/// Reads a request (method, scheme, host and `/path?query` as sent) under the rules of the
/// app `host` names. `as_sent` is the target already parsed, when there is one (the
/// proxied request's): kept, not copied, when the target is in normal form already.
fn read(
    rt: &Runtime,
    method: Method,
    scheme: &'static str,
    host: &str,
    raw_target: &str,
    as_sent: Option<&axum::http::uri::PathAndQuery>,
) -> Result<Original, Unreadable> {
    let host = checked_host(host)?;
    let app = rt.app_index(host);
    let target = read_target(raw_target, rt.target_rules_of(app))?;
    let target: Uri = match as_sent {
        Some(pq) if target.unchanged() => Uri::from(pq.clone()),
        _ if target.unchanged() => raw_target
            .parse()
            .map_err(|_| TargetRefusal::NotOriginForm)?,
        _ => target
            .to_origin_form()
            .parse()
            .map_err(|_| TargetRefusal::NotOriginForm)?,
    };
    Ok(Original {
        method,
        host: host.to_string(),
        target,
        scheme,
        app,
    })
}

/// The reverse proxy: the request itself. One host only: at most one `Host` header and,
/// when the target is absolute (HTTP/2, or HTTP/1.1's absolute form), the same authority.
pub fn proxied(
    rt: &Runtime,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    over_tls: bool,
) -> Result<Original, Unreadable> {
    // The method first: `CONNECT host:443` has no path to read.
    stepgate_request::target::check_method(method)?;
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Unreadable::TwoHosts(
            "the request has more than one Host header",
        ));
    }
    let host = match (host_header, uri.authority()) {
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            return Err(Unreadable::TwoHosts(
                "the request target names another host than its Host header",
            ))
        }
        (Some(h), _) => h.to_str().map_err(|_| Unreadable::Host)?,
        (None, Some(a)) => a.as_str(),
        (None, None) => return Err(Unreadable::Missing("Host")),
    };
    let pq = uri.path_and_query();
    let raw = pq.map_or("", |p| p.as_str());
    let scheme = if over_tls {
        "https"
    } else {
        rt.default_scheme()
    };
    read(rt, method.clone(), scheme, host, raw, pq)
}

/// Traefik `ForwardAuth` and Caddy `forward_auth`: `X-Forwarded-Method`, `-Proto`, `-Host`
/// and `-Uri`, each exactly once. Only the scheme has a default (the portal's), as it
/// changes nothing but the return URL.
pub fn forward_headers(rt: &Runtime, headers: &HeaderMap) -> Result<Original, Unreadable> {
    use names::{X_FORWARDED_HOST, X_FORWARDED_METHOD, X_FORWARDED_PROTO, X_FORWARDED_URI};
    let [method, host, proto, uri] = find_once(
        headers,
        [
            &X_FORWARDED_METHOD,
            &X_FORWARDED_HOST,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_URI,
        ],
    );
    let method = required(method, &X_FORWARDED_METHOD)?;
    let host = required(host, &X_FORWARDED_HOST)?;
    let proto = forwarded_proto(rt, proto)?;
    let target = target_text(uri, &X_FORWARDED_URI)?;
    let method = read_method(method.as_bytes())?;
    read(rt, method, proto, host, target, None)
}

/// nginx `auth_request`: `X-Original-URL` (`$scheme://$http_host$request_uri`) and
/// `X-Original-Method`, each exactly once. The URL is split by hand, not parsed: a URL
/// parser would resolve and re-encode the path before it could be checked.
pub fn nginx_headers(rt: &Runtime, headers: &HeaderMap) -> Result<Original, Unreadable> {
    let [method, url] = find_once(headers, [&names::X_ORIGINAL_METHOD, &names::X_ORIGINAL_URL]);
    let method = required(method, &names::X_ORIGINAL_METHOD)?;
    let url = target_text(url, &names::X_ORIGINAL_URL)?;
    let (proto, rest) = url.split_once("://").ok_or(Unreadable::Scheme)?;
    let proto = scheme(proto)?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, target) = rest.split_at(split);
    let method = read_method(method.as_bytes())?;
    read(rt, method, proto, host, target, None)
}

/// Envoy `ext_authz` (HTTP mode): the original method and `Host`, and the original path and
/// query after `prefix` in the check's own target.
pub fn envoy(
    rt: &Runtime,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    prefix: &str,
) -> Result<Original, Unreadable> {
    let pq = uri.path_and_query().map_or("", |p| p.as_str());
    let target = pq.strip_prefix(prefix).unwrap_or("");
    let [host, proto] = find_once(headers, [&names::HOST, &names::X_FORWARDED_PROTO]);
    let host = match host.value(&names::HOST)? {
        Some(h) => h.to_str().map_err(|_| Unreadable::Host)?,
        None => uri
            .authority()
            .map(|a| a.as_str())
            .ok_or(Unreadable::Missing("Host"))?,
    };
    let proto = forwarded_proto(rt, proto)?;
    stepgate_request::target::check_method(method)?;
    read(rt, method.clone(), proto, host, target, None)
}

#[cfg(test)]
mod tests;
