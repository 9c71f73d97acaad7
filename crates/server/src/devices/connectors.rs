//! Running the device connectors (`devices.connectors:`): a sync per connector every
//! `interval` (full every `full_resync`, incremental between where the UEM allows it), on
//! demand ("Re-check my device", `stepgate devices sync`); each device applied exactly like
//! a posture push ([`super::posture_api::apply`]: audited, live sessions re-evaluated,
//! waiting re-checks woken). A device missing from full syncs for longer than `grace`
//! becomes unmanaged (state `registered`, reported non-compliant).
//!
//! What each connector knows between syncs (the devices it wrote and when each was last
//! listed, its last full sync, its last successful sync) is a record in the device table
//! under a reserved id, so a restart or another node carries on from it.
//!
//! A SIGHUP reload rebuilds the set ([`Connectors::reload`]): added connectors start
//! syncing, removed ones stop, changed ones (configuration or secret) are replaced; a set
//! that cannot be built (a secret that cannot be read) refuses the whole reload.
//!
//! [`ConnectorHealth`] is what the access pipeline asks on every request: a device written
//! by a connector that has had no successful sync for longer than its `stale_after` does
//! not count as compliant or managed (its management status cannot be confirmed).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use stepgate_config::Config;
use stepgate_policy::{DeviceContext, DeviceState, FailingCheck};
use stepgate_signals::connectors::{Connector, ConnectorError};
use stepgate_signals::device::{PushOutcome, ReportedCompliance, RESERVED_ID_PREFIX};
use stepgate_store::DeviceRecord;
use tokio::sync::Mutex;

use super::posture_api::{apply, audit};
use crate::app::state::{AppState, Shared};

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    /// Devices seen for the first time.
    pub new: u32,
    /// Devices whose record changed.
    pub changed: u32,
    /// Devices the UEM now reports non-compliant that it did not before.
    pub now_non_compliant: u32,
    /// Devices that left the UEM more than `grace` ago, now unmanaged.
    pub removed: u32,
    /// Devices that could not be mapped or applied.
    pub errors: u32,
    /// Devices the UEM listed.
    pub seen: u32,
    /// Of those, devices reported non-compliant.
    pub non_compliant: u32,
}

/// A connector's health, for `/readyz?details` and logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectorStatus {
    /// When a sync last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure's message (never a secret).
    pub last_error: Option<String>,
    /// Failed syncs since the last success.
    pub consecutive_errors: u32,
    /// Failed syncs since start.
    pub errors_total: u64,
    /// What the last successful sync did.
    pub last_counts: SyncCounts,
}

/// What a connector remembers between syncs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Memory {
    /// Device id → when a sync last listed it.
    #[serde(default)]
    known: BTreeMap<String, DateTime<Utc>>,
    /// The last full sync.
    #[serde(default)]
    last_full: Option<DateTime<Utc>>,
    /// The last sync (its start, for the next incremental one).
    #[serde(default)]
    last_sync: Option<DateTime<Utc>>,
}

struct Running {
    connector: Connector,
    one_at_a_time: Mutex<()>,
    status: StdMutex<ConnectorStatus>,
    /// Set when a reload removed or replaced it: its loop ends.
    retired: AtomicBool,
    stop: tokio::sync::Notify,
}

impl Running {
    fn new(connector: Connector) -> Arc<Self> {
        Arc::new(Running {
            connector,
            one_at_a_time: Mutex::new(()),
            status: StdMutex::new(ConnectorStatus::default()),
            retired: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        })
    }

    fn name(&self) -> &str {
        &self.connector.config().name
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }
}

/// The configured connectors (swapped whole by a reload).
pub struct Connectors {
    running: ArcSwap<Vec<Arc<Running>>>,
    health: Arc<ConnectorHealth>,
}

impl Default for Connectors {
    fn default() -> Self {
        Connectors {
            running: ArcSwap::from_pointee(Vec::new()),
            health: Arc::default(),
        }
    }
}

/// When each connector last synced successfully, and how long its devices are trusted
/// without one (`stale_after`); shared with the access pipeline.
#[derive(Debug, Default)]
pub struct ConnectorHealth {
    by_name: RwLock<HashMap<String, Freshness>>,
}

