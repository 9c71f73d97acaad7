//! The reverse proxy to upstream apps: streaming bodies both ways over a pooled client.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use stepgate_request::cookies::{has_key, set_cookie_name};
/// Keep-alive connections to upstreams, one set per thread: a request and the upstream
/// connection it uses are driven by the same thread (with `server.workers`, each serving
/// thread has its own event loop), so a proxied request costs no cross-thread wake-ups.
///
/// Each connection is an HTTP/1.1 `SendRequest` with its connection task; a connection is
/// free when hyper says it is ready for the next request (the previous response, body
/// included, is finished), so no task is spawned per request to hand it back. A request
/// the pool could not even write (the upstream had closed the idle connection) is retried
/// once on a new connection; one that was written is never resent.
#[derive(Clone, Default)]
pub struct UpstreamClient {
    _private: (),
}

/// Connections kept per upstream (`host:port`) and thread; more are opened under load and
/// closed when their request is done.
const MAX_KEPT_PER_UPSTREAM: usize = 64;
/// A connection unused this long is closed (the upstream may have forgotten it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long opening a connection to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = hyper::client::conn::http1::SendRequest<Body>;

struct Kept {
    sender: Sender,
    last_used: std::time::Instant,
}

/// One thread's kept connections, by upstream `host:port` (from the configuration).
#[derive(Default)]
struct Pool {
    kept: std::collections::HashMap<String, Vec<Kept>, foldhash::fast::RandomState>,
    /// When every list was last swept of closed and long-idle connections.
    swept: Option<std::time::Instant>,
}

/// How often every kept connection is checked (a request looks only at those it passes).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool::default());
}

/// Whether a kept connection is of no more use: closed, or free but unused too long.
fn spent(k: &Kept, now: std::time::Instant) -> bool {
    k.sender.is_closed() || (k.sender.is_ready() && now.duration_since(k.last_used) >= IDLE_TIMEOUT)
}

/// Why an upstream request failed (logged; never shown to the client).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be opened.
    #[error("connecting to {upstream}: {error}")]
    Connect {
        /// `host:port`.
        upstream: String,
        /// What the socket said.
        error: std::io::Error,
    },
    /// The upstream did not accept the connection in time.
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(String),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// What sending on an upstream connection comes to.
type Sent =
    Result<Response<hyper::body::Incoming>, hyper::client::conn::TrySendError<Request<Body>>>;

/// Sends the request in `req` on a free kept connection to `key`, if there is one (dropping
/// closed and long-idle ones on the way); leaves it in `req` otherwise.
fn send_on_kept(
    key: &str,
    req: &mut Option<Request<Body>>,
) -> Option<impl std::future::Future<Output = Sent>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let now = std::time::Instant::now();
        if p.swept.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY) {
            p.swept = Some(now);
            for list in p.kept.values_mut() {
                list.retain(|k| !spent(k, now));
            }
        }
        let list = p.kept.get_mut(key)?;
        // The most recently used free connection (its socket is the likeliest to be warm),
        // dropping spent ones met on the way; busy ones are passed over.
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            if spent(&list[i], now) {
                // What moves into `i` comes from the end, already looked at.
                list.swap_remove(i);
                continue;
            }
            let k = &mut list[i];
            if k.sender.is_ready() {
                k.last_used = now;
                return Some(k.sender.try_send_request(req.take()?));
            }
        }
        None
    })
}

fn keep(key: &str, sender: Sender) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.kept.entry(key.to_string()).or_default();
        if list.len() < MAX_KEPT_PER_UPSTREAM {
            list.push(Kept {
                sender,
                last_used: std::time::Instant::now(),
            });
        }
    });
}

