//! The signal sources: what is known about a request besides who sent it — user agent,
//! GeoIP, IP risk, the client certificate, the device the request is bound to (with its
//! compliance) and the user's sign-in history — as [`Facts`] for the context stage.
//!
//! The pipeline asks a [`SignalSource`]: [`LiveSignals`] for real requests (the GeoIP
//! file, the IP risk feeds and provider, the device registry, the hot store's history),
//! the context file for `stepgate what-if` ([`super::what_if`]). The pure parts live in
//! [`stepgate_signals`]. The live source fails closed: an IP risk provider configured with
//! `on_error: fail` that fails, or a store that does not answer, refuses the request
//! ([`SignalError`] → 503).

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use stepgate_config::Config;
use stepgate_policy::{DeviceContext, RequestKind, SignalsRead};
use stepgate_signals::caep::CaepReceiver;
use stepgate_signals::certs::{certificates_from_header, CertificateVerifier};
use stepgate_signals::device::{
    bound_device_context, device_context, strongest_binding, Device, DeviceApiAuth, DeviceBinding,
    DeviceCookieSigner,
};
use stepgate_signals::geoip::{GeoInfo, GeoIp};
use stepgate_signals::iprisk::{IpRiskError, IpRiskScorer};
use stepgate_signals::recheck::{DeviceUpdateHub, RecheckClient};
use stepgate_signals::risk::{SignInEntry, SignInOutcome};
use stepgate_signals::useragent::user_agent_context;
use stepgate_store::{DurableStore, HotStore, StoreError};

use super::context::Facts;
use super::request::{AccessRequest, Connection, Credentials, Subject};
use crate::app::state::Runtime;
use crate::demo;
use crate::metrics::SignalProvider as Provider;
use crate::session::cache::Caches;
use crate::session::cookies::CookieSource;

mod from_config;

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
    /// A `*_file` secret that cannot be read.
    #[error("{0}")]
    SecretFile(String),
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
    /// The device connectors' freshness: a device whose connector has not synced for
    /// longer than its `stale_after` does not count as compliant.
    pub connector_health: Arc<crate::devices::connectors::ConnectorHealth>,
    /// Each provider's latency and failures (`stepgate_signal_*`).
    pub calls: crate::metrics::SignalCalls,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("geoip", &self.geoip.is_some())
            .field("caep", &self.caep.is_some())
            .finish_non_exhaustive()
    }
}

impl Signals {
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
        let Some(g) = &self.geoip else {
            return GeoInfo::default();
        };
        let found = self.calls.lookup(Provider::GeoIp, || g.lookup(ip));
        found.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "GeoIP lookup failed; location unknown");
            GeoInfo::default()
        })
    }
}

/// Where the pipeline's context stage gets its [`Facts`].
#[async_trait::async_trait]
pub trait SignalSource: Send + Sync {
    /// What is known about `req` from `subject`.
    async fn facts(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
        subject: &Subject,
    ) -> Result<Facts, SignalError>;
}

/// The signal sources of a running server.
pub struct LiveSignals {
    signals: Arc<Signals>,
    durable: Arc<dyn DurableStore>,
    cache: Arc<Caches>,
    demo: bool,
}

impl LiveSignals {
    /// Over the configured sources, the (cached) stores, and, with `demo`, the demo's
    /// device profiles (chosen by header or cookie) in place of the real device.
    pub fn new(
        signals: Arc<Signals>,
        durable: Arc<dyn DurableStore>,
        cache: Arc<Caches>,
        demo: bool,
    ) -> Self {
        LiveSignals {
            signals,
            durable,
            cache,
            demo,
        }
    }

