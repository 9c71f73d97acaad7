//! The headers of a proxied request: what a client may never send an app (identity,
//! assertion, rewrite, forwarding and hop-by-hop headers, under every spelling an upstream
//! reads as theirs), stepgate's own cookies kept apart from the app's, and what stepgate
//! asserts in their place (the identity headers, the forwarding headers).

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use stepgate_authn::Assurance;
use stepgate_request::cookies::{names_own, set_cookie_name, OwnInLine};
use stepgate_store::UserRecord;

/// The header names stepgate sets or strips on every request, parsed once at compile time
/// (a name given as `&str` is parsed and hashed again on each use).
pub mod names {
    use axum::http::HeaderName;

    /// `Remote-User`.
    pub const REMOTE_USER: HeaderName = HeaderName::from_static("remote-user");
    /// `Remote-Groups`.
    pub const REMOTE_GROUPS: HeaderName = HeaderName::from_static("remote-groups");
    /// `Remote-Email`.
    pub const REMOTE_EMAIL: HeaderName = HeaderName::from_static("remote-email");
    /// `Remote-Name`.
    pub const REMOTE_NAME: HeaderName = HeaderName::from_static("remote-name");
    /// `Remote-AAL`.
    pub const REMOTE_AAL: HeaderName = HeaderName::from_static("remote-aal");
    /// `Remote-AMR`.
    pub const REMOTE_AMR: HeaderName = HeaderName::from_static("remote-amr");
    /// `Remote-Auth-Time`.
    pub const REMOTE_AUTH_TIME: HeaderName = HeaderName::from_static("remote-auth-time");
    /// The signed identity assertion's default header.
    pub const X_STEPGATE_ASSERTION: HeaderName = HeaderName::from_static("x-stepgate-assertion");
    /// `X-Forwarded-For`.
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    /// `X-Forwarded-Host`.
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    /// `X-Forwarded-Proto`.
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    /// `X-Forwarded-Port`.
    pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    /// `X-Real-IP`.
    pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    /// `Forwarded` (RFC 7239).
    pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
}

/// Declares a set of header names once, as a `static` array (to go through, e.g. to answer
/// each one) and as a predicate on a lower-case name (to test each header a message has,
/// compiled into one `match`).
macro_rules! header_set {
    ($(#[$doc:meta])* $vis:vis static $list:ident, const $text:ident, fn $pred:ident = [$($name:literal),+ $(,)?];) => {
        $(#[$doc])*
        $vis static $list: [HeaderName; [$($name),+].len()] = [$(HeaderName::from_static($name)),+];

        /// The same names, as text (for tables built at compile time).
        const $text: &[&str] = &[$($name),+];

        #[doc = concat!(
            "Whether `name` (lower case, as [`HeaderName::as_str`] gives it) is one of [`",
            stringify!($list),
            "`]."
        )]
        fn $pred(name: &str) -> bool {
            matches!(name, $($name)|+)
        }
    };
}

header_set! {
    /// The identity headers stepgate asserts on an allowed request (forward-auth answers
    /// always carry all of them, empty when unknown).
    pub static REMOTE_HEADERS, const REMOTE_TEXT, fn is_remote = [
        "remote-user",
        "remote-groups",
        "remote-email",
        "remote-name",
        "remote-aal",
        "remote-amr",
        "remote-auth-time",
    ];
}

header_set! {
    /// Headers a client may never set towards an upstream besides [`REMOTE_HEADERS`]:
    /// identity is stepgate's to assert.
    pub static OTHER_IDENTITY_HEADERS, const OTHER_IDENTITY_TEXT, fn is_other_identity = [
        "x-stepgate-assertion",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
    ];
}

header_set! {
    /// Headers for one hop only (RFC 9110 §7.6.1), never passed on.
    pub static HOP_BY_HOP, const HOP_BY_HOP_TEXT, fn is_hop_by_hop = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    ];
}

header_set! {
    /// Headers with which some upstream frameworks let a request name another path or
    /// method than its own (Symfony, Laravel and IIS read `X-Original-URL`/`X-Rewrite-URL`;
    /// Express, ASP.NET and others honour method overrides). The request is decided on its
    /// own path and method, so the upstream must not be told another.
    pub static REWRITE_HEADERS, const REWRITE_TEXT, fn is_rewrite = [
        "x-original-url",
        "x-rewrite-url",
        "x-original-method",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ];
}

header_set! {
    /// Headers about the client that only stepgate may set towards an upstream.
    pub static FORWARDING_HEADERS, const FORWARDING_TEXT, fn is_forwarding = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-real-ip",
    ];
}

