//! The Intune connector against a recording Microsoft Graph and Entra token endpoint on
//! loopback, answering in Graph's documented shapes: a client-credentials token
//! (`{"token_type", "expires_in", "access_token"}`), `managedDevices` pages as
//! `{"value": [...], "@odata.nextLink": …}`, `deviceCompliancePolicyStates` naming the
//! failing policies, `401 InvalidAuthenticationToken` once a token has expired and `429`
//! with `Retry-After` when throttling. Then through the live server: the device Intune
//! calls non-compliant denies its user's session on the next request, with the policy name.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use stepgate_server::devices::connectors::{Connectors, SyncCounts};
use support::{sign_in, upstream, Browser, Server, JANE};

const SECRET: &str = "entra-client-secret-for-tests";
const DEVICE_KEY: &str = "device-cookie-key-for-tests-0123456789abcdef";
const JANES: &str = "0f5c6b1e-0000-4000-8000-000000000042";

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
    - name: intune
      kind: intune
      url: http://GRAPH
      token_url: http://GRAPH/tenant-id/oauth2/v2.0/token
      client_id: stepgate-app
      secret: { file: intune.secret }
      interval: 1h
      page_size: 2
      backoff: 10ms
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

#[derive(Default)]
struct Graph {
    base: String,
    devices: Vec<Value>,
    /// Failing policy names per device id.
    failing: BTreeMap<String, Vec<&'static str>>,
    /// Tokens issued; only the last one is valid.
    tokens: Vec<String>,
    /// Token requests whose form was right.
    token_forms_ok: usize,
    /// Every managedDevices listing query.
    listings: Vec<BTreeMap<String, String>>,
    /// Answer the next listing with 429 + Retry-After: 1.
    throttle_once: bool,
    /// Answer the next request for a second page with 500.
    fail_next_page: bool,
    /// Single-device reads (`GET managedDevices/{id}`).
    reads: usize,
}

type Shared = Arc<Mutex<Graph>>;

async fn token(State(g): State<Shared>, Form(f): Form<BTreeMap<String, String>>) -> Response {
    let ok = f.get("grant_type").map(String::as_str) == Some("client_credentials")
        && f.get("client_id").map(String::as_str) == Some("stepgate-app")
        && f.get("scope").map(String::as_str) == Some("https://graph.microsoft.com/.default");
    if !ok || f.get("client_secret").map(String::as_str) != Some(SECRET) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})),
        )
            .into_response();
    }
    let mut g = g.lock().unwrap();
    g.token_forms_ok += 1;
    let t = format!("eyJ0eXAi.token-{}", g.tokens.len());
    g.tokens.push(t.clone());
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": t}))
        .into_response()
}

fn bearer_ok(g: &Graph, h: &HeaderMap) -> bool {
    let want = g.tokens.last().map(|t| format!("Bearer {t}"));
    h.get("authorization").and_then(|v| v.to_str().ok()) == want.as_deref()
}

fn expired() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid."}})),
    )
        .into_response()
}

async fn managed_devices(
    State(g): State<Shared>,
    h: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut g = g.lock().unwrap();
    if !bearer_ok(&g, &h) {
        return expired();
    }
    if g.throttle_once {
        g.throttle_once = false;
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": {"code": "TooManyRequests"}})),
        )
            .into_response();
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    if g.fail_next_page && q.contains_key("$skiptoken") {
        g.fail_next_page = false;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"code": "InternalServerError"}})),
        )
            .into_response();
    }
    g.listings.push(q.clone());
    let top: usize = q.get("$top").and_then(|t| t.parse().ok()).unwrap_or(100);
    let skip: usize = q
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let since = q
        .get("$filter")
        .and_then(|f| f.strip_prefix("lastSyncDateTime ge "))
        .map(|t| t.to_string());
    let all: Vec<Value> = g
        .devices
        .iter()
        .filter(|d| {
            since
                .as_deref()
                .is_none_or(|s| d["lastSyncDateTime"].as_str().unwrap() >= s)
        })
        .cloned()
        .collect();
    let page: Vec<Value> = all.iter().skip(skip).take(top).cloned().collect();
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/managedDevices",
        "value": page,
    });
    if skip + top < all.len() {
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0/deviceManagement/managedDevices?$top={top}&$skiptoken={}",
            g.base,
            skip + top
        ));
    }
    Json(body).into_response()
}

