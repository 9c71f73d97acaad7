//! THE decision: every request stepgate judges — a proxied request, a forward-auth check, a
//! bearer token, a sign-in, a CAEP re-evaluation, `stepgate what-if` — goes through
//! [`Access::decide`], one straight line of stages:
//!
//! | stage | function | what it does |
//! |---|---|---|
//! | credentials → subject | [`Access::identify`] | the session cookie's session (or a bearer token's claims, the first factor of a sign-in, a stored session, a stated user) and its user |
//! | signals → facts | [`SignalSource::facts`] | GeoIP, IP risk, client certificate, bound device and compliance, user agent and sign-in history (for an app request only when some policy reads them: [`stepgate_policy::PolicySet::reads`]) ([`signals::LiveSignals`], or a context file) |
//! | facts → context | [`context::build`] | the policy's [`stepgate_policy::RequestContext`], with the behavioural risk scored |
//! | context → decision | `policy_set.decide` (here and nowhere else) | the first policy that matches, by priority |
//! | effects | [`Access::decide`] | the session is tied to the device its request is bound to |
//! | decision → verdict | [`judge::judge`] | the outcome against what the subject has shown: allow, step up, deny |
//!
//! Entry points differ only in how they read their request into an [`AccessRequest`] and
//! how they render the [`Verdict`] (a redirect, an RFC 9470 challenge, a blocked page, a
//! 403 to a front proxy, a session ended). A new entry point (an OIDC authorize endpoint,
//! say) builds an `AccessRequest` and calls `decide`; it never calls the policy set itself.
//!
//! What does not belong here: reading HTTP requests or writing responses (the entry
//! points'), and any I/O but through the session service and the signal source.

pub mod bearer;
pub mod context;
pub mod decision_log;
pub mod judge;
pub mod replay;
pub mod request;
pub mod signals;
pub mod verdict;
pub mod what_if;

use std::sync::Arc;

use tracing::Instrument as _;

use stepgate_policy::{Explanation, RequestKind};

use crate::app::state::Runtime;
use crate::devices::Registry;
use crate::session::cache::Caches;
use crate::session::{Session, Sessions};
pub use decision_log::{DecisionLog, RequestId};
pub use request::{AccessRequest, Connection, Credentials, Subject, Who};
pub use signals::SignalSource;
pub use verdict::{Decided, Grant, Judged, SignInReason, Verdict};

/// The pipeline and what it reads from.
pub struct Access {
    sessions: Arc<Sessions>,
    cache: Arc<Caches>,
    signals: Arc<dyn SignalSource>,
    bearer: bearer::BearerVerifier,
    devices: Arc<Registry>,
    log: Option<Arc<DecisionLog>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    upstream: std::sync::OnceLock<UpstreamRecheck>,
}

/// What re-checking a session's user at their upstream provider decided.
pub enum Rechecked {
    /// The session stands (as given, or re-saved with the provider's new refresh token).
    Stands(Session),
    /// The provider no longer vouches for the user: the session was ended.
    Ended,
}

/// Re-checks, when due, a session that signed in through an upstream provider keeping a
/// refresh token ([`crate::portal::upstream::recheck`]).
pub type UpstreamRecheck = Box<
    dyn Fn(Session) -> std::pin::Pin<Box<dyn std::future::Future<Output = Rechecked> + Send>>
        + Send
        + Sync,
>;

impl Access {
    /// The pipeline over these services.
    pub fn new(
        sessions: Arc<Sessions>,
        cache: Arc<Caches>,
        signals: Arc<dyn SignalSource>,
        devices: Arc<Registry>,
    ) -> Self {
        Access {
            sessions,
            cache,
            signals,
            bearer: bearer::BearerVerifier::new(),
            devices,
            log: None,
            metrics: None,
            upstream: std::sync::OnceLock::new(),
        }
    }

