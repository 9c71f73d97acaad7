//! Builds the policy engine's request context from an HTTP request, the session, the user
//! record and the device signals.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method, Uri};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use stepgate_policy::{
    AttributeValue, NetworkContext, RequestContext, RequestInfo, RequestKind, UserContext,
};
use stepgate_store::UserRecord;

/// The client address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy. A forwarded
/// header from anyone else is ignored.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    if !trusted.iter().any(|n| n.contains(&peer_ip)) {
        return peer_ip;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else { return peer_ip };
        for part in s.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(canonical(ip)),
                // A malformed chain is not trusted at all.
                Err(_) => return peer_ip,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|n| n.contains(ip)))
        .unwrap_or(peer_ip)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
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
    ip: IpAddr,
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
            ip: Some(ip),
            ..NetworkContext::default()
        },
        ..RequestContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().unwrap());
        m
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: SocketAddr = "203.0.113.5:1234".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h("10.1.1.1"), &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_for_from_a_trusted_proxy_gives_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: SocketAddr = "10.0.0.2:1234".parse().unwrap();
        // The client forged the first entry; the proxy appended the real address.
        assert_eq!(
            client_ip(peer, &h("1.2.3.4, 198.51.100.7, 10.0.0.9"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, &h("garbage"), &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, &HeaderMap::new(), &trusted),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }
}
