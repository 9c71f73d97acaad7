//! [`Signals::from_config`]: the signal sources opened from the configuration at start,
//! one section each, relative paths against the configuration's directory.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use stepgate_config::Config;
use stepgate_signals::caep::{CaepReceiver, JtiReplayGuard};
use stepgate_signals::certs::CertificateVerifier;
use stepgate_signals::device::{DeviceApiAuth, DeviceCookieSigner};
use stepgate_signals::geoip::GeoIp;
use stepgate_signals::iprisk::IpRiskScorer;
use stepgate_signals::recheck::{DeviceUpdateHub, RecheckClient};

use super::{Signals, SignalsSetupError};

impl Signals {
    /// Opens the GeoIP database, loads feeds, CA files and CAEP keys, reads the device
    /// cookie key and the re-check token from the environment.
    pub fn from_config(cfg: &Config) -> Result<Self, SignalsSetupError> {
        Ok(Signals {
            geoip: geoip(cfg)?,
            ip_risk: ip_risk(cfg)?,
            certs: certificates(cfg)?,
            cookie: device_cookie(cfg)?,
            caep: caep(cfg)?,
            recheck: recheck(cfg)?,
            device_api: DeviceApiAuth::new(&cfg.devices.sources)?,
            hub: DeviceUpdateHub::default(),
            connector_health: Arc::default(),
            calls: crate::metrics::SignalCalls::default(),
        })
    }
}

/// The `jti` replay guard inside [`CaepReceiver`] is per process; the server checks `jti`s
/// in the hot store instead (atomic across nodes, see `caep.rs`) after verification, so the
/// receiver's own guard lets everything through.
struct HotStoreReplayGuard;

impl JtiReplayGuard for HotStoreReplayGuard {
    fn check_and_record(&self, _: &str, _: &str, _: DateTime<Utc>, _: DateTime<Utc>) -> bool {
        true
    }
}

fn resolve(base: &Path, p: &Path) -> std::path::PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `signals.geoip`'s databases, opened.
fn geoip(cfg: &Config) -> Result<Option<Arc<GeoIp>>, SignalsSetupError> {
    let Some(g) = &cfg.signals.geoip else {
        return Ok(None);
    };
    let mut g = g.clone();
    g.database = resolve(&cfg.base_dir, &g.database);
    g.asn_database = g.asn_database.map(|p| resolve(&cfg.base_dir, &p));
    Ok(Some(Arc::new(GeoIp::open(&g)?)))
}

/// `signals.ip_risk`'s feeds and provider.
fn ip_risk(cfg: &Config) -> Result<IpRiskScorer, SignalsSetupError> {
    let mut c = cfg.signals.ip_risk.clone();
    for f in &mut c.feeds {
        f.path = resolve(&cfg.base_dir, &f.path);
    }
    if let Some(h) = &mut c.http {
        h.api_key_file = h.api_key_file.as_ref().map(|p| resolve(&cfg.base_dir, p));
    }
    Ok(IpRiskScorer::from_config(&c)?)
}

/// `signals.client_certificates`' authorities, when there are any.
fn certificates(cfg: &Config) -> Result<Option<CertificateVerifier>, SignalsSetupError> {
    if cfg.signals.client_certificates.authorities.is_empty() {
        return Ok(None);
    }
    let base = &cfg.base_dir;
    let mut c = cfg.signals.client_certificates.clone();
    for a in &mut c.authorities {
        a.ca_file = resolve(base, &a.ca_file);
        a.intermediates_file = a.intermediates_file.as_ref().map(|p| resolve(base, p));
        a.crl_files = a.crl_files.iter().map(|p| resolve(base, p)).collect();
    }
    Ok(Some(CertificateVerifier::new(&c)?))
}

/// The device cookie's signer, when its key is set (`devices.cookie`).
fn device_cookie(cfg: &Config) -> Result<Option<DeviceCookieSigner>, SignalsSetupError> {
    let key = match &cfg.devices.cookie.key_file {
        // A file named but unreadable is a start-up error, not silently no cookies.
        Some(p) => Some(
            stepgate_signals::config::read_secret_file(
                "devices.cookie.key_file",
                &resolve(&cfg.base_dir, p),
            )
            .map_err(SignalsSetupError::SecretFile)?,
        ),
        None => std::env::var(&cfg.devices.cookie.key_env).ok(),
    };
    let Some(key) = key else { return Ok(None) };
    match DeviceCookieSigner::new(key.as_bytes()) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::warn!(env = %cfg.devices.cookie.key_env, error = %e, "device cookies disabled");
            Ok(None)
        }
    }
}

/// The CAEP receiver, when transmitters are configured (`devices.caep`).
fn caep(cfg: &Config) -> Result<Option<CaepReceiver>, SignalsSetupError> {
    if cfg.devices.caep.transmitters.is_empty() {
        return Ok(None);
    }
    let mut c = cfg.devices.caep.clone();
    for t in &mut c.transmitters {
        t.key_file = t.key_file.as_ref().map(|p| resolve(&cfg.base_dir, p));
    }
    Ok(Some(CaepReceiver::new(&c, Arc::new(HotStoreReplayGuard))?))
}

/// The "re-check my device" webhook, when configured (`devices.recheck`).
fn recheck(cfg: &Config) -> Result<Option<RecheckClient>, SignalsSetupError> {
    let Some(r) = &cfg.devices.recheck else {
        return Ok(None);
    };
    let mut r = r.clone();
    r.bearer_token_file = r
        .bearer_token_file
        .as_ref()
        .map(|p| resolve(&cfg.base_dir, p));
    Ok(Some(RecheckClient::new(&r)?))
}