    /// The device the request is bound to: every piece of evidence with the device it
    /// names, the strongest binding winning (a certificate, then a passkey the session was
    /// signed in with, then the device cookie); for a stored session, its bound device.
    async fn device(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
        subject: &Subject,
        certificate: Option<&stepgate_signals::certs::CertificateCheck>,
    ) -> Result<Option<DeviceContext>, SignalError> {
        let cfg = &rt.config;
        let max_age = cfg.devices.compliance.max_posture_age.0;
        if let Credentials::Stored(s) = &req.credentials {
            let Some(id) = &s.data.device_id else {
                return Ok(None);
            };
            let device = crate::devices::load(self.durable.as_ref(), id).await?;
            return Ok(device.map(|d| {
                let mut ctx = device_context(&d, &cfg.compliance_policies, max_age, req.now);
                self.judge_freshness(&d, &mut ctx, req.now);
                ctx
            }));
        }
        let mut bindings: Vec<DeviceBinding> = Vec::new();
        bindings.extend(certificate.and_then(|c| c.device_binding()));
        bindings.extend(self.passkey_bindings(subject).await?);
        let mut candidates = self.bound_devices(subject, &bindings).await?;
        candidates.extend(self.cookie_device(rt, req, subject).await?);
        Ok(strongest_binding(&candidates).map(|(b, d)| {
            let mut ctx = bound_device_context(b, d, &cfg.compliance_policies, max_age, req.now);
            self.judge_freshness(d, &mut ctx, req.now);
            ctx
        }))
    }

    /// Whether the request carries anything [`LiveSignals::device`] could find a device by: a
    /// stored session's bound device, a client certificate, a passkey the session was
    /// signed in or stepped up with, or a device cookie. Without any, there is no device to
    /// look up, and the registry is not asked (nor the lookup timed): most requests of a
    /// session signed in with a password and a code carry none.
    fn may_name_device(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
        subject: &Subject,
        certificate: bool,
    ) -> bool {
        if let Credentials::Stored(s) = &req.credentials {
            return s.data.device_id.is_some();
        }
        let passkey = |d| passkey_factors(d).next().is_some();
        certificate
            || subject.who.session_data().is_some_and(passkey)
            || self.device_cookie(rt, req).is_some()
    }

    /// The device cookie's value, as the request carries it, when device cookies are
    /// signed here (unverified: [`LiveSignals::cookie_device`] verifies it).
    fn device_cookie<'r>(&self, rt: &Runtime, req: &'r AccessRequest<'_>) -> Option<&'r str> {
        self.signals.cookie.as_ref()?;
        cookies_of(req)?.cookie(&rt.config.devices.cookie.name)
    }

    /// A device counts as compliant only while its connector's syncs are fresh.
    fn judge_freshness(&self, d: &Device, ctx: &mut DeviceContext, now: DateTime<Utc>) {
        self.signals
            .connector_health
            .judge(d.source.as_deref(), ctx, now);
    }

    /// The user's devices each of `bindings` names.
    async fn bound_devices(
        &self,
        subject: &Subject,
        bindings: &[DeviceBinding],
    ) -> Result<Vec<(DeviceBinding, Device)>, SignalError> {
        let mut candidates = Vec::new();
        if bindings.is_empty() {
            return Ok(candidates);
        }
        for r in self.durable.list_devices(&subject.user.username).await? {
            let Ok(d) = Device::from_record_data(&r.id, r.owner.as_deref(), &r.data) else {
                continue;
            };
            for b in bindings {
                if b.matches(&d) {
                    candidates.push((b.clone(), d.clone()));
                }
            }
        }
        Ok(candidates)
    }

    /// The device the request's device cookie names, when it is the user's (or no one's).
    async fn cookie_device(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
        subject: &Subject,
    ) -> Result<Option<(DeviceBinding, Device)>, SignalError> {
        let (Some(signer), Some(value)) = (&self.signals.cookie, self.device_cookie(rt, req))
        else {
            return Ok(None);
        };
        let max_age = rt.config.devices.cookie.max_age.0;
        let Ok(id) = signer.verify(value, max_age, req.now) else {
            return Ok(None);
        };
        let Some(d) = crate::devices::load(self.durable.as_ref(), &id).await? else {
            return Ok(None);
        };
        // Someone else's device cookie says nothing about this user's device.
        let theirs = d
            .owner
            .as_deref()
            .is_none_or(|o| o == subject.user.username);
        Ok(theirs.then_some((DeviceBinding::Cookie { device_id: id }, d)))
    }

