//! The upstream connection pool: HTTP/1.1 keep-alive connections per upstream and serving
//! thread, and the origin-form target a request is sent with.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, Uri};

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

impl Pool {
    /// Drops every closed and long-idle connection.
    fn sweep(&mut self, now: std::time::Instant) {
        self.swept = Some(now);
        for list in self.kept.values_mut() {
            list.retain(|k| !spent(k, now));
        }
    }
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool::default());
}

/// Whether a kept connection is of no more use: closed, or free but unused too long.
fn spent(k: &Kept, now: std::time::Instant) -> bool {
    k.sender.is_closed() || (k.sender.is_ready() && now.duration_since(k.last_used) >= IDLE_TIMEOUT)
}

/// Sweeps this thread's pool of closed and long-idle connections every [`SWEEP_EVERY`], for
/// as long as the serving loop that runs it (one per worker event loop) lasts: a connection
/// is closed within a second of its idle timeout even when no request passes by.
///
/// Its timer also keeps the event loop's timer wheel armed at most a second ahead. Tokio
/// wakes its own driver (an `eventfd` write, and one more `epoll_wait` to read it) whenever a
/// timer is registered that falls due before every timer already there; with nothing else
/// registered, each proxied request's upstream timeout was such a timer, costing two system
/// calls per request. With this tick registered, an upstream timeout (seconds or more) never
/// falls due first.
///
/// The same tick keeps the upstream calls' time limits on this thread
/// ([`super::deadline`]).
pub async fn sweep_kept() -> std::convert::Infallible {
    let deadlines = super::deadline::Sweeping::start();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        POOL.with(|p| p.borrow_mut().sweep(now));
        if let Some(d) = &deadlines {
            d.tick(now);
        }
    }
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
            p.sweep(now);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
