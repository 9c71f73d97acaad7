//! A real SIGHUP adds, removes and replaces connectors without a restart; a reload whose
//! connector cannot be built is refused whole.

use std::time::Duration;

use stepgate_server::devices::connectors::Connectors;

use crate::common::*;
use crate::support::hexnode::{device, hexnode, now_s, Hexnode, API_KEY};
use crate::support::Server;

/// The reloadable configuration: connectors from `entries` (YAML list items).
fn reload_config(entries: &[String]) -> String {
    let mut s = String::from(
        "sessions: { cookie: { secure: false } }\npolicies:\n  - { name: first, priority: 1, outcome: allow }\ndevices:\n  connectors:\n",
    );
    for e in entries {
        s.push_str("    - ");
        s.push_str(e);
        s.push('\n');
    }
    s
}

fn entry(name: &str, addr: &str, extra: &str) -> String {
    format!("{{ name: {name}, kind: hexnode, url: 'http://{addr}', secret: {{ file: hexnode.key }}, interval: 1h, backoff: 10ms, retries: 0{extra} }}")
}

/// Sends this process a real SIGHUP (what `kill -HUP` or systemd's reload does).
fn sighup() {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened");
}

fn listed(fleet: &Hexnode) -> usize {
    fleet
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|(w, _)| w.starts_with("list"))
        .count()
}

#[tokio::test]
async fn sighup_adds_removes_and_replaces_connectors_and_a_bad_one_refuses_the_reload() {
    // Held for the whole test: a SIGHUP never falls on the default action (ending the
    // process), whichever task registers first.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let (a, b) = (Hexnode::default(), Hexnode::default());
    for f in [&a, &b] {
        f.lock()
            .unwrap()
            .devices
            .insert(42, device(42, "jane@example.com", true, &now_s(-60)));
    }
    let (a_addr, b_addr) = (hexnode(&a).await, hexnode(&b).await);
    let h = Server::build(&reload_config(&[entry("alpha", &a_addr, "")]))
        .in_dir(key_dir())
        .in_file("stepgate.yaml")
        .start()
        .await;
    let path = h.dir.path().join("stepgate.yaml");
    settled(&h, "alpha").await;
    assert_eq!(h.st.connectors.names(), ["alpha"]);
    let alpha_lists = listed(&a);

    // Added: bravo starts syncing at once; alpha, unchanged, is not synced again.
    std::fs::write(
        &path,
        reload_config(&[entry("alpha", &a_addr, ""), entry("bravo", &b_addr, "")]),
    )
    .unwrap();
    sighup();
    hup.recv().await;
    until("bravo's first sync", || {
        h.st.connectors
            .status()
            .get("bravo")
            .is_some_and(|s| s.last_success.is_some())
    })
    .await;
    assert_eq!(h.st.connectors.names(), ["alpha", "bravo"]);
    assert!(h.st.devices.load("bravo-42").await.unwrap().is_some());
    assert_eq!(
        listed(&a),
        alpha_lists,
        "an unchanged connector keeps running as it was"
    );

    // Changed (page size): alpha is replaced, and the new one syncs at once.
    std::fs::write(
        &path,
        reload_config(&[
            entry("alpha", &a_addr, ", page_size: 5"),
            entry("bravo", &b_addr, ""),
        ]),
    )
    .unwrap();
    sighup();
    hup.recv().await;
    until("the new alpha's sync", || listed(&a) > alpha_lists).await;
    assert!(a
        .lock()
        .unwrap()
        .log
        .iter()
        .any(|(w, _)| w.starts_with("list")));

    // A rotated secret (the file's content changed, the YAML not): alpha is replaced and
    // the new one presents the new key (which this Hexnode refuses).
    let refused = |f: &Hexnode| f.lock().unwrap().log.iter().filter(|(_, ok)| !ok).count();
    std::fs::write(h.dir.path().join("hexnode.key"), "a-rotated-key\n").unwrap();
    sighup();
    hup.recv().await;
    until("a request with the rotated key", || refused(&a) > 0).await;
    std::fs::write(h.dir.path().join("hexnode.key"), format!("{API_KEY}\n")).unwrap();
    sighup();
    hup.recv().await;
    let lists = listed(&a);
    until("alpha back on the right key", || listed(&a) > lists).await;

    // Refused: a connector whose secret file does not exist. Nothing changes — not the
    // connectors, not the policies.
    let before = h.st.runtime.load_full();
    std::fs::write(
        &path,
        reload_config(&[
            entry("alpha", &a_addr, ", page_size: 5"),
            "{ name: charlie, kind: hexnode, url: 'http://127.0.0.1:9', secret: { file: missing.key } }".into(),
        ]),
    )
    .unwrap();
    sighup();
    hup.recv().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.st.connectors.names(), ["alpha", "bravo"]);
    assert!(std::sync::Arc::ptr_eq(&before, &h.st.runtime.load_full()));
    // And an invalid connector (page_size 0) is refused by the configuration check.
    std::fs::write(
        &path,
        reload_config(&[entry("alpha", &a_addr, ", page_size: 0")]),
    )
    .unwrap();
    sighup();
    hup.recv().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.st.connectors.names(), ["alpha", "bravo"]);

    // Removed: bravo stops; a sync by name no longer finds it, its devices are no longer
    // judged by its freshness, and its metrics series go.
    assert!(h.st.metrics.encode(0).contains("connector=\"bravo\""));
    std::fs::write(
        &path,
        reload_config(&[entry("alpha", &a_addr, ", page_size: 5")]),
    )
    .unwrap();
    sighup();
    hup.recv().await;
    until("bravo's removal", || h.st.connectors.names() == ["alpha"]).await;
    let r = Connectors::sync(&h.st, Some("bravo"), false).await;
    assert!(r[0]
        .1
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("no connector named `bravo`"));
    assert!(h
        .st
        .connectors
        .health()
        .stale("bravo", chrono::Utc::now() + chrono::TimeDelta::days(30))
        .is_none());
    assert!(!h.st.metrics.encode(0).contains("connector=\"bravo\""));
    let b_lists = listed(&b);
    Connectors::sync(&h.st, None, false).await;
    assert_eq!(
        listed(&b),
        b_lists,
        "a removed connector never reads its UEM again"
    );
}
