//! The gateway over real HTTP on loopback: the signed identity assertion and its JWKS (with
//! key rotation), bearer tokens from a test issuer (allowed, stepped up with RFC 9470,
//! refused), WebSocket pass-through, a 100 MB streamed upload, forwarding headers, upstream
//! failures, a broken store, and the TLS listener with a client certificate.

mod support;

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
use stepgate_server::demo;
use support::{
    api_refusal, client, error_page, raw, raw_get, redirects, sign_in, upstream, user, Browser,
    Server, JANE,
};

const CONFIG: &str = r#"
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
struct Seen {
    hits: AtomicUsize,
    first_upload_chunk: Mutex<Option<Instant>>,
}

async fn upstream(seen: Arc<Seen>) -> SocketAddr {
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
async fn ws_upstream() -> SocketAddr {
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
struct KeepSeen {
    /// Connections accepted.
    accepted: AtomicUsize,
    /// How many times `/` has been answered.
    fast_served: tokio::sync::watch::Sender<usize>,
    /// Told when a `/slow` request has arrived.
    slow_arrived: tokio::sync::Notify,
    /// Told when stepgate has closed its end of a connection the upstream closed after
    /// `/drop`: it has noticed the close.
    drop_noticed: tokio::sync::Notify,
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
async fn keep_upstream(seen: Arc<KeepSeen>) -> SocketAddr {
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
struct Issuer {
    kid: String,
    key: EncodingKey,
    addr: SocketAddr,
    fetches: Arc<AtomicUsize>,
}

fn es256_key() -> (EncodingKey, serde_json::Value) {
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = sk.to_pkcs8_der().unwrap();
    let p = sk.public_key().to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(p.x().unwrap()), "y": b64(p.y().unwrap())});
    (EncodingKey::from_ec_der(der.as_bytes()), jwk)
}

async fn issuer() -> Issuer {
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
    fn token(&self, edit: impl FnOnce(&mut serde_json::Value)) -> String {
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
struct Harness {
    gateway: Server,
    seen: Arc<Seen>,
    keep: Arc<KeepSeen>,
    idp: Issuer,
}

impl Deref for Harness {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.gateway
    }
}

impl Harness {
    /// How many requests the upstream has answered.
    fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }
}

async fn start_with(dir: tempfile::TempDir, extra: &str) -> Harness {
    start_full(dir, extra, "").await
}

/// [`start_with`] with more `server:` keys (indented by two spaces).
async fn start_full(dir: tempfile::TempDir, extra: &str, server_extra: &str) -> Harness {
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

async fn start() -> Harness {
    start_with(tempfile::tempdir().unwrap(), "").await
}

/// A client that keeps no cookies (its `*.test` hosts are the gateway).
fn plain() -> reqwest::Client {
    client().build().unwrap()
}

/// Signs jane in through the portal (password, then TOTP) on app.test.
async fn sign_in_jane(h: &Harness, b: &Browser) {
    let r = sign_in(b, &h.url("app.test", "/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200, "signed in and back at the app");
}

/// Verifies an assertion knowing only the JWKS URL.
async fn verify_assertion(
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

async fn echo(c: &reqwest::Client, url: &str) -> serde_json::Value {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn assertion_verifies_against_the_published_jwks() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let seen = echo(&c, &h.url("app.test", "/whoami")).await;
    assert_eq!(seen["user"], "jane");
    let token = seen["assertion"].as_str().unwrap();
    let claims = verify_assertion(
        &format!("{}/.well-known/jwks.json", h.base),
        token,
        "console",
        &h.base,
    )
    .await
    .unwrap();
    assert_eq!(claims["preferred_username"], "jane");
    assert_eq!(claims["acr"], "aal2");
    let amr: Vec<&str> = claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(amr.contains(&"pwd") && amr.contains(&"otp"), "{amr:?}");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["staff", "licence-admins"])
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 60, "short-lived");
    assert!(claims["auth_time"].as_i64().unwrap() <= iat);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    let user = user(&h.st, "jane").await;
    assert_eq!(claims["sub"], user.id.as_str());
    // The demo's Licence Console checks it the same way.
    demo::set_assertion_check(demo::AssertionCheck {
        jwks_url: format!("{}/.well-known/jwks.json", h.base),
        jwks_host: None,
        issuer: h.base.clone(),
        audience: "console".into(),
    });
    let mut hm = axum::http::HeaderMap::new();
    hm.insert("x-stepgate-assertion", token.parse().unwrap());
    assert_eq!(demo::check_assertion(&hm).await.as_deref(), Ok("jane"));
    let mut tampered = token.to_string();
    tampered.truncate(token.len() - 4);
    tampered.push_str("AAAA");
    hm.insert("x-stepgate-assertion", tampered.parse().unwrap());
    assert_eq!(
        demo::check_assertion(&hm).await,
        Err("invalid: InvalidSignature".to_string())
    );
    // Meant for the console only.
    let refused = verify_assertion(
        &format!("{}/.well-known/jwks.json", h.base),
        token,
        "api",
        &h.base,
    )
    .await
    .unwrap_err();
    assert_eq!(refused, "InvalidAudience");
    // A client cannot forge one: its own header is replaced.
    let seen = c
        .get(h.url("app.test", "/whoami"))
        .header("x-stepgate-assertion", "forged")
        .header("remote-user", "mallory")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_ne!(seen["assertion"], "forged");
    assert!(
        !seen["assertion"].as_str().unwrap().contains('|'),
        "one header only"
    );
    assert_eq!(seen["user"], "jane");
}

#[tokio::test]
async fn key_rotation_keeps_old_assertions_verifiable_during_the_overlap() {
    let h = start().await;
    let jwks_url = format!("{}/.well-known/jwks.json", h.base);
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let old = echo(&c, &h.url("app.test", "/")).await["assertion"]
        .as_str()
        .unwrap()
        .to_string();
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    // The key came from the store: a second node on the same store signs with it.
    let cfg = h.st.runtime.load().config.gateway.assertion.clone();
    let node2 = stepgate_server::gateway::assertion::AssertionKeys::open(
        h.st.stores.durable.clone(),
        h.key.clone(),
        &cfg,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(node2.current_kid().as_deref(), Some(old_kid.as_str()));

    let now = chrono::Utc::now();
    let new_kid = h.st.assertion.rotate(&cfg, now).await.unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks: serde_json::Value = reqwest::get(&jwks_url).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    verify_assertion(&jwks_url, &old, "console", &h.base)
        .await
        .expect("an assertion signed before the rotation still verifies");
    let fresh = echo(&c, &h.url("app.test", "/")).await["assertion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap(),
        new_kid
    );
    verify_assertion(&jwks_url, &fresh, "console", &h.base)
        .await
        .unwrap();
    // The other node picks the new key up from the store.
    node2.maintain(&cfg, now).await.unwrap();
    assert_eq!(node2.current_kid(), Some(new_kid.clone()));

    // Once every assertion the old key signed has expired, it leaves the JWKS.
    h.st.assertion
        .maintain(&cfg, now + chrono::Duration::minutes(7))
        .await
        .unwrap();
    let jwks: serde_json::Value = reqwest::get(&jwks_url).await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![new_kid.as_str()]);
    let refused = verify_assertion(&jwks_url, &old, "console", &h.base)
        .await
        .unwrap_err();
    assert_eq!(refused, format!("kid {old_kid} not in the JWKS"));
    // And on schedule: a key older than rotate_every is replaced.
    h.st.assertion
        .maintain(&cfg, now + chrono::Duration::hours(25))
        .await
        .unwrap();
    assert_ne!(h.st.assertion.current_kid(), Some(new_kid));
}

#[tokio::test]
async fn bearer_tokens_allowed_stepped_up_and_refused() {
    let h = start().await;
    let c = plain();
    let call = |path: &str, token: String| c.get(h.url("api.test", path)).bearer_auth(token).send();

    // Allowed: the token's claims stand in for the session.
    let r = call("/data", h.idp.token(|_| {})).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["user"], "robot");
    assert_eq!(seen["aal"], "1");
    let claims = verify_assertion(
        &format!("{}/.well-known/jwks.json", h.base),
        seen["assertion"].as_str().unwrap(),
        "api",
        &h.base,
    )
    .await
    .unwrap();
    assert_eq!(claims["sub"], "svc-42");
    assert_eq!(claims["acr"], "aal1");

    // Stepped up: the admin route needs AAL2 within 5 minutes. RFC 9470, exactly.
    let hits = h.hits();
    let r = call("/admin", h.idp.token(|_| {})).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", error_description=\"Administration needs recent MFA.\", acr_values=\"aal2\", max_age=300"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");
    // AAL2 but authenticated too long ago: still not enough.
    let stale = h.idp.token(|c| {
        c["acr"] = "aal2".into();
        c["amr"] = serde_json::json!(["pwd", "otp"]);
        c["auth_time"] = (chrono::Utc::now().timestamp() - 3600).into();
    });
    assert_eq!(call("/admin", stale).await.unwrap().status(), 401);
    assert_eq!(h.hits(), hits, "never reached upstream");
    // The client comes back with a fresh AAL2 token: through.
    let fresh = h.idp.token(|c| {
        c["acr"] = "aal2".into();
        c["amr"] = serde_json::json!(["pwd", "otp"]);
    });
    let r = call("/admin", fresh).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["aal"], "2");

    // Refused: each of these is a 401 invalid_token and never reaches the upstream.
    let hits = h.hits();
    let (other_key, _) = es256_key();
    let mut hd = Header::new(Algorithm::ES256);
    hd.kid = Some(h.idp.kid.clone());
    let now = chrono::Utc::now().timestamp();
    let forged = jsonwebtoken::encode(
        &hd,
        &serde_json::json!({"iss": "https://issuer.test", "aud": "api", "sub": "x", "exp": now + 300}),
        &other_key,
    )
    .unwrap();
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"iss": "https://issuer.test", "aud": "api", "sub": "x", "exp": now + 300}),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    let cases = [
        ("bad signature", forged),
        ("wrong audience", h.idp.token(|c| c["aud"] = "other".into())),
        ("expired", h.idp.token(|c| c["exp"] = (now - 600).into())),
        (
            "not yet valid",
            h.idp.token(|c| c["nbf"] = (now + 600).into()),
        ),
        (
            "unknown issuer",
            h.idp.token(|c| c["iss"] = "https://evil.test".into()),
        ),
        ("HMAC", hs256),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in cases {
        let r = call("/data", token).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            www.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {www}"
        );
    }
    assert_eq!(h.hits(), hits);
    // Unknown kid: the JWKS is fetched again (not more than once per 10 s).
    let fetches = h.idp.fetches.load(Ordering::SeqCst);
    let mut hd = Header::new(Algorithm::ES256);
    hd.kid = Some("rotated-away".into());
    let t = jsonwebtoken::encode(
        &hd,
        &serde_json::json!({"iss": "https://issuer.test", "aud": "api", "sub": "x", "exp": now + 300}),
        &h.idp.key,
    )
    .unwrap();
    assert_eq!(call("/data", t.clone()).await.unwrap().status(), 401);
    assert_eq!(call("/data", t).await.unwrap().status(), 401);
    assert!(h.idp.fetches.load(Ordering::SeqCst) <= fetches + 1);
}

