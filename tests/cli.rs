//! The `stepgate` binary's policy commands, run as an admin would run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stepgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run stepgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn check_accepts_the_demo() {
    let o = stepgate(&["check", "examples/demo.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ok"), "{}", text(&o));
}

#[test]
fn check_warns_when_email_codes_are_counted_as_mfa() {
    let dir = tempfile::tempdir().unwrap();
    // A deployable configuration (passkeys bound to the portal's origin, a sign-in policy):
    // `check` has nothing else to say about it.
    let body = "server:\n  public_url: http://localhost:9091\npolicies:\n  - { name: a, priority: 1, targets: { sign_in: true }, outcome: allow }\n";
    let plain = write(dir.path(), "plain.yaml", body);
    let o = stepgate(&["check", plain.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    let opted = write(
        dir.path(),
        "opted.yaml",
        &format!("assurance:\n  count_email_otp_as_mfa: true\n{body}"),
    );
    let o = stepgate(&["check", opted.to_str().unwrap()]);
    assert!(o.status.success(), "a warning, not an error: {}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("warning: assurance.count_email_otp_as_mfa: e-mail codes count toward AAL2"),
        "{out}"
    );
}

#[test]
fn check_warns_when_an_identity_provider_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of loopback.
    let body = "server:\n  public_url: http://localhost:9091\npolicies:\n  - { name: a, priority: 1, targets: { sign_in: true }, outcome: allow }\nidentity_providers:\n  - id: corp\n    issuer: http://127.0.0.1:1\n    client_id: stepgate\n    client_secret: { env: STEPGATE_TEST_NO_SUCH_VARIABLE }\n    timeout: 2s\n";
    let file = write(dir.path(), "idp.yaml", body);
    let o = stepgate(&["check", file.to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "a warning, not an error: {out}");
    assert!(
        out.contains("warning: identity provider `corp` is unavailable: discovery at http://127.0.0.1:1/.well-known/openid-configuration"),
        "{out}"
    );
    assert!(out.contains("sign-ins through it will be refused"), "{out}");
    assert!(out.contains("STEPGATE_TEST_NO_SUCH_VARIABLE"), "{out}");
    assert!(out.contains("2 warning(s)"), "{out}");
}

#[test]
fn check_prints_every_error_with_its_position_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.yaml",
        "networks:
  corporate: [10.0.0.0/33]
policies:
  - { name: a, priority: 1, outcome: allow }
  - { name: b, priority: 1, conditions: [ { time: { timezone: Nowhere/City } } ], outcome: allow }
",
    );
    let o = stepgate(&["check", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    let file = cfg.display().to_string();
    assert!(
        out.contains(&format!("{file}:2:15: bad CIDR `10.0.0.0/33`")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:5:26: duplicate priority 1")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{file}:5:63: bad time zone `Nowhere/City`")),
        "{out}"
    );
    assert!(out.contains("3 error(s)"), "{out}");
}

#[test]
fn demo_cases_pass() {
    let o = stepgate(&[
        "test",
        "--config",
        "examples/demo.yaml",
        "examples/demo.cases.yaml",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // Every case in the file ran and passed: the count is the file's, not just any number
    // (" passed, 0 failed" alone would also accept "0 passed, 0 failed").
    let file = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.cases.yaml"),
    )
    .unwrap();
    let cases = file.lines().filter(|l| l.starts_with("  - name:")).count();
    assert!(cases >= 20, "the demo has its cases: {cases}");
    let want = format!("{cases} passed, 0 failed");
    assert!(
        out.lines().any(|l| l == want),
        "expected `{want}` in:\n{out}"
    );
}

#[test]
fn a_wrong_expectation_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write(
        dir.path(),
        "cases.yaml",
        "cases:
  - name: should be allowed but is not
    context: { user: { username: x }, request: { app: wiki }, network: { ip: 203.0.113.1 } }
    expect: { outcome: allow }
  - name: correct expectation
    context: { user: { username: x }, request: { app: wiki }, network: { ip: 203.0.113.1 } }
    expect: { outcome: step_up, policy: unknown-device-low-impact }
",
    );
    let o = stepgate(&[
        "test",
        "--config",
        "examples/demo.yaml",
        cases.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "FAIL  should be allowed but is not (line 2): outcome step_up (expected allow)"
        ),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "1 passed, 1 failed"), "{out}");
}