/// By a (folded) name's first byte, the lengths ([`length_bit`]) of the names in the sets
/// above that start with it: most headers a request carries (`host`, `accept`, `cookie`,
/// `user-agent`, ...) are told apart by these two alone, before the sets are compared
/// name by name or the name is folded.
static MAY_BE_LISTED: [u32; 256] = {
    let mut t = [0u32; 256];
    let sets = [
        REMOTE_TEXT,
        OTHER_IDENTITY_TEXT,
        HOP_BY_HOP_TEXT,
        REWRITE_TEXT,
        FORWARDING_TEXT,
    ];
    let mut i = 0;
    while i < sets.len() {
        let mut j = 0;
        while j < sets[i].len() {
            let name = sets[i][j].as_bytes();
            t[name[0] as usize] |= length_bit(name.len());
            j += 1;
        }
        i += 1;
    }
    t
};

/// A name's length as one bit (names of 31 bytes or more share the last).
const fn length_bit(len: usize) -> u32 {
    1 << if len < 31 { len } else { 31 }
}

/// Whether a header named `name`, folded, may be in one of the sets above (false: it is
/// in none of them).
fn may_be_listed(name: &str) -> bool {
    name.as_bytes().first().is_some_and(|b| {
        MAY_BE_LISTED[usize::from(stepgate_request::names::fold_byte(*b))] & length_bit(name.len())
            != 0
    })
}

/// Whether `name` (folded) is an identity, rewrite or forwarding header.
fn is_listed(name: &str) -> bool {
    is_identity(name) || is_rewrite(name) || is_forwarding(name)
}

/// Whether `name` folds to one of `configured` (folded names).
fn is_configured(name: &str, configured: &[String]) -> bool {
    configured
        .iter()
        .any(|c| stepgate_request::names::folds_to(name, c))
}

/// Whether `name` is an identity header: one of [`REMOTE_HEADERS`] or
/// [`OTHER_IDENTITY_HEADERS`].
fn is_identity(name: &str) -> bool {
    is_remote(name) || is_other_identity(name)
}

/// Whether `name` (lower case, as [`HeaderName::as_str`] gives it), read as an upstream may
/// read it, is a header only stepgate may send upstream: an identity, rewrite or forwarding
/// header, or one of `configured` (the assertion header and the forwarded client
/// certificate header, folded).
fn is_stepgates(name: &str, configured: &[String]) -> bool {
    (may_be_listed(name) && is_listed(&stepgate_request::names::fold(name)))
        || is_configured(name, configured)
}

/// The first header of a request to stepgate's forward-auth endpoints that names one of
/// stepgate's headers (`is_stepgates`) under another spelling (`Remote_User`): the front
/// proxy overwrites the real names, but may pass such a spelling on to an upstream that
/// reads it as the real one. No proxy stepgate trusts sends one.
pub fn respelled_header<'a>(h: &'a HeaderMap, configured: &[String]) -> Option<&'a HeaderName> {
    h.keys().find(|n| {
        stepgate_request::names::has_folded_separator(n.as_str())
            && is_stepgates(n.as_str(), configured)
    })
}

