//! `stepgate user delete | set-groups | add-group | remove-group | set-attribute` and the
//! refusals of `add`, run as an admin would, against the embedded SQLite store and, when
//! `STEPGATE_TEST_POSTGRES_URL` and `STEPGATE_TEST_REDIS_URL` are set, PostgreSQL + Redis.
//! The audit log and the records are read back through the store itself.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use stepgate_store::{open_stores, AttributeValue, AuditQuery, SecretKey, Stores};

const BIN: &str = env!("CARGO_BIN_EXE_stepgate");

struct Env {
    _dir: tempfile::TempDir,
    config: PathBuf,
    key: String,
}

impl Env {
    /// A configuration whose `store:` section is `store` (empty: SQLite in the folder).
    fn new(store: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("stepgate.yaml");
        std::fs::write(
            &config,
            format!("server:\n  data_dir: data\nfactors:\n  password:\n    argon2: {{ memory_kib: 64, iterations: 1, parallelism: 1 }}\n{store}"),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["secrets", "generate-key"])
            .output()
            .unwrap();
        let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Env {
            _dir: dir,
            config,
            key,
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(BIN)
            .arg("user")
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .env("STEPGATE_SECRET_KEY", &self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, None);
        assert!(
            o.status.success(),
            "user {args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn refused(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.run(args, stdin);
        assert!(
            !o.status.success(),
            "user {args:?} should fail: {}",
            text(&o.stdout)
        );
        text(&o.stderr)
    }

    async fn stores(&self) -> Stores {
        let cfg = stepgate_config::load(&self.config).unwrap();
        let key = SecretKey::parse(&self.key, "test").unwrap();
        open_stores(&cfg.store, &cfg.base_dir.join(&cfg.server.data_dir), &key)
            .await
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The kinds of the audit events about users, in order.
async fn user_events(stores: &Stores) -> Vec<String> {
    stores
        .durable
        .list_audit(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("user."))
        .collect()
}

async fn lifecycle(env: &Env, name: &str) {
    // A refused add (a weak password) creates nothing and records nothing.
    let e = env.refused(&["add", name, "--password-stdin"], Some("short\n"));
    assert!(e.contains("at least") && e.contains("not created"), "{e}");
    let stores = env.stores().await;
    assert!(stores
        .durable
        .get_user_by_username(name)
        .await
        .unwrap()
        .is_none());
    assert_eq!(user_events(&stores).await, Vec::<String>::new());

    env.ok(&["add", name, "--group", "staff"]);
    // A second add is refused clearly and records nothing.
    let e = env.refused(&["add", name, "--group", "admins"], None);
    assert!(
        e.contains(&format!("user `{name}` already exists")) && e.contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(user_events(&stores).await, ["user.created"]);

    let out = env.ok(&["add-group", name, "admins", "staff"]);
    assert!(out.contains("groups staff, admins"), "{out}");
    let out = env.ok(&["remove-group", name, "staff"]);
    assert!(out.contains("groups admins"), "{out}");
    let e = env.refused(&["remove-group", name, "finance"], None);
    assert!(
        e.contains("not in group(s) finance") && e.contains("admins"),
        "{e}"
    );
    env.ok(&["set-groups", name, "ops", "oncall"]);
    let u = stores
        .durable
        .get_user_by_username(name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.groups, ["ops", "oncall"]);

    env.ok(&["set-attribute", name, "department", "finance"]);
    env.ok(&["set-attribute", name, "regions", "eu", "us"]);
    let u = stores
        .durable
        .get_user_by_username(name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        u.attributes["department"],
        AttributeValue::One("finance".into())
    );
    assert_eq!(
        u.attributes["regions"],
        AttributeValue::Many(vec!["eu".into(), "us".into()])
    );
    env.ok(&["set-attribute", name, "department", "--unset"]);
    let u = stores
        .durable
        .get_user_by_username(name)
        .await
        .unwrap()
        .unwrap();
    assert!(!u.attributes.contains_key("department"));
    let e = env.refused(&["set-attribute", name, "department"], None);
    assert!(e.contains("--unset") || e.contains("required"), "{e}");

    let out = env.ok(&["delete", name]);
    assert!(out.contains(&format!("deleted user {name}")), "{out}");
    assert!(stores
        .durable
        .get_user_by_username(name)
        .await
        .unwrap()
        .is_none());
    assert!(stores.durable.list_factors(&u.id).await.unwrap().is_empty());
    let e = env.refused(&["delete", name], None);
    assert!(e.contains(&format!("no user `{name}`")), "{e}");
    assert_eq!(
        user_events(&stores).await,
        [
            "user.created",
            "user.groups_changed",
            "user.groups_changed",
            "user.groups_changed",
            "user.attribute_set",
            "user.attribute_set",
            "user.attribute_removed",
            "user.deleted",
        ]
    );
}

#[tokio::test]
async fn user_lifecycle_on_sqlite() {
    lifecycle(&Env::new(""), "jane").await;
}

#[tokio::test]
async fn user_lifecycle_on_postgres_and_redis() {
    let (Ok(pg), Ok(redis)) = (
        std::env::var("STEPGATE_TEST_POSTGRES_URL"),
        std::env::var("STEPGATE_TEST_REDIS_URL"),
    ) else {
        eprintln!("skipped: STEPGATE_TEST_POSTGRES_URL / STEPGATE_TEST_REDIS_URL not set");
        return;
    };
    let run = format!(
        "cli{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let env = Env::new(&format!(
        "store:\n  postgres: {{ url: \"{pg}\", schema: {run} }}\n  redis: {{ url: \"{redis}\", key_prefix: \"{run}:\" }}\n"
    ));
    lifecycle(&env, "jane").await;
}

#[tokio::test]
async fn users_declared_in_the_file_are_changed_there_not_here() {
    let env = Env::new("users:\n  - { username: ops-bot, groups: [ops] }\n");
    // The file's users are synced at serve's start; do what that does, through the store.
    let stores = env.stores().await;
    let cfg = stepgate_config::load(&env.config).unwrap();
    let key = SecretKey::parse(&env.key, "test").unwrap();
    stepgate_store::sync_users(stores.durable.as_ref(), &key, &cfg.users)
        .await
        .unwrap();
    let before = user_events(&stores).await;
    for args in [
        &["delete", "ops-bot"][..],
        &["add-group", "ops-bot", "admins"],
        &["set-attribute", "ops-bot", "team", "x"],
    ] {
        let e = env.refused(args, None);
        assert!(e.contains("declared under `users:`"), "{e}");
    }
    assert_eq!(user_events(&stores).await, before);
    let u = stores
        .durable
        .get_user_by_username("ops-bot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.groups, ["ops"]);
}
