//! The request's signals, gathered for the policy engine: user agent, GeoIP, IP risk, the
//! client certificate, the device the request is bound to (with its compliance) and the
//! behavioural risk from the user's sign-in history.
//!
//! The pure parts live in [`stepgate_signals`]; this module does the I/O around them (the
//! GeoIP file, the IP risk provider, the device registry, the hot store's history) and
//! fails closed: an IP risk provider configured with `on_error: fail` that fails, or a
//! store that does not answer, refuses the request ([`SignalError`] → 503).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::web::CookieJar;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use stepgate_config::Config;
use stepgate_policy::{RequestContext, RequestKind, RiskContext, RiskLevel};
use stepgate_signals::caep::{CaepReceiver, JtiReplayGuard};
use stepgate_signals::certs::{certificates_from_header, CertificateVerifier};
use stepgate_signals::device::{
    bound_device_context, strongest_binding, Device, DeviceApiAuth, DeviceBinding,
    DeviceCookieSigner,
};
use stepgate_signals::geoip::{GeoInfo, GeoIp};
use stepgate_signals::iprisk::{IpRiskError, IpRiskScorer};
use stepgate_signals::recheck::{DeviceUpdateHub, RecheckClient};
use stepgate_signals::risk::{self, SignInAttempt, SignInEntry, SignInOutcome};
use stepgate_signals::useragent::user_agent_context;
use stepgate_store::{StoreError, UserRecord};

use crate::state::{Runtime, Shared};

/// The client certificate chain (leaf first, DER) of a TLS connection, put into the
/// request's extensions by the TLS listener.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Vec<Vec<u8>>);

