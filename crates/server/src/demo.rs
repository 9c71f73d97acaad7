//! `stepgate demo`: device profiles a visitor can switch between, the built-in "Licence
//! Console" and "Team Wiki" upstream apps, and the seeded demo users.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use stepgate_policy::{DeviceContext, DeviceState, FailingCheck, PostureValue};

/// The cookie holding the chosen demo device profile.
pub const DEVICE_COOKIE: &str = "stepgate_demo_device";
/// A header that overrides the profile for one request (scripts, curl).
pub const DEVICE_HEADER: &str = "x-stepgate-demo-device";

/// Where the demo configuration's attestation root is read, under its data directory.
pub const ATTESTATION_PEM_PATH: &str = "demo-attestation/chromium-virtual-authenticator.pem";
/// DEMO ONLY: the attestation certificate Chromium's virtual authenticator signs afresh at
/// each registration (same subject and key every time; the key is published in Chromium's
/// source), captured from a registration with `attestation: direct`.
const ATTESTATION_PEM: &str =
    include_str!("../../../examples/demo-attestation/chromium-virtual-authenticator.pem");

/// Writes the files the demo configuration names (its attestation root) under `dir`.
pub fn write_files(dir: &std::path::Path) -> std::io::Result<()> {
    let pem = dir.join(ATTESTATION_PEM_PATH);
    if let Some(parent) = pem.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(pem, ATTESTATION_PEM)
}

/// A demo device profile.
pub struct Profile {
    /// Identifier used in the cookie/header.
    pub id: &'static str,
    /// What the visitor sees.
    pub title: &'static str,
    /// Pretend client IP (the office network), if any.
    pub ip: Option<&'static str>,
}

/// The profiles, the default first.
pub const PROFILES: &[Profile] = &[
    Profile {
        id: "healthy",
        title: "Company laptop, healthy (managed, EDR, compliant) — from home",
        ip: None,
    },
    Profile {
        id: "office",
        title: "Company laptop, healthy — in the office (corporate network)",
        ip: Some("10.0.0.5"),
    },
    Profile {
        id: "noncompliant",
        title: "Company laptop with disk encryption off and an old OS (non-compliant)",
        ip: None,
    },
    Profile {
        id: "byod",
        title: "Personal laptop, registered (BYOD)",
        ip: None,
    },
    Profile {
        id: "unknown",
        title: "Unknown device",
        ip: None,
    },
];

/// The profile named `id` (unknown names fall back to the default).
pub fn profile(id: Option<&str>) -> &'static Profile {
    id.and_then(|id| PROFILES.iter().find(|p| p.id == id))
        .unwrap_or(&PROFILES[0])
}

/// The device context a profile stands for.
pub fn device(p: &Profile) -> Option<DeviceContext> {
    let posture = |pairs: &[(&str, &str)]| -> BTreeMap<String, PostureValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), PostureValue::from(*v)))
            .collect()
    };
    match p.id {
        "healthy" | "office" => Some(DeviceContext {
            id: Some("demo-laptop".into()),
            state: DeviceState::ManagedEdr,
            hostname: Some("demo-laptop.corp.example.com".into()),
            domain: Some("corp.example.com".into()),
            compliant: Some(true),
            posture: posture(&[("os_version", "15.1"), ("encrypted", "true"), ("firewall", "true"), ("edr_score", "92")]),
            ..DeviceContext::default()
        }),
        "noncompliant" => Some(DeviceContext {
            id: Some("demo-laptop".into()),
            state: DeviceState::Managed,
            hostname: Some("demo-laptop.corp.example.com".into()),
            compliant: Some(false),
            failing_checks: vec![
                FailingCheck {
                    id: "disk_encryption".into(),
                    message: Some("Disk encryption is off".into()),
                    fix: Some("Turn on FileVault in System Settings › Privacy & Security, then re-check.".into()),
                },
                FailingCheck {
                    id: "os_version".into(),
                    message: Some("macOS 14.2 is below the required 15.0".into()),
                    fix: Some("Install the latest macOS update in System Settings › General › Software Update.".into()),
                },
            ],
            posture: posture(&[("os_version", "14.2"), ("encrypted", "false"), ("firewall", "true")]),
            ..DeviceContext::default()
        }),
        "byod" => Some(DeviceContext {
            id: Some("demo-personal".into()),
            state: DeviceState::Registered,
            ..DeviceContext::default()
        }),
        _ => None,
    }
}

