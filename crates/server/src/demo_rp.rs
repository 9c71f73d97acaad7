//! The demo's OpenID Connect app, "Expense Reports": a small relying party on a port of its
//! own that signs in through stepgate (the code flow with PKCE, as a public client), verifies
//! the ID token against stepgate's JWKS and shows its `acr`, `amr` and `auth_time`; a button
//! asks for `acr_values=aal3`, so stepgate steps the user up before the app gets its code.
//! Demo only: sessions in memory, plain http.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::app::signer::random_id;

/// The demo client's id (`oidc.clients` in examples/demo.yaml).
pub const CLIENT_ID: &str = "expense-reports-web";

struct Rp {
    /// stepgate's issuer (its public URL) and portal path, once known.
    provider: std::sync::OnceLock<(String, String)>,
    /// This app's callback.
    redirect_uri: String,
    /// Sign-ins under way: state → (PKCE verifier, nonce).
    pending: Mutex<HashMap<String, (String, String)>>,
    /// Signed-in browsers: cookie → the ID token's claims.
    sessions: Mutex<HashMap<String, serde_json::Value>>,
    http: reqwest::Client,
}

const COOKIE: &str = "expense_reports";

/// A running Expense Reports.
pub struct ExpenseReports {
    rp: Arc<Rp>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ExpenseReports {
    /// Signs in through the stepgate at `issuer` (its public URL), portal path `portal`.
    pub fn connect(&self, issuer: &str, portal: &str) {
        let _ = self
            .rp
            .provider
            .set((issuer.to_string(), portal.to_string()));
    }
}

impl Rp {
    fn issuer(&self) -> &str {
        self.provider.get().map_or("", |p| p.0.as_str())
    }

