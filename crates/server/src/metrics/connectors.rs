//! The device connectors' series (`stepgate_connector_*`): a sync's result, duration and
//! counts, and each connector's freshness.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorLabel {
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectorResult {
    connector: String,
    result: &'static str,
}

/// Sync durations: 10 ms to about 5.5 min, doubling.
fn sync_time() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Every connector's series.
pub(super) struct ConnectorSeries {
    syncs: Family<ConnectorResult, Counter>,
    seconds: Family<ConnectorResult, Histogram, fn() -> Histogram>,
    device_errors: Family<ConnectorLabel, Counter>,
    last_success: Family<ConnectorLabel, Gauge>,
    devices: Family<ConnectorLabel, Gauge>,
    non_compliant: Family<ConnectorLabel, Gauge>,
    stale: Family<ConnectorLabel, Gauge>,
}

impl Default for ConnectorSeries {
    fn default() -> Self {
        ConnectorSeries {
            syncs: Family::default(),
            seconds: Family::new_with_constructor(sync_time),
            device_errors: Family::default(),
            last_success: Family::default(),
            devices: Family::default(),
            non_compliant: Family::default(),
            stale: Family::default(),
        }
    }
}

impl ConnectorSeries {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "stepgate_connector_syncs",
            "Device connector syncs, by connector and result (success, failure)",
            self.syncs.clone(),
        );
        r.register(
            "stepgate_connector_sync_duration_seconds",
            "Time a device connector sync took",
            self.seconds.clone(),
        );
        r.register(
            "stepgate_connector_device_errors",
            "Devices a connector sync could not map or apply",
            self.device_errors.clone(),
        );
        r.register(
            "stepgate_connector_last_success_timestamp_seconds",
            "Unix time of the connector's last successful sync",
            self.last_success.clone(),
        );
        r.register(
            "stepgate_connector_devices",
            "Devices the connector's last successful sync listed",
            self.devices.clone(),
        );
        r.register(
            "stepgate_connector_devices_non_compliant",
            "Devices the connector's last successful sync reported non-compliant",
            self.non_compliant.clone(),
        );
        r.register(
            "stepgate_connector_stale",
            "1 while the connector's devices do not count as compliant (no successful sync for longer than stale_after)",
            self.stale.clone(),
        );
    }
}

impl Metrics {
    /// A connector sync ended: its counts when it succeeded, `None` when it failed.
    pub fn connector_sync(
        &self,
        connector: &str,
        counts: Option<&crate::devices::connectors::SyncCounts>,
        took: Duration,
    ) {
        let labels = ConnectorResult {
            connector: connector.to_string(),
            result: if counts.is_some() {
                "success"
            } else {
                "failure"
            },
        };
        self.connectors.syncs.get_or_create(&labels).inc();
        self.connectors
            .seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let one = ConnectorLabel {
            connector: connector.to_string(),
        };
        // Every series of the connector exists from its first sync, so a rate or an alert
        // on it never starts from "no data".
        let errors = self.connectors.device_errors.get_or_create(&one);
        for result in ["success", "failure"] {
            let _ = self.connectors.syncs.get_or_create(&ConnectorResult {
                connector: connector.to_string(),
                result,
            });
        }
        let _ = self.connectors.stale.get_or_create(&one);
        let _ = self.connectors.last_success.get_or_create(&one);
        if let Some(c) = counts {
            errors.inc_by(u64::from(c.errors));
            self.connectors
                .devices
                .get_or_create(&one)
                .set(i64::from(c.seen));
            self.connectors
                .non_compliant
                .get_or_create(&one)
                .set(i64::from(c.non_compliant));
        }
    }

    /// The connector's last successful sync (only ever moves forward).
    pub fn connector_success_at(&self, connector: &str, at: chrono::DateTime<chrono::Utc>) {
        let g = self.connectors.last_success.get_or_create(&ConnectorLabel {
            connector: connector.to_string(),
        });
        let t = at.timestamp();
        if t > g.get() {
            g.set(t);
        }
    }

    /// A reload removed the connector: its series go.
    pub fn connector_removed(&self, connector: &str) {
        let one = ConnectorLabel {
            connector: connector.to_string(),
        };
        for result in ["success", "failure"] {
            let l = ConnectorResult {
                connector: connector.to_string(),
                result,
            };
            self.connectors.syncs.remove(&l);
            self.connectors.seconds.remove(&l);
        }
        self.connectors.device_errors.remove(&one);
        self.connectors.last_success.remove(&one);
        self.connectors.devices.remove(&one);
        self.connectors.non_compliant.remove(&one);
        self.connectors.stale.remove(&one);
    }

    /// Whether each connector's devices are stale now (set at every scrape).
    pub fn connector_stale(&self, connector: &str, stale: bool) {
        self.connectors
            .stale
            .get_or_create(&ConnectorLabel {
                connector: connector.to_string(),
            })
            .set(i64::from(stale));
    }
}
