//! Real nginx with `auth_request` in front of stepgate's forward-auth endpoint, configured
//! from `examples/nginx/nginx.conf` (ports and host names substituted): anonymous users
//! are sent to the portal, a signed-in user reaches the app with identity headers, a
//! sensitive route asks for a step-up, and a client-sent `Remote-User` never reaches the
//! app. `nginx_auth_request_walk` walks the script every front proxy walks
//! (`forward_auth/walk/`).
//!
//! Skipped with a note when `nginx` is not installed, except under `CI=true` or
//! `STEPGATE_REQUIRE_NGINX=1` (set by `.ci/run`, which installs nginx), where a missing
//! nginx fails the test.

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

const NGINX: ProxyBinary = ProxyBinary {
    name: "nginx",
    env_var: None,
    pypi: None,
    dirs: &[
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ],
    require_var: "STEPGATE_REQUIRE_NGINX",
    install: ".ci/run installs it (apt-get install nginx)",
};

/// `examples/nginx/nginx.conf` with the test's ports, host names and a private prefix.
fn config_from_example(dir: &Path, listen: u16, stepgate: u16, upstream: u16) -> String {
    let d = dir.display();
    let temp = format!(
        "http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n"
    );
    example(
        "nginx/nginx.conf",
        &[
            ("listen 80;", format!("listen 127.0.0.1:{listen};")),
            ("127.0.0.1:9091", format!("127.0.0.1:{stepgate}")),
            ("127.0.0.1:8000", format!("127.0.0.1:{upstream}")),
            ("auth.example.com", PORTAL_HOST.to_string()),
            ("app.example.com", APP_HOST.to_string()),
            ("http {\n", temp),
        ],
    )
}

/// Starts nginx from the example on `port`, in front of stepgate and the app.
async fn start_nginx(bin: &Path, dir: &Path, port: u16, stepgate: u16, app: u16) -> ProxyProcess {
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config_from_example(dir, port, stepgate, app)).unwrap();
    // In the foreground, one process (no privilege drop to another user when run as root),
    // the pid inside the temporary directory and the error log on stderr.
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&file)
        .arg("-e")
        .arg("stderr")
        .arg("-g")
        .arg(format!(
            "daemon off; master_process off; pid {};",
            dir.join("nginx.pid").display()
        ));
    ProxyProcess::start("nginx", cmd, dir.join("error.log"), port).await
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_stepgate() {
    let Some(bin) = NGINX.find_or_skip("the nginx auth_request test") else {
        return;
    };
    // The auth location is internal; through the portal's server block a client reaches no
    // decision endpoint.
    browse_behind(
        &["/_stepgate_auth"],
        |_| vec![("x-forwarded-host", "app.example.com".to_string())],
        async |dir, port, stepgate, app| start_nginx(&bin, dir, port, stepgate, app).await,
    )
    .await;
}

/// The walk every front proxy takes (`forward_auth/walk/`), through nginx configured from
/// the example, in front of a stepgate whose app matches paths case-insensitively.
#[tokio::test]
async fn nginx_auth_request_walk() {
    let Some(bin) = NGINX.find_or_skip("the nginx auth_request walk") else {
        return;
    };
    walk_behind(false, &[], async |dir, port, stepgate, app| {
        start_nginx(&bin, dir, port, stepgate, app).await
    })
    .await;
}
