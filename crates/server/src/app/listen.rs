//! Listening and serving connections: the accept loop that spreads connections over the
//! worker threads, HTTP/1.1 and HTTP/2 (by ALPN over TLS, by the preface on plain HTTP),
//! header timeouts, idle HTTP/2 connections told to go away, and the drain on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::access::signals::PeerCertificates;

use super::drain::{Drain, Stopping};
use super::idle::IdleIo;
use super::reload::{spawn_reloader, wait_for_stop};
use super::routes::{router_at, service};
use super::state::Shared;

/// Serves until SIGTERM/SIGINT, reloading the configuration on SIGHUP.
/// With `server.tls`, serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
///
/// Connections are served by `server.workers` threads (default: one per core), each with
/// its own single-threaded event loop and upstream connection pool, so a request is parsed,
/// decided, proxied and answered on one thread without cross-thread wake-ups. One accept
/// loop hands each new connection to the worker with the fewest open connections (keep-alive
/// connections are long-lived, so balancing them at accept time balances the load).
/// Background work (reloads, key rotation, signal refreshes) stays on the caller's runtime.
pub async fn serve(state: Shared, addr: SocketAddr) -> anyhow::Result<()> {
    let (tls, workers) = listener_settings(&state)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    spawn_reloader(state.clone());
    crate::devices::connectors::Connectors::spawn(&state);
    crate::metrics::Metrics::spawn_listener(&state).await?;
    let (lanes, threads) = spawn_workers(&state, &tls, workers)?;
    tracing::info!(%addr, workers, "serving");
    let stop = wait_for_stop();
    tokio::pin!(stop);
    let mut incoming = Incoming::Listener(listener);
    loop {
        let (tcp, peer) = tokio::select! {
            c = incoming.next() => match c {
                Some((tcp, peer, _)) => (tcp, peer),
                None => break,
            },
            _ = &mut stop => break,
        };
        let Ok(std) = tcp.into_std() else { continue };
        let Some((tx, open)) = lanes
            .iter()
            .min_by_key(|(_, open)| open.load(Ordering::Relaxed))
        else {
            break;
        };
        open.fetch_add(1, Ordering::Relaxed);
        if tx.send((std, peer)).is_err() {
            anyhow::bail!("a worker thread stopped");
        }
    }
    // Closing the lanes tells every worker to stop accepting and drain.
    drop(lanes);
    drop(incoming);
    for t in threads {
        match tokio::task::spawn_blocking(move || t.join()).await {
            Ok(Ok(r)) => r?,
            _ => anyhow::bail!("a worker thread panicked"),
        }
    }
    write_what_is_left(&state).await;
    Ok(())
}

/// The TLS acceptor (with `server.tls`) and how many worker threads serve connections
/// (`server.workers`, by default one per core).
fn listener_settings(state: &Shared) -> anyhow::Result<(Option<tokio_rustls::TlsAcceptor>, usize)> {
    let rt = state.runtime.load();
    let tls = match &rt.config.server.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(super::tls::server_config(
            t,
            &rt.config.base_dir,
        )?)),
        None => None,
    };
    let workers = rt
        .config
        .server
        .workers
        .as_ref()
        .map(|w| **w)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok((tls, workers.max(1)))
}

/// A worker's lane: where its connections are sent, and how many it is serving.
type Lane = (
    tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    Arc<std::sync::atomic::AtomicUsize>,
);

/// A worker thread, ending with its serving loop's result.
type Worker = std::thread::JoinHandle<anyhow::Result<()>>;

/// Starts `workers` threads, each serving the connections handed to it on its own
/// single-threaded event loop.
fn spawn_workers(
    state: &Shared,
    tls: &Option<tokio_rustls::TlsAcceptor>,
    workers: usize,
) -> anyhow::Result<(Vec<Lane>, Vec<Worker>)> {
    let mut lanes = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        lanes.push((tx, open.clone()));
        let (st, tls) = (state.clone(), tls.clone());
        let t = std::thread::Builder::new()
            .name(format!("stepgate-worker-{i}"))
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting a worker's event loop")?;
                rt.block_on(serve_connections(
                    st,
                    Incoming::Handed { rx, open },
                    tls,
                    std::future::pending(),
                ))
            })
            .context("starting a worker thread")?;
        threads.push(t);
    }
    Ok((lanes, threads))
}

/// Where a serving loop gets its connections.
pub(crate) enum Incoming {
    /// Accepts them itself.
    Listener(tokio::net::TcpListener),
    /// Is handed them by [`serve`]'s accept loop; `open` counts the ones it still serves.
    Handed {
        rx: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
        open: Arc<std::sync::atomic::AtomicUsize>,
    },
}

