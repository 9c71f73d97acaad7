//! Real Caddy with `forward_auth` in front of stepgate's forward-auth endpoint, configured
//! from `examples/caddy/Caddyfile` (ports and host names substituted, plain HTTP on
//! loopback, no admin endpoint): anonymous users are sent to the portal, APIs get `401`, a
//! signed-in user reaches the app with identity headers, a sensitive route asks for a
//! step-up, and a client-sent `Remote-User` never reaches the app.
//! `caddy_forward_auth_walk` walks the script every front proxy walks
//! (`forward_auth/walk/`).
//!
//! Skipped with a note when `caddy` is not installed, except under `CI=true` or
//! `STEPGATE_REQUIRE_CADDY=1` (set by `.ci/run`, which installs caddy), where a missing
//! caddy fails the test.

#[path = "forward_auth/browse.rs"]
mod browse;
#[path = "forward_auth/harness.rs"]
mod harness;
mod support;
#[path = "forward_auth/walk/mod.rs"]
mod walk;

use std::path::Path;
use std::process::Command;

use browse::browse_behind;
use harness::*;
use walk::walk_behind;

/// What Caddy rewrites before asking stepgate, and sends on rewritten: Go re-encodes raw
/// bytes outside ASCII and backslashes in the path.
const REWRITES: walk::Rewrites = &[
    (b"/admin\xc3\xa9", "/admin%C3%A9"),
    (b"/x\\..\\admin", "/x%5C..%5Cadmin"),
];

const CADDY: ProxyBinary = ProxyBinary {
    name: "caddy",
    env_var: None,
    pypi: None,
    dirs: &["/usr/bin/caddy", "/usr/local/bin/caddy"],
    require_var: "STEPGATE_REQUIRE_CADDY",
    install: ".ci/run installs it (apt-get install caddy)",
};

/// `examples/caddy/Caddyfile` with the test's ports and host names, plain HTTP on loopback
/// and no admin endpoint.
fn config_from_example(listen: u16, stepgate: u16, upstream: u16) -> String {
    // An explicit http:// scheme and port: a bare host name would mean HTTPS on 443.
    let site = |host: &str| format!("http://{host}:{listen} {{\n\tbind 127.0.0.1\n");
    let text = example(
        "caddy/Caddyfile",
        &[
            ("auth.example.com {\n", site(PORTAL_HOST)),
            ("app.example.com {\n", site(APP_HOST)),
            ("127.0.0.1:9091", format!("127.0.0.1:{stepgate}")),
            ("127.0.0.1:8000", format!("127.0.0.1:{upstream}")),
        ],
    );
    assert!(
        !text.contains("example.com {"),
        "examples/caddy/Caddyfile has a site this test does not know about: update this test"
    );
    // Global options come first in a Caddyfile (comments may precede them); the example
    // has none of its own.
    assert!(
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            != Some("{"),
        "examples/caddy/Caddyfile now has a global options block: merge into it in this test"
    );
    format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{text}")
}

/// Starts Caddy from the example on `port`, in front of stepgate and the app.
async fn start_caddy(bin: &Path, dir: &Path, port: u16, stepgate: u16, app: u16) -> ProxyProcess {
    let file = dir.join("Caddyfile");
    std::fs::write(&file, config_from_example(port, stepgate, app)).unwrap();
    // As the current user, with its data (certificates, autosave) and config dirs inside
    // the temporary directory; it logs to stderr.
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&file)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .current_dir(dir);
    ProxyProcess::start("caddy", cmd, dir.join("caddy.log"), port).await
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_stepgate() {
    let Some(bin) = CADDY.find_or_skip("the caddy forward_auth test") else {
        return;
    };
    // Through the portal site, a client cannot reach the forward-auth endpoint at all (and
    // were it let through, Caddy would replace X-Forwarded-Host with the portal's own host,
    // which is no app).
    browse_behind(
        &[],
        |port| {
            vec![
                ("x-forwarded-host", format!("{APP_HOST}:{port}")),
                ("x-forwarded-uri", "/hello".to_string()),
            ]
        },
        async |dir, port, stepgate, app| start_caddy(&bin, dir, port, stepgate, app).await,
    )
    .await;
}

/// The walk every front proxy takes (`forward_auth/walk/`), through caddy configured from
/// the example, in front of a stepgate whose app matches paths case-insensitively.
#[tokio::test]
async fn caddy_forward_auth_walk() {
    let Some(bin) = CADDY.find_or_skip("the caddy forward_auth walk") else {
        return;
    };
    walk_behind(false, REWRITES, async |dir, port, stepgate, app| {
        start_caddy(&bin, dir, port, stepgate, app).await
    })
    .await;
}
