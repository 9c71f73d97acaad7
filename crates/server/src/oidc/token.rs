//! The token endpoint: `authorization_code` (the code single-use, for its client and
//! redirect URI, with its PKCE verifier; a second use revokes what the first issued) and
//! `refresh_token` (rotated on every use; a reused one revokes the whole grant). Each
//! answer carries an RFC 9068 access token, an ID token and, when the client may refresh,
//! a new refresh token.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stepgate_config::OidcClient;
use subtle::ConstantTimeEq;

use super::client_auth::ClientFields;
use super::error::OAuthError;
use super::grant::{self, Authorization, Refresh};
use super::issuer;
use super::no_store_json;
use super::tokens::{Issue, ACCESS_TOKEN_TYP};
use crate::app::state::Shared;

/// The token request's form.
#[derive(Deserialize, Default)]
pub struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(flatten)]
    client: ClientFields,
}

/// `POST {portal}/oidc/token`.
pub async fn token(
    State(st): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    match exchange(&st, &headers, &f).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = e.error, why = %e.description, grant = %f.grant_type, "oidc token request refused");
            e.into_response()
        }
    }
}

async fn exchange(st: &Shared, headers: &HeaderMap, f: &TokenForm) -> Result<Response, OAuthError> {
    let rt = st.runtime.load_full();
    let client = f.client.authenticate(st, &rt, headers).await?;
    let now = Utc::now();
    match f.grant_type.as_str() {
        "authorization_code" => {
            let auth = redeem_code(st, client, f, now).await?;
            issue(st, &rt, client, &auth, true, now).await
        }
        "refresh_token" => {
            if !client.grant_ok("refresh_token") {
                return Err(OAuthError::bad(
                    "unauthorized_client",
                    "this client may not use refresh tokens",
                ));
            }
            let mut auth = refresh(st, client, f, now).await?;
            narrow_scope(&mut auth, f.scope.as_deref())?;
            auth.nonce = None;
            issue(st, &rt, client, &auth, false, now).await
        }
        "client_credentials" => client_credentials(st, &rt, client, f.scope.as_deref(), now),
        "" => Err(OAuthError::bad("invalid_request", "grant_type is required")),
        _ => Err(OAuthError::bad(
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token, client_credentials",
        )),
    }
}

/// A refresh may narrow the scopes, never widen them (RFC 6749 §6).
fn narrow_scope(auth: &mut Authorization, asked: Option<&str>) -> Result<(), OAuthError> {
    let Some(s) = asked.filter(|s| !s.trim().is_empty()) else {
        return Ok(());
    };
    let had: Vec<&str> = auth.scope.split(' ').collect();
    let asked: Vec<&str> = s.split(' ').filter(|x| !x.is_empty()).collect();
    if asked.iter().any(|x| !had.contains(x)) {
        return Err(OAuthError::bad(
            "invalid_scope",
            "a refresh cannot add scopes",
        ));
    }
    auth.scope = asked.join(" ");
    Ok(())
}

/// The authorization a code stands for, once: checked for the client, redirect URI, PKCE
/// verifier and expiry before it is used up, so a stolen code tried without the verifier
/// does not burn the rightful client's.
async fn redeem_code(
    st: &Shared,
    client: &OidcClient,
    f: &TokenForm,
    now: DateTime<Utc>,
) -> Result<Authorization, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_grant(why.to_string());
    let opened = f.code.as_deref().and_then(|c| st.oidc.open_code(c));
    let code = opened.ok_or_else(|| bad("the code is not valid"))?;
    issued_to(&code.auth, client, "code")?;
    if f.redirect_uri.as_deref() != Some(code.ruri.as_str()) {
        return Err(bad("redirect_uri differs from the authorization request's"));
    }
    match (&code.chal, f.code_verifier.as_deref()) {
        (None, None) => {}
        (Some(chal), Some(v)) => {
            let ok_shape = (43..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let got = B64.encode(Sha256::digest(v.as_bytes()));
            if !ok_shape || !bool::from(got.as_bytes().ct_eq(chal.as_bytes())) {
                return Err(bad("the PKCE code_verifier does not match"));
            }
        }
        (Some(_), None) => return Err(bad("code_verifier is required")),
        (None, Some(_)) => return Err(bad("no PKCE challenge was sent for this code")),
    }
    if now.timestamp() > code.exp {
        return Err(bad("the code has expired"));
    }
    let first = grant::use_code(st, &code)
        .await
        .map_err(OAuthError::unavailable)?;
    spent(st, client, code.auth, first, "code", now).await
}

