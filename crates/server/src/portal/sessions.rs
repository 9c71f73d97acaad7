//! The user's sessions — where and when each signed in, ending any of them — and signing
//! out here or everywhere; with the user's devices ([`super::devices`]). A page never shows a session id: each "End" button carries a
//! MAC of it ([`crate::app::signer::Signer::session_handle`]).

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::Form;
use minijinja::context;

use super::account::AccountForm;
use super::error::PortalError;
use super::extract::{check_csrf, live_session, ClientAddr, CsrfField, Here, SignedIn, Visit};
use super::pages::{Message, Pages, WayOn};
use crate::access::request::client_ip;
use crate::app::responses::{see_other, Peer};
use crate::app::state::Shared;
use crate::session::cookies::{clear_session_cookie, CookieJar};

/// `GET {portal}/sessions`.
pub async fn sessions_page(
    Visit { st, here: rt, jar }: Visit,
    SignedIn { session, user }: SignedIn,
) -> Response {
    let ids = st.sessions.of_user(&user.id).await.unwrap_or_default();
    let mut rows = Vec::new();
    for id in ids {
        let Ok(Some((_, d))) = st.sessions.peek(&id).await else {
            continue;
        };
        if d.pending {
            continue;
        }
        let aal = d.aal(&rt.config.assurance);
        let browser = browser_words(d.user_agent.as_deref().unwrap_or(""));
        // Where, roughly, in words (with a GeoIP database): "Paris, France".
        let place =
            d.ip.as_deref()
                .and_then(|ip| ip.parse().ok())
                .filter(|_| st.signals.geoip.is_some())
                .and_then(|ip| st.signals.geo(ip).place(crate::i18n::lang().code()));
        let iso = |t: &chrono::DateTime<chrono::Utc>| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        rows.push(context! { browser => browser, place => place,
            created_at => iso(&d.created_at), last_seen_at => iso(&d.last_seen),
            last_seen => d.last_seen.format("%Y-%m-%d %H:%M UTC").to_string(),
            created => d.created_at.format("%Y-%m-%d %H:%M UTC").to_string(), ip => d.ip.unwrap_or_default(),
            user_agent => d.user_agent.unwrap_or_default(), aal => aal,
            current => id == session.id, handle => st.signer.session_handle(&id),
        });
    }
    // The current session first.
    rows.sort_by_key(|r| !r.get_attr("current").is_ok_and(|c| c.is_true()));
    let devices = super::devices::listed(&st, &rt, &jar, &user).await;
    let registrable = st.devices.registers_browsers();
    Pages::global().render(
        StatusCode::OK,
        "sessions.html",
        context! {
            portal => rt.portal(), csrf => st.signer.csrf_token(&session.id), username => user.username,
            sessions => rows, devices => devices, registrable => registrable,
        },
    )
}

/// `POST {portal}/sessions/end`: ends the session whose handle the form carries, if it is
/// one of the user's own.
pub async fn end_session(
    Visit { st, here: rt, jar }: Visit,
    SignedIn { session, user }: SignedIn,
    peer: Peer,
    headers: HeaderMap,
    Form(f): Form<AccountForm>,
) -> Result<Response, PortalError> {
    check_csrf(&st, &rt, &jar, Some(&session), f.csrf())?;
    let ids = st.sessions.of_user(&user.id).await?;
    let handle = f.handle();
    if let Some(id) = ids
        .iter()
        .find(|id| st.signer.session_handle_ok(id, handle))
    {
        st.sessions.end(id).await?;
        let ip = client_ip(&rt, peer.0, &headers);
        let detail = serde_json::json!({ "why": "ended_by_user", "ended": 1, "session": handle });
        super::audit(&st, "sessions.ended", &user.username, ip, detail).await;
    }
    Ok(see_other(&rt.portal_url("/sessions")))
}

/// `POST {portal}/logout` (`EVERYWHERE` false: this session) and `POST
/// {portal}/logout-all` (true: every session of the user).
pub async fn logout<const EVERYWHERE: bool>(
    Visit { st, here: rt, jar }: Visit,
    ClientAddr(ip): ClientAddr,
    Form(f): Form<AccountForm>,
) -> Result<Response, PortalError> {
    sign_out(&st, &rt, jar, (f.csrf(), ip), EVERYWHERE).await
}

async fn sign_out(
    st: &Shared,
    rt: &Here,
    jar: CookieJar,
    (csrf, ip): (&str, Option<std::net::IpAddr>),
    everywhere: bool,
) -> Result<Response, PortalError> {
    let mut upstream = None;
    if let Some(s) = live_session(st, rt, &jar).await? {
        check_csrf(st, rt, &jar, Some(&s), csrf)?;
        upstream = s.data.upstream.clone();
        if everywhere {
            st.sessions.end_all(&s.data.user_id).await?;
        } else {
            st.sessions.end(&s.id).await?;
        }
        // Audited once the sessions are gone (through the outbox: a sign-out while the
        // durable store is out of reach is still recorded when it is back).
        let detail = serde_json::json!({
            "everywhere": everywhere,
            "session": st.signer.session_handle(&s.id),
        });
        super::audit(st, "signout", &s.data.username, ip, detail).await;
        // "Everywhere" forgets the MFA every device remembers; a plain sign-out only when
        // configured (`sessions.forget_on_sign_out`).
        if everywhere || rt.config.sessions.forget_on_sign_out {
            st.authn
                .forget_mfa(&s.data.user_id)
                .await
                .map_err(|e| PortalError::StoreDown(e.to_string()))?;
        }
    }
    // Signed in through a provider that signs out too: on to its end-session endpoint,
    // which sends the browser back to the signed-out page.
    if let Some(up) = &upstream {
        if let Some(url) = super::upstream::end_session_url(st, rt, up).await {
            let jar = jar.set(clear_session_cookie(&rt.config.sessions));
            return Ok((jar, see_other(&url)).into_response());
        }
    }
    Ok(signed_out_page(rt, jar, everywhere))
}

/// The page after signing out (the session cookie cleared).
pub fn signed_out_page(rt: &Here, jar: CookieJar, everywhere: bool) -> Response {
    let jar = jar.set(clear_session_cookie(&rt.config.sessions));
    let message = crate::i18n::t(if everywhere {
        "signed-out-everywhere"
    } else {
        "signed-out"
    });
    let page = Message {
        portal: rt.portal(),
        title: &crate::i18n::t("error-signed-out-title"),
        text: &message,
        way_on: Some(WayOn::new(
            rt.portal_url("/login"),
            crate::i18n::t("sign-in-again"),
        )),
        also: None,
    };
    (jar, page.render(StatusCode::OK)).into_response()
}

/// A browser in words ("Chrome on macOS"), from its user agent.
pub fn browser_words(user_agent: &str) -> String {
    let ua = stepgate_signals::useragent::parse(user_agent);
    match (ua.browser, ua.os) {
        (Some(b), Some(o)) => {
            crate::i18n::t_with("browser-on", &[("browser", b.into()), ("os", o.into())])
        }
        (Some(b), None) => b,
        (None, Some(o)) => crate::i18n::t_with("browser-unknown-on", &[("os", o.into())]),
        (None, None) => crate::i18n::t("browser-unknown"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn browsers_in_words() {
        let chrome_mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
        assert_eq!(super::browser_words(chrome_mac), "Chrome on macOS");
        assert_eq!(super::browser_words(""), "An unknown browser");
    }
}
