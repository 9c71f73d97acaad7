//! Subject identifiers (OIDC Core §8): a `public` client sees the user's stable id as
//! `sub`; a `pairwise` client sees an HMAC-SHA256, under `oidc.pairwise_secret`, of its
//! sector and the user's id — stable for the sector, opaque, and not linkable across
//! sectors (nor back to the user's id without the key). ID tokens, access tokens,
//! userinfo, introspection and back-channel logout tokens carry the same `sub`.
//!
//! An access token for a pairwise client also carries its user's id sealed
//! (ChaCha20-Poly1305 under the secrets key, a fresh nonce each time: `sgu`), which only
//! stepgate can open, so its own endpoints and gateway still find the user and session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use stepgate_config::identity::SecretSource;
use stepgate_config::oidc::SubjectType;
use stepgate_config::OidcClient;

use crate::app::state::Runtime;

/// The shortest pairwise key accepted.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a pairwise `sub` cannot be computed (a deployment error, never the client's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// `oidc.pairwise_secret` is not set.
    #[error("oidc.pairwise_secret is not set, and a client is pairwise")]
    NoSecret,
    /// It could not be read, or is too short.
    #[error("oidc.pairwise_secret: {0}")]
    Secret(String),
    /// The client's sector cannot be told.
    #[error("oidc client `{0}`: no sector (set sector_identifier)")]
    NoSector(String),
}

/// The pairwise key, read now from its file or variable.
pub fn pairwise_key(cfg: &stepgate_config::Config) -> Result<Vec<u8>, SubjectError> {
    let src = cfg
        .oidc
        .pairwise_secret
        .as_ref()
        .ok_or(SubjectError::NoSecret)?;
    let s = match src {
        SecretSource::File(p) => {
            let p = if p.is_absolute() {
                p.clone()
            } else {
                cfg.base_dir.join(p)
            };
            std::fs::read_to_string(&p)
                .map_err(|e| SubjectError::Secret(format!("file {}: {e}", p.display())))?
        }
        SecretSource::Env(v) => std::env::var(v)
            .map_err(|_| SubjectError::Secret(format!("environment variable `{v}` is not set")))?,
        SecretSource::InlineInsecure(s) => s.clone(),
    };
    let s = s.trim();
    if s.len() < MIN_SECRET_LEN {
        return Err(SubjectError::Secret(format!(
            "{} characters: expected at least {MIN_SECRET_LEN} (e.g. `openssl rand -base64 48`)",
            s.len()
        )));
    }
    Ok(s.as_bytes().to_vec())
}

/// The pairwise `sub` of user `uid` in `sector` under `key`.
pub fn pairwise(key: &[u8], sector: &str, uid: &str) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in ["stepgate/oidc/pairwise/v1", sector, uid] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    B64.encode(mac.finalize().into_bytes())
}

/// The `sub` `client` sees for user `uid`.
pub fn subject(rt: &Runtime, client: &OidcClient, uid: &str) -> Result<String, SubjectError> {
    match client.subject_type {
        SubjectType::Public => Ok(uid.to_string()),
        SubjectType::Pairwise => {
            let sector = client
                .sector()
                .ok_or_else(|| SubjectError::NoSector(client.id.to_string()))?;
            Ok(pairwise(&pairwise_key(&rt.config)?, &sector, uid))
        }
    }
}

/// Whether `client` sees pairwise identifiers.
pub fn is_pairwise(client: &OidcClient) -> bool {
    client.subject_type == SubjectType::Pairwise
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a-pairwise-key-of-at-least-32-characters";

    #[test]
    fn stable_per_sector_and_distinct_across_sectors_and_users() {
        let a = pairwise(KEY, "expenses.example.com", "u-1");
        assert_eq!(a, pairwise(KEY, "expenses.example.com", "u-1"));
        assert_ne!(a, pairwise(KEY, "wiki.example.com", "u-1"));
        assert_ne!(a, pairwise(KEY, "expenses.example.com", "u-2"));
        assert_ne!(
            a,
            pairwise(
                b"another-pairwise-key-of-32-characters!!",
                "expenses.example.com",
                "u-1"
            )
        );
        // Opaque: no trace of the id or the sector, and URL-safe.
        assert!(!a.contains("u-1") && !a.contains("expenses"));
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // Length-prefixed parts: moving the boundary makes another identifier.
        assert_ne!(pairwise(KEY, "ab", "c"), pairwise(KEY, "a", "bc"));
    }
}
