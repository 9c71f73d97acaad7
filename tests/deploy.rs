//! deploy/stepgate.service: the unit systemd accepts, with its own user, a state directory
//! that is the examples' `server.data_dir`, the hardening options, and a `check` before
//! `serve` on the configuration path docs/install.md names.

use std::path::Path;
use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/stepgate.service"))
        .unwrap()
}

/// The unit's `Key=value` settings (comments skipped), in order.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn value<'a>(s: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    s.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn the_unit_runs_check_then_serve_as_its_own_user_with_hardening() {
    let s = settings(&unit());
    assert_eq!(value(&s, "User"), ["stepgate"]);
    assert_eq!(value(&s, "StateDirectory"), ["stepgate"]);
    assert_eq!(
        value(&s, "ExecStartPre"),
        ["/usr/local/bin/stepgate check --config /etc/stepgate/stepgate.yaml"]
    );
    assert_eq!(
        value(&s, "ExecStart"),
        ["/usr/local/bin/stepgate serve --config /etc/stepgate/stepgate.yaml"]
    );
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
    ] {
        assert_eq!(value(&s, k), [v], "{k}");
    }
}

#[test]
fn the_examples_keep_their_state_where_the_unit_lets_them_write() {
    // ProtectSystem=strict leaves only the StateDirectory writable.
    for dir in ["nginx", "caddy", "traefik", "envoy"] {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{dir}/stepgate.yaml"));
        let cfg = stepgate_config::load(&path).unwrap();
        assert_eq!(cfg.server.data_dir, "/var/lib/stepgate", "examples/{dir}");
        assert_eq!(
            cfg.secrets.key_file.as_deref(),
            Some(Path::new("/etc/stepgate/secret.key")),
            "examples/{dir}"
        );
        assert!(
            cfg.log.file.is_none(),
            "examples/{dir}: journald keeps stdout"
        );
    }
}

#[test]
fn systemd_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stepgate.service");
    std::fs::write(
        &file,
        unit().replace("/usr/local/bin/stepgate", env!("CARGO_BIN_EXE_stepgate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("stepgate.service"),
        "{text}"
    );
}
