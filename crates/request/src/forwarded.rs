//! The client's address behind trusted proxies.
//!
//! A proxy in `server.trusted_proxies` appends the address it received the request from to
//! the forwarding header (`X-Forwarded-For`, or RFC 7239 `Forwarded`, whichever the
//! deployment names). So the chain is read from the right: entries written by trusted
//! proxies are passed over, and the first other one is the client. Anything left of it was
//! written by the client and is never evidence.
//!
//! The reading fails safe: an entry that is not a plain IP address (garbage, `unknown`, an
//! obfuscated identifier, a port or brackets in `X-Forwarded-For`, an empty entry, bytes
//! outside ASCII), or a trusted proxy that sent no forwarding header at all, stops the walk
//! and the client is [`ClientAddr::Unknown`]: never the proxy's own address, which could
//! sit in a trusted network zone.

use std::net::IpAddr;

use http::HeaderMap;

/// Which header the trusted proxies write the client address to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default; nginx, Traefik, Caddy,
    /// Envoy, HAProxy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:443"`.
    Forwarded,
}

/// Where a request comes from, as far as stepgate can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    /// The peer, or the address the trusted proxies vouch for.
    Known(IpAddr),
    /// A trusted proxy forwarded the request but its header did not say from where: no
    /// network zone, country or address condition matches it.
    Unknown,
}

impl ClientAddr {
    /// The address, when known.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            ClientAddr::Known(ip) => Some(ip),
            ClientAddr::Unknown => None,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request that arrived from `peer`: the peer itself unless
/// `trusted(peer)`, else the right-most entry of `header` that `trusted` does not claim
/// (every header line of that name, in order, as one list). Every address is compared and
/// returned in canonical form ([`canonical`]).
pub fn client_addr(
    peer: IpAddr,
    headers: &HeaderMap,
    header: ForwardedHeader,
    trusted: impl Fn(IpAddr) -> bool,
) -> ClientAddr {
    let peer = canonical(peer);
    if !trusted(peer) {
        return ClientAddr::Known(peer);
    }
    // Names parsed at compile time (a `&str` name is parsed and hashed on every call).
    const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
    let name = match header {
        ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
        ForwardedHeader::Forwarded => http::header::FORWARDED,
    };
    let lines = headers.get_all(name);
    if lines.iter().next().is_none() {
        return ClientAddr::Unknown;
    }
    let mut last_trusted = None;
    // Right to left over the lines, and over the entries of each. Bytes outside ASCII stop
    // the walk at the entry holding them, not before it: left of the proxies' entries they
    // are the client's, and count for nothing.
    for line in lines.iter().rev() {
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            let text = std::str::from_utf8(entry).ok().filter(|e| e.is_ascii());
            let ip = text.and_then(|entry| match header {
                ForwardedHeader::XForwardedFor => xff_entry(entry),
                ForwardedHeader::Forwarded => forwarded_element(entry),
            });
            let Some(ip) = ip.map(canonical) else {
                return ClientAddr::Unknown;
            };
            if !trusted(ip) {
                return ClientAddr::Known(ip);
            }
            last_trusted = Some(ip);
        }
    }
    // Every hop is a trusted proxy: the request started inside, at the left-most one.
    last_trusted.map_or(ClientAddr::Unknown, ClientAddr::Known)
}

/// One `X-Forwarded-For` entry: a bare IPv4 or IPv6 address, whitespace around it allowed.
fn xff_entry(entry: &str) -> Option<IpAddr> {
    entry.trim_matches([' ', '\t']).parse().ok()
}