#[test]
fn what_if_json_has_the_documented_shape() {
    let o = stepgate(&[
        "what-if",
        "--config",
        "examples/demo.yaml",
        "--context",
        "examples/contexts/jane-aws-noncompliant.json",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "deny");
    assert_eq!(v["policy"], "managed-noncompliant-deny");
    assert!(v["requirement"].is_null());
    let checks: Vec<&str> = v["remediation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["disk_encryption", "os_version"]);
    let trace = v["trace"].as_array().unwrap();
    let last = trace.last().unwrap();
    assert_eq!(last["decided"], true);
    assert!(last["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["seen"] == "false" && c["held"] == true));
}

#[test]
fn what_if_text_names_the_decision_and_the_failing_checks() {
    let o = stepgate(&[
        "what-if",
        "--config",
        "examples/demo.yaml",
        "--context",
        "examples/contexts/jane-aws-noncompliant.json",
    ]);
    let out = text(&o);
    assert!(
        out.starts_with("decision: deny by policy `managed-noncompliant-deny`"),
        "{out}"
    );
    assert!(out.contains("Disk encryption is off"), "{out}");
    assert!(out.contains("MATCHED — decided"), "{out}");
}

#[test]
fn what_if_reports_a_bad_context_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = write(
        dir.path(),
        "ctx.json",
        "{\n  \"device\": { \"state\": \"owned\" }\n}\n",
    );
    let o = stepgate(&[
        "what-if",
        "--config",
        "examples/demo.yaml",
        "--context",
        ctx.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(
        out.contains("ctx.json:2:") && out.contains("unknown variant `owned`"),
        "{out}"
    );
}

#[path = "support/hostile.rs"]
mod hostile;

/// Runs `stepgate check` on `cfg`, killing it (and failing) if it has not finished in 60 s:
/// a blocking read of a FIFO or an endless read of a device would hang here.
fn check_within_a_minute(cfg: &Path) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["check", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run stepgate");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("`stepgate check {}` hung", cfg.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code(), out)
}

#[test]
fn check_refuses_each_hostile_file_with_a_positioned_message_and_no_crash() {
    for case in hostile::CASES {
        let dir = tempfile::tempdir().unwrap();
        let cfg = case.write(dir.path());
        let (code, out) = check_within_a_minute(&cfg);
        // Exit 1 is a refusal; a panic exits 101 and a stack overflow or abort dies by a
        // signal (no code).
        assert_eq!(code, Some(1), "{}: {out}", case.name);
        let line = case.position(dir.path());
        assert!(
            out.lines()
                .any(|l| l.starts_with(&line) && l.contains(case.says)),
            "{}: expected a line `{line}…{}…`, got:\n{out}",
            case.name,
            case.says
        );
        assert!(out.ends_with("1 error(s)\n"), "{}: {out}", case.name);
        for crash in ["panicked", "overflow", "fatal", "RUST_BACKTRACE"] {
            assert!(!out.contains(crash), "{}: {out}", case.name);
        }
    }
}

#[test]
fn check_grades_deployment_findings_as_errors_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let body = "server: { listen: 127.0.0.1:8080, public_url: http://localhost:8080 }
sessions: { cookie: { secure: false } }
factors: { webauthn: { rp_id: localhost, rp_origin: http://localhost:8080 } }
apps:
  - { id: vault, hosts: [localhost], sensitivity: high }
policies:
  - { name: sign-in, priority: 1, targets: { sign_in: true }, outcome: allow }
";
    let warned = write(dir.path(), "warned.yaml", body);
    let o = stepgate(&["check", "-c", warned.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("warned.yaml:5:11: warning: app `vault` has sensitivity `high`")
            && t.contains("ok (")
            && t.contains("1 warning(s)"),
        "{t}"
    );
    let failed = write(
        dir.path(),
        "failed.yaml",
        &body.replace("targets: { sign_in: true }", "targets: { apps: [vault] }"),
    );
    let o = stepgate(&["check", "--config", failed.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("failed.yaml:6:1: error: no enabled policy targets the sign-in")
            && t.contains("1 error(s), 1 warning(s)")
            && !t.contains(": ok"),
        "{t}"
    );
    // The positional form and the flag are one argument, not two.
    let o = stepgate(&[
        "check",
        "-c",
        warned.to_str().unwrap(),
        failed.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn oidc_client_add_prints_a_loadable_entry_and_the_secret_once() {
    let o = stepgate(&[
        "oidc",
        "client",
        "add",
        "--id",
        "grafana-web",
        "--app",
        "grafana",
        "--redirect-uri",
        "https://grafana.example.com/login/generic_oauth",
        "--post-logout-uri",
        "https://grafana.example.com/login",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = String::from_utf8_lossy(&o.stdout).to_string();
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let secret = stderr.lines().nth(1).unwrap().trim().to_string();
    assert!(secret.len() >= 40, "{stderr}");
    assert!(
        !yaml.contains(&secret),
        "the secret is never in the YAML:\n{yaml}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!("server:\n  public_url: http://localhost:9091\napps:\n  - {{ id: grafana, hosts: [grafana.example.com] }}\npolicies:\n  - {{ name: a, priority: 1, targets: {{ sign_in: true }}, outcome: allow }}\n{yaml}"),
    );
    let o = stepgate(&["check", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}\n{yaml}", text(&o));
    let loaded = stepgate_config::load(&cfg).unwrap();
    let hash = loaded
        .oidc
        .client("grafana-web")
        .unwrap()
        .secret_hash
        .as_ref()
        .unwrap();
    assert!(stepgate_authn::password::verify_secret(
        hash,
        secret.as_bytes()
    ));
    assert!(!stepgate_authn::password::verify_secret(hash, b"another"));
    let o = stepgate(&["oidc", "client", "list", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("grafana-web\tconfidential\tapp=grafana"),
        "{}",
        text(&o)
    );
    // A new secret for it: another secret, another hash.
    let o = stepgate(&[
        "oidc",
        "client",
        "rotate-secret",
        "--config",
        cfg.to_str().unwrap(),
        "--id",
        "grafana-web",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let new_hash = String::from_utf8_lossy(&o.stdout)
        .trim()
        .strip_prefix("secret_hash: ")
        .unwrap()
        .trim_matches('"')
        .to_string();
    let new_secret = String::from_utf8_lossy(&o.stderr)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(new_secret, secret);
    assert!(stepgate_authn::password::verify_secret(
        &new_hash,
        new_secret.as_bytes()
    ));
    let o = stepgate(&[
        "oidc",
        "client",
        "rotate-secret",
        "--config",
        cfg.to_str().unwrap(),
        "--id",
        "nobody",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no OIDC client `nobody`"), "{}", text(&o));
}
