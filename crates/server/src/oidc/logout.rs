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

use super::error::not_redirected;
use super::grant;
use super::issuer;
use super::tokens::verify;
use crate::app::responses::see_other;
use crate::portal::extract::Visit;
use crate::portal::pages::Pages;
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
    let iss = issuer(&rt);
    let hint: Option<Value> = p
        .id_token_hint
        .as_deref()
        .and_then(|t| verify(&st.oidc_keys, &iss, t, Some("JWT"), true));
    if p.id_token_hint.is_some() && hint.is_none() {
        return not_redirected(
            rt.portal(),
            "The sign-out request carries a token stepgate did not issue.",
        );
    }
    let hinted_client = hint
        .as_ref()
        .and_then(|h| h.get("aud"))
        .and_then(Value::as_str);
    if let (Some(a), Some(b)) = (hinted_client, p.client_id.as_deref()) {
        if a != b {
            return not_redirected(
                rt.portal(),
                "The sign-out request names two different applications.",
            );
        }
    }
    let client = hinted_client
        .or(p.client_id.as_deref())
        .and_then(|id| rt.config.oidc.client(id));
    // Where to go afterwards: a URI the client registered, exactly; else nowhere.
    let to = match p.post_logout_redirect_uri.as_deref() {
        None => None,
        Some(u) => match client {
            Some(c) if c.post_logout_ok(u) => Some(u.to_string()),
            _ => {
                return not_redirected(rt.portal(), "The application asked to return to an address it has not registered, so stepgate will not send you there.")
            }
        },
    };
    // The hint must name the browser's current session for it to end.
    let current = st
        .sessions
        .current(&rt, &jar, chrono::Utc::now())
        .await
        .ok()
        .flatten();
    let ended = match (&hint, current) {
        (Some(h), Some(s)) => {
            let sid = grant::sid(&st, &s.data.user_id, grant::session_mark(s.data.created_at));
            if h.get("sid").and_then(Value::as_str) == Some(sid.as_str()) {
                if let Err(e) = st.sessions.end(&s.id).await {
                    return super::error::OAuthError::unavailable(e).into_response();
                }
                crate::portal::audit(
                    &st,
                    "oidc.logout",
                    &s.data.username,
                    None,
                    serde_json::json!({ "client": client.map(|c| c.id.to_string()) }),
                )
                .await;
                true
            } else {
                false
            }
        }
        _ => false,
    };
    let jar: CookieJar = if ended {
        jar.set(crate::session::cookies::clear_session_cookie(
            &rt.config.sessions,
        ))
    } else {
        jar
    };
    match to {
        Some(mut u) => {
            if let Some(s) = &p.state {
                let Ok(mut url) = url::Url::parse(&u) else {
                    return StatusCode::BAD_REQUEST.into_response();
                };
                url.query_pairs_mut().append_pair("state", s);
                u = url.to_string();
            }
            (jar, see_other(&u)).into_response()
        }
        None => {
            let message = if ended {
                "You are signed out of stepgate."
            } else {
                "Nothing was signed out: to sign out of stepgate, use the sessions page."
            };
            let page = Pages::global().render(
                StatusCode::OK,
                "message.html",
                minijinja::context! { portal => rt.portal(), title => "Sign out", message => message },
            );
            (jar, page).into_response()
        }
    }
}
