//! Issue 16, tried as an attacker would, through the live server: each class of request
//! that once reached an upstream without the policy its route should get (or let one
//! session stand in for another) is refused, or read the way the upstream will read it.
//!
//! | class | tests |
//! |---|---|
//! | 1. one parse of the target | `targets_upstreams_read_differently_are_refused_by_the_proxy`, `forward_auth_refuses_what_it_cannot_read_and_never_defaults` |
//! | 2. forwarded client address | `an_unreadable_forwarded_address_is_unknown_never_the_proxys` |
//! | 3. identity header spellings | `identity_headers_never_reach_the_upstream_under_another_spelling` |
//! | 4. session ids stay in the cookie | `no_page_shows_a_session_id_or_anything_it_can_be_derived_from` |
//! | 5. exact cookie names | `the_session_cookie_counts_only_under_its_exact_name_and_once` |
//! | 6. redirects from configuration | `redirects_name_only_configured_hosts_and_others_get_421` |
//! | 7. explicit upgrades | `only_websocket_upgrades_pass_and_tunnels_are_405` |
//! | 9. security headers | `every_refusal_carries_the_security_headers` |

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use support::{
    field, raw, raw_get, sign_in, signed_in_session, upstream, user, Browser, RawAnswer, Server,
    JANE,
};

