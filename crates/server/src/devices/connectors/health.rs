//! Whether a connector's devices can still be trusted: when each connector last synced
//! successfully (this node's sync, or another node's read from the store) and how long its
//! devices count without one (`stale_after`). The access pipeline asks it on every request
//! ([`ConnectorHealth::judge`]).

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use stepgate_policy::{DeviceContext, DeviceState, FailingCheck};

/// When each connector last synced successfully, and how long its devices are trusted
/// without one (`stale_after`); shared with the access pipeline.
#[derive(Debug, Default)]
pub struct ConnectorHealth {
    by_name: RwLock<HashMap<String, Freshness>>,
}

/// One connector's freshness.
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
    /// Starts the clock for `name` (kept when it is registered already).
    pub(super) fn register(
        &self,
        name: &str,
        stale_after: std::time::Duration,
        now: DateTime<Utc>,
    ) {
        if let Ok(mut m) = self.by_name.write() {
            let e = m.entry(name.to_string()).or_insert(Freshness {
                stale_after,
                last_success: None,
                since: now,
            });
            e.stale_after = stale_after;
        }
    }

    /// Forgets the connectors a reload removed.
    pub(super) fn keep_only(&self, names: &[String]) {
        if let Ok(mut m) = self.by_name.write() {
            m.retain(|k, _| names.contains(k));
        }
    }

    /// A successful sync of `name` at `at` (the latest one counts).
    pub(super) fn success(&self, name: &str, at: DateTime<Utc>) {
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
