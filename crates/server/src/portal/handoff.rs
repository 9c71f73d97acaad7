//! Single sign-on across hosts the session cookie cannot reach (`sessions.hand_off`): an
//! app host with no session sends the browser to the public URL's portal with the nonce of
//! a host-only cookie it sets; the portal, seeing a live session there, sends the browser
//! back to `{app host}{portal}/handoff?code=…` with a random code kept in the hot store
//! (single use across nodes, 60 s) and bound to that app origin and that nonce; the app
//! host exchanges it for its own host-only session cookie. No session id is ever in a URL;
//! a code used twice, on another host, or by a browser without the nonce cookie (an
//! attacker's code sent to a victim) gets nothing.

use std::time::Duration;

use axum::extract::Query;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::error::PortalError;
use super::extract::{Here, Visit};
use super::pages::Pages;
use crate::app::responses::see_other;
use crate::app::signer::random_id;
use crate::app::state::{Runtime, Shared};
use crate::session::cookies::CookieJar;
use crate::session::cookies::{plain_cookie, session_cookie};
use crate::session::{limits, Session, SessionData};

/// The host-only cookie on an app host that binds a hand-off to the browser.
pub const NONCE_COOKIE: &str = "stepgate_handoff";
/// How long a code can be exchanged.
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a used code is remembered as used (past its life, so a late replay is caught).
const USED_TTL: Duration = Duration::from_secs(600);

/// What a code stands for, in the hot store under the code.
#[derive(Serialize, Deserialize)]
struct Grant {
    /// The session handed to the app host.
    session: String,
    /// Its user.
    user: String,
    /// The app origin (`scheme://host[:port]`) it may be exchanged on.
    origin: String,
    /// Where the browser goes once the cookie is set (on that origin).
    target: String,
    /// The nonce of the app host's hand-off cookie.
    nonce: String,
}

/// A fresh nonce for an app host's hand-off cookie.
pub fn nonce() -> String {
    random_id()
}

/// `r` with the app host's hand-off cookie (host-only, short-lived) holding `nonce`.
pub fn with_nonce_cookie(rt: &Runtime, mut r: Response, nonce: &str) -> Response {
    let mut c = plain_cookie(
        NONCE_COOKIE,
        nonce.to_string(),
        rt.config.sessions.cookie.secure,
    );
    c.set_max_age(cookie::time::Duration::minutes(10));
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The origin (`scheme://host[:port]`) of `target`, when it is an app host that gets its
/// session by hand-off.
fn hand_off_origin(rt: &Runtime, target: &str) -> Option<String> {
    let u = url::Url::parse(target).ok()?;
    let host = u.host_str()?;
    if !rt.hands_off(host) {
        return None;
    }
    Some(u.origin().ascii_serialization())
}

/// On the public URL's portal: when `target` is on a hand-off app host and `session` is a
/// completed sign-in, the URL that hands it over (a new code bound to that origin and to
/// `nonce`); `None` when no hand-off applies.
pub async fn hand_over(
    st: &Shared,
    rt: &Here,
    session: &Session,
    target: &str,
    nonce: &str,
) -> Result<Option<String>, PortalError> {
    if !rt.config.sessions.hand_off || session.data.pending || !well_formed(nonce) {
        return Ok(None);
    }
    let Some(origin) = hand_off_origin(rt, target) else {
        return Ok(None);
    };
    let code = random_id();
    let grant = Grant {
        session: session.id.clone(),
        user: session.data.user_id.clone(),
        origin: origin.clone(),
        target: target.to_string(),
        nonce: nonce.to_string(),
    };
    let value = serde_json::to_value(&grant).map_err(|e| PortalError::StoreDown(e.to_string()))?;
    st.stores
        .hot
        .push_recent(&format!("handoff:{code}"), &value, 1, CODE_TTL)
        .await?;
    Ok(Some(format!("{origin}{}/handoff?code={code}", rt.portal())))
}

/// `?code=` of the hand-off.
#[derive(Deserialize)]
pub struct HandOffQuery {
    #[serde(default)]
    code: String,
}

/// A code or nonce as [`random_id`] makes them: 43 URL-safe base64 characters.
fn well_formed(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET {portal}/handoff?code=…` on an app host: the code exchanged, once, for this host's
/// session cookie, then on to the page asked for.
pub async fn exchange(
    Visit { st, here: rt, jar }: Visit,
    Query(q): Query<HandOffQuery>,
) -> Result<Response, PortalError> {
    let (grant, data) = match taken(&st, &rt, &jar, &q.code).await? {
        Ok(taken) => taken,
        Err(why) => {
            tracing::warn!(reason = why, "session hand-off refused");
            return Ok(refused_page(&rt));
        }
    };
    let age = data
        .persistent
        .then(|| limits(&rt.config.sessions, data.aal(&rt.config.assurance)).0);
    // This host's own cookie: host-only, whatever domain the public host's carries.
    let mut c = session_cookie(&rt.config.sessions, grant.session, age);
    c.unset_domain();
    let mut gone = plain_cookie(
        NONCE_COOKIE,
        String::new(),
        rt.config.sessions.cookie.secure,
    );
    gone.set_max_age(cookie::time::Duration::ZERO);
    let jar = jar.set(c).set(gone);
    let target = if super::links::allowed_target(&rt, &grant.target)
        && grant.target.starts_with(&grant.origin)
    {
        grant.target
    } else {
        rt.portal_url("/account")
    };
    Ok((jar, see_other(&target)).into_response())
}

/// The grant the hand-off `code` stands for, used up (tried once, even on the wrong host),
/// for this host and this browser, and its session, still live and unchanged; or why not.
async fn taken(
    st: &Shared,
    rt: &Here,
    jar: &CookieJar,
    code: &str,
) -> Result<Result<(Grant, SessionData), &'static str>, PortalError> {
    if !rt.config.sessions.hand_off || !well_formed(code) {
        return Ok(Err("no hand-off here, or a malformed code"));
    }
    let hot = &st.stores.hot;
    let first = hot
        .remember_once(&format!("handoff-used:{code}"), USED_TTL)
        .await?;
    let grant = hot
        .recent(&format!("handoff:{code}"))
        .await?
        .into_iter()
        .next()
        .and_then(|v| serde_json::from_value::<Grant>(v).ok());
    let Some(grant) = grant.filter(|_| first) else {
        return Ok(Err("unknown, expired or used code"));
    };
    if grant.origin != rt.origin() {
        return Ok(Err("code for another host"));
    }
    let bound = jar
        .get(NONCE_COOKIE)
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(grant.nonce.as_bytes())));
    if !bound {
        return Ok(Err(
            "browser without the hand-off cookie the code is bound to",
        ));
    }
    let Some((user, data)) = st.sessions.peek(&grant.session).await? else {
        return Ok(Err("session ended since"));
    };
    if user != grant.user || data.pending {
        return Ok(Err("session changed since"));
    }
    Ok(Ok((grant, data)))
}

fn refused_page(rt: &Here) -> Response {
    let page = Pages::global().render(
        StatusCode::BAD_REQUEST,
        "message.html",
        minijinja::context! {
            portal => rt.portal(),
            title => crate::i18n::t("handoff-title"),
            message => crate::i18n::t("handoff-text"),
        },
    );
    page.into_response()
}
