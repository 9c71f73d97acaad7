use std::sync::Arc;

use super::*;

#[test]
fn client_addresses_are_written_as_display_writes_them() {
    let mut all = vec![
        "0.0.0.0",
        "255.255.255.255",
        "10.0.9.100",
        "1.20.199.7",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:192.0.2.1",
    ]
    .into_iter()
    .map(|s| s.parse::<std::net::IpAddr>().unwrap())
    .collect::<Vec<_>>();
    for octet in 0..=255u8 {
        all.push(std::net::Ipv4Addr::new(octet, 255 - octet, octet / 7, 9).into());
    }
    for ip in all {
        let mut s = "x".to_string();
        push_ip(&mut s, ip);
        assert_eq!(s, format!("x{ip}"));
    }
}

// Written out, not taken from the lists under test: each must go, under its own name and
// under every spelling a CGI-style upstream reads as it.
const STEPGATES: [&str; 25] = [
    "remote-user",
    "remote-groups",
    "remote-email",
    "remote-name",
    "remote-aal",
    "remote-amr",
    "remote-auth-time",
    "x-stepgate-assertion",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    // Configured: the assertion header under another name, the client certificate.
    "x-app-identity",
    "x-client-cert",
];
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

fn configured() -> Vec<String> {
    vec!["x-app-identity".to_string(), "x-client-cert".to_string()]
}

#[test]
fn a_request_going_upstream_keeps_only_what_the_client_may_say() {
    let mut h = HeaderMap::new();
    for n in STEPGATES.iter().chain(&HOP_BY_HOP) {
        for spelling in [n.to_string(), n.replace('-', "_"), n.replace('-', ".")] {
            let name = HeaderName::from_bytes(spelling.as_bytes()).unwrap();
            h.append(&name, HeaderValue::from_static("spoofed"));
            h.append(&name, HeaderValue::from_static("twice"));
        }
    }
    h.insert(
        header::CONNECTION,
        "close, X-Hop, Bad Name".parse().unwrap(),
    );
    h.insert("x-hop", "1".parse().unwrap());
    h.insert(header::ACCEPT, "text/html".parse().unwrap());
    h.insert("x-app-header", "kept".parse().unwrap());
    h.insert("x_app_header", "kept".parse().unwrap());
    h.insert("remote-user-agent", "kept".parse().unwrap());
    h.insert("remote_user_agent", "kept".parse().unwrap());
    strip_request(&mut h, &configured());
    let mut left: Vec<_> = h.keys().map(|n| n.as_str()).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "accept",
            "remote-user-agent",
            "remote_user_agent",
            "x-app-header",
            "x_app_header"
        ],
        "only the app's own headers are left"
    );
}

#[test]
fn forward_auth_refuses_a_request_carrying_a_respelled_identity_header() {
    let configured = configured();
    let mut h = HeaderMap::new();
    h.insert("remote-user", "x".parse().unwrap());
    h.insert("x_app_header", "x".parse().unwrap());
    assert_eq!(respelled_header(&h, &configured), None);
    h.insert("x_stepgate_assertion", "x".parse().unwrap());
    assert_eq!(
        respelled_header(&h, &configured).map(|n| n.as_str()),
        Some("x_stepgate_assertion")
    );
    let mut h = HeaderMap::new();
    h.insert("x_client_cert", "x".parse().unwrap());
    assert!(respelled_header(&h, &configured).is_some());
    let mut h = HeaderMap::new();
    h.insert("remote.user", "x".parse().unwrap());
    assert!(respelled_header(&h, &configured).is_some());
}

/// The forwarding headers for a client at `ip` asking `host` over `proto`.
fn forwarding(ip: Option<&str>, host: &str, proto: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    put_forwarding(&mut h, ip.map(|i| i.parse().unwrap()), host, proto);
    h
}

/// A known client is named in both address headers.
fn assert_client(h: &HeaderMap, ip: &str) {
    assert_eq!(h["x-forwarded-for"], ip);
    assert_eq!(h["x-real-ip"], ip);
}

