//! Prometheus metrics, served at `/metrics` on a listener of their own
//! (`server.metrics_listen`; nothing else is served there).
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `stepgate_requests_total` | counter | `app`, `outcome` | app requests answered (proxy and forward-auth), by what happened to them |
//! | `stepgate_request_duration_seconds` | histogram | `app`, `outcome` | from reading the request to the answer's headers (for a proxied request, the upstream's included) |
//! | `stepgate_decisions_total` | counter | `kind`, `outcome` | decisions of the access pipeline (every entry point: also sign-ins and CAEP re-evaluations) |
//! | `stepgate_decision_duration_seconds` | histogram | `kind`, `outcome` | how long a decision took (session, signals, policies, verdict) |
//! | `stepgate_policy_outcomes_total` | counter | `policy`, `outcome` | step-ups and denies, by the deciding policy (`default` for the default outcome) |
//! | `stepgate_decision_log_queue_depth` | gauge | | records waiting for the decision log's writer |
//! | `stepgate_decision_log_dropped_total` | counter | | records dropped because the queue was full |
//! | `stepgate_decision_log_sampled_out_total` | counter | | allowed app requests not recorded (`log.decisions.allowed_one_in`) |
//! | `stepgate_decision_log_written_total` | counter | | records written to the store |
//! | `stepgate_decision_log_waiting` | gauge | | records kept in memory while the durable store is out of reach |
//! | `stepgate_decision_log_failed_total` | counter | | records the store refused |
//! | `stepgate_audit_waiting` | gauge | | audit events waiting for the durable store while it is out of reach ([`crate::app::audit`]) |
//! | `stepgate_audit_written_late_total` | counter | | audit events written after waiting |
//! | `stepgate_audit_dropped_total` | counter | | audit events dropped because too many waited |
//! | `stepgate_audit_failed_total` | counter | | audit events the store refused for good |
//! | `stepgate_build_info` | gauge (1) | `version` | the running build |
//! | `stepgate_audit_stream_delivered_total` | counter | `stream` | audit events a SIEM stream delivered ([`crate::siem`]) |
//! | `stepgate_audit_stream_failures_total` | counter | `stream` | failed deliveries |
//! | `stepgate_audit_stream_lag_events` | gauge | `stream` | audit events not yet delivered |
//! | `stepgate_audit_stream_cursor` | gauge | `stream` | the last sequence number delivered |
//! | `stepgate_audit_stream_delivering` | gauge (0/1) | `stream` | 1 on the node that holds the stream's lease and delivers it |
//! | `stepgate_factor_verifications_total` | counter | `factor`, `result` | factor verifications (`success`, `failure`, `refused`, `error`), told by the authenticator ([`stepgate_authn::AuthnObserver`]) |
//! | `stepgate_lockouts_total` | counter | `target` | accounts locked (`user`) and addresses banned (`ip`) |
//! | `stepgate_cache_hits_total` | counter | | reads the node's read cache answered (sessions, users, devices, sign-in histories; hit ratio: hits / (hits + misses)) |
//! | `stepgate_cache_misses_total` | counter | | reads it passed to the stores |
//! | `stepgate_sessions_live` | gauge | | live sessions in the hot store (all nodes), counted at a scrape: at each on SQLite, at most every 30 s on Redis (a count scans its keys) |
//! | `stepgate_connector_syncs_total` | counter | `connector`, `result` | device connector syncs, `success` or `failure` |
//! | `stepgate_connector_sync_duration_seconds` | histogram | `connector`, `result` | how long a sync took (listing the UEM and applying every device) |
//! | `stepgate_connector_device_errors_total` | counter | `connector` | devices a successful sync could not map or apply |
//! | `stepgate_connector_last_success_timestamp_seconds` | gauge | `connector` | Unix time of the last successful sync (this node's, or another node's seen in the store) |
//! | `stepgate_connector_devices` | gauge | `connector` | devices the last successful sync listed |
//! | `stepgate_connector_devices_non_compliant` | gauge | `connector` | of those, devices reported non-compliant |
//! | `stepgate_connector_stale` | gauge (0/1) | `connector` | 1 while the connector's devices do not count as compliant (no success for longer than `stale_after`) |
//! | `stepgate_oidc_backchannel_logouts_total` | counter | `outcome` | back-channel logout tries ([`BACKCHANNEL_OUTCOMES`]) |
//! | `stepgate_store_operation_duration_seconds` | histogram | `operation` | durable store calls, by the [`stepgate_store::DurableStore`] method ([`store`]) |
//! | `stepgate_store_errors_total` | counter | `operation` | of those, failed (a conflict or a missing record is an answer, not counted) |
//! | `stepgate_hot_store_operation_duration_seconds` | histogram | `operation` | hot store calls, by the [`stepgate_store::HotStore`] method ([`store`]) |
//! | `stepgate_hot_store_errors_total` | counter | `operation` | of those, failed |
//! | `stepgate_signal_duration_seconds` | histogram | `provider` | signal provider calls of the access pipeline ([`PROVIDERS`]) |
//! | `stepgate_signal_errors_total` | counter | `provider` | of those, failed |
//!
//! `outcome` is `allow`, `sign_in`, `step_up`, `deny` or `unavailable`. Recording is cheap
//! on the request path: each worker thread keeps the series of the apps it has served, so a
//! request costs a lookup by app id and a few atomic adds, never a label built.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::access::Verdict;

