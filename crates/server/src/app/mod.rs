//! Start-up and the server's life: the shared state built from the configuration
//! ([`build_state`]), the router and the hot-path routing past it ([`routes`]), the
//! listeners and connections ([`listen`], [`idle`], [`tls`], [`drain`]), SIGHUP reload and SIGTERM
//! drain ([`reload`]), and what every room shares: the [`signer`], small [`responses`],
//! and the [`state`].
//!
//! What does not belong here: anything one journey owns (a page, a decision, a device).

pub mod audit;
pub(crate) mod drain;
pub mod idle;
pub mod listen;
pub mod memo;
pub mod reload;
pub mod responses;
pub mod routes;
pub mod serving;
pub mod signer;
pub mod state;
pub mod stored_policies;
pub mod tls;

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use stepgate_authn::service::{Authenticator, AuthnSettings};
use stepgate_config::Config;
use stepgate_store::{open_stores, sync_users, SecretKey, Stores};

use crate::access::signals::{LiveSignals, Signals};
use crate::access::{Access, DecisionLog};
use crate::devices::Registry;
use crate::gateway::assertion::AssertionKeys;
use crate::gateway::upstream::UpstreamClient;
use crate::session::cache::Caches;
use crate::session::Sessions;
use signer::Signer;
use state::{AppState, Runtime, ServeOptions, Shared};

/// Opens the stores, syncs config-declared users and builds the shared state, with the
/// live signal sources.
pub async fn build_state(
    config: Config,
    key: SecretKey,
    options: ServeOptions,
) -> anyhow::Result<Shared> {
    build_state_with(config, key, options, None).await
}

/// Builds a source of signals other than the live one, once the state's stores, cache and
/// configured sources exist.
pub type SignalSourceFactory =
    Box<dyn FnOnce(&SourceParts) -> Arc<dyn crate::access::SignalSource> + Send>;

/// What a [`SignalSourceFactory`] may build on.
pub struct SourceParts {
    /// The configured sources (GeoIP, IP risk, certificates, device cookies).
    pub signals: Arc<Signals>,
    /// The durable store (through the node's cache).
    pub durable: Arc<dyn stepgate_store::DurableStore>,
    /// The node's read cache.
    pub cache: Arc<Caches>,
    /// Whether the demo's device profiles are on.
    pub demo: bool,
}

/// [`build_state`], with the signal sources `source` builds instead of the live ones (the
/// pipeline's tests give it the facts they generate), or the live ones when `None`.
pub async fn build_state_with(
    config: Config,
    key: SecretKey,
    options: ServeOptions,
    source: Option<SignalSourceFactory>,
) -> anyhow::Result<Shared> {
    let store_calls = Arc::new(crate::metrics::StoreCalls::default());
    let (stores, cache, feed) = open(&config, &key, &store_calls).await?;
    let authn = authenticator(&config, &stores, &key)?;
    let signer = Signer::new(key.to_base64().as_bytes());
    let signals = signals(&config)?;
    let (assertion, oidc_keys) = signing_keys(&config, &stores, &key).await?;
    let audit = audit::AuditOutbox::new(stores.durable.clone());
    let (access, sessions, devices, metrics) = pipeline(
        &stores,
        &cache,
        &signals,
        &signer,
        options.demo,
        source,
        (config.log.decisions.queue, audit.stats(), &store_calls),
    );
    access.trust_own_tokens(oidc_keys.clone(), key.clone());
    authn.observe(metrics.clone());
    let (connectors, siem) = connectors_and_streams(&config, &signals)?;
    let idps = identity_providers(&config, &key).await?;
    let stored_policies = stored_policies::StoredPolicies::new(config.admin.policy_edits);
    let st = Arc::new(AppState {
        runtime: ArcSwap::from_pointee(Runtime::new(config)),
        stores,
        authn,
        signer,
        upstream: UpstreamClient::new(),
        options,
        ready: std::sync::atomic::AtomicBool::new(true),
        signals,
        assertion,
        oidc_keys,
        cache,
        sessions,
        devices,
        connectors,
        access,
        oidc: crate::oidc::Provider::new(key.clone()),
        idps,
        metrics,
        assertions: crate::gateway::assertion::AssertionCache::default(),
        audit,
        siem,
        stored_policies,
    });
    // Before anything runs on the state: the stored policy set in force, or no start.
    stored_policies::start(&st, feed).await?;
    start_background(&st);
    Ok(st)
}

