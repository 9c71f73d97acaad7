//! Hostile Hexnode answers (too large, too many devices, duplicates, foreign mail
//! domains, …) change nothing they should not.

use serde_json::{json, Value};

use crate::common::*;
use crate::support::hexnode::{device, now_s, Hexnode};

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
