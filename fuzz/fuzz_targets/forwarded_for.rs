//! `stepgate_request::client_addr` on any forwarding header lines, peer and trusted-proxy
//! list. The input is a flags byte (bit 0: read `Forwarded` instead of `X-Forwarded-For`),
//! then lines split at `\n`: the first is `PEER NET NET…` (a peer that does not parse is
//! 10.0.0.2; no net that parses trusts 10.0.0.0/8, 192.0.2.0/24 and fd00::/8), every other
//! one a header line (lines that are not a valid header value are dropped).
//!
//! Checks, besides never panicking:
//! - with no trusted proxies, or a peer that is not one, the answer is the peer;
//! - only the configured header is read (the same lines under the other name change
//!   nothing);
//! - an address answered is canonical and appears in the header text; a trusted one only
//!   when it is the left-most entry (the request began inside);
//! - what the client wrote left of a trusted proxy's entry counts for nothing: appending an
//!   untrusted address, on a line of its own or to the last line after `, ` as nginx's
//!   `$proxy_add_x_forwarded_for` does, followed or not by a trusted hop, answers exactly
//!   that address.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use stepgate_request::forwarded::canonical;
use stepgate_request::{client_addr, ClientAddr, ForwardedHeader};

fn header_name(which: ForwardedHeader) -> &'static str {
    match which {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    }
}

/// How a proxy writes `ip` as one entry of `which`.
fn entry(which: ForwardedHeader, ip: IpAddr) -> String {
    match (which, ip) {
        (ForwardedHeader::XForwardedFor, ip) => ip.to_string(),
        (ForwardedHeader::Forwarded, IpAddr::V4(v4)) => format!("for={v4}"),
        (ForwardedHeader::Forwarded, IpAddr::V6(v6)) => format!("for=\"[{v6}]\""),
    }
}

/// Every address written anywhere in `text`, however delimited (`v4:port` included).
fn addresses_in(text: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for token in text.split([',', ';', '=', '"', '[', ']', ' ', '\t']) {
        if let Ok(ip) = token.parse::<IpAddr>() {
            found.push(canonical(ip));
        } else if let Some((host, _)) = token.rsplit_once(':') {
            if let Ok(v4) = host.parse::<Ipv4Addr>() {
                found.push(IpAddr::V4(v4));
            }
        }
    }
    found
}

fn headers(lines: &[Vec<u8>], names: &[&'static str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        for name in names {
            if let Ok(v) = HeaderValue::from_bytes(line) {
                map.append(*name, v);
            }
        }
    }
    map
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let which = if flags & 1 == 0 {
        ForwardedHeader::XForwardedFor
    } else {
        ForwardedHeader::Forwarded
    };
    let other = match which {
        ForwardedHeader::XForwardedFor => ForwardedHeader::Forwarded,
        ForwardedHeader::Forwarded => ForwardedHeader::XForwardedFor,
    };
    let mut split = rest.split(|&b| b == b'\n');
    let setup = String::from_utf8_lossy(split.next().unwrap_or_default());
    let mut words = setup.split(' ');
    let peer: IpAddr = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    let mut nets: Vec<IpNet> = words
        .filter_map(|w| {
            w.parse::<IpNet>()
                .ok()
                .or_else(|| w.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();
    if nets.is_empty() {
        nets = ["10.0.0.0/8", "192.0.2.0/24", "fd00::/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
    }
    let trusted = |ip: IpAddr| nets.iter().any(|n| n.contains(&ip));
    let lines: Vec<Vec<u8>> = split
        .filter(|l| HeaderValue::from_bytes(l).is_ok())
        .map(<[u8]>::to_vec)
        .collect();
    let name = header_name(which);
    let map = headers(&lines, &[name]);
    let peer_c = canonical(peer);

    let answer = client_addr(peer, &map, which, trusted);
    assert_eq!(
        client_addr(peer, &map, which, |_| false),
        ClientAddr::Known(peer_c),
        "no trusted proxies: the peer"
    );
    if !trusted(peer_c) {
        assert_eq!(answer, ClientAddr::Known(peer_c), "an untrusted peer");
        return;
    }
    let both = headers(&lines, &[name, header_name(other)]);
    assert_eq!(
        client_addr(peer, &both, which, trusted),
        answer,
        "the other header was read"
    );
    let texts: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    if texts.is_empty() {
        assert_eq!(
            answer,
            ClientAddr::Unknown,
            "a trusted proxy that said nothing"
        );
    }
    if let ClientAddr::Known(ip) = answer {
        assert_eq!(canonical(ip), ip, "not canonical: {ip}");
        let all = texts.join(",");
        assert!(addresses_in(&all).contains(&ip), "{ip} is not in {texts:?}");
        if trusted(ip) {
            let leftmost = texts
                .first()
                .and_then(|t| t.split(',').next())
                .unwrap_or_default();
            assert!(
                addresses_in(leftmost).contains(&ip),
                "trusted {ip} is not the left-most entry of {texts:?}"
            );
        }
    }

    // A trusted proxy appends the address it received the request from.
    let Some(client) = [
        "203.0.113.77",
        "2001:db8::77",
        "198.51.100.77",
        "::ffff:198.51.100.78",
    ]
    .iter()
    .filter_map(|a| a.parse::<IpAddr>().ok())
    .find(|ip| !trusted(canonical(*ip))) else {
        return;
    };
    let expected = ClientAddr::Known(canonical(client));
    let appended = entry(which, client);
    let hop = entry(which, peer_c);
    let mut own_line = lines.clone();
    own_line.push(appended.clone().into_bytes());
    assert_eq!(
        client_addr(peer, &headers(&own_line, &[name]), which, trusted),
        expected,
        "{appended} on a line after {texts:?}"
    );
    own_line.push(hop.clone().into_bytes());
    assert_eq!(
        client_addr(peer, &headers(&own_line, &[name]), which, trusted),
        expected,
        "{appended}, then trusted {hop}, after {texts:?}"
    );
    if let Some(last) = lines.last() {
        let mut joined = lines.clone();
        let mut line = last.clone();
        line.extend_from_slice(format!(", {appended}").as_bytes());
        if let Some(l) = joined.last_mut() {
            *l = line;
        }
        assert_eq!(
            client_addr(peer, &headers(&joined, &[name]), which, trusted),
            expected,
            "{appended} appended to the last of {texts:?}"
        );
    }
});
