//! Token endpoint throughput (issue 19): code exchanges and refreshes per second through
//! `POST {portal}/oidc/token` over loopback HTTP, against a stepgate on the embedded SQLite
//! store; then each part of one issuance timed on its own, to say what dominates.
//!
//!     cargo bench -p stepgate-server --bench oidc_token   # optimised
//!     cargo test  -p stepgate-server --bench oidc_token   # debug: a smoke run only
//!
//! `OIDC_BENCH_SECS` (default 5) per phase, `OIDC_BENCH_CONCURRENCY` (default 8) clients.
//! The client is public (PKCE, no secret), so no argon2 runs per request; a confidential
//! client adds one argon2id verification per request, timed below. Codes are minted
//! directly (sealed as the authorize endpoint seals them, for a live session), so the
//! figure is the token endpoint's alone.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;
use stepgate_server::oidc::grant::{self, Authorization, Code};
use support::{signed_in_session, user, Server, JANE};

const CONFIG: &str = r#"
apps:
  - { id: expenses, name: Expense Reports, hosts: [expenses.test] }
sessions: { cookie: { secure: false } }
policies:
  - { name: everyone, priority: 10, outcome: allow }
oidc:
  clients:
    - id: bench-public
      type: public
      redirect_uris: ["http://rp.test/cb"]
      app: expenses
"#;

const VERIFIER: &str = "a-pkce-code-verifier-of-at-least-forty-three-characters-000";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A code for the session `auth` names, sealed as the authorize endpoint seals it.
fn mint_code(h: &Server, auth: &Authorization) -> String {
    let mut a = auth.clone();
    a.gid = grant::new_id();
    let chal = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(VERIFIER.as_bytes()));
    h.st.oidc
        .seal_code(&Code {
            auth: a,
            ruri: "http://rp.test/cb".into(),
            chal: Some(chal),
            exp: chrono::Utc::now().timestamp() + 60,
        })
        .expect("sealed")
}

async fn post(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> Value {
    let r = http.post(url).form(form).send().await.expect("sent");
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.expect("json")
}

async fn redeem(h: &Server, http: &reqwest::Client, auth: &Authorization) -> Value {
    let code = mint_code(h, auth);
    post(
        http,
        &h.at("/_stepgate/oidc/token"),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "bench-public"),
            ("code", &code),
            ("redirect_uri", "http://rp.test/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

/// Runs `clients` loops of `one` for `secs`; how many per second.
async fn phase<F, Fut>(secs: u64, clients: u64, one: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let one = Arc::new(one);
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (done, one) = (done.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                one(c).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The mean time of `n` runs of `f`, in µs.
fn time<R>(n: u32, mut f: impl FnMut() -> R) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

async fn time_async<R, Fut: std::future::Future<Output = R>>(
    n: u32,
    mut f: impl FnMut() -> Fut,
) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f().await);
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    // `cargo test --benches` asks for a list first; nothing to list.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

async fn run() {
    let secs = env("OIDC_BENCH_SECS", 5);
    let clients = env("OIDC_BENCH_CONCURRENCY", 8);
    let h = Arc::new(Server::build(CONFIG).demo_users().start().await);
    let jane = user(&h.st, JANE.username).await;
    let now = chrono::Utc::now();
    let sid = signed_in_session(&h.st, &jane, now).await;
    let (_, data) = h.st.sessions.peek(&sid).await.unwrap().expect("session");
    let auth = Authorization {
        cid: "bench-public".into(),
        uid: jane.id.clone(),
        sct: grant::session_mark(data.created_at),
        aal: 2,
        amr: vec!["pwd".into(), "otp".into(), "mfa".into()],
        auth_time: now.timestamp(),
        scope: "openid profile email".into(),
        gid: String::new(),
        nonce: Some("n-0".into()),
    };
    let http = reqwest::Client::new();
    println!(
        "oidc token endpoint: {clients} clients, {secs}s per phase, a public client (PKCE), SQLite, {} build",
        if cfg!(debug_assertions) {
            "DEBUG (not representative)"
        } else {
            "optimised"
        }
    );

    let code_rate = {
        let (h, http, auth) = (h.clone(), http.clone(), auth.clone());
        phase(secs, clients, move |_| {
            let (h, http, auth) = (h.clone(), http.clone(), auth.clone());
            async move {
                assert!(redeem(&h, &http, &auth).await["id_token"].is_string());
            }
        })
        .await
    };
    println!(
        "  authorization_code: {code_rate:8.0} exchanges/s (an access, ID and refresh token each)"
    );

    // Each client rotates its own refresh token.
    let mut starts = Vec::new();
    for _ in 0..clients {
        let t = redeem(&h, &http, &auth).await;
        starts.push(std::sync::Mutex::new(
            t["refresh_token"].as_str().unwrap().to_string(),
        ));
    }
    let current = Arc::new(starts);
    let refresh_rate = {
        let (http, url) = (http.clone(), h.at("/_stepgate/oidc/token"));
        phase(secs, clients, move |c| {
            let (http, url, current) = (http.clone(), url.clone(), current.clone());
            async move {
                let token = current[c as usize].lock().unwrap().clone();
                let t = post(
                    &http,
                    &url,
                    &[
                        ("grant_type", "refresh_token"),
                        ("client_id", "bench-public"),
                        ("refresh_token", &token),
                    ],
                )
                .await;
                *current[c as usize].lock().unwrap() =
                    t["refresh_token"].as_str().unwrap().to_string();
            }
        })
        .await
    };
    println!("  refresh_token:      {refresh_rate:8.0} refreshes/s (a new access, ID and refresh token each)");

    // The parts of one issuance, one at a time.
    let n = 300;
    let claims = serde_json::json!({
        "iss": h.public_url, "sub": jane.id, "aud": "urn:stepgate:api:expenses",
        "iat": now.timestamp(), "exp": now.timestamp() + 300, "scope": "openid profile email",
        "acr": "aal2", "amr": ["pwd", "otp", "mfa"], "auth_time": now.timestamp(),
    });
    let sign = time(n, || h.st.oidc_keys.sign_claims("at+jwt", &claims));
    let seal = time(n, || {
        let c = mint_code(&h, &auth);
        h.st.oidc.open_code(&c)
    });
    let code_once = time_async(n, || {
        let mut a = auth.clone();
        a.gid = grant::new_id();
        let c = Code {
            auth: a,
            ruri: String::new(),
            chal: None,
            exp: 0,
        };
        let st = h.st.clone();
        async move { grant::use_code(&st, &c).await.unwrap() }
    })
    .await;
    let live = time_async(n, || {
        let (st, a) = (h.st.clone(), auth.clone());
        async move { grant::still_live(&st, &a).await.unwrap() }
    })
    .await;
    let phc = stepgate_authn::password::hash_secret(
        &stepgate_authn::config::Argon2Config::default(),
        b"a-client-secret",
    )
    .unwrap();
    let argon2 = time(5, || {
        stepgate_authn::password::verify_secret(&phc, b"a-client-secret")
    });
    println!("  parts of one code exchange, one at a time (µs):");
    println!("    one ES256 signature (two per exchange: access and ID token) {sign:9.1}");
    println!("    seal + open a code (ChaCha20-Poly1305)                      {seal:9.1}");
    println!("    hot store: the code's single use (a write)                  {code_once:9.1}");
    println!("    hot store: its session still live (reads)                   {live:9.1}");
    println!("    argon2id secret check, default cost (confidential only)     {argon2:9.1}");
}
