//! What the gateway's tests share: the config, the recording upstreams, the harness that
//! starts stepgate in front of them, and a signed-in browser.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{any, get, post};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;

use crate::support::{client, sign_in, upstream, Browser, Server, JANE};

pub(crate) const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
  - id: api
    hosts: [api.test]
    upstream: http://UPSTREAM
    routes:
      - { name: admin, path: /admin, tags: [sensitive] }
  - id: ws
    hosts: [ws.test]
    upstream: http://WSUP
  - id: slow
    hosts: [slow.test]
    upstream: http://UPSTREAM
  - id: down
    hosts: [down.test]
    upstream: http://127.0.0.1:1
  - id: mtls
    hosts: [mtls.test]
    upstream: http://UPSTREAM
  - id: keep
    hosts: [keep.test]
    upstream: http://KEEPUP
  - id: iis
    hosts: [iis.test]
    upstream: http://UPSTREAM
    case_insensitive_paths: true
    routes:
      - { name: admin, path: /admin, tags: [sensitive] }
  - id: echo
    hosts: [echo.test]
    upstream: http://ECHO
    routes:
      - { name: admin, path: /admin, tags: [sensitive] }
server:
  trusted_proxies: [10.0.0.0/8]
SERVER_EXTRA
sessions:
  cookie: { secure: false }
gateway:
  assertion: { ttl: 60s, rotate_every: 24h }
  upgraded_recheck: 1s
  bearer:
    jwks_timeout: 2s
    issuers:
      - issuer: https://issuer.test
        jwks_url: http://IDP/jwks.json
        audiences: [api, console]
        algorithms: [ES256]
  apps:
    slow: { timeout: 1s }
    api: { audiences: [api] }
EXTRA
default_outcome: allow
policies:
  - name: mtls-needs-a-certificate
    priority: 5
    targets: { apps: [mtls] }
    conditions:
      - certificate: { present: false }
    outcome: { deny: { message: A client certificate is required. } }
  - name: api-admin-fresh-mfa
    priority: 10
    targets: { apps: [api, iis, echo], routes: [{ tags: [sensitive] }] }
    outcome: { step_up: { min_aal: 2, max_age: 5m, message: Administration needs recent MFA. } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// What the upstream saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) hits: AtomicUsize,
    pub(crate) first_upload_chunk: Mutex<Option<Instant>>,
}

pub(crate) async fn upstream(seen: Arc<Seen>) -> SocketAddr {
    async fn echo(
        State(s): State<Arc<Seen>>,
        uri: axum::http::Uri,
        h: HeaderMap,
    ) -> axum::Json<serde_json::Value> {
        s.hits.fetch_add(1, Ordering::SeqCst);
        let g = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        };
        axum::Json(serde_json::json!({
            "user": g("remote-user"), "aal": g("remote-aal"), "amr": g("remote-amr"),
            "assertion": g("x-stepgate-assertion"), "xff": g("x-forwarded-for"),
            "forwarded": g("forwarded"), "proto": g("x-forwarded-proto"), "host": g("x-forwarded-host"),
            "real_ip": g("x-real-ip"), "host_header": g("host"), "path": uri.to_string(),
            "cookie": g("cookie"), "original_url": g("x-original-url"),
            "method_override": g("x-http-method-override"),
        }))
    }
    async fn upload(State(s): State<Arc<Seen>>, body: Body) -> String {
        let mut stream = body.into_data_stream();
        let mut n: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("upload chunk");
            if n == 0 {
                *s.first_upload_chunk.lock().unwrap() = Some(Instant::now());
            }
            n += chunk.len() as u64;
        }
        n.to_string()
    }
    let app = axum::Router::new()
        .route("/upload", post(upload))
        .route(
            "/set-cookies",
            get(|| async {
                (
                    axum::response::AppendHeaders([
                        ("set-cookie", "stepgate_session=planted; Path=/"),
                        ("set-cookie", "app_pref=compact; Path=/"),
                        ("set-cookie", "stepgate_pre=x"),
                    ]),
                    "cookies set",
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .fallback(any(echo))
        .with_state(seen);
    upstream::serve(app).await
}

/// A WebSocket echo server.
pub(crate) async fn ws_upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let echoed = match m {
                            tokio_tungstenite::tungstenite::Message::Text(t) => {
                                tokio_tungstenite::tungstenite::Message::text(format!("echo: {t}"))
                            }
                            other => other,
                        };
                        if ws.send(echoed).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    a
}

/// What the keep-alive upstream saw.
pub(crate) struct KeepSeen {
    /// Connections accepted.
    pub(crate) accepted: AtomicUsize,
    /// How many times `/` has been answered.
    pub(crate) fast_served: tokio::sync::watch::Sender<usize>,
    /// Told when a `/slow` request has arrived.
    pub(crate) slow_arrived: tokio::sync::Notify,
    /// Told when stepgate has closed its end of a connection the upstream closed after
    /// `/drop`: it has noticed the close.
    pub(crate) drop_noticed: tokio::sync::Notify,
}

impl Default for KeepSeen {
    fn default() -> Self {
        KeepSeen {
            accepted: AtomicUsize::new(0),
            fast_served: tokio::sync::watch::channel(0).0,
            slow_arrived: tokio::sync::Notify::new(),
            drop_noticed: tokio::sync::Notify::new(),
        }
    }
}

/// A plain HTTP/1.1 keep-alive upstream written on raw TCP, so the test controls when it
/// closes: `/` answers at once, `/slow` answers only once `/` has been answered again after
/// it arrived (on whatever connection), and `/drop` answers and then closes the connection
/// without saying so, as an upstream's idle timeout does (and tells `drop_noticed` once
/// stepgate has closed its end as well).
pub(crate) async fn keep_upstream(seen: Arc<KeepSeen>) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    buf.drain(..head_end);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    if path == "/slow" {
                        let mut served = seen.fast_served.subscribe();
                        let before = *served.borrow_and_update();
                        seen.slow_arrived.notify_one();
                        // Without an answer to / the test fails on its own timeout.
                        let _ = served.wait_for(|n| *n > before).await;
                    }
                    let body = format!("served {path}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    if path == "/" {
                        seen.fast_served.send_modify(|n| *n += 1);
                    }
                    if path == "/drop" {
                        // Only the sending half is closed, so that the read below sees
                        // when stepgate closes its end: then it has noticed.
                        let _ = tcp.shutdown().await;
                        let mut rest = [0u8; 1024];
                        while matches!(tcp.read(&mut rest).await, Ok(n) if n > 0) {}
                        seen.drop_noticed.notify_one();
                        return;
                    }
                }
            });
        }
    });
    a
}

