//! What a verification or enrolment came to: [`AuthError`] (why it did not succeed, with
//! the text to show a user) and [`VerifyResult`] (the coarse result the server counts),
//! told to an [`AuthnObserver`].

use chrono::{DateTime, Utc};
use stepgate_store::StoreError;

use crate::factor::FactorKind;
use crate::otp::DeliveryError;
use crate::regulation;

/// Why an authentication or enrolment did not succeed.
///
/// [`AuthError::public_message`] is the text to show a user; `Display` may carry
/// operator detail (store and delivery failures) and belongs in logs.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong secret, or no such user: the two are never told apart.
    #[error("the credentials are not valid")]
    InvalidCredentials,
    /// Too many failures: the account or the client IP is banned until then.
    #[error("too many failed attempts; try again after {}", until.format("%H:%M UTC"))]
    Locked {
        /// When the ban ends.
        until: DateTime<Utc>,
    },
    /// NIST SP 800-63B §5.2.2 cap: the account refuses every attempt until an administrator
    /// unlocks it (`stepgate user unlock`) — even with the right secret.
    #[error("this account is locked after too many failed attempts; contact your administrator")]
    AccountLocked,
    /// A one-time code that was already used.
    #[error("this code was already used; wait for the next one")]
    Replayed,
    /// No code is pending (never sent, expired, used up): ask for a new one.
    #[error("the code has expired or was already used; ask for a new one")]
    Expired,
    /// The code ran out of guesses; ask for a new one.
    #[error("too many wrong codes; ask for a new one")]
    TooManyGuesses,
    /// The user has no factor of this kind.
    #[error("no {0} is enrolled for this account")]
    NotEnrolled(FactorKind),
    /// The factor kind is switched off in the configuration (`factors.<kind>.enabled`).
    #[error("{0} is not offered here")]
    FactorUnavailable(FactorKind),
    /// The account is disabled.
    #[error("this account is disabled")]
    Disabled,
    /// Too many codes sent recently.
    #[error("{0}")]
    RateLimited(regulation::SendRefusal),
    /// Something the user can fix (a weak password, a malformed phone number, …).
    #[error("{0}")]
    Rejected(String),
    /// A one-time code could not be delivered.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else (a sealed secret that does not open, a corrupt record, …).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The message to show the user: the `Display` text for user-facing variants, a generic
    /// sentence for operator-side failures (their detail goes to the log).
    pub fn public_message(&self) -> String {
        match self {
            AuthError::Delivery(_) => "the code could not be sent; try again later".into(),
            AuthError::Store(_) | AuthError::Internal(_) => {
                "something went wrong on our side; try again later".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<stepgate_store::SecretError> for AuthError {
    fn from(e: stepgate_store::SecretError) -> Self {
        AuthError::Internal(e.to_string())
    }
}

/// What a factor verification came to, for [`AuthnObserver::verification`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyResult {
    /// The factor was right.
    Success,
    /// The factor was wrong (a wrong password or code, a replayed or expired code, too many
    /// guesses at one code).
    Failure,
    /// Not checked: the account is locked, banned, disabled, or rate-limited.
    Refused,
    /// Not checked: a store, a directory or the factor's settings failed.
    Error,
}

impl VerifyResult {
    /// `success`, `failure`, `refused`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyResult::Success => "success",
            VerifyResult::Failure => "failure",
            VerifyResult::Refused => "refused",
            VerifyResult::Error => "error",
        }
    }

    /// The result of `r`.
    pub fn of<T>(r: &Result<T, AuthError>) -> VerifyResult {
        match r {
            Ok(_) => VerifyResult::Success,
            Err(
                AuthError::InvalidCredentials
                | AuthError::Replayed
                | AuthError::TooManyGuesses
                | AuthError::Expired,
            ) => VerifyResult::Failure,
            Err(
                AuthError::Locked { .. }
                | AuthError::AccountLocked
                | AuthError::Disabled
                | AuthError::RateLimited(_),
            ) => VerifyResult::Refused,
            Err(_) => VerifyResult::Error,
        }
    }
}

/// Told of every factor verification and every lockout the regulation imposes (the
/// server counts them: `stepgate_factor_verifications_total`, `stepgate_lockouts_total`).
pub trait AuthnObserver: Send + Sync {
    /// A verification of `factor` ended with `result`.
    fn verification(&self, factor: FactorKind, result: VerifyResult);
    /// The regulation locked an account (`user`) or banned an address (`ip`).
    fn lockout(&self, target: &'static str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn public_messages_hide_internals() {
        let e = AuthError::Internal("db path /var/x".into());
        assert!(!e.public_message().contains("/var"));
        assert_eq!(
            AuthError::InvalidCredentials.public_message(),
            "the credentials are not valid"
        );
    }
}
