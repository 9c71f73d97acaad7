//! Classes 2 and 3: an unreadable forwarded address is unknown, never the proxy's, and
//! identity headers never reach the upstream under another spelling.

use std::collections::BTreeMap;

use crate::common::*;
use crate::support::Browser;

#[tokio::test]
async fn an_unreadable_forwarded_address_is_unknown_never_the_proxys() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let cookie = format!("Cookie: stepgate_session={sid}\r\n");
    // The test connects from 127.0.0.1: a trusted proxy, inside the office network. What
    // its X-Forwarded-For says is where the request comes from.
    for (xff, want) in [
        ("X-Forwarded-For: 127.0.0.9\r\n", 200),
        ("X-Forwarded-For: 203.0.113.9\r\n", 403),
        ("X-Forwarded-For: 127.0.0.9, 203.0.113.9\r\n", 403),
        // Garbage, ports, brackets, `unknown`, an empty entry, several lines with a bad
        // one, or no header at all: an unknown address, never the proxy's own (office) one.
        ("X-Forwarded-For: garbage\r\n", 403),
        ("X-Forwarded-For: 127.0.0.9:4711\r\n", 403),
        ("X-Forwarded-For: [::1]\r\n", 403),
        ("X-Forwarded-For: unknown\r\n", 403),
        ("X-Forwarded-For: 127.0.0.9, \r\n", 403),
        (
            "X-Forwarded-For: 127.0.0.9\r\nX-Forwarded-For: nonsense\r\n",
            403,
        ),
        ("", 403),
        // Bytes outside ASCII stop the walk where it reaches them; left of the client's
        // entry they are the client's own and count for nothing (found by fuzzing: they
        // used to make every client unknown).
        ("X-Forwarded-For: caf\u{e9}, 127.0.0.9\r\n", 200),
        ("X-Forwarded-For: 127.0.0.9\u{e9}\r\n", 403),
    ] {
        let (status, _, body) = get_raw(&h, "intranet.test", b"/", &format!("{cookie}{xff}")).await;
        assert_eq!(status, want, "{xff:?}: {body}");
        if want == 403 {
            assert!(body.contains("office only"), "{body}");
        } else {
            let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(seen["x-forwarded-for"], "127.0.0.9");
        }
    }
}

#[tokio::test]
async fn identity_headers_never_reach_the_upstream_under_another_spelling() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let spoofed = [
        "Remote-User",
        "Remote_User",
        "REMOTE_USER",
        "remote_groups",
        "Remote_Email",
        "Remote_AAL",
        "Remote_AMR",
        "X_Stepgate_Assertion",
        "X-Forwarded-User",
        "X_Forwarded_User",
        "X_Forwarded_Groups",
        "X_Forwarded_For",
        "X_Real_IP",
        "X_Original_URL",
        "X_HTTP_Method_Override",
    ];
    let mut extra = format!("Cookie: stepgate_session={sid}\r\n");
    for name in spoofed {
        extra.push_str(&format!("{name}: mallory\r\n"));
    }
    let (status, _, body) = get_raw(&h, "app.test", b"/data", &extra).await;
    assert_eq!(status, 200, "{body}");
    let seen: BTreeMap<String, String> = serde_json::from_str(&body).unwrap();
    for (name, value) in &seen {
        assert!(
            !value.contains("mallory"),
            "`{name}: {value}` reached the upstream"
        );
    }
    assert_eq!(seen["remote-user"], "jane");
    assert!(!seen.keys().any(|k| k.contains('_')), "{seen:?}");
}