mod boundary;
mod connectors;
mod endpoint;
mod store;
pub use boundary::{SignalCalls, SignalProvider, StoreCalls, PROVIDERS};
pub use endpoint::SCANNED_COUNT_EVERY;
pub use store::{timed as timed_store, TimedDurable, TimedHot, HOT_OPERATIONS, OPERATIONS};

/// Name and help of the node's own series, in the order [`Metrics::register`] takes them.
const OWN: [(&str, &str); 10] = [
    ("stepgate_requests", "App requests answered (proxy and forward-auth), by app and outcome"),
    ("stepgate_request_duration_seconds", "Time from reading an app request to its answer's headers"),
    ("stepgate_decisions", "Decisions of the access pipeline, by kind (access, sign_in) and outcome"),
    ("stepgate_decision_duration_seconds", "Time the access pipeline took to decide"),
    ("stepgate_policy_outcomes", "Step-ups and denies by the deciding policy"),
    ("stepgate_decision_log_queue_depth", "Decision records waiting to be written"),
    ("stepgate_factor_verifications", "Factor verifications by factor and result (success, failure, refused, error)"),
    ("stepgate_lockouts", "Accounts locked (target user) and addresses banned (target ip) by the sign-in regulation"),
    ("stepgate_sessions_live", "Live sessions in the hot store (all nodes); counted at a scrape, at most every 30 s on Redis"),
    ("stepgate_oidc_backchannel_logouts", "Back-channel logout tries, by outcome: delivered, refused (4xx: not tried again), retried (failed, tried again after a backoff), dropped (failed for the last time, or the retry queue was full)"),
];

/// The series other services keep, registered with the node's ([`Metrics::new`]); each
/// `None` leaves its series out.
#[derive(Default)]
pub struct Sources<'a> {
    /// The decision log's counters.
    pub log: Option<&'a crate::access::decision_log::LogStats>,
    /// The audit outbox's ([`crate::app::audit`]).
    pub audit: Option<&'a crate::app::audit::AuditStats>,
    /// The read cache's lookups.
    pub cache: Option<&'a CacheLookups>,
    /// The stores' calls ([`TimedDurable`], [`TimedHot`]).
    pub store: Option<&'a StoreCalls>,
    /// The signal providers' calls.
    pub signals: Option<&'a SignalCalls>,
}

impl Sources<'_> {
    fn register(&self, r: &mut Registry) {
        if let Some(c) = self.cache {
            r.register("stepgate_cache_hits", "Reads answered by the node's read cache (sessions, users, devices, sign-in histories)", c.hits.clone());
            r.register("stepgate_cache_misses", "Reads the node's read cache passed to the stores (absent, expired, or dropped after a change)", c.misses.clone());
        }
        self.register_log(r);
        self.register_audit(r);
        if let Some(store) = self.store {
            store.register(r);
        }
        if let Some(signals) = self.signals {
            signals.register(r);
        }
    }

    /// The decision log's series.
    fn register_log(&self, r: &mut Registry) {
        if let Some(log) = self.log {
            r.register(
                "stepgate_decision_log_dropped",
                "Decision records dropped because the queue was full",
                log.dropped.clone(),
            );
            r.register(
                "stepgate_decision_log_written",
                "Decision records written to the store",
                log.written.clone(),
            );
            r.register(
                "stepgate_decision_log_sampled_out",
                "Allowed app requests not recorded (log.decisions.allowed_one_in)",
                log.sampled_out.clone(),
            );
            r.register(
                "stepgate_decision_log_waiting",
                "Decision records kept in memory while the durable store is out of reach",
                log.waiting.clone(),
            );
            r.register(
                "stepgate_decision_log_failed",
                "Decision records the store refused",
                log.failed.clone(),
            );
        }
    }

    /// The audit outbox's series.
    fn register_audit(&self, r: &mut Registry) {
        if let Some(audit) = self.audit {
            r.register(
                "stepgate_audit_waiting",
                "Audit events waiting for the durable store (it was out of reach)",
                audit.waiting.clone(),
            );
            r.register(
                "stepgate_audit_written_late",
                "Audit events written after waiting for the durable store",
                audit.written_late.clone(),
            );
            r.register(
                "stepgate_audit_dropped",
                "Audit events dropped because too many waited for the durable store",
                audit.dropped.clone(),
            );
            r.register(
                "stepgate_audit_failed",
                "Audit events the durable store refused",
                audit.failed.clone(),
            );
        }
    }
}