/// The `for=` node of one RFC 7239 element: `for=192.0.2.1`, `for="192.0.2.1:8080"`,
/// `for="[2001:db8::1]"`, `for="[2001:db8::1]:443"`. `unknown`, obfuscated identifiers
/// (`_hidden`) and an element without `for=` give `None`.
fn forwarded_element(element: &str) -> Option<IpAddr> {
    let mut node = None;
    for pair in element.split(';') {
        let (k, v) = pair.trim_matches([' ', '\t']).split_once('=')?;
        if k.eq_ignore_ascii_case("for") {
            if node.is_some() {
                // Two `for=` in one element: which one is meant is anyone's guess.
                return None;
            }
            node = Some(v);
        }
    }
    let node = node?;
    let node = match node.strip_prefix('"') {
        Some(q) => q.strip_suffix('"')?,
        None => node,
    };
    if let Some(rest) = node.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || port(after.strip_prefix(':')?)) {
            return None;
        }
        return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let host = match node.split_once(':') {
        Some((h, p)) if port(p) => h,
        Some(_) => return None,
        None => node,
    };
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &'static str, values: &[&[u8]]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(name, http::HeaderValue::from_bytes(v).unwrap());
        }
        m
    }

    fn ten(ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
    }

    fn xff(values: &[&[u8]]) -> ClientAddr {
        client_addr(
            "10.0.0.2".parse().unwrap(),
            &h("x-forwarded-for", values),
            ForwardedHeader::XForwardedFor,
            ten,
        )
    }

    fn fwd(values: &[&[u8]]) -> ClientAddr {
        client_addr(
            "10.0.0.2".parse().unwrap(),
            &h("forwarded", values),
            ForwardedHeader::Forwarded,
            ten,
        )
    }

    fn known(s: &str) -> ClientAddr {
        ClientAddr::Known(s.parse().unwrap())
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let m = h("x-forwarded-for", &[b"10.1.1.1"]);
        let peer: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(
            client_addr(peer, &m, ForwardedHeader::XForwardedFor, ten),
            known("203.0.113.5")
        );
        let mapped: IpAddr = "::ffff:203.0.113.5".parse().unwrap();
        assert_eq!(
            client_addr(mapped, &m, ForwardedHeader::XForwardedFor, ten),
            known("203.0.113.5")
        );
    }

    #[test]
    fn the_walk_from_the_right_stops_at_the_first_untrusted_address() {
        // The client forged the first entry; the proxy appended the real address.
        assert_eq!(
            xff(&[b"1.2.3.4, 198.51.100.7, 10.0.0.9"]),
            known("198.51.100.7")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            xff(&[b"1.2.3.4", b"198.51.100.7", b"10.0.0.9"]),
            known("198.51.100.7")
        );
        assert_eq!(xff(&[b" 2001:db8::7 "]), known("2001:db8::7"));
        assert_eq!(xff(&[b"::ffff:198.51.100.7"]), known("198.51.100.7"));
        // Only trusted hops: the request began at the left-most.
        assert_eq!(xff(&[b"10.9.9.9, 10.0.0.3"]), known("10.9.9.9"));
        // A client's garbage left of the real address does not matter.
        assert_eq!(xff(&[b"garbage, 198.51.100.7"]), known("198.51.100.7"));
    }

    #[test]
    fn an_entry_that_is_not_an_address_makes_the_client_unknown() {
        for bad in [
            &b"garbage"[..],
            b"unknown",
            b"198.51.100.7:1234",
            b"[2001:db8::1]",
            b"[2001:db8::1]:80",
            b"",
            b" ",
            b"198.51.100.7,",
            b"198.51.100.7, , 10.0.0.9",
            b"198.51.100.7\xc3\xa9",
            b"1.2.3.4.5",
            b"01.2.3.4",
            b"0x7f.0.0.1",
        ] {
            assert_eq!(
                xff(&[bad]),
                ClientAddr::Unknown,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A bad line right of good ones, or a trusted proxy that said nothing.
        assert_eq!(xff(&[b"198.51.100.7", b"bad"]), ClientAddr::Unknown);
        assert_eq!(xff(&[]), ClientAddr::Unknown);
        // `X-Forwarded-For` is not read when `Forwarded` is the configured header.
        let mut m = h("x-forwarded-for", &[b"198.51.100.7"]);
        m.append("forwarded", "for=198.51.100.8".parse().unwrap());
        assert_eq!(
            client_addr(
                "10.0.0.2".parse().unwrap(),
                &m,
                ForwardedHeader::Forwarded,
                ten
            ),
            known("198.51.100.8")
        );
    }

    /// Found by the `forwarded_for` fuzz target: one byte outside ASCII anywhere in the
    /// header, even on a line of the client's left of the proxies' entries, made the client
    /// unknown, so a client could shed its own address (and its zone and country) at will.
    #[test]
    fn bytes_outside_ascii_left_of_the_client_address_count_for_nothing() {
        assert_eq!(xff(&[b"\xff", b"198.51.100.7"]), known("198.51.100.7"));
        assert_eq!(
            xff(&[b"garbage\xc3\xa9, 198.51.100.7, 10.0.0.9"]),
            known("198.51.100.7")
        );
        assert_eq!(
            fwd(&[b"for=\"\xff\", for=198.51.100.7"]),
            known("198.51.100.7")
        );
        // Where the walk reaches them, they still stop it.
        for bad in [
            &[&b"198.51.100.7\xc3\xa9"[..]][..],
            &[b"198.51.100.7", b"\xff"],
            &[b"198.51.100.7, \xff, 10.0.0.9"],
        ] {
            assert_eq!(xff(bad), ClientAddr::Unknown, "{bad:?}");
        }
        assert_eq!(fwd(&[b"for=198.51.100.7;x=\xc3\xa9"]), ClientAddr::Unknown);
    }

    #[test]
    fn forwarded_elements_name_their_node_in_rfc_7239_syntax() {
        assert_eq!(
            fwd(&[b"for=1.2.3.4, for=198.51.100.7;proto=https, for=10.0.0.9"]),
            known("198.51.100.7")
        );
        assert_eq!(fwd(&[b"For=\"198.51.100.7:8443\""]), known("198.51.100.7"));
        assert_eq!(fwd(&[b"for=\"[2001:db8::1]\""]), known("2001:db8::1"));
        assert_eq!(
            fwd(&[b"for=\"[2001:db8::1]:443\";by=x"]),
            known("2001:db8::1")
        );
        for bad in [
            &b"for=unknown"[..],
            b"for=_hidden",
            b"by=10.0.0.1",
            b"for=\"[2001:db8::1\"",
            b"for=2001:db8::1",
            b"for=\"198.51.100.7",
            b"for=198.51.100.7:http",
            b"for=1.2.3.4;for=198.51.100.7",
            b"for",
            b"",
        ] {
            assert_eq!(
                fwd(&[bad]),
                ClientAddr::Unknown,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