    /// The client certificate, checked: read from the connection here, for every entry
    /// point alike (a sign-in as an app request), and only when some authority could
    /// verify it.
    async fn certificate(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
    ) -> Option<stepgate_signals::certs::CertificateCheck> {
        let verifier = self.signals.certs.as_ref()?;
        let chain = presented_certificates(rt, req.connection, req.headers)?;
        // Boxed: its future is several kilobytes, and every request's future would carry
        // (and copy) that space, though only requests with a certificate use it.
        let verify = Box::pin(verifier.verify(&chain, req.now));
        let calls = &self.signals.calls;
        Some(calls.answer(Provider::ClientCertificate, verify).await)
    }

    /// The passkeys the session was signed in or stepped up with, as device bindings.
    async fn passkey_bindings(&self, subject: &Subject) -> Result<Vec<DeviceBinding>, SignalError> {
        let mut bindings = Vec::new();
        let Some(data) = subject.who.session_data() else {
            return Ok(bindings);
        };
        for fid in passkey_factors(data) {
            if let Some(f) = self.durable.get_factor(fid).await? {
                if let Some(credential_id) = f.lookup_key {
                    bindings.push(DeviceBinding::Passkey { credential_id });
                }
            }
        }
        Ok(bindings)
    }
}

/// The ids of the passkey factors a session was signed in or stepped up with.
fn passkey_factors(data: &crate::session::SessionData) -> impl Iterator<Item = &str> {
    data.factors
        .iter()
        .filter(|f| f.kind == stepgate_authn::FactorKind::Webauthn)
        .filter_map(|f| f.factor_id.as_deref())
}

/// The cookies a request carries, when it carries any.
fn cookies_of<'a>(req: &'a AccessRequest<'_>) -> Option<&'a (dyn CookieSource + Sync)> {
    match req.credentials {
        Credentials::Cookies(c) | Credentials::FirstFactor { cookies: c, .. } => Some(c),
        _ => None,
    }
}

