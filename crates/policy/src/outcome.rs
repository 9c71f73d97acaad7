//! What a decision says: allow, step up (with what), or deny (with why and how to fix).

use serde::{Deserialize, Serialize};

use crate::spec::MaxAge;

/// Factor names a step-up requirement may list (the authenticator kinds of stepgate-authn).
pub const KNOWN_FACTORS: &[&str] = &[
    "password",
    "security_questions",
    "totp",
    "email_otp",
    "sms_otp",
    "recovery_codes",
    "webauthn",
    "upstream",
];

/// What a step-up asks for. All given parts must be met by the session. The one type for
/// it: policies produce it, the authenticator checks a session against it
/// (`stepgate_authn::satisfies`), the portal carries it in signed step-up links.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUpRequirement {
    /// Minimum NIST SP 800-63B authenticator assurance level (1–3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_aal: Option<u8>,
    /// Acceptable factors (any of): kind names (`totp`) or `amr` values; empty means any
    /// factor that reaches the level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<String>,
    /// A phishing-resistant factor must be among those passed.
    #[serde(default)]
    pub phishing_resistant: bool,
    /// A hardware-bound authenticator must be among those passed.
    #[serde(default)]
    pub hardware_bound: bool,
    /// How recent the qualifying factor must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<MaxAge>,
    /// A sign-in's MFA may be the one completed on the same device within this long
    /// (sign-in policies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_frequency: Option<crate::HumanDuration>,
    /// Why, in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl StepUpRequirement {
    /// The requirement in plain words: "a passkey or security key, within the last 5
    /// minutes".
    pub fn describe(&self) -> String {
        let mut what = if self.hardware_bound {
            "your security key".to_string()
        } else if self.phishing_resistant {
            "a passkey or security key".to_string()
        } else if let [only] = self.factors.as_slice() {
            factor_phrase(only).to_string()
        } else {
            match self.min_aal {
                Some(3) => "your strongest way to sign in (a passkey or security key)".to_string(),
                Some(2) => "a second way to confirm it's you, besides your password".to_string(),
                _ => "your password".to_string(),
            }
        };
        match self.max_age {
            Some(MaxAge::EveryTime) => what.push_str(", every time"),
            Some(MaxAge::Within(d)) => {
                what.push_str(", within the last ");
                what.push_str(&human_secs(d.as_secs()));
            }
            None => {}
        }
        what
    }
}

/// A factor kind as the object of a sentence ("This needs your authenticator app").
fn factor_phrase(kind: &str) -> &'static str {
    match kind {
        "password" => "your password",
        "security_questions" => "your security questions",
        "totp" => "your authenticator app",
        "email_otp" => "a code sent to your e-mail",
        "sms_otp" => "a code sent to your phone",
        "recovery_codes" => "a recovery code",
        "webauthn" => "a passkey or security key",
        "upstream" => "your organisation's sign-in",
        _ => "another way to confirm it is you",
    }
}

/// A factor kind's name for people ("Authenticator app" for `totp`).
pub fn factor_title(kind: &str) -> &'static str {
    match kind {
        "password" => "Password",
        "security_questions" => "Security questions",
        "totp" => "Authenticator app",
        "email_otp" => "E-mail code",
        "sms_otp" => "Text-message code",
        "recovery_codes" => "Recovery code",
        "webauthn" => "Passkey or security key",
        "upstream" => "Your organisation's sign-in",
        _ => "Factor",
    }
}

/// `300` → "5 minutes", `86400` → "1 day".
fn human_secs(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s % 86_400 == 0 && s >= 86_400 => (s / 86_400, "day"),
        s if s % 3_600 == 0 && s >= 3_600 => (s / 3_600, "hour"),
        s if s % 60 == 0 && s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 {
        format!("{n} {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// A deny.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DenyOutcome {
    /// The reason shown to the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How to get access.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

/// A policy outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Let the request through.
    Allow,
    /// Require a stronger or fresher authentication first.
    StepUp(StepUpRequirement),
    /// Block.
    Deny(DenyOutcome),
}

impl Outcome {
    /// `allow`, `step_up` or `deny`.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Allow => OutcomeKind::Allow,
            Outcome::StepUp(_) => OutcomeKind::StepUp,
            Outcome::Deny(_) => OutcomeKind::Deny,
        }
    }

    /// The step-up requirement, if this is one.
    pub fn requirement(&self) -> Option<&StepUpRequirement> {
        match self {
            Outcome::StepUp(r) => Some(r),
            _ => None,
        }
    }
}

/// The three outcome kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Allow.
    Allow,
    /// Step up.
    StepUp,
    /// Deny.
    Deny,
}

impl OutcomeKind {
    /// The spelling used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Allow => "allow",
            OutcomeKind::StepUp => "step_up",
            OutcomeKind::Deny => "deny",
        }
    }
}

/// One thing the user can fix, for the remediation page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemediationItem {
    /// The check or attribute (`disk_encryption`, `os_version`).
    pub check: String,
    /// What is wrong, in plain words.
    pub message: String,
    /// How to fix it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(kind: &str, max_age: Option<MaxAge>) -> StepUpRequirement {
        StepUpRequirement {
            factors: vec![kind.to_string()],
            max_age,
            ..StepUpRequirement::default()
        }
    }

    #[test]
    fn one_factor_reads_as_the_object_of_a_sentence() {
        assert_eq!(
            only("totp", Some(MaxAge::EveryTime)).describe(),
            "your authenticator app, every time"
        );
        assert_eq!(
            only("email_otp", None).describe(),
            "a code sent to your e-mail"
        );
        assert_eq!(
            only("webauthn", None).describe(),
            "a passkey or security key"
        );
        for kind in [
            "password",
            "security_questions",
            "totp",
            "email_otp",
            "sms_otp",
            "recovery_codes",
            "webauthn",
            "upstream",
        ] {
            let said = only(kind, None).describe();
            assert!(
                said.starts_with("your ") || said.starts_with("a "),
                "{kind}: {said}"
            );
        }
    }
}
