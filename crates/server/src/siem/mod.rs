//! The audit log to a SIEM: `stepgate audit export`'s formats ([`ocsf`]) and the streams
//! of `audit.stream` — RFC 5424 syslog over TCP+TLS ([`syslog`]) or an HTTPS webhook
//! ([`webhook`]).
//!
//! One task per stream reads the audit log after the stream's cursor (the sequence number of
//! the last event it delivered, kept in the durable store), delivers at most `batch` events
//! in order, and only then moves the cursor: nothing is lost across a restart or a receiver
//! that is down (the task retries, the wait doubling from 1 s to `max_backoff`), and a batch
//! the receiver took is not sent again. A delivery the receiver took whose cursor could not
//! be written (the store went away at that moment) is sent again after a restart: every
//! event carries its sequence number (`seq`, OCSF `metadata.sequence`) for a receiver to
//! drop a repeat.
//!
//! On several nodes (each configured with the same streams), one node delivers each stream:
//! the holder of the stream's lease in the durable store (`audit-stream:<name>`, held for
//! [`LEASE_TTL`] and renewed while it delivers). The others wait, and the first to find the
//! lease expired or given up (a node stopping gives its leases up) takes the stream over
//! from the cursor in the store, so N nodes deliver each event once. A holder delivers only
//! with [`DELIVER_MIN`] of its lease left, so a batch it sends cannot overlap another node's
//! unless the delivery itself outlasts that margin.

pub mod export;
pub mod ocsf;
mod syslog;
mod webhook;

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use stepgate_config::{AuditStreamConfig, AuditStreamFormat, AuditStreamKind, Config};
use stepgate_store::{AuditEvent, AuditQuery, DurableStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a stream with nothing to deliver looks for new events.
const POLL: Duration = Duration::from_secs(1);

/// How long a node holds a stream's lease without renewing it.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// A holder renews its lease when less than this is left.
const RENEW_WITHIN: Duration = Duration::from_secs(10);
/// A holder delivers a batch only with at least this much of its lease left.
pub const DELIVER_MIN: Duration = Duration::from_secs(5);

/// The first wait after a failed delivery (it doubles up to `max_backoff`).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// An event as a stream (or `stepgate audit export`) writes it.
pub fn render(format: AuditStreamFormat, e: &AuditEvent) -> serde_json::Value {
    match format {
        AuditStreamFormat::Ocsf => ocsf::to_ocsf(e),
        AuditStreamFormat::Jsonl => serde_json::to_value(e).unwrap_or_default(),
    }
}

/// How an error names a stream's settings: ``audit.stream `NAME` ``.
fn at(s: &AuditStreamConfig) -> String {
    format!("audit.stream `{}`", s.name)
}

/// A setting `key` the stream's kind requires: its `value`, or the error naming it.
fn required<'a, T: ?Sized>(at: &str, key: &str, value: Option<&'a T>) -> anyhow::Result<&'a T> {
    use anyhow::Context as _;
    value.with_context(|| format!("{at}: {key} is required"))
}

/// Where a stream delivers.
#[async_trait]
trait Sink: Send + Sync {
    /// Delivers `events` (in order); `Ok` once the receiver has them.
    async fn deliver(&mut self, events: &[AuditEvent]) -> anyhow::Result<()>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

/// The streams' metrics (registered by [`crate::metrics::Metrics`]).
#[derive(Clone, Default)]
pub struct StreamStats {
    delivered: Family<StreamLabel, Counter>,
    failures: Family<StreamLabel, Counter>,
    lag: Family<StreamLabel, Gauge>,
    cursor: Family<StreamLabel, Gauge>,
    delivering: Family<StreamLabel, Gauge>,
}

impl StreamStats {
    /// Registers the families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "stepgate_audit_stream_delivered",
            "Audit events a SIEM stream delivered, by stream",
            self.delivered.clone(),
        );
        registry.register(
            "stepgate_audit_stream_failures",
            "Failed deliveries (receiver down or refusing, store unreadable), by stream",
            self.failures.clone(),
        );
        registry.register(
            "stepgate_audit_stream_lag_events",
            "Audit events appended but not yet delivered, by stream",
            self.lag.clone(),
        );
        registry.register(
            "stepgate_audit_stream_cursor",
            "Sequence number of the last audit event the stream delivered",
            self.cursor.clone(),
        );
        registry.register(
            "stepgate_audit_stream_delivering",
            "1 when this node holds the stream's lease and delivers it, 0 when another node does",
            self.delivering.clone(),
        );
    }

    fn label(stream: &str) -> StreamLabel {
        StreamLabel {
            stream: stream.to_string(),
        }
    }
}

/// A stream ready to run: its settings and its sink.
struct Ready {
    cfg: AuditStreamConfig,
    sink: Box<dyn Sink>,
}

/// The node's SIEM streams (see the module documentation). Built from the configuration at
/// start; a change to `audit.stream` takes a restart.
pub struct Streams {
    ready: Mutex<Vec<Ready>>,
    running: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    /// This node's name as a lease holder (random, per process).
    holder: String,
}

