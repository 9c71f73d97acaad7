//! Skipped tests, counted across a whole `cargo test` run.
//!
//! A test that needs something the machine may not have (PostgreSQL, Redis, nginx, a
//! Python module) returns early and libtest reports it "ok". So that a plain `cargo test`
//! says what did not run, such a test calls [`record`] before returning: it writes one file
//! under `<target>/<profile>/stepgate-skipped/<run>/`, where `<run>` names the `cargo test`
//! process (every test binary of one run is a child of the same cargo process; its start
//! time tells a new run from an old one whose process id was reused). The last test binary
//! cargo runs (`crates/store/tests/zz_skipped_summary.rs`: cargo runs test binaries sorted
//! by package, then by target name, and `stepgate-store` sorts last in this workspace) calls
//! [`print_summary`], which prints one line, for example
//!
//! ```text
//! skipped: 6 tests need PostgreSQL — set STEPGATE_TEST_POSTGRES_URL; 3 need Redis — set STEPGATE_TEST_REDIS_URL
//! ```
//!
//! and removes the run's records. Used by `#[path]` from each crate's tests (no crate of
//! its own). Unix only; elsewhere recording and the summary do nothing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

/// The directory holding every run's records: next to the test binaries' `deps/`.
fn root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // <target>/<profile>/deps/<binary>
    Some(exe.parent()?.parent()?.join("stepgate-skipped"))
}

/// The running `cargo test`'s identity: its process id and start time (clock ticks since
/// boot, field 22 of /proc/<pid>/stat), so that a reused process id is a different run.
#[cfg(unix)]
fn run_id_of(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let start = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .unwrap_or("0");
    Some(format!("{pid}-{start}"))
}

#[cfg(not(unix))]
fn run_id_of(_pid: u32) -> Option<String> {
    None
}

#[cfg(unix)]
fn this_run() -> Option<String> {
    run_id_of(std::os::unix::process::parent_id())
}

#[cfg(not(unix))]
fn this_run() -> Option<String> {
    None
}

/// Records that the calling test is skipped because it needs `need` ("PostgreSQL"), which
/// `how` provides ("set STEPGATE_TEST_POSTGRES_URL"), and prints the usual note. Failing
/// to record is not an error: the note is still printed.
pub fn record(need: &str, how: &str) {
    eprintln!("note: skipping, this test needs {need} ({how})");
    let (Some(root), Some(run)) = (root(), this_run()) else {
        return;
    };
    let dir = root.join(run);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let file = dir.join(format!(
        "{}--{}--{}.txt",
        safe(&binary),
        safe(&test),
        safe(need)
    ));
    let _ = std::fs::write(file, format!("{need}\t{how}\t{binary} {test}\n"));
}

/// The summary of one run's records in `dir`: "skipped: N tests need X — how; M need Y —
/// how", or `None` if nothing was skipped.
pub fn summary_line(dir: &std::path::Path) -> Option<String> {
    let mut by_need: BTreeMap<(String, String), usize> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut parts = text.trim_end().splitn(3, '\t');
        if let (Some(need), Some(how)) = (parts.next(), parts.next()) {
            *by_need
                .entry((need.to_string(), how.to_string()))
                .or_default() += 1;
        }
    }
    if by_need.is_empty() {
        return None;
    }
    let mut groups: Vec<((String, String), usize)> = by_need.into_iter().collect();
    // The most common first.
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let parts: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, ((need, how), n))| {
            let verb = match (i, *n) {
                (0, 1) => "test needs",
                (0, _) => "tests need",
                (_, 1) => "needs",
                _ => "need",
            };
            format!("{n} {verb} {need} — {how}")
        })
        .collect();
    Some(format!("skipped: {}", parts.join("; ")))
}

/// Prints this run's summary line (or that nothing was skipped) straight to the process's
/// standard error, which libtest does not capture, and removes the run's records and any
/// left by runs that ended before printing theirs.
pub fn print_summary() {
    let (Some(root), Some(run)) = (root(), this_run()) else {
        return;
    };
    let dir = root.join(&run);
    let line = summary_line(&dir).unwrap_or_else(|| "skipped: none".to_string());
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\n{line}\n");
    let _ = err.flush();
    let _ = std::fs::remove_dir_all(&dir);
    // Records of runs that stopped before their summary (a failing test binary stops
    // `cargo test`) would otherwise stay forever.
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let live = name
                .split_once('-')
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .and_then(run_id_of)
                .is_some_and(|id| id == name);
            if !live {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
