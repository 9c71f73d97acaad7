//! `stepgate policy versions|show|diff|rollback` against a real SQLite store: the versions
//! listed, one shown, two compared, an old one rolled back as the newest (audited with the
//! operator as actor), and refusals that name what to fix — a version that no longer loads
//! with the files, policy edits off, an unknown version.

use std::path::Path;
use std::process::{Command, Output};

use stepgate_store::{open_stores, AuditQuery, DurableStore, PolicyVersion, SecretKey};

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
