//! GeoIP against a real `.mmdb` file written in the test (mmdb-writer), including reload
//! when the file changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use stepgate_policy::{HumanDuration, NetworkContext};
use stepgate_signals::config::GeoIpConfig;
use stepgate_signals::geoip::{GeoIp, GeoIpError};

#[derive(Serialize)]
struct IsoCode {
    iso_code: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    autonomous_system_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    autonomous_system_organization: Option<String>,
}

fn en(s: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("en".to_string(), s.to_string())])
}

fn city(
    country: &str,
    region: &str,
    name: &str,
    lat: f64,
    lon: f64,
    asn: Option<u32>,
) -> CityRecord {
    CityRecord {
        country: IsoCode {
            iso_code: country.into(),
            names: en(country),
        },
        subdivisions: vec![IsoCode {
            iso_code: region.into(),
            names: en(region),
        }],
        city: Named { names: en(name) },
        location: Location {
            latitude: lat,
            longitude: lon,
            accuracy_radius: 20,
        },
        autonomous_system_number: asn,
        autonomous_system_organization: asn.map(|_| "Example Transit".to_string()),
    }
}

fn write_db(path: &std::path::Path, paris_city: &str) {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    w.insert(
        "198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(),
        &city("FR", "IDF", paris_city, 48.8566, 2.3522, Some(64500)),
    )
    .unwrap();
    w.insert(
        "203.0.113.0/24".parse::<ipnet::IpNet>().unwrap(),
        &city("US", "NY", "New York", 40.7128, -74.006, None),
    )
    .unwrap();
    w.insert(
        "2001:db8:1::/48".parse::<ipnet::IpNet>().unwrap(),
        &city("DE", "BE", "Berlin", 52.52, 13.405, None),
    )
    .unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, w.to_bytes().unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write_asn_db(path: &std::path::Path) {
    #[derive(Serialize)]
    struct Asn {
        autonomous_system_number: u32,
        autonomous_system_organization: String,
    }
    let mut w = mmdb_writer::Writer::new("GeoLite2-ASN");
    w.insert(
        "203.0.113.0/24".parse::<ipnet::IpNet>().unwrap(),
        &Asn {
            autonomous_system_number: 64501,
            autonomous_system_organization: "Hosting Inc".into(),
        },
    )
    .unwrap();
    std::fs::write(path, w.to_bytes().unwrap()).unwrap();
}

#[test]
fn lookups_from_a_real_mmdb() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    let asn = dir.path().join("asn.mmdb");
    write_db(&db, "Paris");
    write_asn_db(&asn);
    let geo = GeoIp::open(&GeoIpConfig {
        database: db,
        asn_database: Some(asn),
        reload_interval: HumanDuration::from_secs(60),
    })
    .unwrap();

    let paris = geo.lookup("198.51.100.7".parse().unwrap()).unwrap();
    assert_eq!(paris.country.as_deref(), Some("FR"));
    assert_eq!(paris.region.as_deref(), Some("IDF"));
    assert_eq!(paris.city.as_deref(), Some("Paris"));
    assert_eq!(paris.latitude, Some(48.8566));
    assert_eq!(paris.accuracy_radius_km, Some(20));
    assert_eq!(paris.asn, Some(64500), "ASN from the city database itself");

    let ny = geo.lookup("203.0.113.9".parse().unwrap()).unwrap();
    assert_eq!(ny.city.as_deref(), Some("New York"));
    assert_eq!(ny.asn, Some(64501), "ASN from the separate ASN database");
    assert_eq!(ny.as_org.as_deref(), Some("Hosting Inc"));

    let berlin = geo.lookup("2001:db8:1::42".parse().unwrap()).unwrap();
    assert_eq!(berlin.country.as_deref(), Some("DE"));

    let none = geo.lookup("192.0.2.1".parse().unwrap()).unwrap();
    assert_eq!(none, Default::default());

    let mut net = NetworkContext::default();
    paris.apply_to(&mut net);
    assert_eq!(
        (net.country.as_deref(), net.city.as_deref()),
        (Some("FR"), Some("Paris"))
    );
}

#[test]
fn reloads_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    write_db(&db, "Paris");
    let geo = Arc::new(
        GeoIp::open(&GeoIpConfig {
            database: db.clone(),
            asn_database: None,
            reload_interval: HumanDuration::from_secs(60),
        })
        .unwrap(),
    );
    assert!(!geo.reload_if_changed().unwrap());
    write_db(&db, "Paris 11e");
    // Make sure the modification time differs even on coarse-grained file systems.
    let f = std::fs::File::options().write(true).open(&db).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    assert!(geo.reload_if_changed().unwrap());
    let ip = "198.51.100.7".parse().unwrap();
    assert_eq!(geo.lookup(ip).unwrap().city.as_deref(), Some("Paris 11e"));

    // A broken replacement keeps the old data and reports the error.
    std::fs::write(&db, b"not a database").unwrap();
    assert!(matches!(
        geo.reload_if_changed(),
        Err(GeoIpError::Open { path, .. }) if path == db
    ));
    assert_eq!(geo.lookup(ip).unwrap().city.as_deref(), Some("Paris 11e"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let e = GeoIp::open(&GeoIpConfig {
        database: "/nonexistent/city.mmdb".into(),
        asn_database: None,
        reload_interval: HumanDuration::from_secs(60),
    })
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/city.mmdb"), "{e}");
}
