//! The Hexnode connector through the live server, against a recording Hexnode on loopback
//! that answers like Hexnode's documented REST API (`/api/v1/devices/` paged as
//! `{"count", "next", "previous", "results"}`, `/api/v1/devices/{id}/` for the detail,
//! `Authorization: <api key>`). The device turning non-compliant in Hexnode denies the
//! user's live session on the next request after the sync, with Hexnode's failing policy on
//! the blocked page; fixing it in Hexnode and pressing "Re-check my device" reads it fresh
//! and lets the user back in. Throttling (429 + Retry-After) and a 500 mid-sync are
//! retried; an unreachable Hexnode changes no device (fail closed).

mod support;

use serde_json::Value;
use stepgate_server::devices::connectors::Connectors;
use support::hexnode::{device, hexnode, now_s, Hexnode, API_KEY};
use support::{audit, sign_in, upstream, Browser, Page, Server, JANE};

const DEVICE_KEY: &str = "device-cookie-key-for-tests-0123456789abcdef";

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_DEVICE_KEY }
  connectors:
    - name: hexnode
      kind: hexnode
      url: http://HEXNODE
      secret: { file: hexnode.key }
      interval: 1h
      page_size: 2
      backoff: 10ms
      retries: 2
      grace: 1s
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

async fn start(fleet: Hexnode, hexnode_addr: String) -> Server {
    std::env::set_var("STEPGATE_TEST_DEVICE_KEY", DEVICE_KEY);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hexnode.key"), format!("{API_KEY}\n")).unwrap();
    drop(fleet);
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("HEXNODE", hexnode_addr)
        .in_dir(dir)
        .demo_users()
        .start()
        .await
}