/// One licence in the demo app.
#[derive(Clone)]
struct Licence {
    id: u32,
    product: String,
    holder: String,
    status: &'static str,
    renewals: u32,
}

/// Starts the Team Wiki (the demo's second, low-impact app, on its own host) on `addr` and
/// returns the address it listens on: one page saying who stepgate says is reading, so a
/// visitor sees the session signed in on the Licence Console carry over (single sign-on).
pub async fn start_team_wiki(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    async fn wiki(h: HeaderMap) -> Response {
        Html(format!(
            "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>\
             <title>Team Wiki</title><link rel=stylesheet href='/_stepgate/static/style.css'>\
             <main class=wide><div class=card><h1>Team Wiki</h1>{}\
             <p>Welcome to the team wiki. You got here without signing in again: the session you \
             started on the Licence Console is this host's too.</p>\
             <p><a href='/_stepgate/account'>Security settings</a></p></div></main></html>",
            identity(&h)
        ))
        .into_response()
    }
    let app = Router::new().fallback(get(wiki));
    serve_on(addr, app, "Team Wiki").await
}

/// Serves `app` on `addr` in the background; the address it listens on.
async fn serve_on(
    addr: SocketAddr,
    app: Router,
    name: &'static str,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    serve(listener, app, name);
    Ok(local)
}

/// Serves `app` on `listener` in the background; `name` says which demo app stopped, should
/// it stop.
pub(crate) fn serve(listener: tokio::net::TcpListener, app: Router, name: &'static str) {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the demo {name} stopped");
        }
    });
}

#[derive(Clone, Default)]
struct Console {
    licences: Arc<Mutex<Vec<Licence>>>,
}

/// Starts the Licence Console on `addr` and returns the address it listens on.
pub async fn start_licence_console(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let console = Console::default();
    {
        let mut l = console.licences.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (p, h)) in [
            ("Acme CAD Pro", "Design team"),
            ("Acme Analytics", "Finance"),
            ("Acme CAD Pro", "Contractor pool"),
        ]
        .iter()
        .enumerate()
        {
            l.push(Licence {
                id: i as u32 + 1,
                product: p.to_string(),
                holder: h.to_string(),
                status: "active",
                renewals: 0,
            });
        }
    }
    let app = Router::new()
        .route("/", get(|| async { Redirect::to("/licences") }))
        .route("/licences", get(list).post(provision))
        .route("/licences/{id}/renew", post(renew))
        .route("/licences/{id}/revoke", post(revoke))
        .route("/admin", get(admin))
        .route("/admin/{*rest}", get(admin))
        .with_state(console);
    serve_on(addr, app, "Licence Console").await
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How the Licence Console checks stepgate's signed assertion, as any upstream should:
/// against the JWKS, with the expected issuer and audience.
#[derive(Clone, Debug)]
pub struct AssertionCheck {
    /// stepgate's JWKS URL.
    pub jwks_url: String,
    /// The `Host` to ask for it with, when `jwks_url` reaches stepgate at an address other
    /// than its public URL's (the demo fetches it over loopback, and `127.0.0.1` is an
    /// app's host there, where `/.well-known/jwks.json` would be the app's).
    pub jwks_host: Option<String>,
    /// stepgate's public URL (the `iss`).
    pub issuer: String,
    /// The console's app id (the `aud`).
    pub audience: String,
}

/// The check in force, set once stepgate's state exists (see [`seed`]); one per process
/// (the demo runs one console).
static ASSERTION_CHECK: std::sync::RwLock<Option<AssertionCheck>> = std::sync::RwLock::new(None);
static JWKS_CACHE: std::sync::Mutex<Option<jsonwebtoken::jwk::JwkSet>> =
    std::sync::Mutex::new(None);

