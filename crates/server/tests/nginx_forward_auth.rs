//! Real nginx with `auth_request` in front of stepgate's forward-auth endpoint, configured
//! from `examples/nginx/nginx.conf` (ports and host names substituted): anonymous users
//! are sent to the portal, a signed-in user reaches the app with identity headers, a
//! sensitive route asks for a step-up, and a client-sent `Remote-User` never reaches the
//! app. `nginx_auth_request_walk` walks the script every front proxy walks
//! (`forward_auth/walk.rs`).
//!
//! Skipped with a note when `nginx` is not installed, except under `CI=true` or
//! `STEPGATE_REQUIRE_NGINX=1` (set by `.ci/run`, which installs nginx), where a missing
//! nginx fails the test.

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

fn nginx_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    found.or_else(|| {
        [
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    })
}

/// The nginx binary; `None` (with a note) to skip, or a panic under `CI=true` or
/// `STEPGATE_REQUIRE_NGINX=1` (set by `.ci/run`, which installs nginx).
fn nginx_binary_or_skip() -> Option<PathBuf> {
    let found = nginx_binary();
    if found.is_none() {
        if proxy_required("STEPGATE_REQUIRE_NGINX") {
            panic!("nginx is not installed, and CI=true or STEPGATE_REQUIRE_NGINX=1: .ci/run installs it (apt-get install nginx)");
        }
        eprintln!("note: nginx is not installed; skipping the nginx auth_request test");
    }
    found
}

/// nginx, stopped when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// `examples/nginx/nginx.conf` with the test's ports, host names and a private prefix.
fn config_from_example(dir: &Path, listen: u16, stepgate: u16, upstream: u16) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nginx/nginx.conf");
    let mut text = std::fs::read_to_string(&example)
        .unwrap_or_else(|e| panic!("reading {}: {e}", example.display()));
    let d = dir.display();
    let temp = format!(
        "http {{\n    access_log {d}/access.log;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n"
    );
    for (from, to) in [
        ("listen 80;", format!("listen 127.0.0.1:{listen};")),
        ("127.0.0.1:9091", format!("127.0.0.1:{stepgate}")),
        ("127.0.0.1:8000", format!("127.0.0.1:{upstream}")),
        ("auth.example.com", PORTAL_HOST.to_string()),
        ("app.example.com", APP_HOST.to_string()),
        ("http {\n", temp),
    ] {
        assert!(
            text.contains(from),
            "examples/nginx/nginx.conf no longer contains `{from}`: update this test"
        );
        text = text.replace(from, &to);
    }
    text
}

async fn start_nginx(bin: &Path, dir: &Path, port: u16, conf: &str) -> Nginx {
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    // In the foreground, one process (no privilege drop to another user when run as root),
    // pid and error log inside the temporary directory.
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&file)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-g")
        .arg(format!(
            "daemon off; master_process off; pid {};",
            dir.join("nginx.pid").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let mut ng = Nginx {
        child,
        dir: dir.to_path_buf(),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return ng;
        }
        if let Ok(Some(status)) = ng.child.try_wait() {
            panic!("nginx exited with {status}:\n{}", ng.error_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nginx did not start listening:\n{}", ng.error_log());
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_stepgate() {
    let Some(bin) = nginx_binary_or_skip() else {
        return;
    };
    let port = free_port();
    let h = start(|_| format!("http://{PORTAL_HOST}:{port}")).await;
    let conf = config_from_example(h.dir.path(), port, h.addr.port(), h.upstream.port());
    let ng = start_nginx(&bin, h.dir.path(), port, &conf).await;
    let app = format!("http://{APP_HOST}:{port}");
    let jar = Arc::new(Jar::default());
    let c = client(&jar, false);
    let follow = client(&jar, true);

    // Anonymous: redirected to the portal (through nginx's portal server), even when
    // claiming to be someone.
    let login = format!("http://{PORTAL_HOST}:{port}/_stepgate/login?t=");
    let r = c
        .get(format!("{app}/hello?x=1"))
        .header("remote-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", ng.error_log());
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
    // The auth location is internal.
    let r = c.get(format!("{app}/_stepgate_auth")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Nor can a client reach the decision endpoints through the portal's server block.
    let r = c
        .get(format!(
            "http://{PORTAL_HOST}:{port}/_stepgate/auth/forward"
        ))
        .header("x-forwarded-host", "app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Sign in through the portal behind nginx: password, then TOTP; back at the app.
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
    assert!(!seen.contains_key("x-forwarded-user"), "{seen:?}");

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
    drop(ng);
}

/// The walk every front proxy takes (`forward_auth/walk.rs`), through nginx configured from
/// the example, in front of a stepgate whose app matches paths case-insensitively.
#[tokio::test]
async fn nginx_auth_request_walk() {
    let Some(bin) = nginx_binary_or_skip() else {
        return;
    };
    let port = free_port();
    let h = start_case_insensitive(|_| format!("http://{PORTAL_HOST}:{port}")).await;
    let up = RecordingUpstream::start().await;
    let conf = config_from_example(h.dir.path(), port, h.addr.port(), up.addr.port());
    let ng = start_nginx(&bin, h.dir.path(), port, &conf).await;
    let log = || ng.error_log();
    let front = Front {
        name: "nginx",
        tls: false,
        port,
        log: &log,
        rewrites: &[],
    };
    walk(&h, &up, &front).await;
    drop(ng);
}