/// `auth` once the code or refresh token (`what`) that carried it is spent: `first`
/// says whether this was its first use. A second use revokes the whole grant — whoever
/// holds it is not to be trusted with what the first use issued either (RFC 6749 §4.1.2,
/// §10.4) — and a grant whose sign-in session has ended gives nothing.
async fn spent(
    st: &Shared,
    client: &OidcClient,
    auth: Authorization,
    first: bool,
    what: &str,
    now: DateTime<Utc>,
) -> Result<Authorization, OAuthError> {
    let bad = |why: String| OAuthError::invalid_grant(why);
    if !first {
        grant::revoke(st, &auth.gid, now)
            .await
            .map_err(OAuthError::unavailable)?;
        tracing::warn!(client = %client.id.as_str(), "oidc: a {what} was used twice; its grant is revoked");
        return Err(bad(format!("the {what} was already used")));
    }
    if !grant::still_live(st, &auth)
        .await
        .map_err(OAuthError::unavailable)?
    {
        return Err(bad("the sign-in session has ended".into()));
    }
    Ok(auth)
}

/// Refuses a code or refresh token (`what`) carrying `auth` that was issued to another
/// client than `client`.
fn issued_to(auth: &Authorization, client: &OidcClient, what: &str) -> Result<(), OAuthError> {
    match auth.cid == client.id.as_str() {
        true => Ok(()),
        false => Err(OAuthError::invalid_grant(format!(
            "the {what} was issued to another client"
        ))),
    }
}

/// The authorization a refresh token carries, once: a reused token revokes its grant.
async fn refresh(
    st: &Shared,
    client: &OidcClient,
    f: &TokenForm,
    now: DateTime<Utc>,
) -> Result<Authorization, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_grant(why.to_string());
    let opened = f
        .refresh_token
        .as_deref()
        .and_then(|t| st.oidc.open_refresh(t));
    let r = opened.ok_or_else(|| bad("the refresh token is not valid"))?;
    issued_to(&r.auth, client, "refresh token")?;
    if now.timestamp() > r.exp {
        return Err(bad("the refresh token has expired"));
    }
    if grant::revoked(st, &r.auth.gid)
        .await
        .map_err(OAuthError::unavailable)?
    {
        return Err(bad("the grant was revoked"));
    }
    let first = grant::use_refresh(st, &r, now)
        .await
        .map_err(OAuthError::unavailable)?;
    spent(st, client, r.auth, first, "refresh token", now).await
}