async fn one_device(State(g): State<Shared>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let mut g = g.lock().unwrap();
    if !bearer_ok(&g, &h) {
        return expired();
    }
    g.reads += 1;
    match g.devices.iter().find(|d| d["id"] == id.as_str()) {
        Some(d) => Json(d.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "ResourceNotFound"}})),
        )
            .into_response(),
    }
}

async fn policy_states(State(g): State<Shared>, h: HeaderMap, Path(id): Path<String>) -> Response {
    let g = g.lock().unwrap();
    if !bearer_ok(&g, &h) {
        return expired();
    }
    let names = g.failing.get(&id).cloned().unwrap_or_default();
    let mut value: Vec<Value> = names
        .iter()
        .map(|n| json!({"id": format!("p-{n}"), "displayName": n, "state": "nonCompliant", "platformType": "windows10AndLater", "settingCount": 3}))
        .collect();
    value.push(json!({"id": "p-ok", "displayName": "Defender on", "state": "compliant", "platformType": "windows10AndLater", "settingCount": 1}));
    Json(json!({"value": value})).into_response()
}

fn device(id: &str, upn: &str, state: &str, synced: &str) -> Value {
    json!({
        "id": id, "deviceName": format!("PC-{}", &id[..4]), "userPrincipalName": upn,
        "operatingSystem": "Windows", "osVersion": "10.0.22631.4460", "model": "Surface Laptop 5",
        "serialNumber": "0F33XYZ", "complianceState": state, "isEncrypted": true,
        "jailBroken": "Unknown", "managementState": "managed", "lastSyncDateTime": synced,
        "azureADDeviceId": "aad-1",
    })
}

fn at(offset: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::seconds(offset))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn graph(g: &Shared) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    g.lock().unwrap().base = format!("http://{addr}");
    let app = axum::Router::new()
        .route("/tenant-id/oauth2/v2.0/token", post(token))
        .route(
            "/v1.0/deviceManagement/managedDevices",
            get(managed_devices),
        )
        .route(
            "/v1.0/deviceManagement/managedDevices/{id}",
            get(one_device),
        )
        .route(
            "/v1.0/deviceManagement/managedDevices/{id}/deviceCompliancePolicyStates",
            get(policy_states),
        )
        .with_state(g.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

async fn start(g: &Shared, secret: &str) -> Server {
    std::env::set_var("STEPGATE_TEST_DEVICE_KEY", DEVICE_KEY);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("intune.secret"), secret).unwrap();
    let addr = graph(g).await;
    Server::build(CONFIG)
        .in_dir(dir)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("GRAPH", addr)
        .demo_users()
        .start()
        .await
}

async fn sync(h: &Server) -> Result<SyncCounts, String> {
    let mut r = Connectors::sync(&h.st, Some("intune"), false).await;
    r.remove(0).1.map_err(|e| e.to_string())
}