    /// Re-checks sessions that signed in through an upstream provider with `hook` (set once).
    pub fn recheck_upstream(&self, hook: UpstreamRecheck) {
        let _ = self.upstream.set(hook);
    }

    /// The pipeline, counting and timing its decisions in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The pipeline, recording every decision in `log` (while `log.decisions.enabled`).
    pub fn with_decision_log(mut self, log: Arc<DecisionLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// The decision log, when decisions are recorded.
    pub fn decision_log(&self) -> Option<&Arc<DecisionLog>> {
        self.log.as_ref()
    }

    /// Decides `req` under `rt`.
    pub async fn decide<'rt>(&self, rt: &'rt Runtime, req: &AccessRequest<'_>) -> Judged<'rt> {
        // Boxed: the pipeline's future is large, and an entry point's future holding it
        // inline would be copied whole each time it moves (into hyper's connection, into
        // each enclosing future): a profile showed ~6k instructions per proxied request
        // spent in such copies.
        self.timed(rt, req, Box::pin(self.run(rt, req, None))).await
    }

    /// [`Access::decide`], with the trace of every policy and condition considered (none
    /// when the request never reached the policies).
    pub async fn explain<'rt>(
        &self,
        rt: &'rt Runtime,
        req: &AccessRequest<'_>,
    ) -> (Judged<'rt>, Option<Explained>) {
        let mut explained = None;
        let judged = self
            .timed(rt, req, Box::pin(self.run(rt, req, Some(&mut explained))))
            .await;
        (judged, explained)
    }

