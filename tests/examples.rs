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
