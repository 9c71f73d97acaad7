//! Signals end to end over real HTTP: GeoIP (a real `.mmdb` written here), zone matches and
//! impossible travel on live sign-ins from addresses set with `X-Forwarded-For` through a
//! trusted proxy; the device push API creating and updating devices idempotently with token
//! scopes enforced.

mod support;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use support::{audit, client, password, sha256_hex, upstream, user, Browser, Server, JANE};

const WRITER_TOKEN: &str = "writer-token-0123456789";
const READER_TOKEN: &str = "reader-token-0123456789";

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
server:
  trusted_proxies: [127.0.0.1]
sessions:
  cookie: { secure: false }
networks:
  paris-office: [198.51.100.0/24]
signals:
  geoip: { database: DB }
devices:
  sources:
    - { name: hexnode, kind: uem, token_sha256: WRITER, scopes: ["devices:write"] }
    - { name: auditor, kind: uem, token_sha256: READER, scopes: ["devices:read"] }
  compliance:
    policies:
      - { name: base, require_encryption: true }
policies:
  - name: impossible-travel
    priority: 10
    targets: { sign_in: true }
    conditions:
      - velocity: { above_kmpm: 15 }
    outcome: { deny: { message: Impossible travel since your last sign-in. } }
  - name: paris-office-no-mfa
    priority: 20
    targets: { sign_in: true }
    conditions:
      - network: { in: [paris-office] }
      - location: { countries: [FR], cities: [Paris] }
    outcome: allow
  - name: us-sign-in
    priority: 30
    targets: { sign_in: true }
    conditions:
      - location: { countries: [US] }
    outcome: allow
  - name: sign-in-mfa
    priority: 40
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 50
    outcome: allow
"#;

