//! Running the device connectors (`devices.connectors:`): a sync per connector every
//! `interval` (full every `full_resync`, incremental between where the UEM allows it), on
//! demand ("Re-check my device", `stepgate devices sync`); each device applied exactly like
//! a posture push ([`super::posture_api::apply`]: audited, live sessions re-evaluated,
//! waiting re-checks woken). A device missing from full syncs for longer than `grace`
//! becomes unmanaged (state `registered`, reported non-compliant).
//!
//! What each connector knows between syncs (the devices it wrote and when each was last
//! listed, its last full sync) is a record in the device table under a reserved id, so a
//! restart or another node carries on from it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use stepgate_config::Config;
use stepgate_policy::DeviceState;
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
}

/// The configured connectors.
#[derive(Default)]
pub struct Connectors {
    running: Vec<Arc<Running>>,
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
    pub fn from_config(cfg: &Config) -> Result<Self, ConnectorError> {
        let running = cfg
            .devices
            .connectors
            .iter()
            .map(|c| {
                Ok(Arc::new(Running {
                    connector: Connector::new(c, &cfg.base_dir)?,
                    one_at_a_time: Mutex::new(()),
                    status: StdMutex::new(ConnectorStatus::default()),
                }))
            })
            .collect::<Result<_, ConnectorError>>()?;
        Ok(Connectors { running })
    }

    /// The connectors' names.
    pub fn names(&self) -> Vec<String> {
        self.running
            .iter()
            .map(|r| r.connector.config().name.clone())
            .collect()
    }

    /// Each connector's status, by name.
    pub fn status(&self) -> BTreeMap<String, ConnectorStatus> {
        self.running
            .iter()
            .map(|r| {
                let s = r.status.lock().map(|s| s.clone()).unwrap_or_default();
                (r.connector.config().name.clone(), s)
            })
            .collect()
    }

    /// Starts a sync loop per connector (it ends when the state is dropped).
    pub fn spawn(st: &Shared) {
        for r in &st.connectors.running {
            let weak: Weak<AppState> = Arc::downgrade(st);
            let r = r.clone();
            tokio::spawn(async move {
                let every = r.connector.config().interval.0;
                loop {
                    let Some(st) = weak.upgrade() else { return };
                    // Errors are logged and counted in the status; the loop goes on.
                    let _ = sync_running(&st, &r, false).await;
                    drop(st);
                    tokio::time::sleep(every).await;
                }
            });
        }
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
        for r in &st.connectors.running {
            let n = &r.connector.config().name;
            if name.is_some_and(|x| x != n) {
                continue;
            }
            out.push((n.clone(), sync_running(st, r, full).await));
        }
        out
    }

    /// "Re-check my device": reads the device fresh from the connector that wrote it and
    /// applies it. `None` when no connector owns the device; else whether the read worked.
    pub async fn recheck(st: &Shared, device_id: &str) -> Option<bool> {
        let device = st.devices.load(device_id).await.ok().flatten()?;
        let r = st.connectors.running.iter().find(|r| {
            Some(&r.connector.config().name) == device.source.as_ref()
                && r.connector.uem_id(device_id).is_some()
        })?;
        let uem_id = r.connector.uem_id(device_id)?;
        let name = r.connector.config().name.clone();
        let _one = r.one_at_a_time.lock().await;
        match r.connector.fetch_one(uem_id).await {
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
        }
    }
}

async fn sync_running(st: &Shared, r: &Running, force_full: bool) -> Result<SyncCounts, SyncError> {
    let _one = r.one_at_a_time.lock().await;
    let result = sync_locked(st, r, force_full).await;
    if let Ok(mut s) = r.status.lock() {
        match &result {
            Ok(c) => {
                s.last_success = Some(Utc::now());
                s.consecutive_errors = 0;
                s.last_counts = *c;
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
        if non_compliant(&applied.device) && !applied.before.as_ref().is_some_and(non_compliant) {
            counts.now_non_compliant += 1;
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
