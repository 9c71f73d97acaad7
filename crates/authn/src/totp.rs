//! TOTP soft tokens (RFC 6238): enrolment with an `otpauth://` URI and QR code, and
//! verification within ±`skew` steps where each code is accepted once only.
//!
//! Replay protection is monotonic: the factor's data keeps the last accepted time step
//! and any code at or before it is refused. Across several nodes the service layer also
//! claims `(factor, step)` in the hot store's `remember_once` so two concurrent
//! verifications of one code cannot both win.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::config::{TotpAlgorithm, TotpConfig};
use crate::factor::{FactorKind, FactorMaterial};

/// The per-enrolment TOTP parameters, kept in the factor's `data` so later config changes
/// do not break tokens already in users' apps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpData {
    /// HMAC algorithm.
    pub algorithm: TotpAlgorithm,
    /// Code length.
    pub digits: usize,
    /// Step in seconds.
    pub period: u64,
    /// The last accepted time step (replay guard).
    #[serde(default)]
    pub last_step: Option<u64>,
}

/// A new TOTP enrolment: show `uri`/QR to the user, store `material` (the seed goes in
/// `material.secret`, sealed by the store).
#[derive(Debug)]
pub struct TotpEnrolment {
    /// The raw seed (also in `material.secret`).
    pub seed: Vec<u8>,
    /// Base32 seed for manual entry.
    pub seed_base32: String,
    /// `otpauth://totp/Issuer:account?secret=...` URI.
    pub uri: String,
    /// What to store.
    pub material: FactorMaterial,
}

/// Why a code is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpReject {
    /// Not a code for any step in the window.
    #[error("the code is not valid")]
    Invalid,
    /// Valid, but that step (or a later one) was already used.
    #[error("this code was already used; wait for the next one")]
    Replayed,
    /// Not digits, or wrong length.
    #[error("enter the {0}-digit code from your authenticator app")]
    Malformed(usize),
}

/// The seed could not be used (too short for RFC 4226, bad digits).
#[derive(Debug, thiserror::Error)]
#[error("invalid TOTP parameters: {0}")]
pub struct TotpSetupError(String);

fn algorithm(a: TotpAlgorithm) -> Algorithm {
    match a {
        TotpAlgorithm::Sha1 => Algorithm::SHA1,
        TotpAlgorithm::Sha256 => Algorithm::SHA256,
        TotpAlgorithm::Sha512 => Algorithm::SHA512,
    }
}

/// Seed length per algorithm: the HMAC output size, as RFC 6238's reference does.
fn seed_len(a: TotpAlgorithm) -> usize {
    match a {
        TotpAlgorithm::Sha1 => 20,
        TotpAlgorithm::Sha256 => 32,
        TotpAlgorithm::Sha512 => 64,
    }
}

fn totp(data: &TotpData, seed: &[u8], issuer: Option<String>, account: String) -> TOTP {
    // Unchecked: seeds we generate are long enough, and RFC test seeds are 20+ bytes; the
    // checked constructor would also refuse account names containing ':'.
    TOTP::new_unchecked(
        algorithm(data.algorithm),
        data.digits,
        0,
        data.period,
        seed.to_vec(),
        issuer,
        account,
    )
}

/// Generates the code for a Unix time (tests, CLI demo).
pub fn generate(data: &TotpData, seed: &[u8], unix_time: u64) -> String {
    totp(data, seed, None, String::new()).generate(unix_time)
}

/// Starts a TOTP enrolment for `account` (shown in the app, usually the user name or e-mail).
pub fn enrol(cfg: &TotpConfig, account: &str) -> Result<TotpEnrolment, TotpSetupError> {
    let mut seed = vec![0u8; seed_len(cfg.algorithm)];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let data = TotpData {
        algorithm: cfg.algorithm,
        digits: cfg.digits,
        period: cfg.period.as_secs(),
        last_step: None,
    };
    let account = account.replace(':', "_");
    let t = TOTP::new(
        algorithm(data.algorithm),
        data.digits,
        0,
        data.period,
        seed.clone(),
        Some(cfg.issuer.clone()),
        account.clone(),
    )
    .map_err(|e| TotpSetupError(e.to_string()))?;
    let uri = t.get_url();
    let seed_base32 = t.get_secret_base32();
    Ok(TotpEnrolment {
        material: FactorMaterial {
            kind: FactorKind::Totp,
            label: format!("{} ({account})", cfg.issuer),
            secret: Some(seed.clone()),
            data: serde_json::to_value(&data).unwrap_or_default(),
        },
        seed,
        seed_base32,
        uri,
    })
}

