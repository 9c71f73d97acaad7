//! Who signs in in a test, and the TOTP codes they type.

use stepgate_authn::totp::TotpData;
use stepgate_server::demo;

/// Someone who signs in with a password and an authenticator app.
#[derive(Clone, Copy, Debug)]
pub struct Person {
    /// Their username.
    pub username: &'static str,
    /// Their password.
    pub password: &'static str,
    /// Their TOTP seed (base32).
    pub totp_base32: &'static str,
}

/// The demo's jane (`demo::seed` enrols her), in the groups `staff` and `licence-admins`.
pub const JANE: Person = Person {
    username: demo::USERS[0].username,
    password: demo::USERS[0].password,
    totp_base32: demo::USERS[0].totp_base32,
};

impl Person {
    /// The TOTP code `offset_steps` periods (30 s each) from now; a code is good once, so a
    /// second code in the same period is the next period's.
    pub fn code(&self, offset_steps: i64) -> String {
        let t = (chrono::Utc::now().timestamp() + offset_steps * 30) as u64;
        stepgate_authn::totp::generate(&totp_data(), &self.seed(), t)
    }

    /// The TOTP seed's bytes.
    pub fn seed(&self) -> Vec<u8> {
        totp_rs::Secret::Encoded(self.totp_base32.into())
            .to_bytes()
            .unwrap()
    }
}

/// The authenticator every test person has: SHA-1, six digits, 30 s.
pub fn totp_data() -> TotpData {
    TotpData {
        algorithm: stepgate_authn::config::TotpAlgorithm::Sha1,
        digits: 6,
        period: 30,
        last_step: None,
    }
}
