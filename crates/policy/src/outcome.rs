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
];

/// What a step-up asks for. All given parts must be met by the session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StepUpRequirement {
    /// Minimum NIST SP 800-63B authenticator assurance level (1–3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_aal: Option<u8>,
    /// Acceptable factors (any of); empty means any factor that reaches the level.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<String>,
    /// A phishing-resistant factor must be among those passed.
    pub phishing_resistant: bool,
    /// A hardware-bound authenticator must be among those passed.
    pub hardware_bound: bool,
    /// How recent the qualifying factor must be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<MaxAge>,
    /// Why, in plain words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
