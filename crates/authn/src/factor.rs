//! Factor kinds, their authenticator class and what a factor record holds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kinds of factor stepgate verifies. The names match the factor names a step-up
/// requirement may list (`stepgate_policy::outcome::KNOWN_FACTORS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorKind {
    /// A memorized secret hashed with argon2id.
    Password,
    /// Pre-registered question/answer pairs (knowledge-based authentication).
    SecurityQuestions,
    /// RFC 6238 time-based one-time password from a soft token app.
    Totp,
    /// One-time code sent by e-mail.
    EmailOtp,
    /// One-time code sent by SMS.
    SmsOtp,
    /// Single-use look-up secrets printed at enrolment.
    RecoveryCodes,
    /// A WebAuthn credential: passkey or security key.
    Webauthn,
    /// A factor an upstream identity provider verified (its sign-in, or an `amr`/`acr`
    /// value its configuration trusts): never enrolled in stepgate, so not in
    /// [`FactorKind::ALL`]; its class is the one the trust mapping gave it
    /// ([`crate::PassedFactor::class`]).
    Upstream,
}

impl FactorKind {
    /// Every kind stepgate verifies itself, in display order.
    pub const ALL: [FactorKind; 7] = [
        FactorKind::Password,
        FactorKind::SecurityQuestions,
        FactorKind::Totp,
        FactorKind::EmailOtp,
        FactorKind::SmsOtp,
        FactorKind::RecoveryCodes,
        FactorKind::Webauthn,
    ];

    /// The configuration / policy name of the kind (`totp`, `email_otp`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            FactorKind::Password => "password",
            FactorKind::SecurityQuestions => "security_questions",
            FactorKind::Totp => "totp",
            FactorKind::EmailOtp => "email_otp",
            FactorKind::SmsOtp => "sms_otp",
            FactorKind::RecoveryCodes => "recovery_codes",
            FactorKind::Webauthn => "webauthn",
            FactorKind::Upstream => "upstream",
        }
    }
}

impl fmt::Display for FactorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown factor name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown factor `{0}`: expected one of password, security_questions, totp, email_otp, sms_otp, recovery_codes, webauthn")]
pub struct UnknownFactor(pub String);

impl FromStr for FactorKind {
    type Err = UnknownFactor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FactorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownFactor(s.to_string()))
    }
}

/// NIST's authentication factor classes: what the user knows, has, or is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatorClass {
    /// Something you know (password, security answers).
    Knowledge,
    /// Something you have (phone, token, key, printed codes).
    Possession,
    /// Something you are (biometrics, only ever as the unlock of a possession factor).
    Inherence,
}

impl fmt::Display for AuthenticatorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthenticatorClass::Knowledge => "knowledge",
            AuthenticatorClass::Possession => "possession",
            AuthenticatorClass::Inherence => "inherence",
        })
    }
}

/// What enrolling a factor produces, ready for the durable store: the store seals
/// `secret` with its AEAD key and keeps `data` as JSON (`FactorRecord` in stepgate-store).
#[derive(Clone, PartialEq, Eq)]
pub struct FactorMaterial {
    /// The factor kind.
    pub kind: FactorKind,
    /// A label the user recognises ("Phone", "YubiKey 5", "jane@example.com").
    pub label: String,
    /// The secret to seal at rest (TOTP seed); `None` when the factor holds only hashes
    /// or public keys.
    pub secret: Option<Vec<u8>>,
    /// Non-secret (or already hashed) state: hashes, public keys, last used TOTP step.
    pub data: serde_json::Value,
}

impl fmt::Debug for FactorMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactorMaterial")
            .field("kind", &self.kind)
            .field("label", &self.label)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("data", &self.data)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_policy_names() {
        for k in FactorKind::ALL {
            assert_eq!(k.as_str().parse::<FactorKind>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert!("sms".parse::<FactorKind>().is_err());
    }

    #[test]
    fn material_debug_hides_secret() {
        let m = FactorMaterial {
            kind: FactorKind::Totp,
            label: "phone".into(),
            secret: Some(b"supersecret".to_vec()),
            data: serde_json::json!({}),
        };
        let s = format!("{m:?}");
        // A derived `Debug` prints the `Vec<u8>` as numbers, not as the text: check for the
        // redaction marker and against both renderings of the secret.
        assert!(s.contains("secret: Some(\"<redacted>\")"), "{s}");
        assert!(!s.contains("supersecret"), "{s}");
        let as_numbers = format!("{:?}", b"supersecret".to_vec());
        assert!(!s.contains(&as_numbers[1..as_numbers.len() - 1]), "{s}");
        // The rest stays readable.
        assert!(s.contains("label: \"phone\""), "{s}");
    }
}