/// Removes every header whose name `drop` picks, and, when `connection_named`, every header
/// a `Connection` header names. It looks once at each header present: a request carries a
/// handful, while the lists to strip are long, and removing a name that is absent still
/// costs a hash and a probe (this runs on every proxied request and response).
fn remove_matching(h: &mut HeaderMap, connection_named: bool, drop: impl Fn(&str) -> bool) {
    let mut connection = false;
    let mut gone: Vec<HeaderName> = h
        .keys()
        .filter(|n| {
            connection |= *n == header::CONNECTION;
            drop(n.as_str())
        })
        .cloned()
        .collect();
    if connection_named && connection {
        gone.extend(
            h.get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|s| s.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    for n in gone {
        h.remove(n);
    }
}

/// Removes hop-by-hop headers (including those named in `Connection`).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    remove_matching(h, true, is_hop_by_hop);
}

/// Removes from a request going upstream, in one pass, what only stepgate may say about
/// the client — identity, assertion (`configured`: see `is_stepgates`), rewrite and
/// forwarding headers, under every spelling an upstream may read as theirs — and what is
/// for this hop alone.
pub fn strip_request(h: &mut HeaderMap, configured: &[String]) {
    remove_matching(h, true, |n| {
        // Folded only when its first byte and length say it may be listed.
        let listed = may_be_listed(n) && {
            let folded = stepgate_request::names::fold(n);
            is_hop_by_hop(&folded) || is_listed(&folded)
        };
        listed || is_configured(n, configured)
    });
}

/// Removes stepgate's own cookies (`own`: the [`stepgate_request::cookies::name_key`]s of the session, device and
/// portal cookies) under any spelling from the `Cookie` header(s) of a request going
/// upstream, so an app never holds a user's stepgate session id to replay against stepgate
/// or another app. Several `Cookie`
/// headers (HTTP/2 sends one per cookie) become one, as HTTP/1.1 upstreams expect
/// (RFC 9113 §8.2.3).
/// `known`: what the line holds, when the decision's cookie lookup already read it
/// ([`stepgate_request::cookies::lookup_many_sorting`]); it counts only for the very line it
/// was read from.
pub fn strip_own_cookies(h: &mut HeaderMap, own: &[String], known: Option<OwnInLine>) {
    let is_own = |piece: &str| names_own(set_cookie_name(piece), own);
    let mut values = h.get_all(header::COOKIE).iter();
    let Some(first) = values.next() else {
        return;
    };
    if values.next().is_none() {
        // One line, as HTTP/1.1 clients send: looked at once, and left as it is when it
        // holds none of stepgate's cookies, removed when it holds nothing else (a line
        // that is not visible ASCII is removed whole, as below).
        let sorted = known.and_then(|k| k.of(first));
        let (ours, theirs) = match (sorted, first.to_str()) {
            (Some(sorted), _) => sorted,
            (None, Err(_)) => {
                h.remove(header::COOKIE);
                return;
            }
            (None, Ok(line)) => {
                let (mut ours, mut theirs) = (false, false);
                for piece in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                    if is_own(piece) {
                        ours = true;
                    } else {
                        theirs = true;
                    }
                }
                (ours, theirs)
            }
        };
        if !ours {
            return;
        }
        if !theirs {
            h.remove(header::COOKIE);
            return;
        }
    }
    let mut joined = String::new();
    let kept = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty() && !is_own(p));
    for piece in kept {
        if !joined.is_empty() {
            joined.push_str("; ");
        }
        joined.push_str(piece);
    }
    h.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        if !joined.is_empty() {
            h.insert(header::COOKIE, v);
        }
    }
}

/// Removes `Set-Cookie` headers of an upstream's response that would set one of
/// stepgate's own cookies (`own`: their [`stepgate_request::cookies::name_key`]s) under any spelling (encoded,
/// case-folded, prefixed): an app may not plant or clear a user's stepgate session.
pub fn strip_own_set_cookies(h: &mut HeaderMap, own: &[String]) {
    let is_own = |v: &HeaderValue| {
        let s = String::from_utf8_lossy(v.as_bytes());
        names_own(set_cookie_name(&s), own)
    };
    if !h.get_all(header::SET_COOKIE).iter().any(is_own) {
        return;
    }
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !is_own(v))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// Sets the forwarding headers on a request [`strip_request`] has cleared of every one the
/// client sent: the client address (resolved through the trusted proxies; when it is
/// unknown, `Forwarded: for=unknown` and no `X-Forwarded-For` or `X-Real-IP`), the host
/// asked for and the scheme.
///
/// The values are built once per client, host and scheme and kept per thread: a keep-alive
/// connection sends request after request from the same client to the same host, and
/// reusing the values (shared bytes) costs a comparison instead of formatting and copying.
pub(crate) fn put_forwarding(
    h: &mut HeaderMap,
    client: Option<std::net::IpAddr>,
    host: &str,
    proto: &str,
) {
    let https = proto == "https";
    LAST_FORWARDING.with(|last| {
        let mut last = last.borrow_mut();
        let hit = last
            .as_ref()
            .is_some_and(|f| f.client == client && f.https == https && f.host == host);
        if !hit {
            let mut fresh = HeaderMap::new();
            build_forwarding(&mut fresh, client, host, proto);
            *last = Some(Forwarding {
                client,
                https,
                host: host.to_string(),
                values: fresh.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
            });
        }
        if let Some(f) = last.as_ref() {
            for (name, value) in &f.values {
                h.insert(name.clone(), value.clone());
            }
        }
    });
}

/// The forwarding headers last set on this thread, and what they were set for.
struct Forwarding {
    client: Option<std::net::IpAddr>,
    https: bool,
    host: String,
    values: Vec<(HeaderName, HeaderValue)>,
}

thread_local! {
    static LAST_FORWARDING: std::cell::RefCell<Option<Forwarding>> =
        const { std::cell::RefCell::new(None) };
}

