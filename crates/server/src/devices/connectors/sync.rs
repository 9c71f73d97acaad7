//! One sync of one connector: the devices the UEM lists applied like posture pushes,
//! devices gone from full syncs for longer than `grace` made unmanaged, and what the
//! connector remembers between syncs ([`Memory`], a record under a reserved id) read and
//! written back.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use stepgate_policy::DeviceState;
use stepgate_signals::config::DeviceSourceConfig;
use stepgate_signals::connectors::MappedDevice;
use stepgate_signals::device::{PushOutcome, ReportedCompliance, RESERVED_ID_PREFIX};
use stepgate_store::{DeviceRecord, StoreError};

use super::{Running, SyncCounts, SyncError};
use crate::app::state::Shared;
use crate::devices::posture_api::{apply, audit};

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

/// The devices-table id of connector `name`'s memory.
fn memory_id(name: &str) -> String {
    format!("{RESERVED_ID_PREFIX}connector:{name}")
}

/// Runs one sync of `r` (one at a time per connector), recording its status, metrics
/// and log line.
pub(super) async fn sync_running(
    st: &Shared,
    r: &Running,
    force_full: bool,
) -> Result<SyncCounts, SyncError> {
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

/// The sync itself: read the memory, fetch (full when due or forced, else what changed
/// since the last sync), apply each device, unmanage the long gone, write the memory.
async fn sync_locked(st: &Shared, r: &Running, force_full: bool) -> Result<SyncCounts, SyncError> {
    let cfg = r.connector.config();
    let name = cfg.name.clone();
    let store_err = |e: StoreError| SyncError::Store(name.clone(), e.to_string());
    let mut memory = Memory::read(st, &name).await.map_err(store_err)?;
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
    let mut counts = SyncCounts {
        errors: batch.refused.len() as u32,
        seen: batch.devices.len() as u32,
        ..SyncCounts::default()
    };
    for e in &batch.refused {
        tracing::warn!(connector = %name, error = %e, "device not mapped");
    }
    let sync = Sync {
        st,
        name: &name,
        started,
    };
    let listed = sync
        .apply_listed(&cfg.as_source(), &batch.devices, &mut memory, &mut counts)
        .await?;
    if batch.full {
        sync.unmanage_gone(cfg.grace.0, &listed, &mut memory, &mut counts)
            .await
            .map_err(store_err)?;
        memory.last_full = Some(started);
    }
    memory.last_sync = Some(started);
    memory.write(st, &name, started).await.map_err(store_err)?;
    Ok(counts)
}

impl Memory {
    /// Connector `name`'s memory (empty when it has none, or it does not parse).
    async fn read(st: &Shared, name: &str) -> Result<Memory, StoreError> {
        Ok(st
            .stores
            .durable
            .get_device(&memory_id(name))
            .await?
            .and_then(|r| serde_json::from_value(r.data).ok())
            .unwrap_or_default())
    }

    /// Keeps this as connector `name`'s memory.
    async fn write(&self, st: &Shared, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        st.stores
            .durable
            .put_device(&DeviceRecord {
                id: memory_id(name),
                owner: None,
                data: serde_json::to_value(self).unwrap_or_default(),
                updated_at: at,
            })
            .await
    }
}

/// One sync under way: the connector's name and when the sync started.
struct Sync<'a> {
    st: &'a Shared,
    name: &'a str,
    started: DateTime<Utc>,
}

impl Sync<'_> {
    /// Applies each device the UEM listed like a posture push, counting what changed;
    /// the ids it listed.
    async fn apply_listed(
        &self,
        source: &DeviceSourceConfig,
        devices: &[MappedDevice],
        memory: &mut Memory,
        counts: &mut SyncCounts,
    ) -> Result<HashSet<String>, SyncError> {
        let (st, name, started) = (self.st, self.name, self.started);
        let mut listed = HashSet::new();
        for m in devices {
            listed.insert(m.push.device_id.clone());
            let applied = match apply(st, source, &m.push, started).await {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => {
                    tracing::warn!(connector = %name, device = %m.push.device_id, error = %e, "device refused");
                    counts.errors += 1;
                    continue;
                }
                Err(e) => return Err(SyncError::Store(name.to_string(), e.description)),
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
        Ok(listed)
    }

    /// After a full sync: the devices it did not list, unseen for longer than `grace`,
    /// made unmanaged and forgotten.
    async fn unmanage_gone(
        &self,
        grace: std::time::Duration,
        listed: &HashSet<String>,
        memory: &mut Memory,
        counts: &mut SyncCounts,
    ) -> Result<(), StoreError> {
        let gone: Vec<(String, DateTime<Utc>)> = memory
            .known
            .iter()
            .filter(|(id, _)| !listed.contains(*id))
            .map(|(id, t)| (id.clone(), *t))
            .collect();
        for (id, seen) in gone {
            if (self.started - seen).to_std().unwrap_or_default() < grace {
                continue;
            }
            unmanage(self.st, self.name, &id, self.started).await?;
            memory.known.remove(&id);
            counts.removed += 1;
        }
        Ok(())
    }
}

/// A device that left the UEM: no longer managed, reported non-compliant by it.
async fn unmanage(st: &Shared, name: &str, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
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
    crate::devices::reevaluate::device_sessions(st, id).await;
    st.signals.hub.notify(id);
    Ok(())
}