/// A token issuer: an ES256 key and its JWKS on loopback.
pub(crate) struct Issuer {
    pub(crate) kid: String,
    pub(crate) key: EncodingKey,
    pub(crate) addr: SocketAddr,
    pub(crate) fetches: Arc<AtomicUsize>,
}

pub(crate) fn es256_key() -> (EncodingKey, serde_json::Value) {
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = sk.to_pkcs8_der().unwrap();
    let p = sk.public_key().to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(p.x().unwrap()), "y": b64(p.y().unwrap())});
    (EncodingKey::from_ec_der(der.as_bytes()), jwk)
}

pub(crate) async fn issuer() -> Issuer {
    let (key, mut jwk) = es256_key();
    let kid = "test-key-1".to_string();
    jwk["kid"] = kid.clone().into();
    jwk["alg"] = "ES256".into();
    let jwks = serde_json::json!({ "keys": [jwk] });
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let jwks = jwks.clone();
            let f = f.clone();
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(jwks)
            }
        }),
    );
    let addr = upstream::serve(app).await;
    Issuer {
        kid,
        key,
        addr,
        fetches,
    }
}

impl Issuer {
    pub(crate) fn token(&self, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut c = serde_json::json!({
            "iss": "https://issuer.test", "aud": "api", "sub": "svc-42",
            "preferred_username": "robot", "groups": ["ops"],
            "acr": "aal1", "amr": ["pwd"], "auth_time": now - 60,
            "iat": now, "exp": now + 300,
        });
        edit(&mut c);
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &c, &self.key).unwrap()
    }
}

/// The gateway, its apps' upstreams and the token issuer.
pub(crate) struct Harness {
    pub(crate) gateway: Server,
    pub(crate) seen: Arc<Seen>,
    pub(crate) keep: Arc<KeepSeen>,
    pub(crate) idp: Issuer,
}

impl Deref for Harness {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.gateway
    }
}

impl Harness {
    /// How many requests the upstream has answered.
    pub(crate) fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }
}

pub(crate) async fn start_with(dir: tempfile::TempDir, extra: &str) -> Harness {
    start_full(dir, extra, "").await
}

/// [`start_with`] with more `server:` keys (indented by two spaces).
pub(crate) async fn start_full(dir: tempfile::TempDir, extra: &str, server_extra: &str) -> Harness {
    let seen = Arc::new(Seen::default());
    let keep = Arc::new(KeepSeen::default());
    let idp = issuer().await;
    let gateway = Server::build(CONFIG)
        .with("UPSTREAM", upstream(seen.clone()).await)
        .with("WSUP", ws_upstream().await)
        .with("KEEPUP", keep_upstream(keep.clone()).await)
        .with("ECHO", upstream::echo().await)
        .with("IDP", idp.addr)
        .with("SERVER_EXTRA", server_extra)
        .with("EXTRA", extra)
        .in_dir(dir)
        .demo_users()
        .start()
        .await;
    Harness {
        gateway,
        seen,
        keep,
        idp,
    }
}

pub(crate) async fn start() -> Harness {
    start_with(tempfile::tempdir().unwrap(), "").await
}

/// A client that keeps no cookies (its `*.test` hosts are the gateway).
pub(crate) fn plain() -> reqwest::Client {
    client().build().unwrap()
}

/// Signs jane in through the portal (password, then TOTP) on app.test.
pub(crate) async fn sign_in_jane(h: &Harness, b: &Browser) {
    let r = sign_in(b, &h.url("app.test", "/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200, "signed in and back at the app");
}

/// Verifies an assertion knowing only the JWKS URL.
pub(crate) async fn verify_assertion(
    jwks_url: &str,
    token: &str,
    aud: &str,
    iss: &str,
) -> Result<serde_json::Value, String> {
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(jwks_url)
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks
        .find(&kid)
        .ok_or(format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&[iss]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

pub(crate) async fn echo(c: &reqwest::Client, url: &str) -> serde_json::Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}