/// The `outcome` label of a verdict.
pub fn outcome(v: &Verdict) -> &'static str {
    match v {
        Verdict::Allow(_) => "allow",
        Verdict::SignIn(_) => "sign_in",
        Verdict::StepUp(_) => "step_up",
        Verdict::Deny(_) => "deny",
        Verdict::Unavailable(_) => "unavailable",
    }
}

const OUTCOMES: [&str; 5] = ["allow", "sign_in", "step_up", "deny", "unavailable"];

fn outcome_index(o: &str) -> usize {
    OUTCOMES.iter().position(|x| *x == o).unwrap_or(4)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppOutcome {
    app: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// What became of one back-channel logout try.
pub const BACKCHANNEL_OUTCOMES: [&str; 4] = ["delivered", "refused", "retried", "dropped"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FactorResult {
    factor: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockoutTarget {
    target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyOutcome {
    policy: String,
    outcome: &'static str,
}

/// Latency buckets: 100 µs to about 3.3 s, doubling.
pub(crate) fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The read cache's lookups (`session::cache`), counted where they happen.
#[derive(Clone, Debug, Default)]
pub struct CacheLookups {
    /// Answered from the cache.
    pub hits: Counter,
    /// Passed to the store.
    pub misses: Counter,
}

/// The node's metrics (see the module documentation).
pub struct Metrics {
    id: u64,
    registry: Registry,
    requests: Family<AppOutcome, Counter>,
    request_seconds: Family<AppOutcome, Histogram, fn() -> Histogram>,
    decisions: Family<KindOutcome, Counter>,
    decision_seconds: Family<KindOutcome, Histogram, fn() -> Histogram>,
    policy_outcomes: Family<PolicyOutcome, Counter>,
    log_queue: Gauge,
    connectors: connectors::ConnectorSeries,
    /// The SIEM streams' series ([`crate::siem`]).
    pub streams: crate::siem::StreamStats,
    factor_verifications: Family<FactorResult, Counter>,
    lockouts: Family<LockoutTarget, Counter>,
    sessions_live: Gauge,
    sessions_counted: endpoint::LastCount,
    backchannel_logouts: Family<Outcome, Counter>,
    addr: OnceLock<SocketAddr>,
}

/// One app's series on this thread, by outcome.
struct AppSeries {
    requests: [Counter; 5],
    seconds: [Histogram; 5],
}

/// One `Metrics`' series on this thread, looked up without building a label or taking the
/// family's lock: per app, and per decision kind and outcome.
#[derive(Default)]
struct ThreadSeries {
    apps: FxHashMap<Box<str>, AppSeries>,
    decisions: [[Option<(Counter, Histogram)>; 5]; 2],
}

thread_local! {
    /// Per `Metrics` (by id): its series on this thread.
    static SERIES: RefCell<FxHashMap<u64, ThreadSeries>> = RefCell::default();
}

static IDS: AtomicU64 = AtomicU64::new(1);

impl Metrics {
    /// The node's metrics, with the series other services keep (`sources`) among them.
    pub fn new(sources: Sources<'_>) -> Self {
        let backchannel_logouts = Family::<Outcome, Counter>::default();
        for outcome in BACKCHANNEL_OUTCOMES {
            let _ = backchannel_logouts.get_or_create(&Outcome { outcome });
        }
        let m = Metrics {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            registry: Registry::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            decisions: Family::default(),
            decision_seconds: Family::new_with_constructor(latency),
            policy_outcomes: Family::default(),
            log_queue: Gauge::default(),
            connectors: connectors::ConnectorSeries::default(),
            streams: crate::siem::StreamStats::default(),
            factor_verifications: Family::default(),
            lockouts: Family::default(),
            sessions_live: Gauge::default(),
            sessions_counted: endpoint::LastCount::default(),
            backchannel_logouts,
            addr: OnceLock::new(),
        };
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.connectors.register(&mut registry);
        m.streams.register(&mut registry);
        sources.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// The node's own series (the table in [`OWN`]), and the build.
    fn register(&self, r: &mut Registry) {
        let [requests, request_seconds, decisions, decision_seconds, policy_outcomes, log_queue, factors, lockouts, sessions_live, backchannel] =
            OWN;
        r.register(requests.0, requests.1, self.requests.clone());
        r.register(
            request_seconds.0,
            request_seconds.1,
            self.request_seconds.clone(),
        );
        r.register(decisions.0, decisions.1, self.decisions.clone());
        r.register(
            decision_seconds.0,
            decision_seconds.1,
            self.decision_seconds.clone(),
        );
        r.register(
            policy_outcomes.0,
            policy_outcomes.1,
            self.policy_outcomes.clone(),
        );
        r.register(log_queue.0, log_queue.1, self.log_queue.clone());
        r.register(factors.0, factors.1, self.factor_verifications.clone());
        r.register(lockouts.0, lockouts.1, self.lockouts.clone());
        r.register(sessions_live.0, sessions_live.1, self.sessions_live.clone());
        r.register(
            backchannel.0,
            backchannel.1,
            self.backchannel_logouts.clone(),
        );
        // A gauge of 1 rather than an OpenMetrics `info`: the Prometheus text format (and
        // `promtool check metrics`) knows no `info` type.
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        r.register("stepgate_build_info", "The running build", build);
    }

    /// A back-channel logout try ended with `outcome` (one of [`BACKCHANNEL_OUTCOMES`]).
    pub fn backchannel_logout(&self, outcome: &'static str) {
        self.backchannel_logouts
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    /// An app request answered with `outcome` after `took`.
    pub fn request(&self, app: &str, outcome: &'static str, took: Duration) {
        let i = outcome_index(outcome);
        self.on_thread(|t| {
            if let Some(s) = t.apps.get(app) {
                s.requests[i].inc();
                s.seconds[i].observe(took.as_secs_f64());
                return;
            }
            let series = self.app_series(app);
            series.requests[i].inc();
            series.seconds[i].observe(took.as_secs_f64());
            t.apps.insert(app.into(), series);
        });
    }

    /// This `Metrics`' series on the calling thread.
    fn on_thread(&self, f: impl FnOnce(&mut ThreadSeries)) {
        SERIES.with(|cache| f(cache.borrow_mut().entry(self.id).or_default()));
    }

    /// `app`'s request series, from the families (made on first use).
    fn app_series(&self, app: &str) -> AppSeries {
        let label = |o| AppOutcome {
            app: app.to_string(),
            outcome: o,
        };
        AppSeries {
            requests: OUTCOMES.map(|o| self.requests.get_or_create(&label(o)).clone()),
            seconds: OUTCOMES.map(|o| self.request_seconds.get_or_create(&label(o)).clone()),
        }
    }

    /// A decision of the pipeline: its kind, outcome, deciding policy and how long it took.
    pub fn decision(
        &self,
        kind: stepgate_policy::RequestKind,
        outcome: &'static str,
        policy: Option<&str>,
        took: Duration,
    ) {
        let k = match kind {
            stepgate_policy::RequestKind::Access => 0,
            stepgate_policy::RequestKind::SignIn => 1,
        };
        self.on_thread(|t| {
            let (count, seconds) =
                t.decisions[k][outcome_index(outcome)].get_or_insert_with(|| {
                    let labels = KindOutcome {
                        kind: ["access", "sign_in"][k],
                        outcome,
                    };
                    (
                        self.decisions.get_or_create(&labels).clone(),
                        self.decision_seconds.get_or_create(&labels).clone(),
                    )
                });
            count.inc();
            seconds.observe(took.as_secs_f64());
        });
        if matches!(outcome, "step_up" | "deny") {
            self.policy_outcomes
                .get_or_create(&PolicyOutcome {
                    policy: policy.unwrap_or("default").to_string(),
                    outcome,
                })
                .inc();
        }
    }

    /// The exposition text (Prometheus text format 0.0.4), with the decision log's queue
    /// depth as of now.
    pub fn encode(&self, queued: usize) -> String {
        self.log_queue.set(queued as i64);
        let mut open_metrics = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry);
        endpoint::prometheus_text(&open_metrics)
    }
}

impl stepgate_authn::AuthnObserver for Metrics {
    fn verification(
        &self,
        factor: stepgate_authn::FactorKind,
        result: stepgate_authn::VerifyResult,
    ) {
        self.factor_verifications
            .get_or_create(&FactorResult {
                factor: factor.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    fn lockout(&self, target: &'static str) {
        self.lockouts.get_or_create(&LockoutTarget { target }).inc();
    }
}
