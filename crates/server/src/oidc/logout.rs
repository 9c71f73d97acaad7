//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): with an `id_token_hint`
//! this provider issued for the browser's current session, the session ends (and with it
//! every grant tied to it) and the browser goes to the `post_logout_redirect_uri` — only
//! one the client registered, matched exactly (no open redirect). Without a hint naming
//! the current session nothing is ended (a cross-site link cannot sign anyone out), and
//! nobody is redirected.

use axum::extract::{Query, RawForm};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use stepgate_config::OidcClient;

use super::error::not_redirected;
use super::grant;
use super::issuer;
use super::tokens::verify;
use crate::app::responses::see_other;
use crate::portal::extract::Visit;
use crate::portal::pages::Message;
use crate::session::cookies::CookieJar;

/// The logout request's parameters.
#[derive(Deserialize, Default)]
pub struct LogoutParams {
    #[serde(default)]
    id_token_hint: Option<String>,
    #[serde(default)]
    post_logout_redirect_uri: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

/// `GET {portal}/oidc/end_session`.
pub async fn end_session_get(visit: Visit, Query(p): Query<LogoutParams>) -> Response {
    end_session(visit, p).await
}

/// `POST {portal}/oidc/end_session` (form-encoded).
pub async fn end_session_post(visit: Visit, RawForm(body): RawForm) -> Response {
    let mut p = LogoutParams::default();
    for (k, v) in url::form_urlencoded::parse(&body) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "id_token_hint" => p.id_token_hint = v,
            "post_logout_redirect_uri" => p.post_logout_redirect_uri = v,
            "client_id" => p.client_id = v,
            "state" => p.state = v,
            _ => {}
        }
    }
    end_session(visit, p).await
}

async fn end_session(Visit { st, here: rt, jar }: Visit, p: LogoutParams) -> Response {
    let (hint, client) = match hinted_client(&st, &rt, &p) {
        Ok(found) => found,
        Err(why) => return not_redirected(rt.portal(), why),
    };
    // Where to go afterwards: a URI the client registered, exactly; else nowhere.
    let to = match p.post_logout_redirect_uri.as_deref() {
        None => None,
        Some(u) if client.is_some_and(|c| c.post_logout_ok(u)) => Some(u.to_string()),
        Some(_) => {
            return not_redirected(rt.portal(), "The application asked to return to an address it has not registered, so stepgate will not send you there.")
        }
    };
    let ended = match end_hinted_session(&st, &rt, &jar, hint.as_ref(), client).await {
        Ok(ended) => ended,
        Err(e) => return e.into_response(),
    };
    let jar: CookieJar = if ended {
        jar.set(crate::session::cookies::clear_session_cookie(
            &rt.config.sessions,
        ))
    } else {
        jar
    };
    match to {
        Some(u) => match with_state(u, p.state.as_deref()) {
            Some(u) => (jar, see_other(&u)).into_response(),
            None => StatusCode::BAD_REQUEST.into_response(),
        },
        None => (jar, signed_out_page(rt.portal(), ended)).into_response(),
    }
}

/// The verified `id_token_hint` and the client the request is for (the hint's audience,
/// else `client_id`), or why the request is refused: a hint stepgate did not issue, or
/// one naming another client than `client_id`.
fn hinted_client<'r>(
    st: &crate::app::state::Shared,
    rt: &'r crate::app::state::Runtime,
    p: &LogoutParams,
) -> Result<(Option<Value>, Option<&'r OidcClient>), &'static str> {
    let iss = issuer(rt);
    let hint: Option<Value> = p
        .id_token_hint
        .as_deref()
        .and_then(|t| verify(&st.oidc_keys, &iss, t, Some("JWT"), true));
    if p.id_token_hint.is_some() && hint.is_none() {
        return Err("The sign-out request carries a token stepgate did not issue.");
    }
    let hinted = hint
        .as_ref()
        .and_then(|h| h.get("aud"))
        .and_then(Value::as_str);
    if let (Some(a), Some(b)) = (hinted, p.client_id.as_deref()) {
        if a != b {
            return Err("The sign-out request names two different applications.");
        }
    }
    let client = hinted
        .or(p.client_id.as_deref())
        .and_then(|id| rt.config.oidc.client(id));
    Ok((hint, client))
}

/// Ends the browser's current session if the hint names it (its `sid`), and audits it;
/// whether it ended.
async fn end_hinted_session(
    st: &crate::app::state::Shared,
    rt: &crate::app::state::Runtime,
    jar: &CookieJar,
    hint: Option<&Value>,
    client: Option<&OidcClient>,
) -> Result<bool, super::error::OAuthError> {
    let Some(hint) = hint else {
        return Ok(false);
    };
    let current = st
        .sessions
        .current(rt, jar, chrono::Utc::now())
        .await
        .ok()
        .flatten();
    let Some(s) = current else {
        return Ok(false);
    };
    let sid = grant::sid(st, &s.data.user_id, grant::session_mark(s.data.created_at));
    if hint.get("sid").and_then(Value::as_str) != Some(sid.as_str()) {
        return Ok(false);
    }
    st.sessions
        .end(&s.id)
        .await
        .map_err(super::error::OAuthError::unavailable)?;
    crate::portal::audit(
        st,
        "oidc.logout",
        &s.data.username,
        None,
        serde_json::json!({ "client": client.map(|c| c.id.to_string()) }),
    )
    .await;
    Ok(true)
}

/// `uri` with the request's `state` added, if it parses.
fn with_state(uri: String, state: Option<&str>) -> Option<String> {
    let Some(s) = state else {
        return Some(uri);
    };
    let mut url = url::Url::parse(&uri).ok()?;
    url.query_pairs_mut().append_pair("state", s);
    Some(url.to_string())
}

/// The page a sign-out without a registered return address ends on.
fn signed_out_page(portal: &str, ended: bool) -> Response {
    let message = if ended {
        "You are signed out of stepgate."
    } else {
        "Nothing was signed out: to sign out of stepgate, use the sessions page."
    };
    let page = Message {
        portal,
        title: "Sign out",
        text: message,
        way_on: None,
        also: None,
    };
    page.render(StatusCode::OK)
}
