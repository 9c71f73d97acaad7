//! A provider's back-channel logout token checked as OpenID Connect Back-Channel Logout 1.0
//! §2.6 says: signed by a key the provider publishes with an asymmetric algorithm, `iss`
//! the configured issuer, `aud` holding stepgate's client id, `iat` present (and recent:
//! at most [`MAX_AGE_SECS`] old, so the `jti` memory covers every token still accepted),
//! `exp` in the future when present, the back-channel logout event in `events`, a `sid`
//! or a `sub`, and no `nonce` (so an ID token can never pass as a logout token). Each
//! `jti` is accepted once (the caller remembers it across nodes).

use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use super::id_token::{signing_key, Signed, LEEWAY_SECS};
use super::provider::Provider;
use super::UpstreamError;

/// The event a logout token must carry.
pub const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The oldest logout token accepted (by `iat`); its `jti` is remembered longer than this.
pub const MAX_AGE_SECS: i64 = 600;

/// What a verified logout token says to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutToken {
    /// The provider's session id, if sent.
    pub sid: Option<String>,
    /// The subject, if sent.
    pub sub: Option<String>,
    /// The token's id (accepted once).
    pub jti: String,
}

/// Verifies a logout token from `provider` addressed to `client_id`.
pub async fn verify(
    provider: &Provider,
    http: &reqwest::Client,
    token: &str,
    issuer: &str,
    client_id: &str,
) -> Result<LogoutToken, UpstreamError> {
    let bad = |detail: String| UpstreamError::BadToken {
        provider: provider.id.clone(),
        detail,
    };
    let (header, key) = signing_key(provider, http, token, Signed::LogoutToken).await?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[client_id]);
    v.set_required_spec_claims(&["iat", "iss", "aud"]);
    // `exp` is checked below only when present (providers before the final specification
    // send none; the `iat` bound stands in).
    v.validate_exp = false;
    v.leeway = LEEWAY_SECS;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
        .map_err(|e| bad(format!("logout token: {e}")))?;
    check_claims(&data.claims, chrono::Utc::now().timestamp()).map_err(bad)
}

/// The checks `jsonwebtoken` does not make.
pub fn check_claims(claims: &Map<String, Value>, now: i64) -> Result<LogoutToken, String> {
    let leeway = LEEWAY_SECS as i64;
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat > now + leeway => {
            return Err("the logout token was issued in the future (iat)".into())
        }
        Some(iat) if iat < now - MAX_AGE_SECS - leeway => {
            return Err(format!(
                "the logout token is older than {MAX_AGE_SECS} s (iat)"
            ))
        }
        Some(_) => {}
        None => return Err("the logout token has no iat".into()),
    }
    match claims.get("exp") {
        None => {}
        Some(e) => match e.as_i64() {
            Some(exp) if exp + leeway >= now => {}
            _ => return Err("the logout token has expired (exp)".into()),
        },
    }
    if claims.contains_key("nonce") {
        return Err("the token carries a nonce, so it is not a logout token".into());
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(EVENT));
    if !matches!(event, Some(Value::Object(_))) {
        return Err("the token's events claim lacks the back-channel logout event".into());
    }
    let text = |name: &str| -> Result<Option<String>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(Some(s.clone())),
            Some(_) => Err(format!("the logout token's {name} is not a usable string")),
        }
    };
    let (sid, sub) = (text("sid")?, text("sub")?);
    if sid.is_none() && sub.is_none() {
        return Err("the logout token names neither a sid nor a sub".into());
    }
    let jti = text("jti")?.ok_or("the logout token has no jti")?;
    Ok(LogoutToken { sid, sub, jti })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn event_nonce_sid_sub_jti_and_times_are_checked() {
        let ok = json!({"iat": 1000, "jti": "j1", "sid": "s1", "events": {EVENT: {}}});
        assert_eq!(
            check_claims(&claims(ok.clone()), 1000),
            Ok(LogoutToken {
                sid: Some("s1".into()),
                sub: None,
                jti: "j1".into()
            })
        );
        let with = |k: &str, v: Value| {
            let mut c = claims(ok.clone());
            c.insert(k.into(), v);
            check_claims(&c, 1000).unwrap_err()
        };
        let without = |k: &str| {
            let mut c = claims(ok.clone());
            c.remove(k);
            check_claims(&c, 1000)
        };
        assert!(with("nonce", json!("n")).contains("nonce"));
        assert!(with("events", json!({})).contains("event"));
        assert!(with("events", json!({EVENT: "yes"})).contains("event"));
        assert!(with("iat", json!(1000 + 61)).contains("future"));
        assert!(with("iat", json!(1000 - 600 - 61)).contains("older"));
        assert!(with("exp", json!(1000 - 61)).contains("expired"));
        assert!(with("sid", json!(7)).contains("sid"));
        assert!(without("jti").unwrap_err().contains("jti"));
        assert!(without("iat").unwrap_err().contains("iat"));
        assert!(without("events").unwrap_err().contains("event"));
        assert!(without("sid").unwrap_err().contains("neither"));
        let mut c = claims(ok);
        c.remove("sid");
        c.insert("sub".into(), json!("u1"));
        assert_eq!(check_claims(&c, 1000).unwrap().sub.as_deref(), Some("u1"));
    }
}
