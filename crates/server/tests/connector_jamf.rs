//! The Jamf Pro connector against a recording Jamf Pro on loopback, answering in its
//! documented shapes: `POST /api/oauth/token` (API client credentials) →
//! `{"access_token", "token_type", "expires_in"}`, `GET /api/v1/computers-inventory` paged
//! by `page` / `page-size` as `{"totalCount", "results"}` with the sections asked for, and
//! the conditional-access compliance information per computer. A 500 mid-sync is retried;
//! a computer Jamf has no compliance state for is not taken as compliant. iPhones and iPads
//! come from `GET /api/v2/mobile-devices/detail` (sections GENERAL, HARDWARE,
//! USER_AND_LOCATION, SECURITY; same paging), with their own conditional-access path, and
//! "Re-check my device" reads one by the listing's `filter`.

mod support;

use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use stepgate_server::devices::connectors::Connectors;
use support::{upstream, Server};

const SECRET: &str = "jamf-api-client-secret";

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
devices:
  compliance:
    policies:
      - { name: macs, platforms: [macos], require_encryption: true, require_firewall: true }
  connectors:
    - name: jamf
      kind: jamf
      url: http://JAMF
      client_id: 6f1d-stepgate
      secret: { file: jamf.secret }
      interval: 1h
      page_size: 2
      backoff: 10ms
      owner_match: local_part
      owner_domains: [example.com]
policies:
  - { name: everyone, priority: 50, outcome: allow }
"#;

#[derive(Default)]
struct Jamf {
    computers: Vec<Value>,
    mobiles: Vec<Value>,
    /// The query of every mobile-device listing.
    mobile_queries: Vec<String>,
    /// Conditional-access state per computer id (absent: 404).
    compliance: std::collections::BTreeMap<String, &'static str>,
    token: Option<String>,
    pages: Vec<String>,
    fail_next_page: bool,
    /// Answer one computer more than `page-size` asked for.
    oversize: bool,
}

type Shared = Arc<Mutex<Jamf>>;

async fn token(State(j): State<Shared>, Form(f): Form<Vec<(String, String)>>) -> Response {
    let has = |k: &str, v: &str| f.iter().any(|(a, b)| a == k && b == v);
    if !(has("grant_type", "client_credentials")
        && has("client_id", "6f1d-stepgate")
        && has("client_secret", SECRET))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let t = "jamf-access-token-1".to_string();
    j.lock().unwrap().token = Some(t.clone());
    Json(json!({"access_token": t, "scope": "api-role:stepgate", "token_type": "Bearer", "expires_in": 299}))
        .into_response()
}

fn authorized(j: &Jamf, h: &HeaderMap) -> bool {
    let want = j.token.as_ref().map(|t| format!("Bearer {t}"));
    h.get("authorization").and_then(|v| v.to_str().ok()) == want.as_deref()
}

async fn inventory(State(j): State<Shared>, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let mut j = j.lock().unwrap();
    if !authorized(&j, &h) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"httpStatus": 401, "errors": []})),
        )
            .into_response();
    }
    if j.fail_next_page {
        j.fail_next_page = false;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"httpStatus": 500, "errors": []})),
        )
            .into_response();
    }
    let q = q.unwrap_or_default();
    j.pages.push(q.clone());
    let param = |k: &str| {
        q.split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let (page, size) = (
        param("page").unwrap_or(0),
        param("page-size").unwrap_or(100),
    );
    let results: Vec<Value> = j
        .computers
        .iter()
        .skip(page * size)
        .take(size + usize::from(j.oversize))
        .cloned()
        .collect();
    Json(json!({"totalCount": j.computers.len(), "results": results})).into_response()
}

/// `GET /api/v2/mobile-devices/detail`: paged like the computers, sorted by id, and
/// `filter=mobileDeviceId=="N"` for one device.
async fn mobile_inventory(
    State(j): State<Shared>,
    h: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let mut j = j.lock().unwrap();
    if !authorized(&j, &h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let q = q.unwrap_or_default();
    j.mobile_queries.push(q.clone());
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let page: usize = param("page").and_then(|v| v.parse().ok()).unwrap_or(0);
    let size: usize = param("page-size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let wanted = param("filter").map(|f| {
        f.strip_prefix("mobileDeviceId==\"")
            .and_then(|r| r.strip_suffix('"'))
            .expect("the only filter stepgate sends")
            .to_string()
    });
    let all: Vec<Value> = j
        .mobiles
        .iter()
        .filter(|d| wanted.as_deref().is_none_or(|w| d["mobileDeviceId"] == w))
        .cloned()
        .collect();
    let results: Vec<Value> = all.iter().skip(page * size).take(size).cloned().collect();
    Json(json!({"totalCount": all.len(), "results": results})).into_response()
}

async fn compliance(State(j): State<Shared>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let j = j.lock().unwrap();
    if !authorized(&j, &h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match j.compliance.get(&id) {
        Some(state) => Json(json!([{
            "deviceId": id, "applicable": true, "complianceState": state,
            "complianceVendor": "Microsoft Intune",
            "complianceVendorDeviceInformation": {"deviceIds": ["aad-device"]}
        }]))
        .into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"httpStatus": 404}))).into_response(),
    }
}