    /// A decision ([`Access::run`]'s), counted and timed in the metrics.
    async fn timed<'rt>(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
        deciding: impl std::future::Future<Output = Judged<'rt>>,
    ) -> Judged<'rt> {
        // The clock is read only when the metrics time the decision.
        let started = self.metrics.as_ref().map(|_| std::time::Instant::now());
        let judged = deciding.await;
        let route = |app| {
            rt.config
                .policy_set
                .route_for(app, req.method.as_str(), req.path)
        };
        crate::telemetry::decided(req.app, route, crate::metrics::outcome(&judged.verdict));
        let (Some(metrics), Some(started)) = (&self.metrics, started) else {
            return judged;
        };
        metrics.decision(
            req.kind,
            crate::metrics::outcome(&judged.verdict),
            judged.decision.and_then(|d| d.policy),
            started.elapsed(),
        );
        judged
    }

    async fn run<'rt>(
        &self,
        rt: &'rt Runtime,
        req: &AccessRequest<'_>,
        explain: Option<&mut Option<Explained>>,
    ) -> Judged<'rt> {
        // The request's log lines name the client (and, once known, the user). The request's
        // span is an `info` one: with `info` off nothing is recorded, and finding the
        // current span is skipped.
        let span = if tracing::level_enabled!(tracing::Level::INFO) {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        };
        if let Some(ip) = req.ip {
            span.record("client", tracing::field::display(ip));
        }
        // Every decision is recorded here, and only here.
        let log = self
            .log
            .as_deref()
            .filter(|_| rt.config.log.decisions.enabled);
        let identify = self.identify(rt, req);
        let subject = match identify.instrument(tracing::debug_span!("session")).await {
            Ok(s) => s,
            Err(v) => return unidentified(rt, req, v, log).await,
        };
        if !subject.user.username.is_empty() {
            span.record("user", subject.user.username.as_str());
        }
        let effects = Effects {
            devices: &self.devices,
            sessions: &self.sessions,
        };
        let mut trail = log.map(decision_log::Trail::new);
        let signals = self.signals.as_ref();
        let judged = evaluate(
            rt,
            req,
            subject,
            signals,
            Some(effects),
            explain,
            trail.as_mut(),
        );
        let judged = judged.await;
        if let Some(trail) = trail {
            trail.record(req, rt.generation, &judged).await;
        }
        judged
    }

    /// The credentials stage: who the request comes from, or the verdict that it comes from
    /// no one it may (sign in) or that this cannot be told now (a store failed).
    pub async fn identify(
        &self,
        rt: &Runtime,
        req: &AccessRequest<'_>,
    ) -> Result<Subject, Verdict> {
        let session = match &req.credentials {
            Credentials::Bearer(token) => {
                // Boxed: a cookie request's future would otherwise carry (and copy) the
                // space of the token's verification, several kilobytes.
                let (bearer, cache) = (&self.bearer, &self.cache);
                return Box::pin(bearer::identify(bearer, cache, rt, req.app, token, req.now))
                    .await;
            }
            Credentials::FirstFactor {
                user, factor, also, ..
            } => return Ok(signing_in(user, factor, also, req.now)),
            Credentials::Assumed(user) => {
                return Ok(Subject {
                    user: Arc::new((*user).clone()),
                    who: Who::Assumed,
                })
            }
            Credentials::Stored(s) => s.clone(),
            Credentials::Cookies(cookies) => {
                match self.sessions.current(rt, *cookies, req.now).await {
                    Ok(Some(s)) if !s.data.pending => s,
                    Ok(_) => return Err(Verdict::SignIn(SignInReason::NoSession)),
                    Err(e) => return Err(Verdict::Unavailable(e.to_string())),
                }
            }
        };
        let session = self.rechecked(session).await?;
        self.session_user(session).await
    }

    /// A session signed in upstream, with a refresh token kept: re-checked there when due.
    async fn rechecked(&self, session: Session) -> Result<Session, Verdict> {
        match (&session.data.upstream, self.upstream.get()) {
            (Some(u), Some(recheck)) if u.refresh.is_some() => match recheck(session).await {
                Rechecked::Stands(s) => Ok(s),
                Rechecked::Ended => Err(Verdict::SignIn(SignInReason::NoSession)),
            },
            _ => Ok(session),
        }
    }

    /// The session's user, when they still exist and are enabled.
    async fn session_user(&self, session: Session) -> Result<Subject, Verdict> {
        match self.cache.user(&session.data.user_id).await {
            Ok(Some(u)) if !u.disabled => Ok(Subject {
                user: u,
                who: Who::Session(session),
            }),
            Ok(_) => {
                // The user is gone or disabled: so is the session.
                let _ = self.sessions.end(&session.id).await;
                Err(Verdict::SignIn(SignInReason::NoSession))
            }
            Err(e) => Err(Verdict::Unavailable(e.to_string())),
        }
    }

    /// Accepts the access tokens of stepgate's own OpenID Provider as bearer tokens.
    pub fn trust_own_tokens(
        &self,
        keys: Arc<crate::gateway::assertion::AssertionKeys>,
        secret: stepgate_store::SecretKey,
    ) {
        self.bearer.trust_own_tokens(keys, secret);
    }

    /// The signal source.
    pub fn signals(&self) -> &Arc<dyn SignalSource> {
        &self.signals
    }

    /// The session service the pipeline reads sessions through.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }
}

/// The subject of a sign-in that has just passed its first factor (and `also`): the
/// session it would create.
fn signing_in(
    user: &stepgate_store::UserRecord,
    factor: &stepgate_authn::PassedFactor,
    also: &[stepgate_authn::PassedFactor],
    now: chrono::DateTime<chrono::Utc>,
) -> Subject {
    let mut data = crate::session::SessionData::new(&user.id, &user.username, factor.clone(), now);
    for f in also {
        data.add_factor(f.clone());
    }
    Subject {
        user: Arc::new(user.clone()),
        who: Who::Prospective(Box::new(data)),
    }
}

/// A request the credentials stage answered (no session, a store down): recorded, when
/// decisions are, with no context.
async fn unidentified<'rt>(
    rt: &'rt Runtime,
    req: &AccessRequest<'_>,
    verdict: Verdict,
    log: Option<&DecisionLog>,
) -> Judged<'rt> {
    let judged = Judged::from(verdict);
    if let Some(log) = log {
        let mut trail = decision_log::Trail::new(log);
        trail.keep(rt, req, &judged.verdict, false);
        trail.record(req, rt.generation, &judged).await;
    }
    judged
}

