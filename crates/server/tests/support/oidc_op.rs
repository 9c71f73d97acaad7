//! A real OpenID Provider for the upstream sign-in tests: the certified npm
//! `oidc-provider`, started from `e2e/oidc-op/op.js` (its `npm ci` is `.ci/run`'s), and a
//! tap in front of its token endpoint that can hand stepgate a different ID token than the
//! provider issued — the forged or replayed tokens an attacker on that path would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use tokio::io::AsyncBufReadExt;

/// The provider's directory in the repository.
fn op_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../e2e/oidc-op"))
}

/// A free port of 127.0.0.1 (bound, then released for the provider to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running provider; stopped when dropped.
pub struct Op {
    child: tokio::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    /// Its signing key (PKCS#8 PEM, ES256, kid `op-key-1`): to sign as the provider.
    pub key_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Op {
    /// Starts the provider on `port` with client `stepgate` redirecting to `redirect_uri`
    /// (its post-logout redirect and back-channel logout URIs beside it);
    /// `None` (the test records a skip) when Node or the package is missing, unless CI
    /// requires it.
    pub async fn start(port: u16, redirect_uri: &str) -> Option<Op> {
        Op::start_with(port, redirect_uri, &[]).await
    }

    /// [`Op::start`] with more of op.js's environment (`OP_PKJWT_JWK`).
    pub async fn start_with(port: u16, redirect_uri: &str, env: &[(&str, &str)]) -> Option<Op> {
        let dir = op_dir();
        let missing = if std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_err()
        {
            Some("Node.js")
        } else if !dir.join("node_modules/oidc-provider").is_dir() {
            Some("e2e/oidc-op/node_modules (npm ci)")
        } else {
            None
        };
        if let Some(what) = missing {
            if std::env::var_os("STEPGATE_REQUIRE_OIDC_OP").is_some()
                || std::env::var_os("CI").is_some()
            {
                panic!("the upstream OIDC tests need {what}: .ci/run installs it");
            }
            super::skipped::record(what, "cd e2e/oidc-op && npm ci");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("op-key.pem");
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("op.js"))
            .env("OP_PORT", port.to_string())
            .env("OP_REDIRECT_URI", redirect_uri)
            // stepgate's logout URIs beside its callback.
            .env(
                "OP_POST_LOGOUT_URI",
                redirect_uri.replace("/callback", "/signed-out"),
            )
            .env(
                "OP_BACKCHANNEL_URI",
                redirect_uri.replace("/callback", "/backchannel-logout"),
            )
            .env("OP_KEY_PEM", &key)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.starts_with("op listening on ") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "the OpenID Provider did not start");
        // Keep reading, so that what it prints later never fails for a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Op {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
            key_pem: std::fs::read(&key).unwrap(),
            _dir: tmp,
        })
    }

    /// Who the provider signs in next: its subject, the `amr`, `acr` it reports, and how
    /// long ago (seconds) they authenticated (`auth_time`).
    pub async fn next(&self, sub: &str, amr: &[&str], acr: Option<&str>, auth_age: i64) {
        let r = reqwest::Client::new()
            .post(format!("{}/test/next", self.issuer))
            .json(&serde_json::json!({ "sub": sub, "amr": amr, "acr": acr, "auth_age": auth_age }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
}

impl Op {
    /// Disables `sub` at the provider: its refresh tokens are refused from now on.
    pub async fn disable(&self, sub: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/test/disable", self.issuer))
            .json(&serde_json::json!({ "sub": sub }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
}

/// What the tap does with the provider's token answer.
pub type Rewrite = Box<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Clone)]
struct TapState {
    op: String,
    me: String,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// A discovery document and token endpoint in front of the provider: stepgate is pointed
/// at its discovery URL, reads everything else from the provider itself, and receives the
/// token answer through the tap.
pub struct TokenTap {
    /// The discovery URL to configure.
    pub discovery_url: String,
    state: TapState,
}

impl TokenTap {
    /// A tap in front of the provider at `issuer`.
    pub async fn start(issuer: &str) -> TokenTap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = TapState {
            op: issuer.to_string(),
            me: format!("http://{addr}"),
            rewrite: Arc::default(),
            seen: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TokenTap {
            discovery_url: format!("http://{addr}/.well-known/openid-configuration"),
            state,
        }
    }

    /// From now on, stepgate receives `rewrite(the provider's ID token, or "" when it
    /// issued none)` instead, in a successful answer.
    pub fn rewrite(&self, f: impl Fn(&str) -> String + Send + Sync + 'static) {
        *self.state.rewrite.lock().unwrap() = Some(Box::new(f));
    }

    /// Back to passing the provider's answers on as they are.
    pub fn clear(&self) {
        *self.state.rewrite.lock().unwrap() = None;
    }

    /// The ID tokens the provider issued, in order.
    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn discovery(State(s): State<TapState>) -> Json<serde_json::Value> {
    let mut doc: serde_json::Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", s.op))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    doc["token_endpoint"] = serde_json::Value::String(format!("{}/token", s.me));
    Json(doc)
}

async fn token(
    State(s): State<TapState>,
    headers: HeaderMap,
    body: String,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/token", s.op))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(a) = headers.get("authorization") {
        req = req.header("authorization", a.clone());
    }
    let r = req.send().await.unwrap();
    let status = axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
    let answer: serde_json::Value = r.json().await.unwrap();
    let issued = answer["id_token"].as_str().map(str::to_string);
    if let Some(t) = &issued {
        s.seen.lock().unwrap().push(t.clone());
    }
    match s.rewrite.lock().unwrap().as_ref() {
        // The attacker answers in the provider's place, whatever the provider said.
        Some(f) => (
            axum::http::StatusCode::OK,
            Json(serde_json::json!({
                "id_token": f(issued.as_deref().unwrap_or("")),
                "access_token": "tapped", "token_type": "Bearer", "expires_in": 60,
            })),
        ),
        None => (status, Json(answer)),
    }
}

/// The link after `needle` in `html`, entities decoded.
pub fn link_after(html: &str, needle: &str) -> String {
    let at = html
        .find(needle)
        .unwrap_or_else(|| panic!("no `{needle}` in\n{html}"))
        + needle.len();
    html[at..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#x2f;", "/")
}

/// Opens `path` of `h`'s app signed out in `b`, and follows the sign-in page's "Sign in
/// with `label`" button through the provider and back: the page it ends on.
pub async fn through_provider(
    h: &super::Server,
    b: &super::Browser,
    path: &str,
    label: &str,
) -> super::Page {
    let login = super::Page::open(b, &h.at(path)).await;
    assert!(
        login.html.contains(&format!("Sign in with {label}")),
        "the sign-in page offers {label}:\n{}",
        login.html
    );
    let href = link_after(&login.html, "<a class=\"button secondary\" href=\"");
    super::Page::open(b, &h.at(&href)).await
}
