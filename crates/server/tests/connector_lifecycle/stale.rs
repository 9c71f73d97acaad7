//! A connector failing longer than its `stale_after` blocks its devices until it syncs
//! again; another node's successful sync in the store keeps them fresh.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::support::hexnode::{device, now_s, Hexnode};
use crate::support::prom;
use crate::support::{sign_in, Browser, Page, Server, JANE};

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
