//! Every example under examples/ works unchanged: each proxy configuration has a complete
//! stepgate configuration beside it that `stepgate check` accepts with nothing to report,
//! and the two agree on stepgate's port, the host names and the trusted proxies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Each example: its folder, its proxy configuration files, and the ports the proxy uses
/// for itself and for the app (every other port it names must be stepgate's).
const EXAMPLES: &[(&str, &[&str], &[u16])] = &[
    ("nginx", &["nginx.conf"], &[80, 8000]),
    ("caddy", &["Caddyfile"], &[8000]),
    ("traefik", &["traefik.yml", "dynamic.yml"], &[80, 443, 8000]),
    ("envoy", &["envoy.yaml"], &[8080, 8000]),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ports a proxy configuration names: `host:PORT`, `:PORT` and Envoy's `port_value: PORT`.
fn ports(text: &str) -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices(':') {
        let digits: String = text[i + 1..]
            .trim_start_matches(' ')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let after = i + 1 + text[i + 1..].len() - text[i + 1..].trim_start_matches(' ').len();
        let spaced = after > i + 1;
        // `key: 8000` is a port only for Envoy's `port_value`; `a:8000` always.
        if digits.len() >= 2
            && (!spaced || text[..i].ends_with("port_value"))
            && !bytes
                .get(after + digits.len())
                .is_some_and(|b| b.is_ascii_alphanumeric())
        {
            if let Ok(p) = digits.parse() {
                out.insert(p);
            }
        }
    }
    out
}

#[test]
fn every_proxy_example_has_a_stepgate_config_that_checks_clean() {
    for (dir, _, _) in EXAMPLES {
        let cfg = root().join("examples").join(dir).join("stepgate.yaml");
        assert!(cfg.is_file(), "examples/{dir} has no stepgate.yaml");
        for flag in ["--config", "-c"] {
            let out = Command::new(env!("CARGO_BIN_EXE_stepgate"))
                .args(["check", flag, cfg.to_str().unwrap()])
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "examples/{dir}: {text}");
            assert!(
                text.contains(": ok (") && !text.contains("warning"),
                "examples/{dir}: {text}"
            );
        }
    }
}

#[test]
fn each_stepgate_config_matches_its_proxy_config() {
    for (dir, files, own_ports) in EXAMPLES {
        let cfg = stepgate_config::load(&root().join("examples").join(dir).join("stepgate.yaml"))
            .unwrap_or_else(|e| panic!("examples/{dir}: {e}"));
        let proxy: String = files
            .iter()
            .map(|f| std::fs::read_to_string(root().join("examples").join(dir).join(f)).unwrap())
            .collect();
        // The proxy sends stepgate's traffic to the port stepgate listens on, and nowhere else.
        let to_stepgate: BTreeSet<u16> = ports(&proxy)
            .into_iter()
            .filter(|p| !own_ports.contains(p))
            .collect();
        assert_eq!(
            to_stepgate,
            BTreeSet::from([cfg.listen.port()]),
            "examples/{dir}: the proxy's ports for stepgate vs `server.listen` {}",
            cfg.listen
        );
        // The portal's and the apps' host names are the ones the proxy routes.
        let public = cfg.server.public_url.as_ref().expect("public_url is set");
        let public_host = public.trim_start_matches("https://").trim_end_matches('/');
        assert!(
            proxy.contains(public_host),
            "examples/{dir}: {public_host} not routed"
        );
        for app in &cfg.apps {
            for h in &app.hosts {
                assert!(
                    proxy.contains(h.as_str()),
                    "examples/{dir}: {} not routed",
                    h.as_str()
                );
            }
        }
        // The proxy's address is trusted for X-Forwarded-For: on this machine, loopback.
        assert!(
            !cfg.trusted_proxies.is_empty(),
            "examples/{dir}: no trusted_proxies"
        );
        if cfg.listen.ip().is_loopback() {
            let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
            assert!(
                cfg.trusted_proxies.iter().any(|n| n.contains(&loopback)),
                "examples/{dir}: the proxy connects from 127.0.0.1, which is not trusted"
            );
        }
    }
}

#[test]
fn the_port_finder_sees_each_spelling() {
    assert_eq!(
        ports("server 127.0.0.1:9091;\nport_value: 8000\nhttp://stepgate:9091/x\nlisten :80\nlevel: 20\n"),
        BTreeSet::from([80, 8000, 9091])
    );
}

/// Sends `request` (raw HTTP/1.1) to 127.0.0.1:`port` and returns the answer's head.
fn ask(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split("\r\n\r\n").next().unwrap_or_default().to_string())
}

/// Each example's stepgate.yaml served as written (only its paths moved to a temporary
/// folder, the port made free, and Traefik's container network replaced by loopback):
/// the decision endpoint its proxy calls sends an anonymous browser to the sign-in on the
/// portal's public URL, as the proxy configuration expects.
#[test]
fn each_example_config_serves_the_endpoint_its_proxy_calls() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    for (dir, _, _) in EXAMPLES {
        let tmp = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(root().join("examples").join(dir).join("stepgate.yaml"))
            .unwrap()
            .replace(
                "/var/lib/stepgate",
                &tmp.path().join("data").display().to_string(),
            )
            .replace(
                "/etc/stepgate/secret.key",
                &tmp.path().join("secret.key").display().to_string(),
            )
            .replace("[172.16.0.0/12]", "[127.0.0.1]");
        std::fs::write(tmp.path().join("secret.key"), key).unwrap();
        let cfg = tmp.path().join("stepgate.yaml");
        std::fs::write(&cfg, text).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args([
                "serve",
                "-c",
                cfg.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !ask(
            port,
            "GET /readyz HTTP/1.1\r\nHost: auth.example.com\r\nConnection: close\r\n\r\n",
        )
        .is_some_and(|h| h.starts_with("HTTP/1.1 200"))
        {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "examples/{dir}: not ready: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let browser = "Accept: text/html\r\nConnection: close\r\n\r\n";
        let (request, status, location) = match *dir {
            "nginx" => (
                format!("GET /_stepgate/auth/nginx HTTP/1.1\r\nHost: auth.example.com\r\nX-Original-URL: https://app.example.com/reports\r\nX-Original-Method: GET\r\nX-Forwarded-For: 198.51.100.7\r\n{browser}"),
                "HTTP/1.1 401",
                "x-stepgate-redirect: https://auth.example.com/_stepgate/login",
            ),
            "envoy" => (
                format!("GET /_stepgate/auth/envoy/reports HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 198.51.100.7\r\n{browser}"),
                "HTTP/1.1 302",
                "location: https://auth.example.com/_stepgate/login",
            ),
            _ => (
                format!("GET /_stepgate/auth/forward HTTP/1.1\r\nHost: auth.example.com\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.example.com\r\nX-Forwarded-Uri: /reports\r\nX-Forwarded-For: 198.51.100.7\r\n{browser}"),
                "HTTP/1.1 302",
                "location: https://auth.example.com/_stepgate/login",
            ),
        };
        let head = ask(port, &request).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            head.starts_with(status) && head.to_ascii_lowercase().contains(location),
            "examples/{dir}: expected {status} with `{location}`, got:\n{head}"
        );
    }
}
