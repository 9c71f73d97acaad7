//! `stepgate check`'s deployment review: each way a configuration that loads would still
//! break a deployment is found, positioned, and graded error or warning.

use std::path::Path;

use stepgate_config::{load, review, Finding, Severity};

/// A deployment that works: portal on https://auth.example.com behind a proxy, one app,
/// passkeys bound to example.com, a sign-in policy.
const GOOD: &str = "server:
  listen: 127.0.0.1:9091
  public_url: https://auth.example.com
sessions:
  cookie: { domain: example.com }
factors:
  webauthn: { rp_id: example.com, rp_origin: https://auth.example.com }
apps:
  - id: wiki
    hosts: [wiki.example.com]
    upstream: http://127.0.0.1:3000
policies:
  - name: sign-in
    priority: 100
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
";

fn findings_in(dir: &Path, text: &str) -> Vec<Finding> {
    let path = dir.join("stepgate.yaml");
    std::fs::write(&path, text).unwrap();
    let cfg = load(&path).unwrap_or_else(|e| panic!("must load: {e}\n{text}"));
    review(&cfg)
}

fn findings(text: &str) -> Vec<Finding> {
    findings_in(tempfile::tempdir().unwrap().path(), text)
}

/// The single finding `text` must produce.
fn one(text: &str) -> Finding {
    let f = findings(text);
    assert_eq!(f.len(), 1, "expected one finding, got {f:#?}");
    f.into_iter().next().unwrap()
}

fn assert_finding(f: &Finding, severity: Severity, line: Option<usize>, needles: &[&str]) {
    assert_eq!(f.severity, severity, "{f:?}");
    assert_eq!(f.diagnostic.line, line, "wrong line: {}", f.diagnostic);
    assert!(
        f.diagnostic.file.ends_with("stepgate.yaml"),
        "{}",
        f.diagnostic
    );
    for n in needles {
        assert!(
            f.diagnostic.message.contains(n),
            "lacks `{n}`: {}",
            f.diagnostic
        );
    }
}

#[test]
fn a_working_deployment_has_no_findings() {
    assert_eq!(findings(GOOD), vec![]);
}

#[test]
fn no_sign_in_policy_is_an_error_unless_the_default_allows() {
    let text = GOOD.replace("targets: { sign_in: true }", "targets: { apps: [wiki] }");
    let f = one(&text);
    assert_finding(
        &f,
        Severity::Error,
        Some(12),
        &["nobody could sign in", "sign_in: true"],
    );
    // A report-only or disabled sign-in policy does not let anyone in either.
    let report_only = GOOD.replace("priority: 100", "priority: 100\n    report_only: true");
    assert_eq!(one(&report_only).severity, Severity::Error);
    let allow = format!("{text}default_outcome: allow\n");
    assert_eq!(findings(&allow), vec![]);
}

#[test]
fn webauthn_left_at_localhost_on_a_real_domain_is_an_error() {
    let text = GOOD.replace(
        "factors:\n  webauthn: { rp_id: example.com, rp_origin: https://auth.example.com }\n",
        "",
    );
    let f = one(&text);
    assert_finding(
        &f,
        Severity::Error,
        None,
        &[
            "http://localhost:9091",
            "the default",
            "rp_origin: https://auth.example.com",
        ],
    );
}

#[test]
fn webauthn_origin_on_another_host_or_port_is_an_error() {
    let other = GOOD.replace(
        "rp_origin: https://auth.example.com",
        "rp_origin: https://sso.example.com",
    );
    assert_finding(
        &one(&other),
        Severity::Error,
        Some(7),
        &["sso.example.com", "is not where the portal is served"],
    );
    let port = GOOD.replace(
        "rp_origin: https://auth.example.com",
        "rp_origin: https://auth.example.com:8443",
    );
    assert_finding(&one(&port), Severity::Error, Some(7), &["scheme or port"]);
    // The portal is served on every app host too: an app's origin is a valid rp_origin.
    let app = GOOD.replace(
        "rp_origin: https://auth.example.com",
        "rp_origin: https://wiki.example.com",
    );
    assert_eq!(findings(&app), vec![]);
    // Passkeys switched off: nothing to check.
    let off = other.replace("{ rp_id:", "{ enabled: false, rp_id:");
    assert_eq!(findings(&off), vec![]);
}

#[test]
fn a_cookie_domain_that_does_not_cover_the_public_url_is_an_error() {
    let text = GOOD.replace("domain: example.com", "domain: example.org");
    assert_finding(
        &one(&text),
        Severity::Error,
        Some(5),
        &["example.org", "auth.example.com"],
    );
    let sub = GOOD.replace("domain: example.com", "domain: .auth.example.com");
    assert_eq!(findings(&sub), vec![]);
}

#[test]
fn insecure_cookies_on_https_warn_and_secure_cookies_on_http_fail() {
    let text = GOOD.replace(
        "{ domain: example.com }",
        "{ domain: example.com, secure: false }",
    );
    assert_finding(
        &one(&text),
        Severity::Warning,
        Some(5),
        &["secure: false", "https"],
    );
    let http = GOOD.replace("https://", "http://");
    assert_finding(
        &one(&http),
        Severity::Error,
        Some(5),
        &["secure cookies are the default", "plain-http"],
    );
    // localhost is a secure context for browsers: the demo's setup is fine.
    let local = "server: { listen: 127.0.0.1:8080, public_url: http://localhost:8080 }
factors: { webauthn: { rp_id: localhost, rp_origin: http://localhost:8080 } }
default_outcome: allow
";
    assert_eq!(findings(local), vec![]);
}

#[test]
fn missing_tls_files_are_errors_and_present_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "  public_url: https://auth.example.com\n",
        "  public_url: https://auth.example.com\n  tls: { cert_file: tls/cert.pem, key_file: tls/key.pem }\n",
    );
    let f = findings_in(dir.path(), &text);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_finding(
        &f[0],
        Severity::Error,
        Some(4),
        &["TLS certificate", "tls/cert.pem", "No such file"],
    );
    assert_finding(
        &f[1],
        Severity::Error,
        Some(4),
        &["TLS private key", "tls/key.pem"],
    );
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/cert.pem"), "x").unwrap();
    std::fs::create_dir(dir.path().join("tls/key.pem")).unwrap();
    let f = findings_in(dir.path(), &text);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_finding(&f[0], Severity::Error, Some(4), &["key.pem", "directory"]);
    std::fs::remove_dir(dir.path().join("tls/key.pem")).unwrap();
    std::fs::write(dir.path().join("tls/key.pem"), "x").unwrap();
    assert_eq!(findings_in(dir.path(), &text), vec![]);
}

#[test]
fn missing_geoip_and_risk_feed_files_are_errors() {
    let text = format!(
        "{GOOD}signals:\n  geoip:\n    database: geo/City.mmdb\n  ip_risk:\n    feeds:\n      - {{ path: feeds/tor.txt }}\n"
    );
    let f = findings(&text);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_finding(
        &f[0],
        Severity::Error,
        Some(19),
        &["GeoIP database", "geo/City.mmdb"],
    );
    assert_finding(
        &f[1],
        Severity::Error,
        Some(21),
        &["IP risk feed", "feeds/tor.txt"],
    );
}

#[test]
fn a_high_sensitivity_app_without_routes_warns() {
    let text = GOOD.replace(
        "    upstream: http://127.0.0.1:3000\n",
        "    upstream: http://127.0.0.1:3000\n    sensitivity: high\n",
    );
    assert_finding(
        &one(&text),
        Severity::Warning,
        Some(9),
        &["`wiki`", "sensitivity `high`", "routes"],
    );
    let routed = text.replace(
        "    sensitivity: high\n",
        "    sensitivity: high\n    routes:\n      - { path: /admin/**, tags: [sensitive] }\n",
    );
    assert_eq!(findings(&routed), vec![]);
}
