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

/// A served stepgate, killed when dropped, so that a failing test does not leave it running.
struct Served(std::process::Child);

impl std::ops::Deref for Served {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `stepgate serve --config cfg` on a free port and waits until `/readyz` says 200.
fn serve_ready(cfg: &std::path::Path) -> (Served, u16) {
    let port = free_port();
    let child = Served(
        Command::new(env!("CARGO_BIN_EXE_stepgate"))
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
            .unwrap(),
    );
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

/// Sends SIGTERM to the child.
fn sigterm(child: &std::process::Child) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// Waits up to 15 s for the child to exit.
fn exit_status(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "stepgate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads from `s` until `needle` has arrived (or panics on EOF or after the read timeout).
fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "waiting for {needle:?}: {e}; got {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        assert!(
            n > 0,
            "closed while waiting for {needle:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// SIGTERM while a request's body is still arriving: the request is answered, then the
/// process exits cleanly. No sleeps: each step waits for what says the previous one took
/// effect. `Expect: 100-continue` makes the server say when the handler starts reading the
/// body (the request is in flight), and an idle keep-alive connection on the same (only)
/// worker is closed when that worker starts draining (SIGTERM has been acted on), which is
/// when the rest of the body is sent.
#[test]
fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "sessions: { cookie: { secure: false } }\nserver: { shutdown_grace: 5s, workers: 1 }\n",
    )
    .unwrap();
    let (mut child, port) = serve_ready(&cfg);
    assert!(get(port, "/healthz").unwrap().ends_with("ok"));

    // An idle keep-alive connection: the drain closes it.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert!(read_response(&mut idle).ends_with("ok"));

    // A request whose body is still arriving when SIGTERM comes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = "csrf=x&t=&username=a&password=b";
    write!(s, "POST /_stepgate/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    let interim = read_until(&mut s, "\r\n\r\n");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue"),
        "the handler reads the body (the request is in flight): {interim}"
    );
    s.write_all(&body.as_bytes()[..10]).unwrap();

    sigterm(&child);
    // The worker drains: its idle connection is closed — by the drain, well inside the
    // 5 s grace (when the grace runs out the runtime closes every connection, this one
    // included, so a longer wait would pass without the drain).
    assert!(
        closed_within(&mut idle, Duration::from_secs(2)),
        "the idle connection was not closed after SIGTERM"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "stepgate exited with a request in flight"
    );
    s.write_all(&body.as_bytes()[10..]).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.1 403"),
        "the in-flight request got its answer (CSRF refusal): {resp}"
    );

    let status = exit_status(&mut child);
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

/// How many times each of stepgate's worker threads has been scheduled onto a CPU (the
/// third field of /proc/<pid>/task/<tid>/schedstat), by thread id. An idle worker's event
/// loop sleeps in `epoll_wait`, so serving a request on one of its connections wakes it
/// and counts there and nowhere else: a per-worker count of the work done, read from
/// outside the process. Workers are the threads named `stepgate-worker-N` (/proc shows 15
/// characters: `stepgate-worker`).
fn worker_wakeups(pid: u32) -> std::collections::BTreeMap<u32, u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with("stepgate-worke") {
            continue;
        }
        let sched = std::fs::read_to_string(task.join("schedstat"))
            .expect("/proc/<pid>/task/<tid>/schedstat (a kernel with CONFIG_SCHED_INFO)");
        let runs = sched
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("schedstat: {sched:?}"));
        let tid = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        out.insert(tid, runs);
    }
    out
}

/// Every worker serves keep-alive connections: with 3 workers and 7 connections held open,
/// each connection's requests are all served by one worker (the one that took it), and the
/// connections are spread 3/2/2 over the 3 workers (each new connection goes to the worker
/// with the fewest open).
#[test]
fn every_worker_serves_keep_alive_connections() {
    const REQUESTS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "sessions: { cookie: { secure: false } }\nserver: { workers: 3 }\n",
    )
    .unwrap();
    let (mut child, port) = serve_ready(&cfg);
    let workers = worker_wakeups(child.id());
    assert_eq!(workers.len(), 3, "three worker threads: {workers:?}");
    let mut conns: Vec<TcpStream> = (0..7)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    // One connection at a time, so that the worker that wakes is the one serving it.
    let mut served_by: std::collections::BTreeMap<u32, usize> =
        workers.keys().map(|&t| (t, 0)).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        let before = worker_wakeups(child.id());
        for round in 0..REQUESTS {
            write!(s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
            let r = read_response(s);
            assert!(
                r.starts_with("HTTP/1.1 200") && r.ends_with("ok"),
                "connection {i}, request {round}: {r}"
            );
        }
        let after = worker_wakeups(child.id());
        let mut woke: Vec<(u64, u32)> = after
            .iter()
            .map(|(tid, n)| (n - before[tid], *tid))
            .collect();
        woke.sort_unstable();
        let (most, owner) = woke[2];
        assert!(
            most >= REQUESTS / 2 && woke[1].0 <= REQUESTS / 4,
            "connection {i}: {REQUESTS} requests should wake one worker, not several: {woke:?}"
        );
        *served_by.get_mut(&owner).unwrap() += 1;
    }
    let mut spread: Vec<usize> = served_by.values().copied().collect();
    spread.sort_unstable();
    assert_eq!(
        spread,
        vec![2, 2, 3],
        "connections per worker (thread id: connections): {served_by:?}"
    );
    // Each worker counts its open connections down as they close, so new connections keep
    // being placed and served.
    drop(conns);
    for _ in 0..5 {
        assert!(get(port, "/healthz").unwrap().ends_with("ok"));
    }
    sigterm(&child);
    exit_status(&mut child);
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
    let (child, port) = serve_ready(&cfg);
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
    drop(child);
}

/// `stepgate probe`, the container image's health check: 0 when the endpoint answers 2xx, 1
/// when it answers otherwise or nothing listens.
#[test]
fn probe_passes_on_a_ready_node_and_fails_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(&cfg, "sessions: { cookie: { secure: false } }\n").unwrap();
    let (child, port) = serve_ready(&cfg);
    let probe = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args(["probe", "--url", &url, "--timeout", "2"])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(probe(format!("http://127.0.0.1:{port}/readyz")), Some(0));
    assert_eq!(
        probe(format!("http://127.0.0.1:{port}/no-such-page")),
        Some(1),
        "a 404 is not healthy"
    );
    drop(child);
    assert_eq!(
        probe(format!("http://127.0.0.1:{port}/readyz")),
        Some(1),
        "nothing listening"
    );
}
