//! What an authorization request says and whether it can be served: its parameters (query,
//! form or a pushed request), the request's shape, the scopes, PKCE, and what it asks on
//! top of the app's policies ([`Asked`]). No I/O but opening a pushed request's seal.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_config::{ClientType, OidcClient};

use crate::app::state::Shared;

/// The parameters of an authorization request (query or form).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuthorizeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) response_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) response_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) code_challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) code_challenge_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) max_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) acr_values: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) claims: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) request_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) login_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ui_locales: Option<String>,
    /// stepgate's own: the signed time a fresh sign-in was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sg_reauth: Option<String>,
    /// stepgate's own: the user gave up (the blocked page's "Cancel"): `access_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sg_cancel: Option<String>,
}

/// The parameters of a form-encoded request; `None` when it does not parse or names a
/// parameter twice.
pub(super) fn serde_urlencoded_params(body: &[u8]) -> Option<AuthorizeParams> {
    let mut m = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if m.insert(k.into_owned(), serde_json::Value::String(v.into_owned()))
            .is_some()
        {
            // A parameter sent twice is an invalid request (RFC 6749 §3.1).
            return None;
        }
    }
    serde_json::from_value(serde_json::Value::Object(m)).ok()
}

/// What the request asks on top of the app's policies.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// The lowest level among recognised `acr_values` / essential `acr` values.
    pub level: Option<u8>,
    /// Whether the level is essential (the `claims` parameter).
    pub essential: bool,
    /// `max_age`, in seconds.
    pub max_age: Option<i64>,
    /// `prompt=login`.
    pub login: bool,
    /// `prompt=none`.
    pub none: bool,
}

