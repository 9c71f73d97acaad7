use super::*;

fn runtime() -> Runtime {
    let cfg = stepgate_config::load_str(
        "t.yaml",
        r#"
apps:
  - id: console
    hosts: [app.test]
    routes: [{ name: admin, path: /admin/**, tags: [sensitive] }]
  - id: legacy
    hosts: [legacy.test]
    case_insensitive_paths: true
    routes: [{ name: admin, path: /admin/**, tags: [sensitive] }]
  - id: java
    hosts: [java.test]
    routes: [{ name: admin, path: /admin/**, tags: [sensitive] }]
gateway:
  apps:
    java: { path_parameters: strip }
"#,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Runtime::new(cfg)
}

/// Each entry point's reading of `raw` (bytes of `/path?query` as a client sent them) for
/// `host`: the proxy's and Envoy's only when the bytes make a request line hyper accepts.
fn readings(
    rt: &Runtime,
    host: &str,
    raw: &[u8],
) -> Vec<(&'static str, Result<Original, Unreadable>)> {
    let mut out = Vec::new();
    let uri = Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(raw)).ok();
    if let Some(uri) = &uri {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        out.push(("proxy", proxied(rt, &Method::GET, uri, &h, false)));
        let mut envoy_target = b"/_stepgate/auth/envoy".to_vec();
        envoy_target.extend_from_slice(raw);
        if let Ok(check) = Uri::from_maybe_shared(bytes::Bytes::from(envoy_target)) {
            out.push((
                "envoy",
                envoy(rt, &Method::GET, &check, &h, "/_stepgate/auth/envoy"),
            ));
        }
    }
    let Ok(value) = HeaderValue::from_bytes(raw) else {
        // Bytes no header can carry (CR, LF, NUL): no front proxy can report them.
        return out;
    };
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-method", HeaderValue::from_static("GET"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    h.insert("x-forwarded-host", HeaderValue::from_str(host).unwrap());
    h.insert("x-forwarded-uri", value);
    out.push(("forward", forward_headers(rt, &h)));
    let mut url = format!("https://{host}").into_bytes();
    url.extend_from_slice(raw);
    let mut h = HeaderMap::new();
    h.insert("x-original-method", HeaderValue::from_static("GET"));
    h.insert("x-original-url", HeaderValue::from_bytes(&url).unwrap());
    out.push(("nginx", nginx_headers(rt, &h)));
    out
}

/// A reading as the entry points must agree on it: what was read, or which part of the
/// request was refused (the target, the host, …). Which fault in a refused target is named
/// may differ: each reports the first it meets, and a front proxy's header is checked for
/// raw bytes before the target is read.
fn outcome(
    r: &Result<Original, Unreadable>,
) -> Result<&Original, std::mem::Discriminant<Unreadable>> {
    r.as_ref().map_err(std::mem::discriminant)
}

/// Whether `r` refuses the target (for any fault in it).
fn refuses_the_target(r: &Result<Original, Unreadable>) -> bool {
    matches!(r, Err(Unreadable::Target(_)))
}

fn piece() -> impl proptest::strategy::Strategy<Value = &'static [u8]> {
    proptest::sample::select(vec![
        &b"/"[..],
        b"/",
        b"/",
        b".",
        b"..",
        b"%2e",
        b"%2F",
        b"%5c",
        b";",
        b"%3B",
        b"a",
        b"admin",
        b"ADMIN",
        b"%61",
        b"%C3%A9",
        b"%c5%bf",
        b"\xc3\xa9",
        b"\xff",
        b"%",
        b"%zz",
        b"?",
        b"#",
        b"\\",
        b" ",
        b"\t",
        b"%00",
        b"\"",
        b"<",
        b"`",
        b"|",
        b"{",
        b"~",
        b"%7e",
        b"x=y",
        b"&",
        b"@",
        b":",
    ])
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]

    /// The proxy and every forward-auth endpoint read one target one way: all refuse it, or
    /// all accept it as the same method, host and normal-form target.
    #[test]
    fn every_entry_point_reads_a_target_the_same_way(
        pieces in proptest::collection::vec(piece(), 0..10),
        host in proptest::sample::select(vec!["app.test", "legacy.test", "java.test", "other.test"]),
    ) {
        let rt = runtime();
        let raw: Vec<u8> = std::iter::once(&b"/"[..]).chain(pieces).flatten().copied().collect();
        let mut all = readings(&rt, host, &raw);
        if let Some(cut) = raw.iter().position(|&b| b == b'#') {
            // hyper drops a fragment before stepgate sees the request (and the proxy
            // forwards what it decided on, without it): the proxy reads the target up to
            // the `#`, while the forward-auth endpoints, whose front proxy passes the `#`
            // on, refuse it.
            let cut_readings = readings(&rt, host, &raw[..cut]);
            for (name, r) in all.iter().filter(|(n, _)| matches!(*n, "proxy" | "envoy")) {
                let same = cut_readings.iter().find(|(n, _)| n == name).map(|(_, r)| r);
                proptest::prop_assert_eq!(Some(r), same, "{}", name);
            }
            all.retain(|(n, _)| !matches!(*n, "proxy" | "envoy"));
            // With no other fault a first pass over the bytes meets, the `#` is the reason.
            let only_the_fragment = raw
                .iter()
                .all(|&b| (0x21..=0x7E).contains(&b) && !b"\\\"<>`".contains(&b));
            for (name, r) in &all {
                proptest::prop_assert!(refuses_the_target(r), "{} read {:?} as {:?}", name, String::from_utf8_lossy(&raw), r);
                if only_the_fragment {
                    proptest::prop_assert_eq!(r, &Err(TargetRefusal::Fragment.into()), "{}", name);
                }
            }
            return Ok(());
        }
        let (first_name, first) = &all[0];
        for (name, r) in &all[1..] {
            proptest::prop_assert_eq!(
                outcome(r), outcome(first),
                "{} and {} disagree on {:?}: {:?}, {:?}", name, first_name, String::from_utf8_lossy(&raw), r, first
            );
        }
        // What one entry point cannot even see (hyper refuses the request line, or no
        // header can carry it) no other accepts.
        if all.len() < 4 {
            for (name, r) in &all {
                proptest::prop_assert!(refuses_the_target(r), "{} read {:?} as {:?}", name, String::from_utf8_lossy(&raw), r);
            }
        }
    }
}

#[test]
fn forward_auth_headers_are_required_and_read_once() {
    let rt = runtime();
    let full = || {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-method", HeaderValue::from_static("POST"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("app.test"));
        h.insert(
            "x-forwarded-uri",
            HeaderValue::from_static("/a/../admin?x=1"),
        );
        h
    };
    let o = forward_headers(&rt, &full()).unwrap();
    assert_eq!(o.method, Method::POST);
    assert_eq!(o.target, "/admin?x=1");
    assert_eq!(o.url(), "https://app.test/admin?x=1");
    for name in ["x-forwarded-method", "x-forwarded-host", "x-forwarded-uri"] {
        let mut h = full();
        h.remove(name);
        assert_eq!(
            forward_headers(&rt, &h),
            Err(Unreadable::Missing(name)),
            "{name}"
        );
        let mut h = full();
        h.append(name, HeaderValue::from_static("/x"));
        assert_eq!(
            forward_headers(&rt, &h),
            Err(Unreadable::Garbled(name)),
            "{name}"
        );
    }
    // The scheme alone has a default (the portal's: secure cookies, https); a bad one is
    // refused all the same.
    let mut h = full();
    h.remove("x-forwarded-proto");
    h.insert("x-forwarded-proto", HeaderValue::from_static("HTTP"));
    assert_eq!(forward_headers(&rt, &h).unwrap().scheme, "http");
    h.remove("x-forwarded-proto");
    assert_eq!(forward_headers(&rt, &h).unwrap().scheme, "https");
    h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
    assert_eq!(forward_headers(&rt, &h), Err(Unreadable::Scheme));
    // Sent twice, even the same: garbled (each header is found in one pass over them all).
    let mut h = full();
    h.append("x-forwarded-proto", HeaderValue::from_static("https"));
    assert_eq!(
        forward_headers(&rt, &h),
        Err(Unreadable::Garbled("x-forwarded-proto"))
    );
    for (bad_host, refusal) in [
        ("evil.test/x@app.test", Unreadable::Host),
        ("app.test, other", Unreadable::Host),
        ("a b", Unreadable::Host),
        ("", Unreadable::Missing("x-forwarded-host")),
    ] {
        let mut h = full();
        h.insert("x-forwarded-host", HeaderValue::from_str(bad_host).unwrap());
        assert_eq!(forward_headers(&rt, &h), Err(refusal), "{bad_host}");
    }
    let mut h = full();
    h.insert("x-forwarded-method", HeaderValue::from_static("CONNECT"));
    assert!(forward_headers(&rt, &h).unwrap_err().unsupported_method());
}

#[test]
fn nginx_urls_are_split_not_resolved() {
    let rt = runtime();
    let read = |url: &[u8], method: &'static str| {
        let mut h = HeaderMap::new();
        h.insert("x-original-method", HeaderValue::from_static(method));
        h.insert("x-original-url", HeaderValue::from_bytes(url).unwrap());
        nginx_headers(&rt, &h)
    };
    let o = read(b"https://app.test:8443/a/b?x=1", "GET").unwrap();
    assert_eq!(
        (o.host.as_str(), o.target.to_string()),
        ("app.test:8443", "/a/b?x=1".into())
    );
    assert_eq!(o.url(), "https://app.test:8443/a/b?x=1");
    // A URL parser would turn these into `/admin` before they could be checked.
    assert_eq!(
        read(b"http://app.test/a\\..\\admin", "GET"),
        Err(TargetRefusal::Backslash.into())
    );
    assert_eq!(
        read(b"http://app.test/admin\xc3\xa9", "GET"),
        Err(TargetRefusal::RawByte(0xC3).into())
    );
    assert_eq!(
        read(b"http://app.test/%2e%2e/admin", "GET").unwrap().target,
        "/admin"
    );
    assert_eq!(read(b"ftp://app.test/", "GET"), Err(Unreadable::Scheme));
    assert_eq!(read(b"/relative", "GET"), Err(Unreadable::Scheme));
    assert_eq!(read(b"http://user@app.test/", "GET"), Err(Unreadable::Host));
    assert_eq!(
        read(b"http://app.test", "GET"),
        Err(TargetRefusal::NotOriginForm.into())
    );
    assert_eq!(
        read(b"http://app.test/", "BAD METHOD"),
        Err(MethodRefusal::Invalid.into())
    );
}

#[test]
fn the_apps_rules_decide_what_is_refused() {
    let rt = runtime();
    let read = |host: &str, target: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        proxied(&rt, &Method::GET, &target.parse().unwrap(), &h, false)
            .map(|o| o.target.to_string())
    };
    assert_eq!(
        read("app.test", "/admin;x"),
        Err(Unreadable::Target(TargetRefusal::PathParameters))
    );
    assert_eq!(read("java.test", "/public/..;x/admin;y").unwrap(), "/admin");
    assert_eq!(read("app.test", "/%C5%BFecret").unwrap(), "/%C5%BFecret");
    assert_eq!(
        read("legacy.test", "/%C5%BFecret"),
        Err(Unreadable::Target(TargetRefusal::CaseFoldsToAscii('ſ')))
    );
    // Two hosts, or none.
    let mut h = HeaderMap::new();
    h.append(header::HOST, HeaderValue::from_static("app.test"));
    h.append(header::HOST, HeaderValue::from_static("other.test"));
    assert!(matches!(
        proxied(&rt, &Method::GET, &"/".parse().unwrap(), &h, false),
        Err(Unreadable::TwoHosts(_))
    ));
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("app.test"));
    assert!(matches!(
        proxied(
            &rt,
            &Method::GET,
            &"http://other.test/".parse().unwrap(),
            &h,
            false
        ),
        Err(Unreadable::TwoHosts(_))
    ));
    assert!(proxied(
        &rt,
        &Method::CONNECT,
        &"app.test:443".parse().unwrap(),
        &h,
        false
    )
    .unwrap_err()
    .unsupported_method());
}