/// A signal source failed in a way that must refuse the request (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The IP risk provider failed and is configured with `on_error: fail`.
    #[error("IP risk provider: {0}")]
    IpRisk(#[from] IpRiskError),
    /// The device registry or the sign-in history did not answer.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A signal source could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SignalsSetupError {
    /// `signals.geoip`.
    #[error("{0}")]
    GeoIp(#[from] stepgate_signals::geoip::GeoIpError),
    /// `signals.ip_risk`.
    #[error("{0}")]
    IpRisk(#[from] IpRiskError),
    /// `signals.client_certificates`.
    #[error("{0}")]
    Certificates(#[from] stepgate_signals::certs::CertConfigError),
    /// `devices.caep`.
    #[error("{0}")]
    Caep(#[from] stepgate_signals::caep::CaepConfigError),
    /// `devices.recheck`.
    #[error("{0}")]
    Recheck(#[from] stepgate_signals::recheck::RecheckError),
    /// `devices.sources`.
    #[error("{0}")]
    DeviceApi(#[from] stepgate_signals::device::BadTokenHash),
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

/// Signal sources built from the configuration at start (files, providers, keys).
pub struct Signals {
    /// GeoIP database, when configured.
    pub geoip: Option<Arc<GeoIp>>,
    /// IP risk feeds and provider.
    pub ip_risk: IpRiskScorer,
    /// Client certificate validation, when authorities are configured.
    pub certs: Option<CertificateVerifier>,
    /// Device cookie signer, when its key is set in the environment.
    pub cookie: Option<DeviceCookieSigner>,
    /// Device API tokens.
    pub device_api: DeviceApiAuth,
    /// CAEP receiver, when transmitters are configured.
    pub caep: Option<CaepReceiver>,
    /// "Re-check my device" webhook, when configured.
    pub recheck: Option<RecheckClient>,
    /// Wakes re-checks waiting for a device update.
    pub hub: DeviceUpdateHub,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("geoip", &self.geoip.is_some())
            .field("caep", &self.caep.is_some())
            .finish_non_exhaustive()
    }
}

fn resolve(base: &Path, p: &Path) -> std::path::PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl Signals {
    /// Opens the GeoIP database, loads feeds, CA files and CAEP keys, reads the device
    /// cookie key and the re-check token from the environment.
    pub fn from_config(cfg: &Config) -> Result<Self, SignalsSetupError> {
        let base = &cfg.base_dir;
        let geoip = match &cfg.signals.geoip {
            Some(g) => {
                let mut g = g.clone();
                g.database = resolve(base, &g.database);
                g.asn_database = g.asn_database.map(|p| resolve(base, &p));
                Some(Arc::new(GeoIp::open(&g)?))
            }
            None => None,
        };
        let mut ip_risk_cfg = cfg.signals.ip_risk.clone();
        for f in &mut ip_risk_cfg.feeds {
            f.path = resolve(base, &f.path);
        }
        let ip_risk = IpRiskScorer::from_config(&ip_risk_cfg)?;
        let certs = if cfg.signals.client_certificates.authorities.is_empty() {
            None
        } else {
            let mut c = cfg.signals.client_certificates.clone();
            for a in &mut c.authorities {
                a.ca_file = resolve(base, &a.ca_file);
                a.intermediates_file = a.intermediates_file.as_ref().map(|p| resolve(base, p));
                a.crl_files = a.crl_files.iter().map(|p| resolve(base, p)).collect();
            }
            Some(CertificateVerifier::new(&c)?)
        };
        let cookie = match std::env::var(&cfg.devices.cookie.key_env) {
            Ok(k) => match DeviceCookieSigner::new(k.as_bytes()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(env = %cfg.devices.cookie.key_env, error = %e, "device cookies disabled");
                    None
                }
            },
            Err(_) => None,
        };
        let caep = if cfg.devices.caep.transmitters.is_empty() {
            None
        } else {
            let mut c = cfg.devices.caep.clone();
            for t in &mut c.transmitters {
                t.key_file = t.key_file.as_ref().map(|p| resolve(base, p));
            }
            Some(CaepReceiver::new(&c, Arc::new(HotStoreReplayGuard))?)
        };
        let recheck = cfg
            .devices
            .recheck
            .as_ref()
            .map(RecheckClient::new)
            .transpose()?;
        Ok(Signals {
            geoip,
            ip_risk,
            certs,
            cookie,
            device_api: DeviceApiAuth::new(&cfg.devices.sources)?,
            caep,
            recheck,
            hub: DeviceUpdateHub::default(),
        })
    }

    /// Starts the background work: GeoIP file reloads, JWKS fetches for CAEP transmitters.
    pub fn spawn_background(self: &Arc<Self>, cfg: &Config) {
        if let (Some(g), Some(c)) = (&self.geoip, &cfg.signals.geoip) {
            g.clone().spawn_reloader(c.reload_interval.0);
        }
        if cfg
            .devices
            .caep
            .transmitters
            .iter()
            .any(|t| t.jwks_url.is_some())
        {
            let me = self.clone();
            tokio::spawn(async move {
                if let Some(c) = &me.caep {
                    if let Err(e) = c.refresh_keys(&reqwest::Client::new()).await {
                        tracing::warn!(error = %e, "CAEP JWKS fetch failed");
                    }
                }
            });
        }
    }

    /// GeoIP facts for `ip` (empty without a database; a corrupt record is logged and
    /// treated as unknown, which location conditions do not match).
    pub fn geo(&self, ip: IpAddr) -> GeoInfo {
        match &self.geoip {
            Some(g) => g.lookup(ip).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "GeoIP lookup failed; location unknown");
                GeoInfo::default()
            }),
            None => GeoInfo::default(),
        }
    }
}

/// What a request offers as evidence of its device, besides the device cookie.
#[derive(Clone, Debug, Default)]
pub struct DeviceEvidence {
    /// The client certificate chain (mTLS, or a trusted proxy's header).
    pub certificates: Option<Vec<Vec<u8>>>,
    /// Ids of the passkey factors the session was signed in with.
    pub passkey_factors: Vec<String>,
}

/// The client certificate chain a request presents: from the TLS connection, or from the
/// configured header when the peer is a trusted proxy.
pub fn presented_certificates(
    rt: &Runtime,
    peer: IpAddr,
    headers: &HeaderMap,
    tls: Option<&PeerCertificates>,
) -> Option<Vec<Vec<u8>>> {
    if let Some(t) = tls.filter(|t| !t.0.is_empty()) {
        return Some(t.0.clone());
    }
    let fwd = rt.config.signals.client_certificates.forwarded.as_ref()?;
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    if !rt.config.trusted_proxies.iter().any(|n| n.contains(&peer)) {
        return None;
    }
    let v = headers.get(fwd.header.as_str())?.to_str().ok()?;
    match certificates_from_header(v, fwd.format) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "forwarded client certificate ignored");
            None
        }
    }
}

