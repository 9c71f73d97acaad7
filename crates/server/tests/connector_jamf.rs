//! The Jamf Pro connector against a recording Jamf Pro on loopback, answering in its
//! documented shapes: `POST /api/oauth/token` (API client credentials) →
//! `{"access_token", "token_type", "expires_in"}`, `GET /api/v1/computers-inventory` paged
//! by `page` / `page-size` as `{"totalCount", "results"}` with the sections asked for, and
//! the conditional-access compliance information per computer. A 500 mid-sync is retried;
//! a computer Jamf has no compliance state for is not taken as compliant.

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
policies:
  - { name: everyone, priority: 50, outcome: allow }
"#;

#[derive(Default)]
struct Jamf {
    computers: Vec<Value>,
    /// Conditional-access state per computer id (absent: 404).
    compliance: std::collections::BTreeMap<String, &'static str>,
    token: Option<String>,
    pages: Vec<String>,
    fail_next_page: bool,
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
        .take(size)
        .cloned()
        .collect();
    Json(json!({"totalCount": j.computers.len(), "results": results})).into_response()
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

#[tokio::test]
async fn inventory_pages_sections_and_compliance_map_to_devices() {
    let j = Shared::default();
    {
        let mut s = j.lock().unwrap();
        s.computers = vec![
            computer("1", "jane", true),
            computer("2", "bob", false),
            computer("3", "carol", true),
        ];
        s.compliance.insert("1".into(), "COMPLIANT");
        s.compliance.insert("2".into(), "NON_COMPLIANT");
        s.fail_next_page = true;
    }
    let app = axum::Router::new()
        .route("/api/oauth/token", post(token))
        .route("/api/v1/computers-inventory", get(inventory))
        .route(
            "/api/v1/conditional-access/device-compliance-information/computer/{id}",
            get(compliance),
        )
        .with_state(j.clone());
    let addr = upstream::serve(app).await;
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
}
