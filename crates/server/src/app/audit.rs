//! The audit outbox: audit events of things that already happened, kept until the durable
//! store takes them.
//!
//! A sign-out, a refused CAEP event, a device API push or a rate-limit window ends whether or
//! not PostgreSQL answers at that moment; its audit event must not be lost because the
//! database was briefly out of reach. [`AuditOutbox::append`] tries the store; when the
//! store is out of reach ([`StoreError::is_transient`]) the event waits in a bounded queue,
//! in order, and a task writes the queue when the store is back (retrying every second,
//! backing off to [`MAX_BACKOFF`]). While anything waits, later events queue behind it, so
//! the audit trail keeps the order things happened in (each event also carries its own time).
//!
//! When more than [`HOLD`] events wait, the oldest is dropped and counted
//! (`stepgate_audit_dropped_total`): memory is bounded, and the count says what is missing.
//! An event the store refuses for a reason retrying cannot fix (a constraint, corrupt data)
//! is logged and counted as failed. When the node stops gracefully, what waits gets a last
//! try ([`AuditOutbox::flush`], within `server.shutdown_grace`); events still waiting after
//! it are logged as lost with their kinds.
//!
//! What does *not* come here: the audit events an operation cannot do without (a factor
//! enrolled, a lockout recorded by the authenticator) are written in line, and the operation
//! is refused when they cannot be — see docs/deploy.md, "When PostgreSQL is down".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use stepgate_store::{DurableStore, NewAuditEvent};
use tokio::sync::Notify;

/// How many audit events wait for the store, at most.
pub const HOLD: usize = 10_000;

/// The longest pause between two tries while the store is out of reach.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How the outbox is doing (exported as metrics: [`crate::metrics`]).
#[derive(Default)]
pub struct AuditStats {
    /// Events waiting for the store.
    pub waiting: Gauge,
    /// Events written after waiting.
    pub written_late: Counter,
    /// Events dropped because [`HOLD`] were already waiting.
    pub dropped: Counter,
    /// Events the store refused for good.
    pub failed: Counter,
}

/// See the module documentation.
pub struct AuditOutbox {
    durable: Arc<dyn DurableStore>,
    waiting: Mutex<VecDeque<NewAuditEvent>>,
    hold: usize,
    wake: Arc<Notify>,
    stats: Arc<AuditStats>,
    /// Held while waiting events are written: the writer task and a stop's last try
    /// ([`AuditOutbox::flush`]) never write the same event twice.
    writing: tokio::sync::Mutex<()>,
}

impl AuditOutbox {
    /// An outbox in front of `durable`, holding up to [`HOLD`] events; its writer starts
    /// with [`AuditOutbox::spawn_writer`].
    pub fn new(durable: Arc<dyn DurableStore>) -> Arc<Self> {
        Self::holding(durable, HOLD)
    }

    /// [`AuditOutbox::new`] with another bound (tests).
    pub fn holding(durable: Arc<dyn DurableStore>, hold: usize) -> Arc<Self> {
        Arc::new(AuditOutbox {
            durable,
            waiting: Mutex::default(),
            hold: hold.max(1),
            wake: Arc::new(Notify::new()),
            stats: Arc::default(),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// The outbox's counters.
    pub fn stats(&self) -> &Arc<AuditStats> {
        &self.stats
    }

    /// How many events wait for the store.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Writes `event` now, or keeps it until the store is back (module documentation).
    pub async fn append(&self, event: NewAuditEvent) {
        if self.waiting() > 0 {
            self.keep(event);
            return;
        }
        match self.durable.append_audit(&event).await {
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, kind = %event.kind, "the audit event waits: the store is out of reach");
                self.keep(event);
            }
            Err(e) => {
                self.stats.failed.inc();
                tracing::error!(error = %e, kind = %event.kind, "the store refused an audit event");
            }
        }
    }

    fn keep(&self, event: NewAuditEvent) {
        let Ok(mut waiting) = self.waiting.lock() else {
            self.stats.dropped.inc();
            return;
        };
        if waiting.len() >= self.hold {
            if let Some(old) = waiting.pop_front() {
                self.stats.dropped.inc();
                tracing::error!(kind = %old.kind, at = %old.time, waiting = waiting.len(), "audit event dropped: too many wait for the store");
            }
        }
        waiting.push_back(event);
        self.stats.waiting.set(waiting.len() as i64);
        drop(waiting);
        self.wake.notify_one();
    }

    /// Starts the task that writes waiting events when the store is back. It ends when the
    /// outbox is dropped. Call once, on a runtime.
    pub fn spawn_writer(self: &Arc<Self>) {
        let outbox = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move { drain(outbox, wake).await });
    }

    /// A last try at writing what waits, when the node stops: the store may be back while
    /// the writer task still backs off (up to [`MAX_BACKOFF`]), and what waits is lost with
    /// the process. `Err` when the store is still out of reach (what waits is then logged
    /// as lost when the outbox is dropped).
    pub async fn flush(&self) -> Result<(), stepgate_store::StoreError> {
        self.write_waiting().await
    }

    /// Writes what waits, oldest first, until the queue is empty or the store fails;
    /// `Err` with the error when it is still out of reach.
    async fn write_waiting(&self) -> Result<(), stepgate_store::StoreError> {
        let _writing = self.writing.lock().await;
        loop {
            let Some(next) = self.waiting.lock().ok().and_then(|w| w.front().cloned()) else {
                return Ok(());
            };
            match self.durable.append_audit(&next).await {
                Ok(_) => {
                    self.stats.written_late.inc();
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    self.stats.failed.inc();
                    tracing::error!(error = %e, kind = %next.kind, "the store refused an audit event that waited");
                }
            }
            if let Ok(mut waiting) = self.waiting.lock() {
                // The front is still `next` unless it was dropped for room meanwhile.
                if waiting.front() == Some(&next) {
                    waiting.pop_front();
                }
                self.stats.waiting.set(waiting.len() as i64);
                if waiting.is_empty() {
                    tracing::info!("the audit events that waited are written");
                    return Ok(());
                }
            }
        }
    }
}

impl Drop for AuditOutbox {
    fn drop(&mut self) {
        if let Ok(waiting) = self.waiting.lock() {
            if !waiting.is_empty() {
                let kinds: Vec<&str> = waiting.iter().map(|e| e.kind.as_str()).collect();
                tracing::error!(
                    lost = waiting.len(),
                    ?kinds,
                    "audit events lost: the node stopped while the store was out of reach"
                );
            }
        }
    }
}

async fn drain(outbox: Weak<AuditOutbox>, wake: Arc<Notify>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let pending = match outbox.upgrade() {
            Some(o) => o.waiting() > 0,
            None => return,
        };
        if !pending {
            backoff = Duration::from_secs(1);
            // Woken by the next kept event; the timeout only lets the task see that the
            // outbox is gone.
            let _ = tokio::time::timeout(Duration::from_secs(60), wake.notified()).await;
            continue;
        }
        tokio::time::sleep(backoff).await;
        let Some(o) = outbox.upgrade() else { return };
        match o.write_waiting().await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %e, waiting = o.waiting(), retry_in = ?backoff, "audit events still wait: the store is out of reach");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
