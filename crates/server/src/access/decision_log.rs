//! The decision log: one record per decision of the pipeline, written off the request path.
//!
//! [`crate::access::Access`] hands every decision it makes to [`DecisionLog::record`] (the
//! one place decisions are recorded, whatever the entry point). What the request path pays
//! is small and fixed. Whether a decision is recorded is settled first, as soon as the
//! verdict is known ([`Trail::keep`]: an allowed app request is sampled), and a decision that
//! is not builds nothing. One that is has its context *moved* into the record (it was built
//! for the policies anyway), a session id and a policy name copied, and goes into a bounded
//! queue. Everything else — the session's handle (a MAC, never the id), the trace
//! of every policy and condition against the context (for decisions that did not simply
//! allow), the JSON — is done by the writer, a task that takes records off the queue in
//! batches and appends them to the durable store: while records keep coming, one
//! transaction at most every [`GATHER`] with every record that came meanwhile (a commit
//! costs more than the rows in it); a record after a quiet spell, or a flush, at once.
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
//! written *or* waiting. A graceful stop flushes once the requests are drained
//! (`app::listen`), so what the writer still gathers outlives the process.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use stepgate_policy::{OutcomeKind, RequestContext, RequestKind, StepUpRequirement};
use stepgate_store::UserRecord;
use tokio::sync::{mpsc, oneshot};

use super::verdict::{Judged, Verdict};
use crate::app::state::AppState;

/// Of the droppable records that find the queue full, one in this many waits for room.
pub const SAMPLE_WHEN_FULL: u64 = 100;

/// How many records the writer appends in one transaction, at most.
const BATCH: usize = 256;

/// While records keep coming, the writer commits at most one transaction this often, with
/// every record that came meanwhile (up to [`BATCH`]): each commit writes every page it
/// changed (the table's and its five indexes') to the WAL again, which costs more than the
/// rows themselves. A record after a quiet spell, and a flush, are written at once.
const GATHER: Duration = Duration::from_millis(500);

/// How many records wait in memory while the store is out of reach, at most.
const HOLD: usize = 10_000;

/// The longest pause between two tries while the store is out of reach.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How many session handles the writer keeps.
const HANDLES: usize = 10_000;

mod request_id;
mod writer;

pub use request_id::{has_header, set_header, RequestId, REQUEST_ID_HEADER, REQUEST_ID_NAME};

/// What the pipeline leaves the decision log about one decision. Whether the decision is
/// recorded is settled first ([`Trail::keep`], once the verdict is known); only a decision
/// that is gets the rest: the context the policies read, the report-only policies that
/// matched ahead of the decision, and the subject.
pub struct Trail<'l> {
    log: &'l DecisionLog,
    kept: bool,
    /// The context (moved here once the verdict is reached).
    pub context: Option<RequestContext>,
    /// The report-only policies that matched, in priority order.
    pub report_only: Vec<ReportOnly>,
    /// The subject.
    pub who: Who,
}

impl<'l> Trail<'l> {
    /// An empty trail into `log`, its decision not yet known.
    pub fn new(log: &'l DecisionLog) -> Self {
        Trail {
            log,
            kept: false,
            context: None,
            report_only: Vec::new(),
            who: Who::default(),
        }
    }

    /// Whether the decision on `req` that came to `verdict` is recorded
    /// ([`DecisionLog::keeps`]); asked once per decision, before anything is put in the
    /// trail.
    pub fn keep(
        &mut self,
        rt: &crate::app::state::Runtime,
        req: &super::AccessRequest<'_>,
        verdict: &Verdict,
        report_only: bool,
    ) -> bool {
        self.kept = self.log.keeps(rt, req, verdict, report_only);
        self.kept
    }

    /// Hands the decision to the writer, when [`Trail::keep`] said it is recorded.
    pub async fn record(
        self,
        req: &super::AccessRequest<'_>,
        generation: u64,
        judged: &Judged<'_>,
    ) {
        if self.kept {
            let log = self.log;
            log.record(Pending::new(req, generation, judged, self))
                .await;
        }
    }
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
    context: Option<RequestContext>,
    report_only: Vec<ReportOnly>,
}

/// The subject's part of a record.
#[derive(Default)]
pub struct Who {
    /// The user.
    pub user: Option<Arc<UserRecord>>,
    /// The stored session's id (made a handle by the writer).
    pub session_id: Option<String>,
}

impl Who {
    /// The subject as `verdict` names it: the user and stored session let through, asked to
    /// step up or refused (`denied_user`: the user of a denial, which does not carry it).
    /// A bearer token's stand-in session and a sign-in's would-be one are not stored
    /// sessions: no id.
    pub fn of(verdict: &Verdict, denied_user: Option<Arc<UserRecord>>) -> Who {
        let stored = |s: &crate::session::Session| (!s.id.is_empty()).then(|| s.id.clone());
        match verdict {
            Verdict::Allow(g) => Who {
                user: Some(g.user.clone()),
                session_id: g.bearer.is_none().then(|| stored(&g.session)).flatten(),
            },
            Verdict::StepUp(s) => Who {
                user: Some(s.user.clone()),
                session_id: s.session.as_ref().and_then(stored),
            },
            Verdict::Deny(d) => Who {
                user: denied_user,
                session_id: d.session.as_ref().and_then(stored),
            },
            Verdict::SignIn(_) | Verdict::Unavailable(_) => Who::default(),
        }
    }
}

impl Pending {
    /// The record of `judged`, the verdict on `req`.
    fn new(
        req: &super::AccessRequest<'_>,
        generation: u64,
        judged: &Judged<'_>,
        trail: Trail<'_>,
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
            user: trail.who.user,
            session_id: trail.who.session_id,
            ip: req.ip,
            request,
            policy: judged.decision.and_then(|d| d.policy).map(Box::from),
            policy_outcome: judged.decision.map(|d| d.outcome.kind()),
            outcome,
            requirement,
            context: trail.context,
            report_only: trail.report_only,
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
    /// Whether a decision that came to `verdict` is recorded: always, but for an allowed app
    /// request, which is recorded one in `log.decisions.allowed_one_in` (counted otherwise)
    /// — unless a report-only policy matched it (`report_only`): what report-only policies
    /// would have done is what report-only mode is for, so those are all kept.
    pub fn keeps(
        &self,
        rt: &crate::app::state::Runtime,
        req: &super::AccessRequest<'_>,
        verdict: &Verdict,
        report_only: bool,
    ) -> bool {
        let sampled = !report_only
            && matches!(verdict, Verdict::Allow(_))
            && matches!(req.kind, RequestKind::Access);
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
        tokio::spawn(writer::Writer::new(st, self.stats.clone()).run(rx));
    }
}
