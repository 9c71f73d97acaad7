//! Pushed authorization requests (RFC 9126): an authenticated client posts its
//! authorization parameters to stepgate first and sends the browser with only `client_id`
//! and the `request_uri` it got back, so the parameters are neither seen nor changed on
//! the way. The `request_uri` is the parameters sealed under the secrets key (nothing is
//! stored), valid for [`LIFETIME`], and redeemed for one code.

use axum::extract::RawForm;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stepgate_config::OidcClient;

use super::authorize::AuthorizeParams;
use super::client_auth::ClientFields;
use super::error::OAuthError;
use super::Provider;
use crate::app::state::Shared;

/// How long a pushed request may be used.
pub const LIFETIME: i64 = 90;

/// The prefix of every `request_uri` (RFC 9126 §2.2).
pub const URN: &str = "urn:ietf:params:oauth:request_uri:";

const CONTEXT: &str = "stepgate/oidc/par/v1";

/// A pushed request, sealed into its `request_uri`.
#[derive(Serialize, Deserialize)]
pub struct Pushed {
    /// The authenticated client.
    pub cid: String,
    /// Its parameters.
    pub params: AuthorizeParams,
    /// Expiry (s since the epoch).
    pub exp: i64,
    /// Its id (one code per pushed request).
    pub jti: String,
}

impl Provider {
    /// The pushed request a `request_uri` stands for, if this deployment sealed it (expiry
    /// not checked).
    pub fn open_pushed(&self, request_uri: &str) -> Option<Pushed> {
        self.open(CONTEXT, request_uri.strip_prefix(URN)?)
    }
}

/// `POST {portal}/oidc/par`.
pub async fn push(
    State(st): State<Shared>,
    headers: HeaderMap,
    RawForm(body): RawForm,
) -> Response {
    pushed(&st, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn pushed(st: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let rt = st.runtime.load_full();
    let form = parameters(body)?;
    let fields: ClientFields = serde_json::from_value(Value::Object(form.clone()))
        .map_err(|_| OAuthError::bad("invalid_request", "unreadable parameters"))?;
    let client = fields.authenticate(st, &rt, headers).await?;
    let params = authorize_params(form, client)?;
    // What can be checked now is, so the client hears of it here (RFC 9126 §2.3).
    if let Err((error, why)) = super::authorize::precheck(&params, client, &rt.config.oidc) {
        return Err(OAuthError::bad(error, why));
    }
    let pushed = Pushed {
        cid: client.id.to_string(),
        params,
        exp: Utc::now().timestamp() + LIFETIME,
        jti: super::grant::new_id(),
    };
    let Some(sealed) = st.oidc.seal(CONTEXT, &pushed) else {
        return Err(OAuthError::unavailable("sealing a pushed request failed"));
    };
    Ok(super::no_store_json(
        StatusCode::CREATED,
        serde_json::json!({ "request_uri": format!("{URN}{sealed}"), "expires_in": LIFETIME }),
    ))
}

/// The form's parameters, each sent once.
fn parameters(body: &[u8]) -> Result<Map<String, Value>, OAuthError> {
    let mut form = Map::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if form
            .insert(k.into_owned(), Value::String(v.into_owned()))
            .is_some()
        {
            return Err(OAuthError::bad(
                "invalid_request",
                "a parameter is sent twice",
            ));
        }
    }
    Ok(form)
}

/// The authorization parameters pushed, without the client's credentials, for the
/// authenticated `client`.
fn authorize_params(
    mut form: Map<String, Value>,
    client: &OidcClient,
) -> Result<AuthorizeParams, OAuthError> {
    for k in ["client_secret", "client_assertion", "client_assertion_type"] {
        form.remove(k);
    }
    if form.contains_key("request_uri") {
        return Err(OAuthError::bad(
            "invalid_request",
            "request_uri cannot be pushed",
        ));
    }
    form.insert("client_id".into(), Value::String(client.id.to_string()));
    serde_json::from_value(Value::Object(form))
        .map_err(|_| OAuthError::bad("invalid_request", "unreadable parameters"))
}
