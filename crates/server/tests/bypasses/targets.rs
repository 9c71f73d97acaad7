//! Class 1, one parse of the target: what upstreams would read differently is refused by
//! the proxy, and forward-auth refuses what it cannot read and never defaults.

use crate::common::*;
use crate::support::{raw, Browser};

#[tokio::test]
async fn targets_upstreams_read_differently_are_refused_by_the_proxy() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let cookie = format!("Cookie: stepgate_session={sid}\r\n");
    // Signed in, the app answers; its admin area is closed.
    let (status, _, body) = get_raw(&h, "app.test", b"/data", &cookie).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = get_raw(&h, "app.test", b"/admin/users", &cookie).await;
    assert_eq!(status, 403);
    for (target, why) in [
        (&b"/admin\xc3\xa9/users"[..], "raw byte"),
        (b"/data?q=\xc3\xa9", "raw byte"),
        (b"/admin;jsessionid=1/users", "parameters"),
        (b"/public;x/../admin/users", "parameters"),
        (b"/admin%3busers", "parameters"),
        (b"/public//../admin/users", "resolve differently"),
        (b"/public//x/../../admin/users", "resolve differently"),
        (b"/public//./../admin/users", "resolve differently"),
        (b"/%C0%AE%C0%AE/admin", "not valid UTF-8"),
        (b"/admin\\users", "\\"),
        (b"/a\"b", "percent-encoded"),
        (b"/data%00", "NUL"),
        (b"/admin%2fusers", "encoded /"),
    ] {
        let (status, head, body) = get_raw(&h, "app.test", target, &cookie).await;
        let shown = String::from_utf8_lossy(target);
        assert_eq!(status, 400, "{shown}: {body}");
        // The refusal is a portal page: its text is HTML-escaped (`/` as `&#x2f;`).
        let text = body.replace("&#x2f;", "/").replace("&#x5c;", "\\");
        assert!(text.contains(why), "{shown}: {body}");
        assert_security_headers(&head, &shown);
    }
    // Equivalent spellings are decided, and forwarded, in their one normal form.
    let (status, _, body) = get_raw(&h, "app.test", b"/x/../%61dmin/users", &cookie).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = get_raw(&h, "app.test", b"/x/./%64ata?q=%2F", &cookie).await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/x/data?q=%2F");
}

#[tokio::test]
async fn forward_auth_refuses_what_it_cannot_read_and_never_defaults() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let ask = |endpoint: &str, headers: &[(&str, &[u8])]| {
        let mut req = format!(
            "GET /_stepgate/auth/{endpoint} HTTP/1.1\r\nHost: stepgate.internal\r\nCookie: stepgate_session={sid}\r\n"
        )
        .into_bytes();
        for (k, v) in headers {
            req.extend_from_slice(k.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        let addr = h.addr;
        async move {
            let a = raw(addr, &req).await;
            (a.status, a.head, a.body)
        }
    };
    let forward = |uri: &'static [u8]| -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("X-Forwarded-Method", b"GET"),
            ("X-Forwarded-Proto", b"https"),
            ("X-Forwarded-Host", b"app.test"),
            ("X-Forwarded-Uri", uri),
        ]
    };
    // Allowed as it should be, refused on the admin area.
    assert_eq!(ask("forward", &forward(b"/data")).await.0, 200);
    assert_eq!(ask("forward", &forward(b"/admin/users")).await.0, 302);
    // Nothing defaults: without a target, method or host, nothing is decided.
    for missing in ["X-Forwarded-Uri", "X-Forwarded-Method", "X-Forwarded-Host"] {
        let headers: Vec<_> = forward(b"/admin/users")
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (status, head, body) = ask("forward", &headers).await;
        assert_eq!(status, 403, "without {missing}: {body}");
        assert!(body.contains(&missing.to_ascii_lowercase()), "{body}");
        assert_security_headers(&head, missing);
    }
    let (status, _, _) = ask(
        "nginx",
        &[("X-Original-URL", b"http://app.test/admin/users")],
    )
    .await;
    assert_eq!(status, 403, "nginx without X-Original-Method");
    // Spellings an upstream reads otherwise: refused at each endpoint.
    for target in [
        &b"/admin\xc3\xa9/users"[..],
        b"/admin;x=1/users",
        b"/x;/../admin/users",
        b"/public//../admin/users",
        b"/public//x/../../admin/users",
        b"/admin%2fusers",
        b"/admin\\users",
        b"/admin#/../data",
    ] {
        let shown = String::from_utf8_lossy(target).to_string();
        let (status, head, _) = ask("forward", &forward(target)).await;
        assert_eq!(status, 403, "forward {shown}");
        assert_security_headers(&head, &shown);
        let mut url = b"http://app.test".to_vec();
        url.extend_from_slice(target);
        let (status, _, _) = ask(
            "nginx",
            &[("X-Original-URL", &url), ("X-Original-Method", b"GET")],
        )
        .await;
        assert_eq!(status, 403, "nginx {shown}");
    }
    // A URL parser would have resolved these to the admin area and let the check pass on
    // another path; split by hand they are read as the upstream reads them.
    let (status, _, _) = ask(
        "nginx",
        &[
            ("X-Original-URL", b"http://app.test/x/%2e%2e/admin/users"),
            ("X-Original-Method", b"GET"),
        ],
    )
    .await;
    assert_eq!(status, 403, "the admin area, reached through ..");
    // The same header twice is not guessed at.
    let mut twice = forward(b"/data");
    twice.push(("X-Forwarded-Uri", b"/admin/users"));
    assert_eq!(ask("forward", &twice).await.0, 403);
    // An identity header under another spelling, which the front proxy may pass on.
    // The separator in the name's first eight bytes (`Remote_User`), after a full word
    // (`X-Forwarded_For`, 15 bytes), in its second word (`remote-auth_time`, 16 bytes): the
    // check reads eight bytes at a time. A dot, upper case.
    for name in [
        "Remote_User",
        "Remote.Groups",
        "remote-auth_time",
        "X-Forwarded_For",
        "REMOTE_AMR",
        "x-forwarded_user",
    ] {
        let mut spelled = forward(b"/data");
        spelled.push((name, b"admin"));
        let (status, _, body) = ask("forward", &spelled).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert!(body.contains(&name.to_ascii_lowercase()), "{name}: {body}");
    }
    // A name with a separator that folds to none of stepgate's headers is the app's.
    let mut theirs = forward(b"/data");
    theirs.push(("X_Custom_Trace.Id", b"1"));
    assert_eq!(ask("forward", &theirs).await.0, 200);
}

