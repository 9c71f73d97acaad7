//! A device connector's life in the live server, against the recording Hexnode on loopback:
//!
//! - **stale**: a connector failing for longer than its `stale_after` makes its devices
//!   stop counting as compliant — the user's next request shows the blocked page saying in
//!   plain words that the device's management status could not be confirmed recently — and
//!   `/readyz?details` says so; one successful sync lets the user back in;
//! - **metrics**: a successful and a failing sync move exactly their series, and promtool
//!   accepts the scrape;
//! - **reload**: a real SIGHUP adds, removes and replaces connectors without a restart; a
//!   reload whose connector cannot be built is refused whole and the old ones keep running;
//! - **hostile answers**: an answer over 32 MB, a page over 1000 devices, one device listed
//!   twice with different details, a device given to an account in another mail domain,
//!   dates in the future or unreadable, a detail describing another device;
//! - **another node**: a successful sync another node recorded in the shared store keeps
//!   this node's view of the connector fresh even while this node cannot reach the UEM.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stepgate_server::devices::connectors::{Connectors, SyncCounts};
use support::hexnode::{device, hexnode, now_s, Hexnode, API_KEY};
use support::prom;
use support::{sign_in, upstream, Browser, Page, Server, JANE};

const DEVICE_KEY: &str = "device-cookie-key-for-tests-0123456789abcdef";

/// One Hexnode connector `hexnode` at HEXNODE; INTERVAL and STALE are filled in.
const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
server:
  metrics_listen: 127.0.0.1:0
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_DEVICE_KEY }
  connectors:
    - name: hexnode
      kind: hexnode
      url: http://HEXNODE
      secret: { file: hexnode.key }
      interval: INTERVAL
      stale_after: STALE
      page_size: 2
      backoff: 10ms
      retries: 0
      owner_match: local_part
      owner_domains: [example.com]
policies:
  - name: compliant-devices-only
    priority: 10
    targets: { apps: [console] }
    conditions:
      - device_compliance: { compliant: false }
    outcome: { deny: { message: This device is not compliant. } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 50
    outcome: allow
"#;

fn key_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hexnode.key"), format!("{API_KEY}\n")).unwrap();
    dir
}

async fn start(fleet: &Hexnode, interval: &str, stale: &str) -> Server {
    std::env::set_var("STEPGATE_TEST_DEVICE_KEY", DEVICE_KEY);
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("HEXNODE", hexnode(fleet).await)
        .with("INTERVAL", interval)
        .with("STALE", stale)
        .in_dir(key_dir())
        .demo_users()
        .start()
        .await
}

