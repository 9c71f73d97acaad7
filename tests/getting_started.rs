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

/// The directories the guide writes to or reads from, put under the test's root.
const GUIDE_DIRS: &[&str] = &[
    "/etc/stepgate",
    "/var/lib/stepgate",
    "/etc/nginx",
    "/etc/traefik",
    "/etc/ssl/example.com",
];

/// The guide's absolute paths, under `root`.
fn rooted(text: &str, root: &Path) -> String {
    let r = root.display();
    GUIDE_DIRS
        .iter()
        .fold(text.to_string(), |t, d| t.replace(d, &format!("{r}{d}")))
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
            // Never outside the root, whatever the guide names.
            assert!(
                GUIDE_DIRS.iter().any(|d| file.starts_with(d)),
                "the guide writes {file}: add its directory to GUIDE_DIRS"
            );
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
    // Invitations, at the portal the configuration names (not a password on a command line).
    assert_eq!(
        outputs
            .matches("https://auth.example.com/_stepgate/invite/")
            .count(),
        2,
        "{outputs}"
    );

    // The proxy side: nginx and Traefik send to the port stepgate listens on (the browser
    // test, e2e/tests/getting-started.test.mjs, runs them).
    let cfg = stepgate_config::load(&config).unwrap();
    let nginx = std::fs::read_to_string(root.join("etc/nginx/conf.d/stepgate.conf"))
        .expect("the guide writes /etc/nginx/conf.d/stepgate.conf");
    assert!(
        nginx.contains(&format!("server {};", cfg.listen)),
        "nginx vs {}",
        cfg.listen
    );
    let traefik = std::fs::read_to_string(root.join("etc/traefik/dynamic.yml"))
        .expect("the guide writes /etc/traefik/dynamic.yml");
    assert!(
        traefik.contains(&format!("http://{}/_stepgate/auth/forward", cfg.listen)),
        "traefik vs {}",
        cfg.listen
    );
    assert!(root.join("etc/traefik/traefik.yml").is_file());

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
