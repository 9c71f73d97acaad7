//! `stepgate policy versions|show|diff|rollback` against a real SQLite store: the versions
//! listed, one shown, two compared, an old one rolled back as the newest (audited with the
//! operator as actor), and refusals that name what to fix — a version that no longer loads
//! with the files, policy edits off, an unknown version. With Redis
//! (`STEPGATE_TEST_REDIS_URL`), a rollback is announced on the change feed and a running
//! `stepgate serve` puts it in force without a restart or a reload.

#[path = "support/skipped.rs"]
mod skipped;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use stepgate_server::admin::{tokens, Scope};
use stepgate_store::{
    open_stores, AuditQuery, Change, ChangeFeed, DurableStore, PolicyVersion, SecretKey,
};

const BIN: &str = env!("CARGO_BIN_EXE_stepgate");

const CONFIG: &str = "server:
  data_dir: data
apps:
  - id: console
    hosts: [console.test]
    upstream: http://127.0.0.1:9
admin:
  policy_edits: store
default_outcome: allow
policies:
  - { name: files, priority: 1, outcome: allow }
";

const V1: &str = "policies:\n  - { name: open, priority: 1, outcome: allow }\n";
const V2: &str = "policies:\n  - { name: closed, priority: 1, outcome: { deny: {} } }\n";
/// Loads only with an app `gone` (not in the files).
const V3: &str =
    "policies:\n  - { name: gone, priority: 1, targets: { apps: [gone] }, outcome: allow }\n";