/// A mobile device in the inventory's shape (`MobileDeviceResponse`).
fn mobile(id: &str, email: &str, good: bool) -> Value {
    json!({
        "mobileDeviceId": id, "deviceType": "iOS",
        "general": {"displayName": format!("iPhone {id}"), "osVersion": "18.1", "osBuild": "22B83",
                    "managed": true, "supervised": good,
                    "lastInventoryUpdateDate": "2026-12-06T03:00:00.000Z"},
        "hardware": {"model": "iPhone 16", "serialNumber": format!("F2LMOB{id}")},
        "userAndLocation": {"username": "jane", "realName": "Jane", "emailAddress": email},
        "security": {"dataProtected": true, "passcodePresent": good, "passcodeCompliant": good,
                     "hardwareEncryption": 3, "activationLockEnabled": false,
                     "jailBreakDetected": !good},
    })
}

fn computer(id: &str, email: &str, encrypted: bool) -> Value {
    json!({
        "id": id, "udid": format!("UDID-{id}"),
        "general": {"name": format!("mac-{id}"), "lastContactTime": "2026-12-06T03:00:00.000Z",
                    "platform": "Mac", "remoteManagement": {"managed": true, "managementUsername": "jamfadmin"}},
        "diskEncryption": {"bootPartitionEncryptionDetails": {"partitionName": "Macintosh HD (Boot Partition)",
            "partitionFileVault2State": if encrypted { "ENCRYPTED" } else { "UNENCRYPTED" }, "partitionFileVault2Percent": 100}},
        "operatingSystem": {"name": "macOS", "version": "15.1", "build": "24B83"},
        "security": {"sipStatus": "ENABLED", "gatekeeperStatus": "APP_STORE_AND_IDENTIFIED_DEVELOPERS", "firewallEnabled": true},
        "hardware": {"model": "MacBook Pro (14-inch, 2023)", "serialNumber": format!("C02JAMF{id}")},
        "userAndLocation": {"username": "jane", "realname": "Jane", "email": email},
    })
}

fn router(j: &Shared) -> axum::Router {
    axum::Router::new()
        .route("/api/oauth/token", post(token))
        .route("/api/v1/computers-inventory", get(inventory))
        .route("/api/v2/mobile-devices/detail", get(mobile_inventory))
        .route(
            "/api/v1/conditional-access/device-compliance-information/computer/{id}",
            get(compliance),
        )
        .route(
            "/api/v1/conditional-access/device-compliance-information/mobile/{id}",
            get(compliance),
        )
        .with_state(j.clone())
}

