//! Passwords: argon2id hashing, verification and the NIST SP 800-63B acceptance rules
//! (length only, no composition rules, checked against a breached-password list).
//!
//! The argon2 helpers here also hash security answers and recovery codes.

use std::collections::HashSet;
use std::path::Path;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::{Argon2Config, PasswordConfig};

/// Hashing failed (bad parameters); never caused by the secret itself.
#[derive(Debug, thiserror::Error)]
#[error("argon2 hashing failed: {0}")]
pub struct HashError(String);

fn argon2(cfg: &Argon2Config) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
        .map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a secret with argon2id and a fresh random salt; returns the PHC string.
pub fn hash_secret(cfg: &Argon2Config, secret: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(cfg)?
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Verifies a secret against a PHC string (the parameters come from the string, so
/// hashes made with older parameters keep verifying). A malformed hash never verifies.
pub fn verify_secret(phc: &str, secret: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // argon2's verifier compares the output in constant time.
    Argon2::default().verify_password(secret, &parsed).is_ok()
}

/// Whether a stored hash was made with weaker parameters than configured (rehash on next success).
pub fn needs_rehash(cfg: &Argon2Config, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() < cfg.memory_kib
        || params.t_cost() < cfg.iterations
}

/// Why a new password is refused; the message tells the user what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    /// Fewer characters than the minimum.
    #[error("the password must have at least {min} characters")]
    TooShort {
        /// Configured minimum.
        min: usize,
    },
    /// More characters than the maximum.
    #[error("the password must have at most {max} characters")]
    TooLong {
        /// Configured maximum.
        max: usize,
    },
    /// Found in the breached / common password list.
    #[error("this password appears in a list of breached or common passwords; choose another")]
    Breached,
    /// Contains the user name or is a trivial repetition.
    #[error("the password must not contain your user name or repeat one character")]
    ContextSpecific,
}

/// A set of known-bad passwords, compared case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct BreachedList {
    entries: HashSet<String>,
}

impl BreachedList {
    /// Loads one password per line; blank lines and lines starting with `#` are skipped.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::from_lines(&std::fs::read_to_string(path)?))
    }

    /// Builds the list from text, one password per line.
    pub fn from_lines(text: &str) -> Self {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect();
        BreachedList { entries }
    }

    /// Whether the password is on the list.
    pub fn contains(&self, password: &str) -> bool {
        self.entries.contains(&password.to_lowercase())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Checks a new password against the NIST SP 800-63B rules: length counted in Unicode
/// characters, no composition rules, not breached, not the user name.
pub fn check_new_password(
    cfg: &PasswordConfig,
    breached: &BreachedList,
    user_name: &str,
    password: &str,
) -> Result<(), PasswordRejected> {
    let len = password.chars().count();
    if len < cfg.min_length {
        return Err(PasswordRejected::TooShort {
            min: cfg.min_length,
        });
    }
    if len > cfg.max_length {
        return Err(PasswordRejected::TooLong {
            max: cfg.max_length,
        });
    }
    if breached.contains(password) {
        return Err(PasswordRejected::Breached);
    }
    let lower = password.to_lowercase();
    let mut chars = password.chars();
    let first = chars.next();
    if (!user_name.is_empty() && lower.contains(&user_name.to_lowercase()))
        || chars.all(|c| Some(c) == first)
    {
        return Err(PasswordRejected::ContextSpecific);
    }
    Ok(())
}

/// Enrols (or changes) a password: checks it, then hashes it.
#[derive(Debug, thiserror::Error)]
pub enum SetPasswordError {
    /// The password is not acceptable.
    #[error(transparent)]
    Rejected(#[from] PasswordRejected),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// Checks and hashes a new password; returns the PHC string to store.
pub fn set_password(
    cfg: &PasswordConfig,
    breached: &BreachedList,
    user_name: &str,
    password: &str,
) -> Result<String, SetPasswordError> {
    check_new_password(cfg, breached, user_name, password)?;
    Ok(hash_secret(&cfg.argon2, password.as_bytes())?)
}

/// Verifies a password against the stored PHC hash.
pub fn verify_password(phc: &str, password: &str) -> bool {
    verify_secret(phc, password.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PasswordConfig {
        PasswordConfig {
            argon2: Argon2Config::insecure_for_tests(),
            ..PasswordConfig::default()
        }
    }

    #[test]
    fn hash_and_verify() {
        let h = set_password(
            &cfg(),
            &BreachedList::default(),
            "jane",
            "correct horse battery",
        )
        .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse battery "));
        assert!(!verify_password("not a hash", "x"));
        assert!(needs_rehash(&Argon2Config::default(), &h));
        assert!(!needs_rehash(&Argon2Config::insecure_for_tests(), &h));
    }

    #[test]
    fn nist_length_and_breach_rules() {
        let c = cfg();
        let list = BreachedList::from_lines("# top\nPassword1\n\nqwertyuiop\n");
        assert_eq!(list.len(), 2);
        assert_eq!(
            check_new_password(&c, &list, "jane", "short"),
            Err(PasswordRejected::TooShort { min: 8 })
        );
        // 8 characters of multi-byte text is long enough: length counts characters, not bytes.
        assert_eq!(check_new_password(&c, &list, "jane", "ñandú€€€"), Ok(()));
        assert_eq!(
            check_new_password(&c, &list, "jane", &"x".repeat(129)),
            Err(PasswordRejected::TooLong { max: 128 })
        );
        // No composition rules: a long all-lowercase passphrase is fine, 64 characters allowed.
        assert_eq!(
            check_new_password(&c, &list, "jane", &"ab".repeat(32)),
            Ok(())
        );
        assert_eq!(
            check_new_password(&c, &list, "jane", "PASSWORD1"),
            Err(PasswordRejected::Breached)
        );
        assert_eq!(
            check_new_password(&c, &list, "jane", "i-am-Jane-doe"),
            Err(PasswordRejected::ContextSpecific)
        );
        assert_eq!(
            check_new_password(&c, &list, "jane", "aaaaaaaaaa"),
            Err(PasswordRejected::ContextSpecific)
        );
    }
}
