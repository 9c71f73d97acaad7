//! The decision log: one record per decision of the pipeline, written off the request path.
//!
//! [`crate::access::Access`] hands every decision it makes to [`DecisionLog::record`] (the
//! one place decisions are recorded, whatever the entry point). What the request path pays
//! is small and fixed: the decision's context is *moved* into the record (it was built for
//! the policies anyway), a session id and a policy name are copied, and the record goes into
//! a bounded queue. Everything else — the session's handle (a MAC, never the id), the trace
//! of every policy and condition against the context (for decisions that did not simply
//! allow), the JSON — is done by the writer, a task that takes records off the queue in
//! batches and appends them to the durable store.
//!
//! When the queue is full, an allowed (or sign-in, or unavailable) request's record is
//! dropped and counted, except every [`SAMPLE_WHEN_FULL`]th, which waits for room; a deny's
//! or a step-up's waits for room: they are never dropped. The writer also deletes records
//! older than `log.decisions.retention`, and past `log.decisions.max_rows` the oldest, once
//! an hour (and at start).
//!
//! When the store is out of reach (`StoreError::is_transient`), the writer keeps the records
//! in memory, in order, and writes them when it is back (retrying every second, backing off
//! to 10 s). At most [`HOLD`] wait: past that the oldest allowed record is dropped first, and
//! the oldest of any kind only when nothing else is left (memory is bounded; each drop is
//! counted in `stepgate_decision_log_dropped_total`). A flush answers once a record is
//! written *or* waiting.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use stepgate_policy::{OutcomeKind, RequestContext, RequestKind, StepUpRequirement};
use stepgate_store::{DecisionRecord, DurableStore, UserRecord};
use tokio::sync::{mpsc, oneshot};

use super::verdict::{Judged, Verdict};
use crate::app::signer::Signer;
use crate::app::state::AppState;

/// Of the droppable records that find the queue full, one in this many waits for room.
pub const SAMPLE_WHEN_FULL: u64 = 100;

/// How many records the writer appends in one transaction, at most.
const BATCH: usize = 256;

/// How many records wait in memory while the store is out of reach, at most.
const HOLD: usize = 10_000;

/// The longest pause between two tries while the store is out of reach.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How many session handles the writer keeps.
const HANDLES: usize = 10_000;

/// A request's id: unique across nodes and restarts (a random per-process prefix and a
/// counter), returned to the client in [`REQUEST_ID_HEADER`], shown on the blocked and
/// step-up pages and the key of its decision in the log. Built without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 24]);

/// The response header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// The id of the HTTP request being served (set around each request by the server's
    /// connection service; [`RequestId::current`] reads it).
    pub static CURRENT_REQUEST: RequestId;
}

impl RequestId {
    /// The id of the HTTP request this task is serving (the one its log lines carry), or a
    /// new one outside a request (a CAEP re-evaluation, a test calling a handler).
    pub fn current() -> Self {
        CURRENT_REQUEST.try_with(|id| *id).unwrap_or_default()
    }

    /// A new id.
    pub fn new() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(rand::random::<u64>) & 0xffff_ffff_ffff;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
        let mut buf = [0u8; 24];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, v) in [prefix, n].into_iter().enumerate() {
            for j in 0..12 {
                buf[i * 12 + j] = HEX[((v >> (4 * (11 - j))) & 0xf) as usize];
            }
        }
        RequestId(buf)
    }

    /// The id as text (24 lower-case hex digits).
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or("000000000000000000000000")
    }
}