#[async_trait::async_trait]
impl SignalSource for LiveSignals {
    async fn facts(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
        subject: &Subject,
    ) -> Result<Facts, SignalError> {
        let sig = &self.signals;
        let demo = self.demo.then(|| demo_profile(req));
        let reads = reads(rt, req);
        let mut facts = Facts {
            ip: demo
                .and_then(|p| p.ip)
                .and_then(|s| s.parse().ok())
                .or(req.ip),
            ..Facts::default()
        };
        if reads.user_agent {
            facts.user_agent = user_agent_context(
                req.headers
                    .get(axum::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            );
        }
        if let Some(ip) = facts.ip {
            facts.geo = sig.geo(ip);
            // A provider failure its `on_error` answered for is counted all the same. The
            // HTTP provider's future is boxed: it is kilobytes, and every request's future
            // would carry (and copy) that space, though only a configured provider uses it.
            let hid = |a: &stepgate_signals::iprisk::IpRiskAnswer| a.provider_failed;
            let risk = if sig.ip_risk.http.is_some() {
                let asked = Box::pin(sig.ip_risk.assess(ip));
                sig.calls.judged(Provider::IpRisk, asked, hid).await?
            } else {
                let feeds = || Ok::<_, IpRiskError>(sig.ip_risk.assess_feeds(ip));
                sig.calls.judged_now(Provider::IpRisk, feeds, hid)?
            };
            facts.ip_risk_score = risk.score;
        }
        let check = self.certificate(rt, req).await;
        if check.is_some() {
            facts.certificate = CertificateVerifier::context(check.as_ref());
        }
        facts.device = match demo {
            Some(p) => demo::device(p),
            None if !self.may_name_device(rt, req, subject, check.is_some()) => None,
            None => {
                let device = self.device(rt, req, subject, check.as_ref());
                sig.calls.time(Provider::Device, device).await?
            }
        };
        if reads.risk && !subject.user.id.is_empty() {
            let key = history_key(&subject.user.id);
            let history = sig
                .calls
                .time(Provider::SignInHistory, self.cache.sign_ins(&key));
            facts.history = Some(history.await?);
        }
        facts.remembered_mfa = self.remembered_mfa(rt, req, subject, &facts).await?;
        Ok(facts)
    }
}

impl LiveSignals {
    /// A sign-in on a known device, when some policy lets it count earlier MFA there: the
    /// MFA remembered for that user on that device.
    async fn remembered_mfa(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
        subject: &Subject,
        facts: &Facts,
    ) -> Result<Vec<stepgate_authn::PassedFactor>, SignalError> {
        let device_id = facts.device.as_ref().and_then(|d| d.id.as_deref());
        let (Credentials::FirstFactor { .. }, Some(_), Some(device_id)) = (
            &req.credentials,
            rt.config.policy_set.mfa_memory(),
            device_id,
        ) else {
            return Ok(Vec::new());
        };
        let remembered = stepgate_authn::mfa_memory::remembered(
            self.cache.hot(),
            self.durable.as_ref(),
            &subject.user.id,
            device_id,
        );
        // Boxed: only a sign-in on a known device gets here, and every request's future
        // would otherwise carry this one's space.
        Box::pin(self.signals.calls.time(Provider::MfaMemory, remembered))
            .await
            .map_err(Into::into)
    }
}

/// The demo's device profile the request chose (by header or cookie).
fn demo_profile(req: &AccessRequest<'_>) -> &'static demo::Profile {
    let chosen = req
        .headers
        .get(demo::DEVICE_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| cookies_of(req).and_then(|c| c.cookie(demo::DEVICE_COOKIE)));
    demo::profile(chosen)
}

/// What signals to gather: an app request leaves out what no policy reads (no decision can
/// depend on it); a sign-in gathers everything, since its audit row records the risk.
fn reads(rt: &Runtime, req: &AccessRequest<'_>) -> SignalsRead {
    match req.kind {
        RequestKind::Access => rt.config.policy_set.reads(),
        _ => SignalsRead {
            risk: true,
            user_agent: true,
        },
    }
}

/// The client certificate chain a request presents: from the TLS connection, or from the
/// configured header when the peer is a trusted proxy.
pub fn presented_certificates(
    rt: &Runtime,
    connection: Connection<'_>,
    headers: &HeaderMap,
) -> Option<Vec<Vec<u8>>> {
    if let Some(t) = connection.tls.filter(|t| !t.0.is_empty()) {
        return Some(t.0.clone());
    }
    let fwd = rt.config.signals.client_certificates.forwarded.as_ref()?;
    let peer = connection.peer?;
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

/// A sign-in's outcome, for the user's history (risk scoring).
pub struct SignInRecord<'a> {
    /// The user's store id.
    pub user_id: &'a str,
    /// Where from (unknown: `None`).
    pub ip: Option<IpAddr>,
    /// The browser.
    pub user_agent: Option<&'a str>,
    /// The device it was bound to.
    pub device_id: Option<&'a str>,
    /// Success or failure.
    pub outcome: SignInOutcome,
    /// When.
    pub now: DateTime<Utc>,
}

impl Signals {
    /// Records a sign-in outcome in the user's history (risk scoring). Logged, never
    /// fatal: the outcome already happened.
    pub async fn record_sign_in(&self, hot: &dyn HotStore, rt: &Runtime, r: SignInRecord<'_>) {
        let SignInRecord {
            user_id,
            ip,
            user_agent,
            device_id,
            outcome,
            now,
        } = r;
        let geo = ip.map(|ip| self.geo(ip)).unwrap_or_default();
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
        if let Err(e) = hot
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
}