/// The history key of a user's sign-ins in the hot store.
pub fn history_key(user_id: &str) -> String {
    ["signins:", user_id].concat()
}

/// The hot-store index of the sessions bound to a device.
pub fn device_sessions_key(device_id: &str) -> String {
    ["device-sessions:", device_id].concat()
}

/// The user's sign-in history, oldest first.
pub async fn history(st: &Shared, user_id: &str) -> Result<Arc<Vec<SignInEntry>>, StoreError> {
    st.cache.sign_ins(&history_key(user_id)).await
}

/// Loads a device from the registry (a record that does not match the model is ignored).
pub async fn load_device(st: &Shared, id: &str) -> Result<Option<Device>, StoreError> {
    // stepgate's own records share the table; they are never devices.
    if stepgate_signals::device::is_reserved_id(id) {
        return Ok(None);
    }
    Ok(st.stores.durable.get_device(id).await?.and_then(|r| {
        Device::from_record_data(&r.id, r.owner.as_deref(), &r.data)
            .map_err(|e| tracing::warn!(error = %e, "device record ignored"))
            .ok()
    }))
}

/// Saves a device to the registry.
pub async fn save_device(st: &Shared, d: &Device, now: DateTime<Utc>) -> Result<(), StoreError> {
    if stepgate_signals::device::is_reserved_id(&d.id) {
        return Err(StoreError::Invalid(format!(
            "device id `{}` is reserved for stepgate's own records",
            d.id
        )));
    }
    st.stores
        .durable
        .put_device(&stepgate_store::DeviceRecord {
            id: d.id.clone(),
            owner: d.owner.clone(),
            data: d.to_record_data(),
            updated_at: now,
        })
        .await
}

