//! Running the device connectors (`devices.connectors:`): a sync per connector every
//! `interval` (full every `full_resync`, incremental between where the UEM allows it), on
//! demand ("Re-check my device", `stepgate devices sync`); each device applied exactly like
//! a posture push ([`crate::devices::posture_api::apply`]: audited, live sessions re-evaluated,
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

//!
//! A connector's freshness is in [`health`], one sync in [`sync`].

mod health;
mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use stepgate_config::Config;
use stepgate_signals::connectors::{Connector, ConnectorError};
use tokio::sync::Mutex;

use crate::app::state::{AppState, Shared};
use crate::devices::posture_api::apply;

pub use health::{ConnectorHealth, UNCONFIRMED_CHECK};
use sync::sync_running;

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

/// A configured connector, running its sync loop.
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