async fn settled(h: &Server) {
    for _ in 0..200 {
        let s = &h.st.connectors.status()["intune"];
        if s.last_success.is_some() || s.consecutive_errors > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the start-up sync never finished");
}

#[tokio::test]
async fn graph_paging_tokens_throttling_and_a_non_compliant_device_denied() {
    let g = Shared::default();
    {
        let mut s = g.lock().unwrap();
        s.devices = vec![
            device(JANES, "jane@example.com", "compliant", &at(-3600)),
            device(
                "1b2c0000-0000-4000-8000-000000000001",
                "bob@example.com",
                "noncompliant",
                &at(-3600),
            ),
            device(
                "2c3d0000-0000-4000-8000-000000000002",
                "carol@example.com",
                "inGracePeriod",
                &at(-3600),
            ),
        ];
        s.failing.insert(
            "1b2c0000-0000-4000-8000-000000000001".into(),
            vec!["BitLocker required"],
        );
    }
    let h = start(&g, SECRET).await;
    settled(&h).await;

    // The start-up sync: one token, two pages (nextLink followed), no $filter (full).
    {
        let s = g.lock().unwrap();
        assert_eq!(s.token_forms_ok, 1);
        assert_eq!(s.listings.len(), 2, "{:?}", s.listings);
        assert!(!s.listings[0].contains_key("$filter"));
        assert!(s.listings[0]["$select"].contains("complianceState"));
        assert_eq!(s.listings[0]["$top"], "2");
    }
    let bob =
        h.st.devices
            .load("intune-1b2c0000-0000-4000-8000-000000000001")
            .await
            .unwrap()
            .unwrap();
    let rc = bob.reported_compliance.unwrap();
    assert!(!rc.compliant);
    assert_eq!(
        rc.reason.as_deref(),
        Some("Failing in intune: BitLocker required")
    );
    let carol =
        h.st.devices
            .load("intune-2c3d0000-0000-4000-8000-000000000002")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(carol.reported_compliance.map(|c| c.compliant), Some(true));

    // Jane signs in on her Intune device.
    let signer = stepgate_signals::device::DeviceCookieSigner::new(DEVICE_KEY.as_bytes()).unwrap();
    let b = Browser::new();
    b.jar.add_cookie_str(
        &format!(
            "sg-device={}; Path=/",
            signer.issue(&format!("intune-{JANES}"), chrono::Utc::now())
        ),
        &h.base.parse().unwrap(),
    );
    let r = sign_in(&b, &h.at("/app"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");

    // The token expires and Graph throttles once; Jane's device goes non-compliant.
    {
        let mut s = g.lock().unwrap();
        s.tokens.push("revoked".into());
        s.throttle_once = true;
        s.devices[0] = device(JANES, "jane@example.com", "noncompliant", &at(0));
        s.failing.insert(JANES.into(), vec!["Windows 11 baseline"]);
    }
    let counts = sync(&h).await.unwrap();
    assert_eq!(
        (counts.changed, counts.now_non_compliant),
        (1, 1),
        "{counts:?}"
    );
    {
        let s = g.lock().unwrap();
        assert_eq!(s.token_forms_ok, 2, "a new token after the 401");
        // Incremental: filtered on lastSyncDateTime, so only Jane's device came back.
        let last = s.listings.last().unwrap();
        assert!(
            last["$filter"].starts_with("lastSyncDateTime ge "),
            "{last:?}"
        );
    }
    let r = b.get(h.at("/app")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let page = support::Page::read(r).await;
    assert!(
        page.html.contains("Failing in intune: Windows 11 baseline"),
        "{}",
        page.html
    );

    // Fixed in Intune; "Re-check my device" reads the one device from Graph and lets her in.
    {
        let mut s = g.lock().unwrap();
        s.devices[0] = device(JANES, "jane@example.com", "compliant", &at(1));
        s.failing.remove(JANES);
    }
    let r = page.submit(&b, "/_stepgate/recheck", &[]).await;
    assert_eq!(g.lock().unwrap().reads, 1, "re-check read the device");
    assert_eq!(r.text().await.unwrap(), "upstream ok");
}

#[tokio::test]
async fn a_500_on_a_later_page_is_retried_and_the_listing_completes() {
    let g = Shared::default();
    let id = |i: usize| format!("{i:04}0000-0000-4000-8000-00000000000{i}");
    g.lock().unwrap().devices = (0..5)
        .map(|i| device(&id(i), "x@example.com", "compliant", &at(-60)))
        .collect();
    let h = start(&g, SECRET).await;
    settled(&h).await;
    g.lock().unwrap().fail_next_page = true;
    let r = Connectors::sync(&h.st, Some("intune"), true).await;
    r[0].1.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(!g.lock().unwrap().fail_next_page, "the 500 was served");
    for i in 0..5 {
        let d = format!("intune-{}", id(i));
        assert!(h.st.devices.load(&d).await.unwrap().is_some(), "{d}");
    }
}

#[tokio::test]
async fn a_wrong_client_secret_fails_the_sync_without_showing_it() {
    let g = Shared::default();
    g.lock()
        .unwrap()
        .devices
        .push(device(JANES, "jane@example.com", "compliant", &at(-60)));
    let h = start(&g, "not-the-secret").await;
    settled(&h).await;
    let e = sync(&h).await.unwrap_err();
    assert!(e.contains("refused the credentials"), "{e}");
    assert!(e.contains("client secret"), "{e}");
    assert!(!e.contains("not-the-secret"), "{e}");
    assert!(h
        .st
        .devices
        .load(&format!("intune-{JANES}"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(h.st.connectors.status()["intune"].consecutive_errors, 2);
}
