//! `stepgate serve` as a process: health endpoints, and SIGTERM draining in-flight requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Starts `stepgate serve --config cfg` on a free port and waits until `/readyz` says 200.
fn serve_ready(cfg: &std::path::Path) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env(
            "STEPGATE_SECRET_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while get(port, "/readyz").is_none_or(|r| !r.starts_with("HTTP/1.1 200")) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stepgate did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "sessions: { cookie: { secure: false } }\nserver: { shutdown_grace: 5s }\n",
    )
    .unwrap();
    let (mut child, port) = serve_ready(&cfg);
    assert!(get(port, "/healthz").unwrap().ends_with("ok"));

    // A request whose body is still arriving when SIGTERM comes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = "csrf=x&t=&username=a&password=b";
    write!(s, "POST /_stepgate/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(&body.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(&body.as_bytes()[10..]).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 403"),
        "the in-flight request got its answer (CSRF refusal): {resp}"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "stepgate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "clean exit: {status:?}");
    assert!(get(port, "/healthz").is_none(), "no longer listening");
}

/// Reads one `Content-Length` response from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

#[test]
fn every_worker_serves_keep_alive_connections() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "sessions: { cookie: { secure: false } }\nserver: { workers: 3 }\n",
    )
    .unwrap();
    let (mut child, port) = serve_ready(&cfg);
    // More open connections than workers, all kept alive at once, so every worker holds
    // some; each answers several requests in turn.
    let mut conns: Vec<TcpStream> = (0..7)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    for round in 0..3 {
        for (i, s) in conns.iter_mut().enumerate() {
            write!(s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let r = read_response(s);
            assert!(
                r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
                "connection {i}, round {round}: {r}"
            );
        }
    }
    // Each worker counts its open connections down as they close, so new connections keep
    // being placed and served.
    drop(conns);
    for _ in 0..5 {
        assert!(get(port, "/healthz").unwrap().ends_with("ok"));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "stepgate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the server closed `s` within `within` (reads EOF or a reset, not a timeout).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 (or any answer) before the close is fine.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_that_sends_no_request_in_time_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "sessions: { cookie: { secure: false } }\nserver: { header_timeout: 1s }\n",
    )
    .unwrap();
    let (mut child, port) = serve_ready(&cfg);
    // Connects and says nothing.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Sends headers a byte at a time, too slowly to finish.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Keeps a connection open after a request.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert!(read_response(&mut idle).ends_with("ok"));
    // 3 s of headers, well past the 1 s allowed (the server may cut it off sooner).
    for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ......" {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    for (name, s) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("idle", &mut idle),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "{name} was kept open"
        );
    }
    // A client that does send its request in time is served as ever.
    assert!(get(port, "/healthz").unwrap().ends_with("ok"));
    let _ = child.kill();
    let _ = child.wait();
}