const CONFIG: &str = r#"
networks:
  office: [127.0.0.0/8]
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
    routes:
      - { name: admin, path: /admin/**, tags: [sensitive] }
  - id: intranet
    hosts: [intranet.test]
    upstream: http://UPSTREAM
  - id: switcher
    hosts: [switch.test]
    upstream: http://SWITCHER
  - id: down
    hosts: [down.test]
    upstream: http://127.0.0.1:1
server:
  trusted_proxies: [127.0.0.1]
sessions:
  cookie: { secure: SECURE }
default_outcome: allow
policies:
  - name: intranet-in-the-office-only
    priority: 5
    targets: { apps: [intranet] }
    conditions:
      - not: { network: { in: [office] } }
    outcome: { deny: { message: The intranet is open in the office only. } }
  - name: admin-closed
    priority: 10
    targets: { routes: [{ tags: [sensitive] }] }
    outcome: { deny: { message: The admin area is closed. } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// An upstream that answers every request `101 Switching Protocols` with the `Upgrade` it
/// was asked for (or `h2c` when it was asked for none) and then echoes bytes: what an
/// h2c-speaking upstream does when a proxy lets an upgrade through.
async fn switching_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let proto = text
                    .lines()
                    .find_map(|l| l.strip_prefix("upgrade:"))
                    .map_or("h2c".to_string(), |p| p.trim().to_string());
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: {proto}\r\n\r\n"
                );
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    a
}

async fn start_with(secure: bool) -> Server {
    Server::build(CONFIG)
        .with("SWITCHER", switching_upstream().await)
        .with("UPSTREAM", upstream::echo().await)
        .with("SECURE", if secure { "true" } else { "false" })
        .public_url(|port| format!("http://app.test:{port}"))
        .demo_users()
        .start()
        .await
}

async fn start() -> Server {
    start_with(false).await
}

/// Signs jane in on app.test (password, then TOTP) with a browser that follows no
/// redirects; her session id.
async fn sign_in_jane(h: &Server, b: &Browser) -> String {
    sign_in_jane_at(h, b, 0).await
}

/// [`sign_in_jane`] with the TOTP code of `steps` periods later (a code is good once: a
/// second sign-in in the same period needs the next one).
async fn sign_in_jane_at(h: &Server, b: &Browser, steps: i64) -> String {
    let app = h.url("app.test", "/");
    let r = sign_in(b, &app, &JANE, &JANE.code(steps)).await;
    assert_eq!(r.status(), 303, "signed in");
    b.session_id(&app).expect("a session cookie")
}

/// `GET target` on `host`, as raw bytes, with `extra` header lines: the status, the head
/// (lower case) and the body.
async fn get_raw(h: &Server, host: &str, target: &[u8], extra: &str) -> (u16, String, String) {
    let a = raw_get(h.addr, host, target, extra).await;
    (a.status, a.head, a.body)
}

/// The headers every answer stepgate writes itself carries.
fn assert_security_headers(head: &str, what: &str) {
    for h in [
        "content-security-policy: default-src 'none'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "cache-control: no-store",
    ] {
        assert!(head.contains(h), "{what}: no `{h}` in\n{head}");
    }
}

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
    let mut spelled = forward(b"/data");
    spelled.push(("Remote_User", b"admin"));
    let (status, _, body) = ask("forward", &spelled).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("remote_user"), "{body}");
}

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

#[tokio::test]
async fn no_page_shows_a_session_id_or_anything_it_can_be_derived_from() {
    use base64::Engine as _;
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    // A second live session of the same user, seen on the sessions page.
    let other = sign_in_jane_at(&h, &Browser::not_following(), 1).await;
    let mut pages = Vec::new();
    for path in [
        "/_stepgate/account",
        "/_stepgate/sessions",
        "/_stepgate/login",
        "/admin/users",
    ] {
        let r = b.get(h.url("app.test", path)).send().await.unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        pages.push(r.text().await.unwrap());
        if let Some(l) = location {
            pages.push(l.clone());
            pages.push(b.get(l).send().await.unwrap().text().await.unwrap());
        }
    }
    let sessions = &pages[1];
    assert!(sessions.contains("End"), "{sessions}");
    for id in [&sid, &other] {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        for secret in [id.as_str(), b64.as_str()] {
            for window in secret.as_bytes().windows(12) {
                let w = std::str::from_utf8(window).unwrap();
                for p in &pages {
                    assert!(!p.contains(w), "`{w}` of a session id appears in:\n{p}");
                }
            }
        }
    }
    // The other session's "End" handle ends it, and nothing else does.
    let csrf = field(sessions, "csrf");
    let handles: Vec<String> = sessions
        .match_indices("name=\"id\" value=\"")
        .map(|(i, m)| {
            sessions[i + m.len()..]
                .split('"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(handles.len(), 1, "{sessions}");
    let end = |handle: String| {
        let (c, csrf, url) = (
            &b,
            csrf.clone(),
            h.url("app.test", "/_stepgate/sessions/end"),
        );
        async move {
            c.post(url)
                .form(&[("csrf", csrf), ("id", handle)])
                .send()
                .await
                .unwrap()
        }
    };
    for forged in [other.clone(), String::new(), "x".repeat(22)] {
        end(forged).await;
        assert!(h.st.stores.hot.get_session(&other).await.unwrap().is_some());
    }
    end(handles[0].clone()).await;
    assert!(h.st.stores.hot.get_session(&other).await.unwrap().is_none());
    assert!(h.st.stores.hot.get_session(&sid).await.unwrap().is_some());
}

#[tokio::test]
async fn the_session_cookie_counts_only_under_its_exact_name_and_once() {
    // Secure cookies: the session cookie is `__Host-stepgate_session`. The test speaks
    // plain HTTP, so it writes the Cookie header itself.
    // A client that keeps Secure cookies off plain HTTP cannot sign in here, so jane's
    // session (password and TOTP, just now) is stored as a sign-in would store it.
    let h = start_with(true).await;
    let jane = user(&h.st, "jane").await;
    let sid = signed_in_session(&h.st, &jane, chrono::Utc::now()).await;
    let get = |cookie: String| {
        let h = &h;
        async move { get_raw(h, "app.test", b"/data", &format!("Cookie: {cookie}\r\n")).await }
    };
    assert_eq!(get(format!("__Host-stepgate_session={sid}")).await.0, 200);
    // Other spellings of the name are other cookies: sign in first.
    for name in [
        "%5F_Host-stepgate_session",
        "__host-stepgate_session",
        "__Host-stepgate%5Fsession",
        "stepgate_session",
        "__Secure-stepgate_session",
    ] {
        let (status, head, _) = get(format!("{name}={sid}")).await;
        assert_eq!(status, 303, "{name}");
        assert!(head.contains("/_stepgate/login"), "{name}: {head}");
    }
    // Twice, in one header or two: refused, whichever is real.
    let (status, _, body) = get(format!(
        "__Host-stepgate_session=x; __Host-stepgate_session={sid}"
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than once"), "{body}");
    let (status, _, _) = get_raw(
        &h,
        "app.test",
        b"/data",
        &format!(
            "Cookie: __Host-stepgate_session={sid}\r\nCookie: __Host-stepgate_session={sid}\r\n"
        ),
    )
    .await;
    assert_eq!(status, 400);
    // A byte outside ASCII on a line spoils only its own piece (found by fuzzing: it hid the
    // whole line), so the copy beside it still counts.
    let (status, _, body) = get_raw(
        &h,
        "app.test",
        b"/data",
        &format!(
            "Cookie: __Host-stepgate_session={sid}\r\nCookie: x=caf\u{e9}; __Host-stepgate_session={sid}\r\n"
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // An upstream may not set stepgate's cookies under any spelling.
    let planted = "/set-cookie?__Host-stepgate_session=planted&__host-STEPGATE_SESSION=planted&%255F_Host-stepgate_session=planted&stepgate_pre=planted&app=kept";
    let (status, head, _) = get_raw(
        &h,
        "app.test",
        planted.as_bytes(),
        &format!("Cookie: __Host-stepgate_session={sid}\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(head.contains("set-cookie: app=kept"), "{head}");
    assert!(!head.contains("planted"), "{head}");
}

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
