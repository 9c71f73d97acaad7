//! `stepgate user` and `stepgate secrets` against a real store in a temporary directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stepgate");

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    key: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("stepgate.yaml");
        std::fs::write(
            &config,
            "server:\n  data_dir: data\nfactors:\n  password:\n    argon2: { memory_kib: 64, iterations: 1, parallelism: 1 }\n",
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["secrets", "generate-key"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let key = stdout(&out).trim().to_string();
        Env { dir, config, key }
    }

    fn run_with(&self, key: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("user")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("STEPGATE_SECRET_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run_with(&self.key, args, stdin);
        assert!(
            out.status.success(),
            "stepgate user {args:?} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn secrets_generate_key_prints_a_32_byte_base64_key() {
    let out = Command::new(BIN)
        .args(["secrets", "generate-key"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = stdout(&out);
    let key = key.trim();
    assert_eq!(key.len(), 44, "{key}");
    stepgate_store::SecretKey::parse(key, "test").unwrap();
}

#[test]
fn manage_a_user_end_to_end() {
    let env = Env::new();
    let out = env.ok(
        &[
            "add",
            "jane",
            "--email",
            "jane@example.com",
            "--name",
            "Jane Doe",
            "--group",
            "staff",
        ],
        None,
    );
    assert!(out.contains("created user jane"), "{out}");
    // A second add of the same name is refused clearly.
    let dup = env.run_with(&env.key, &["add", "jane"], None);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));

    // Password from stdin; NIST rules apply.
    let weak = env.run_with(
        &env.key,
        &["set-password", "jane", "--password-stdin"],
        Some("short\n"),
    );
    assert!(!weak.status.success());
    assert!(stderr(&weak).contains("at least 8"), "{}", stderr(&weak));
    env.ok(
        &["set-password", "jane", "--password-stdin"],
        Some("correct horse battery\n"),
    );

    // TOTP: the URI carries the seed; the seed is not stored in clear.
    let out = env.ok(&["enroll-totp", "jane"], None);
    let uri = out
        .lines()
        .find_map(|l| l.strip_prefix("uri: "))
        .expect("uri line")
        .to_string();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let seed = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .expect("secret in uri")
        .to_string();
    assert!(seed.len() >= 32, "{seed}");
    assert!(
        out.contains('█') || out.contains('▀') || out.contains('▄'),
        "QR code printed"
    );
    let mut db = Vec::new();
    for e in std::fs::read_dir(env.data_dir().join("data")).unwrap() {
        db.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(!String::from_utf8_lossy(&db).contains(&seed));

    let list = env.ok(&["list"], None);
    assert!(list.contains("jane"), "{list}");
    assert!(list.contains("enabled"), "{list}");
    let show = env.ok(&["show", "jane"], None);
    assert!(show.contains("jane@example.com"), "{show}");
    assert!(show.contains("password"), "{show}");
    assert!(show.contains("totp"), "{show}");
    assert!(show.contains("lock:       none"), "{show}");

    env.ok(&["disable", "jane"], None);
    assert!(env.ok(&["list"], None).contains("disabled"));
    env.ok(&["enable", "jane"], None);
    assert!(!env.ok(&["list"], None).contains("disabled"));

    let out = env.ok(&["reset-factors", "jane"], None);
    assert!(out.contains("removed 1 factor"), "{out}");
    let show = env.ok(&["show", "jane"], None);
    assert!(!show.contains("totp"), "{show}");
    assert!(
        show.contains("password"),
        "kept without --include-password: {show}"
    );
    env.ok(&["unlock", "jane"], None);

    let missing = env.run_with(&env.key, &["show", "nobody"], None);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no user `nobody`"));
}

#[test]
fn a_wrong_or_missing_key_is_a_clear_error() {
    let env = Env::new();
    env.ok(&["add", "jane"], None);
    let other = Command::new(BIN)
        .args(["secrets", "generate-key"])
        .output()
        .unwrap();
    let wrong = stdout(&other).trim().to_string();
    let out = env.run_with(&wrong, &["list"], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("secret key does not match"),
        "unexpected error: {err}"
    );
    let out = env.run_with("", &["list"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("STEPGATE_SECRET_KEY"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hash_password_prints_an_argon2id_phc() {
    let env = Env::new();
    let out = env.ok(
        &["hash-password", "--password-stdin"],
        Some("a long passphrase\n"),
    );
    let phc = out.trim();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    stepgate_store::PasswordHash::parse(phc).unwrap();
    assert!(stepgate_authn::password::verify_password(
        phc,
        "a long passphrase"
    ));
}

#[test]
fn invite_and_reset_link_print_single_use_links() {
    let env = Env::new();
    let out = env.ok(
        &[
            "invite",
            "alice",
            "--email",
            "alice@example.com",
            "--valid-for",
            "2h",
        ],
        None,
    );
    assert!(out.contains("created user alice"), "{out}");
    let link = out
        .lines()
        .find(|l| l.starts_with("http://"))
        .unwrap_or_else(|| panic!("no link in:\n{out}"));
    // No public_url: the link is on `http://` + listen, under the portal path.
    assert!(link.contains("/_stepgate/invite/"), "{link}");
    let secret = link.rsplit('/').next().unwrap();
    assert!(secret.len() >= 43, "256 bits: {secret}");
    // E-mail OTP is off here: printed only.
    assert!(!out.contains("e-mailed"), "{out}");
    // The link is not a factor.
    let list = env.ok(&["list"], None);
    let row = list.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(row.split_whitespace().nth(3) == Some("0"), "{row}");
    // A second invitation is another link (the first no longer works).
    let again = env.ok(&["invite", "alice"], None);
    assert!(!again.contains("created user"), "{again}");
    assert!(!again.contains(secret), "a new secret each time");

    let reset = env.ok(&["reset-link", "alice", "--valid-for", "15m"], None);
    assert!(reset.contains("/_stepgate/reset/"), "{reset}");
    let bad = env.run_with(
        &env.key,
        &["reset-link", "alice", "--valid-for", "90d"],
        None,
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("between 1 second and 30 days"),
        "{}",
        stderr(&bad)
    );
    let nobody = env.run_with(&env.key, &["reset-link", "nobody"], None);
    assert!(
        stderr(&nobody).contains("no user `nobody`"),
        "{}",
        stderr(&nobody)
    );
}

#[test]
fn list_and_show_say_where_each_user_comes_from() {
    use stepgate_store::{FactorRecord, SecretKey, StoreConfig, UserRecord, UserSource};
    let env = Env::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let key = SecretKey::parse(&env.key, "test").unwrap();
        let data = env.data_dir().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let stores = stepgate_store::open_stores(&StoreConfig::default(), &data, &key)
            .await
            .unwrap();
        // A user created at their first sign-in through provider `corp`, and a local user
        // linked to the directory by a verified e-mail.
        let mut alice = UserRecord::new("alice");
        alice.source = UserSource::Upstream;
        stores.durable.create_user(&alice).await.unwrap();
        let bob = UserRecord::new("bob");
        stores.durable.create_user(&bob).await.unwrap();
        for (u, provider) in [(&alice, "corp"), (&bob, "ldap")] {
            let mut link = FactorRecord::new(&u.id, stepgate_store::UPSTREAM_LINK_KIND, provider);
            link.lookup_key = Some(format!("{provider}\nsub-{}", u.username));
            link.data =
                serde_json::json!({ "provider": provider, "sub": format!("sub-{}", u.username) });
            stores.durable.create_factor(&link).await.unwrap();
        }
    });
    drop(rt);
    let list = env.ok(&["list"], None);
    let line = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {list}"))
            .to_string()
    };
    assert!(line("alice").contains("upstream:corp"), "{list}");
    assert!(line("bob").contains("local+ldap"), "{list}");
    // The link is not a factor.
    assert!(line("alice").contains(" 0 "), "{list}");
    let show = env.ok(&["show", "alice"], None);
    assert!(show.contains("source:     upstream:corp"), "{show}");
}
