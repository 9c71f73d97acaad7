//! `stepgate store backup FILE`, then a restore as docs/operations.md describes it: the copy
//! put in place of the store serves the same users.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_stepgate");

fn run(config: &Path, key: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("STEPGATE_SECRET_KEY", key)
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

#[test]
fn backup_then_restore_keeps_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let key = String::from_utf8(
        Command::new(BIN)
            .args(["secrets", "generate-key"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(&cfg, "server:\n  data_dir: data\n").unwrap();
    let o = run(&cfg, &key, &["user", "add", "jane", "--group", "staff"]);
    assert!(o.status.success(), "{}", text(&o));

    let backup = dir.path().join("stepgate-backup.db");
    let o = run(&cfg, &key, &["store", "backup", backup.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 users, integrity ok"), "{}", text(&o));
    // Never over an existing file.
    let o = run(&cfg, &key, &["store", "backup", backup.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("already exists"),
        "{}",
        text(&o)
    );

    // Restore: the copy becomes the store (no -wal/-shm beside it), same key.
    let o = run(&cfg, &key, &["user", "delete", "jane"]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["stepgate.db", "stepgate.db-wal", "stepgate.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join("data").join(f));
    }
    std::fs::copy(&backup, dir.path().join("data/stepgate.db")).unwrap();
    let o = run(&cfg, &key, &["user", "show", "jane"]);
    assert!(
        o.status.success() && text(&o).contains("groups:     staff"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_postgresql_store_is_pointed_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stepgate.yaml");
    std::fs::write(
        &cfg,
        "store:\n  postgres: { url: \"postgres://stepgate@db.internal/stepgate\" }\n",
    )
    .unwrap();
    let o = run(&cfg, "unused", &["store", "backup", "x.db"]);
    assert!(
        !o.status.success() && text(&o).contains("pg_dump"),
        "{}",
        text(&o)
    );
}