/// The decision's trace, the context it was made on and the risk assessment behind it.
pub struct Explained {
    /// Every policy and condition considered, with the values seen.
    pub explanation: Explanation,
    /// The context.
    pub context: stepgate_policy::RequestContext,
    /// The scored risk, when there was a sign-in history to score.
    pub assessment: Option<stepgate_signals::risk::RiskAssessment>,
}

/// What the pipeline changes as it goes: a session is tied to the device its requests are
/// bound to.
pub struct Effects<'a> {
    /// The device registry.
    pub devices: &'a Registry,
    /// The session service.
    pub sessions: &'a Sessions,
}

/// The stages after the credentials — facts, context, decision, effects, verdict — for a
/// known subject: the one place the policies are evaluated. [`Access::decide`] calls it
/// for live requests; `stepgate what-if` ([`what_if`]) with the facts a context file
/// states and no effects.
pub async fn evaluate<'rt>(
    rt: &'rt Runtime,
    req: &AccessRequest<'_>,
    subject: Subject,
    signals: &dyn SignalSource,
    effects: Option<Effects<'_>>,
    explain: Option<&mut Option<Explained>>,
    trail: Option<&mut decision_log::Trail<'_>>,
) -> Judged<'rt> {
    let (ctx, assessment, remembered) = match context_of(rt, req, &subject, signals).await {
        Ok(c) => c,
        Err(e) => return facts_failed(rt, req, &subject, e, trail),
    };
    let policies = &rt.config.policy_set;
    let span = tracing::debug_span!("policy", policy = tracing::field::Empty);
    let decision = span.in_scope(|| policies.decide(&ctx));
    span.record("policy", decision.policy);
    if let Some(out) = explain {
        *out = Some(Explained {
            explanation: policies.explain(&ctx),
            context: ctx.clone(),
            assessment,
        });
    }
    if let (Some(fx), Some((s, device))) = (effects, device_to_bind(req, &subject, &ctx)) {
        // Boxed: only a request that binds its session to a device gets here, and every
        // request's future would otherwise carry this one's space.
        Box::pin(fx.devices.bind_session(rt, fx.sessions, s, device, req.now)).await;
    }
    let mut subject = subject;
    if let Who::Prospective(d) = &mut subject.who {
        would_be_session(d, &ctx, decision.outcome, remembered, req.now);
    }
    let decided = Decided {
        outcome: decision.outcome,
        policy: decision.policy,
    };
    // A denial does not carry its user: kept for the log, which takes the rest of the
    // subject from the verdict.
    let denied_user = match (&trail, decision.outcome) {
        (Some(_), stepgate_policy::Outcome::Deny(_)) => Some(subject.user.clone()),
        _ => None,
    };
    let verdict = judge::judge(rt, subject, &decision, &ctx, req.now);
    // Checked here, not in `leave_in_trail`: the context is moved only when it is kept.
    if let Some(trail) = trail {
        if trail.keep(rt, req, &verdict, decision.report_only.is_some()) {
            leave_in_trail(trail, rt, &verdict, &decision, ctx, denied_user);
        }
    }
    Judged {
        verdict,
        decision: Some(decided),
    }
}

/// The signals' facts about `req` from `subject`, as the policy's context (with the risk
/// assessment, when the history was read) and the MFA remembered on the device. The facts
/// live in this function only: a future keeps room for every local that lives across an
/// await, and they are spent before `evaluate`'s next one.
async fn context_of(
    rt: &Runtime,
    req: &AccessRequest<'_>,
    subject: &Subject,
    signals: &dyn SignalSource,
) -> Result<
    (
        stepgate_policy::RequestContext,
        Option<stepgate_signals::risk::RiskAssessment>,
        Vec<stepgate_authn::PassedFactor>,
    ),
    signals::SignalError,
