//! The access request: what every entry point hands the pipeline, whatever it read its
//! request from.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, Method};
use chrono::{DateTime, Utc};
use stepgate_authn::PassedFactor;
use stepgate_policy::RequestKind;
use stepgate_store::UserRecord;

use super::bearer::BearerIdentity;
use super::signals::PeerCertificates;
use crate::session::cookies::CookieSource;
use crate::session::{Session, SessionData};

/// One request to decide (see [`crate::access`]).
pub struct AccessRequest<'a> {
    /// The request's id: the key of its decision in the decision log, returned to the
    /// client ([`super::decision_log::REQUEST_ID_HEADER`]). [`super::RequestId::new`] when
    /// the entry point has none of its own.
    pub id: super::RequestId,
    /// Access to an app, or the sign-in itself.
    pub kind: RequestKind,
    /// The app's id (access), none for the sign-in.
    pub app: Option<&'a str>,
    /// The method, as the app will see it.
    pub method: &'a Method,
    /// The path in normal form ([`crate::gateway::original`]).
    pub path: &'a str,
    /// The request's headers (user agent; the demo's device header). Empty when there is
    /// no live request (a CAEP re-evaluation).
    pub headers: &'a HeaderMap,
    /// The client address; `None` when unknown.
    pub ip: Option<IpAddr>,
    /// Who the request says it comes from.
    pub credentials: Credentials<'a>,
    /// The connection it came over: the signal source reads the client certificate from
    /// it (the TLS chain, or a trusted proxy's header), the same way for every entry point.
    pub connection: Connection<'a>,
    /// When.
    pub now: DateTime<Utc>,
}

/// The connection a request came over, as far as device evidence needs it. Nothing is
/// read from it until a signal source needs the client certificate (authorities are
/// configured), so requests pay nothing for it otherwise.
#[derive(Clone, Copy, Default)]
pub struct Connection<'a> {
    /// The peer's address: the client's, or that of the proxy that forwarded the request
    /// (which may pass on the certificate it verified, in `client_certificates.forwarded`).
    /// `None` when there is no live request (a CAEP re-evaluation, `what-if`).
    pub peer: Option<IpAddr>,
    /// The client certificate chain the TLS connection presented.
    pub tls: Option<&'a PeerCertificates>,
}

/// What identifies the subject of a request.
pub enum Credentials<'a> {
    /// A browser's cookies: the session cookie names the session, the device cookie the
    /// device.
    Cookies(&'a (dyn CookieSource + Sync)),
    /// `Authorization: Bearer <token>`: the token alone counts (a cookie beside it does not).
    Bearer(&'a str),
    /// A sign-in in progress: the user has just passed their first factor. The cookies
    /// (the device cookie) come with it.
    FirstFactor {
        /// The user.
        user: &'a UserRecord,
        /// The factor passed.
        factor: &'a PassedFactor,
        /// Further factors the same step proved (an upstream provider's trusted `amr`).
        also: &'a [PassedFactor],
        /// The browser's cookies.
        cookies: &'a (dyn CookieSource + Sync),
    },
    /// A stored session, re-judged without a request of its own (a device's compliance
    /// changed). Its bound device is the device.
    Stored(Session),
    /// The user as a context file states them (`stepgate what-if`): no session, so the
    /// verdict is the policy's alone.
    Assumed(&'a UserRecord),
}

impl<'a> Credentials<'a> {
    /// What an app request carries: its bearer token, which alone counts, or else its
    /// cookies.
    pub fn of_app_request(headers: &'a HeaderMap, cookies: &'a (dyn CookieSource + Sync)) -> Self {
        match super::bearer::bearer_token(headers) {
            Some(token) => Credentials::Bearer(token),
            None => Credentials::Cookies(cookies),
        }
    }
}

/// Who a request comes from, once its credentials are checked.
pub struct Subject {
    /// The user (a stand-in record for a bearer token's subject).
    pub user: Arc<UserRecord>,
    /// How they are authenticated.
    pub who: Who,
}

/// How a subject is authenticated.
pub enum Who {
    /// An established session (or, re-judged, a stored one).
    Session(Session),
    /// The session a sign-in would create, with the first factor only.
    Prospective(Box<SessionData>),
    /// A verified bearer token, with a stand-in session built from its claims (never stored).
    Bearer(Box<BearerIdentity>, Session),
    /// Stated, not authenticated (`stepgate what-if`).
    Assumed,
}

impl Who {
    /// The session, or the stand-in, or the one a sign-in would create.
    pub fn session_data(&self) -> Option<&SessionData> {
        match self {
            Who::Session(s) | Who::Bearer(_, s) => Some(&s.data),
            Who::Prospective(d) => Some(d),
            Who::Assumed => None,
        }
    }
}

/// The client address of a request from `peer` (see [`stepgate_request::forwarded`]):
/// `None` when a trusted proxy forwarded it without saying from where in a way stepgate
/// can read. Also recorded as the request span's `client`, for its log lines.
pub fn client_ip(
    rt: &crate::app::state::Runtime,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    use stepgate_request::ForwardedHeader;
    let which = match rt.config.server.client_address_header {
        stepgate_config::ClientAddressHeader::XForwardedFor => ForwardedHeader::XForwardedFor,
        stepgate_config::ClientAddressHeader::Forwarded => ForwardedHeader::Forwarded,
    };
    let trusted = &rt.config.trusted_proxies;
    let ip = stepgate_request::client_addr(peer.ip(), headers, which, |ip| {
        trusted.iter().any(|n| n.contains(&ip))
    })
    .ip();
    // The request's log lines name the client from here on (the span starts with the peer).
    // (Finding the current span is skipped when `info`, the request span's level, is off.)
    if let Some(ip) = ip.filter(|_| tracing::level_enabled!(tracing::Level::INFO)) {
        tracing::Span::current().record("client", tracing::field::display(ip));
    }
    ip
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn runtime(extra: &str) -> crate::app::state::Runtime {
        let text = format!("apps: []\nserver:\n  trusted_proxies: [10.0.0.0/8]\n{extra}");
        crate::app::state::Runtime::new(stepgate_config::load_str("t.yaml", &text, None).unwrap())
    }

    #[test]
    fn the_configured_header_alone_names_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
        h.insert("forwarded", "for=198.51.100.8".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.2:1234".parse().unwrap();
        assert_eq!(
            client_ip(&runtime(""), proxy, &h),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            client_ip(&runtime("  client_address_header: forwarded\n"), proxy, &h),
            Some("198.51.100.8".parse().unwrap())
        );
        // Unreadable: unknown, never the proxy itself.
        h.insert("x-forwarded-for", "unknown".parse().unwrap());
        assert_eq!(client_ip(&runtime(""), proxy, &h), None);
        assert_eq!(client_ip(&runtime(""), proxy, &HeaderMap::new()), None);
        // From anyone else the headers are not read.
        let client: SocketAddr = "203.0.113.5:1".parse().unwrap();
        assert_eq!(
            client_ip(&runtime(""), client, &h),
            Some("203.0.113.5".parse().unwrap())
        );
    }
}
