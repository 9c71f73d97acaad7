//! Builds the policy engine's request context from an HTTP request, the session, the user
//! record and the device signals.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method, Uri};
use chrono::{DateTime, Utc};
use stepgate_policy::{
    AttributeValue, NetworkContext, RequestContext, RequestInfo, RequestKind, UserContext,
};
use stepgate_request::ForwardedHeader;
use stepgate_store::UserRecord;

/// The client address of a request from `peer` (see [`stepgate_request::forwarded`]):
/// `None` when a trusted proxy forwarded it without saying from where in a way stepgate
/// can read.
pub fn client_ip(
    rt: &crate::state::Runtime,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let which = match rt.config.server.client_address_header {
        stepgate_config::ClientAddressHeader::XForwardedFor => ForwardedHeader::XForwardedFor,
        stepgate_config::ClientAddressHeader::Forwarded => ForwardedHeader::Forwarded,
    };
    let trusted = &rt.config.trusted_proxies;
    stepgate_request::client_addr(peer.ip(), headers, which, |ip| {
        trusted.iter().any(|n| n.contains(&ip))
    })
    .ip()
}

/// The user as the policy sees them.
pub fn user_context(u: &UserRecord) -> UserContext {
    let attributes = u
        .attributes
        .iter()
        .map(|(k, v)| {
            let v = match v {
                stepgate_store::AttributeValue::One(s) => AttributeValue::One(s.clone()),
                stepgate_store::AttributeValue::Many(vs) => AttributeValue::Many(vs.clone()),
            };
            (k.clone(), v)
        })
        .collect();
    UserContext {
        username: u.username.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        groups: u.groups.clone(),
        attributes,
    }
}

/// A context for access to `app` (or the sign-in when `app` is `None` and `kind` is
/// [`RequestKind::SignIn`]): the request and the user. The signals, the user agent among
/// them, are added by [`crate::signals::enrich`].
pub fn request_context(
    kind: RequestKind,
    app: Option<&str>,
    method: &Method,
    uri: &Uri,
    ip: Option<IpAddr>,
    user: Option<&UserRecord>,
    now: DateTime<Utc>,
) -> RequestContext {
    RequestContext {
        kind,
        time: now,
        user: user.map(user_context),
        request: RequestInfo {
            app: app.map(str::to_string),
            method: method.as_str().to_string(),
            path: uri.path().to_string(),
        },
        network: NetworkContext {
            ip,
            ..NetworkContext::default()
        },
        ..RequestContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(extra: &str) -> crate::state::Runtime {
        let text = format!("apps: []\nserver:\n  trusted_proxies: [10.0.0.0/8]\n{extra}");
        crate::state::Runtime::new(stepgate_config::load_str("t.yaml", &text, None).unwrap())
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