fn run(key: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("STEPGATE_SECRET_KEY", key)
        .env_remove("SUDO_USER")
        .env("USER", "ops-on-call")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn store(dir: &Path, key: &SecretKey) -> std::sync::Arc<dyn DurableStore> {
    let cfg = stepgate_config::load(&dir.join("stepgate.yaml")).unwrap();
    open_stores(&cfg.store, &dir.join("data"), key)
        .await
        .unwrap()
        .durable
}

#[tokio::test]
async fn versions_are_listed_shown_diffed_and_rolled_back_with_the_operator_audited() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepgate.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let key = SecretKey::generate();
    let durable = store(dir.path(), &key).await;
    for (n, text) in [(1, V1), (2, V2), (3, V3)] {
        let mut v = PolicyVersion::new(n, text, "admin:jane");
        v.note = Some(format!("note {n}"));
        durable.save_policy_version(&v).await.unwrap();
    }
    let key = key.to_base64().to_string();
    let c = config.to_str().unwrap();

    let out = run(&key, &["policy", "versions", "--config", c]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].trim_start().starts_with("3 ")
            && lines[0].contains("admin:jane")
            && lines[0].contains("note 3"),
        "{lines:?}"
    );

    let out = run(&key, &["policy", "show", "2", "--config", c]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), V2, "{}", text(&out));
    let out = run(&key, &["policy", "diff", "1", "2", "--config", c]);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("--- policy-version-1.yaml") && diff.contains("+  - { name: closed"),
        "{diff}"
    );
    assert!(diff.contains("-  - { name: open"), "{diff}");

    // Version 3 names an app the files do not have: refused, nothing written.
    let out = run(&key, &["policy", "rollback", "3", "--config", c]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("version 3 does not load") && text(&out).contains("gone"),
        "{}",
        text(&out)
    );
    let out = run(&key, &["policy", "rollback", "9", "--config", c]);
    assert!(
        text(&out).contains("there is no policy version 9"),
        "{}",
        text(&out)
    );

    let out = run(
        &key,
        &[
            "policy",
            "rollback",
            "1",
            "--config",
            c,
            "--note",
            "back to open",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("saved version 4 (rollback of 1) as admin:cli:ops-on-call"),
        "{}",
        text(&out)
    );
    let v4 = durable
        .get_policy_version(4)
        .await
        .unwrap()
        .expect("version 4");
    assert_eq!(
        (v4.text.as_str(), v4.rollback_of, v4.author.as_str()),
        (V1, Some(1), "admin:cli:ops-on-call")
    );
    let saved = durable
        .list_audit(&AuditQuery {
            kind: Some("policy.saved".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].actor.as_deref(), Some("admin:cli:ops-on-call"));
    assert_eq!(
        (
            saved[0].detail["version"].as_i64(),
            saved[0].detail["rollback_of"].as_i64()
        ),
        (Some(4), Some(1))
    );
    assert_eq!(saved[0].detail["note"], "back to open");

    // With edits off, a rollback is refused naming the key.
    std::fs::write(
        &config,
        CONFIG.replace("policy_edits: store", "policy_edits: yaml"),
    )
    .unwrap();
    let out = run(&key, &["policy", "rollback", "1", "--config", c]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("admin.policy_edits is `yaml`"),
        "{}",
        text(&out)
    );
    assert!(durable.get_policy_version(5).await.unwrap().is_none());
}

/// A `stepgate serve` child, killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status and body of `GET path` on `port` at the portal's host with `token`, or 0
/// when nothing answers.
fn get(port: u16, path: &str, token: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let asked = format!("GET {path} HTTP/1.1\r\nHost: gate.test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    if s.write_all(asked.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// Waits (30 s at most) until the node's policies in force (the admin API's list, read with
/// `token`) are the one named `name`; the node's log on failure.
fn until_in_force(port: u16, token: &str, name: &str, why: &str, log: &Path) {
    let start = Instant::now();
    let want = format!("\"name\":\"{name}\"");
    loop {
        let (status, body) = get(port, "/_stepgate/admin/api/v1/policies", token);
        if status == 200 && body.contains(&want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{why}: the policy `{name}` is not in force ({status}):\n{body}\nthe node's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_announced_and_a_running_node_puts_it_in_force_without_a_restart() {
    let Some(redis) = std::env::var("STEPGATE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        skipped::record("Redis", "set STEPGATE_TEST_REDIS_URL");
        return;
    };
    let prefix = format!(
        "pcli{}x{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepgate.yaml");
    let config_text = CONFIG.replace(
        "  data_dir: data\n",
        "  data_dir: data\n  public_url: http://gate.test\n",
    );
    std::fs::write(
        &config,
        format!("{config_text}store:\n  redis: {{ url: '{redis}', key_prefix: '{prefix}' }}\n"),
    )
    .unwrap();
    let key = SecretKey::generate();
    let durable = store(dir.path(), &key).await;
    for (n, text) in [(1, V1), (2, V2)] {
        let v = PolicyVersion::new(n, text, "admin:jane");
        durable.save_policy_version(&v).await.unwrap();
    }
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    let (token, _) = tokens::create(durable.as_ref(), "watch", &[Scope::PoliciesRead], expires)
        .await
        .unwrap();
    let key = key.to_base64().to_string();
    let c = config.to_str().unwrap();

    // A node starts with the newest version, 2 (closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("node.log");
    let _node = Node(
        Command::new(BIN)
            .args(["serve", "--config", c, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("STEPGATE_SECRET_KEY", &key)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    until_in_force(port, &token, "closed", "version 2 at start", &log);

    // Version 3 (open) saved and announced as a node announces it: once it is in force the
    // node's subscription to the feed stands (it follows the store when it subscribes, and
    // each announcement after).
    let v3 = PolicyVersion::new(3, V1, "admin:jane");
    durable.save_policy_version(&v3).await.unwrap();
    let cfg = stepgate_config::load(&config).unwrap();
    let feed = ChangeFeed::connect(cfg.store.redis.as_ref().unwrap())
        .await
        .unwrap();
    feed.publish(&Change::PolicySet(3)).await.unwrap();
    until_in_force(
        port,
        &token,
        "open",
        "version 3 announced by the test",
        &log,
    );

    // The CLI rolls back to 2 (closed): saved as 4 and announced; the node puts it in force
    // with no restart and no reload.
    let out = run(&key, &["policy", "rollback", "2", "--config", c]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("saved version 4 (rollback of 2)")
            && text(&out).contains("announced: every running node puts it in force now"),
        "{}",
        text(&out)
    );
    until_in_force(
        port,
        &token,
        "closed",
        "version 4 announced by the CLI",
        &log,
    );
}
