//! stepgate's authentication factors, assurance levels and lockout.
//!
//! The core is plain functions over data — secrets in, verification results out — so it
//! is testable without a store or a network:
//!
//! - [`password`], [`questions`], [`recovery`], [`totp`], [`otp`], [`webauthn`]: enrol,
//!   verify and (by deleting the record) remove each factor. Enrolment returns a
//!   [`FactorMaterial`] for the durable store (which seals `secret` with its AEAD key).
//! - [`assurance`]: NIST SP 800-63B AAL, RFC 8176 `amr`, step-up satisfaction.
//! - [`regulation`]: brute-force bans and OTP send limits as pure decisions over counters
//!   the hot store keeps.
//! - [`service`]: [`Authenticator`], which verifies and enrols all of the above against the
//!   stores (sealed secrets, OTPs and replay guards in the hot store, lockouts, audit).
//! - [`mfa_memory`]: MFA remembered per user and device across sign-ins (`mfa_frequency`).
//! - [`session`]: the session model (factors passed, device, flags); where it is kept is
//!   the server's business.
//! - [`config`]: the `factors:` and `regulation:` configuration sections.
//!
//! docs/factors.md and docs/assurance.md explain each factor and level for an admin.
//!
//! What does not belong here: HTTP (pages, cookies, forms are the server's portal), where
//! sessions are kept and how their ids travel (the server's session service), and policy
//! decisions (what a request must have shown is the policy crate's; whether a session has
//! shown it is [`assurance::satisfies`]).

pub mod assurance;
pub mod config;
pub mod factor;
pub mod mfa_memory;
pub mod otp;
pub mod password;
pub mod questions;
pub mod recovery;
pub mod regulation;
pub mod service;
pub mod session;
pub mod totp;
pub mod webauthn;

pub use assurance::{
    aal_of, assess, assess_factors, meets, meets_assessed, satisfies, Assurance, AssuranceConfig,
    AuthState, EnrolledFactor, MaxAge, PassedFactor, Satisfaction, StepUpRequirement, Unmet,
};
pub use config::{FactorsConfig, RegulationConfig};
pub use factor::{AuthenticatorClass, FactorKind, FactorMaterial};
pub use service::{
    AuthError, Authenticator, AuthnObserver, AuthnSettings, EnrolledInfo, LinkPurpose, PendingTotp,
    VerifyResult,
};
pub use webauthn::RegistrationKind;
