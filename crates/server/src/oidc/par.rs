//! Pushed authorization requests (RFC 9126): an authenticated client posts its
//! authorization parameters to stepgate first and sends the browser with only `client_id`
//! and the `request_uri` it got back, so the parameters are neither seen nor changed on
//! the way. The `request_uri` is the parameters sealed under the secrets key (nothing is
//! stored), valid for [`LIFETIME`], and redeemed for one code.

use axum::extract::RawForm;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::authorize::AuthorizeParams;
use super::client_auth::{authenticate_client, Presented};
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
    let rt = st.runtime.load_full();
    let mut form: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if form
            .insert(k.into_owned(), serde_json::Value::String(v.into_owned()))
            .is_some()
        {
            return OAuthError::bad("invalid_request", "a parameter is sent twice").into_response();
        }
    }
    let text = |k: &str| form.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (client_id, secret) = (text("client_id"), text("client_secret"));
    let (assertion_type, assertion) = (text("client_assertion_type"), text("client_assertion"));
    let client = match authenticate_client(
        &st,
        &rt,
        &headers,
        Presented {
            client_id: client_id.as_deref(),
            client_secret: secret.as_deref(),
            assertion_type: assertion_type.as_deref(),
            assertion: assertion.as_deref(),
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    for k in ["client_secret", "client_assertion", "client_assertion_type"] {
        form.remove(k);
    }
    if form.contains_key("request_uri") {
        return OAuthError::bad("invalid_request", "request_uri cannot be pushed").into_response();
    }
    form.insert(
        "client_id".into(),
        serde_json::Value::String(client.id.to_string()),
    );
    let params: AuthorizeParams = match serde_json::from_value(serde_json::Value::Object(form)) {
        Ok(p) => p,
        Err(_) => {
            return OAuthError::bad("invalid_request", "unreadable parameters").into_response()
        }
    };
    // What can be checked now is, so the client hears of it here (RFC 9126 §2.3).
    if let Err((error, why)) = super::authorize::precheck(&params, client, &rt.config.oidc) {
        return OAuthError::bad(error, why).into_response();
    }
    let pushed = Pushed {
        cid: client.id.to_string(),
        params,
        exp: Utc::now().timestamp() + LIFETIME,
        jti: super::grant::new_id(),
    };
    let Some(sealed) = st.oidc.seal(CONTEXT, &pushed) else {
        return OAuthError::unavailable("sealing a pushed request failed").into_response();
    };
    let mut r = (
        StatusCode::CREATED,
        axum::Json(
            serde_json::json!({ "request_uri": format!("{URN}{sealed}"), "expires_in": LIFETIME }),
        ),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
