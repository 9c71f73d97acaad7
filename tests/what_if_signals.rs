//! `stepgate what-if` with the live signals: GeoIP from a real `.mmdb`, zone matches, and
//! impossible travel scored from a sign-in history.

use std::collections::BTreeMap;
use std::process::Command;

use serde::Serialize;

#[derive(Serialize)]
struct IsoCode {
    iso_code: String,
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
        },
        subdivisions: vec![IsoCode {
            iso_code: region.into(),
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

const CONFIG: &str = r#"
signals:
  geoip: { database: City.mmdb }
networks:
  paris-office: [198.51.100.0/24]
policies:
  - name: impossible-travel
    priority: 10
    targets: { sign_in: true }
    conditions: [ { velocity: { above_kmpm: 15 } } ]
    outcome: { deny: { message: Impossible travel. } }
  - name: paris-office
    priority: 20
    targets: { sign_in: true }
    conditions: [ { network: { in: [paris-office] } }, { location: { cities: [Paris] } } ]
    outcome: allow
  - name: from-the-us
    priority: 30
    targets: { sign_in: true }
    conditions: [ { location: { countries: [US] } } ]
    outcome: { step_up: { min_aal: 2 } }
"#;

fn what_if(dir: &std::path::Path, ctx: &str, history: Option<&str>) -> serde_json::Value {
    std::fs::write(dir.join("ctx.json"), ctx).unwrap();
    let mut args = vec![
        "what-if".to_string(),
        "--config".into(),
        dir.join("stepgate.yaml").display().to_string(),
        "--context".into(),
        dir.join("ctx.json").display().to_string(),
        "--json".into(),
    ];
    if let Some(h) = history {
        std::fs::write(dir.join("history.json"), h).unwrap();
        args.push("--history".into());
        args.push(dir.join("history.json").display().to_string());
    }
    let o = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn geoip_zones_and_impossible_travel_through_what_if() {
    let dir = tempfile::tempdir().unwrap();
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
    std::fs::write(dir.path().join("City.mmdb"), w.to_bytes().unwrap()).unwrap();
    std::fs::write(dir.path().join("stepgate.yaml"), CONFIG).unwrap();

    // Paris, in the office zone: located by GeoIP, matched by zone and city.
    let v = what_if(
        dir.path(),
        r#"{"kind": "sign_in", "user": {"username": "jane"}, "network": {"ip": "198.51.100.7"}}"#,
        None,
    );
    assert_eq!(v["context"]["network"]["city"], "Paris");
    assert_eq!(v["outcome"], "allow");
    assert_eq!(v["policy"], "paris-office");

    // New York with no history: located, stepped up by country.
    let ny = r#"{"kind": "sign_in", "time": "2026-11-25T10:12:00Z", "user": {"username": "jane"}, "network": {"ip": "203.0.113.9"}}"#;
    let v = what_if(dir.path(), ny, None);
    assert_eq!(v["context"]["network"]["country"], "US");
    assert_eq!(v["policy"], "from-the-us");

    // New York twelve minutes after a Paris sign-in: ~5,800 km in 12 minutes.
    let history = r#"[{"time": "2026-11-25T10:00:00Z", "ip": "198.51.100.7", "country": "FR", "city": "Paris", "latitude": 48.8566, "longitude": 2.3522, "outcome": "success"}]"#;
    let v = what_if(dir.path(), ny, Some(history));
    assert_eq!(v["outcome"], "deny", "{v:#}");
    assert_eq!(v["policy"], "impossible-travel");
    let reasons: Vec<&str> = v["context"]["risk"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"impossible_travel") && reasons.contains(&"new_country"),
        "{reasons:?}"
    );
    let velocity = v["context"]["risk"]["velocity_kmpm"].as_f64().unwrap();
    assert!(
        (400.0..600.0).contains(&velocity),
        "about 5,840 km / 12 min: {velocity}"
    );

    // The same trip over a day is plausible: no impossible travel.
    let slow = r#"[{"time": "2026-11-24T08:00:00Z", "ip": "198.51.100.7", "country": "FR", "city": "Paris", "latitude": 48.8566, "longitude": 2.3522, "outcome": "success"}]"#;
    let v = what_if(dir.path(), ny, Some(slow));
    assert_eq!(v["policy"], "from-the-us", "{v:#}");
}