/// Signs and answers the tokens for `auth`.
async fn issue(
    st: &Shared,
    rt: &crate::app::state::Runtime,
    client: &OidcClient,
    auth: &Authorization,
    from_code: bool,
    now: DateTime<Utc>,
) -> Result<Response, OAuthError> {
    let user = st
        .cache
        .user(&auth.uid)
        .await
        .map_err(OAuthError::unavailable)?
        .filter(|u| !u.disabled)
        .ok_or_else(|| OAuthError::invalid_grant("the user is gone or disabled"))?;
    let iss = issuer(rt);
    let sid = grant::sid(st, &auth.uid, auth.sct);
    let sub = super::subject::subject(rt, client, &auth.uid).map_err(|e| {
        tracing::error!(error = %e, client = %client.id.as_str(), "oidc: no subject identifier");
        OAuthError::server_error("the subject identifier could not be made")
    })?;
    let sealed_uid = if super::subject::is_pairwise(client) {
        Some(
            st.oidc
                .seal_uid(&auth.uid)
                .ok_or_else(|| OAuthError::server_error("the tokens could not be made"))?,
        )
    } else {
        None
    };
    let issue = Issue {
        issuer: &iss,
        client,
        auth,
        user: &user,
        sid: &sid,
        sub: &sub,
        sealed_uid,
        acr: rt.config.oidc.acr.name(auth.aal.max(1)),
        now,
    };
    let mut body = signed_tokens(st, &issue, from_code)?;
    if client.grant_ok("refresh_token") {
        body["refresh_token"] = json!(refresh_token(st, client, auth, now)?);
    }
    let mut r = no_store_json(StatusCode::OK, body);
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The token response's body: the signed access and ID tokens of `issue`.
fn signed_tokens(st: &Shared, issue: &Issue<'_>, from_code: bool) -> Result<Value, OAuthError> {
    let access = st
        .oidc_keys
        .sign_claims(ACCESS_TOKEN_TYP, &issue.access_claims(&grant::new_id()))
        .ok_or_else(not_signed)?;
    let id_token = st
        .oidc_keys
        .sign_claims_with(
            "JWT",
            super::tokens::id_token_alg(issue.client),
            &issue.id_claims(&access, from_code),
        )
        .ok_or_else(not_signed)?;
    Ok(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": issue.client.access_token_lifetime.as_secs(),
        "id_token": id_token,
        "scope": issue.auth.scope,
    }))
}

/// A new refresh token for `auth`, sealed, living the client's `refresh_token_lifetime`.
fn refresh_token(
    st: &Shared,
    client: &OidcClient,
    auth: &Authorization,
    now: DateTime<Utc>,
) -> Result<String, OAuthError> {
    let r = Refresh {
        auth: auth.clone(),
        jti: grant::new_id(),
        exp: now.timestamp() + client.refresh_token_lifetime.as_secs() as i64,
    };
    st.oidc.seal_refresh(&r).ok_or_else(not_signed)
}

fn not_signed() -> OAuthError {
    OAuthError::server_error("the tokens could not be signed")
}

/// `client_credentials` (RFC 6749 §4.4): a service acting as itself. There is no user, so
/// nothing to step up: an access token for the client's app (`sub` the client id, no
/// `acr`), with the asked scopes among the client's (never `openid`: no ID token), and no
/// refresh token.
fn client_credentials(
    st: &Shared,
    rt: &crate::app::state::Runtime,
    client: &OidcClient,
    scope: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Response, OAuthError> {
    if !client.grant_ok("client_credentials") {
        return Err(OAuthError::bad(
            "unauthorized_client",
            "this client may not use client_credentials",
        ));
    }
    let asked: Vec<&str> = scope
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = asked
        .iter()
        .find(|s| **s == "openid" || !client.scope_ok(s))
    {
        return Err(OAuthError::bad(
            "invalid_scope",
            format!("the scope `{bad}` is not available to client_credentials"),
        ));
    }
    let scope = asked.join(" ");
    let iat = now.timestamp();
    let claims = json!({
        "iss": issuer(rt), "sub": client.id.as_str(), "aud": super::tokens::access_audience(client.app.as_str()),
        "client_id": client.id.as_str(), "iat": iat, "nbf": iat,
        "exp": iat + client.access_token_lifetime.as_secs() as i64,
        "jti": grant::new_id(), "scope": scope,
    });
    let access = st
        .oidc_keys
        .sign_claims(ACCESS_TOKEN_TYP, &claims)
        .ok_or_else(|| OAuthError::server_error("the token could not be signed"))?;
    Ok(no_store_json(
        StatusCode::OK,
        json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": client.access_token_lifetime.as_secs(),
            "scope": scope,
        }),
    ))
}
