//! A PostgreSQL of the test's own crashes and restarts; the nodes survive it without
//! being restarted.

use std::time::Duration;

use crate::common::*;
use crate::support;
use crate::support::{password, skipped, upstream, Browser, Server, JANE};

/// A PostgreSQL server of the test's own (`initdb` + `pg_ctl` from Debian's PostgreSQL
/// packages, which the machine's database runs on), in a temporary directory on a free
/// port, so that crashing and restarting it touches nothing else. Run as the `postgres`
/// user when the test runs as root (PostgreSQL refuses to run as root).
struct OwnPostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl OwnPostgres {
    /// The newest installed PostgreSQL's programs, if any.
    fn bin() -> Option<std::path::PathBuf> {
        let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("pg_ctl").exists() && b.join("initdb").exists())
            .collect();
        found.sort_by_key(|b| {
            b.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        found.pop()
    }

    /// Creates and starts the server, or `None` (recorded as skipped) when PostgreSQL's
    /// server programs are not installed. With `CI` or `STEPGATE_REQUIRE_PG_CTL` set their
    /// absence fails the test.
    fn start() -> Option<OwnPostgres> {
        let Some(bin) = Self::bin() else {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("STEPGATE_REQUIRE_PG_CTL").is_some();
            assert!(
                !required,
                "PostgreSQL's server programs (initdb, pg_ctl) are required: apt-get install postgresql"
            );
            skipped::record("initdb and pg_ctl", "apt-get install postgresql");
            return None;
        };
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let ok = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the test database's directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = OwnPostgres {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        pg.up();
        Some(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `program` of PostgreSQL's, as the `postgres` user when the test runs as root.
    fn command(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL program");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server the way a crash does (`-m immediate`: every backend killed, every
    /// connection reset, recovery on the next start).
    fn crash(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The database server itself crashes and restarts (rather than the network to it being
/// cut, as above): the nodes' pooled connections are reset by the server, requests that
/// need it are refused meanwhile, and the nodes recover through their pools without a
/// restart, with nothing committed before the crash lost.
#[tokio::test]
async fn a_postgresql_crash_and_restart_is_survived_without_restarting_the_nodes() {
    let Some(b) = backends(None) else { return };
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let up = upstream::text("upstream").await;
    let start = || {
        let (mut pgc, redis, key) = (b.pg.clone(), b.redis.clone(), b.key.clone());
        pgc.url = pg.url();
        pgc.connect_timeout = stepgate_policy::HumanDuration::from_secs(2);
        Server::build(CONFIG)
            .with("UPSTREAM", up)
            .key(key)
            .configure(move |c| {
                c.store.postgres = Some(pgc);
                c.store.redis = Some(redis);
            })
            .demo_users()
            .start()
    };
    let (a, bee) = (start().await, start().await);
    for n in [&a, &bee] {
        wait_until("listening", || n.st.cache.in_use()).await;
    }
    let (_, id) = signed_in(&a).await;
    assert_allowed(&bee, &id, "/", "signed in on A, allowed on B").await;
    let before = support::audit(&a.st, Some("signin.success")).await.len();
    assert!(before >= 1, "the sign-in is committed to the audit log");

    pg.crash();
    for n in [&a, &bee] {
        n.st.cache.advance_clock(Duration::from_secs(11 * 60));
        let (status, _) = answer(n, &id, "/").await;
        assert_eq!(
            status, 503,
            "fail_mode closed: refused while PostgreSQL is down"
        );
    }
    let r = password(&Browser::new(), &app(&a, "/"), &JANE).await;
    assert_eq!(
        r.status(),
        503,
        "no sign-in without the durable store, and not a wrong password"
    );

    pg.up();
    recovered(&[&a, &bee], &id).await;
    let (_, again) = signed_in(&bee).await;
    assert_allowed(&a, &again, "/", "a sign-in on B after the restart, on A").await;
    let after = support::audit(&a.st, Some("signin.success")).await.len();
    assert_eq!(
        after,
        before + 1,
        "the sign-in before the crash survived it, and the one after is recorded"
    );
    assert!(
        stepgate_store::verify_audit_chain(a.st.stores.durable.as_ref())
            .await
            .is_ok(),
        "the audit chain is whole after the crash"
    );

    drop(pg);
    drop_backends(&b).await;
}