    fn portal(&self) -> &str {
        self.provider.get().map_or("", |p| p.1.as_str())
    }
}

/// Starts Expense Reports on `addr` (its redirect URI is
/// `http://localhost:<port>/callback`); it signs in once [`ExpenseReports::connect`]ed.
pub async fn start_expense_reports(addr: SocketAddr) -> std::io::Result<ExpenseReports> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let rp = Arc::new(Rp {
        provider: std::sync::OnceLock::new(),
        redirect_uri: redirect_uri(local),
        pending: Mutex::default(),
        sessions: Mutex::default(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default(),
    });
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .with_state(rp.clone());
    crate::demo::serve(listener, app, "Expense Reports app");
    Ok(ExpenseReports { rp, addr: local })
}

/// The redirect URI of an Expense Reports listening on `addr`.
pub fn redirect_uri(addr: SocketAddr) -> String {
    format!("http://localhost:{}/callback", addr.port())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(rp: &Rp, body: &str) -> Response {
    Html(format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Expense Reports</title>\
         <link rel=stylesheet href='{}{}/static/style.css'><main class=wide><div class=card>\
         <h1>Expense Reports</h1><p class=muted>An app that signs in with OpenID Connect through stepgate.</p>{body}</div></main></html>",
        rp.issuer(), rp.portal()
    ))
    .into_response()
}

fn cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

async fn home(State(rp): State<Arc<Rp>>, h: HeaderMap) -> Response {
    let claims = cookie(&h).and_then(|c| {
        rp.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&c)
            .cloned()
    });
    let buttons = "<p><a class=button id=sign-in href='/login'>Sign in with stepgate</a> \
                   <a class=button id=sign-in-aal3 href='/login?acr=aal3'>Approve expenses (asks for acr_values=aal3)</a></p>";
    let body = match claims {
        None => format!("<p id=status>Not signed in.</p>{buttons}"),
        Some(c) => {
            let s = |k: &str| {
                esc(&match c.get(k) {
                    Some(serde_json::Value::String(v)) => v.clone(),
                    Some(serde_json::Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    Some(v) => v.to_string(),
                    None => String::new(),
                })
            };
            let auth_time = c
                .get("auth_time")
                .and_then(|v| v.as_i64())
                .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            format!(
                "<p id=status>Signed in as <strong id=user>{}</strong>.</p>\
                 <table><tr><th>acr</th><td id=acr>{}</td></tr><tr><th>amr</th><td id=amr>{}</td></tr>\
                 <tr><th>auth_time</th><td id=auth-time>{}</td></tr></table>{buttons}",
                s("preferred_username"),
                s("acr"),
                s("amr"),
                esc(&auth_time)
            )
        }
    };
    page(&rp, &body)
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    acr: Option<String>,
}

async fn login(State(rp): State<Arc<Rp>>, Query(q): Query<LoginQuery>) -> Response {
    let state = random_id();
    let verifier = format!("{}{}", random_id(), random_id());
    let nonce = random_id();
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    rp.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(state.clone(), (verifier, nonce.clone()));
    let mut u = match url::Url::parse(&format!("{}{}/oidc/authorize", rp.issuer(), rp.portal())) {
        Ok(u) => u,
        Err(_) => return page(&rp, "<p>stepgate's address is not a URL.</p>"),
    };
    {
        let mut p = u.query_pairs_mut();
        p.append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", &rp.redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid profile email groups")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(a) = q.acr.as_deref().filter(|a| !a.is_empty()) {
            p.append_pair("acr_values", a);
        }
    }
    Redirect::to(u.as_str()).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

async fn callback(State(rp): State<Arc<Rp>>, Query(q): Query<CallbackQuery>) -> Response {
    let Some((verifier, nonce)) = rp
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&q.state)
    else {
        return page(
            &rp,
            "<p id=status>Unknown or used sign-in state.</p><p><a href='/'>Back</a></p>",
        );
    };
    // RFC 9207: the answer must come from the provider the request went to.
    if q.iss.as_deref() != Some(rp.issuer()) {
        return page(&rp, "<p id=status>The answer names another issuer.</p>");
    }
    if let Some(e) = q.error {
        return page(
            &rp,
            &format!(
                "<p id=status>stepgate said <code id=error>{}</code>: {}</p><p><a href='/'>Back</a></p>",
                esc(&e),
                esc(&q.error_description.unwrap_or_default())
            ),
        );
    }
    let Some(code) = q.code else {
        return page(&rp, "<p id=status>No code.</p>");
    };
    match redeem(&rp, &code, &verifier, &nonce).await {
        Ok(claims) => {
            let sid = random_id();
            rp.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sid.clone(), claims);
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = format!("{COOKIE}={sid}; HttpOnly; SameSite=Lax; Path=/").parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(why) => page(
            &rp,
            &format!("<p id=status>Sign-in failed: {}</p>", esc(&why)),
        ),
    }
}

/// Exchanges the code and verifies the ID token (signature against the JWKS, issuer,
/// audience, expiry, nonce).
async fn redeem(
    rp: &Rp,
    code: &str,
    verifier: &str,
    nonce: &str,
) -> Result<serde_json::Value, String> {
    let token_url = format!("{}{}/oidc/token", rp.issuer(), rp.portal());
    let tokens = rp.http.post(&token_url).form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &rp.redirect_uri),
        ("client_id", CLIENT_ID),
        ("code_verifier", verifier),
    ]);
    let tokens: serde_json::Value = json(tokens).await?;
    let id_token = tokens["id_token"]
        .as_str()
        .ok_or_else(|| format!("no ID token: {tokens}"))?;
    let jwks_url = format!("{}{}/oidc/jwks", rp.issuer(), rp.portal());
    let jwks: jsonwebtoken::jwk::JwkSet = json(rp.http.get(jwks_url)).await?;
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| e.to_string())?;
    let jwk = header
        .kid
        .as_deref()
        .and_then(|k| jwks.find(k))
        .ok_or("unknown signing key")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&[rp.issuer()]);
    v.set_audience(&[CLIENT_ID]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(id_token, &key, &v)
        .map_err(|e| e.to_string())?
        .claims;
    if claims["nonce"].as_str() != Some(nonce) {
        return Err("the nonce does not match".into());
    }
    Ok(claims)
}

/// The JSON answer to `req`.
async fn json<T: serde::de::DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    r.json().await.map_err(|e| e.to_string())
}