/// Waits for the connector's first sync (success or failure) on this node.
async fn settled(h: &Server, name: &str) {
    for _ in 0..300 {
        let s = h.st.connectors.status();
        if s.get(name)
            .is_some_and(|s| s.last_success.is_some() || s.consecutive_errors > 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connector `{name}` never synced");
}

async fn sync(h: &Server) -> Result<SyncCounts, String> {
    let mut r = Connectors::sync(&h.st, Some("hexnode"), false).await;
    r.remove(0).1.map_err(|e| e.to_string())
}

async fn details(h: &Server) -> Value {
    reqwest::get(h.at("/readyz?details"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Jane signs in on a browser whose device cookie names Hexnode's device 42.
async fn jane_on_device(h: &Server) -> Browser {
    let signer = stepgate_signals::device::DeviceCookieSigner::new(DEVICE_KEY.as_bytes()).unwrap();
    let b = Browser::new();
    b.jar.add_cookie_str(
        &format!(
            "sg-device={}; Path=/",
            signer.issue("hexnode-42", chrono::Utc::now())
        ),
        &h.base.parse().unwrap(),
    );
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    b
}

#[tokio::test]
async fn a_connector_failing_longer_than_stale_after_blocks_its_devices_until_it_syncs_again() {
    let fleet = Hexnode::default();
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(42, device(42, "jane@example.com", true, &now_s(-60)));
    let h = start(&fleet, "10s", "11s").await;
    settled(&h, "hexnode").await;
    let browser = jane_on_device(&h).await;
    let r = browser.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    assert_eq!(details(&h).await["connectors"]["hexnode"]["stale"], false);

    // Hexnode goes down: every request fails from now on (no retries), so the scheduled
    // syncs fail; the device itself is left exactly as Hexnode last described it.
    fleet.lock().unwrap().faults = vec![(503, None); 1000];
    assert!(sync(&h).await.unwrap_err().contains("HTTP 503"));
    let r = browser.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "still within stale_after");

    // Past stale_after (11s) without a successful sync: not compliant any more.
    let mut waited = 0;
    while details(&h).await["connectors"]["hexnode"]["stale"] != true {
        assert!(waited < 150, "never went stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let r = browser.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let page = Page::read(r).await;
    assert!(
        page.html
            .contains("Your device&#x27;s management status could not be confirmed recently")
            || page
                .html
                .contains("Your device's management status could not be confirmed recently"),
        "{}",
        page.html
    );
    assert!(
        page.html.contains("stepgate last heard from hexnode at"),
        "{}",
        page.html
    );
    assert!(page.html.contains("tell your help desk"), "{}", page.html);
    let d = details(&h).await;
    assert_eq!(d["connectors"]["hexnode"]["stale"], true, "{d}");
    assert!(
        d["connectors"]["hexnode"]["consecutive_errors"].as_u64() >= Some(1),
        "{d}"
    );
    // The node stays ready: it can still decide, and it decides "not confirmed".
    assert_eq!(d["status"], "ready");
    let scrape = prom::scrape(h.st.metrics.addr().unwrap()).await;
    assert_eq!(
        scrape.get("stepgate_connector_stale", &[("connector", "hexnode")]),
        1.0
    );

    // Pressing "Re-check my device" while Hexnode is still down changes nothing.
    let r = page.submit(&browser, "/_stepgate/recheck", &[]).await;
    assert_eq!(r.status().as_u16(), 403);

    // Hexnode answers again: "Re-check my device" reads the device and, the connector
    // being stale, runs the sync that lifts it — Jane is back at once.
    fleet.lock().unwrap().faults.clear();
    let page = Page::read(r).await;
    let lists = fleet
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|(w, _)| w.starts_with("list"))
        .count();
    let r = page.submit(&browser, "/_stepgate/recheck", &[]).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    assert!(
        fleet
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(w, _)| w.starts_with("list"))
            .count()
            > lists,
        "the re-check ran a sync"
    );
    assert_eq!(details(&h).await["connectors"]["hexnode"]["stale"], false);
}

#[tokio::test]
async fn a_successful_and_a_failing_sync_move_their_series_and_promtool_accepts_the_scrape() {
    let fleet = Hexnode::default();
    {
        let mut f = fleet.lock().unwrap();
        f.devices
            .insert(42, device(42, "jane@example.com", true, &now_s(-60)));
        f.devices
            .insert(43, device(43, "bob@example.com", false, &now_s(-60)));
        f.devices
            .insert(44, device(44, "carol@example.com", true, &now_s(-60)));
    }
    let h = start(&fleet, "1h", "24h").await;
    settled(&h, "hexnode").await;
    let addr = h.st.metrics.addr().expect("the metrics listener is up");
    let hx = [("connector", "hexnode")];
    let ok = [("connector", "hexnode"), ("result", "success")];
    let failed = [("connector", "hexnode"), ("result", "failure")];

    let first = prom::scrape(addr).await;
    assert_eq!(first.get("stepgate_connector_syncs_total", &ok), 1.0);
    assert_eq!(
        first.find("stepgate_connector_syncs_total", &failed),
        Some(0.0)
    );
    assert_eq!(first.get("stepgate_connector_devices", &hx), 3.0);
    assert_eq!(
        first.get("stepgate_connector_devices_non_compliant", &hx),
        1.0
    );
    assert_eq!(
        first.find("stepgate_connector_device_errors_total", &hx),
        Some(0.0)
    );
    assert_eq!(first.get("stepgate_connector_stale", &hx), 0.0);
    assert_eq!(
        first.get("stepgate_connector_sync_duration_seconds_count", &ok),
        1.0
    );
    let last = first.get("stepgate_connector_last_success_timestamp_seconds", &hx);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 60.0..=now + 1.0).contains(&last), "{last} vs {now}");

    // A failing sync: one failure, nothing else moves.
    fleet.lock().unwrap().faults = vec![(500, None)];
    sync(&h).await.unwrap_err();
    let second = prom::scrape(addr).await;
    assert_eq!(second.get("stepgate_connector_syncs_total", &ok), 1.0);
    assert_eq!(second.get("stepgate_connector_syncs_total", &failed), 1.0);
    assert_eq!(
        second.get("stepgate_connector_sync_duration_seconds_count", &failed),
        1.0
    );
    assert_eq!(
        second.get("stepgate_connector_sync_duration_seconds_count", &ok),
        1.0
    );
    assert_eq!(second.get("stepgate_connector_devices", &hx), 3.0);
    assert_eq!(
        second.get("stepgate_connector_last_success_timestamp_seconds", &hx),
        last
    );

    // A successful sync with one device Hexnode describes without an id: counted as an
    // error, the others still applied.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    {
        let mut f = fleet.lock().unwrap();
        f.devices
            .insert(43, device(43, "bob@example.com", true, &now_s(0)));
        f.pages = Some(vec![
            vec![json!({"id": 42}), json!({"id": 43})],
            vec![json!({"device_name": "no id"})],
        ]);
    }
    let c = sync(&h).await.unwrap();
    assert_eq!((c.seen, c.errors, c.non_compliant), (2, 1, 0), "{c:?}");
    let third = prom::scrape(addr).await;
    assert_eq!(third.get("stepgate_connector_syncs_total", &ok), 2.0);
    assert_eq!(
        third.get("stepgate_connector_device_errors_total", &hx),
        1.0
    );
    assert_eq!(third.get("stepgate_connector_devices", &hx), 2.0);
    assert_eq!(
        third.get("stepgate_connector_devices_non_compliant", &hx),
        0.0
    );
    assert!(third.get("stepgate_connector_last_success_timestamp_seconds", &hx) > last);

    prom::promtool_accepts(&third.text);
}

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

#[tokio::test]
async fn hostile_hexnode_answers_change_nothing_they_should_not() {
    let fleet = Hexnode::default();
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(42, device(42, "jane@example.com", true, &now_s(-60)));
    let h = start(&fleet, "1h", "24h").await;
    settled(&h, "hexnode").await;
    let load = |id: &'static str| {
        let st = h.st.clone();
        async move { st.devices.load(id).await.unwrap() }
    };

    // An answer larger than 32 MB: refused without reading it all; nothing written.
    {
        let mut f = fleet.lock().unwrap();
        f.devices
            .insert(49, device(49, "jane@example.com", true, &now_s(0)));
        f.pages = Some(vec![vec![
            json!({"id": 49, "notes": "x".repeat(33 * 1024 * 1024)}),
        ]]);
    }
    let e = sync(&h).await.unwrap_err();
    assert!(
        e.contains("the answer is larger than 32 MB; lower `page_size`"),
        "{e}"
    );
    assert!(load("hexnode-49").await.is_none());

    // A page of 1001 devices (Hexnode's `per_page` is not confirmed, so a portal's own
    // page size up to 1000 is read): the sync fails, nothing is written.
    {
        let mut f = fleet.lock().unwrap();
        for id in [50, 51] {
            f.devices
                .insert(id, device(id, "jane@example.com", true, &now_s(0)));
        }
        let page: Vec<Value> = (1000..2001).map(|id| json!({"id": id})).collect();
        f.pages = Some(vec![page]);
    }
    let e = sync(&h).await.unwrap_err();
    assert!(
        e.contains("1001 devices on one page, more than the 1000 asked for"),
        "{e}"
    );
    assert!(load("hexnode-1000").await.is_none());
    assert!(
        !fleet
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|(w, _)| w == "detail 1000"),
        "refused before any detail is read"
    );

    // The same device on two pages with the same details: read once, no error.
    fleet.lock().unwrap().pages = Some(vec![
        vec![json!({"id": 42}), json!({"id": 50})],
        vec![json!({"id": 42})],
    ]);
    let c = sync(&h).await.unwrap();
    assert_eq!((c.seen, c.errors), (2, 0), "{c:?}");

    // Twice with different details (a field only the list carries): nothing says which
    // is true, so the device is reported non-compliant and the disputed attribute unknown.
    {
        let mut f = fleet.lock().unwrap();
        let mut d = device(51, "jane@example.com", true, &now_s(0));
        d.as_object_mut().unwrap().remove("encryption_status");
        f.devices.insert(51, d);
        f.pages = Some(vec![
            vec![
                json!({"id": 51, "encryption_status": "Yes"}),
                json!({"id": 42}),
            ],
            vec![json!({"id": 51, "encryption_status": "No"})],
        ]);
    }
    let c = sync(&h).await.unwrap();
    assert_eq!(c.errors, 1, "{c:?}");
    let d = load("hexnode-51").await.unwrap();
    let rc = d.reported_compliance.unwrap();
    assert!(!rc.compliant);
    assert_eq!(
        rc.reason.as_deref(),
        Some("hexnode listed this device twice with different details")
    );
    assert!(!d.posture.contains_key("encrypted"), "{:?}", d.posture);

    // Jane's device given to jane@ of another mail domain: not hers to vouch for any more
    // (it stays recorded as hers, so she cannot lose it to a look-alike), reported
    // non-compliant; a new device for that account has no owner here at all.
    {
        let mut f = fleet.lock().unwrap();
        f.pages = None;
        f.devices.clear();
        f.devices
            .insert(42, device(42, "jane@evil.example", true, &now_s(1)));
        f.devices
            .insert(60, device(60, "jane@evil.example", true, &now_s(1)));
    }
    sync(&h).await.unwrap();
    let d = load("hexnode-42").await.unwrap();
    assert_eq!(d.owner.as_deref(), Some("jane"));
    let rc = d.reported_compliance.unwrap();
    assert!(!rc.compliant);
    assert_eq!(
        rc.reason.as_deref(),
        Some("hexnode assigns this device to an account outside your organisation's mail domains")
    );
    assert_eq!(load("hexnode-60").await.unwrap().owner, None);
    let janes: Vec<String> =
        h.st.stores
            .durable
            .list_devices("jane")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
    assert!(!janes.contains(&"hexnode-60".to_string()), "{janes:?}");

    // A report dated in the year 9999 counts as made now: the posture does not stay fresh
    // for ever, and Hexnode's next real report is not ignored as older.
    {
        let mut f = fleet.lock().unwrap();
        f.devices.clear();
        f.devices.insert(
            70,
            device(70, "jane@example.com", true, "9999-12-31T23:59:59Z"),
        );
    }
    sync(&h).await.unwrap();
    let d = load("hexnode-70").await.unwrap();
    assert!(
        d.last_sync.unwrap() <= chrono::Utc::now(),
        "{:?}",
        d.last_sync
    );
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(70, device(70, "jane@example.com", false, &now_s(2)));
    sync(&h).await.unwrap();
    let d = load("hexnode-70").await.unwrap();
    assert_eq!(d.reported_compliance.map(|c| c.compliant), Some(false));

    // Unreadable dates (words, a 13th month, epoch milliseconds past year 262143): the
    // report counts as made now, the device is still applied.
    for (id, date) in [
        (71, json!("yesterday")),
        (72, json!("2026-13-45T00:00:00Z")),
        (73, json!(i64::MAX)),
    ] {
        let mut d = device(id, "jane@example.com", true, "");
        d["last_reported"] = date;
        fleet.lock().unwrap().devices.insert(id, d);
    }
    let c = sync(&h).await.unwrap();
    assert_eq!(c.errors, 0, "{c:?}");
    for id in ["hexnode-71", "hexnode-72", "hexnode-73"] {
        let d = h.st.devices.load(id).await.unwrap().unwrap();
        let age = chrono::Utc::now() - d.last_sync.unwrap();
        assert!(
            age < chrono::TimeDelta::minutes(1),
            "{id}: {:?}",
            d.last_sync
        );
    }

    // A detail describing another device than the one listed: the sync fails, nothing
    // written under either id.
    {
        let mut f = fleet.lock().unwrap();
        f.devices.clear();
        f.devices
            .insert(80, device(81, "jane@example.com", true, &now_s(3)));
        f.pages = Some(vec![vec![json!({"id": 80})]]);
    }
    let e = sync(&h).await.unwrap_err();
    assert!(
        e.contains("asked for device `80`, the answer is another device"),
        "{e}"
    );
    assert!(load("hexnode-80").await.is_none());
    assert!(load("hexnode-81").await.is_none());
}