/// The OAuth error code and description for a request that cannot be served.
type Refused = (&'static str, String);

/// Reads what the request asks, or why it cannot be served.
pub fn asked(
    p: &AuthorizeParams,
    acr: &stepgate_config::oidc::AcrConfig,
) -> Result<Asked, Refused> {
    let mut a = Asked::default();
    if let Some(prompt) = &p.prompt {
        read_prompt(&mut a, prompt)?;
    }
    if let Some(m) = &p.max_age {
        match m.trim().parse::<i64>() {
            Ok(n) if n >= 0 => a.max_age = Some(n),
            _ => {
                return Err((
                    "invalid_request",
                    "max_age must be a whole number of seconds".into(),
                ))
            }
        }
    }
    if let Some(values) = &p.acr_values {
        a.level = values.split(' ').filter_map(|v| acr.level(v)).min();
    }
    if let Some(claims) = &p.claims {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(claims) else {
            return Err(("invalid_request", "claims is not a JSON object".into()));
        };
        for part in ["id_token", "userinfo"] {
            if let Some(c) = v.get(part).and_then(|x| x.get("acr")) {
                read_acr_claim(&mut a, c, acr)?;
            }
        }
    }
    Ok(a)
}

/// `prompt`: `none`, `login`; `consent` and `select_account` are accepted and mean nothing
/// here; `none` stands alone.
fn read_prompt(a: &mut Asked, prompt: &str) -> Result<(), Refused> {
    for v in prompt.split(' ').filter(|v| !v.is_empty()) {
        match v {
            "none" => a.none = true,
            "login" => a.login = true,
            "consent" | "select_account" => {}
            other => {
                return Err((
                    "invalid_request",
                    format!("unsupported prompt value `{other}`"),
                ))
            }
        }
    }
    if a.none && prompt.split(' ').filter(|v| !v.is_empty()).count() > 1 {
        return Err((
            "invalid_request",
            "prompt=none cannot be combined with other values".into(),
        ));
    }
    Ok(())
}

/// One `acr` member of the `claims` parameter: an essential one is a floor (refused when
/// none of its values is offered), a voluntary one lowers what `acr_values` asked.
fn read_acr_claim(
    a: &mut Asked,
    c: &serde_json::Value,
    acr: &stepgate_config::oidc::AcrConfig,
) -> Result<(), Refused> {
    let mut wanted: Vec<&str> = Vec::new();
    if let Some(s) = c.get("value").and_then(|x| x.as_str()) {
        wanted.push(s);
    }
    if let Some(list) = c.get("values").and_then(|x| x.as_array()) {
        wanted.extend(list.iter().filter_map(|x| x.as_str()));
    }
    let essential = c.get("essential").and_then(|x| x.as_bool()) == Some(true);
    let level = wanted.iter().filter_map(|w| acr.level(w)).min();
    if essential {
        match level {
            Some(l) => {
                a.essential = true;
                a.level = Some(a.level.map_or(l, |x| x.max(l)));
            }
            None if !wanted.is_empty() => {
                return Err((
                    "unmet_authentication_requirements",
                    "none of the essential acr values is offered here".into(),
                ))
            }
            None => {}
        }
    } else if let Some(l) = level {
        a.level = Some(a.level.map_or(l, |x| x.min(l)));
    }
    Ok(())
}

/// Checks the PKCE parameters: S256 only; required of public clients.
fn pkce(p: &AuthorizeParams, client: &OidcClient) -> Result<Option<String>, Refused> {
    match (&p.code_challenge, p.code_challenge_method.as_deref()) {
        (None, None) if client.client_type == ClientType::Public => Err((
            "invalid_request",
            "PKCE (code_challenge with S256) is required of this client".into(),
        )),
        (None, None) => Ok(None),
        (None, Some(_)) => Err((
            "invalid_request",
            "code_challenge_method without code_challenge".into(),
        )),
        (Some(c), Some("S256")) => {
            let ok = c.len() == 43
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if ok {
                Ok(Some(c.clone()))
            } else {
                Err((
                    "invalid_request",
                    "code_challenge is not a base64url SHA-256".into(),
                ))
            }
        }
        (Some(_), _) => Err((
            "invalid_request",
            "only code_challenge_method=S256 is accepted (plain is refused)".into(),
        )),
    }
}

/// What the pushed-request endpoint can check before a browser ever comes: the redirect
/// URI, response type, scopes, PKCE and what the request asks.
pub fn precheck(
    p: &AuthorizeParams,
    client: &OidcClient,
    cfg: &stepgate_config::OidcConfig,
) -> Result<(), Refused> {
    if !p
        .redirect_uri
        .as_deref()
        .is_some_and(|u| client.redirect_ok(u))
    {
        return Err((
            "invalid_request",
            "redirect_uri is not one the client registered".into(),
        ));
    }
    validated(p, client, &cfg.acr)?;
    Ok(())
}

/// The parameters a pushed request's `request_uri` stands for (the query's own marks
/// kept), with the pushed request's id; `None` when it is not one this deployment sealed
/// for this client, or it expired.
pub(super) fn unpushed(
    st: &Shared,
    p: &AuthorizeParams,
    now: DateTime<Utc>,
) -> Option<(AuthorizeParams, String)> {
    let uri = p.request_uri.as_deref()?;
    let pushed = st.oidc.open_pushed(uri)?;
    if Some(pushed.cid.as_str()) != p.client_id.as_deref() || now.timestamp() > pushed.exp {
        return None;
    }
    let mut params = pushed.params;
    params.sg_reauth = p.sg_reauth.clone();
    params.sg_cancel = p.sg_cancel.clone();
    Some((params, pushed.jti))
}

/// The checks a browser's request passes before it is decided, in order (shape, scopes,
/// PKCE, what it asks): the granted scopes, the PKCE challenge and what it asks.
pub(super) fn validated(
    p: &AuthorizeParams,
    client: &OidcClient,
    acr: &stepgate_config::oidc::AcrConfig,
) -> Result<(String, Option<String>, Asked), Refused> {
    checked(p, client)?;
    let scope = scopes(p, client)?;
    let challenge = pkce(p, client)?;
    Ok((scope, challenge, asked(p, acr)?))
}

/// The request's shape: `response_type=code` only, no request objects, query mode.
fn checked(p: &AuthorizeParams, _client: &OidcClient) -> Result<(), Refused> {
    if p.request.is_some() {
        return Err((
            "request_not_supported",
            "request objects are not accepted".into(),
        ));
    }
    if p.request_uri.is_some() {
        return Err((
            "request_uri_not_supported",
            "request_uri is not accepted".into(),
        ));
    }
    match p.response_type.as_deref() {
        Some("code") => {}
        None => return Err(("invalid_request", "response_type is required".into())),
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported".into(),
            ))
        }
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return Err((
            "invalid_request",
            "only response_mode=query is supported".into(),
        ));
    }
    Ok(())
}