impl Streams {
    /// The streams `config` names, their TLS settings and secrets read now: a CA, key or
    /// token that cannot be read stops the start with the stream's name.
    pub fn from_config(config: &Config) -> anyhow::Result<Streams> {
        let mut ready = Vec::new();
        for s in &config.audit.stream {
            // Relative paths are relative to the configuration's folder.
            let mut s = s.clone();
            for p in [
                &mut s.ca_file,
                &mut s.client_cert_file,
                &mut s.client_key_file,
                &mut s.secret_file,
            ] {
                *p = p.take().map(|p| config.base_dir.join(p));
            }
            let s = &s;
            let sink: Box<dyn Sink> = match s.kind {
                AuditStreamKind::Syslog => Box::new(syslog::Syslog::new(s)?),
                AuditStreamKind::Webhook => Box::new(webhook::Webhook::new(s)?),
            };
            ready.push(Ready {
                cfg: s.clone(),
                sink,
            });
        }
        Ok(Streams {
            ready: Mutex::new(ready),
            running: Mutex::default(),
            stop: watch::channel(false).0,
            holder: stepgate_store::new_id()[..16].to_string(),
        })
    }

    /// How many streams are configured and not yet started, or running.
    pub fn len(&self) -> usize {
        self.ready.lock().map_or(0, |r| r.len()) + self.running.lock().map_or(0, |r| r.len())
    }

    /// Whether no stream is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts one task per stream on the current runtime. A second call does nothing.
    pub fn spawn(&self, durable: Arc<dyn DurableStore>, stats: &StreamStats) {
        let ready = self.ready.lock().map(|mut r| std::mem::take(&mut *r));
        let Ok(ready) = ready else { return };
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in ready {
            let task = Task {
                name: r.cfg.name.clone(),
                batch: r.cfg.batch,
                max_backoff: r.cfg.max_backoff.0.max(FIRST_BACKOFF),
                sink: r.sink,
                durable: durable.clone(),
                stats: stats.clone(),
                stop: self.stop.subscribe(),
                holder: self.holder.clone(),
                held_until: None,
                label: StreamStats::label(&r.cfg.name),
                backoff: FIRST_BACKOFF,
                cursor: None,
            };
            running.push(tokio::spawn(task.run()));
        }
    }

    /// Stops the streams after the delivery under way (its cursor written) and waits for
    /// them.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = self
            .running
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
    }
}

struct Task {
    name: String,
    batch: usize,
    max_backoff: Duration,
    sink: Box<dyn Sink>,
    durable: Arc<dyn DurableStore>,
    stats: StreamStats,
    stop: watch::Receiver<bool>,
    holder: String,
    /// Until when this node surely holds the stream's lease (none: it does not).
    held_until: Option<tokio::time::Instant>,
    /// The stream's metrics label.
    label: StreamLabel,
    /// The wait after the next failure.
    backoff: Duration,
    /// The sequence number of the last event delivered, as this node knows it (none: read
    /// it from the store).
    cursor: Option<i64>,
}

impl Task {
    fn lease_name(&self) -> String {
        format!("audit-stream:{}", self.name)
    }

    /// Whether this node holds the stream's lease with [`DELIVER_MIN`] left, taking or
    /// renewing it when less than [`RENEW_WITHIN`] is left.
    async fn hold(&mut self) -> stepgate_store::StoreResult<bool> {
        let now = tokio::time::Instant::now();
        if self.held_until.is_some_and(|u| u > now + RENEW_WITHIN) {
            return Ok(true);
        }
        // Counted from before the call: the store's expiry is later than this.
        let got = self
            .durable
            .acquire_lease(&self.lease_name(), &self.holder, LEASE_TTL)
            .await?;
        self.held_until = got.then_some(now + LEASE_TTL);
        Ok(self
            .held_until
            .is_some_and(|u| u > tokio::time::Instant::now() + DELIVER_MIN))
    }