/// Fills the user agent, location, IP risk, certificate, device and risk parts of `ctx`
/// (whose request, user and IP are already set).
pub async fn enrich(
    st: &Shared,
    rt: &Runtime,
    ctx: &mut RequestContext,
    headers: &HeaderMap,
    jar: &(dyn crate::web::CookieSource + Sync),
    user: Option<&UserRecord>,
    evidence: &DeviceEvidence,
    now: DateTime<Utc>,
) -> Result<(), SignalError> {
    let sig = &st.signals;
    ctx.user_agent = user_agent_context(
        headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    );
    let geo = match ctx.network.ip {
        Some(ip) => {
            let g = sig.geo(ip);
            g.apply_to(&mut ctx.network);
            ctx.network.ip_risk_score = sig.ip_risk.score(ip).await?;
            g
        }
        None => GeoInfo::default(),
    };

    // Device binding: every piece of evidence with the device it names; the strongest wins.
    let mut candidates: Vec<(DeviceBinding, Device)> = Vec::new();
    let mut bindings: Vec<DeviceBinding> = Vec::new();
    if let (Some(verifier), Some(chain)) = (&sig.certs, &evidence.certificates) {
        // Boxed: its future is several kilobytes, and every request's future would carry
        // (and copy) that space, though only requests with a certificate use it.
        let check = Box::pin(verifier.verify(chain, now)).await;
        ctx.certificate = CertificateVerifier::context(Some(&check));
        bindings.extend(check.device_binding());
    }
    for fid in &evidence.passkey_factors {
        if let Some(f) = st.stores.durable.get_factor(fid).await? {
            if let Some(credential_id) = f.lookup_key {
                bindings.push(DeviceBinding::Passkey { credential_id });
            }
        }
    }
    if let Some(u) = user.filter(|_| !bindings.is_empty()) {
        for r in st.stores.durable.list_devices(&u.username).await? {
            let Ok(d) = Device::from_record_data(&r.id, r.owner.as_deref(), &r.data) else {
                continue;
            };
            for b in &bindings {
                if b.matches(&d) {
                    candidates.push((b.clone(), d.clone()));
                }
            }
        }
    }
    if let Some(signer) = &sig.cookie {
        let c = &rt.config.devices.cookie;
        if let Some(v) = jar.cookie(&c.name) {
            if let Ok(id) = signer.verify(v, c.max_age.0, now) {
                if let Some(d) = load_device(st, &id).await? {
                    // Someone else's device cookie says nothing about this user's device.
                    let mine = match (&d.owner, user) {
                        (Some(o), Some(u)) => *o == u.username,
                        _ => true,
                    };
                    if mine {
                        candidates.push((DeviceBinding::Cookie { device_id: id }, d));
                    }
                }
            }
        }
    }
    if let Some((b, d)) = strongest_binding(&candidates) {
        ctx.device = Some(bound_device_context(
            b,
            d,
            &rt.config.compliance_policies,
            rt.config.devices.compliance.max_posture_age.0,
            now,
        ));
    }

    // Behavioural risk.
    if let Some(u) = user {
        let h = history(st, &u.id).await?;
        let attempt = SignInAttempt {
            time: now,
            ip: ctx.network.ip,
            country: geo.country.clone(),
            city: geo.city.clone(),
            latitude: geo.latitude,
            longitude: geo.longitude,
            device_id: ctx.device.as_ref().and_then(|d| d.id.clone()),
            ip_risk_score: ctx.network.ip_risk_score,
        };
        let cfg = &rt.config.signals.risk;
        let a = risk::score(&h, &attempt, cfg);
        ctx.risk = match ctx.kind {
            RequestKind::SignIn => a.to_context(),
            // Within a session only what can change under it counts: where the request
            // comes from now (travel) and how risky that address is.
            _ => {
                let reasons: Vec<_> = a
                    .reasons
                    .iter()
                    .filter(|r| matches!(r.name, "impossible_travel" | "risky_ip"))
                    .collect();
                let total: u32 = reasons.iter().map(|r| r.weight).sum();
                RiskContext {
                    level: if total >= cfg.high_at {
                        RiskLevel::High
                    } else if total >= cfg.medium_at {
                        RiskLevel::Medium
                    } else {
                        RiskLevel::Low
                    },
                    reasons: reasons.iter().map(|r| r.name.to_string()).collect(),
                    velocity_kmpm: a.velocity_kmpm,
                }
            }
        };
    }
    Ok(())
}

/// Records a sign-in outcome in the user's history (risk scoring). Logged, never fatal:
/// the outcome already happened.
pub async fn record_sign_in(
    st: &Shared,
    rt: &Runtime,
    user_id: &str,
    ip: Option<IpAddr>,
    user_agent: Option<&str>,
    device_id: Option<&str>,
    outcome: SignInOutcome,
    now: DateTime<Utc>,
) {
    let geo = ip.map(|ip| st.signals.geo(ip)).unwrap_or_default();
    let zones = ip
        .map(|ip| {
            rt.config
                .networks
                .iter()
                .filter(|(_, cidrs)| {
                    cidrs.iter().any(|c| {
                        c.trim()
                            .parse::<ipnet::IpNet>()
                            .is_ok_and(|n| n.contains(&ip))
                    })
                })
                .map(|(name, _)| name.to_string())
                .collect()
        })
        .unwrap_or_default();
    let entry = SignInEntry {
        time: now,
        ip,
        zones,
        country: geo.country,
        city: geo.city,
        latitude: geo.latitude,
        longitude: geo.longitude,
        device_id: device_id.map(str::to_string),
        user_agent: user_agent.map(|s| s.chars().take(200).collect()),
        outcome,
    };
    let cfg = &rt.config.signals.risk;
    let Ok(value) = serde_json::to_value(&entry) else {
        return;
    };
    if let Err(e) = st
        .stores
        .hot
        .push_recent(
            &history_key(user_id),
            &value,
            cfg.history_size,
            cfg.history_max_age.0,
        )
        .await
    {
        tracing::error!(error = %e, "sign-in history not recorded");
    }
}