#[derive(Debug, Clone, Copy)]
struct Freshness {
    stale_after: std::time::Duration,
    /// The last successful sync (this node's, or another node's read from the store).
    last_success: Option<DateTime<Utc>>,
    /// When this node set the connector up: without any success yet, the clock runs from
    /// here.
    since: DateTime<Utc>,
}

/// The failing check of a device whose connector has not synced for too long.
pub const UNCONFIRMED_CHECK: &str = "uem_unconfirmed";

impl ConnectorHealth {
    fn register(&self, name: &str, stale_after: std::time::Duration, now: DateTime<Utc>) {
        if let Ok(mut m) = self.by_name.write() {
            let e = m.entry(name.to_string()).or_insert(Freshness {
                stale_after,
                last_success: None,
                since: now,
            });
            e.stale_after = stale_after;
        }
    }

    fn keep_only(&self, names: &[String]) {
        if let Ok(mut m) = self.by_name.write() {
            m.retain(|k, _| names.contains(k));
        }
    }

    fn success(&self, name: &str, at: DateTime<Utc>) {
        if let Ok(mut m) = self.by_name.write() {
            if let Some(f) = m.get_mut(name) {
                f.last_success = Some(f.last_success.map_or(at, |t| t.max(at)));
            }
        }
    }

    /// When `name` last synced successfully, if it is a connector whose devices are
    /// stale at `now` (`Some(None)`: it never has).
    pub fn stale(&self, name: &str, now: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
        let m = self.by_name.read().ok()?;
        let f = m.get(name)?;
        let from = f.last_success.unwrap_or(f.since);
        let age = (now - from).to_std().unwrap_or_default();
        (age > f.stale_after).then_some(f.last_success)
    }

    /// The policy view of a device written by a stale connector: not compliant, at most
    /// registered, its posture unknown, with a failing check saying why in plain words.
    /// Devices of healthy connectors, or written by anything else, are left as they are.
    pub fn judge(&self, source: Option<&str>, ctx: &mut DeviceContext, now: DateTime<Utc>) {
        let Some(name) = source else { return };
        let Some(last) = self.stale(name, now) else {
            return;
        };
        let when = match last {
            Some(t) => format!(
                "stepgate last heard from {name} at {}",
                t.format("%-d %B %Y, %H:%M UTC")
            ),
            None => format!("stepgate has not heard from {name} yet"),
        };
        ctx.compliant = Some(false);
        ctx.state = ctx.state.min(DeviceState::Registered);
        ctx.posture.clear();
        ctx.failing_checks.push(FailingCheck {
            id: UNCONFIRMED_CHECK.into(),
            message: Some(format!(
                "Your device's management status could not be confirmed recently ({when})."
            )),
            fix: Some(
                "Nothing needs to change on your device. Try again in a few minutes; if this \
                 stays, tell your help desk that stepgate cannot reach the device management \
                 service."
                    .into(),
            ),
        });
    }
}

/// Why a sync could not run.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The UEM could not be read.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// The registry could not be read or written.
    #[error("connector `{0}`: device registry: {1}")]
    Store(String, String),
    /// No connector of that name.
    #[error("no connector named `{0}` in devices.connectors")]
    Unknown(String),
}

fn memory_id(name: &str) -> String {
    format!("{RESERVED_ID_PREFIX}connector:{name}")
}

impl Connectors {
    /// Reads each connector's secret; a missing one stops the start with its name.
    /// `health` is the access pipeline's view of the connectors' freshness.
    pub fn from_config(cfg: &Config, health: Arc<ConnectorHealth>) -> Result<Self, ConnectorError> {
        let running = build(cfg, &[])?;
        let now = Utc::now();
        for r in &running {
            health.register(r.name(), r.connector.config().stale_after.0, now);
        }
        Ok(Connectors {
            running: ArcSwap::from_pointee(running),
            health,
        })
    }

    /// The connectors' names.
    pub fn names(&self) -> Vec<String> {
        self.running
            .load()
            .iter()
            .map(|r| r.name().to_string())
            .collect()
    }