    /// Waits `d`, or less when the streams stop; whether they did.
    async fn pause(&mut self, d: Duration) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
        }
        *self.stop.borrow()
    }

    /// Delivers until the streams stop, then gives the lease up.
    async fn run(mut self) {
        tracing::info!(stream = %self.name, "audit stream started");
        while !*self.stop.borrow() {
            if let ControlFlow::Break(wait) = self.pass().await {
                if self.pause(wait).await {
                    break;
                }
            }
        }
        self.give_up_lease().await;
        tracing::info!(stream = %self.name, "audit stream stopped");
    }

    /// One pass: the lease, the cursor, the batch after it, its delivery. Breaks with how
    /// long to wait before the next pass (nothing to deliver, another node delivers, or a
    /// failure's backoff); goes on to the next pass at once after a delivery.
    async fn pass(&mut self) -> ControlFlow<Duration> {
        self.take_turn().await?;
        let after = self.current_cursor().await?;
        let page = self.next_batch(after).await?;
        self.record_lag(after).await;
        if page.is_empty() {
            return ControlFlow::Break(POLL);
        }
        self.deliver(&page).await
    }

    /// Takes or renews the lease; breaks when this node does not deliver now.
    async fn take_turn(&mut self) -> ControlFlow<Duration> {
        let held = self.held_until.is_some();
        // Lapsed (or never held): another node may have delivered since.
        let lapsed = self
            .held_until
            .is_none_or(|u| u <= tokio::time::Instant::now());
        match self.hold().await {
            Ok(true) => {
                if lapsed {
                    self.cursor = None;
                }
                if !held {
                    tracing::info!(stream = %self.name, "audit stream: this node delivers it (lease taken)");
                    self.stats.delivering.get_or_create(&self.label).set(1);
                }
                ControlFlow::Continue(())
            }
            Ok(false) => {
                // Another node delivers; the cursor is read anew when this one takes over.
                self.cursor = None;
                self.stats.delivering.get_or_create(&self.label).set(0);
                ControlFlow::Break(POLL)
            }
            Err(e) => {
                tracing::warn!(stream = %self.name, error = %e, "audit stream: cannot take or renew its lease");
                ControlFlow::Break(self.failed())
            }
        }
    }

    /// The sequence number delivered last: as this node knows it, else read from the store.
    async fn current_cursor(&mut self) -> ControlFlow<Duration, i64> {
        if let Some(c) = self.cursor {
            return ControlFlow::Continue(c);
        }
        match self.durable.audit_stream_cursor(&self.name).await {
            Ok(c) => {
                let c = c.unwrap_or(0);
                self.stats.cursor.get_or_create(&self.label).set(c);
                self.cursor = Some(c);
                ControlFlow::Continue(c)
            }
            Err(e) => {
                tracing::warn!(stream = %self.name, error = %e, "audit stream: cannot read its cursor");
                ControlFlow::Break(self.failed())
            }
        }
    }

    /// At most `batch` events after `after`, in order.
    async fn next_batch(&mut self, after: i64) -> ControlFlow<Duration, Vec<AuditEvent>> {
        let q = AuditQuery {
            after_seq: Some(after),
            limit: u32::try_from(self.batch).unwrap_or(u32::MAX),
            ..AuditQuery::default()
        };
        match self.durable.list_audit(&q).await {
            Ok(page) => ControlFlow::Continue(page),
            Err(e) => {
                tracing::warn!(stream = %self.name, error = %e, "audit stream: cannot read the audit log");
                ControlFlow::Break(self.failed())
            }
        }
    }

    /// Delivers `page` (not empty), then moves the cursor past it.
    async fn deliver(&mut self, page: &[AuditEvent]) -> ControlFlow<Duration> {
        if let Err(e) = self.sink.deliver(page).await {
            tracing::warn!(
                stream = %self.name,
                error = format!("{e:#}"),
                first_seq = page[0].seq,
                retry_in_s = self.backoff.as_secs(),
                "audit stream: delivery failed"
            );
            return ControlFlow::Break(self.failed());
        }
        let last = page[page.len() - 1].seq;
        self.backoff = FIRST_BACKOFF;
        self.stats
            .delivered
            .get_or_create(&self.label)
            .inc_by(page.len() as u64);
        self.stats.cursor.get_or_create(&self.label).set(last);
        self.cursor = Some(last);
        // The receiver has the batch: the cursor must move before anything else (a stop
        // included), or a restart would send it again.
        let mut wait = FIRST_BACKOFF;
        while let Err(e) = self.durable.set_audit_stream_cursor(&self.name, last).await {
            tracing::warn!(stream = %self.name, error = %e, seq = last, "audit stream: cannot write its cursor; retrying");
            self.stats.failures.get_or_create(&self.label).inc();
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.max_backoff);
        }
        self.record_lag(last).await;
        ControlFlow::Continue(())
    }

    /// Counts a failure; the wait before the next try (which doubles, up to
    /// `max_backoff`, until a delivery succeeds).
    fn failed(&mut self) -> Duration {
        self.stats.failures.get_or_create(&self.label).inc();
        let wait = self.backoff;
        self.backoff = (wait * 2).min(self.max_backoff);
        wait
    }

    /// Gives the lease up, when held, so that another node takes the stream over at once.
    async fn give_up_lease(&self) {
        if self.held_until.is_none() {
            return;
        }
        if let Err(e) = self
            .durable
            .release_lease(&self.lease_name(), &self.holder)
            .await
        {
            tracing::warn!(stream = %self.name, error = %e, "audit stream: could not give its lease up; another node takes over when it expires");
        }
    }

    /// The lag: the newest event's sequence number past `delivered`.
    async fn record_lag(&self, delivered: i64) {
        let head = self
            .durable
            .list_audit(&AuditQuery {
                newest_first: true,
                limit: 1,
                ..AuditQuery::default()
            })
            .await;
        if let Ok(Some(h)) = head.map(|v| v.first().map(|e| e.seq)) {
            self.stats
                .lag
                .get_or_create(&self.label)
                .set((h - delivered).max(0));
        }
    }
}