/// Decrements a worker's open-connection count when a connection ends.
struct OpenGuard(Option<Arc<std::sync::atomic::AtomicUsize>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Incoming {
    /// The next connection; `None` when no more will come.
    async fn next(&mut self) -> Option<(tokio::net::TcpStream, SocketAddr, OpenGuard)> {
        loop {
            match self {
                Incoming::Listener(l) => match l.accept().await {
                    Ok((tcp, peer)) => return Some((tcp, peer, OpenGuard(None))),
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Incoming::Handed { rx, open } => {
                    let (std, peer) = rx.recv().await?;
                    let guard = OpenGuard(Some(open.clone()));
                    match tokio::net::TcpStream::from_std(std) {
                        Ok(tcp) => return Some((tcp, peer, guard)),
                        Err(e) => tracing::warn!(error = %e, "could not take over a connection"),
                    }
                }
            }
        }
    }
}

/// Serves plain HTTP on an already bound listener (tests bind port 0), on the caller's
/// runtime, until SIGTERM/SIGINT.
pub async fn serve_on(state: Shared, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    serve_on_until(state, listener, wait_for_stop()).await
}

/// [`serve_on`], stopping when `stop` completes instead of at a signal: the same drain,
/// and the same last writes ([`write_what_is_left`]) before it returns.
pub async fn serve_on_until(
    state: Shared,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    spawn_reloader(state.clone());
    crate::devices::connectors::Connectors::spawn(&state);
    crate::metrics::Metrics::spawn_listener(&state).await?;
    serve_connections(state.clone(), Incoming::Listener(listener), None, stop).await?;
    write_what_is_left(&state).await;
    Ok(())
}

/// Once the requests are drained, what the node still holds for the durable store is
/// written, for at most `server.shutdown_grace`: the decision records the writer still
/// gathers (or has queued), so the decisions of the last requests outlive the process (the
/// writer ends with the runtime, its gathered batch with it), and the audit events that
/// wait for a store that was out of reach (it may be back while the outbox's writer still
/// backs off).
async fn write_what_is_left(state: &Shared) {
    let grace = state.runtime.load().config.server.shutdown_grace.0;
    let decisions = async {
        let Some(log) = state.access.decision_log() else {
            return;
        };
        if tokio::time::timeout(grace, log.flush()).await.is_err() {
            tracing::warn!(
                queued = log.queued(),
                "the decision log was not written within the shutdown grace; the last decisions are lost"
            );
        }
    };
    let audit = async {
        if state.audit.waiting() == 0 {
            return;
        }
        let error = match tokio::time::timeout(grace, state.audit.flush()).await {
            Ok(Ok(())) => return tracing::info!("the audit events that waited are written"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "not written within the shutdown grace".to_string(),
        };
        // What still waits is logged as lost, with its kinds, when the outbox is dropped.
        tracing::warn!(waiting = state.audit.waiting(), %error, "the audit events that wait could not be written at stop");
    };
    tokio::join!(decisions, audit);
}

/// The serving loop for both plain HTTP and TLS: `TCP_NODELAY` on every connection,
/// HTTP/1.1 with upgrades (WebSocket) and HTTP/2 (by ALPN over TLS, by the connection
/// preface on plain HTTP), the peer address (and over TLS the client certificate chain) in
/// each request's extensions. When `stop` completes or no more connections come it stops,
/// marks the node not ready and drains in-flight requests for at most
/// `server.shutdown_grace`, so a stuck upstream cannot keep the process alive.
pub(crate) async fn serve_connections(
    state: Shared,
    mut incoming: Incoming,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // The router keeps the portal path it was built with (a reload does not rebuild it);
    // `direct_route` must use the same.
    let portal: Arc<str> = state.runtime.load().portal().into();
    let router = router_at(state.clone(), &portal);
    // Each connection holds a stop signal: it asks the connection to shut down gracefully,
    // and the drain is over when every one is gone.
    let drain = Drain::default();
    tokio::pin!(stop);
    // This event loop's upstream connections, swept every second (see `sweep_kept`).
    let sweep = crate::gateway::upstream::sweep_kept();
    tokio::pin!(sweep);
    loop {
        let (tcp, peer, guard) = tokio::select! {
            c = incoming.next() => match c {
                Some(c) => c,
                None => break,
            },
            _ = &mut stop => break,
            never = &mut sweep => match never {},
        };
        let conn = Connection {
            router: router.clone(),
            st: state.clone(),
            portal: portal.clone(),
            header_timeout: state.runtime.load().config.server.header_timeout.0,
            stopping: drain.connection(),
            peer,
            _guard: guard,
        };
        tokio::spawn(conn.serve(tcp, tls.clone()));
    }
    state.ready.store(false, Ordering::Relaxed);
    tracing::info!("shutting down: draining in-flight requests");
    let grace = state.runtime.load().config.server.shutdown_grace.0;
    // The sweep goes on through the drain: it keeps the upstream calls' time limits.
    tokio::select! {
        _ = drain.stop_and_wait() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("drain timed out; exiting"),
        never = &mut sweep => match never {},
    }
    // The SIEM streams end after the delivery under way, its cursor written.
    if tokio::time::timeout(grace, state.siem.stop())
        .await
        .is_err()
    {
        tracing::warn!("the audit streams did not stop in time; the last batch may be sent again");
    }
    Ok(())
}

/// One accepted connection and what serving it needs.
struct Connection {
    router: axum::Router,
    st: Shared,
    portal: Arc<str>,
    header_timeout: std::time::Duration,
    /// Completes when the server stops: the connection is then shut down gracefully.
    stopping: Stopping,
    peer: SocketAddr,
    /// Counts the connection as open on its worker until it ends.
    _guard: OpenGuard,
}

impl Connection {
    /// Serves the connection to its end. The protocol is settled before hyper takes the
    /// connection: by ALPN over TLS, by the first bytes on plain HTTP (an HTTP/2 preface or
    /// not) within `header_timeout`, so a client that connects and sends nothing is let go.
    async fn serve(self, tcp: tokio::net::TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let _ = tcp.set_nodelay(true);
        let peer = self.peer;
        let result = match tls {
            None => {
                let Some(h2) = sniff_http2(&tcp, self.header_timeout).await else {
                    return;
                };
                self.speak(tcp, h2, None).await
            }
            Some(acceptor) => {
                let Some((stream, certs)) = super::tls::handshake(&acceptor, tcp, peer).await
                else {
                    return;
                };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.speak(stream, h2, Some(certs)).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }

    /// HTTP/1.1 (with upgrades) or HTTP/2 over `io`, by hyper's builder for that protocol
    /// (it is settled already), timed by [`super::idle::IdleIo`]: HTTP/1.1 connections must
    /// send each request's headers within `header_timeout` of connecting or of the previous
    /// response, so a client trickling headers, or holding an idle keep-alive connection,
    /// is let go; HTTP/2 connections are asked to go away once idle for `header_timeout`.
    async fn speak<IO>(self, io: IO, h2: bool, certs: Option<PeerCertificates>) -> ServeResult
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            router,
            st,
            portal,
            header_timeout,
            stopping,
            peer,
            _guard,
        } = self;
        let in_progress = super::idle::InProgress::default();
        let svc = service(router, st, portal, peer, certs, in_progress.clone());
        if h2 {
            let go_away = Arc::new(super::idle::GoAway::default());
            let io = IdleIo::http2(io, in_progress, go_away.clone(), header_timeout);
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc);
            drive(conn, stopping, go_away.requested()).await
        } else {
            let io = IdleIo::http1(io, in_progress, header_timeout);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades();
            drive(conn, stopping, std::future::pending()).await
        }
    }
}

/// How a connection ended.
type ServeResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A hyper connection that can be asked to finish the requests in progress and close.
trait Graceful: std::future::Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, B, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self)
    }
}

/// Runs a connection to its end, shutting it down gracefully (hyper finishes the requests in
/// progress; over HTTP/2 it sends GOAWAY first) when the server stops or `idle` completes.
async fn drive<C: Graceful>(
    conn: C,
    mut stopping: Stopping,
    idle: impl std::future::Future<Output = ()>,
) -> ServeResult {
    tokio::pin!(conn);
    tokio::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => return r.map_err(Into::into),
            _ = &mut stopping, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut idle, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Whether a plain-HTTP connection speaks HTTP/2 (it opens with the HTTP/2 preface) or
/// HTTP/1.1, from the bytes it has sent, without consuming them. `None` when it closes, or
/// sends nothing that settles it within `within`.
async fn sniff_http2(tcp: &tokio::net::TcpStream, within: std::time::Duration) -> Option<bool> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            // Waits for bytes, and leaves them for hyper.
            let n = match tcp.peek(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            if buf[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // Part of the preface: peeking again at once would spin on the same bytes.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(within, sniff).await.ok().flatten()
}
