//! GeoIP from MaxMind-format `.mmdb` files (GeoLite2/GeoIP2 City, Country, ASN, or any
//! database with the same field names), reloaded when the file changes on disk.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use stepgate_policy::NetworkContext;

use crate::config::GeoIpConfig;

/// A GeoIP database problem.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// The file could not be opened or is not a MaxMind DB.
    #[error("GeoIP database `{path}`: {message}; check `signals.geoip` points at a MaxMind `.mmdb` file")]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A record could not be decoded (corrupt database).
    #[error(
        "GeoIP database `{path}`: cannot decode the record for {ip}: {message}; replace the file"
    )]
    Decode {
        /// The file.
        path: PathBuf,
        /// The address looked up.
        ip: IpAddr,
        /// Decoder message.
        message: String,
    },
}

/// What the database says about one IP.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 country code.
    pub country: Option<String>,
    /// First subdivision: ISO 3166-2 code, or its English name.
    pub region: Option<String>,
    /// City name (English).
    pub city: Option<String>,
    /// Latitude.
    pub latitude: Option<f64>,
    /// Longitude.
    pub longitude: Option<f64>,
    /// Accuracy radius in km.
    pub accuracy_radius_km: Option<u16>,
    /// Autonomous system number.
    pub asn: Option<u32>,
    /// Autonomous system organisation.
    pub as_org: Option<String>,
    /// The country's names by language code (`en`, `fr`, … as the database has them), for
    /// people (the sessions page); not part of the policy context.
    #[serde(skip)]
    pub country_names: BTreeMap<String, String>,
    /// The city's names by language code.
    #[serde(skip)]
    pub city_names: BTreeMap<String, String>,
}

impl GeoInfo {
    /// The place in words for a person reading `lang` ("Paris, France"): the city and the
    /// country by their names in `lang`, else in English, else the country's ISO code.
    /// `None` when the database knows neither.
    pub fn place(&self, lang: &str) -> Option<String> {
        let name =
            |names: &BTreeMap<String, String>| names.get(lang).or_else(|| names.get("en")).cloned();
        let city = name(&self.city_names).or_else(|| self.city.clone());
        let country = name(&self.country_names).or_else(|| self.country.clone());
        match (city, country) {
            (Some(c), Some(k)) => Some(format!("{c}, {k}")),
            (one, other) => one.or(other),
        }
    }

    /// Fills country, region, city and coordinates of the policy's network context.
    pub fn apply_to(&self, net: &mut NetworkContext) {
        net.country = self.country.clone();
        net.region = self.region.clone();
        net.city = self.city.clone();
        net.latitude = self.latitude;
        net.longitude = self.longitude;
    }
}

/// A record's names by language code.
type Names = BTreeMap<String, String>;

#[derive(Deserialize)]
struct Country {
    #[serde(default)]
    iso_code: Option<String>,
    #[serde(default)]
    names: Option<Names>,
}

#[derive(Deserialize)]
struct Subdivision {
    #[serde(default)]
    iso_code: Option<String>,
    #[serde(default)]
    names: Option<Names>,
}

#[derive(Deserialize)]
struct City {
    #[serde(default)]
    names: Option<Names>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    accuracy_radius: Option<u16>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(default)]
    country: Option<Country>,
    #[serde(default)]
    subdivisions: Option<Vec<Subdivision>>,
    #[serde(default)]
    city: Option<City>,
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(default)]
    autonomous_system_organization: Option<String>,
}

struct Db {
    path: PathBuf,
    reader: RwLock<Arc<maxminddb::Reader<Vec<u8>>>>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Db {
    fn open(path: &Path) -> Result<Self, GeoIpError> {
        let s = stamp(path);
        let reader = open_reader(path)?;
        Ok(Db {
            path: path.to_owned(),
            reader: RwLock::new(Arc::new(reader)),
            stamp: Mutex::new(s),
        })
    }

    fn current(&self) -> Arc<maxminddb::Reader<Vec<u8>>> {
        match self.reader.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn reload_if_changed(&self) -> Result<bool, GeoIpError> {
        let now = stamp(&self.path);
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_none() || now == *last {
            return Ok(false);
        }
        let reader = open_reader(&self.path)?;
        *self.reader.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(reader);
        *last = now;
        tracing::info!(path = %self.path.display(), "GeoIP database reloaded");
        Ok(true)
    }

    fn lookup(&self, ip: IpAddr) -> Result<Option<Record>, GeoIpError> {
        let r = self.current();
        r.lookup::<Record>(ip).map_err(|e| GeoIpError::Decode {
            path: self.path.clone(),
            ip,
            message: e.to_string(),
        })
    }
}

fn open_reader(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>, GeoIpError> {
    maxminddb::Reader::open_readfile(path).map_err(|e| GeoIpError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// A GeoIP lookup service over one City/Country database and an optional ASN database.
pub struct GeoIp {
    main: Db,
    asn: Option<Db>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database", &self.main.path)
            .finish()
    }
}

impl GeoIp {
    /// Opens the configured databases.
    pub fn open(cfg: &GeoIpConfig) -> Result<Self, GeoIpError> {
        Ok(GeoIp {
            main: Db::open(&cfg.database)?,
            asn: cfg.asn_database.as_deref().map(Db::open).transpose()?,
        })
    }

    /// Looks an IP up; an address not in the database gives an empty [`GeoInfo`].
    pub fn lookup(&self, ip: IpAddr) -> Result<GeoInfo, GeoIpError> {
        let mut info = GeoInfo::default();
        if let Some(r) = self.main.lookup(ip)? {
            merge(&mut info, r);
        }
        if let Some(asn) = &self.asn {
            if let Some(r) = asn.lookup(ip)? {
                info.asn = info.asn.or(r.autonomous_system_number);
                info.as_org = info.as_org.or(r.autonomous_system_organization);
            }
        }
        Ok(info)
    }

    /// Re-opens any database whose file changed (modification time or size). On a bad new
    /// file the old data stays in use and the error is returned.
    pub fn reload_if_changed(&self) -> Result<bool, GeoIpError> {
        let a = self.main.reload_if_changed()?;
        let b = match &self.asn {
            Some(d) => d.reload_if_changed()?,
            None => false,
        };
        Ok(a || b)
    }

    /// Checks for changed files every `interval` in a background task.
    pub fn spawn_reloader(
        self: Arc<Self>,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.reload_if_changed() {
                    tracing::warn!(error = %e, "GeoIP reload failed; keeping the previous database");
                }
            }
        })
    }
}

fn merge(info: &mut GeoInfo, r: Record) {
    if let Some(c) = r.country {
        info.country = c.iso_code;
        info.country_names = c.names.unwrap_or_default();
    }
    info.region = r
        .subdivisions
        .and_then(|s| s.into_iter().next())
        .and_then(|s| s.iso_code.or(s.names.and_then(|mut n| n.remove("en"))));
    info.city_names = r.city.and_then(|c| c.names).unwrap_or_default();
    info.city = info.city_names.get("en").cloned();
    if let Some(l) = r.location {
        info.latitude = l.latitude;
        info.longitude = l.longitude;
        info.accuracy_radius_km = l.accuracy_radius;
    }
    info.asn = r.autonomous_system_number;
    info.as_org = r.autonomous_system_organization;
}