/// An unknown client is said to be unknown, never given an address.
fn assert_unknown_client(h: &HeaderMap, forwarded: &str) {
    assert!(h.get("x-forwarded-for").is_none());
    assert!(h.get("x-real-ip").is_none());
    assert_eq!(h["forwarded"], forwarded);
}

#[test]
fn forwarding_headers_say_what_stepgate_knows() {
    let h = forwarding(Some("2001:db8::1"), "app.example.com", "https");
    assert_client(&h, "2001:db8::1");
    assert_eq!(h["x-forwarded-host"], "app.example.com");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(
        h["forwarded"],
        "for=\"[2001:db8::1]\";host=\"app.example.com\";proto=https"
    );
    let h = forwarding(Some("10.0.0.1"), "bad\u{7f}host", "http");
    assert!(
        h.get("x-forwarded-host").is_none(),
        "a host that is no header value"
    );
    assert_eq!(h["forwarded"], "for=10.0.0.1;proto=http");
    let h = forwarding(None, "app.example.com", "https");
    assert_unknown_client(&h, "for=unknown;host=\"app.example.com\";proto=https");
}

#[test]
fn forwarding_headers_kept_per_thread_follow_each_client_host_and_scheme() {
    // The values are reused while client, host and scheme stay the same; any change
    // (and a client becoming unknown) builds them anew, never repeating the last ones.
    let put = forwarding;
    let a = put(Some("10.0.0.1"), "a.example.com", "https");
    assert_eq!(a["x-forwarded-for"], "10.0.0.1");
    let again = put(Some("10.0.0.1"), "a.example.com", "https");
    assert_eq!(again, a);
    let b = put(Some("10.0.0.2"), "a.example.com", "https");
    assert_client(&b, "10.0.0.2");
    assert_eq!(
        b["forwarded"],
        "for=10.0.0.2;host=\"a.example.com\";proto=https"
    );
    let other_host = put(Some("10.0.0.2"), "b.example.com", "https");
    assert_eq!(other_host["x-forwarded-host"], "b.example.com");
    let plain = put(Some("10.0.0.2"), "b.example.com", "http");
    assert_eq!(plain["x-forwarded-proto"], "http");
    let unknown = put(None, "b.example.com", "http");
    assert_unknown_client(&unknown, "for=unknown;host=\"b.example.com\";proto=http");
}

#[test]
fn own_cookies_are_taken_out_and_the_rest_joined() {
    let own = vec!["stepgate_session".to_string(), "stepgate_pre".to_string()];
    let mut h = HeaderMap::new();
    h.append(header::COOKIE, "a=1; stepgate_session=s".parse().unwrap());
    h.append(header::COOKIE, "stepgate_pre=p".parse().unwrap());
    h.append(header::COOKIE, "b=2".parse().unwrap());
    strip_own_cookies(&mut h, &own, None);
    let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
    assert_eq!(all, ["a=1; b=2"]);
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, " stepgate_session=s ".parse().unwrap());
    strip_own_cookies(&mut h, &own, None);
    assert!(h.get(header::COOKIE).is_none());
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, "a=1;b=2".parse().unwrap());
    strip_own_cookies(&mut h, &own, None);
    assert_eq!(
        h[header::COOKIE],
        "a=1;b=2",
        "untouched when there is nothing to take"
    );
    // One line holding stepgate's cookie among the app's.
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        "a=1; stepgate_session=s;b=2".parse().unwrap(),
    );
    strip_own_cookies(&mut h, &own, None);
    assert_eq!(h[header::COOKIE], "a=1; b=2");
    // A line that is not visible ASCII cannot be read piece by piece: it goes whole, with
    // the session cookie in it.
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_bytes(b"a=\xc3\xa9; stepgate_session=s").unwrap(),
    );
    strip_own_cookies(&mut h, &own, None);
    assert!(h.get(header::COOKIE).is_none());
}