#[derive(Serialize)]
struct IsoCode {
    iso_code: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    names: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Named {
    names: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct CityRecord {
    country: IsoCode,
    subdivisions: Vec<IsoCode>,
    city: Named,
    location: Location,
}

fn city(country: &str, region: &str, name: &str, lat: f64, lon: f64) -> CityRecord {
    CityRecord {
        country: IsoCode {
            iso_code: country.into(),
            // The country's names as the database gives them (French too for France).
            names: match country {
                "FR" => BTreeMap::from([
                    ("en".to_string(), "France".to_string()),
                    ("fr".to_string(), "France".to_string()),
                ]),
                "GB" => BTreeMap::from([
                    ("en".to_string(), "United Kingdom".to_string()),
                    ("fr".to_string(), "Royaume-Uni".to_string()),
                ]),
                _ => BTreeMap::new(),
            },
        },
        subdivisions: vec![IsoCode {
            iso_code: region.into(),
            names: BTreeMap::new(),
        }],
        city: Named {
            names: BTreeMap::from([("en".to_string(), name.to_string())]),
        },
        location: Location {
            latitude: lat,
            longitude: lon,
            accuracy_radius: 20,
        },
    }
}

fn write_db(path: &std::path::Path) {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    w.insert(
        "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
        &city("FR", "IDF", "Paris", 48.8566, 2.3522),
    )
    .unwrap();
    w.insert(
        "203.0.113.0/24".parse::<ipnet::IpNet>().unwrap(),
        &city("US", "NY", "New York", 40.7128, -74.0060),
    )
    .unwrap();
    w.insert(
        "192.0.2.0/24".parse::<ipnet::IpNet>().unwrap(),
        &city("GB", "ENG", "London", 51.5072, -0.1276),
    )
    .unwrap();
    std::fs::write(path, w.to_bytes().unwrap()).unwrap();
}

async fn start() -> Server {
    start_with(CONFIG).await
}

async fn start_with(config: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("City.mmdb");
    write_db(&db);
    Server::build(config)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("DB", db.display())
        .with("WRITER", sha256_hex(WRITER_TOKEN))
        .with("READER", sha256_hex(READER_TOKEN))
        .in_dir(dir)
        .demo_users()
        .start()
        .await
}

/// A browser whose requests reach stepgate through the trusted proxy from `ip`.
fn browser(ip: &str) -> Browser {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-forwarded-for", ip.parse().unwrap());
    Browser::on(Default::default(), client().default_headers(h))
}

/// Submits jane's password; returns the final URL and page.
async fn jane_password(h: &Server, c: &Browser) -> (String, String) {
    let r = password(c, &h.at("/app"), &JANE).await;
    let url = r.url().to_string();
    (url, r.text().await.unwrap())
}

#[tokio::test]
async fn geoip_zones_and_impossible_travel_on_live_sign_ins() {
    let h = start().await;

    // From the Paris office: the zone and GeoIP city match, so no MFA is asked.
    let paris = browser("198.51.100.7");
    let (url, body) = jane_password(&h, &paris).await;
    assert!(
        url.ends_with("/app"),
        "signed straight in, got {url}: {body}"
    );
    assert_eq!(body, "upstream ok");

    // The same user from New York minutes later: faster than an airliner.
    let nyc = browser("203.0.113.9");
    let (url, body) = jane_password(&h, &nyc).await;
    assert!(url.contains("/_stepgate/blocked"), "got {url}: {body}");
    assert!(body.contains("Impossible travel"), "{body}");

    // The Paris session still works; the denial was audited with the risk reasons.
    let r = paris.get(format!("{}/app", h.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    let denied = audit(&h.st, Some("signin.denied")).await;
    assert_eq!(denied.len(), 1);
    let d = denied[0].detail.to_string();
    assert!(
        d.contains("impossible-travel") && d.contains("impossible_travel"),
        "{d}"
    );

    // The history holds the Paris success and the refused New York attempt.
    let user = user(&h.st, "jane").await;
    let hist =
        h.st.cache
            .sign_ins(&stepgate_server::access::signals::history_key(&user.id))
            .await
            .unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0].city.as_deref(), Some("Paris"));
    assert_eq!(hist[1].country.as_deref(), Some("US"));
}

/// The sessions page says roughly where each session signed in from, in words and in the
/// reader's language, and when it was last active (a `<time>` the page script shows in the
/// browser's own clock); the current session first and labelled.
#[tokio::test]
async fn the_sessions_page_names_the_place_in_words_and_the_current_session_first() {
    let h = start().await;
    let paris = browser("198.51.100.7");
    let (url, _) = jane_password(&h, &paris).await;
    assert!(url.ends_with("/app"), "{url}");
    let page = paris
        .get(h.at("/_stepgate/sessions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("near Paris, France"), "{page}");
    assert!(page.contains("Last active"), "{page}");
    let current = page
        .find("id=\"current-session\"")
        .expect("the current session marked");
    assert!(page[current..].contains("this browser (current session)"));
    assert!(
        page.contains("data-local-time=\"datetime\""),
        "times are shown in the reader's clock: {page}"
    );
    // The same page in French.
    let fr = paris
        .get(h.at("/_stepgate/sessions"))
        .header("accept-language", "fr-FR,fr;q=0.9")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(fr.contains("près de Paris, France"), "{fr}");
    assert!(fr.contains("<html lang=\"fr\">"), "{fr}");
    assert!(fr.contains("Dernière activité"), "{fr}");
}

#[tokio::test]
async fn a_velocity_below_a_threshold_matches_a_sign_in_from_where_the_last_one_was() {
    let config = CONFIG.replace(
        "  - name: sign-in-mfa\n",
        "  - name: same-place-again\n    priority: 35\n    targets: { sign_in: true }\n    conditions:\n      - velocity: { below_kmpm: 1 }\n    outcome: allow\n  - name: sign-in-mfa\n",
    );
    let h = start_with(&config).await;
    // The first sign-in from London has no velocity: MFA.
    let first = browser("192.0.2.10");
    let r = support::sign_in(&first, &format!("{}/app", h.base), &JANE, &JANE.code(0)).await;
    assert_eq!(r.text().await.unwrap(), "upstream ok");
    // From London again: 0 km/min, below 1, the password alone.
    let again = browser("192.0.2.11");
    let (url, body) = jane_password(&h, &again).await;
    assert!(
        url.ends_with("/app"),
        "signed straight in, got {url}: {body}"
    );
    let signed_in = audit(&h.st, Some("signin.success")).await;
    assert_eq!(
        signed_in.last().unwrap().detail["policy"],
        "same-place-again"
    );
}

#[tokio::test]
async fn a_location_by_part_of_a_city_name_matches_a_live_sign_in() {
    let config = CONFIG.replace(
        "  - name: sign-in-mfa\n",
        "  - name: any-york\n    priority: 35\n    targets: { sign_in: true }\n    conditions:\n      - location: { city_contains: [york], places: [\"GB/ENG/Bristol\"] }\n    outcome: allow\n  - name: sign-in-mfa\n",
    ).replace("  - name: us-sign-in\n    priority: 30\n", "  - name: us-sign-in\n    priority: 30\n    enabled: false\n");
    let h = start_with(&config).await;
    // London neither contains it nor is the place named: MFA.
    let (url, _) = jane_password(&h, &browser("192.0.2.10")).await;
    assert!(url.contains("/_stepgate/step-up"), "{url}");
    // New York contains "york": the password alone.
    let (url, body) = jane_password(&h, &browser("203.0.113.9")).await;
    assert!(
        url.ends_with("/app"),
        "signed straight in, got {url}: {body}"
    );
    assert_eq!(
        audit(&h.st, Some("signin.success")).await[0].detail["policy"],
        "any-york"
    );
}

fn ago(minutes: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
}

async fn put(h: &Server, token: Option<&str>, body: serde_json::Value) -> (u16, serde_json::Value) {
    let mut r = reqwest::Client::new()
        .put(format!("{}/_stepgate/api/devices/posture", h.base))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

/// `GET /api/devices/{id}` with the bearer `token`.
async fn read_device(h: &Server, token: &str, id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(h.at(&format!("/_stepgate/api/devices/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn device_push_api_is_idempotent_and_scoped() {
    let h = start().await;
    let push = json!({
        "device_id": "mac-0042", "owner": "jane", "platform": "macOS", "os_version": "15.1",
        "state": "managed", "posture": {"encrypted": true, "firewall": true},
        "observed_at": ago(120)
    });
    // No token, an unknown token, and a token without the write scope.
    assert_eq!(put(&h, None, push.clone()).await.0, 401);
    assert_eq!(put(&h, Some("nope"), push.clone()).await.0, 401);
    let (s, b) = put(&h, Some(READER_TOKEN), push.clone()).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.to_string().contains("devices:write"), "{b}");

    let (s, b) = put(&h, Some(WRITER_TOKEN), push.clone()).await;
    assert_eq!((s, b["result"].as_str()), (200, Some("created")), "{b}");
    let (s, b) = put(&h, Some(WRITER_TOKEN), push.clone()).await;
    assert_eq!((s, b["result"].as_str()), (200, Some("unchanged")), "{b}");

    // A bulk push updates it (newer observation) and ignores an older one.
    let (s, b) = put(
        &h,
        Some(WRITER_TOKEN),
        json!({"devices": [
            {"device_id": "mac-0042", "posture": {"encrypted": false}, "observed_at": ago(60)},
            {"device_id": "mac-0042", "posture": {"encrypted": true}, "observed_at": ago(180)},
            {"device_id": "win-7", "owner": "john", "state": "managed_edr"}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results[0]["result"], "updated");
    assert_eq!(results[1]["result"], "stale");
    assert!(
        results[2]["error"].as_str().unwrap().contains("max_state"),
        "{b}"
    );

    // Reading needs devices:read; the verdict names the failing check.
    let r = read_device(&h, WRITER_TOKEN, "mac-0042").await;
    assert_eq!(r.status().as_u16(), 403);
    let r = read_device(&h, READER_TOKEN, "mac-0042").await;
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["device"]["posture"]["encrypted"], "false");
    assert_eq!(b["device"]["platform"], "macos");
    assert_eq!(b["device"]["source"], "hexnode");
    assert!(
        b["compliance"]["failing"]
            .to_string()
            .contains("disk_encryption"),
        "{b}"
    );
    let r = read_device(&h, READER_TOKEN, "none").await;
    assert_eq!(r.status().as_u16(), 404);

    // Every change was audited; the repeat was not a change.
    assert_eq!(audit(&h.st, Some("device.posture")).await.len(), 2);
}

#[tokio::test]
async fn a_device_push_cannot_touch_stepgates_own_records() {
    let h = start().await;
    let keys_id = stepgate_server::gateway::assertion::KEYS_RECORD;
    assert!(stepgate_signals::device::is_reserved_id(keys_id));
    let before =
        h.st.stores
            .durable
            .get_device(keys_id)
            .await
            .unwrap()
            .expect("the assertion key set is stored");
    // The signing key set shares the device table: a UEM naming its id is refused, alone
    // or in a bulk push, and the key set is left as it was.
    let push = json!({"device_id": keys_id, "owner": "jane", "posture": {"encrypted": true}});
    let (s, b) = put(&h, Some(WRITER_TOKEN), push.clone()).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("reserves"), "{b}");
    let (s, b) = put(&h, Some(WRITER_TOKEN), json!({"devices": [push]})).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("reserves"),
        "{b}"
    );
    let after =
        h.st.stores
            .durable
            .get_device(keys_id)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(after.data, before.data, "the key set is untouched");
    // Nor can it be read through the device API.
    let r = read_device(&h, READER_TOKEN, keys_id).await;
    assert_eq!(r.status().as_u16(), 404);
}
