//! The `log:` section as `stepgate serve` applies it: JSON lines to a file, text without
//! colour codes when standard output is not a terminal, and `STEPGATE_LOG` over `level`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// Runs `stepgate serve` on `cfg` until it is ready, stops it, and returns its stdout.
fn serve_once(cfg: &Path, env: &[(&str, &str)]) -> String {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stepgate"));
    cmd.args([
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env("STEPGATE_SECRET_KEY", KEY)
    .env_remove("STEPGATE_LOG")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child: Child = cmd.spawn().unwrap();
    let start = Instant::now();
    while !ready(port) {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("not ready: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn config(dir: &Path, log: &str) -> std::path::PathBuf {
    let cfg = dir.join("stepgate.yaml");
    std::fs::write(
        &cfg,
        format!("sessions: {{ cookie: {{ secure: false }} }}\nserver: {{ workers: 1 }}\n{log}"),
    )
    .unwrap();
    cfg
}

#[test]
fn json_lines_go_to_the_configured_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "log: { format: json, file: logs.jsonl }\n");
    std::fs::write(dir.path().join("logs.jsonl"), "").unwrap();
    let stdout = serve_once(&cfg, &[]);
    assert!(
        !stdout.contains("stepgate listening"),
        "logged to stdout too: {stdout}"
    );
    let text = std::fs::read_to_string(dir.path().join("logs.jsonl")).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in the file: {text:?}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "INFO" && v["fields"]["message"] == "stepgate listening"),
        "{text}"
    );
}

#[test]
fn text_to_a_pipe_has_no_colour_codes_and_stepgate_log_overrides_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "log: { level: info }\n");
    let out = serve_once(&cfg, &[]);
    assert!(
        out.contains("INFO") && out.contains("stepgate listening"),
        "{out}"
    );
    assert!(!out.contains('\u{1b}'), "colour codes on a pipe: {out:?}");
    // The override: warnings only, so the start-up line is gone.
    let out = serve_once(&cfg, &[("STEPGATE_LOG", "warn")]);
    assert!(!out.contains("stepgate listening"), "{out}");
    // And the other way: the configuration says error, the override says info.
    let cfg = config(dir.path(), "log: { level: error }\n");
    assert!(!serve_once(&cfg, &[]).contains("stepgate listening"));
    assert!(serve_once(&cfg, &[("STEPGATE_LOG", "info")]).contains("stepgate listening"));
}

#[test]
fn a_bad_level_is_a_positioned_check_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "log:\n  level: loud\n  format: xml\n");
    let out = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stepgate.yaml:5:11: at `log.format`: unknown variant `xml`"),
        "{err}"
    );
    let cfg = config(dir.path(), "log:\n  level: loud\n");
    let out = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stepgate.yaml:4:10: log.level `loud` is not a level"),
        "{err}"
    );
}

#[test]
fn every_json_line_of_a_request_carries_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "sessions: { cookie: { secure: false } }\nserver: { workers: 1, trusted_proxies: [127.0.0.1/32] }\nlog: { format: json, file: logs.jsonl }\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("STEPGATE_SECRET_KEY", KEY)
        .env_remove("STEPGATE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready(port) {
        assert!(start.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A forward-auth check that names no original request: refused, and logged (info).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /_stepgate/auth/forward HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The line is written when the request is served; give the writer a moment to flush.
    let path = dir.path().join("logs.jsonl");
    let mut refused = None;
    let start = Instant::now();
    while refused.is_none() && start.elapsed() < Duration::from_secs(10) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        refused = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("forward-auth: refused"))
            });
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = refused.expect("the refusal was logged");
    let id = line["span"]["request_id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 24, "{line}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
}

