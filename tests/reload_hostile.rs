//! Issue 16, item 8, through the live server: `stepgate serve` is sent SIGHUP after each
//! hostile configuration (tests/support/hostile.rs) is written over its file. Each reload
//! is refused with the positioned error in the log, the process keeps answering with the
//! configuration it had, and a valid file afterwards is still taken (the reload task
//! survived every refusal).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[path = "support/hostile.rs"]
mod hostile;

const BASE: &str =
    "sessions: { cookie: { secure: false } }\napps:\n  - { id: one, hosts: [one.test] }\n";
const GROWN: &str = "sessions: { cookie: { secure: false } }\napps:\n  - { id: one, hosts: [one.test] }\n  - { id: two, hosts: [two.test] }\n";

/// The status line's code for `GET /` on `host`, or `None` if nothing answered.
fn status(port: u16, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

fn append(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap()
}

/// A served stepgate, killed when dropped, so that a failing test does not leave it running.
struct Served(Child);

impl std::ops::Deref for Served {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Served {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(cfg: &Path, log: &Path) -> (Served, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Served(
        Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(
                "STEPGATE_SECRET_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .env("STEPGATE_LOG", "info")
            .env("NO_COLOR", "1")
            // The log goes to stdout; both to the file, appending so neither overwrites.
            .stdout(append(log))
            .stderr(append(log))
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while status(port, "127.0.0.1").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stepgate did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, port)
}

/// Waits up to 30 s for the log to contain `needle` `times` times.
fn logged(log: &Path, needle: &str, times: usize) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn hup(child: &Child) {
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn sighup_with_a_hostile_file_keeps_the_running_configuration_and_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    let log = dir.path().join("stepgate.log");
    std::fs::write(&cfg, BASE).unwrap();
    let (mut child, port) = serve(&cfg, &log);
    // `one.test` is an app (no session: 303 to sign in), `two.test` is not (421 Misdirected
    // Request: no app for that host). Each is the intended answer, not merely two
    // different ones (a 500 for either would not do).
    let served = status(port, "one.test").expect("an answer");
    let unserved = status(port, "two.test").expect("an answer");
    assert_eq!(
        (served, unserved),
        (303, 421),
        "an app's host redirects to sign-in (303), an unknown host is misdirected (421)"
    );

    for (i, case) in hostile::CASES.iter().enumerate() {
        case.write(dir.path());
        hup(&child);
        let refused = logged(&log, "reload refused", i + 1);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(refused, "{}: no refusal logged:\n{text}", case.name);
        assert!(
            text.contains(case.says),
            "{}: not in the log:\n{text}",
            case.name
        );
        assert!(
            text.contains(&case.position(dir.path())),
            "{}: no position in the log:\n{text}",
            case.name
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}: the server died:\n{text}",
            case.name
        );
        assert_eq!(status(port, "one.test"), Some(served), "{}", case.name);
        assert_eq!(status(port, "two.test"), Some(unserved), "{}", case.name);
    }

    // The reloader is alive and a good file is still taken.
    std::fs::write(&cfg, GROWN).unwrap();
    hup(&child);
    let start = Instant::now();
    while status(port, "two.test") != Some(served) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the valid reload was not taken:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    for crash in ["panicked", "overflow", "fatal"] {
        assert!(!text.contains(crash), "{text}");
    }
    drop(child);
}