/// The authenticator: the configured factors, assurance and lockout rules over the stores.
fn authenticator(
    config: &Config,
    stores: &Stores,
    key: &SecretKey,
) -> anyhow::Result<Authenticator> {
    let settings = AuthnSettings {
        factors: config.factors.clone(),
        assurance: config.assurance.clone(),
        regulation: config.regulation.clone(),
    };
    Authenticator::new(
        stores.durable.clone(),
        stores.hot.clone(),
        key.clone(),
        settings,
        &config.base_dir,
    )
    .map_err(|e| anyhow::anyhow!("setting up the factors: {e}"))
}

/// The configured signal sources, their background refreshes started.
fn signals(config: &Config) -> anyhow::Result<Arc<Signals>> {
    let signals = Arc::new(
        Signals::from_config(config).map_err(|e| anyhow::anyhow!("setting up the signals: {e}"))?,
    );
    signals.spawn_background(config);
    // Off the event loops. Whether it finishes before the first request or not, no
    // answer changes; only the first requests' latency does.
    tokio::task::spawn_blocking(stepgate_signals::useragent::warm_up);
    Ok(signals)
}

/// The identity assertion's keys and the OpenID Provider's signing keys, loaded from the
/// store (made on first start); and the pairwise `sub` key checked when a client uses it.
async fn signing_keys(
    config: &Config,
    stores: &Stores,
    key: &SecretKey,
) -> anyhow::Result<(Arc<AssertionKeys>, Arc<AssertionKeys>)> {
    let assertion = AssertionKeys::open(
        stores.durable.clone(),
        key.clone(),
        &crate::oidc::tokens::key_config(config),
        chrono::Utc::now(),
    )
    .await
    .context("loading the identity assertion keys")?;
    let oidc_keys = AssertionKeys::open_oidc(
        stores.durable.clone(),
        key.clone(),
        &crate::oidc::tokens::key_config(config),
        &crate::oidc::tokens::key_algs(config),
        chrono::Utc::now(),
    )
    .await
    .context("loading the OpenID Provider's signing keys")?;
    if config
        .oidc
        .clients
        .iter()
        .any(crate::oidc::subject::is_pairwise)
    {
        crate::oidc::subject::pairwise_key(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok((Arc::new(assertion), Arc::new(oidc_keys)))
}

/// The device connectors and the SIEM streams the configuration names.
fn connectors_and_streams(
    config: &Config,
    signals: &Signals,
) -> anyhow::Result<(crate::devices::connectors::Connectors, crate::siem::Streams)> {
    let connectors = crate::devices::connectors::Connectors::from_config(
        config,
        signals.connector_health.clone(),
    )
    .map_err(|e| anyhow::anyhow!("setting up the device connectors: {e}"))?;
    let siem = crate::siem::Streams::from_config(config)
        .map_err(|e| anyhow::anyhow!("setting up the audit streams: {e:#}"))?;
    Ok((connectors, siem))
}

/// The upstream identity providers; one marked `required` must answer now (the others
/// are read at their first sign-in, whose failure refuses that sign-in, not the start).
async fn identity_providers(
    config: &Config,
    key: &SecretKey,
) -> anyhow::Result<crate::idp::IdentityProviders> {
    let idps = crate::idp::IdentityProviders::new(&config.base_dir, key.clone());
    for p in config.identity_providers.iter().filter(|p| p.required) {
        idps.provider(p)
            .await
            .map_err(|e| anyhow::anyhow!("{e} (identity_providers: `required: true`)"))?;
        idps.check_credentials(p)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(idps)
}

/// What runs beside the requests once the state is built: key rotation, back-channel
/// logout, upstream re-checks, the decision log's and audit log's writers, the SIEM
/// streams.
fn start_background(st: &Shared) {
    AssertionKeys::spawn_maintenance(Arc::downgrade(st));
    st.sessions
        .on_end(crate::oidc::backchannel::listener(Arc::downgrade(st)));
    st.access
        .recheck_upstream(crate::portal::upstream::recheck_hook(Arc::downgrade(st)));
    if let Some(log) = st.access.decision_log() {
        log.spawn_writer(st);
    }
    st.audit.spawn_writer();
    st.siem
        .spawn(st.stores.durable.clone(), &st.metrics.streams);
}

/// The stores (behind the node's read cache), with the configuration's users synced, and
/// the change feed when several nodes share them.
async fn open(
    config: &Config,
    key: &SecretKey,
    calls: &Arc<crate::metrics::StoreCalls>,
) -> anyhow::Result<(Stores, Arc<Caches>, Option<Arc<stepgate_store::ChangeFeed>>)> {
    let data_dir = config.base_dir.join(&config.server.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let stores = open_stores(&config.store, &data_dir, key)
        .await
        .context("opening the stores")?;
    // Timed under the cache: the calls that reach the database.
    let stores = crate::metrics::timed_store(stores, calls.clone());
    let (stores, cache) = crate::session::cache::wrap(stores, config.sessions.cache_ttl());
    if let Some(pg) = &config.store.postgres {
        if pg.fail_mode == stepgate_store::FailMode::Cached {
            cache.serve_stale_for(pg.cached_for.0);
        }
    }
    // Several nodes share the hot state only through Redis: there, each node announces its
    // writes and drops what the others announce.
    let feed = if let Some(redis) = &config.store.redis {
        let feed = stepgate_store::ChangeFeed::connect(redis)
            .await
            .context("connecting the change feed to Redis")?;
        let feed = Arc::new(feed);
        cache.listen(feed.clone());
        Some(feed)
    } else {
        None
    };
    if !config.users.is_empty() {
        let report = sync_users(stores.durable.as_ref(), key, &config.users)
            .await
            .context("syncing users from the configuration")?;
        tracing::info!(?report, "users from the configuration synced");
    }
    Ok((stores, cache, feed))
}

/// The access pipeline and the services it owns: sessions, the device registry, and the
/// signal source (`source`'s, or the live one). The decision log's queue is sized here, at
/// start (a reload changes whether it records and how long it keeps, not its size).
fn pipeline(
    stores: &Stores,
    cache: &Arc<Caches>,
    signals: &Arc<Signals>,
    signer: &Signer,
    demo: bool,
    source: Option<SignalSourceFactory>,
    (log_queue, audit, store): (usize, &audit::AuditStats, &crate::metrics::StoreCalls),
) -> (
    Access,
    Arc<Sessions>,
    Arc<Registry>,
    Arc<crate::metrics::Metrics>,
) {
    let sessions = Arc::new(Sessions::new(
        stores.hot.clone(),
        cache.clone(),
        signer.clone(),
    ));
    let devices = Arc::new(Registry::new(
        stores.durable.clone(),
        stores.hot.clone(),
        signals.cookie.clone(),
    ));
    let parts = SourceParts {
        signals: signals.clone(),
        durable: stores.durable.clone(),
        cache: cache.clone(),
        demo,
    };
    let source: Arc<dyn crate::access::SignalSource> = match source {
        Some(build) => build(&parts),
        None => Arc::new(LiveSignals::new(
            parts.signals.clone(),
            parts.durable.clone(),
            parts.cache.clone(),
            parts.demo,
        )),
    };
    let log = Arc::new(DecisionLog::new(log_queue));
    let metrics = Arc::new(crate::metrics::Metrics::new(crate::metrics::Sources {
        log: Some(log.stats()),
        audit: Some(audit),
        cache: Some(&cache.lookups),
        store: Some(store),
        signals: Some(&signals.calls),
    }));
    let access = Access::new(sessions.clone(), cache.clone(), source, devices.clone())
        .with_decision_log(log)
        .with_metrics(metrics.clone());
    (access, sessions, devices, metrics)
}
