//! Interop: pyotp (an independent implementation) generates codes for seeds stepgate
//! enrolled; stepgate accepts each once and refuses the replay.

mod common;

use std::process::Command;

use stepgate_authn::config::{TotpAlgorithm, TotpConfig};
use stepgate_authn::totp::{self, TotpData, TotpReject};

/// Asks pyotp for the code at `unix_time`, parsing the enrolment URI as an app would.
fn pyotp_code(uri: &str, unix_time: u64) -> String {
    let script =
        "import sys, pyotp; t = pyotp.parse_uri(sys.argv[1]); print(t.at(int(sys.argv[2])))";
    let out = Command::new("python3")
        .args(["-c", script, uri, &unix_time.to_string()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "pyotp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn pyotp_codes_are_accepted_once() {
    if !common::python_has(&["pyotp"]) {
        return;
    }
    for (algorithm, digits) in [
        (TotpAlgorithm::Sha1, 6),
        (TotpAlgorithm::Sha256, 8),
        (TotpAlgorithm::Sha512, 7),
    ] {
        let cfg = TotpConfig {
            algorithm,
            digits,
            issuer: "stepgate CI".into(),
            ..TotpConfig::default()
        };
        let e = totp::enrol(&cfg, "jane@example.com").unwrap();
        let mut data: TotpData = serde_json::from_value(e.material.data.clone()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();

        let code = pyotp_code(&e.uri, now);
        assert_eq!(code.len(), digits, "{algorithm:?}");
        let seed = e.material.secret.as_deref().unwrap();
        assert_eq!(
            totp::verify(&mut data, seed, cfg.skew, &code, now),
            Ok(now / 30),
            "{algorithm:?}"
        );
        assert_eq!(
            totp::verify(&mut data, seed, cfg.skew, &code, now),
            Err(TotpReject::Replayed),
            "replayed {algorithm:?} code must be refused"
        );

        // A code from pyotp one step ahead (clock drift) is accepted once too.
        let ahead = pyotp_code(&e.uri, now + 30);
        assert_eq!(
            totp::verify(&mut data, seed, cfg.skew, &ahead, now),
            Ok(now / 30 + 1)
        );
        assert_eq!(
            totp::verify(&mut data, seed, cfg.skew, &ahead, now),
            Err(TotpReject::Replayed)
        );
        // Two steps ahead is outside the ±1 window.
        let far = pyotp_code(&e.uri, now + 90);
        assert_eq!(
            totp::verify(&mut data, seed, cfg.skew, &far, now),
            Err(TotpReject::Invalid)
        );
    }
}
