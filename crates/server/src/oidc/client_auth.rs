//! Client authentication at the token, revocation, introspection and PAR endpoints:
//! `client_secret_basic` or `client_secret_post` for confidential clients (the secret
//! checked against its argon2 hash), `private_key_jwt` (RFC 7523: a JWT the client signed
//! with a key of its `jwks_file`, for this provider, used once), the bare `client_id` for
//! public ones. One method per request; anything else is `invalid_client`.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use stepgate_config::{ClientType, OidcClient, OidcConfig};

use super::error::OAuthError;

/// The client fields of a back-channel form.
#[derive(Default)]
pub struct Presented<'a> {
    /// `client_id` in the form.
    pub client_id: Option<&'a str>,
    /// `client_secret` in the form.
    pub client_secret: Option<&'a str>,
    /// `client_assertion_type` in the form.
    pub assertion_type: Option<&'a str>,
    /// `client_assertion` in the form.
    pub assertion: Option<&'a str>,
}

/// The client fields of a back-channel form, as read (flattened into each endpoint's form).
#[derive(serde::Deserialize, Default)]
pub struct ClientFields {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_assertion_type: Option<String>,
    #[serde(default)]
    client_assertion: Option<String>,
}

impl ClientFields {
    /// The client these fields (and the request's `Authorization`) authenticate.
    pub async fn authenticate<'c>(
        &self,
        st: &crate::app::state::Shared,
        rt: &'c crate::app::state::Runtime,
        headers: &HeaderMap,
    ) -> Result<&'c OidcClient, OAuthError> {
        let presented = Presented {
            client_id: self.client_id.as_deref(),
            client_secret: self.client_secret.as_deref(),
            assertion_type: self.client_assertion_type.as_deref(),
            assertion: self.client_assertion.as_deref(),
        };
        authenticate_client(st, rt, headers, presented).await
    }
}

/// RFC 7523 §2.2's assertion type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client of a back-channel request, authenticated by any method (see the module).
pub async fn authenticate_client<'c>(
    st: &crate::app::state::Shared,
    rt: &'c crate::app::state::Runtime,
    headers: &HeaderMap,
    form: Presented<'_>,
) -> Result<&'c OidcClient, OAuthError> {
    let cfg = &rt.config.oidc;
    let Some(assertion) = form.assertion else {
        if form.assertion_type.is_some() {
            return Err(OAuthError::bad(
                "invalid_request",
                "client_assertion is missing",
            ));
        }
        return authenticate(cfg, headers, form);
    };
    if form.assertion_type != Some(JWT_BEARER) {
        return Err(OAuthError::invalid_client(
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
    }
    if basic(headers).is_some() || form.client_secret.is_some() {
        return Err(OAuthError::bad(
            "invalid_request",
            "use one client authentication method, not two",
        ));
    }
    let claims = private_key_jwt(rt, assertion, form.client_id)?;
    let client = claims.0;
    // Each assertion once (RFC 7523 §3: `jti`).
    let ttl = std::time::Duration::from_secs(
        (claims.2 - chrono::Utc::now().timestamp()).clamp(1, 3600) as u64 + 60,
    );
    match st
        .stores
        .hot
        .remember_once(
            &format!("oidc:client-jwt:{}:{}", client.id.as_str(), claims.1),
            ttl,
        )
        .await
    {
        Ok(true) => Ok(client),
        Ok(false) => Err(OAuthError::invalid_client(
            "the client assertion was already used",
        )),
        Err(e) => Err(OAuthError::unavailable(e)),
    }
}

/// The client a `private_key_jwt` assertion authenticates, its `jti` and `exp`: signed by
/// a key of the client's JWKS (an asymmetric algorithm the key is for), `iss` and `sub` the
/// client, `aud` this provider's issuer or token endpoint, unexpired, at most an hour ahead.
fn private_key_jwt<'c>(
    rt: &'c crate::app::state::Runtime,
    assertion: &str,
    client_id: Option<&str>,
) -> Result<(&'c OidcClient, String, i64), OAuthError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| refused("the client assertion is not a JWT"))?;
    if !asymmetric(header.alg) {
        return Err(refused("the client assertion's algorithm is not accepted"));
    }
    // The unverified `iss` names the client whose keys verify it.
    let id = unverified_issuer(assertion)?;
    if client_id.is_some_and(|c| c != id) {
        return Err(refused("client_id differs from the assertion's issuer"));
    }
    let client = rt
        .config
        .oidc
        .client(&id)
        .ok_or_else(|| refused("unknown client"))?;
    let key = client_key(rt, client, &header)?;
    let claims = verified_claims(rt, assertion, &key, header.alg, &id)?;
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if exp > chrono::Utc::now().timestamp() + 3600 {
        return Err(refused("the client assertion lives too long (at most 1h)"));
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| refused("the client assertion needs a jti"))?;
    Ok((client, jti.to_string(), exp))
}

/// An `invalid_client` error saying why the assertion was refused.
fn refused(why: &str) -> OAuthError {
    OAuthError::invalid_client(why.to_string())
}

