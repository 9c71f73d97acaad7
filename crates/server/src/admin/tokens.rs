//! The admin API's tokens: made by `stepgate admin token create` (printed once), kept only
//! as the SHA-256 of their 256 random bits, with a name (what the audit log calls them),
//! scopes and an expiry; revoked by name. A token is compared by its hash: the store finds
//! the row by the hash, and the hash is compared again in constant time.

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use stepgate_store::{AdminToken, DurableStore, StoreError};
use subtle::ConstantTimeEq as _;

/// What a token (or an administrator's session) may do through the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// List and show users, their lock state, factors and sessions.
    UsersRead,
    /// Create, disable, enable, unlock users; reset their factors; end their sessions.
    UsersWrite,
    /// List and show devices with their posture and compliance.
    DevicesRead,
    /// (Reserved: device changes go through the posture API.)
    DevicesWrite,
    /// List sessions.
    SessionsRead,
    /// Revoke sessions.
    SessionsWrite,
    /// Search, show and re-run decisions.
    DecisionsRead,
    /// Search the audit log and verify its chain.
    AuditRead,
    /// List policies, validate a draft, what-if.
    PoliciesRead,
    /// Save and roll back policy sets (`admin.policy_edits: store`).
    PoliciesWrite,
    /// The configuration's version.
    ConfigRead,
    /// Reload the configuration.
    ConfigWrite,
}

impl Scope {
    /// Every scope, in the order documented.
    pub const ALL: [Scope; 12] = [
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::DevicesRead,
        Scope::DevicesWrite,
        Scope::SessionsRead,
        Scope::SessionsWrite,
        Scope::DecisionsRead,
        Scope::AuditRead,
        Scope::PoliciesRead,
        Scope::PoliciesWrite,
        Scope::ConfigRead,
        Scope::ConfigWrite,
    ];

    /// Its name (`users:read`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::DevicesRead => "devices:read",
            Scope::DevicesWrite => "devices:write",
            Scope::SessionsRead => "sessions:read",
            Scope::SessionsWrite => "sessions:write",
            Scope::DecisionsRead => "decisions:read",
            Scope::AuditRead => "audit:read",
            Scope::PoliciesRead => "policies:read",
            Scope::PoliciesWrite => "policies:write",
            Scope::ConfigRead => "config:read",
            Scope::ConfigWrite => "config:write",
        }
    }

    /// Whether it allows a change (a write), which a session needs a fresh AAL3 for.
    pub fn is_write(self) -> bool {
        self.as_str().ends_with(":write")
    }

    /// The scope called `name`.
    pub fn parse(name: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| {
                let all: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope `{name}`; the scopes are {}", all.join(", "))
            })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a token's prefix says it is (so a leaked one is recognisable in a scanner).
pub const TOKEN_PREFIX: &str = "sgadm_";

/// The lower-case hex SHA-256 of `token`, as the store keeps it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a token is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefused {
    /// No such token (never made, or forged).
    #[error("the token is not one stepgate issued")]
    Unknown,
    /// Past its expiry.
    #[error("the token `{0}` expired at {1}")]
    Expired(String, DateTime<Utc>),
    /// Revoked.
    #[error("the token `{0}` was revoked at {1}")]
    Revoked(String, DateTime<Utc>),
    /// The store did not answer.
    #[error("the token store did not answer: {0}")]
    Store(#[from] StoreError),
}

/// Makes a token called `name` with `scopes`, valid until `expires_at`; the token (to print
/// once) and its record. [`StoreError::Conflict`] if the name is taken.
pub async fn create(
    durable: &dyn DurableStore,
    name: &str,
    scopes: &[Scope],
    expires_at: DateTime<Utc>,
) -> Result<(String, AdminToken), StoreError> {
    let token = format!("{TOKEN_PREFIX}{}", crate::app::signer::random_id());
    let mut names: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
    names.sort();
    names.dedup();
    let record = AdminToken {
        id: stepgate_store::new_id(),
        name: name.to_string(),
        token_sha256: token_hash(&token),
        scopes: names,
        created_at: stepgate_store::now_ms(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    durable.create_admin_token(&record).await?;
    Ok((token, record))
}

/// The live token `presented` is, its use recorded; why not otherwise.
pub async fn verify(
    durable: &dyn DurableStore,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<AdminToken, TokenRefused> {
    if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 128 {
        return Err(TokenRefused::Unknown);
    }
    let hash = token_hash(presented);
    let Some(t) = durable.find_admin_token(&hash).await? else {
        return Err(TokenRefused::Unknown);
    };
    if !bool::from(t.token_sha256.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(TokenRefused::Unknown);
    }
    if let Some(at) = t.revoked_at {
        return Err(TokenRefused::Revoked(t.name, at));
    }
    if t.expires_at <= now {
        return Err(TokenRefused::Expired(t.name, t.expires_at));
    }
    durable.touch_admin_token(&t.id, now).await?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_back_and_unknown_ones_are_named() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Ok(s));
        }
        let e = Scope::parse("users:delete").unwrap_err();
        assert!(
            e.contains("users:delete") && e.contains("users:write"),
            "{e}"
        );
        assert!(Scope::UsersWrite.is_write() && !Scope::UsersRead.is_write());
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