#[test]
fn own_cookies_go_under_every_spelling_both_ways() {
    let own = vec!["stepgate_session".to_string(), "stepgate_pre".to_string()];
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        "a=1; __Host-stepgate_session=s; STEPGATE_PRE=p"
            .parse()
            .unwrap(),
    );
    h.append(header::COOKIE, "stepgate%5Fsession=x; b=2".parse().unwrap());
    strip_own_cookies(&mut h, &own, None);
    let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
    assert_eq!(all, ["a=1; b=2"]);
    let mut r = HeaderMap::new();
    for v in [
        "__Host-stepgate_session=planted; Path=/",
        "__host-Stepgate_Session=planted",
        "%5F_Host-stepgate_session=planted",
        "stepgate_pre=",
        "app=1; Path=/",
        "stepgate_sessions=ok",
    ] {
        r.append(header::SET_COOKIE, HeaderValue::from_static(v));
    }
    strip_own_set_cookies(&mut r, &own);
    let kept: Vec<_> = r.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(kept, ["app=1; Path=/", "stepgate_sessions=ok"]);
}

fn assurance() -> Assurance {
    Assurance {
        aal: 2,
        amr: vec!["pwd".into(), "otp".into(), "x,hwk".into()],
        phishing_resistant: false,
        hardware_bound: false,
        restricted: false,
        auth_time: None,
    }
}

#[test]
fn identity_headers_reach_the_upstream_as_they_are_meant() {
    let mut u = UserRecord::new("jane");
    u.groups = vec![
        "staff".into(),
        "eng,admins".into(),
        " admins".into(),
        "admins\t".into(),
        String::new(),
        "ops".into(),
    ];
    u.email = Some("jane@example.com".into());
    let h: std::collections::HashMap<_, _> = identity_headers(&Arc::new(u), &assurance())
        .into_iter()
        .map(|(n, v)| (n.as_str().to_string(), v))
        .collect();
    assert_eq!(h["remote-user"], "jane");
    assert_eq!(h["remote-email"], "jane@example.com");
    // A group that would split into others, or be trimmed into another, is left out.
    assert_eq!(h["remote-groups"], "staff,ops");
    assert_eq!(h["remote-amr"], "pwd,otp");
    // A name HTTP would trim into another user's is not asserted at all.
    let padded = Arc::new(UserRecord::new(" admin"));
    let h = identity_headers(&padded, &assurance());
    assert!(h.iter().all(|(n, _)| *n != names::REMOTE_USER));
}

/// Each user record's headers are its own — called again, for many records in turn, and for
/// a record loaded anew (the user changed) where the old one was — as `asserted.rs`, which
/// keeps them per session state, relies on.
#[test]
fn identity_headers_follow_the_user_record_they_are_built_from() {
    let names_of = |h: &[(HeaderName, HeaderValue)]| -> Vec<String> {
        h.iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect()
    };
    let mut u = UserRecord::new("jane");
    u.groups = vec!["staff".into()];
    let first = Arc::new(u.clone());
    let once = names_of(&identity_headers(&first, &assurance()));
    assert!(
        once.contains(&"remote-groups: staff".to_string()),
        "{once:?}"
    );
    assert_eq!(names_of(&identity_headers(&first, &assurance())), once);
    // Many records at once, each read back as its own.
    let many: Vec<Arc<UserRecord>> = (0..600)
        .map(|i| Arc::new(UserRecord::new(format!("user{i}"))))
        .collect();
    for _ in 0..2 {
        for (i, r) in many.iter().enumerate() {
            let h = names_of(&identity_headers(r, &assurance()));
            assert_eq!(h[0], format!("remote-user: user{i}"));
        }
    }
    // The user changes: a new record, while the old one is gone.
    drop(first);
    for round in 0..50 {
        u.groups = vec![format!("group{round}")];
        let changed = Arc::new(u.clone());
        let h = names_of(&identity_headers(&changed, &assurance()));
        assert!(
            h.contains(&format!("remote-groups: group{round}")),
            "round {round}: {h:?}"
        );
    }
}
