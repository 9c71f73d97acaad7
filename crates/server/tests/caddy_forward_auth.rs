//! Real Caddy with `forward_auth` in front of stepgate's forward-auth endpoint, configured
//! from `examples/caddy/Caddyfile` (ports and host names substituted, plain HTTP on
//! loopback, no admin endpoint): anonymous users are sent to the portal, APIs get `401`, a
//! signed-in user reaches the app with identity headers, a sensitive route asks for a
//! step-up, and a client-sent `Remote-User` never reaches the app.
//! `caddy_forward_auth_walk` walks the script every front proxy walks
//! (`forward_auth/walk.rs`).
//!
//! Skipped with a note when `caddy` is not installed, except under `CI=true` or
//! `STEPGATE_REQUIRE_CADDY=1` (set by `.ci/run`, which installs caddy), where a missing
//! caddy fails the test.

#[path = "forward_auth/harness.rs"]
mod harness;
#[path = "forward_auth/walk.rs"]
mod walk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use harness::*;
use reqwest::cookie::Jar;
use walk::{walk, Front, RecordingUpstream};

/// What Caddy rewrites before asking stepgate, and sends on rewritten: Go re-encodes raw
/// bytes outside ASCII and backslashes in the path.
const REWRITES: &[(&[u8], &str)] = &[
    (b"/admin\xc3\xa9", "/admin%C3%A9"),
    (b"/x\\..\\admin", "/x%5C..%5Cadmin"),
];