/// Verifies `code` at `unix_time` within ±`skew` steps. On success returns the matched
/// step and records it in `data.last_step` (store the updated data); a code for that step
/// or an earlier one is then refused as a replay.
pub fn verify(
    data: &mut TotpData,
    seed: &[u8],
    skew: u8,
    code: &str,
    unix_time: u64,
) -> Result<u64, TotpReject> {
    let code = code.trim();
    if code.len() != data.digits || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpReject::Malformed(data.digits));
    }
    let t = totp(data, seed, None, String::new());
    let now_step = unix_time / data.period.max(1);
    let mut matched: Option<u64> = None;
    // Check every step in the window (no early exit) so timing does not reveal the offset.
    for offset in -(skew as i64)..=(skew as i64) {
        let Some(step) = now_step.checked_add_signed(offset) else {
            continue;
        };
        let candidate = t.generate(step * data.period);
        if bool::from(candidate.as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpReject::Invalid)?;
    if data.last_step.is_some_and(|last| step <= last) {
        return Err(TotpReject::Replayed);
    }
    data.last_step = Some(step);
    Ok(step)
}

/// Renders a QR code for a terminal with Unicode half blocks (dark modules on a light frame).
pub fn qr_terminal(uri: &str) -> Result<String, qrcode::types::QrError> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(uri.as_bytes())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Renders a QR code as an SVG document (for the self-service page).
pub fn qr_svg(uri: &str) -> Result<String, qrcode::types::QrError> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::new(uri.as_bytes())?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(a: TotpAlgorithm) -> TotpData {
        TotpData {
            algorithm: a,
            digits: 8,
            period: 30,
            last_step: None,
        }
    }

    /// RFC 6238 Appendix B: the seeds are the ASCII strings "1234567890" repeated to the
    /// HMAC key size (20, 32 and 64 bytes).
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in table {
            assert_eq!(
                generate(&data(TotpAlgorithm::Sha1), &sha1, t),
                c1,
                "SHA1 T={t}"
            );
            assert_eq!(
                generate(&data(TotpAlgorithm::Sha256), &sha256, t),
                c256,
                "SHA256 T={t}"
            );
            assert_eq!(
                generate(&data(TotpAlgorithm::Sha512), &sha512, t),
                c512,
                "SHA512 T={t}"
            );
            // And each verifies through the public verifier once.
            for (a, seed, c) in [
                (TotpAlgorithm::Sha1, &sha1, c1),
                (TotpAlgorithm::Sha256, &sha256, c256),
                (TotpAlgorithm::Sha512, &sha512, c512),
            ] {
                let mut d = data(a);
                assert_eq!(verify(&mut d, seed, 1, c, t), Ok(t / 30));
                assert_eq!(verify(&mut d, seed, 1, c, t), Err(TotpReject::Replayed));
            }
        }
    }

    #[test]
    fn window_is_plus_minus_one_step() {
        let seed = b"12345678901234567890";
        let mut d = data(TotpAlgorithm::Sha1);
        d.digits = 6;
        let t = 1_700_000_000u64;
        let prev = generate(&d, seed, t - 30);
        let next = generate(&d, seed, t + 30);
        let far = generate(&d, seed, t - 60);
        assert_eq!(verify(&mut d.clone(), seed, 1, &prev, t), Ok(t / 30 - 1));
        assert_eq!(verify(&mut d.clone(), seed, 1, &next, t), Ok(t / 30 + 1));
        assert_eq!(
            verify(&mut d.clone(), seed, 1, &far, t),
            Err(TotpReject::Invalid)
        );
        assert_eq!(
            verify(&mut d.clone(), seed, 0, &prev, t),
            Err(TotpReject::Invalid)
        );
        assert_eq!(
            verify(&mut d, seed, 1, "12a456", t),
            Err(TotpReject::Malformed(6))
        );
    }

    #[test]
    fn a_later_code_voids_earlier_ones() {
        let seed = b"12345678901234567890";
        let mut d = data(TotpAlgorithm::Sha1);
        let t = 1_700_000_000u64;
        let now = generate(&d, seed, t);
        let before = generate(&d, seed, t - 30);
        assert!(verify(&mut d, seed, 1, &now, t).is_ok());
        assert_eq!(
            verify(&mut d, seed, 1, &before, t),
            Err(TotpReject::Replayed)
        );
    }

    #[test]
    fn enrolment_uri_and_qr() {
        let cfg = TotpConfig {
            algorithm: TotpAlgorithm::Sha256,
            issuer: "Example Corp".into(),
            ..TotpConfig::default()
        };
        let e = enrol(&cfg, "jane@example.com").unwrap();
        assert_eq!(e.seed.len(), 32);
        assert!(
            e.uri
                .starts_with("otpauth://totp/Example%20Corp:jane%40example.com?"),
            "{}",
            e.uri
        );
        assert!(e.uri.contains(&format!("secret={}", e.seed_base32)));
        assert!(e.uri.contains("algorithm=SHA256"));
        assert!(e.uri.contains("issuer=Example%20Corp"));
        assert_eq!(e.material.secret.as_deref(), Some(e.seed.as_slice()));
        assert!(!e.material.data.to_string().contains(&e.seed_base32));
        assert!(qr_terminal(&e.uri).unwrap().lines().count() > 10);
        assert!(qr_svg(&e.uri).unwrap().contains("<svg"));
    }
}