/// The JSON log of a failed sign-in and of a refused request: each failure line names the
/// client's address (the one behind the trusted proxy, not the proxy's) and, for the
/// sign-in, the user; the password typed, the session and CSRF cookies appear nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_lines_name_the_user_and_client_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "sessions: { cookie: { secure: false } }\n\
         server: { workers: 1, trusted_proxies: [127.0.0.1/32] }\n\
         log: { format: json, file: logs.jsonl }\n\
         apps: [ { id: wiki, hosts: [wiki.test], upstream: \"http://127.0.0.1:9\" } ]\n\
         default_outcome: deny\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("STEPGATE_SECRET_KEY", KEY)
        .env_remove("STEPGATE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready(port) {
        assert!(start.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    const TYPED: &str = "correct-horse-typed-9f3";
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = c
        .get(format!("{base}/_stepgate/login"))
        .header("x-forwarded-for", "198.51.100.23")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hidden = |name: &str| {
        let at = page
            .find(&format!("name=\"{name}\" value=\""))
            .unwrap_or_else(|| panic!("no {name} in {page}"));
        let rest = &page[at + name.len() + 15..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    let (csrf, t) = (hidden("csrf"), hidden("t"));
    let r = c
        .post(format!("{base}/_stepgate/login"))
        .header("x-forwarded-for", "198.51.100.23")
        .form(&[
            ("csrf", csrf.as_str()),
            ("t", t.as_str()),
            ("username", "mallory"),
            ("password", TYPED),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a wrong password");
    // A request refused (no app for its host), from a client behind the proxy.
    let r = c
        .get(format!("{base}/_stepgate/auth/forward"))
        .header("x-forwarded-for", "203.0.113.77")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "nowhere.test")
        .header("x-forwarded-uri", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let path = dir.path().join("logs.jsonl");
    let find = |text: &str, prefix: &str| -> Option<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(prefix))
            })
    };
    let mut text = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if find(&text, "authentication failure").is_some()
            && find(&text, "forward-auth: no application").is_some()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let failed = find(&text, "authentication failure").expect("the failed sign-in is logged");
    assert_eq!(failed["fields"]["user"], "mallory", "{failed}");
    assert_eq!(failed["fields"]["client"], "198.51.100.23", "{failed}");
    assert_eq!(failed["span"]["client"], "198.51.100.23", "{failed}");
    let refused =
        find(&text, "forward-auth: no application").expect("the refused request is logged");
    assert_eq!(refused["span"]["client"], "203.0.113.77", "{refused}");
    assert!(
        !text.contains(TYPED),
        "the typed password is in the log:\n{text}"
    );
    assert!(
        !text.contains(&csrf),
        "the CSRF token is in the log:\n{text}"
    );
    assert!(csrf.len() >= 16, "a CSRF token: {csrf:?}");
}

/// What a stand-in collector was sent: each request's first line and body.
type Kept = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A stand-in OTLP/HTTP collector on loopback: its port, and what it was sent.
fn recording_collector() -> (u16, Kept) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = kept.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(stream);
                while let Some((line, body)) = read_request(&mut r) {
                    keep.lock().unwrap().push((line, body));
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if r.get_mut().write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, kept)
}

/// One HTTP/1.1 request with a `content-length` body: its first line and body.
fn read_request(r: &mut std::io::BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    use std::io::BufRead as _;
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((first.trim().to_string(), body))
}

/// `log.otlp` as `stepgate serve` applies it: a request's span reaches the collector (as
/// OTLP protobuf, naming the request id the client was given) by the time a SIGTERM'd
/// server has exited, its last spans sent at shutdown.
#[test]
fn serve_exports_request_spans_to_the_otlp_collector_and_flushes_them_at_exit() {
    let (collector, kept) = recording_collector();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!("log: {{ otlp: {{ endpoint: \"http://127.0.0.1:{collector}\" }} }}\n"),
    );
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("STEPGATE_SECRET_KEY", KEY)
        .env_remove("STEPGATE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready(port) {
        assert!(start.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /_stepgate/auth/forward HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id: {answer}"))
        .trim()
        .to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    let kept = kept.lock().unwrap();
    assert!(
        kept.iter()
            .all(|(line, _)| line == "POST /v1/traces HTTP/1.1"),
        "{:?}",
        kept.iter().map(|(l, _)| l).collect::<Vec<_>>()
    );
    let sent = kept
        .iter()
        .any(|(_, body)| body.windows(id.len()).any(|w| w == id.as_bytes()));
    assert!(sent, "no exported span names request {id}");
}