> {
    let facts = signals.facts(rt, req, subject);
    let mut facts = facts.instrument(tracing::debug_span!("signals")).await?;
    let remembered = std::mem::take(&mut facts.remembered_mfa);
    // A context file may state no user at all (an anonymous request).
    let user = match subject.who {
        Who::Assumed if subject.user.username.is_empty() => None,
        _ => Some(&subject.user),
    };
    let (ctx, assessment) = context::build(req, user, facts, &rt.config.signals.risk);
    Ok((ctx, assessment, remembered))
}

/// The signal source failed: the request is refused as unavailable (fail closed), and the
/// trail, when it keeps the refusal, names the subject.
fn facts_failed<'rt>(
    rt: &Runtime,
    req: &AccessRequest<'_>,
    subject: &Subject,
    e: signals::SignalError,
    trail: Option<&mut decision_log::Trail<'_>>,
) -> Judged<'rt> {
    let verdict = Verdict::Unavailable(e.to_string());
    if let Some(trail) = trail {
        if trail.keep(rt, req, &verdict, false) {
            trail.who = decision_log::Who {
                user: Some(subject.user.clone()),
                session_id: match &subject.who {
                    Who::Session(s) => Some(s.id.clone()),
                    _ => None,
                },
            };
        }
    }
    verdict.into()
}

/// The live session an app request is tied to, and the device the context says the
/// request is bound to.
fn device_to_bind<'a>(
    req: &AccessRequest<'_>,
    subject: &'a Subject,
    ctx: &'a stepgate_policy::RequestContext,
) -> Option<(&'a Session, &'a str)> {
    match (
        &subject.who,
        ctx.device.as_ref().and_then(|d| d.id.as_deref()),
    ) {
        (Who::Session(s), Some(device)) if req.kind == RequestKind::Access => Some((s, device)),
        _ => None,
    }
}

/// The session a sign-in would create is tied to the device the sign-in is bound to, and
/// counts the MFA completed there (`remembered`) within the policy's `mfa_frequency`.
fn would_be_session(
    d: &mut crate::session::SessionData,
    ctx: &stepgate_policy::RequestContext,
    outcome: &stepgate_policy::Outcome,
    remembered: Vec<stepgate_authn::PassedFactor>,
    now: chrono::DateTime<chrono::Utc>,
) {
    d.device_id = ctx.device.as_ref().and_then(|d| d.id.clone());
    let stepgate_policy::Outcome::StepUp(q) = outcome else {
        return;
    };
    if let Some(window) = q.mfa_frequency {
        let since = now - chrono::Duration::from_std(window.0).unwrap_or_default();
        for f in remembered
            .into_iter()
            .filter(|f| f.at > since && f.at <= now)
        {
            d.add_factor(f);
        }
    }
}

/// What the decision log keeps of a decision. Whether it is recorded is settled first: a
/// decision that is not (an allowed request sampled out) leaves nothing in the trail.
fn leave_in_trail(
    trail: &mut decision_log::Trail<'_>,
    rt: &Runtime,
    verdict: &Verdict,
    decision: &stepgate_policy::Decision<'_>,
    ctx: stepgate_policy::RequestContext,
    denied_user: Option<Arc<stepgate_store::UserRecord>>,
) {
    trail.who = decision_log::Who::of(verdict, denied_user);
    // Only when decide saw a report-only match: the pass costs nothing otherwise.
    if decision.report_only.is_some() {
        trail.report_only = rt
            .config
            .policy_set
            .report_only(&ctx, decision)
            .map(|m| decision_log::ReportOnly {
                policy: m.policy.into(),
                outcome: m.outcome.kind(),
                requirement: m.outcome.requirement().cloned(),
            })
            .collect();
    }
    trail.context = Some(ctx);
}