#[tokio::test]
async fn inventory_pages_sections_and_compliance_map_to_devices() {
    let j = Shared::default();
    {
        let mut s = j.lock().unwrap();
        s.computers = vec![
            computer("1", "jane@example.com", true),
            computer("2", "bob@example.com", false),
            computer("3", "carol@example.com", true),
        ];
        s.compliance.insert("1".into(), "COMPLIANT");
        s.compliance.insert("2".into(), "NON_COMPLIANT");
        s.mobiles = vec![
            mobile("7", "jane@example.com", true),
            mobile("8", "jane@example.com", false),
            mobile("9", "bob@example.com", true),
        ];
        s.compliance.insert("7".into(), "COMPLIANT");
        s.compliance.insert("8".into(), "NON_COMPLIANT");
        s.compliance.insert("9".into(), "UNKNOWN");
        s.fail_next_page = true;
    }
    let addr = upstream::serve(router(&j)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jamf.secret"), SECRET).unwrap();
    let h = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("ok").await)
        .with("JAMF", addr)
        .in_dir(dir)
        .start()
        .await;
    let r = Connectors::sync(&h.st, Some("jamf"), true).await;
    r[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));

    {
        let s = j.lock().unwrap();
        // Two pages of two (after the 500 was retried), each asking for the sections mapped.
        let last_two: Vec<&String> = s.pages.iter().rev().take(2).collect();
        assert!(
            last_two.iter().any(|q| q.contains("page=1")),
            "{:?}",
            s.pages
        );
        for section in ["GENERAL", "DISK_ENCRYPTION", "OPERATING_SYSTEM", "SECURITY"] {
            assert!(
                s.pages[0].contains(&format!("section={section}")),
                "{}",
                s.pages[0]
            );
        }
    }
    let load = |id: &'static str| {
        let st = h.st.clone();
        async move { st.devices.load(id).await.unwrap().unwrap() }
    };
    let rt = h.st.runtime.load_full();
    let verdict = |d: &stepgate_signals::Device| {
        d.compliance(
            &rt.config.compliance_policies,
            std::time::Duration::from_secs(86_400 * 3650),
            chrono::Utc::now(),
        )
    };
    let jane = load("jamf-1").await;
    assert_eq!(jane.owner.as_deref(), Some("jane"));
    assert_eq!(jane.platform.as_deref(), Some("macos"));
    assert_eq!(jane.serial_number.as_deref(), Some("C02JAMF1"));
    assert_eq!(jane.posture["encrypted"].0, "true");
    assert_eq!(jane.posture["firewall"].0, "true");
    assert_eq!(verdict(&jane).compliant, Some(true));
    // Not encrypted and reported non-compliant: two failing checks.
    let bob = load("jamf-2").await;
    let v = verdict(&bob);
    assert_eq!(v.compliant, Some(false));
    let ids: Vec<&str> = v.failing.iter().map(|f| f.id.as_str()).collect();
    assert!(
        ids.contains(&"disk_encryption") && ids.contains(&"uem_compliance"),
        "{ids:?}"
    );
    // No compliance information in Jamf: not compliant, with the reason.
    let carol = load("jamf-3").await;
    let rc = carol.reported_compliance.unwrap();
    assert!(!rc.compliant);
    assert_eq!(
        rc.reason.as_deref(),
        Some("jamf has no compliance state for this device yet")
    );

    // iPhones: their own listing (paged by 2, the four sections), ids `jamf-mobile-N`,
    // bound to their users like the computers.
    {
        let s = j.lock().unwrap();
        let listings: Vec<&String> = s
            .mobile_queries
            .iter()
            .filter(|q| !q.contains("filter"))
            .collect();
        assert_eq!(listings.len(), 2, "{:?}", s.mobile_queries);
        for section in ["GENERAL", "HARDWARE", "USER_AND_LOCATION", "SECURITY"] {
            assert!(
                listings[0].contains(&format!("section={section}")),
                "{}",
                listings[0]
            );
        }
        assert!(listings[1].contains("page=1"), "{}", listings[1]);
    }
    let good = load("jamf-mobile-7").await;
    assert_eq!(good.owner.as_deref(), Some("jane"));
    assert_eq!(good.platform.as_deref(), Some("ios"));
    assert_eq!(good.os.as_deref(), Some("iOS"));
    assert_eq!(good.os_version.as_deref(), Some("18.1"));
    assert_eq!(good.serial_number.as_deref(), Some("F2LMOB7"));
    assert_eq!(good.hostname.as_deref(), Some("iPhone 7"));
    assert_eq!(good.state, stepgate_policy::DeviceState::Managed);
    for (attr, want) in [
        ("supervised", "true"),
        ("encrypted", "true"),
        ("screen_lock", "true"),
        ("password_compliant", "true"),
        ("jailbroken", "false"),
    ] {
        assert_eq!(good.posture[attr].0, want, "{attr}");
    }
    assert_eq!(verdict(&good).compliant, Some(true));
    let bad = load("jamf-mobile-8").await;
    for (attr, want) in [
        ("supervised", "false"),
        ("screen_lock", "false"),
        ("password_compliant", "false"),
        ("jailbroken", "true"),
    ] {
        assert_eq!(bad.posture[attr].0, want, "{attr}");
    }
    assert_eq!(verdict(&bad).compliant, Some(false));
    // Jamf's UNKNOWN state is no verdict: not compliant, and not "failing" either.
    let unknown = load("jamf-mobile-9").await;
    assert_eq!(unknown.owner.as_deref(), Some("bob"));
    assert_eq!(
        unknown.reported_compliance.unwrap().reason.as_deref(),
        Some("jamf has no compliance state for this device yet")
    );
    // Jane's devices: her Mac and her two iPhones.
    let mut mine: Vec<String> =
        h.st.stores
            .durable
            .list_devices("jane")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
    mine.sort();
    assert_eq!(
        mine,
        ["jamf-1", "jamf-mobile-7", "jamf-mobile-8"],
        "{mine:?}"
    );

    // Fixed in Jamf and re-checked: the one device is read through the listing's filter.
    {
        let mut s = j.lock().unwrap();
        s.mobiles[1] = mobile("8", "jane@example.com", true);
        s.compliance.insert("8".into(), "COMPLIANT");
    }
    assert_eq!(
        Connectors::recheck(&h.st, "jamf-mobile-8").await,
        Some(true)
    );
    assert!(j
        .lock()
        .unwrap()
        .mobile_queries
        .last()
        .unwrap()
        .contains("filter=mobileDeviceId%3D%3D%228%22"));
    let fixed = load("jamf-mobile-8").await;
    assert_eq!(fixed.posture["jailbroken"].0, "false");
    assert_eq!(verdict(&fixed).compliant, Some(true));

    // A page with more computers than `page-size` asked for: the sync fails and changes
    // nothing (Jamf documents `page-size`, so more is a fault, not a portal default).
    j.lock().unwrap().oversize = true;
    let r = Connectors::sync(&h.st, Some("jamf"), true).await;
    let e = r[0].1.as_ref().unwrap_err().to_string();
    assert!(
        e.contains("3 devices on one page, more than the 2 asked for"),
        "{e}"
    );
}