/// Tells the Licence Console where stepgate's JWKS is and what to expect in assertions.
pub fn set_assertion_check(check: AssertionCheck) {
    *ASSERTION_CHECK.write().unwrap_or_else(|e| e.into_inner()) = Some(check);
    *JWKS_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Verifies the request's `X-Stepgate-Assertion` the way an app would; `Ok(username)`.
pub async fn check_assertion(h: &HeaderMap) -> Result<String, String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let check = ASSERTION_CHECK
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or("no JWKS configured")?;
    let token = h
        .get("x-stepgate-assertion")
        .and_then(|v| v.to_str().ok())
        .ok_or("no assertion header")?;
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|_| "malformed assertion")?
        .kid
        .ok_or("assertion without kid")?;
    let cached = JWKS_CACHE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let jwk = match cached.as_ref().and_then(|s| s.find(&kid)).cloned() {
        Some(k) => k,
        None => {
            // Unknown kid: stepgate may have rotated; fetch the JWKS again.
            let mut get = reqwest::Client::new()
                .get(&check.jwks_url)
                .timeout(std::time::Duration::from_secs(3));
            if let Some(host) = &check.jwks_host {
                get = get.header(axum::http::header::HOST, host);
            }
            let set: jsonwebtoken::jwk::JwkSet = get
                .send()
                .await
                .map_err(|_| "JWKS unreachable")?
                .json()
                .await
                .map_err(|_| "JWKS unreadable")?;
            let k = set.find(&kid).cloned().ok_or("unknown signing key")?;
            *JWKS_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some(set);
            k
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "unusable key")?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[check.audience.as_str()]);
    v.set_issuer(&[check.issuer.as_str()]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map_err(|e| format!("invalid: {e}"))?;
    Ok(data.claims["preferred_username"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

async fn assertion_status(h: &HeaderMap) -> String {
    match check_assertion(h).await {
        Ok(user) => format!(
            "<p class=who id=assertion>assertion verified ✓ (signed by stepgate for {})</p>",
            esc(&user)
        ),
        Err(why) => format!(
            "<p class=who id=assertion>assertion NOT verified: {}</p>",
            esc(&why)
        ),
    }
}

fn identity(h: &HeaderMap) -> String {
    let get = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_string()
    };
    format!(
        "<p class=who id=identity>Signed in as <strong id=remote-user>{}</strong> · groups {} · AAL {} · amr {}</p>",
        esc(&get("remote-user")),
        esc(&get("remote-groups")),
        esc(&get("remote-aal")),
        esc(&get("remote-amr"))
    )
}

fn page(h: &HeaderMap, status: &str, title: &str, body: &str) -> Response {
    Html(format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>\
         <title>{title} · Licence Console</title><link rel=stylesheet href='/_stepgate/static/style.css'>\
         <main class=wide><div class=card><h1>Licence Console — {title}</h1>{}{status}{body}\
         <p><a href='/licences'>Licences</a> · <a href='/admin'>Admin</a> · <a href='/_stepgate/account'>Security settings</a></p></div></main></html>",
        identity(h)
    ))
    .into_response()
}

async fn list(State(c): State<Console>, h: HeaderMap) -> Response {
    let rows: String = c
        .licences
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|l| {
            format!(
                "<tr id=licence-{id}><td data-label='#'>{id}</td><td data-label=Product>{p}</td><td data-label=Holder>{hd}</td><td class=status data-label=Status>{s}</td><td data-label=Renewals>{r}</td><td>\
                 <form class=inline method=post action='/licences/{id}/renew'><button class=secondary type=submit aria-label='Renew licence {id}'>Renew</button></form> \
                 <form class=inline method=post action='/licences/{id}/revoke'><button class=danger type=submit aria-label='Revoke licence {id}'>Revoke</button></form></td></tr>",
                id = l.id,
                p = esc(&l.product),
                hd = esc(&l.holder),
                s = l.status,
                r = l.renewals
            )
        })
        .collect();
    let status = assertion_status(&h).await;
    page(
        &h,
        &status,
        "Licences",
        &format!(
            "<table class=reflow><thead><tr><th>#</th><th>Product</th><th>Holder</th><th>Status</th><th>Renewals</th><th>Actions</th></tr></thead><tbody>{rows}</tbody></table>\
             <h2>Provision a licence</h2><form method=post action='/licences'><label for=product>Product</label><input type=text id=product name=product required>\
             <label for=holder>Holder</label><input type=text id=holder name=holder required><button type=submit id=provision>Provision</button></form>"
        ),
    )
}

#[derive(serde::Deserialize)]
struct NewLicence {
    product: String,
    holder: String,
}

async fn provision(State(c): State<Console>, axum::Form(f): axum::Form<NewLicence>) -> Redirect {
    let mut l = c.licences.lock().unwrap_or_else(|e| e.into_inner());
    let id = l.iter().map(|l| l.id).max().unwrap_or(0) + 1;
    l.push(Licence {
        id,
        product: f.product,
        holder: f.holder,
        status: "active",
        renewals: 0,
    });
    Redirect::to("/licences")
}

