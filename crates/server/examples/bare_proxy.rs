//! The floor for a hyper-based reverse proxy: hyper's HTTP/1.1 server and client, one
//! single-threaded event loop per core with its own keep-alive upstream connections (as
//! stepgate serves), and nothing else: no routing, no session, no policy, no header
//! rewriting. `bench/load.sh` measures it beside nginx so that stepgate's own cost is
//! separated from the cost of the HTTP stack it is built on.
//!
//! `cargo run --release -p stepgate-server --example bare_proxy -- 127.0.0.1:9001 127.0.0.1:9000`

use std::cell::RefCell;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

thread_local! {
    static KEPT: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

type Body = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;

async fn forward(upstream: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let kept = KEPT.with(|k| {
        let mut k = k.borrow_mut();
        k.retain(|s| !s.is_closed());
        k.iter()
            .position(|s| s.is_ready())
            .map(|i| k.swap_remove(i))
    });
    let mut sender = match kept {
        Some(s) => s,
        None => {
            let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else {
                return bad_gateway();
            };
            let _ = tcp.set_nodelay(true);
            let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
            else {
                return bad_gateway();
            };
            tokio::task::spawn_local(async move {
                let _ = conn.await;
            });
            sender
        }
    };
    let sent = sender.send_request(req);
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() < 64 {
            k.push(sender);
        }
    });
    match sent.await {
        Ok(res) => res.map(Body::Left),
        Err(_) => bad_gateway(),
    }
}

fn bad_gateway() -> Response<Body> {
    let mut r = Response::new(Body::Right(Default::default()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let parse = |s: Option<String>, default: &str| -> std::io::Result<SocketAddr> {
        s.unwrap_or_else(|| default.into())
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let listen = parse(args.next(), "127.0.0.1:9001")?;
    let upstream = parse(args.next(), "127.0.0.1:9000")?;
    let listener = std::net::TcpListener::bind(listen)?;
    println!("bare_proxy listening on {listen}, forwarding to {upstream}");
    // One accept loop deals connections to the event loops in turn (as stepgate's accept
    // loop does, by fewest open): loops accepting on one shared socket can end up with all
    // of wrk's connections on one core.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lanes = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        lanes.push(tx);
        std::thread::spawn(move || -> std::io::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                while let Some(std) = rx.recv().await {
                    std.set_nonblocking(true)?;
                    let stream = tokio::net::TcpStream::from_std(std)?;
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(async move {
                        let service = service_fn(move |req| async move {
                            Ok::<_, std::convert::Infallible>(forward(upstream, req).await)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Ok(())
            })
        });
    }
    for (i, conn) in listener.incoming().enumerate() {
        let Ok(conn) = conn else { continue };
        if lanes[i % threads].send(conn).is_err() {
            return Err(std::io::Error::other("an event loop stopped"));
        }
    }
    Ok(())
}
