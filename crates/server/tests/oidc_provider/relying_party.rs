//! A relying party no one here wrote (authlib, tests/oidc/rp.py) signs in, steps up,
//! refreshes, revokes and logs out.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::*;
use crate::support;
use crate::support::JANE;

const RP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/rp.py");

/// Whether python3 has authlib, requests and pyotp; under `CI=true` it must.
fn python_has_authlib() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import authlib, requests, pyotp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but python3 has no authlib, requests and pyotp: .ci/run installs them"
        );
        support::skipped::record("python3 with authlib", "pip install authlib requests pyotp");
    }
    ok
}

#[tokio::test]
async fn authlib_signs_in_steps_up_refreshes_revokes_and_logs_out() {
    if !python_has_authlib() {
        return;
    }
    let h = provider("60s").await;
    let settings = json!({
        "issuer": h.public_url,
        "portal": "/_stepgate",
        "redirect_uri": redirect_uri(&h),
        "post_logout_uri": "http://rp.test/signed-out",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "public_client_id": PUBLIC,
        "username": JANE.username,
        "password": JANE.password,
        "totp_base32": JANE.totp_base32,
        "api": h.base,
        "api_host": format!("expenses.test:{}", h.addr.port()),
        "alg_clients": [["expense-rsa", "RS256"], ["expense-ed", "EdDSA"]],
    });
    let file = h.dir.path().join("rp.json");
    std::fs::write(&file, settings.to_string()).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg(RP)
        .arg(&file)
        .env("NO_PROXY", "*")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the RP failed after:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    for want in [
        "discovery",
        "code flow with PKCE, ID token verified via jwks_uri",
        "ID token signed with RS256 verified",
        "ID token signed with EdDSA verified",
        "userinfo",
        "acr_values=aal2 stepped up with TOTP",
        "a satisfying SSO session issues a code without a prompt",
        "essential acr aal3 unmet",
        "prompt=login re-authenticates (auth_time moves)",
        "max_age=0 re-authenticates (auth_time moves)",
        "max_age=3600 met by the session",
        "prompt=none without a session: login_required",
        "voluntary acr_values the user cannot reach",
        "refresh rotation and reuse detection",
        "revoke + introspect",
        "RFC 9470 loop through the gateway",
        "RP-initiated logout",
        "public client without PKCE refused",
    ] {
        assert!(checks.contains(&want), "missing `{want}` in:\n{stdout}");
    }
}