/// [`put_forwarding`]'s values, built.
fn build_forwarding(h: &mut HeaderMap, client: Option<std::net::IpAddr>, host: &str, proto: &str) {
    // Values are built as owned strings and handed over without another copy.
    let value = |s: String| HeaderValue::try_from(s).ok();
    let mut ip = String::with_capacity(15);
    if let Some(client) = client {
        push_ip(&mut ip, client);
    }
    // RFC 7239: IPv6 addresses are bracketed and quoted; a host with odd bytes is quoted.
    // Built by appending: this runs on every proxied request.
    let mut forwarded = String::with_capacity(32 + ip.len() + host.len());
    forwarded.push_str("for=");
    match client {
        Some(c) if c.is_ipv6() => {
            forwarded.push_str("\"[");
            forwarded.push_str(&ip);
            forwarded.push_str("]\"");
        }
        Some(_) => forwarded.push_str(&ip),
        None => forwarded.push_str("unknown"),
    }
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if host_ok && !host.is_empty() {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    if client.is_some() {
        if let Some(v) = value(ip) {
            h.insert(names::X_FORWARDED_FOR, v.clone());
            h.insert(names::X_REAL_IP, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        h.insert(names::X_FORWARDED_HOST, v);
    }
    h.insert(
        names::X_FORWARDED_PROTO,
        if proto == "https" {
            HeaderValue::from_static("https")
        } else {
            HeaderValue::from_static("http")
        },
    );
    if let Some(v) = value(forwarded) {
        h.insert(names::FORWARDED, v);
    }
}

/// Appends `ip` as `Display` writes it. IPv4 addresses, nearly every client, are written
/// digit by digit: `core::fmt` cost a few percent of a proxied request.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The identity headers an allowed request carries to its upstream.
///
/// Each value must reach the upstream as it is meant. HTTP drops whitespace around a field
/// value, so a username ` admin` would arrive as `admin`: such a value is left out, as is
/// one that is not a valid field value. Groups and methods are one comma-separated header,
/// so a group named `eng,admins` would arrive as two, one of them `admins`: such an item is
/// left out of the list. (The signed assertion carries them as JSON, unchanged.)
pub fn identity_headers(
    user: &UserRecord,
    assurance: &Assurance,
) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(7);
    // Each value is copied once, straight into its header value.
    let mut single = |name, v: &str| {
        if !padded(v) {
            if let Ok(v) = HeaderValue::from_str(v) {
                out.push((name, v));
            }
        }
    };
    single(names::REMOTE_USER, &user.username);
    if let Some(e) = &user.email {
        single(names::REMOTE_EMAIL, e);
    }
    if let Some(n) = &user.name {
        single(names::REMOTE_NAME, n);
    }
    let mut list = |name, items: &[String]| {
        // The list is built owned and handed over without another copy.
        if let Ok(v) = HeaderValue::try_from(header_list(items)) {
            out.push((name, v));
        }
    };
    list(names::REMOTE_GROUPS, &user.groups);
    list(names::REMOTE_AMR, &assurance.amr);
    out.push((
        names::REMOTE_AAL,
        HeaderValue::from(u16::from(assurance.aal)),
    ));
    if let Some(t) = assurance.auth_time {
        out.push((names::REMOTE_AUTH_TIME, HeaderValue::from(t.timestamp())));
    }
    out
}

/// Whether `v` starts or ends with whitespace, which HTTP drops from a field value.
fn padded(v: &str) -> bool {
    v.trim_matches([' ', '\t']) != v
}

/// A comma-separated header value of `items`, leaving out any item the upstream would not
/// read back as itself (empty, with a comma, or with whitespace around it).
pub fn header_list(items: &[String]) -> String {
    let mut out = String::new();
    for i in items {
        if i.is_empty() || i.contains(',') || padded(i) {
            tracing::debug!(item = %i, "left out of a list header: it would not read back as itself");
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(i);
    }
    out
}

/// Identity headers whose values come from the token rather than the stand-in session
/// (an empty value removes the header).
pub fn identity_header_overrides(
    id: &crate::access::bearer::BearerIdentity,
) -> Vec<(axum::http::HeaderName, String)> {
    vec![
        (names::REMOTE_AAL, id.aal.to_string()),
        (names::REMOTE_AMR, header_list(&id.amr)),
        (
            names::REMOTE_AUTH_TIME,
            id.auth_time
                .map(|t| t.timestamp().to_string())
                .unwrap_or_default(),
        ),
    ]
}

#[cfg(test)]
mod tests;
