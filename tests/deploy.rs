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

fn root(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A YAML file as JSON; scalars come as strings (marked-yaml keeps them untyped).
fn yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root(path)).unwrap();
    marked_yaml::from_yaml(0, &text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `stepgate check` on `file`: whether it passed, and what it printed.
fn check(file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["check", "--config"])
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_compose_file_runs_three_like_nodes_on_one_config_behind_nginx() {
    let c = yaml("deploy/compose/compose.yaml");
    let services = c["services"].as_object().unwrap();
    let nodes: Vec<&serde_json::Value> = ["stepgate-1", "stepgate-2", "stepgate-3"]
        .iter()
        .map(|n| &services[*n])
        .collect();
    for n in &nodes {
        assert_eq!(*n, nodes[0], "every node is configured alike");
    }
    let node = nodes[0];
    assert_eq!(
        node["volumes"][0], "./stepgate.yaml:/etc/stepgate/stepgate.yaml:ro",
        "one configuration, read-only"
    );
    assert_eq!(node["secrets"][0], "stepgate_key", "the key as a secret");
    assert_eq!(node["read_only"], "true");
    assert_eq!(node["cap_drop"][0], "ALL");
    let probe = node["healthcheck"]["test"].as_array().unwrap();
    assert_eq!(probe[1], "/usr/local/bin/stepgate");
    assert_eq!(probe[2], "probe");
    for dep in ["postgres", "redis"] {
        assert_eq!(node["depends_on"][dep]["condition"], "service_healthy");
    }
    assert!(
        services["redis"]["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--appendonly"),
        "Redis keeps sessions across its restarts"
    );
    // nginx balances over exactly the three nodes.
    let nginx = std::fs::read_to_string(root("deploy/compose/nginx.conf")).unwrap();
    let upstreams: Vec<&str> = nginx
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server stepgate-"))
        .collect();
    assert_eq!(upstreams.len(), 3, "{nginx}");
    // The configuration the nodes load is one `check` accepts, with both shared stores, and
    // its key file is where the compose secret is mounted.
    let (ok, out) = check(&root("deploy/compose/stepgate.yaml"));
    assert!(ok, "{out}");
    let cfg = stepgate_config::load(&root("deploy/compose/stepgate.yaml")).unwrap();
    assert!(cfg.store.postgres.is_some() && cfg.store.redis.is_some());
    assert_eq!(
        cfg.secrets.key_file.as_deref(),
        Some(Path::new("/run/secrets/stepgate_key"))
    );
}

#[test]
fn the_charts_default_configuration_is_deployable_on_shared_stores() {
    let values = yaml("deploy/helm/stepgate/values.yaml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stepgate.yaml");
    std::fs::write(&file, values["config"].as_str().unwrap()).unwrap();
    let (ok, out) = check(&file);
    assert!(ok, "{out}");
    let cfg = stepgate_config::load(&file).unwrap();
    assert!(cfg.store.postgres.is_some() && cfg.store.redis.is_some());
    let replicas: u32 = values["replicas"].as_str().unwrap().parse().unwrap();
    assert!(replicas >= 2, "several nodes by default");
    // The probes the chart declares are paths stepgate serves.
    let deployment =
        std::fs::read_to_string(root("deploy/helm/stepgate/templates/deployment.yaml")).unwrap();
    assert!(deployment.contains("path: /healthz") && deployment.contains("path: /readyz"));
}
