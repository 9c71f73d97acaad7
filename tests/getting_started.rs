//! docs/getting-started.md, followed: every file it shows with a path is written (under a
//! temporary root standing for `/`), every command block marked `run` is run in order with
//! this build's `stepgate`, the result is served, and the proxy it names matches.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GUIDE: &str = include_str!("../docs/getting-started.md");

/// A fenced block: its info string and its text.
fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in md.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The guide's absolute paths, under `root`.
fn rooted(text: &str, root: &Path) -> String {
    let r = root.display();
    text.replace("/etc/stepgate", &format!("{r}/etc/stepgate"))
        .replace("/var/lib/stepgate", &format!("{r}/var/lib/stepgate"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, host: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn the_getting_started_guide_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_stepgate"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::fs::create_dir_all(root.join("etc/stepgate")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/stepgate")).unwrap();
    let mut config = None;
    let mut outputs = String::new();
    let mut ran = 0;
    for (info, text) in blocks(GUIDE) {
        if let Some(file) = info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("file="))
        {
            let target = PathBuf::from(rooted(file, root));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, rooted(&text, root)).unwrap();
            if file.ends_with("stepgate.yaml") {
                config = Some(target);
            }
        } else if info == "sh run" {
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &rooted(&text, root)])
                .env("PATH", &path)
                .env("ALICE_PASSWORD", "copper kettle morning drizzle")
                .env("BOB_PASSWORD", "violet harbour seven lanterns")
                .env_remove("STEPGATE_SECRET_KEY")
                .env_remove("STEPGATE_LOG")
                .output()
                .unwrap();
            let text_out = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "the guide's block failed:\n{text}\n---\n{text_out}"
            );
            outputs.push_str(&text_out);
            ran += 1;
        }
    }
    assert!(
        ran >= 4,
        "the guide's `sh run` blocks were not found ({ran})"
    );
    let config = config.expect("the guide writes /etc/stepgate/stepgate.yaml");
    // What the guide says the commands print.
    assert!(outputs.contains("stepgate.yaml: ok ("), "{outputs}");
    assert!(!outputs.contains("warning"), "{outputs}");
    assert!(outputs.contains("admin-area-needs-a-passkey"), "{outputs}");
    assert!(
        outputs.contains("created user alice") && outputs.contains("created user bob"),
        "{outputs}"
    );
    assert!(outputs.contains("otpauth://totp/"), "{outputs}");

    // The proxy side: the nginx example the guide builds on sends to the guide's port.
    let cfg = stepgate_config::load(&config).unwrap();
    let nginx = include_str!("../examples/nginx/nginx.conf");
    assert!(
        nginx.contains(&format!("server {};", cfg.listen)),
        "nginx.conf vs {}",
        cfg.listen
    );
    assert_eq!(
        nginx.matches("listen 80;").count(),
        2,
        "the guide replaces both `listen 80;`"
    );

    // Serve it (on a free port instead of 9091): the portal answers for its host.
    let port = free_port();
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut login = None;
    while start.elapsed() < Duration::from_secs(30) {
        if get(port, "auth.example.com", "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            login = get(port, "auth.example.com", "/_stepgate/login");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let login =
        login.unwrap_or_else(|| panic!("not ready: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    assert!(login.contains("password"), "{login}");
}