/// Whether a client assertion may be signed with `alg`: asymmetric algorithms only (a
/// shared secret would make the client's secret a signing key).
fn asymmetric(alg: jsonwebtoken::Algorithm) -> bool {
    use jsonwebtoken::Algorithm::*;
    matches!(
        alg,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA
    )
}

/// The `iss` of an assertion not verified yet (it says whose keys to verify it with).
fn unverified_issuer(assertion: &str) -> Result<String, OAuthError> {
    let payload = assertion
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .ok_or_else(|| refused("the client assertion is not a JWT"))?;
    Ok(payload["iss"].as_str().unwrap_or_default().to_string())
}

/// The key of the client's `jwks_file` the assertion's header names (by `kid`, or the
/// only key), if it is for the header's algorithm.
fn client_key(
    rt: &crate::app::state::Runtime,
    client: &OidcClient,
    header: &jsonwebtoken::Header,
) -> Result<jsonwebtoken::DecodingKey, OAuthError> {
    let file = client
        .jwks_file
        .as_ref()
        .ok_or_else(|| refused("this client has no keys for private_key_jwt"))?;
    let path = rt.config.base_dir.join(file.as_str());
    let set: jsonwebtoken::jwk::JwkSet = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            tracing::warn!(client = client.id.as_str(), path = %path.display(), "oidc: the client's JWKS file cannot be read");
            refused("the client's keys are unavailable")
        })?;
    let jwk = match header.kid.as_deref() {
        Some(k) => set.find(k),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
    .ok_or_else(|| refused("the client assertion's key is unknown"))?;
    if let Some(ka) = jwk.common.key_algorithm {
        if format!("{ka:?}") != format!("{:?}", header.alg) {
            return Err(refused("the key is not for this algorithm"));
        }
    }
    jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| refused("the client's key is unusable"))
}

/// The assertion's claims, its signature verified with `key`: `iss` and `sub` the client,
/// `aud` this provider's issuer or token endpoint, `exp` not passed (30 s leeway).
fn verified_claims(
    rt: &crate::app::state::Runtime,
    assertion: &str,
    key: &jsonwebtoken::DecodingKey,
    alg: jsonwebtoken::Algorithm,
    id: &str,
) -> Result<serde_json::Value, OAuthError> {
    let issuer = super::issuer(rt);
    let token_endpoint = super::endpoint(rt, "/oidc/token");
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_issuer(&[id]);
    v.set_audience(&[issuer.as_str(), token_endpoint.as_str()]);
    v.set_required_spec_claims(&["iss", "sub", "aud", "exp"]);
    v.leeway = 30;
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, key, &v)
        .map_err(|_| refused("the client assertion does not verify"))?
        .claims;
    if claims["sub"].as_str() != Some(id) {
        return Err(refused("the client assertion's sub must be the client"));
    }
    Ok(claims)
}

/// The `client_id` and secret of `Authorization: Basic` (each form-urlencoded, RFC 6749
/// §2.3.1).
fn basic(headers: &HeaderMap) -> Option<Result<(String, String), OAuthError>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case("basic ") {
        return None;
    }
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let Ok(raw) = STANDARD.decode(v[6..].trim()) else {
        return Some(Err(bad()));
    };
    let Ok(text) = String::from_utf8(raw) else {
        return Some(Err(bad()));
    };
    let Some((id, secret)) = text.split_once(':') else {
        return Some(Err(bad()));
    };
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some(Ok((dec(id), dec(secret))))
}

/// The authenticated client of a back-channel request.
pub fn authenticate<'c>(
    cfg: &'c OidcConfig,
    headers: &HeaderMap,
    form: Presented<'_>,
) -> Result<&'c OidcClient, OAuthError> {
    let (id, secret) = match (basic(headers), form.client_secret) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::bad(
                "invalid_request",
                "use one client authentication method, not two",
            ))
        }
        (Some(b), None) => {
            let (id, secret) = b?;
            if form.client_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_client(
                    "client_id differs from the authenticated client",
                ));
            }
            (id, Some(secret))
        }
        (None, secret) => match form.client_id {
            Some(id) => (id.to_string(), secret.map(str::to_string)),
            None => return Err(OAuthError::invalid_client("client authentication required")),
        },
    };
    let Some(client) = cfg.client(&id) else {
        return Err(OAuthError::invalid_client("unknown client or wrong secret"));
    };
    if secret.is_some() && client.secret_hash.is_none() && client.jwks_file.is_some() {
        return Err(OAuthError::invalid_client(
            "this client authenticates with private_key_jwt",
        ));
    }
    match (client.client_type, secret, &client.secret_hash) {
        (ClientType::Public, None, _) => Ok(client),
        (ClientType::Public, Some(_), _) => {
            Err(OAuthError::invalid_client("a public client has no secret"))
        }
        (ClientType::Confidential, Some(s), Some(hash)) if secret_ok(&s, hash) => Ok(client),
        _ => Err(OAuthError::invalid_client("unknown client or wrong secret")),
    }
}

/// Whether `secret` matches the argon2 PHC `hash` (argon2's comparison is constant-time).
fn secret_ok(secret: &str, hash: &str) -> bool {
    stepgate_authn::password::verify_secret(hash, secret.as_bytes())
}