/// Runs a sync as `stepgate devices sync --connector hexnode` does; its counts.
async fn sync(h: &Server) -> stepgate_server::devices::connectors::SyncCounts {
    let mut r = Connectors::sync(&h.st, Some("hexnode"), false).await;
    let (name, counts) = r.remove(0);
    assert_eq!(name, "hexnode");
    counts.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the start-up sync has run, so the test's own syncs are the only ones.
async fn settled(h: &Server) {
    for _ in 0..200 {
        if h.st.connectors.status()["hexnode"].last_success.is_some()
            || h.st.connectors.status()["hexnode"].consecutive_errors > 0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the start-up sync never finished");
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
async fn hexnode_drift_blocks_the_live_session_and_recheck_lets_it_back() {
    let fleet = Hexnode::default();
    {
        let mut f = fleet.lock().unwrap();
        f.devices
            .insert(42, device(42, "jane@example.com", true, &now_s(-60)));
        f.devices
            .insert(43, device(43, "bob@example.com", true, &now_s(-60)));
        f.devices
            .insert(44, device(44, "jane@elsewhere.example", true, &now_s(-60)));
    }
    let h = start(fleet.clone(), hexnode(&fleet).await).await;
    settled(&h).await;

    // The start-up sync wrote the fleet, paged (2 per page), each with its detail, owners
    // matched by local part only in example.com.
    let d = h.st.devices.load("hexnode-42").await.unwrap().unwrap();
    assert_eq!(d.owner.as_deref(), Some("jane"));
    assert_eq!(d.state, stepgate_policy::DeviceState::Managed);
    assert_eq!(d.os_version.as_deref(), Some("15.1"));
    assert_eq!(d.posture["encrypted"].0, "true");
    let other = h.st.devices.load("hexnode-44").await.unwrap().unwrap();
    assert_eq!(other.owner, None);
    {
        let f = fleet.lock().unwrap();
        assert!(
            f.log.iter().all(|(_, key)| *key),
            "every request carried the key"
        );
        let pages: Vec<&str> = f
            .log
            .iter()
            .map(|(w, _)| w.as_str())
            .filter(|w| w.starts_with("list"))
            .collect();
        assert_eq!(pages, ["list page=Some(\"1\")", "list page=Some(\"2\")"]);
    }

    let browser = jane_on_device(&h).await;
    let r = browser.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    // Drift: Hexnode now reports the device non-compliant (FileVault off).
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(42, device(42, "jane@example.com", false, &now_s(0)));
    let counts = sync(&h).await;
    assert_eq!(
        (counts.changed, counts.now_non_compliant, counts.new),
        (1, 1, 0),
        "{counts:?}"
    );

    // The very next request is denied, with Hexnode's failing policy on the page.
    let r = browser.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let page = Page::read(r).await;
    assert!(
        page.html.contains("This device is not compliant."),
        "{}",
        page.html
    );
    assert!(
        page.html
            .contains("Failing in hexnode: FileVault disk encryption required"),
        "{}",
        page.html
    );

    // Fixed in Hexnode; "Re-check my device" reads it at once (no scheduled sync runs).
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(42, device(42, "jane@example.com", true, &now_s(1)));
    let details_before = detail_calls(&fleet, 42);
    let r = page.submit(&browser, "/_stepgate/recheck", &[]).await;
    assert_eq!(
        detail_calls(&fleet, 42),
        details_before + 1,
        "re-check read the device"
    );
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    assert!(!audit(&h.st, Some("device.posture")).await.is_empty());
}

fn detail_calls(fleet: &Hexnode, id: u64) -> usize {
    let want = format!("detail {id}");
    fleet
        .lock()
        .unwrap()
        .log
        .iter()
        .filter(|(w, _)| *w == want)
        .count()
}

#[tokio::test]
async fn throttling_and_a_500_mid_sync_are_retried_and_a_dead_hexnode_changes_nothing() {
    let fleet = Hexnode::default();
    fleet
        .lock()
        .unwrap()
        .devices
        .insert(42, device(42, "jane@example.com", true, &now_s(-60)));
    let addr = hexnode(&fleet).await;
    let h = start(fleet.clone(), addr).await;
    settled(&h).await;

    // A 429 with Retry-After: 1 then a 500: both retried, the sync succeeds.
    {
        let mut f = fleet.lock().unwrap();
        f.faults = vec![(429, Some("1")), (500, None)];
        f.devices
            .insert(42, device(42, "jane@example.com", false, &now_s(0)));
    }
    let t = std::time::Instant::now();
    let counts = sync(&h).await;
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "Retry-After honoured"
    );
    assert_eq!(counts.now_non_compliant, 1, "{counts:?}");

    // More failures than retries: the sync fails, the device is left as it was (still
    // non-compliant: a failure never makes a device look compliant), the error counted.
    {
        let mut f = fleet.lock().unwrap();
        f.faults = vec![(500, None), (500, None), (500, None)];
        f.devices
            .insert(42, device(42, "jane@example.com", true, &now_s(1)));
    }
    let r = Connectors::sync(&h.st, Some("hexnode"), false).await;
    let err = r[0].1.as_ref().unwrap_err().to_string();
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(!err.contains(API_KEY), "{err}");
    let d = h.st.devices.load("hexnode-42").await.unwrap().unwrap();
    assert_eq!(d.reported_compliance.map(|c| c.compliant), Some(false));
    let status = &h.st.connectors.status()["hexnode"];
    assert_eq!(status.consecutive_errors, 1);
    assert!(status.last_error.as_deref().unwrap().contains("HTTP 500"));
    let r: Value = reqwest::get(h.at("/readyz?details"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["connectors"]["hexnode"]["consecutive_errors"], 1, "{r}");
    assert!(r["connectors"]["hexnode"]["lag_seconds"].is_i64(), "{r}");
    assert!(r["connectors"]["hexnode"]["last_error"]
        .as_str()
        .unwrap()
        .contains("HTTP 500"));
    assert_eq!(
        reqwest::get(h.at("/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ready"
    );

    // A device gone from Hexnode becomes unmanaged once the grace period (1s) has passed.
    fleet.lock().unwrap().devices.clear();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let counts = sync(&h).await;
    assert_eq!(counts.removed, 1, "{counts:?}");
    let d = h.st.devices.load("hexnode-42").await.unwrap().unwrap();
    assert_eq!(d.state, stepgate_policy::DeviceState::Registered);
    assert_eq!(d.reported_compliance.map(|c| c.compliant), Some(false));
    assert_eq!(audit(&h.st, Some("device.unmanaged")).await.len(), 1);
}
