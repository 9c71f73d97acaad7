//! A successful and a failing sync move exactly their series, and promtool accepts
//! the scrape.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::support::hexnode::{device, now_s, Hexnode};
use crate::support::prom;

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