    /// The connectors' freshness, as the access pipeline sees it.
    pub fn health(&self) -> &ConnectorHealth {
        &self.health
    }

    /// Each connector's status, by name.
    pub fn status(&self) -> BTreeMap<String, ConnectorStatus> {
        self.running
            .load()
            .iter()
            .map(|r| {
                let s = r.status.lock().map(|s| s.clone()).unwrap_or_default();
                (r.name().to_string(), s)
            })
            .collect()
    }

    /// Starts a sync loop per connector (each ends when the state is dropped or a reload
    /// retires its connector).
    pub fn spawn(st: &Shared) {
        for r in st.connectors.running.load().iter() {
            spawn_one(st, r.clone());
        }
    }

    /// A reload: builds the connectors of `cfg` (keeping those whose configuration and
    /// secret are unchanged, with their loop and status), starts the new ones and stops
    /// the ones removed or replaced. Nothing changes when one cannot be built.
    pub fn reload(st: &Shared, cfg: &Config) -> Result<ReloadReport, ConnectorError> {
        let old = st.connectors.running.load_full();
        let new = build(cfg, &old)?;
        let kept: Vec<&Arc<Running>> = new
            .iter()
            .filter(|n| old.iter().any(|o| Arc::ptr_eq(o, n)))
            .collect();
        let mut report = ReloadReport::default();
        for o in old.iter() {
            if !new.iter().any(|n| Arc::ptr_eq(o, n)) {
                o.retire();
                if new.iter().any(|n| n.name() == o.name()) {
                    report.changed.push(o.name().to_string());
                } else {
                    report.removed.push(o.name().to_string());
                    st.metrics.connector_removed(o.name());
                }
            }
        }
        let now = Utc::now();
        let names: Vec<String> = new.iter().map(|r| r.name().to_string()).collect();
        st.connectors.health.keep_only(&names);
        for r in &new {
            st.connectors
                .health
                .register(r.name(), r.connector.config().stale_after.0, now);
        }
        st.connectors.running.store(Arc::new(new.clone()));
        for r in &new {
            if !kept.iter().any(|k| Arc::ptr_eq(k, r)) {
                if !report.changed.iter().any(|c| c == r.name()) {
                    report.added.push(r.name().to_string());
                }
                spawn_one(st, r.clone());
            }
        }
        Ok(report)
    }

    /// Runs one sync of the connector named `name` (every connector when `None`); `full`
    /// forces a full listing.
    pub async fn sync(
        st: &Shared,
        name: Option<&str>,
        full: bool,
    ) -> Vec<(String, Result<SyncCounts, SyncError>)> {
        let mut out = Vec::new();
        if let Some(n) = name {
            if !st.connectors.names().iter().any(|c| c == n) {
                return vec![(n.to_string(), Err(SyncError::Unknown(n.to_string())))];
            }
        }
        let running = st.connectors.running.load_full();
        for r in running.iter() {
            let n = r.name();
            if name.is_some_and(|x| x != n) {
                continue;
            }
            out.push((n.to_string(), sync_running(st, r, full).await));
        }
        out
    }