/// The headers a forward-auth endpoint reads are each found once under any case: sent twice
/// (in the same case or another, with the same value or not), or empty, they are refused,
/// never one of them picked. Envoy's `Host` alike.
#[tokio::test]
async fn forward_auth_headers_sent_twice_or_empty_are_refused_whatever_their_case() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let ask = |target: &str, lines: &[&str]| {
        let mut req =
            format!("GET {target} HTTP/1.1\r\nCookie: stepgate_session={sid}\r\n").into_bytes();
        for l in lines {
            req.extend_from_slice(l.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"Connection: close\r\n\r\n");
        let addr = h.addr;
        async move { raw(addr, &req).await.status }
    };
    let forward = [
        "Host: stepgate.internal",
        "X-Forwarded-Method: GET",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: app.test",
        "X-Forwarded-Uri: /data",
    ];
    assert_eq!(ask("/_stepgate/auth/forward", &forward).await, 200);
    for extra in [
        "x-forwarded-method: GET",
        "X-FORWARDED-METHOD: POST",
        "x-Forwarded-Host: app.test",
        "X-Forwarded-Proto: https",
        "x-forwarded-proto: HTTP",
        "X-FORWARDED-URI: /data",
    ] {
        let mut lines = forward.to_vec();
        lines.push(extra);
        assert_eq!(ask("/_stepgate/auth/forward", &lines).await, 403, "{extra}");
    }
    for (name, empty) in [
        ("X-Forwarded-Method", "X-Forwarded-Method: "),
        ("X-Forwarded-Host", "X-Forwarded-Host:  "),
    ] {
        let mut lines: Vec<_> = forward
            .iter()
            .copied()
            .filter(|l| !l.starts_with(name))
            .collect();
        lines.push(empty);
        assert_eq!(
            ask("/_stepgate/auth/forward", &lines).await,
            403,
            "{empty:?}"
        );
    }
    let nginx = [
        "Host: stepgate.internal",
        "X-Original-URL: http://app.test/data",
        "X-Original-Method: GET",
    ];
    assert_eq!(ask("/_stepgate/auth/nginx", &nginx).await, 200);
    for extra in [
        "x-original-method: GET",
        "X-ORIGINAL-URL: http://app.test/data",
    ] {
        let mut lines = nginx.to_vec();
        lines.push(extra);
        assert_eq!(ask("/_stepgate/auth/nginx", &lines).await, 403, "{extra}");
    }
    let envoy = ["Host: app.test"];
    assert_eq!(ask("/_stepgate/auth/envoy/data", &envoy).await, 200);
    let twice = ["Host: app.test", "host: app.test"];
    assert_eq!(ask("/_stepgate/auth/envoy/data", &twice).await, 403);
    let proto_twice = [
        "Host: app.test",
        "X-Forwarded-Proto: https",
        "x-forwarded-proto: https",
    ];
    assert_eq!(ask("/_stepgate/auth/envoy/data", &proto_twice).await, 403);
}
