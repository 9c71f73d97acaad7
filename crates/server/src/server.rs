//! The router, start-up, SIGHUP reload and graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use stepgate_authn::service::{Authenticator, AuthnSettings};
use stepgate_config::Config;
use stepgate_store::{open_stores, sync_users, SecretKey};
use tower::ServiceExt as _;

use crate::pages::{Pages, STYLE_CSS, WEBAUTHN_JS};
use crate::portal;
use crate::proxy::UpstreamClient;
use crate::security::Signer;
use crate::state::{AppState, Runtime, ServeOptions, Shared};

/// Builds the whole application router.
pub fn router(state: Shared) -> Router {
    let portal_path = state.runtime.load().portal().to_string();
    router_at(state, &portal_path)
}

/// [`router`] with the portal's routes under `portal_path`.
fn router_at(state: Shared, portal_path: &str) -> Router {
    let p = |s: &str| format!("{portal_path}{s}");
    // Every route is either one of ROOT_PATHS or under the portal path: `direct_route`
    // sends everything else straight to the gateway, past this router.
    let [healthz, readyz, jwks] = ROOT_PATHS;
    Router::new()
        .route(healthz, own_path(OwnPath::Healthz))
        .route(readyz, own_path(OwnPath::Readyz))
        .route(jwks, own_path(OwnPath::Jwks))
        .route(
            &p("/static/style.css"),
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            &p("/static/webauthn.js"),
            get(|| async { asset("text/javascript; charset=utf-8", WEBAUTHN_JS) }),
        )
        .route(
            &p("/login"),
            get(portal::login_page).post(portal::login_submit),
        )
        .route(&p("/step-up"), get(portal::step_up_page))
        .route(&p("/step-up/totp"), post(portal::step_up_totp))
        .route(&p("/step-up/password"), post(portal::step_up_password))
        .route(&p("/step-up/send"), post(portal::step_up_send))
        .route(&p("/step-up/otp"), post(portal::step_up_otp))
        .route(&p("/step-up/recovery"), post(portal::step_up_recovery))
        .route(&p("/step-up/questions"), post(portal::step_up_questions))
        .route(&p("/blocked"), get(portal::blocked_page))
        .route(&p("/recheck"), post(portal::recheck))
        .route(
            &p("/api/devices/posture"),
            axum::routing::put(crate::devices_api::put_posture),
        )
        .route(&p("/api/devices/{id}"), get(crate::devices_api::get_device))
        .route(&p("/caep/events"), post(crate::caep::receive))
        .route(&p("/account"), get(portal::account_page))
        .route(&p("/account/totp/start"), post(portal::totp_start))
        .route(&p("/account/totp/confirm"), post(portal::totp_confirm))
        .route(&p("/account/contact/start"), post(portal::contact_start))
        .route(
            &p("/account/contact/confirm"),
            post(portal::contact_confirm),
        )
        .route(&p("/account/questions"), post(portal::questions))
        .route(&p("/account/recovery"), post(portal::recovery))
        .route(&p("/account/remove"), post(portal::remove))
        .route(&p("/demo/device"), post(portal::demo_device))
        .route(&p("/sessions"), get(portal::sessions_page))
        .route(&p("/sessions/end"), post(portal::end_session))
        .route(&p("/logout"), post(portal::logout))
        .route(&p("/logout-all"), post(portal::logout_all))
        .route(
            &p("/webauthn/login/start"),
            post(portal::webauthn_login_start),
        )
        .route(
            &p("/webauthn/login/finish"),
            post(portal::webauthn_login_finish),
        )
        .route(
            &p("/webauthn/step-up/start"),
            post(portal::webauthn_step_start),
        )
        .route(
            &p("/webauthn/step-up/finish"),
            post(portal::webauthn_step_finish),
        )
        .route(
            &p("/webauthn/register/start"),
            post(portal::webauthn_register_start),
        )
        .route(
            &p("/webauthn/register/finish"),
            post(portal::webauthn_register_finish),
        )
        // Forward-auth for front proxies (nginx, Traefik/Caddy, Envoy): decide only.
        .route(&p("/auth/nginx"), any(crate::forward_auth::nginx))
        .route(&p("/auth/forward"), any(crate::forward_auth::forward))
        .route(&p("/auth/envoy"), any(crate::forward_auth::envoy))
        .route(&p("/auth/envoy/"), any(crate::forward_auth::envoy))
        .route(&p("/auth/envoy/{*path}"), any(crate::forward_auth::envoy))
        .fallback(crate::gateway::handle)
        .with_state(state)
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The router's only paths outside the portal path (see [`OwnPath`]).
const ROOT_PATHS: [&str; 3] = ["/healthz", "/readyz", "/.well-known/jwks.json"];

/// Stepgate's own root paths. On an app's host (other than the public URL's) they are the
/// app's and go through the gateway like any other path, so an app keeps its own
/// `/healthz` or `/.well-known/jwks.json`. Stepgate answers only `GET` and `HEAD` on them.
#[derive(Clone, Copy)]
enum OwnPath {
    Healthz,
    Readyz,
    Jwks,
}

/// The route for one of stepgate's own root paths (any method: see [`OwnPath`]).
fn own_path(which: OwnPath) -> axum::routing::MethodRouter<Shared> {
    any(
        move |State(st): State<Shared>, peer: crate::web::Peer, req: axum::extract::Request| {
            answer_own_path(which, st, peer, req)
        },
    )
}

async fn answer_own_path(
    which: OwnPath,
    st: Shared,
    peer: crate::web::Peer,
    req: axum::extract::Request,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let for_app = st.runtime.load().is_app_host(host);
    if for_app {
        return crate::gateway::handle(State(st), peer, req).await;
    }
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match which {
        OwnPath::Healthz => "ok".into_response(),
        OwnPath::Readyz => ready(&st).await,
        OwnPath::Jwks => crate::assertion::jwks_handler(State(st)).await,
    }
}

async fn ready(st: &Shared) -> Response {
    if !st.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    // Ready means the stores answer.
    match st.stores.hot.get_counter("readyz").await {
        Ok(_) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: hot store");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

/// Opens the stores, syncs config-declared users and builds the shared state.
pub async fn build_state(
    config: Config,
    key: SecretKey,
    options: ServeOptions,
) -> anyhow::Result<Shared> {
    let data_dir = config.base_dir.join(&config.server.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let stores = open_stores(&config.store, &data_dir, &key)
        .await
        .context("opening the stores")?;
    let (stores, cache) = crate::cache::wrap(stores, config.sessions.cache_ttl());
    if !config.users.is_empty() {
        let report = sync_users(stores.durable.as_ref(), &key, &config.users)
            .await
            .context("syncing users from the configuration")?;
        tracing::info!(?report, "users from the configuration synced");
    }
    let settings = AuthnSettings {
        factors: config.factors.clone(),
        assurance: config.assurance.clone(),
        regulation: config.regulation.clone(),
    };
    let authn = Authenticator::new(
        stores.durable.clone(),
        stores.hot.clone(),
        key.clone(),
        settings,
        &config.base_dir,
    )
    .map_err(|e| anyhow::anyhow!("setting up the factors: {e}"))?;
    let signer = Signer::new(key.to_base64().as_bytes());
    let signals = Arc::new(
        crate::signals::Signals::from_config(&config)
            .map_err(|e| anyhow::anyhow!("setting up the signals: {e}"))?,
    );
    signals.spawn_background(&config);
    // Off the event loops. Whether it finishes before the first request or not, no
    // answer changes; only the first requests' latency does.
    tokio::task::spawn_blocking(stepgate_signals::useragent::warm_up);
    let assertion = Arc::new(
        crate::assertion::AssertionKeys::open(
            stores.durable.clone(),
            key.clone(),
            &config.gateway.assertion,
            chrono::Utc::now(),
        )
        .await
        .context("loading the identity assertion keys")?,
    );
    Ok(Arc::new(AppState {
        runtime: ArcSwap::from_pointee(Runtime::new(config)),
        stores,
        authn,
        signer,
        pages: Pages::new(),
        upstream: UpstreamClient::new(),
        options,
        ready: std::sync::atomic::AtomicBool::new(true),
        signals,
        assertion,
        bearer: crate::bearer::BearerVerifier::new(),
        cache,
        assertions: crate::assertion::AssertionCache::default(),
    }))
    .inspect(|st| crate::assertion::AssertionKeys::spawn_maintenance(Arc::downgrade(st)))
}

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
    let (tls, workers) = {
        let rt = state.runtime.load();
        let tls = match &rt.config.server.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
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
        (tls, workers.max(1))
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    spawn_reloader(state.clone());
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
    Ok(())
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
    spawn_reloader(state.clone());
    serve_connections(state, Incoming::Listener(listener), None, wait_for_stop()).await
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
    // Each connection holds a receiver: a change asks it to shut down gracefully, and the
    // drain is over when every receiver is gone.
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(());
    tokio::pin!(stop);
    loop {
        let (tcp, peer, guard) = tokio::select! {
            c = incoming.next() => match c {
                Some(c) => c,
                None => break,
            },
            _ = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let header_timeout = state.runtime.load().config.server.header_timeout.0;
        let (router, st, portal) = (router.clone(), state.clone(), portal.clone());
        let mut stopping = stopping_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _guard = guard;
            // Serves the connection to its end, shutting it down gracefully (hyper finishes
            // the requests in progress; over HTTP/2 it sends GOAWAY first) when the server
            // stops or `$idle` completes.
            macro_rules! drive {
                ($conn:expr, $idle:expr) => {{
                    let conn = $conn;
                    tokio::pin!(conn);
                    let stopped = stopping.changed();
                    tokio::pin!(stopped);
                    let idle = $idle;
                    tokio::pin!(idle);
                    let mut closing = false;
                    loop {
                        tokio::select! {
                            biased;
                            r = conn.as_mut() => break r,
                            _ = &mut stopped, if !closing => {
                                closing = true;
                                conn.as_mut().graceful_shutdown();
                            }
                            _ = &mut idle, if !closing => {
                                closing = true;
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }};
            }
            // The protocol is settled before hyper takes the connection: by ALPN over TLS,
            // by the first bytes on plain HTTP (an HTTP/2 preface or not) within
            // `header_timeout`, so a client that connects and sends nothing is let go.
            // HTTP/2 connections are asked to go away once idle for `header_timeout` by
            // `IdleIo` (hyper's HTTP/1.1 server closes idle ones itself).
            macro_rules! serve {
                ($io:expr, $h2:expr, $certs:expr) => {{
                    let builder = connection_builder($h2, header_timeout);
                    if $h2 {
                        let in_progress = crate::idle::InProgress::default();
                        let go_away = Arc::new(crate::idle::GoAway::default());
                        let io = crate::idle::IdleIo::new(
                            $io,
                            in_progress.clone(),
                            go_away.clone(),
                            header_timeout,
                        );
                        let svc = service(router, st, portal, peer, $certs, Some(in_progress));
                        drive!(
                            builder.serve_connection_with_upgrades(TokioIo::new(io), svc),
                            go_away.requested()
                        )
                    } else {
                        let svc = service(router, st, portal, peer, $certs, None);
                        drive!(
                            builder.serve_connection_with_upgrades(TokioIo::new($io), svc),
                            std::future::pending::<()>()
                        )
                    }
                }};
            }
            let result = match tls {
                None => {
                    let Some(h2) = sniff_http2(&tcp, header_timeout).await else {
                        return;
                    };
                    serve!(tcp, h2, None)
                }
                Some(acceptor) => {
                    let Some((stream, certs)) = crate::tls::handshake(&acceptor, tcp, peer).await
                    else {
                        return;
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve!(stream, h2, Some(certs))
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    state.ready.store(false, Ordering::Relaxed);
    tracing::info!("shutting down: draining in-flight requests");
    let grace = state.runtime.load().config.server.shutdown_grace.0;
    drop(stopping_rx);
    let _ = stopping_tx.send(());
    tokio::select! {
        _ = stopping_tx.closed() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("drain timed out; exiting"),
    }
    Ok(())
}

/// hyper's builder for one connection whose protocol is known. HTTP/1.1 connections must
/// send each request's headers within `header_timeout` of connecting or of the previous
/// response, so a client trickling headers, or holding an idle keep-alive connection, is
/// let go.
fn connection_builder(h2: bool, header_timeout: std::time::Duration) -> AutoBuilder<TokioExecutor> {
    let builder = AutoBuilder::new(TokioExecutor::new());
    if h2 {
        return builder.http2_only();
    }
    let mut builder = builder.http1_only();
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
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

/// A handler a request reaches without going through the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direct {
    /// [`crate::gateway::handle`], the router's fallback.
    Gateway,
    /// [`crate::forward_auth::nginx`].
    NginxAuth,
    /// [`crate::forward_auth::forward`].
    ForwardAuth,
}

/// Which handler the router would give `path` to, for the hot paths: any path outside the
/// portal and [`ROOT_PATHS`] (the router has no route there, so its fallback, the gateway,
/// answers) and the nginx and Traefik/Caddy forward-auth endpoints. `None` leaves the
/// request to the router. Paths are compared as sent, as the router matches them.
fn direct_route(path: &str, portal: &str) -> Option<Direct> {
    if ROOT_PATHS.contains(&path) {
        return None;
    }
    match path.strip_prefix(portal) {
        None => Some(Direct::Gateway),
        Some("/auth/nginx") => Some(Direct::NginxAuth),
        Some("/auth/forward") => Some(Direct::ForwardAuth),
        Some(_) => None,
    }
}

/// The per-connection service: with the peer address (and, over TLS, the client
/// certificate chain and the [`crate::tls::Tls`] mark), a request goes to the handler
/// [`direct_route`] names, else through the router. Proxied and forward-auth requests skip
/// the router's matching, extensions and boxing: they are most of the traffic.
fn service(
    router: Router,
    state: Shared,
    portal: Arc<str>,
    peer: SocketAddr,
    tls: Option<crate::signals::PeerCertificates>,
    in_progress: Option<crate::idle::InProgress>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if let Some(certs) = &tls {
            let ext = req.extensions_mut();
            ext.insert(crate::tls::Tls);
            if !certs.0.is_empty() {
                ext.insert(certs.clone());
            }
        }
        let direct = direct_route(req.uri().path(), &portal);
        let (router, st) = (router.clone(), state.clone());
        // Counted from now until its response body ends (see `crate::idle`).
        let guard = in_progress.as_ref().map(crate::idle::InProgress::enter);
        // One async block: a future is copied whole each time it moves, and the gateway's
        // is large, so nesting it in another block cost more than the router it skips.
        async move {
            let res = match direct {
                None => {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    router.oneshot(req).await
                }
                Some(direct) => {
                    let head = req.method() == axum::http::Method::HEAD;
                    let (req, peer) = (req.map(axum::body::Body::new), ConnectInfo(peer));
                    let res = match direct {
                        Direct::Gateway => crate::gateway::handle(State(st), peer, req).await,
                        Direct::NginxAuth => crate::forward_auth::nginx(State(st), peer, req).await,
                        Direct::ForwardAuth => {
                            crate::forward_auth::forward(State(st), peer, req).await
                        }
                    };
                    Ok(finish_like_router(res, head))
                }
            };
            match guard {
                None => res,
                Some(g) => res.map(|r| r.map(|b| crate::idle::GuardedBody::wrap(b, g))),
            }
        }
    })
}

/// What the router does to each handler's response, done for the ones that skip it: a
/// body of known size gets its `Content-Length` if it has none, and the answer to a `HEAD`
/// request loses its body (hyper's HTTP/1 server drops it itself, its HTTP/2 server not).
fn finish_like_router(mut res: Response, head: bool) -> Response {
    use axum::body::HttpBody as _;
    if !res.headers().contains_key(header::CONTENT_LENGTH) {
        if let Some(n) = res.body().size_hint().exact() {
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    if head {
        *res.body_mut() = axum::body::Body::empty();
    }
    res
}

pub(crate) async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) fn spawn_reloader(state: Shared) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            reload(&state);
        }
    });
}

/// Re-reads the configuration file and swaps it in atomically; keeps the old one (and
/// logs every error) when the new one is invalid. Stores, factors and keys are not
/// reloaded: they need a restart.
pub fn reload(state: &Shared) -> bool {
    let Some(path) = state.options.config_path.clone() else {
        tracing::warn!("SIGHUP: no configuration file to reload (built-in demo configuration)");
        return false;
    };
    match stepgate_config::load(Path::new(&path)) {
        Ok(cfg) => {
            let n = cfg.policy_set.len();
            state.cache.set_ttl(cfg.sessions.cache_ttl());
            state.runtime.store(Arc::new(Runtime::new(cfg)));
            tracing::info!(policies = n, "configuration reloaded");
            true
        }
        Err(e) => {
            for d in &e.diagnostics {
                tracing::error!(%d, "reload refused; keeping the running configuration");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_routes_are_the_gateway_and_forward_auth_and_nothing_the_router_serves() {
        let portal = "/_stepgate";
        for path in [
            "/",
            "/admin/users",
            "/_stepgat",
            "/healthz/",
            "/readyz.json",
            "",
            "*",
        ] {
            assert_eq!(direct_route(path, portal), Some(Direct::Gateway), "{path}");
        }
        assert_eq!(
            direct_route("/_stepgate/auth/nginx", portal),
            Some(Direct::NginxAuth)
        );
        assert_eq!(
            direct_route("/_stepgate/auth/forward", portal),
            Some(Direct::ForwardAuth)
        );
        // Stepgate's own root paths answer for an app's host only through the router, and
        // every other portal path is the router's (or its fallback's).
        for path in [
            "/healthz",
            "/readyz",
            "/.well-known/jwks.json",
            "/_stepgate",
            "/_stepgate/login",
            "/_stepgate/auth/forward/",
            "/_stepgate/auth/envoy/x",
            "/_stepgate/auth/%6eginx",
            "/_stepgatex",
        ] {
            assert_eq!(direct_route(path, portal), None, "{path}");
        }
        assert_eq!(
            direct_route("/_stepgate/login", "/sso"),
            Some(Direct::Gateway)
        );
        assert_eq!(
            direct_route("/sso/auth/nginx", "/sso"),
            Some(Direct::NginxAuth)
        );
    }

    #[test]
    fn a_direct_answer_is_finished_as_the_router_finishes_one() {
        let r = finish_like_router("four".into_response(), false);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "4");
        let r = finish_like_router("four".into_response(), true);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "4");
        assert_eq!(axum::body::HttpBody::size_hint(r.body()).exact(), Some(0));
        let mut told = "four".into_response();
        told.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        let r = finish_like_router(told, false);
        assert_eq!(
            r.headers().get_all(header::CONTENT_LENGTH).iter().count(),
            1
        );
    }
}