    /// "Re-check my device": reads the device fresh from the connector that wrote it and
    /// applies it. `None` when no connector owns the device; else whether the read worked.
    pub async fn recheck(st: &Shared, device_id: &str) -> Option<bool> {
        let device = st.devices.load(device_id).await.ok().flatten()?;
        let running = st.connectors.running.load_full();
        let r = running.iter().find(|r| {
            Some(&r.connector.config().name) == device.source.as_ref()
                && r.connector.uem_id(device_id).is_some()
        })?;
        let uem_id = r.connector.uem_id(device_id)?;
        let name = r.connector.config().name.clone();
        let one = r.one_at_a_time.lock().await;
        let read = match r.connector.fetch_one(uem_id).await {
            Ok(Some(push)) => {
                let source = r.connector.config().as_source();
                match apply(st, &source, &push, Utc::now()).await {
                    Ok(Ok(_)) => Some(true),
                    Ok(Err(e)) => {
                        tracing::warn!(connector = %name, device = %device_id, error = %e, "re-check: device refused");
                        Some(false)
                    }
                    Err(e) => {
                        tracing::error!(connector = %name, error = %e.description, "re-check: registry unavailable");
                        Some(false)
                    }
                }
            }
            // Gone from the UEM: the full syncs and their grace period decide.
            Ok(None) => Some(true),
            Err(e) => {
                tracing::warn!(connector = %name, device = %device_id, error = %e, "re-check: UEM unreachable");
                Some(false)
            }
        };
        drop(one);
        // The UEM answers again but the connector is still stale (its devices do not
        // count as compliant until a sync succeeds): sync now rather than at the next
        // interval, waiting a little so a small fleet lets the user in at once.
        if read == Some(true) && st.connectors.health.stale(&name, Utc::now()).is_some() {
            let (st, r) = (st.clone(), r.clone());
            let sync = tokio::spawn(async move {
                let _ = sync_running(&st, &r, false).await;
            });
            let _ = tokio::time::timeout(RECHECK_SYNC_WAIT, sync).await;
        }
        read
    }
}

/// How long "Re-check my device" waits for the sync it starts for a stale connector (the
/// sync goes on after that).
const RECHECK_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a reload did to the connectors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Connectors started.
    pub added: Vec<String>,
    /// Connectors stopped.
    pub removed: Vec<String>,
    /// Connectors replaced (their configuration or secret changed).
    pub changed: Vec<String>,
}

/// The connectors of `cfg`, reusing from `old` each whose configuration and secret are
/// unchanged.
fn build(cfg: &Config, old: &[Arc<Running>]) -> Result<Vec<Arc<Running>>, ConnectorError> {
    cfg.devices
        .connectors
        .iter()
        .map(|c| {
            let fresh = Connector::new(c, &cfg.base_dir)?;
            Ok(old
                .iter()
                .find(|o| !o.retired.load(Ordering::SeqCst) && o.connector.same_as(&fresh))
                .cloned()
                .unwrap_or_else(|| Running::new(fresh)))
        })
        .collect()
}

fn spawn_one(st: &Shared, r: Arc<Running>) {
    let weak: Weak<AppState> = Arc::downgrade(st);
    tokio::spawn(async move {
        let every = r.connector.config().interval.0;
        loop {
            if r.retired.load(Ordering::SeqCst) {
                return;
            }
            let Some(st) = weak.upgrade() else { return };
            // Errors are logged and counted in the status; the loop goes on.
            let _ = sync_running(&st, &r, false).await;
            drop(st);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = r.stop.notified() => {}
            }
        }
    });
}

async fn sync_running(st: &Shared, r: &Running, force_full: bool) -> Result<SyncCounts, SyncError> {
    let _one = r.one_at_a_time.lock().await;
    // A reload that retired this connector while the sync waited: it no longer runs.
    if r.retired.load(Ordering::SeqCst) {
        return Err(SyncError::Unknown(r.name().to_string()));
    }
    let started = Instant::now();
    let result = sync_locked(st, r, force_full).await;
    let took = started.elapsed();
    st.metrics
        .connector_sync(r.name(), result.as_ref().ok(), took);
    if let Ok(mut s) = r.status.lock() {
        match &result {
            Ok(c) => {
                let now = Utc::now();
                s.last_success = Some(now);
                s.consecutive_errors = 0;
                s.last_counts = *c;
                st.connectors.health.success(r.name(), now);
                st.metrics.connector_success_at(r.name(), now);
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                s.consecutive_errors += 1;
                s.errors_total += 1;
            }
        }
    }
    let name = &r.connector.config().name;
    match &result {
        Ok(c) => tracing::info!(connector = %name, new = c.new, changed = c.changed,
            now_non_compliant = c.now_non_compliant, removed = c.removed, errors = c.errors,
            "device connector synced"),
        Err(e) => tracing::warn!(connector = %name, error = %e, "device connector sync failed"),
    }
    result
}