fn caddy_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("caddy"))
            .find(|p| p.is_file())
    });
    found.or_else(|| {
        ["/usr/bin/caddy", "/usr/local/bin/caddy"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

/// The caddy binary; `None` (with a note) to skip, or a panic under `CI=true` or
/// `STEPGATE_REQUIRE_CADDY=1` (set by `.ci/run`, which installs caddy).
fn caddy_binary_or_skip() -> Option<PathBuf> {
    let found = caddy_binary();
    if found.is_none() {
        if proxy_required("STEPGATE_REQUIRE_CADDY") {
            panic!("caddy is not installed, and CI=true or STEPGATE_REQUIRE_CADDY=1: .ci/run installs it (apt-get install caddy)");
        }
        eprintln!("note: caddy is not installed; skipping the caddy forward_auth test");
    }
    found
}

/// caddy, stopped when dropped.
struct Caddy {
    child: Child,
    dir: PathBuf,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Caddy {
    /// Caddy's own log (it logs to stderr).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("caddy.log")).unwrap_or_default()
    }
}

/// `examples/caddy/Caddyfile` with the test's ports and host names, plain HTTP on loopback
/// and no admin endpoint.
fn config_from_example(listen: u16, stepgate: u16, upstream: u16) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/caddy/Caddyfile");
    let mut text = std::fs::read_to_string(&example)
        .unwrap_or_else(|e| panic!("reading {}: {e}", example.display()));
    // An explicit http:// scheme and port: a bare host name would mean HTTPS on 443.
    let site = |host: &str| format!("http://{host}:{listen} {{\n\tbind 127.0.0.1\n");
    for (from, to) in [
        ("auth.example.com {\n", site(PORTAL_HOST)),
        ("app.example.com {\n", site(APP_HOST)),
        ("127.0.0.1:9091", format!("127.0.0.1:{stepgate}")),
        ("127.0.0.1:8000", format!("127.0.0.1:{upstream}")),
    ] {
        assert!(
            text.contains(from),
            "examples/caddy/Caddyfile no longer contains `{from}`: update this test"
        );
        text = text.replace(from, &to);
    }
    assert!(
        !text.contains("example.com {"),
        "examples/caddy/Caddyfile has a site this test does not know about: update this test"
    );
    // Global options come first in a Caddyfile (comments may precede them); the example
    // has none of its own.
    assert!(
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            != Some("{"),
        "examples/caddy/Caddyfile now has a global options block: merge into it in this test"
    );
    format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{text}")
}

async fn start_caddy(bin: &Path, dir: &Path, port: u16, conf: &str) -> Caddy {
    let file = dir.join("Caddyfile");
    std::fs::write(&file, conf).unwrap();
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    // As the current user, with its data (certificates, autosave) and config dirs inside
    // the temporary directory.
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&file)
        .arg("--adapter")
        .arg("caddyfile")
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let mut cd = Caddy {
        child,
        dir: dir.to_path_buf(),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return cd;
        }
        if let Ok(Some(status)) = cd.child.try_wait() {
            panic!("caddy exited with {status}:\n{conf}\n{}", cd.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("caddy did not start listening:\n{}", cd.log());
}

#[tokio::test]
async fn caddy_forward_auth_in_front_of_stepgate() {
    let Some(bin) = caddy_binary_or_skip() else {
        return;
    };
    let port = free_port();
    let h = start(|_| format!("http://{PORTAL_HOST}:{port}")).await;
    let conf = config_from_example(port, h.addr.port(), h.upstream.port());
    let cd = start_caddy(&bin, h.dir.path(), port, &conf).await;
    let app = format!("http://{APP_HOST}:{port}");
    let jar = Arc::new(Jar::default());
    let c = client(&jar, false);
    let follow = client(&jar, true);

    // Anonymous: redirected to the portal (through Caddy's portal site), even when claiming
    // to be someone.
    let login = format!("http://{PORTAL_HOST}:{port}/_stepgate/login?t=");
    let r = c
        .get(format!("{app}/hello?x=1"))
        .header("remote-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", cd.log());
    assert!(header(&r, "location").starts_with(&login), "{r:?}");
    // An API gets 401 with a challenge instead.
    let r = c
        .get(format!("{app}/hello"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), "Bearer");
    // Through the portal site, a client cannot reach the forward-auth endpoint at all (and
    // were it let through, Caddy would replace X-Forwarded-Host with the portal's own host,
    // which is no app).
    let r = c
        .get(format!(
            "http://{PORTAL_HOST}:{port}/_stepgate/auth/forward"
        ))
        .header("x-forwarded-host", format!("{APP_HOST}:{port}"))
        .header("x-forwarded-uri", "/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Sign in through the portal behind Caddy: password, then TOTP; back at the app.
    let r = follow.get(format!("{app}/hello?x=1")).send().await.unwrap();
    assert!(r.url().as_str().starts_with(&login), "{}", r.url());
    let r = sign_in(&follow, &h.public_url, r.url().as_str(), &totp_code(0)).await;
    assert_eq!(r.url().as_str(), format!("{app}/hello?x=1"));
    let seen: BTreeMap<String, String> = r.json().await.unwrap();
    assert_eq!(seen["path"], "/hello?x=1");
    assert_eq!(seen["remote-user"], USER);
    assert_eq!(seen["remote-groups"], "staff,ops");
    assert_eq!(seen["remote-email"], "fiona@example.test");
    assert_eq!(seen["remote-name"], "Fiona Forward");
    assert_eq!(seen["remote-aal"], "2");
    assert!(seen["remote-amr"].contains("otp"), "{seen:?}");
    assert!(seen["remote-auth-time"].parse::<i64>().is_ok());

    // Spoofed identity headers are replaced or removed, never passed on.
    let r = c
        .get(format!("{app}/hello"))
        .header("remote-user", "mallory")
        .header("remote-groups", "admins")
        .header("x-stepgate-assertion", "forged")
        .header("x-forwarded-user", "mallory")
        .header("x-forwarded-email", "mallory@example.test")
        .header("x-forwarded-groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: BTreeMap<String, String> = r.json().await.unwrap();
    assert_eq!(seen["remote-user"], USER, "{seen:?}");
    assert_eq!(seen["remote-groups"], "staff,ops");
    // The assertion is stepgate's signed JWT (header.payload.signature), not the forgery.
    let assertion = &seen["x-stepgate-assertion"];
    assert!(
        assertion != "forged" && assertion.split('.').count() == 3,
        "{seen:?}"
    );
    for name in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
    ] {
        assert!(!seen.contains_key(name), "{name} reached the app: {seen:?}");
    }

    // A sensitive route: step-up redirect for browsers, RFC 9470 for APIs.
    let_every_time_window_pass().await;
    let step_up_url = format!("http://{PORTAL_HOST}:{port}/_stepgate/step-up?t=");
    let r = c.get(format!("{app}/admin")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&step_up_url), "{r:?}");
    let r = c
        .get(format!("{app}/admin"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        header(&r, "www-authenticate").contains("error=\"insufficient_user_authentication\""),
        "{r:?}"
    );
    // Stepping up returns to the page, which now reaches the app.
    let r = follow.get(format!("{app}/admin")).send().await.unwrap();
    let page = r.text().await.unwrap();
    let r = step_up(&follow, &h.public_url, &page, &totp_code(1)).await;
    assert_eq!(r.url().as_str(), format!("{app}/admin"));
    let seen: BTreeMap<String, String> = r.json().await.unwrap();
    assert_eq!(seen["path"], "/admin");
    assert_eq!(seen["remote-user"], USER);

    // A denied route: the blocked page.
    let r = c.get(format!("{app}/closed")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location")
        .starts_with(&format!("http://{PORTAL_HOST}:{port}/_stepgate/blocked?t=")));
    drop(cd);
}

/// The walk every front proxy takes (`forward_auth/walk.rs`), through caddy configured from
/// the example, in front of a stepgate whose app matches paths case-insensitively.
#[tokio::test]
async fn caddy_forward_auth_walk() {
    let Some(bin) = caddy_binary_or_skip() else {
        return;
    };
    let port = free_port();
    let h = start_case_insensitive(|_| format!("http://{PORTAL_HOST}:{port}")).await;
    let up = RecordingUpstream::start().await;
    let conf = config_from_example(port, h.addr.port(), up.addr.port());
    let cd = start_caddy(&bin, h.dir.path(), port, &conf).await;
    let log = || cd.log();
    let front = Front {
        name: "caddy",
        tls: false,
        port,
        log: &log,
        rewrites: REWRITES,
    };
    walk(&h, &up, &front).await;
    drop(cd);
}
