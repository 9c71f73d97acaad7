//! The ID token checked as OpenID Connect Core §3.1.3.7 says: signed by a key the provider
//! publishes with an asymmetric algorithm (never `none`, never an HMAC over the client
//! secret), `iss` the configured issuer, `aud` holding the client id (and `azp` the client
//! id when present, required with several audiences), `exp` in the future, `iat` not in
//! it, and `nonce` the one this browser's sign-in sent.

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::provider::Provider;
use super::UpstreamError;

/// Clock skew allowed between stepgate and the provider.
pub const LEEWAY_SECS: u64 = 60;

/// What the token must match.
pub struct Expected<'a> {
    /// The configured issuer.
    pub issuer: &'a str,
    /// stepgate's client id.
    pub client_id: &'a str,
    /// The nonce sent with the authorization request.
    pub nonce: &'a str,
}

/// The algorithms an ID token may be signed with: the provider's public keys only.
pub(crate) const ALLOWED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Which of a provider's tokens is verified: how errors name it, and what its header may
/// say.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signed {
    /// An ID token.
    IdToken,
    /// A back-channel logout token (explicitly typed, when the provider types it).
    LogoutToken,
}

impl Signed {
    /// Why a token signed with `alg` is refused.
    fn refused(self, alg: Algorithm) -> String {
        match self {
            Signed::IdToken => {
                format!("it is signed with {alg:?}, which stepgate does not accept for ID tokens")
            }
            Signed::LogoutToken => {
                format!("the logout token is signed with {alg:?}, which stepgate does not accept")
            }
        }
    }

    /// The token, as errors name it.
    fn name(self) -> &'static str {
        match self {
            Signed::IdToken => "the token",
            Signed::LogoutToken => "the logout token",
        }
    }
}

/// The header of `token` and the provider's key that must have signed it: an allowed
/// algorithm, for a logout token an allowed type, and a key whose own algorithm (when it
/// declares one) is the token's — no algorithm confusion.
pub(crate) async fn signing_key(
    provider: &Provider,
    http: &reqwest::Client,
    token: &str,
    kind: Signed,
) -> Result<(Header, DecodingKey), UpstreamError> {
    let bad = |detail: String| UpstreamError::BadToken {
        provider: provider.id.clone(),
        detail,
    };
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| bad(format!("unreadable header: {e}")))?;
    if !ALLOWED.contains(&header.alg) {
        return Err(bad(kind.refused(header.alg)));
    }
    // Explicit typing (Back-Channel Logout §2.4) when the provider uses it; an ID token's
    // `JWT` is no logout token either way (the event and the missing nonce decide).
    if let (Signed::LogoutToken, Some(typ)) = (kind, header.typ.as_deref()) {
        if !["logout+jwt", "application/logout+jwt", "JWT", "jwt"].contains(&typ) {
            return Err(bad(format!("the logout token's type is `{typ}`")));
        }
    }
    let jwk = provider.key(http, header.kid.as_deref()).await?;
    if let Some(ka) = jwk.common.key_algorithm {
        let same = serde_json::to_value(ka).ok() == serde_json::to_value(header.alg).ok();
        if !same {
            let name = kind.name();
            return Err(bad(format!(
                "the key is for {ka:?}, {name} says {:?}",
                header.alg
            )));
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(format!("unusable key: {e}")))?;
    Ok((header, key))
}

/// Verifies `token` and returns its claims.
pub async fn verify(
    provider: &Provider,
    http: &reqwest::Client,
    token: &str,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, UpstreamError> {
    let bad = |detail: String| UpstreamError::BadToken {
        provider: provider.id.clone(),
        detail,
    };
    let (header, key) = signing_key(provider, http, token, Signed::IdToken).await?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[expected.issuer]);
    v.set_audience(&[expected.client_id]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
        .map_err(|e| bad(format!("{e}")))?;
    let claims = data.claims;
    check_claims(&claims, expected, chrono::Utc::now().timestamp()).map_err(bad)?;
    Ok(claims)
}

/// The checks `jsonwebtoken` does not make: `azp`, `iat` not in the future, `sub`
/// present, `nonce`.
pub fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
    now: i64,
) -> Result<(), String> {
    let auds = match claims.get("aud") {
        Some(Value::Array(a)) => a.len(),
        _ => 1,
    };
    match claims.get("azp") {
        Some(Value::String(azp)) if azp != expected.client_id => {
            return Err(format!("it was issued to `{azp}` (azp), not to stepgate"))
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err("azp is not a string".into()),
        None if auds > 1 => {
            return Err("it has several audiences and no azp naming stepgate".into())
        }
        None => {}
    }
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat <= now + LEEWAY_SECS as i64 => {}
        Some(_) => return Err("it was issued in the future (iat)".into()),
        None => return Err("iat is missing".into()),
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= 255 => {}
        _ => return Err("sub is missing, empty or longer than 255 characters".into()),
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if nonce.is_empty() || !bool::from(nonce.as_bytes().ct_eq(expected.nonce.as_bytes())) {
        return Err("its nonce is not the one this sign-in sent".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const E: Expected<'static> = Expected {
        issuer: "https://op.example",
        client_id: "stepgate",
        nonce: "n-123",
    };

    #[test]
    fn azp_iat_sub_and_nonce_are_checked() {
        let ok = json!({"sub": "u1", "iat": 1000, "nonce": "n-123", "aud": "stepgate"});
        assert_eq!(check_claims(&claims(ok.clone()), &E, 1000), Ok(()));
        let mut c = claims(ok.clone());
        c.insert("nonce".into(), json!("n-124"));
        assert!(check_claims(&c, &E, 1000).unwrap_err().contains("nonce"));
        c.remove("nonce");
        assert!(check_claims(&c, &E, 1000).unwrap_err().contains("nonce"));
        let mut c = claims(ok.clone());
        c.insert("aud".into(), json!(["stepgate", "other"]));
        assert!(check_claims(&c, &E, 1000).unwrap_err().contains("azp"));
        c.insert("azp".into(), json!("other"));
        assert!(check_claims(&c, &E, 1000).unwrap_err().contains("other"));
        c.insert("azp".into(), json!("stepgate"));
        assert_eq!(check_claims(&c, &E, 1000), Ok(()));
        let mut c = claims(ok.clone());
        c.insert("iat".into(), json!(1000 + 61));
        assert!(check_claims(&c, &E, 1000).unwrap_err().contains("future"));
        let mut c = claims(ok);
        c.insert("sub".into(), json!(""));
        assert!(check_claims(&c, &E, 1000).unwrap_err().contains("sub"));
    }
}