/// Sets `id` as `response`'s [`REQUEST_ID_HEADER`] (replacing one an upstream set: the id
/// names stepgate's decision on the request).
pub fn set_header(response: &mut axum::response::Response, id: RequestId) {
    if let Ok(v) = axum::http::HeaderValue::from_str(id.as_str()) {
        response
            .headers_mut()
            .insert(axum::http::HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

/// What the evaluation stage leaves the decision log: the context the policies read and
/// the report-only policies that matched ahead of the decision.
#[derive(Default)]
pub struct Trail {
    /// The context (moved here once the verdict is reached).
    pub context: Option<RequestContext>,
    /// The report-only policies that matched, in priority order.
    pub report_only: Vec<ReportOnly>,
}

/// A report-only policy that matched, and what it would have done.
pub struct ReportOnly {
    /// Its name.
    pub policy: Box<str>,
    /// Its outcome.
    pub outcome: OutcomeKind,
    /// Its step-up requirement.
    pub requirement: Option<StepUpRequirement>,
}

/// A decision on its way to the writer: what the request path knows, unformatted.
pub struct Pending {
    id: RequestId,
    time: DateTime<Utc>,
    kind: RequestKind,
    generation: u64,
    user: Option<Arc<UserRecord>>,
    session_id: Option<String>,
    /// The client address (the context has it only when some policy reads the network).
    ip: Option<IpAddr>,
    /// The request in its own words, when no context was built (it never reached the
    /// policies).
    request: Option<(Option<String>, String, String)>,
    policy: Option<Box<str>>,
    policy_outcome: Option<OutcomeKind>,
    outcome: &'static str,
    requirement: Option<StepUpRequirement>,
    trail: Trail,
}

/// The subject's part of a record, read before the subject is handed on.
pub struct Who {
    /// The user.
    pub user: Option<Arc<UserRecord>>,
    /// The stored session's id (made a handle by the writer).
    pub session_id: Option<String>,
}

impl Pending {
    /// The record of `judged`, the verdict on `req`.
    pub fn new(
        req: &super::AccessRequest<'_>,
        generation: u64,
        who: Who,
        judged: &Judged<'_>,
        trail: Trail,
    ) -> Box<Self> {
        let (outcome, requirement) = match &judged.verdict {
            Verdict::Allow(_) => ("allow", None),
            Verdict::SignIn(_) => ("sign_in", None),
            Verdict::StepUp(s) => ("step_up", Some(s.requirement.clone())),
            Verdict::Deny(_) => ("deny", None),
            Verdict::Unavailable(_) => ("unavailable", None),
        };
        let request = trail.context.is_none().then(|| {
            (
                req.app.map(str::to_string),
                req.method.as_str().to_string(),
                req.path.to_string(),
            )
        });
        Box::new(Pending {
            id: req.id,
            time: req.now,
            kind: req.kind,
            generation,
            user: who.user,
            session_id: who.session_id,
            ip: req.ip,
            request,
            policy: judged.decision.and_then(|d| d.policy).map(Box::from),
            policy_outcome: judged.decision.map(|d| d.outcome.kind()),
            outcome,
            requirement,
            trail,
        })
    }

    /// Whether the record must reach the log even when the queue is full.
    fn must_keep(&self) -> bool {
        matches!(self.outcome, "deny" | "step_up")
    }
}

enum Message {
    Record(Box<Pending>),
    Flush(oneshot::Sender<()>),
}

/// How the log is doing (exported as metrics: [`crate::metrics`]).
#[derive(Default)]
pub struct LogStats {
    /// Records dropped because the queue was full (or the writer gone).
    pub dropped: Counter,
    /// Records appended to the store.
    pub written: Counter,
    /// Records lost because the store refused a batch.
    pub failed: Counter,
    /// Allowed app requests not recorded (`log.decisions.allowed_one_in`).
    pub sampled_out: Counter,
    /// Records kept in memory while the store is out of reach.
    pub waiting: Gauge,
}

/// The queue into the decision log (see the module documentation).
pub struct DecisionLog {
    tx: mpsc::Sender<Message>,
    rx: Mutex<Option<mpsc::Receiver<Message>>>,
    stats: Arc<LogStats>,
    full: AtomicU64,
    /// Allowed app requests seen, for `log.decisions.allowed_one_in`.
    allowed: AtomicU64,
}

impl DecisionLog {
    /// Whether `judged` is recorded: always, but for an allowed app request, which is
    /// recorded one in `log.decisions.allowed_one_in` (counted otherwise).
    pub fn keeps(
        &self,
        rt: &crate::app::state::Runtime,
        req: &super::AccessRequest<'_>,
        judged: &Judged<'_>,
    ) -> bool {
        let sampled =
            matches!(judged.verdict, Verdict::Allow(_)) && matches!(req.kind, RequestKind::Access);
        if !sampled {
            return true;
        }
        let one_in = rt.config.log.decisions.allowed_one_in;
        let keep = match one_in {
            0 => false,
            1 => true,
            n => self
                .allowed
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(n),
        };
        if !keep {
            self.stats.sampled_out.inc();
        }
        keep
    }

    /// A log whose queue holds `capacity` records; its writer starts with
    /// [`DecisionLog::spawn_writer`].
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        DecisionLog {
            tx,
            rx: Mutex::new(Some(rx)),
            stats: Arc::default(),
            full: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
        }
    }

    /// Hands a record to the writer (see the module documentation for a full queue).
    pub async fn record(&self, pending: Box<Pending>) {
        let msg = match self.tx.try_send(Message::Record(pending)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.dropped.inc();
                return;
            }
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        let keep = match &msg {
            Message::Record(p) => {
                p.must_keep()
                    || (self.full.fetch_add(1, Ordering::Relaxed) + 1)
                        .is_multiple_of(SAMPLE_WHEN_FULL)
            }
            Message::Flush(_) => true,
        };
        if !keep || self.tx.send(msg).await.is_err() {
            self.stats.dropped.inc();
        }
    }

    /// Waits until every record handed over before this call is in the store, was refused
    /// by it, or waits in memory for it to come back.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// How many records wait in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The log's counters.
    pub fn stats(&self) -> &Arc<LogStats> {
        &self.stats
    }

    /// Starts the writer on the current runtime: it appends what the queue holds to `st`'s
    /// durable store, and prunes by age. It ends when the log is dropped, after writing what
    /// is left. A second call does nothing.
    pub fn spawn_writer(&self, st: &Arc<AppState>) {
        let Some(rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let writer = Writer {
            durable: st.stores.durable.clone(),
            signer: st.signer.clone(),
            handles: Mutex::default(),
            state: Arc::downgrade(st),
            stats: self.stats.clone(),
            held: VecDeque::new(),
        };
        tokio::spawn(writer.run(rx));
    }
}

struct Writer {
    durable: Arc<dyn DurableStore>,
    signer: Signer,
    /// Session id → handle, for the sessions seen lately (a MAC each time costs more
    /// than the rest of a record); emptied when it holds [`HANDLES`].
    handles: Mutex<std::collections::HashMap<String, String>>,
    state: std::sync::Weak<AppState>,
    stats: Arc<LogStats>,
    /// Records kept while the store is out of reach, oldest first.
    held: VecDeque<DecisionRecord>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inbox = Vec::with_capacity(BATCH);
        let mut backoff = Duration::from_secs(1);
        loop {
            let retry = !self.held.is_empty();
            tokio::select! {
                n = rx.recv_many(&mut inbox, BATCH) => {
                    if n == 0 {
                        self.retry().await;
                        if !self.held.is_empty() {
                            tracing::error!(lost = self.held.len(), "decision records lost: the node stopped while the store was out of reach");
                        }
                        return;
                    }
                    self.write(&mut inbox).await;
                }
                _ = prune.tick() => self.prune().await,
                _ = tokio::time::sleep(backoff), if retry => {
                    if self.retry().await {
                        backoff = Duration::from_secs(1);
                    } else {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    async fn write(&mut self, inbox: &mut Vec<Message>) {
        let rt = self.state.upgrade().map(|st| st.runtime.load_full());
        let mut records = Vec::with_capacity(inbox.len());
        let mut flushed = Vec::new();
        for m in inbox.drain(..) {
            match m {
                Message::Record(p) => records.push(to_record(*p, rt.as_deref(), self)),
                Message::Flush(done) => flushed.push(done),
            }
        }
        if !self.held.is_empty() {
            // Behind what already waits, in order.
            self.hold(records);
        } else if !records.is_empty() {
            let n = records.len() as u64;
            match self.durable.append_decisions(&records).await {
                Ok(()) => {
                    self.stats.written.inc_by(n);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, records = n, "decision records wait: the store is out of reach");
                    self.hold(records);
                }
                Err(e) => {
                    self.stats.failed.inc_by(n);
                    tracing::error!(error = %e, records = n, "the decision log could not write to the store");
                }
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }

    /// Keeps `records` until the store is back: at most [`HOLD`], dropping (and counting)
    /// the oldest allowed record first, and the oldest of any kind when none is left.
    fn hold(&mut self, records: Vec<DecisionRecord>) {
        for r in records {
            if self.held.len() >= HOLD {
                let victim = self
                    .held
                    .iter()
                    .position(|h| !matches!(h.outcome.as_str(), "deny" | "step_up"))
                    .unwrap_or(0);
                self.held.remove(victim);
                self.stats.dropped.inc();
            }
            self.held.push_back(r);
        }
        self.stats.waiting.set(self.held.len() as i64);
    }

    /// Writes what waits, a batch at a time; whether nothing waits any more.
    async fn retry(&mut self) -> bool {
        while !self.held.is_empty() {
            let n = self.held.len().min(BATCH);
            let batch: Vec<DecisionRecord> = self.held.iter().take(n).cloned().collect();
            match self.durable.append_decisions(&batch).await {
                Ok(()) => {
                    self.held.drain(..n);
                    self.stats.written.inc_by(n as u64);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, waiting = self.held.len(), "decision records still wait: the store is out of reach");
                    self.stats.waiting.set(self.held.len() as i64);
                    return false;
                }
                Err(e) => {
                    self.held.drain(..n);
                    self.stats.failed.inc_by(n as u64);
                    tracing::error!(error = %e, records = n, "the decision log could not write records that waited");
                }
            }
        }
        self.stats.waiting.set(0);
        tracing::info!("the decision records that waited are written");
        true
    }

    /// The handle of session `id` (see [`Writer::handles`]).
    fn handle(&self, id: String) -> String {
        let Ok(mut handles) = self.handles.lock() else {
            return self.signer.session_handle(&id);
        };
        if let Some(h) = handles.get(&id) {
            return h.clone();
        }
        if handles.len() >= HANDLES {
            handles.clear();
        }
        let h = self.signer.session_handle(&id);
        handles.insert(id, h.clone());
        h
    }

    async fn prune(&self) {
        let Some(st) = self.state.upgrade() else {
            return;
        };
        let (keep, max_rows) = {
            let rt = st.runtime.load();
            let d = &rt.config.log.decisions;
            (d.retention.0, d.max_rows)
        };
        let before = Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        match self.durable.purge_decisions(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "decision log: deleted decisions past retention"
            ),
            Err(e) => tracing::warn!(error = %e, "decision log: pruning failed"),
        }
        if max_rows > 0 {
            match self.durable.trim_decisions(max_rows).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    deleted = n,
                    max_rows,
                    "decision log: deleted the oldest decisions past log.decisions.max_rows"
                ),
                Err(e) => tracing::warn!(error = %e, "decision log: trimming to max_rows failed"),
            }
        }
    }
}

/// The stored form of a pending decision. The trace (of a decision that did not simply
/// allow) is worked out here, off the request path, under the configuration the decision was
/// made under when it is still in force; otherwise the context alone is kept, and
/// `stepgate explain` traces it again.
fn to_record(
    mut p: Pending,
    rt: Option<&crate::app::state::Runtime>,
    w: &Writer,
) -> DecisionRecord {
    let ctx = p.trail.context.as_ref();
    let ip = p.ip;
    let (app, method, path) = match (&p.request, ctx) {
        (Some((app, method, path)), _) => (app.clone(), method.clone(), path.clone()),
        (None, Some(c)) => (
            c.request.app.clone(),
            c.request.method.clone(),
            c.request.path.clone(),
        ),
        (None, None) => (None, String::new(), String::new()),
    };
    // The trace is kept for what was refused or asked more of (the decisions someone asks
    // about); an allowed request's is worked out again from its context when asked for
    // (`stepgate explain`), which keeps the writer's share of a request small.
    let explanation = match (rt, ctx) {
        (Some(rt), Some(c)) if rt.generation == p.generation && p.outcome != "allow" => {
            Some(rt.config.policy_set.explain(c))
        }
        _ => None,
    };
    // What the deciding policy asked for (the verdict's requirement is what the session
    // still lacked): `replay` compares a draft's requirement with it. Deciding again is
    // cheap and allocation-free.
    let policy_requirement = match (rt, ctx) {
        (Some(rt), Some(c))
            if rt.generation == p.generation && p.policy_outcome == Some(OutcomeKind::StepUp) =>
        {
            rt.config
                .policy_set
                .decide(c)
                .outcome
                .requirement()
                .map(|r| serde_json::to_value(r).unwrap_or_default())
        }
        _ => None,
    };
    let route = match (rt, ctx) {
        (Some(rt), Some(c)) if rt.generation == p.generation => rt.config.policy_set.route_of(c),
        _ => None,
    };
    let user = p
        .user
        .as_ref()
        .map(|u| u.username.clone())
        .filter(|u| !u.is_empty());
    let report_only: Vec<serde_json::Value> = p
        .trail
        .report_only
        .iter()
        .map(
            |r| json!({ "policy": &*r.policy, "outcome": r.outcome, "requirement": r.requirement }),
        )
        .collect();
    DecisionRecord {
        request_id: p.id.as_str().to_string(),
        time: p.time,
        kind: match p.kind {
            RequestKind::Access => "access",
            RequestKind::SignIn => "sign_in",
        }
        .into(),
        user,
        session: p
            .session_id
            .take()
            .filter(|s| !s.is_empty())
            .map(|s| w.handle(s)),
        app,
        route,
        method,
        path,
        ip: ip.map(|i| i.to_string()),
        device: ctx
            .and_then(|c| c.device.as_ref())
            .and_then(|d| d.id.clone()),
        policy: p.policy.map(String::from),
        policy_outcome: p.policy_outcome.map(|o| o.as_str().to_string()),
        outcome: p.outcome.into(),
        report_only: serde_json::Value::Array(report_only),
        detail: json!({
            "requirement": p.requirement,
            "policy_requirement": policy_requirement,
            "context": ctx,
            "trace": explanation,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_hex_and_distinct() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 24);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        // The same process: the same prefix, the next number.
        assert_eq!(a.as_str()[..12], b.as_str()[..12]);
    }
}
