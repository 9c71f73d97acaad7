//! The writer: the task that takes records off the decision log's queue in batches, makes
//! them stored records (the session's handle, the trace, the JSON) and appends them to the
//! durable store, holding them in memory while the store is out of reach (see the
//! [module documentation](super)).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use stepgate_policy::{Explanation, OutcomeKind, RequestContext, RequestKind, StepUpRequirement};
use stepgate_store::{DecisionRecord, DurableStore, JsonText};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{LogStats, Message, Pending, BATCH, GATHER, HANDLES, HOLD, MAX_BACKOFF};
use crate::app::signer::Signer;
use crate::app::state::{AppState, Runtime};

pub(super) struct Writer {
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
    /// The writer of `st`'s durable store, counting in `stats`.
    pub(super) fn new(st: &Arc<AppState>, stats: Arc<LogStats>) -> Self {
        Writer {
            durable: st.stores.durable.clone(),
            signer: st.signer.clone(),
            handles: Mutex::default(),
            state: Arc::downgrade(st),
            stats,
            held: VecDeque::new(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inbox = Vec::with_capacity(BATCH);
        let mut backoff = Duration::from_secs(1);
        let mut wrote: Option<Instant> = None;
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
                    if let Some(at) = wrote {
                        gather(&mut rx, &mut inbox, at + GATHER).await;
                    }
                    self.write(&mut inbox).await;
                    wrote = Some(Instant::now());
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

    /// Appends the records of `inbox` to the store (or holds them while it is out of reach)
    /// in one transaction, then answers its flushes.
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

/// Adds what comes into `inbox` until `until`, while it holds fewer than [`BATCH`] and no
/// flush (which is answered at once). A record that comes after a quiet spell (`until` is
/// past) is written at once; while records keep coming, a transaction is committed at most
/// every [`GATHER`], with every record that came meanwhile.
async fn gather(rx: &mut mpsc::Receiver<Message>, inbox: &mut Vec<Message>, until: Instant) {
    let flush = |m: &[Message]| m.iter().any(|m| matches!(m, Message::Flush(_)));
    let mut seen = 0;
    while inbox.len() < BATCH && !flush(&inbox[seen..]) && Instant::now() < until {
        seen = inbox.len();
        let room = BATCH - inbox.len();
        match tokio::time::timeout_at(until, rx.recv_many(inbox, room)).await {
            Ok(n) if n > 0 => {}
            // The time is up, or the queue is closed (the next receive says so).
            _ => return,
        }
    }
}

/// The stored form of a pending decision. The trace (of a decision that did not simply
/// allow) is worked out here, off the request path, under the configuration the decision was
/// made under when it is still in force; otherwise the context alone is kept, and
/// `stepgate explain` traces it again.
fn to_record(mut p: Pending, rt: Option<&Runtime>, w: &Writer) -> DecisionRecord {
    let (app, method, path) = request_of(&mut p);
    let ctx = p.context.as_ref();
    // Only under the configuration the decision was made under.
    let worked = match (rt, ctx) {
        (Some(rt), Some(c)) if rt.generation == p.generation => Some(worked_out(rt, &p, c)),
        _ => None,
    };
    let (explanation, policy_requirement, route) = worked.unwrap_or_default();
    let report_only: Vec<serde_json::Value> = p
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
        user: p
            .user
            .as_ref()
            .map(|u| u.username.clone())
            .filter(|u| !u.is_empty()),
        session: p
            .session_id
            .take()
            .filter(|s| !s.is_empty())
            .map(|s| w.handle(s)),
        app,
        route,
        method,
        path,
        ip: p.ip.map(|i| i.to_string()),
        device: ctx
            .and_then(|c| c.device.as_ref())
            .and_then(|d| d.id.clone()),
        policy: p.policy.as_deref().map(String::from),
        policy_outcome: p.policy_outcome.map(|o| o.as_str().to_string()),
        outcome: p.outcome.into(),
        report_only: serde_json::Value::Array(report_only),
        detail: detail(&p, policy_requirement.as_ref(), explanation.as_ref()),
    }
}

/// The record's detail, written as JSON text straight from the values (a `Value` tree of
/// the context cost as much as the rest of the record).
fn detail(
    p: &Pending,
    policy_requirement: Option<&StepUpRequirement>,
    trace: Option<&Explanation>,
) -> JsonText {
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        context: Option<&'a RequestContext>,
        policy_requirement: Option<&'a StepUpRequirement>,
        requirement: Option<&'a StepUpRequirement>,
        trace: Option<&'a Explanation>,
    }
    let d = Detail {
        context: p.context.as_ref(),
        policy_requirement,
        requirement: p.requirement.as_ref(),
        trace,
    };
    JsonText::of(&d).unwrap_or_else(|e| {
        // Every part serialises (string keys, finite numbers); kept apart from the rest
        // of the record if one ever did not.
        tracing::warn!(error = %e, "decision log: the decision's detail did not serialise");
        JsonText::default()
    })
}

/// The app, method and path of `p`'s request: as the request stated them when it never
/// reached the policies, else from the context.
fn request_of(p: &mut Pending) -> (Option<String>, String, String) {
    match (p.request.take(), &p.context) {
        (Some(r), _) => r,
        (None, Some(c)) => (
            c.request.app.clone(),
            c.request.method.clone(),
            c.request.path.clone(),
        ),
        (None, None) => (None, String::new(), String::new()),
    }
}

/// What is worked out again from `p`'s context `c` under `rt` (the configuration it was
/// decided under): the trace, what the deciding policy asked for, and the app route.
fn worked_out(
    rt: &Runtime,
    p: &Pending,
    c: &RequestContext,
) -> (
    Option<Explanation>,
    Option<StepUpRequirement>,
    Option<String>,
) {
    // The trace is kept for what was refused or asked more of (the decisions someone asks
    // about); an allowed request's is worked out again from its context when asked for
    // (`stepgate explain`), which keeps the writer's share of a request small.
    let explanation = (p.outcome != "allow").then(|| rt.config.policy_set.explain(c));
    // What the deciding policy asked for (the verdict's requirement is what the session
    // still lacked): `replay` compares a draft's requirement with it. Deciding again is
    // cheap and allocation-free.
    let policy_requirement = (p.policy_outcome == Some(OutcomeKind::StepUp))
        .then(|| {
            let decision = rt.config.policy_set.decide(c);
            decision.outcome.requirement().cloned()
        })
        .flatten();
    (
        explanation,
        policy_requirement,
        rt.config.policy_set.route_of(c),
    )
}