#[tokio::test]
async fn an_app_with_its_own_audiences_refuses_tokens_minted_for_another() {
    let h = start().await;
    let c = plain();
    let call = |host: &str, token: String| c.get(h.url(host, "/data")).bearer_auth(token).send();
    // The issuer mints tokens for both apps; `api` lists its own audience.
    let for_console = || h.idp.token(|c| c["aud"] = "console".into());
    let hits = h.hits();
    let r = call("api.test", for_console()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
    assert_eq!(h.hits(), hits, "never reached upstream");
    // The same token is good where no app audience narrows the issuer's.
    assert_eq!(call("app.test", for_console()).await.unwrap().status(), 200);
    // A token for several audiences, one of them `api`: through.
    let both = h
        .idp
        .token(|c| c["aud"] = serde_json::json!(["console", "api"]));
    assert_eq!(call("api.test", both).await.unwrap().status(), 200);
}

#[tokio::test]
async fn bearer_token_for_a_disabled_user_is_refused() {
    let h = start().await;
    let c = plain();
    let call = || {
        c.get(h.url("api.test", "/data"))
            .bearer_auth(h.idp.token(|_| {}))
            .send()
    };
    // No local user named like the token's subject: the token alone decides.
    assert_eq!(call().await.unwrap().status(), 200);
    // An administrator creates and disables the user: the same valid token is refused at
    // once (the write drops the cached lookup) and never reaches the upstream.
    let mut robot = stepgate_store::UserRecord::new("robot");
    robot.disabled = true;
    h.st.stores.durable.create_user(&robot).await.unwrap();
    let hits = h.hits();
    let r = call().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
    assert_eq!(h.hits(), hits);
    // Enabled again: through.
    robot.disabled = false;
    h.st.stores.durable.update_user(&robot).await.unwrap();
    assert_eq!(call().await.unwrap().status(), 200);
}

#[tokio::test]
async fn bearer_issuer_keys_unreachable_is_401_never_allow() {
    let h = start().await;
    let rt = h.st.runtime.load();
    // The issuer's JWKS URL points at a closed port, and at a server that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    for url in [
        "http://127.0.0.1:1/jwks.json".to_string(),
        format!("http://{silent_addr}/jwks.json"),
    ] {
        let mut bearer = rt.config.gateway.bearer.clone();
        bearer.issuers[0].jwks_url = Some(url.clone());
        let v = stepgate_server::access::bearer::BearerVerifier::new();
        let started = Instant::now();
        let err = v
            .verify(&bearer, &rt.config.base_dir, &h.idp.token(|_| {}))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            stepgate_server::access::bearer::BearerError::KeysUnavailable,
            "{url}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the 2 s timeout holds"
        );
    }
    drop(silent);
}

