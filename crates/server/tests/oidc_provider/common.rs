//! What the provider's tests share: the clients' config, starting stepgate with them, and
//! the authorization-code flow by hand (authorize, sign in, redeem, introspect).

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Digest as _;

use crate::support::{password, upstream, Browser, Server, JANE};

pub(crate) const CLIENT: &str = "expense-reports";

pub(crate) const SECRET: &str = "s3cret-for-the-test-only";

pub(crate) const PUBLIC: &str = "expense-mobile";

pub(crate) const CONFIG: &str = r#"
apps:
  - id: expenses
    name: Expense Reports
    hosts: [expenses.test]
    upstream: "http://UPSTREAM"
    routes:
      - { path: /reports/**, tags: [sensitive] }
  - { id: vault, name: Vault, hosts: [vault.test] }
sessions: { cookie: { secure: false } }
policies:
  - name: sign-in-with-a-password
    priority: 10
    targets: { sign_in: true }
    outcome: allow
  - name: vault-closed
    priority: 15
    targets: { apps: [vault] }
    outcome: { deny: { message: "The vault is closed." } }
  - name: reports-need-mfa
    priority: 20
    targets: { apps: [expenses], routes: [{ tags: [sensitive] }] }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 30
    outcome: allow
oidc:
  code_lifetime: CODE_LIFETIME
  pairwise_secret: { inline_insecure: "a-pairwise-key-for-the-test-only-0123456789" }
  clients:
    - id: expense-reports
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      post_logout_redirect_uris: ["http://rp.test/signed-out"]
      backchannel_logout_uri: "http://BCL/bcl"
      app: expenses
    - id: expense-audit
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      backchannel_logout_uri: "http://FLAKY/bcl"
      app: expenses
    - id: expense-rsa
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      id_token_signed_response_alg: RS256
      app: expenses
    - id: expense-ed
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      id_token_signed_response_alg: EdDSA
      app: expenses
    - id: books-web
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      subject_type: pairwise
      sector_identifier: books.example
      backchannel_logout_uri: "http://BCL/bcl"
      app: expenses
    - id: books-mobile
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      subject_type: pairwise
      sector_identifier: books.example
      app: expenses
    - id: rp-pairwise
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      subject_type: pairwise
      app: expenses
    - id: vault-web
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      app: vault
    - id: expense-batch
      jwks_file: client-jwks.json
      redirect_uris: ["http://rp.test/cb"]
      app: expenses
    - id: expense-sync
      secret_hash: "SECRET_HASH"
      grant_types: [client_credentials]
      app: expenses
    - id: expense-mobile
      type: public
      scopes: [openid, profile]
      redirect_uris: ["http://rp.test/cb"]
      app: expenses
"#;

/// A cheap argon2id hash of `secret` (the test's; a deployment's is the default cost).
pub(crate) fn hash(secret: &str) -> String {
    let cheap = stepgate_authn::config::Argon2Config::insecure_for_tests();
    stepgate_authn::password::hash_secret(&cheap, secret.as_bytes()).unwrap()
}

/// A stepgate with the two clients, codes living `code_lifetime`. The redirect URIs are
/// on `rp.test`, which nothing serves: where stepgate sends a browser is read, never
/// followed.
pub(crate) async fn provider(code_lifetime: &str) -> Server {
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::echo().await)
        .with("CODE_LIFETIME", code_lifetime)
        .with("SECRET_HASH", hash(SECRET))
        .with("BCL", back_channel().0)
        .with("FLAKY", flaky_back_channel().0)
        .demo_users()
        .start()
        .await
}

pub(crate) fn redirect_uri(_h: &Server) -> String {
    "http://rp.test/cb".into()
}

pub(crate) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn s256(verifier: &str) -> String {
    b64(&sha2::Sha256::digest(verifier.as_bytes()))
}

pub(crate) const VERIFIER: &str = "a-pkce-code-verifier-of-at-least-forty-three-characters-000";

pub(crate) fn authorize_url(h: &Server, extra: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&h.at("/_stepgate/oidc/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("client_id", CLIENT)
            .append_pair("redirect_uri", &redirect_uri(h))
            .append_pair("response_type", "code")
            .append_pair("scope", "openid profile")
            .append_pair("state", "st-1")
            .append_pair("code_challenge", &s256(VERIFIER))
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

/// The query of where an authorization request sends the browser (not followed).
pub(crate) async fn answer(b: &Browser, url: &str) -> (StatusCode, Option<url::Url>) {
    let r = b.tab(false).get(url).send().await.unwrap();
    let loc = r
        .headers()
        .get("location")
        .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap());
    (r.status(), loc)
}

pub(crate) fn param(u: &url::Url, k: &str) -> Option<String> {
    u.query_pairs()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.into_owned())
}

/// A browser signed in as jane (password: the sign-in policy asks no more), and a code for
/// the confidential client.
pub(crate) async fn signed_in_code(h: &Server) -> (Browser, String) {
    let b = Browser::new();
    let r = password(&b, &h.at("/_stepgate/login"), &JANE).await;
    assert!(r.status().is_success(), "{}", r.status());
    let c = code(h, &b, &[]).await;
    (b, c)
}

pub(crate) async fn code(h: &Server, b: &Browser, extra: &[(&str, &str)]) -> String {
    let (status, loc) = answer(b, &authorize_url(h, extra)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let loc = loc.unwrap();
    assert!(loc.as_str().starts_with(&redirect_uri(h)), "{loc}");
    assert_eq!(param(&loc, "iss").as_deref(), Some(h.public_url.as_str()));
    param(&loc, "code").unwrap_or_else(|| panic!("no code: {loc}"))
}

pub(crate) async fn exchange(
    h: &Server,
    form: &[(&str, &str)],
    secret: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/token"))
        .form(form);
    if let Some(s) = secret {
        req = req.basic_auth(CLIENT, Some(s));
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn redeem(h: &Server, code: &str, verifier: &str) -> (StatusCode, Value) {
    exchange(
        h,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri(h)),
            ("code_verifier", verifier),
        ],
        Some(SECRET),
    )
    .await
}

pub(crate) async fn introspect(h: &Server, token: &str) -> Value {
    reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/introspect"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Pushes an authorization request (RFC 9126) for the confidential client; the answer.
pub(crate) async fn push(h: &Server, secret: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let s256 = s256(VERIFIER);
    let mut form = vec![
        ("redirect_uri", "http://rp.test/cb"),
        ("response_type", "code"),
        ("scope", "openid profile"),
        ("state", "st-par"),
        ("code_challenge", s256.as_str()),
        ("code_challenge_method", "S256"),
    ];
    form.extend_from_slice(extra);
    let r = reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/par"))
        .basic_auth(CLIENT, Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

pub(crate) type Received = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A relying party's back-channel logout endpoint, for the whole test binary (on a thread
/// of its own, so it outlives each test's runtime): where it listens, and the bodies posted
/// to it.
pub(crate) fn back_channel() -> &'static (std::net::SocketAddr, Received) {
    static BCL: std::sync::OnceLock<(std::net::SocketAddr, Received)> = std::sync::OnceLock::new();
    BCL.get_or_init(|| receiver(0))
}

/// The first logout token posted to [`back_channel`] whose claims `matches`, waited for
/// (5 s at most: the delivery is asynchronous); `None` if none came.
pub(crate) async fn logout_token(matches: impl Fn(&Value) -> bool) -> Option<String> {
    for _ in 0..100 {
        let found = back_channel()
            .1
            .lock()
            .unwrap()
            .iter()
            .filter_map(|body| {
                url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "logout_token")
                    .map(|(_, v)| v.into_owned())
            })
            .find(|t| matches(&payload(t)));
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

/// Another client's endpoint, which answers `503` to the first two posts it gets (every
/// post is recorded).
pub(crate) fn flaky_back_channel() -> &'static (std::net::SocketAddr, Received) {
    static BCL: std::sync::OnceLock<(std::net::SocketAddr, Received)> = std::sync::OnceLock::new();
    BCL.get_or_init(|| receiver(2))
}

/// A loopback `POST /bcl` receiver that refuses its first `refuse` posts with `503`.
pub(crate) fn receiver(refuse: usize) -> (std::net::SocketAddr, Received) {
    let got: Received = Default::default();
    let keep = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route(
                "/bcl",
                axum::routing::post(move |body: String| {
                    let keep = keep.clone();
                    async move {
                        let n = {
                            let mut got = keep.lock().unwrap();
                            got.push(body);
                            got.len()
                        };
                        if n <= refuse {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                }),
            );
            axum::serve(l, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), got)
}

pub(crate) async fn introspect_as(h: &Server, client: &str, token: &str) -> Value {
    reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/introspect"))
        .basic_auth(client, Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The claims of a JWT, unverified.
pub(crate) fn payload(jwt: &str) -> Value {
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}