async fn renew(State(c): State<Console>, Path(id): Path<u32>) -> Response {
    let mut l = c.licences.lock().unwrap_or_else(|e| e.into_inner());
    match l.iter_mut().find(|l| l.id == id) {
        Some(x) => {
            x.renewals += 1;
            x.status = "active";
            Redirect::to("/licences").into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn revoke(State(c): State<Console>, Path(id): Path<u32>) -> Response {
    let mut l = c.licences.lock().unwrap_or_else(|e| e.into_inner());
    match l.iter_mut().find(|l| l.id == id) {
        Some(x) => {
            x.status = "revoked";
            Redirect::to("/licences").into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn admin(h: HeaderMap) -> Response {
    let status = assertion_status(&h).await;
    page(&h, &status, "Admin", "<p id=admin-page>Licence administration: seat limits, audit exports and vendor keys live here.</p>")
}

/// A seeded demo user, as printed on the console.
pub struct DemoUser {
    /// Username.
    pub username: &'static str,
    /// Password.
    pub password: &'static str,
    /// TOTP seed (base32), pre-enrolled.
    pub totp_base32: &'static str,
    /// What they can do.
    pub note: &'static str,
}

/// The demo users: known passwords and pre-enrolled TOTP seeds.
pub const USERS: &[DemoUser] = &[
    DemoUser {
        username: "jane",
        password: "blue-harbour-lantern",
        totp_base32: "JANEDEMOJANEDEMOJANEDEMOJANEDEMO",
        note: "licence administrator (groups staff, licence-admins)",
    },
    DemoUser {
        username: "john",
        password: "green-meadow-compass",
        totp_base32: "JOHNDEMOJOHNDEMOJOHNDEMOJOHNDEMO",
        note: "staff (no admin console)",
    },
];

/// Creates the demo users with their password and TOTP factor, if they do not exist yet.
pub async fn seed(st: &crate::Shared, key: &stepgate_store::SecretKey) -> anyhow::Result<()> {
    use stepgate_store::{factor_context, FactorRecord, UserRecord};
    {
        let rt = st.runtime.load();
        // Loopback in the demo; a wildcard listen address is reached on loopback too.
        let mut listen = rt.config.listen;
        if listen.ip().is_unspecified() {
            listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        set_assertion_check(AssertionCheck {
            jwks_url: format!("http://{listen}/.well-known/jwks.json"),
            jwks_host: Some(rt.public_authority.clone()),
            issuer: rt.public_url.clone(),
            audience: "licence-console".into(),
        });
    }
    let durable = &st.stores.durable;
    for u in USERS {
        if durable.get_user_by_username(u.username).await?.is_some() {
            continue;
        }
        let mut rec = UserRecord::new(u.username);
        rec.email = Some(format!("{}@example.com", u.username));
        rec.name = Some(format!(
            "{}{} Demo",
            u.username[..1].to_uppercase(),
            &u.username[1..]
        ));
        rec.groups = if u.username == "jane" {
            vec!["staff".into(), "licence-admins".into()]
        } else {
            vec!["staff".into()]
        };
        durable.create_user(&rec).await?;
        st.authn
            .admin_set_password(&rec, u.password, "demo")
            .await
            .map_err(|e| anyhow::anyhow!("seeding {}'s password: {e}", u.username))?;
        let seed = totp_rs::Secret::Encoded(u.totp_base32.to_string())
            .to_bytes()
            .map_err(|e| anyhow::anyhow!("demo TOTP seed: {e:?}"))?;
        let data = stepgate_authn::totp::TotpData {
            algorithm: stepgate_authn::config::TotpAlgorithm::Sha1,
            digits: 6,
            period: 30,
            last_step: None,
        };
        let mut f = FactorRecord::new(&rec.id, "totp", "Demo authenticator");
        f.secret = Some(key.seal(&seed, &factor_context(&rec.id, &f.id))?);
        f.data = serde_json::to_value(&data)?;
        durable.create_factor(&f).await?;
    }
    Ok(())
}

/// The otpauth URI of a demo user's TOTP seed.
pub fn otpauth_uri(u: &DemoUser) -> String {
    format!("otpauth://totp/stepgate%20demo:{}?secret={}&issuer=stepgate%20demo&algorithm=SHA1&digits=6&period=30", u.username, u.totp_base32)
}