/// A WebSocket handshake request for `ws.test` (the WebSocket echo app), sent to the
/// gateway; the caller adds the credentials.
fn ws_request(h: &Harness) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://127.0.0.1:{}/socket", h.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "host",
        format!("ws.test:{}", h.addr.port()).parse().unwrap(),
    );
    req
}

#[tokio::test]
async fn websocket_passes_through() {
    use tokio_tungstenite::tungstenite::Message;
    let h = start().await;
    let mut req = ws_request(&h);
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", h.idp.token(|_| {})).parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("echo: hello {i}"));
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.into_data().as_ref(), &big[..]);
    ws.close(None).await.unwrap();

    // Without a token, no upgrade: stepgate answers the handshake itself and sends it to
    // sign in, as it does any request without credentials.
    let req = ws_request(&h);
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 303, "{r:?}");
            let to = r.headers()["location"].to_str().unwrap();
            assert!(to.contains("/_stepgate/login?t="), "{to}");
        }
        Err(e) => panic!("refused, but not by an HTTP answer: {e}"),
        Ok((_, r)) => panic!("upgraded without a token: {r:?}"),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_100_mb_upload_streams_through_without_buffering() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1600; // 100 MiB
    let h = start().await;
    let c = plain();
    let last_sent: Arc<Mutex<Option<Instant>>> = Arc::default();
    let ls = last_sent.clone();
    let body = futures_util::stream::iter(0..CHUNKS).map(move |i| {
        if i == CHUNKS - 1 {
            *ls.lock().unwrap() = Some(Instant::now());
        }
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; CHUNK]))
    });
    let before = rss_kib();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let (p2, stop) = (
        peak.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let stop2 = stop.clone();
    let sampler = tokio::spawn(async move {
        while !stop2.load(Ordering::Relaxed) {
            p2.fetch_max(rss_kib(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let started = Instant::now();
    let r = c
        .post(h.url("api.test", "/upload"))
        .bearer_auth(h.idp.token(|_| {}))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        (CHUNK * CHUNKS).to_string(),
        "every byte arrived"
    );
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let first = h.seen.first_upload_chunk.lock().unwrap().unwrap();
    let last = last_sent.lock().unwrap().unwrap();
    assert!(
        first < last,
        "the upstream got its first bytes before the client had produced its last"
    );
    let growth_mib = peak.load(Ordering::Relaxed).saturating_sub(before) / 1024;
    eprintln!(
        "100 MiB upload through the proxy: {:.2} s, upstream first byte {} ms before the client's last chunk, peak RSS growth {growth_mib} MiB",
        elapsed.as_secs_f64(),
        (last - first).as_millis()
    );
    assert!(
        growth_mib < 64,
        "the proxy must not buffer the body (RSS grew {growth_mib} MiB)"
    );
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let h = start().await;
    let c = plain();
    let seen: serde_json::Value = c
        .get(h.url("api.test", "/data"))
        .bearer_auth(h.idp.token(|_| {}))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let host = format!("api.test:{}", h.addr.port());
    assert_eq!(seen["xff"], "127.0.0.1");
    assert_eq!(seen["real_ip"], "127.0.0.1");
    assert_eq!(seen["proto"], "http");
    assert_eq!(seen["host"], host.as_str());
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;host=\"{host}\";proto=http").as_str()
    );
}

#[tokio::test]
async fn upstream_failures_are_502_or_504_and_say_nothing_of_internals() {
    let h = start().await;
    let c = plain();
    let token = h.idp.token(|_| {});
    // Down: connection refused.
    let r = c
        .get(h.url("down.test", "/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("bad_gateway"), "{body}");
    for leak in ["127.0.0.1", "refused", "tcp", "hyper", "error trying"] {
        assert!(!body.to_lowercase().contains(leak), "{leak} in {body}");
    }
    // Browser: HTML.
    let r = c
        .get(h.url("down.test", "/"))
        .bearer_auth(&token)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // Too slow for the app's 1 s timeout.
    let started = Instant::now();
    let r = c
        .get(h.url("slow.test", "/slow"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(r.text().await.unwrap().contains("gateway_timeout"));
}

#[tokio::test]
async fn upstream_connections_are_kept_replaced_when_closed_and_never_queued() {
    let h = start().await;
    let c = plain();
    let token = h.idp.token(|_| {});
    let get = |path: &'static str| {
        let c = c.clone();
        let url = h.url("keep.test", path);
        let token = token.clone();
        async move {
            let r = c.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // One after another: one kept connection serves them all.
    for _ in 0..3 {
        assert_eq!(get("/").await, (200, "served /".to_string()));
    }
    assert_eq!(h.keep.accepted.load(Ordering::SeqCst), 1);

    // The upstream closes the kept connection without a word: the next request goes out on
    // a new one instead of failing.
    assert_eq!(get("/drop").await, (200, "served /drop".to_string()));
    tokio::time::timeout(Duration::from_secs(10), h.keep.drop_noticed.notified())
        .await
        .expect("stepgate never closed its end of the connection the upstream closed");
    assert_eq!(get("/").await, (200, "served /".to_string()));
    assert_eq!(h.keep.accepted.load(Ordering::SeqCst), 2);

    // A request never waits behind another one's unfinished response: /slow is answered
    // only after / is, so / must go out on a connection of its own.
    let slow = tokio::spawn(get("/slow"));
    h.keep.slow_arrived.notified().await;
    let fast = tokio::time::timeout(Duration::from_secs(10), get("/"))
        .await
        .expect("/ waited behind /slow");
    assert_eq!(fast, (200, "served /".to_string()));
    assert_eq!(slow.await.unwrap(), (200, "served /slow".to_string()));
    assert_eq!(h.keep.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_broken_store_refuses_with_503() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    assert_eq!(
        c.get(h.url("app.test", "/")).send().await.unwrap().status(),
        200
    );
    // Break the hot store under the running server: its session table disappears.
    let db = h.dir.path().join("data").join("stepgate.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&opts)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE hot_sessions RENAME TO hot_sessions_gone")
        .execute(&mut conn)
        .await
        .unwrap();
    // Another process broke it, so this node's read cache does not know: the session it
    // cached stays usable for at most `sessions.cache_ttl`, then the store is asked again.
    h.st.cache.advance_clock(h.st.cache.ttl());
    let hits = h.hits();
    let r = c.get(h.url("app.test", "/")).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "5");
    let body = error_page(r, 503, "Try again in a moment").await;
    assert!(!body.contains("hot_sessions"), "no internals: {body}");
    assert!(
        body.contains(&format!(
            "href=\"{}\" id=\"continue\">Try again</a>",
            h.url("app.test", "/")
        )),
        "{body}"
    );
    let j = api_refusal(c.get(h.url("app.test", "/")), 503).await;
    assert_eq!(j["error"], "temporarily_unavailable");
    assert_eq!(h.hits(), hits, "nothing let through");
}

#[tokio::test]
async fn tls_listener_serves_h2_and_passes_the_client_certificate_on() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "stepgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = KeyPair::generate().unwrap();
    let srv = CertificateParams::new(vec!["mtls.test".to_string(), "app.test".to_string()])
        .unwrap()
        .signed_by(&srv_key, &ca, &ca_key)
        .unwrap();
    let cli_key = KeyPair::generate().unwrap();
    let mut cli_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    cli_params
        .distinguished_name
        .push(DnType::CommonName, "laptop-7");
    cli_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cli = cli_params.signed_by(&cli_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), srv.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), srv_key.serialize_pem()).unwrap();

    let extra = "signals:\n  client_certificates:\n    authorities:\n      - { name: test-ca, ca_file: ca.pem }\n";
    let h = start_with(dir, extra).await;
    let tls = stepgate_config::TlsConfig {
        cert_file: "cert.pem".into(),
        key_file: "key.pem".into(),
        client_ca_file: Some("ca.pem".into()),
    };
    let server_cfg = stepgate_server::app::tls::server_config(&tls, h.dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = h.st.clone();
    tokio::spawn(async move {
        stepgate_server::app::tls::serve_tls_on(st, listener, server_cfg)
            .await
            .unwrap()
    });
    let client = |identity: bool| {
        let mut b = client()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
        if identity {
            let pem = format!("{}{}", cli.pem(), cli_key.serialize_pem());
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let url = format!("https://mtls.test:{}/who", addr.port());
    let token = h.idp.token(|_| {});

    let r = client(true)
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(r.status(), 200, "the certificate reached the policy");
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["proto"], "https");
    // HTTP/2 has no Host header; the upstream (HTTP/1.1) still learns the host asked for.
    let asked = format!("mtls.test:{}", addr.port());
    assert_eq!(seen["host_header"], asked.as_str());
    assert_eq!(seen["host"], asked.as_str(), "X-Forwarded-Host");

    let r = client(false)
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no certificate, denied by the policy");

    // The JWKS and the portal are served over TLS too.
    let r = client(false)
        .get(format!(
            "https://app.test:{}/.well-known/jwks.json",
            addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_app_keeps_its_own_healthz_readyz_and_jwks() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let before = h.hits();
    // On an app's host these paths are the app's: the upstream answers, with the identity.
    for path in ["/healthz", "/readyz", "/.well-known/jwks.json"] {
        let seen = echo(&c, &h.url("app.test", path)).await;
        assert_eq!(seen["user"], "jane", "{path} reached the app as jane");
    }
    let r = c.post(h.url("app.test", "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "any method goes to the app");
    assert_eq!(h.hits(), before + 4);
    // Anonymous, they are guarded like any other path of the app.
    let anon = client().redirect(redirects(false)).build().unwrap();
    let r = anon
        .get(h.url("app.test", "/.well-known/jwks.json"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/_stepgate/login"));
    // On stepgate's own host they are stepgate's.
    let r = anon
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = anon.get(format!("{}/readyz", h.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ready");
    let jwks: serde_json::Value = anon
        .get(format!("{}/.well-known/jwks.json", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    let r = anon
        .post(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert_eq!(h.hits(), before + 4, "none of these reached the app");
}

/// Sends `GET <target>` as written (no client-side URL clean-up), with a fresh token of
/// the issuer's; the status and the body.
async fn raw_bearer(h: &Harness, host: &str, target: &str) -> (u16, String) {
    let token = h.idp.token(|_| {});
    let a = raw_get(
        h.addr,
        host,
        target.as_bytes(),
        &format!("Authorization: Bearer {token}\r\nAccept: application/json\r\n"),
    )
    .await;
    (a.status, a.body)
}

#[tokio::test]
async fn a_route_cannot_be_dodged_by_spelling_its_path_differently() {
    let h = start().await;
    let hits = h.hits();
    // Each of these is /admin to a typical upstream: each gets the admin route's step-up.
    for target in [
        "/admin",
        "/%61dmin",
        "/%61%64%6D%69%6E/",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/x/%2E%2E/admin",
        "/data/..%2Fadmin",
        "/admin%2F",
        "/data/..;/admin",
        "/data\\..\\admin",
    ] {
        let (status, body) = raw_bearer(&h, "api.test", target).await;
        assert!(status == 401 || status == 400, "{target}: {status} {body}");
    }
    assert_eq!(h.hits(), hits, "none reached the upstream");
    // An equivalent spelling that is allowed reaches the upstream as the path decided on.
    let (status, body) = raw_bearer(&h, "api.test", "/x/../%64ata?q=%2F..").await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/data?q=%2F..");
}

#[tokio::test]
async fn a_case_insensitive_app_refuses_letters_an_upstream_may_fold_into_its_routes() {
    let h = start().await;
    let hits = h.hits();
    // The app's paths are matched ignoring ASCII case: /ADMIN is the admin route.
    let (status, body) = raw_bearer(&h, "iis.test", "/ADMIN").await;
    assert_eq!(status, 401, "{body}");
    // `İ` (U+0130) lowercases to `i`, `ſ` (U+017F) uppercases to `S`: an upstream that
    // folds Unicode case serves these as /admin and /secret. Routes fold ASCII only, so
    // they are refused rather than let past the admin route.
    for target in [
        "/adm%C4%B0n",
        "/ADM%C4%B0N/users",
        "/%C5%BFecret",
        "/x/../adm%c4%b0n",
    ] {
        let (status, body) = raw_bearer(&h, "iis.test", target).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("case-insensitive"), "{target}: {body}");
    }
    assert_eq!(h.hits(), hits, "none reached the upstream");
    // Other letters, and the same path at an app whose paths are case-sensitive (where
    // /admİn is not /admin to the upstream either), are decided as usual.
    let (status, body) = raw_bearer(&h, "iis.test", "/caf%C3%A9").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_bearer(&h, "api.test", "/adm%C4%B0n").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_request_names_one_host_or_is_refused() {
    let h = start().await;
    let t = h.idp.token(|_| {});
    let hits = h.hits();
    let send = async |head: &str| {
        let a = raw(
            h.addr,
            format!("{head}\r\nAuthorization: Bearer {t}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        (a.status, a.body)
    };
    // Decided for one app, the second Host would pick another at a virtual-hosting upstream.
    let (status, body) = send("GET /data HTTP/1.1\r\nHost: api.test\r\nHost: app.test").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Host"), "{body}");
    // An absolute target naming another host than Host (RFC 9112 3.2.2).
    let (status, body) = send("GET http://app.test/data HTTP/1.1\r\nHost: api.test").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(h.hits(), hits, "none reached the upstream");
    // The same host twice over (absolute target and Host) is one host.
    let (status, body) = send("GET http://api.test/data HTTP/1.1\r\nHost: API.test").await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["host_header"], "API.test");
}

#[tokio::test]
async fn stepgates_cookies_never_pass_between_client_and_upstream() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let app = reqwest::Url::parse(&h.url("app.test", "/")).unwrap();
    c.jar.add_cookie_str("theme=dark; Path=/", &app);
    let seen = echo(&c, &h.url("app.test", "/whoami")).await;
    assert_eq!(seen["user"], "jane", "signed in by the session cookie");
    let cookie = seen["cookie"].as_str().unwrap();
    assert!(
        cookie.contains("theme=dark"),
        "the app's own cookie passes: {cookie}"
    );
    assert!(
        !cookie.contains("stepgate"),
        "the session id stays with stepgate: {cookie}"
    );
    // An upstream cannot plant (or clear) the user's stepgate session.
    let r = c
        .get(h.url("app.test", "/set-cookies"))
        .send()
        .await
        .unwrap();
    let set: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set, ["app_pref=compact; Path=/"], "{r:?}");
    let seen = echo(&c, &h.url("app.test", "/whoami")).await;
    assert_eq!(seen["user"], "jane", "still the same session");
}

#[tokio::test]
async fn plain_http2_with_prior_knowledge_is_served() {
    let h = start().await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c.get(format!("{}/healthz", h.base)).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = reqwest::get(format!("{}/healthz", h.base)).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn the_upstream_is_never_told_another_path_or_method() {
    let h = start().await;
    let c = plain();
    // Written out, not taken from stepgate's list: the headers with which Symfony, Laravel,
    // IIS, Express, ASP.NET and others let a request name another path or method, under
    // their own names and as CGI-style upstreams also read them.
    let rewrites = [
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-original-method", "DELETE"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x_original_url", "/admin"),
        ("x_http_method_override", "DELETE"),
    ];
    let mut req = c
        .post(h.url("echo.test", "/data"))
        .bearer_auth(h.idp.token(|_| {}))
        .header("x-app-note", "kept");
    for (name, value) in rewrites {
        req = req.header(name, value);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The echo upstream reports every header it received.
    let seen: serde_json::Map<String, serde_json::Value> = r.json().await.unwrap();
    let said = |name: &str| seen.get(name).and_then(|v| v.as_str());
    assert_eq!(said("path"), Some("/data"), "{seen:?}");
    assert_eq!(said("method"), Some("POST"), "{seen:?}");
    assert_eq!(
        said("x-app-note"),
        Some("kept"),
        "the app's own header passes: {seen:?}"
    );
    for (name, _) in rewrites {
        assert!(
            !seen.contains_key(name),
            "{name} reached the upstream: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_websocket_closes_when_its_session_ends() {
    use tokio_tungstenite::tungstenite::Message;
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let session = c.session_id(&h.url("app.test", "/")).unwrap();
    let mut req = ws_request(&h);
    req.headers_mut().insert(
        "cookie",
        format!("stepgate_session={session}").parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let echo = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, i: u32| {
        ws.send(Message::text(format!("hi {i}"))).await?;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(m))) => Ok(m.into_text()?.to_string()),
            other => Err(tokio_tungstenite::tungstenite::Error::Io(
                std::io::Error::other(format!("{other:?}")),
            )),
        }
    };
    // Checked every second while the session stands: stays open.
    assert_eq!(echo(&mut ws, 1).await.unwrap(), "echo: hi 1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(echo(&mut ws, 2).await.unwrap(), "echo: hi 2");
    // Signed out elsewhere (the session is deleted): closed at a following check.
    h.st.stores.hot.delete_session(&session).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the WebSocket outlived its session");
}

#[tokio::test]
async fn a_head_request_gets_a_gets_headers_and_no_body_on_both_protocols() {
    let h = start().await;
    let h1 = plain();
    let h2 = client().http2_prior_knowledge().build().unwrap();
    // An API refusal: a JSON body of stepgate's own, answered without the router.
    let url = h.url("api.test", "/v1/report");
    for (c, version) in [
        (h1, reqwest::Version::HTTP_11),
        (h2, reqwest::Version::HTTP_2),
    ] {
        let get = c
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(get.version(), version);
        let status = get.status();
        assert!(status.is_client_error(), "{status}");
        let body = get.bytes().await.unwrap();
        assert!(!body.is_empty());
        let head = c
            .head(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), status, "{version:?}");
        assert_eq!(
            head.headers()["content-length"],
            body.len().to_string().as_str(),
            "{version:?}: the length a GET would get"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "{version:?}");
    }
}

/// An HTTP/2 connection (prior knowledge) to the gateway, and a task that ends when the
/// gateway closes it.
async fn h2_connection(
    h: &Harness,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (send, tokio::spawn(async move { conn.await.unwrap_or(()) }))
}

/// Reads HTTP/2 frames until the server closes the connection: each frame's type, and
/// when the close came (or `None` if it had not come within `within`).
async fn frames_until_closed(
    s: &mut tokio::net::TcpStream,
    within: Duration,
) -> (Vec<u8>, Option<Instant>) {
    use tokio::io::AsyncReadExt as _;
    let mut types = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout_at(deadline, s.read_exact(&mut head)).await {
            Err(_) => return (types, None),
            Ok(Err(_)) => return (types, Some(Instant::now())),
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        types.push(head[3]);
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return (types, Some(Instant::now()));
        }
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_told_to_go_away_and_cut_off_if_it_stays() {
    use tokio::io::AsyncWriteExt as _;
    const GOAWAY: u8 = 0x7;
    let h = start_full(tempfile::tempdir().unwrap(), "", "  header_timeout: 1s\n").await;
    // A client that opens an HTTP/2 connection (preface and empty SETTINGS) and then says
    // nothing, not even the acknowledgements the protocol asks for.
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let opened = Instant::now();
    let (types, closed) = frames_until_closed(&mut s, Duration::from_secs(10)).await;
    let closed = closed.expect("the connection is closed");
    // Told why before it is closed: a GOAWAY frame, once the limit has passed.
    assert!(types.contains(&GOAWAY), "frames: {types:?}");
    assert!(closed - opened >= Duration::from_millis(900));
    // Whether hyper closes it after GOAWAY or the cut-off does, it is gone within twice
    // the limit (and some slack for a loaded machine).
    assert!(
        closed - opened < Duration::from_secs(5),
        "{:?}",
        closed - opened
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let h = start_full(tempfile::tempdir().unwrap(), "", "  header_timeout: 1s\n").await;
    let get = |host: &str, path: &str, token: Option<String>| {
        let mut b = hyper::Request::get(format!("http://{host}{path}"));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    // A connection that never sends a request is let go.
    let (_send, closed) = h2_connection(&h).await;
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap();

    // One request, then silence: closed no sooner than the limit after it.
    let (mut send, mut closed) = h2_connection(&h).await;
    let r = send
        .send_request(get(
            &format!("127.0.0.1:{}", h.addr.port()),
            "/healthz",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), &mut closed)
        .await
        .expect("closed once idle")
        .unwrap();
    assert!(answered.elapsed() >= Duration::from_millis(900));

    // A request in progress for three times the limit (the upstream's /slow answers after
    // 3 s) keeps its connection, quiet as it is, and is answered.
    let (mut send, closed) = h2_connection(&h).await;
    let r = send
        .send_request(get("api.test", "/slow", Some(h.idp.token(|_| {}))))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"late");
    assert!(!closed.is_finished(), "still open right after the answer");
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("closed once idle after it")
        .unwrap();
}

/// The claims of an assertion, read without checking it (the tests above check it).
fn claims_of(assertion: &serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    let token = assertion.as_str().expect("an assertion");
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A session's identity headers and assertion are built once and reused while nothing
/// they say changes (the same assertion, not a new signature per request); once the
/// user record changes, the very next request the node sees it on carries the change.
#[tokio::test]
async fn a_session_is_asserted_anew_when_its_user_changes() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let first = echo(&c, &h.url("app.test", "/")).await;
    let again = echo(&c, &h.url("app.test", "/")).await;
    assert_eq!(first["assertion"], again["assertion"], "reused");
    assert_ne!(claims_of(&first["assertion"])["name"], "Jane Changed");
    let durable = &h.st.stores.durable;
    let mut jane = durable.get_user_by_username("jane").await.unwrap().unwrap();
    jane.name = Some("Jane Changed".into());
    // Through this node's store, which drops its cached record: the session's own record
    // stays cached, so only the user record's change can make the next block anew.
    durable.update_user(&jane).await.unwrap();
    let changed = echo(&c, &h.url("app.test", "/")).await;
    assert_ne!(changed["assertion"], first["assertion"]);
    assert_eq!(claims_of(&changed["assertion"])["name"], "Jane Changed");
    assert_eq!(changed["user"], "jane");
}

#[tokio::test]
async fn the_gateways_own_errors_are_portal_pages_with_a_way_on() {
    let h = start().await;
    let c = plain();
    let html = |req: reqwest::RequestBuilder| req.header("accept", "text/html").send();
    let account = format!(
        "href=\"http://127.0.0.1:{}/_stepgate/account\"",
        h.addr.port()
    );

    // A host stepgate does not serve: 421, a way to the account page on the public URL.
    let r = html(c.get(h.url("nowhere.test", "/x"))).await.unwrap();
    let body = error_page(r, 421, "Not served here").await;
    assert!(body.contains(&account), "{body}");
    // An API keeps its JSON.
    let j = api_refusal(c.get(h.url("nowhere.test", "/x")), 421).await;
    assert_eq!(j["error"], "invalid_request");

    // The portal's own host, where no app is: 404 in the portal's layout.
    let r = html(c.get(h.url("127.0.0.1", "/nothing-here")))
        .await
        .unwrap();
    let body = error_page(r, 404, "Page not found").await;
    assert!(body.contains(&account), "{body}");

    // An app that is down, for a signed-in browser: "Try again" repeats the GET, with the
    // account page beside it (the sign-in lands there).
    let b = Browser::new();
    let r = sign_in(
        &b,
        &h.url("down.test", "/reports?week=3"),
        &JANE,
        &JANE.code(0),
    )
    .await;
    let body = error_page(r, 502, "The application is not answering").await;
    assert!(
        body.contains(r#"<a class="button" href="/reports?week=3" id="continue">Try again</a>"#),
        "{body}"
    );
    assert!(body.contains(&account), "{body}");
    for leak in ["127.0.0.1:1", "refused", "hyper"] {
        assert!(!body.contains(leak), "{leak} in {body}");
    }
    // A form's POST is not repeated by a link: the app's start page instead.
    let r = html(b.post(h.url("down.test", "/reports"))).await.unwrap();
    let body = error_page(r, 502, "The application is not answering").await;
    assert!(
        body.contains(r#"href="/" id="continue">Go to the start page of down</a>"#),
        "{body}"
    );
    // An address odd enough to escape into the page is escaped, never markup.
    let r = html(b.get(h.url("down.test", "/a\"><b>x"))).await.unwrap();
    let body = error_page(r, 502, "The application is not answering").await;
    assert!(!body.contains("\"><b>"), "{body}");
    // An API client (a bearer token) keeps its JSON.
    let token = h.idp.token(|_| {});
    let r = c
        .get(h.url("down.test", "/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "bad_gateway"
    );

    // Too slow: 504 with the same way on.
    let r = sign_in(&b, &h.url("slow.test", "/slow"), &JANE, &JANE.code(1)).await;
    let body = error_page(r, 504, "The application took too long").await;
    assert!(
        body.contains(r#"href="/slow" id="continue">Try again</a>"#),
        "{body}"
    );
}