#[tokio::test]
async fn another_nodes_successful_sync_in_the_store_keeps_the_devices_fresh() {
    // Hexnode is unreachable from this node from the start.
    let fleet = Hexnode::default();
    fleet.lock().unwrap().faults = vec![(503, None); 1000];
    let h = start(&fleet, "10s", "11s").await;
    settled(&h, "hexnode").await;
    let health = h.st.connectors.health();
    // Never a success on this node: stale once 11s have passed since it set up.
    let probe = chrono::Utc::now() + chrono::TimeDelta::milliseconds(11_001);
    assert_eq!(health.stale("hexnode", probe), Some(None));

    // Another node syncs successfully and records it in the shared store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = chrono::Utc::now();
    let memory = stepgate_store::DeviceRecord {
        id: format!(
            "{}connector:hexnode",
            stepgate_signals::device::RESERVED_ID_PREFIX
        ),
        owner: None,
        data: json!({"known": {}, "last_full": other, "last_sync": other}),
        updated_at: other,
    };
    h.st.stores.durable.put_device(&memory).await.unwrap();

    // This node's next sync still fails, but reads that success: its devices count from
    // it, not from this node's own failures.
    assert!(sync(&h).await.unwrap_err().contains("HTTP 503"));
    assert_eq!(health.stale("hexnode", probe), None);
    let later = other + chrono::TimeDelta::milliseconds(11_500);
    assert_eq!(health.stale("hexnode", later), Some(Some(other)));
}