/// Notes that session `session_id` is bound to `device_id` (for CAEP re-evaluation).
pub async fn index_device_session(st: &Shared, device_id: &str, session_id: &str) {
    let v = serde_json::Value::String(session_id.to_string());
    if let Err(e) = st
        .stores
        .hot
        .push_recent(
            &device_sessions_key(device_id),
            &v,
            200,
            std::time::Duration::from_secs(31 * 86_400),
        )
        .await
    {
        tracing::error!(error = %e, "device session index not updated");
    }
}

/// Ties a session to the device its requests are bound to (first binding wins; a session
/// does not move between devices), and indexes it for CAEP re-evaluation.
pub async fn bind_session_device(
    st: &Shared,
    session: &crate::session::Session,
    device: Option<&stepgate_policy::DeviceContext>,
) {
    let Some(id) = device.and_then(|d| d.id.as_deref()) else {
        return;
    };
    if session.data.device_id.is_some() {
        return;
    }
    let rt = st.runtime.load();
    let mut s = session.clone();
    Arc::make_mut(&mut s.data).device_id = Some(id.to_string());
    match crate::session::save(
        st.stores.hot.as_ref(),
        &s,
        &rt.config.sessions,
        &rt.config.assurance,
        Utc::now(),
    )
    .await
    {
        Ok(true) => index_device_session(st, id, &s.id).await,
        // Ended meanwhile: nothing to bind.
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "session not bound to its device"),
    }
}

/// After a completed sign-in: when device cookies are configured and the browser has no
/// valid one of this user's, registers a new "registered" (known but unmanaged) device for
/// the user and returns the long-lived signed cookie that ties the browser to it.
pub async fn issue_device_cookie(
    st: &Shared,
    rt: &crate::state::Runtime,
    jar: &CookieJar,
    user: &UserRecord,
    now: DateTime<Utc>,
) -> Option<axum_extra::extract::cookie::Cookie<'static>> {
    let signer = st.signals.cookie.as_ref()?;
    let c = &rt.config.devices.cookie;
    if let Some(v) = jar.get(&c.name) {
        if let Ok(id) = signer.verify(v, c.max_age.0, now) {
            if let Ok(Some(d)) = load_device(st, &id).await {
                if d.owner.as_deref().is_none_or(|o| o == user.username) {
                    return None;
                }
            }
        }
    }
    let mut device = Device::new(format!("browser-{}", crate::security::random_id()));
    device.owner = Some(user.username.clone());
    device.state = stepgate_policy::DeviceState::Registered;
    device.source = Some("stepgate".into());
    if let Err(e) = save_device(st, &device, now).await {
        tracing::warn!(error = %e, "could not register the browser as a device");
        return None;
    }
    let mut cookie =
        axum_extra::extract::cookie::Cookie::new(c.name.clone(), signer.issue(&device.id, now));
    cookie.set_http_only(true);
    cookie.set_secure(rt.config.sessions.cookie.secure || c.name.starts_with("__Host-"));
    cookie.set_same_site(axum_extra::extract::cookie::SameSite::Lax);
    cookie.set_path("/");
    cookie.set_max_age(cookie::time::Duration::seconds(
        c.max_age.as_secs().min(i64::MAX as u64) as i64,
    ));
    Some(cookie)
}
