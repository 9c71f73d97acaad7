//! An issuer's signing keys for bearer tokens: its JWKS, fetched (with a timeout and a
//! size cap) or read from a file, cached per issuer, and fetched again for an unknown
//! `kid` at most every [`REFETCH_MIN`].

use std::path::Path;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use stepgate_config::{BearerConfig, BearerIssuer};

use super::{BearerError, BearerVerifier, CachedKeys};

/// The shortest time between two fetches of one issuer's JWKS for unknown `kid`s.
pub const REFETCH_MIN: Duration = Duration::from_secs(10);

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

impl BearerVerifier {
    fn cached(&self, issuer: &str) -> Option<(JwkSet, Instant)> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        c.get(issuer).map(|k| (k.set.clone(), k.fetched))
    }

    async fn fetch(
        &self,
        cfg: &BearerConfig,
        iss: &BearerIssuer,
        base_dir: &Path,
    ) -> Result<JwkSet, BearerError> {
        let set = if let Some(url) = &iss.jwks_url {
            let resp = self
                .http
                .get(url)
                .timeout(cfg.jwks_timeout.0)
                .send()
                .await
                .and_then(|r| r.error_for_status());
            let body = match resp {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            match body {
                Ok(b) if b.len() <= MAX_JWKS_BYTES => serde_json::from_slice::<JwkSet>(&b)
                    .map_err(|e| {
                        tracing::warn!(issuer = %iss.issuer, %url, error = %e, "bearer: the JWKS does not parse");
                        BearerError::KeysUnavailable
                    })?,
                Ok(_) => {
                    tracing::warn!(issuer = %iss.issuer, %url, "bearer: the JWKS is too large");
                    return Err(BearerError::KeysUnavailable);
                }
                Err(e) => {
                    tracing::warn!(issuer = %iss.issuer, %url, error = %e, "bearer: fetching the JWKS failed");
                    return Err(BearerError::KeysUnavailable);
                }
            }
        } else if let Some(file) = &iss.jwks_file {
            let path = base_dir.join(file);
            let text = std::fs::read(&path).map_err(|e| {
                tracing::warn!(issuer = %iss.issuer, path = %path.display(), error = %e, "bearer: reading the JWKS file failed");
                BearerError::KeysUnavailable
            })?;
            serde_json::from_slice::<JwkSet>(&text).map_err(|e| {
                tracing::warn!(issuer = %iss.issuer, path = %path.display(), error = %e, "bearer: the JWKS file does not parse");
                BearerError::KeysUnavailable
            })?
        } else {
            return Err(BearerError::KeysUnavailable);
        };
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            iss.issuer.clone(),
            CachedKeys {
                set: set.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(set)
    }

    /// The key for `kid` (or the only key when the token names none).
    pub(super) async fn key_for(
        &self,
        cfg: &BearerConfig,
        iss: &BearerIssuer,
        base_dir: &Path,
        kid: Option<&str>,
    ) -> Result<Jwk, BearerError> {
        let pick = |set: &JwkSet| -> Option<Jwk> {
            match kid {
                Some(k) => set.find(k).cloned(),
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let cached = self.cached(&iss.issuer);
        if let Some((set, at)) = &cached {
            if at.elapsed() < cfg.jwks_cache.0 {
                if let Some(k) = pick(set) {
                    return Ok(k);
                }
                if at.elapsed() < REFETCH_MIN {
                    return Err(BearerError::UnknownKey);
                }
            }
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Someone else may have fetched while this request waited.
        if let Some((set, at)) = self.cached(&iss.issuer) {
            if cached.as_ref().is_none_or(|(_, before)| at > *before) {
                if let Some(k) = pick(&set) {
                    return Ok(k);
                }
            }
        }
        match self.fetch(cfg, iss, base_dir).await {
            Ok(set) => pick(&set).ok_or(BearerError::UnknownKey),
            Err(e) => {
                // Keys fetched earlier still verify tokens signed with them.
                if let Some((set, _)) = cached {
                    if let Some(k) = pick(&set) {
                        return Ok(k);
                    }
                }
                Err(e)
            }
        }
    }
}
