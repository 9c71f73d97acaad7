//! Client authentication at the token, revocation and introspection endpoints:
//! `client_secret_basic` or `client_secret_post` for confidential clients (the secret
//! checked against its argon2 hash), the bare `client_id` for public ones. One method per
//! request; anything else is `invalid_client`.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use stepgate_config::{ClientType, OidcClient, OidcConfig};

use super::error::OAuthError;

/// The client fields of a back-channel form.
pub struct Presented<'a> {
    /// `client_id` in the form.
    pub client_id: Option<&'a str>,
    /// `client_secret` in the form.
    pub client_secret: Option<&'a str>,
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
