//! Classes 6, 7 and 9: redirects name only configured hosts (others get 421), only
//! WebSocket upgrades pass (tunnels are 405), and every refusal carries the security headers.

use std::collections::BTreeMap;

use crate::common::*;
use crate::support::{raw, Browser, RawAnswer};

#[tokio::test]
async fn redirects_name_only_configured_hosts_and_others_get_421() {
    let h = start().await;
    let b = Browser::not_following();
    // An app host: the sign-in page on that host (the session cookie must be the app's).
    let r = b.get(h.url("app.test", "/data")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(
        to.starts_with(&h.url("app.test", "/_stepgate/login?t=")),
        "{to}"
    );
    // A host stepgate does not serve: no redirect, no page of the portal.
    for path in ["/", "/data", "/_stepgate/login", "/_stepgate/account"] {
        let (status, head, body) = get_raw(&h, "other.test", path.as_bytes(), "").await;
        assert_eq!(status, 421, "{path}: {body}");
        assert!(!head.contains("location:"), "{path}: {head}");
        assert_security_headers(&head, path);
        let (status, _, _) = get_raw(&h, "evil.test:1234", path.as_bytes(), "").await;
        assert_eq!(status, 421, "{path}");
    }
    // Forward-auth answers the proxy on any host; its redirects use the public URL.
    let (status, head, _) = get_raw(
        &h,
            "stepgate.internal:9091",
            b"/_stepgate/auth/forward",
            "X-Forwarded-Method: GET\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: app.test\r\nX-Forwarded-Uri: /data\r\n",
        )
        .await;
    assert_eq!(status, 302);
    assert!(
        head.contains(&format!(
            "location: http://app.test:{}/_stepgate/login?t=",
            h.addr.port()
        )),
        "{head}"
    );
    // The health endpoints answer any host.
    assert_eq!(get_raw(&h, "10.1.2.3", b"/healthz", "").await.0, 200);
}

#[tokio::test]
async fn only_websocket_upgrades_pass_and_tunnels_are_405() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let cookie = format!("Cookie: stepgate_session={sid}\r\n");
    // h2c: the upgrade is stripped, so the upstream is asked plainly. An upstream that
    // switches protocols all the same is refused, never spliced.
    let (status, head, _) = get_raw(
        &h,
            "switch.test",
            b"/",
            &format!("{cookie}Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n"),
        )
        .await;
    assert_eq!(status, 502, "{head}");
    assert_security_headers(&head, "unasked switch");
    // An h2c upgrade to an ordinary upstream reaches it as a plain request.
    let (status, _, body) = get_raw(
        &h,
        "app.test",
        b"/data",
        &format!("{cookie}Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    let seen: BTreeMap<String, String> = serde_json::from_str(&body).unwrap();
    assert!(!seen.contains_key("upgrade"), "{seen:?}");
    assert!(!seen.contains_key("http2-settings"), "{seen:?}");
    // A WebSocket upgrade is passed on, and the switch answered.
    let (status, head, _) = get_raw(
        &h,
            "switch.test",
            b"/",
            &format!("{cookie}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"),
        )
        .await;
    assert_eq!(status, 101, "{head}");
    // Tunnels and TRACE: 405.
    for req in [
        &b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\nConnection: close\r\n\r\n"[..],
        b"TRACE /data HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    ] {
        let RawAnswer { status, head, .. } = raw(h.addr, req).await;
        assert_eq!(status, 405, "{}", String::from_utf8_lossy(req));
        assert!(head.contains("allow: "), "{head}");
        assert_security_headers(&head, "405");
    }
}

#[tokio::test]
async fn every_refusal_carries_the_security_headers() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let cookie = format!("Cookie: stepgate_session={sid}\r\n");
    for (host, target, extra, want) in [
        ("app.test", &b"/a;b"[..], "", 400),
        ("app.test", b"/admin/users", cookie.as_str(), 403),
        ("app.test", b"/nothing", "Accept: application/json\r\n", 401),
        ("down.test", b"/", cookie.as_str(), 502),
        ("other.test", b"/", "", 421),
    ] {
        let (status, head, body) = get_raw(&h, host, target, extra).await;
        let what = format!("{host}{}", String::from_utf8_lossy(target));
        assert_eq!(status, want, "{what}: {body}");
        assert_security_headers(&head, &what);
    }
}