async fn connect(key: &str) -> Result<Sender, UpstreamError> {
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(key)).await {
            Ok(Ok(s)) => s,
            Ok(Err(error)) => {
                return Err(UpstreamError::Connect {
                    upstream: key.to_string(),
                    error,
                })
            }
            Err(_) => return Err(UpstreamError::ConnectTimeout(key.to_string())),
        };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await?;
    let upstream = key.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%upstream, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl UpstreamClient {
    /// The pools (created on first use in each thread).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `req` to the upstream at `address` (`host:port`) and returns its response,
    /// streaming. The request's URI is already in origin form (`/path?query`, see
    /// [`upstream_path`]) and it carries the `Host` the upstream is to see.
    pub async fn send(
        &self,
        address: &str,
        req: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut slot = Some(req);
        if let Some(sent) = send_on_kept(address, &mut slot) {
            match sent.await {
                Ok(resp) => return Ok(resp.map(Body::new)),
                Err(mut e) => match e.take_message() {
                    // Never written: the kept connection was gone; try a new one.
                    Some(req) => slot = Some(req),
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let Some(req) = slot else {
            unreachable!("the request is in the slot unless it was sent")
        };
        let mut sender = connect(address).await?;
        let fut = sender.try_send_request(req);
        keep(address, sender);
        match fut.await {
            Ok(resp) => Ok(resp.map(Body::new)),
            Err(e) => Err(e.into_error().into()),
        }
    }
}

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
    ($(#[$doc:meta])* $vis:vis static $list:ident, fn $pred:ident = [$($name:literal),+ $(,)?];) => {
        $(#[$doc])*
        $vis static $list: [HeaderName; [$($name),+].len()] = [$(HeaderName::from_static($name)),+];

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
    pub static REMOTE_HEADERS, fn is_remote = [
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
    pub static OTHER_IDENTITY_HEADERS, fn is_other_identity = [
        "x-stepgate-assertion",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
    ];
}

header_set! {
    /// Headers for one hop only (RFC 9110 §7.6.1), never passed on.
    pub static HOP_BY_HOP, fn is_hop_by_hop = [
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
    pub static REWRITE_HEADERS, fn is_rewrite = [
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
    pub static FORWARDING_HEADERS, fn is_forwarding = [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-real-ip",
    ];
}

/// Whether `name` is an identity header: one of [`REMOTE_HEADERS`] or
/// [`OTHER_IDENTITY_HEADERS`].
fn is_identity(name: &str) -> bool {
    is_remote(name) || is_other_identity(name)
}

/// Whether `name` (lower case, as [`HeaderName::as_str`] gives it), read as an upstream may
/// read it, is a header only stepgate may send upstream: an identity, rewrite or forwarding
/// header, or one of `configured` (the assertion header and the forwarded client
/// certificate header, lower case).
fn is_stepgates(name: &str, configured: &[String]) -> bool {
    let n = stepgate_request::names::fold(name);
    is_identity(&n) || is_rewrite(&n) || is_forwarding(&n) || configured.iter().any(|c| *c == *n)
}

/// The first header of a request to stepgate's forward-auth endpoints that names one of
/// stepgate's headers ([`is_stepgates`]) under another spelling (`Remote_User`): the front
/// proxy overwrites the real names, but may pass such a spelling on to an upstream that
/// reads it as the real one. No proxy stepgate trusts sends one.
pub fn respelled_header<'a>(h: &'a HeaderMap, configured: &[String]) -> Option<&'a HeaderName> {
    h.keys()
        .find(|n| n.as_str().contains(['_', '.']) && is_stepgates(n.as_str(), configured))
}

/// Removes every header whose name `drop` picks, and, when `connection_named`, every header
/// a `Connection` header names. It looks once at each header present: a request carries a
/// handful, while the lists to strip are long, and removing a name that is absent still
/// costs a hash and a probe (this runs on every proxied request and response).
fn remove_matching(h: &mut HeaderMap, connection_named: bool, drop: impl Fn(&str) -> bool) {
    let mut gone: Vec<HeaderName> = h.keys().filter(|n| drop(n.as_str())).cloned().collect();
    if connection_named && h.contains_key(header::CONNECTION) {
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
/// the client — identity, assertion (`configured`: see [`is_stepgates`]), rewrite and
/// forwarding headers, under every spelling an upstream may read as theirs — and what is
/// for this hop alone.
pub fn strip_request(h: &mut HeaderMap, configured: &[String]) {
    remove_matching(h, true, |n| {
        is_hop_by_hop(&stepgate_request::names::fold(n)) || is_stepgates(n, configured)
    });
}

/// Removes stepgate's own cookies (`own`: the [`stepgate_request::cookies::name_key`]s of the session, device and
/// portal cookies) under any spelling from the `Cookie` header(s) of a request going
/// upstream, so an app never holds a user's stepgate session id to replay against stepgate
/// or another app. Several `Cookie`
/// headers (HTTP/2 sends one per cookie) become one, as HTTP/1.1 upstreams expect
/// (RFC 9113 §8.2.3).
pub fn strip_own_cookies(h: &mut HeaderMap, own: &[String]) {
    let mut values = h.get_all(header::COOKIE).iter();
    let (Some(first), more) = (values.next(), values.next().is_some()) else {
        return;
    };
    let is_own = |piece: &str| {
        let name = set_cookie_name(piece);
        own.iter().any(|o| has_key(name, o))
    };
    if !more && !first.to_str().map_or(true, |s| s.split(';').any(is_own)) {
        return;
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
        let name = set_cookie_name(&s);
        own.iter().any(|o| has_key(name, o))
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

/// The origin-form URI (`/path?query`) a request is sent upstream with: its own path and
/// query after the upstream URL's path `prefix` (`""` or `/base`, no trailing slash).
pub fn upstream_path(prefix: &str, uri: &Uri) -> Option<Uri> {
    let pq = uri.path_and_query();
    let text = pq.map_or("/", |pq| pq.as_str());
    // `*` (OPTIONS for the whole server) has no path to put under the prefix: refused.
    if !text.starts_with('/') {
        return None;
    }
    match pq {
        // No copy: the path and query are shared with the request's.
        Some(pq) if prefix.is_empty() => Some(Uri::from(pq.clone())),
        _ => format!("{prefix}{text}").parse().ok(),
    }
}

/// Whether a message asks to switch to WebSocket: a `Connection` header with the `upgrade`
/// token and one `Upgrade` header that is exactly `websocket` (any case). Any other upgrade
/// (`h2c` above all, which would hand the connection to the upstream past every later
/// decision) is not one stepgate passes on: its headers are stripped and the request goes
/// on as plain HTTP.
pub fn websocket_upgrade(h: &HeaderMap) -> bool {
    let wants = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let mut upgrades = h.get_all(header::UPGRADE).iter();
    match (upgrades.next(), upgrades.next()) {
        (Some(v), None) => {
            wants
                && v.to_str()
                    .is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket"))
        }
        _ => false,
    }
}

/// Marks a message as switching to WebSocket (after the hop-by-hop headers were removed).
pub fn set_websocket_upgrade(h: &mut HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// What keeps an upgraded connection open: the session it was allowed under (checked every
/// `every`), or a bearer token (until it expires).
pub enum Watch {
    /// A stored session, by id.
    Session {
        /// The state (stores, caches, configuration).
        st: crate::state::Shared,
        /// The session id.
        id: String,
        /// How often to check.
        every: Duration,
    },
    /// A bearer token's expiry (`None`: a token without `exp`, kept as long as it lasts).
    Until(Option<chrono::DateTime<chrono::Utc>>),
}

impl Watch {
    /// Completes, saying why, when the connection may no longer stay open.
    async fn ended(self) -> &'static str {
        match self {
            Watch::Until(None) => std::future::pending().await,
            Watch::Until(Some(exp)) => {
                let left = (exp - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(left).await;
                "the bearer token expired"
            }
            Watch::Session { st, id, every } => loop {
                tokio::time::sleep(every).await;
                if let Some(why) = session_gone(&st, &id).await {
                    return why;
                }
            },
        }
    }
}

/// Why the session `id` no longer lets its user through, if it does not: signed out,
/// expired, idle, its user disabled, or the store not answering (fail closed).
async fn session_gone(st: &crate::state::Shared, id: &str) -> Option<&'static str> {
    let rt = st.runtime.load();
    let now = chrono::Utc::now();
    let s = match crate::session::check(
        st.stores.hot.as_ref(),
        &st.cache,
        id,
        &rt.config.sessions,
        &rt.config.assurance,
        now,
    )
    .await
    {
        Ok(Ok(s)) if !s.data.pending => s,
        Ok(_) => return Some("the session ended"),
        Err(_) => return Some("the session store did not answer"),
    };
    match st.cache.user(&s.data.user_id).await {
        Ok(Some(u)) if !u.disabled => None,
        Ok(_) => Some("the user is disabled or gone"),
        Err(_) => Some("the user store did not answer"),
    }
}

/// Joins the client's upgraded connection to the upstream's, copying both ways until
/// either side closes or `watch` says the grant has ended (then both are closed).
pub fn splice_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    app: String,
    watch: Watch,
) {
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%app, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                if let Err(e) = r {
                    tracing::debug!(%app, error = %e, "upgraded connection ended with an error");
                }
            }
            why = watch.ended() => {
                tracing::info!(%app, reason = why, "closing an upgraded connection");
            }
        }
    });
}

/// Sets the forwarding headers on a request [`strip_request`] has cleared of every one the
/// client sent: the client address (resolved through the trusted proxies; when it is
/// unknown, `Forwarded: for=unknown` and no `X-Forwarded-For` or `X-Real-IP`), the host
/// asked for and the scheme.
pub(crate) fn put_forwarding(
    h: &mut HeaderMap,
    client: Option<std::net::IpAddr>,
    host: &str,
    proto: &str,
) {
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

/// The upstream did not answer in time (HTML for browsers, JSON for APIs).
pub fn gateway_timeout(api: bool) -> Response<Body> {
    let mut r = bad_gateway(api);
    *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    if api {
        *r.body_mut() = Body::from(
            r#"{"error":"gateway_timeout","error_description":"the upstream application did not answer in time"}"#,
        );
    }
    r
}

/// A gateway error page (HTML for browsers, JSON for APIs) that says nothing of internals.
pub fn bad_gateway(api: bool) -> Response<Body> {
    let (ct, body) = if api {
        ("application/json", r#"{"error":"bad_gateway","error_description":"the upstream application is unavailable"}"#.to_string())
    } else {
        (
            "text/html; charset=utf-8",
            "<!doctype html><title>Unavailable</title><h1>The application is unavailable</h1><p>Please try again in a moment.</p>".to_string(),
        )
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    crate::security::portal_headers(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        let mut all = vec![
            "0.0.0.0",
            "255.255.255.255",
            "10.0.9.100",
            "1.20.199.7",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ]
        .into_iter()
        .map(|s| s.parse::<std::net::IpAddr>().unwrap())
        .collect::<Vec<_>>();
        for octet in 0..=255u8 {
            all.push(std::net::Ipv4Addr::new(octet, 255 - octet, octet / 7, 9).into());
        }
        for ip in all {
            let mut s = "x".to_string();
            push_ip(&mut s, ip);
            assert_eq!(s, format!("x{ip}"));
        }
    }

    #[test]
    fn a_request_going_upstream_keeps_only_what_the_client_may_say() {
        // Written out, not taken from the lists under test: each must go, under its own
        // name and under every spelling a CGI-style upstream reads as it.
        let stepgates = [
            "remote-user",
            "remote-groups",
            "remote-email",
            "remote-name",
            "remote-aal",
            "remote-amr",
            "remote-auth-time",
            "x-stepgate-assertion",
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-original-url",
            "x-rewrite-url",
            "x-original-method",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-real-ip",
            // Configured: the assertion header under another name, the client certificate.
            "x-app-identity",
            "x-client-cert",
        ];
        let hop_by_hop = [
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
        let configured = vec!["x-app-identity".to_string(), "x-client-cert".to_string()];
        let mut h = HeaderMap::new();
        for n in stepgates.iter().chain(&hop_by_hop) {
            for spelling in [n.to_string(), n.replace('-', "_"), n.replace('-', ".")] {
                let name = HeaderName::from_bytes(spelling.as_bytes()).unwrap();
                h.append(&name, HeaderValue::from_static("spoofed"));
                h.append(&name, HeaderValue::from_static("twice"));
            }
        }
        h.insert(
            header::CONNECTION,
            "close, X-Hop, Bad Name".parse().unwrap(),
        );
        h.insert("x-hop", "1".parse().unwrap());
        h.insert(header::ACCEPT, "text/html".parse().unwrap());
        h.insert("x-app-header", "kept".parse().unwrap());
        h.insert("x_app_header", "kept".parse().unwrap());
        h.insert("remote-user-agent", "kept".parse().unwrap());
        h.insert("remote_user_agent", "kept".parse().unwrap());
        strip_request(&mut h, &configured);
        let mut left: Vec<_> = h.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "accept",
                "remote-user-agent",
                "remote_user_agent",
                "x-app-header",
                "x_app_header"
            ],
            "only the app's own headers are left"
        );
        // Forward-auth refuses a request carrying such a spelling.
        let mut h = HeaderMap::new();
        h.insert("remote-user", "x".parse().unwrap());
        h.insert("x_app_header", "x".parse().unwrap());
        assert_eq!(respelled_header(&h, &configured), None);
        h.insert("x_stepgate_assertion", "x".parse().unwrap());
        assert_eq!(
            respelled_header(&h, &configured).map(|n| n.as_str()),
            Some("x_stepgate_assertion")
        );
        let mut h = HeaderMap::new();
        h.insert("x_client_cert", "x".parse().unwrap());
        assert!(respelled_header(&h, &configured).is_some());
        let mut h = HeaderMap::new();
        h.insert("remote.user", "x".parse().unwrap());
        assert!(respelled_header(&h, &configured).is_some());
    }

    #[test]
    fn forwarding_headers_say_what_stepgate_knows() {
        let mut h = HeaderMap::new();
        put_forwarding(
            &mut h,
            Some("2001:db8::1".parse().unwrap()),
            "app.example.com",
            "https",
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-real-ip"], "2001:db8::1");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";host=\"app.example.com\";proto=https"
        );
        let mut h = HeaderMap::new();
        put_forwarding(
            &mut h,
            Some("10.0.0.1".parse().unwrap()),
            "bad\u{7f}host",
            "http",
        );
        assert!(
            h.get("x-forwarded-host").is_none(),
            "a host that is no header value"
        );
        assert_eq!(h["forwarded"], "for=10.0.0.1;proto=http");
        // An unknown client is said to be unknown, never given an address.
        let mut h = HeaderMap::new();
        put_forwarding(&mut h, None, "app.example.com", "https");
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("x-real-ip").is_none());
        assert_eq!(
            h["forwarded"],
            "for=unknown;host=\"app.example.com\";proto=https"
        );
    }

    #[test]
    fn upstream_paths_keep_the_query_and_go_under_the_prefix() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        let p = |prefix: &str, uri: &str| upstream_path(prefix, &u(uri)).map(|u| u.to_string());
        assert_eq!(p("", "/a/b?c=1").as_deref(), Some("/a/b?c=1"));
        assert_eq!(p("/base", "/a?c=1").as_deref(), Some("/base/a?c=1"));
        assert_eq!(p("/base", "/").as_deref(), Some("/base/"));
        // HTTP/2 requests carry an absolute URI: only its path and query go upstream.
        assert_eq!(p("", "https://app.test:8443/a?b").as_deref(), Some("/a?b"));
        assert_eq!(p("", "*"), None);
    }

    #[test]
    fn own_cookies_are_taken_out_and_the_rest_joined() {
        let own = vec!["stepgate_session".to_string(), "stepgate_pre".to_string()];
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; stepgate_session=s".parse().unwrap());
        h.append(header::COOKIE, "stepgate_pre=p".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        strip_own_cookies(&mut h, &own);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2"]);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, " stepgate_session=s ".parse().unwrap());
        strip_own_cookies(&mut h, &own);
        assert!(h.get(header::COOKIE).is_none());
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1;b=2".parse().unwrap());
        strip_own_cookies(&mut h, &own);
        assert_eq!(
            h[header::COOKIE],
            "a=1;b=2",
            "untouched when there is nothing to take"
        );
    }

    #[test]
    fn only_a_websocket_upgrade_is_passed_on() {
        let h = |conn: &[&'static str], up: &[&'static str]| {
            let mut h = HeaderMap::new();
            for c in conn {
                h.append(header::CONNECTION, HeaderValue::from_static(c));
            }
            for u in up {
                h.append(header::UPGRADE, HeaderValue::from_static(u));
            }
            websocket_upgrade(&h)
        };
        assert!(h(&["keep-alive, Upgrade"], &["websocket"]));
        assert!(h(&["upgrade"], &["WebSocket"]));
        assert!(!h(&[], &["websocket"]), "no Connection: upgrade");
        assert!(!h(&["Upgrade, HTTP2-Settings"], &["h2c"]));
        assert!(!h(&["upgrade"], &["websocket, h2c"]));
        assert!(!h(&["upgrade"], &["websocket", "h2c"]));
        assert!(!h(&["upgrade"], &["websocket/13"]));
        assert!(!h(&["upgrade"], &[]));
    }

    #[test]
    fn own_cookies_go_under_every_spelling_both_ways() {
        let own = vec!["stepgate_session".to_string(), "stepgate_pre".to_string()];
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; __Host-stepgate_session=s; STEPGATE_PRE=p"
                .parse()
                .unwrap(),
        );
        h.append(header::COOKIE, "stepgate%5Fsession=x; b=2".parse().unwrap());
        strip_own_cookies(&mut h, &own);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2"]);
        let mut r = HeaderMap::new();
        for v in [
            "__Host-stepgate_session=planted; Path=/",
            "__host-Stepgate_Session=planted",
            "%5F_Host-stepgate_session=planted",
            "stepgate_pre=",
            "app=1; Path=/",
            "stepgate_sessions=ok",
        ] {
            r.append(header::SET_COOKIE, HeaderValue::from_static(v));
        }
        strip_own_set_cookies(&mut r, &own);
        let kept: Vec<_> = r.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(kept, ["app=1; Path=/", "stepgate_sessions=ok"]);
    }
}