async fn sync_locked(st: &Shared, r: &Running, force_full: bool) -> Result<SyncCounts, SyncError> {
    let cfg = r.connector.config();
    let name = cfg.name.clone();
    let store_err = |e: stepgate_store::StoreError| SyncError::Store(name.clone(), e.to_string());
    let durable = &st.stores.durable;
    let mut memory: Memory = durable
        .get_device(&memory_id(&name))
        .await
        .map_err(store_err)?
        .and_then(|r| serde_json::from_value(r.data).ok())
        .unwrap_or_default();
    // Another node's (or an earlier run's) successful sync counts for freshness too.
    if let Some(t) = memory.last_sync {
        st.connectors.health.success(&name, t);
        st.metrics.connector_success_at(&name, t);
    }
    let started = Utc::now();
    let full_due = memory
        .last_full
        .is_none_or(|t| (started - t).to_std().unwrap_or_default() >= cfg.full_resync.0);
    // Incremental reads overlap the last one a little: clocks and UEM indexing lag.
    let since = if force_full || full_due {
        None
    } else {
        memory.last_sync.map(|t| t - TimeDelta::minutes(5))
    };
    let batch = r.connector.fetch(since).await?;
    let source = cfg.as_source();
    let mut counts = SyncCounts {
        errors: batch.refused.len() as u32,
        seen: batch.devices.len() as u32,
        ..SyncCounts::default()
    };
    for e in &batch.refused {
        tracing::warn!(connector = %name, error = %e, "device not mapped");
    }
    let mut listed = std::collections::HashSet::new();
    for m in &batch.devices {
        listed.insert(m.push.device_id.clone());
        let applied = match apply(st, &source, &m.push, started).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::warn!(connector = %name, device = %m.push.device_id, error = %e, "device refused");
                counts.errors += 1;
                continue;
            }
            Err(e) => return Err(SyncError::Store(name.clone(), e.description)),
        };
        memory.known.insert(m.push.device_id.clone(), started);
        match applied.outcome {
            PushOutcome::Created => counts.new += 1,
            PushOutcome::Updated => counts.changed += 1,
            PushOutcome::Unchanged | PushOutcome::Stale => {}
        }
        let non_compliant = |d: &stepgate_signals::Device| {
            d.reported_compliance.as_ref().is_some_and(|c| !c.compliant)
        };
        if non_compliant(&applied.device) {
            counts.non_compliant += 1;
            if !applied.before.as_ref().is_some_and(non_compliant) {
                counts.now_non_compliant += 1;
            }
        }
    }
    if batch.full {
        let gone: Vec<(String, DateTime<Utc>)> = memory
            .known
            .iter()
            .filter(|(id, _)| !listed.contains(*id))
            .map(|(id, t)| (id.clone(), *t))
            .collect();
        for (id, seen) in gone {
            if (started - seen).to_std().unwrap_or_default() < cfg.grace.0 {
                continue;
            }
            unmanage(st, &name, &id, started).await.map_err(store_err)?;
            memory.known.remove(&id);
            counts.removed += 1;
        }
        memory.last_full = Some(started);
    }
    memory.last_sync = Some(started);
    durable
        .put_device(&DeviceRecord {
            id: memory_id(&name),
            owner: None,
            data: serde_json::to_value(&memory).unwrap_or_default(),
            updated_at: started,
        })
        .await
        .map_err(store_err)?;
    Ok(counts)
}

/// A device that left the UEM: no longer managed, reported non-compliant by it.
async fn unmanage(
    st: &Shared,
    name: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), stepgate_store::StoreError> {
    let Some(mut d) = st.devices.load(id).await? else {
        return Ok(());
    };
    d.state = d.state.min(DeviceState::Registered);
    d.reported_compliance = Some(ReportedCompliance {
        compliant: false,
        source: name.to_string(),
        reason: Some(format!("This device is no longer enrolled in {name}")),
        at: now,
    });
    st.devices.save(&d, now).await?;
    audit(
        st,
        "device.unmanaged",
        name,
        id,
        json!({ "owner": d.owner }),
    )
    .await;
    super::reevaluate::device_sessions(st, id).await;
    st.signals.hub.notify(id);
    Ok(())
}