/// The granted scopes: `openid` and only what the client may ask for.
fn scopes(p: &AuthorizeParams, client: &OidcClient) -> Result<String, Refused> {
    let asked: Vec<&str> = p
        .scope
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if !asked.contains(&"openid") {
        return Err(("invalid_scope", "the openid scope is required".into()));
    }
    if let Some(bad) = asked.iter().find(|s| !client.scope_ok(s)) {
        return Err((
            "invalid_scope",
            format!("the scope `{bad}` is not allowed for this client"),
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for s in asked {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepgate_config::oidc::AcrConfig;

    fn acr() -> AcrConfig {
        let mut a = AcrConfig::default();
        a.names.insert("aal2".into(), "urn:x:mfa".into());
        a.aliases.insert("phr".into(), 3);
        a
    }

    fn with(f: impl FnOnce(&mut AuthorizeParams)) -> Result<Asked, Refused> {
        let mut p = AuthorizeParams::default();
        f(&mut p);
        asked(&p, &acr())
    }

    #[test]
    fn acr_values_are_voluntary_and_the_lowest_recognised_level_counts() {
        assert_eq!(with(|_| {}).unwrap(), Asked::default());
        let a = with(|p| p.acr_values = Some("phr urn:x:mfa gold".into())).unwrap();
        assert_eq!((a.level, a.essential), (Some(2), false));
        let a = with(|p| p.acr_values = Some("gold silver".into())).unwrap();
        assert_eq!(a.level, None, "nothing recognised: nothing asked");
        // The published name replaces the level's own, which still reads as the level.
        assert_eq!(
            with(|p| p.acr_values = Some("aal3".into())).unwrap().level,
            Some(3)
        );
    }

    #[test]
    fn an_essential_acr_is_kept_or_refused() {
        let claims = |v: &str| {
            with(|p| {
                p.claims = Some(format!(
                    r#"{{"id_token":{{"acr":{{"essential":true,"values":{v}}}}}}}"#
                ))
            })
        };
        let a = claims(r#"["phr","urn:x:mfa"]"#).unwrap();
        assert_eq!((a.level, a.essential), (Some(2), true));
        assert_eq!(
            claims(r#"["gold"]"#).unwrap_err().0,
            "unmet_authentication_requirements"
        );
        // Essential and voluntary together: the essential level is a floor.
        let a = with(|p| {
            p.acr_values = Some("aal1".into());
            p.claims = Some(r#"{"id_token":{"acr":{"essential":true,"value":"phr"}}}"#.into());
        })
        .unwrap();
        assert_eq!(a.level, Some(3));
        assert_eq!(
            with(|p| p.claims = Some("[1]x".into())).unwrap_err().0,
            "invalid_request"
        );
    }

    #[test]
    fn prompt_and_max_age_are_read_strictly() {
        let a = with(|p| p.prompt = Some("login consent".into())).unwrap();
        assert!(a.login && !a.none);
        assert!(with(|p| p.prompt = Some("none".into())).unwrap().none);
        for bad in ["none login", "sudo"] {
            assert_eq!(
                with(|p| p.prompt = Some(bad.into())).unwrap_err().0,
                "invalid_request",
                "{bad}"
            );
        }
        assert_eq!(
            with(|p| p.max_age = Some("0".into())).unwrap().max_age,
            Some(0)
        );
        for bad in ["-1", "soon", "1.5"] {
            assert!(with(|p| p.max_age = Some(bad.into())).is_err(), "{bad}");
        }
    }
}
