//! Verifying a bearer token: a configured issuer's JWT (its algorithm allow-list, key,
//! issuer, audience, times), or an access token of stepgate's own provider; and reading
//! the verified claims into a [`BearerIdentity`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use stepgate_config::{BearerConfig, BearerIssuer};

use super::{BearerError, BearerIdentity, BearerVerifier, OwnGrant};
use crate::app::state::Runtime;

fn parse_alg(s: &str) -> Option<Algorithm> {
    Some(match s {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The unverified `iss` of a JWT (to pick the issuer's keys; verified afterwards).
fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// The AAL an `acr` value stands for.
pub fn aal_of(acr: &str, issuer: &BearerIssuer) -> Option<u8> {
    if let Some(&n) = issuer.acr_values.get(acr) {
        return Some(n);
    }
    let n = acr
        .strip_prefix("aal")
        .or_else(|| acr.strip_prefix("http://idmanagement.gov/ns/assurance/aal/"))
        .or_else(|| acr.strip_prefix("https://idmanagement.gov/ns/assurance/aal/"))?;
    n.parse().ok().filter(|n| (1..=3).contains(n))
}

impl BearerVerifier {
    /// A verifier with an empty cache.
    pub fn new() -> Self {
        BearerVerifier {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            own: std::sync::OnceLock::new(),
            own_secret: std::sync::OnceLock::new(),
        }
    }

    /// Accepts the access tokens of stepgate's own OpenID Provider, signed with `keys`
    /// (and opens their sealed user ids with `secret`).
    pub fn trust_own_tokens(
        &self,
        keys: std::sync::Arc<crate::gateway::assertion::AssertionKeys>,
        secret: stepgate_store::SecretKey,
    ) {
        let _ = self.own.set(keys);
        let _ = self.own_secret.set(secret);
    }

    /// Verifies an access token of stepgate's own provider (RFC 9068 `at+jwt`, signed with
    /// the deployment's keys) minted for `app`: its audience is the client's app's access
    /// audience ([`crate::oidc::tokens::access_audience`]). Also says which grant and
    /// session it came from (none for a `client_credentials` token), for the caller to
    /// check that they still stand.
    pub fn verify_own(
        &self,
        rt: &Runtime,
        app: &str,
        token: &str,
    ) -> Result<(BearerIdentity, Option<OwnGrant>), BearerError> {
        let keys = self.own.get().ok_or(BearerError::KeysUnavailable)?;
        let issuer = crate::oidc::issuer(rt);
        let claims = crate::oidc::tokens::verify_access(keys, &issuer, token)
            .ok_or_else(|| BearerError::Invalid("verification failed".into()))?;
        let acr = &rt.config.oidc.acr;
        let mut acr_values: std::collections::BTreeMap<String, u8> = acr.aliases.clone();
        for n in 1..=3u8 {
            acr_values.insert(acr.name(n), n);
        }
        let iss = BearerIssuer {
            issuer,
            jwks_url: None,
            jwks_file: None,
            audiences: Vec::new(),
            algorithms: vec!["ES256".into()],
            acr_values,
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
        };
        let mut id = identity(&claims, &iss);
        // A pairwise client's token: `sub` is the client's; the user is the sealed `sgu`.
        if let Some(sealed) = claims.get("sgu").and_then(|v| v.as_str()) {
            let uid = self
                .own_secret
                .get()
                .and_then(|k| crate::oidc::grant::open_uid(k, sealed))
                .ok_or_else(|| BearerError::Invalid("verification failed".into()))?;
            id.sub = uid;
        }
        let want = crate::oidc::tokens::access_audience(app);
        if !id.audiences.contains(&want) {
            return Err(BearerError::Invalid("wrong audience".into()));
        }
        let s = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let grant = match (s("gid"), s("sid")) {
            (Some(gid), Some(sid)) => Some(OwnGrant { gid, sid }),
            // A client_credentials token: the client itself, no user, no session.
            (None, _) if s("sub").is_some() && s("sub") == s("client_id") => None,
            _ => return Err(BearerError::Invalid("no grant".into())),
        };
        Ok((id, grant))
    }

    /// Whether `token` names stepgate's own provider as its issuer (and no configured
    /// issuer has that name).
    pub fn is_own(&self, rt: &Runtime, token: &str) -> bool {
        if rt.config.oidc.clients.is_empty() || self.own.get().is_none() {
            return false;
        }
        let own = crate::oidc::issuer(rt);
        peek_issuer(token).is_some_and(|i| i == own)
            && !rt
                .config
                .gateway
                .bearer
                .issuers
                .iter()
                .any(|i| i.issuer == own)
    }

    /// Verifies `token` against the configured issuers.
    pub async fn verify(
        &self,
        cfg: &BearerConfig,
        base_dir: &Path,
        token: &str,
    ) -> Result<BearerIdentity, BearerError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| BearerError::Malformed)?;
        let iss_value = peek_issuer(token).ok_or(BearerError::Malformed)?;
        let iss = cfg
            .issuers
            .iter()
            .find(|i| i.issuer == iss_value)
            .ok_or(BearerError::UnknownIssuer)?;
        if !iss
            .algorithms
            .iter()
            .filter_map(|a| parse_alg(a))
            .any(|a| a == header.alg)
        {
            return Err(BearerError::Algorithm);
        }
        let jwk = self
            .key_for(cfg, iss, base_dir, header.kid.as_deref())
            .await?;
        // A key published for one algorithm is not used with another.
        if let Some(ka) = jwk.common.key_algorithm {
            if format!("{ka:?}") != format!("{:?}", header.alg) {
                return Err(BearerError::Algorithm);
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| BearerError::UnknownKey)?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[iss.issuer.as_str()]);
        v.set_audience(&iss.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = cfg.leeway.as_secs();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
            BearerError::Invalid(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".into(),
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired".into(),
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => "not yet valid".into(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience".into(),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => "wrong issuer".into(),
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) => {
                    format!("missing claim `{c}`")
                }
                _ => "verification failed".into(),
            })
        })?;
        Ok(identity(&data.claims, iss))
    }
}

/// What the verified claims `c` say of their subject, read as the issuer `iss` names them.
pub(super) fn identity(c: &serde_json::Value, iss: &BearerIssuer) -> BearerIdentity {
    let s = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let list = |k: &str| -> Vec<String> {
        match c.get(k) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => s
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    };
    let time = |k: &str| {
        c.get(k)
            .and_then(|v| v.as_i64())
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
    };
    let sub = s("sub").unwrap_or_default();
    let acr = s("acr");
    BearerIdentity {
        issuer: iss.issuer.clone(),
        username: s(&iss.username_claim).unwrap_or_else(|| sub.clone()),
        sub,
        email: s("email"),
        name: s("name"),
        groups: list(&iss.groups_claim),
        aal: acr.as_deref().and_then(|a| aal_of(a, iss)).unwrap_or(1),
        acr,
        amr: list("amr"),
        auth_time: time("auth_time"),
        expires: time("exp"),
        // RFC 7519: one StringOrURI or an array of them, never split.
        audiences: match c.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        },
    }
}
