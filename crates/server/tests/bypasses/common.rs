//! What the bypass tests share: the config, an upstream that records what reached it,
//! starting stepgate, and signing jane in.

use std::net::SocketAddr;

use crate::support::{raw_get, sign_in, upstream, Browser, Server, JANE};

pub(crate) const CONFIG: &str = r#"
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
pub(crate) async fn switching_upstream() -> SocketAddr {
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

pub(crate) async fn start_with(secure: bool) -> Server {
    Server::build(CONFIG)
        .with("SWITCHER", switching_upstream().await)
        .with("UPSTREAM", upstream::echo().await)
        .with("SECURE", if secure { "true" } else { "false" })
        .public_url(|port| format!("http://app.test:{port}"))
        .demo_users()
        .start()
        .await
}

pub(crate) async fn start() -> Server {
    start_with(false).await
}

/// Signs jane in on app.test (password, then TOTP) with a browser that follows no
/// redirects; her session id.
pub(crate) async fn sign_in_jane(h: &Server, b: &Browser) -> String {
    sign_in_jane_at(h, b, 0).await
}

/// [`sign_in_jane`] with the TOTP code of `steps` periods later (a code is good once: a
/// second sign-in in the same period needs the next one).
pub(crate) async fn sign_in_jane_at(h: &Server, b: &Browser, steps: i64) -> String {
    let app = h.url("app.test", "/");
    let r = sign_in(b, &app, &JANE, &JANE.code(steps)).await;
    assert_eq!(r.status(), 303, "signed in");
    b.session_id(&app).expect("a session cookie")
}

/// `GET target` on `host`, as raw bytes, with `extra` header lines: the status, the head
/// (lower case) and the body.
pub(crate) async fn get_raw(
    h: &Server,
    host: &str,
    target: &[u8],
    extra: &str,
) -> (u16, String, String) {
    let a = raw_get(h.addr, host, target, extra).await;
    (a.status, a.head, a.body)
}

/// The headers every answer stepgate writes itself carries.
pub(crate) fn assert_security_headers(head: &str, what: &str) {
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
