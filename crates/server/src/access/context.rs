//! The context stage: from the request, the subject and the facts the signal sources found
//! ([`Facts`]) to the policy engine's [`RequestContext`]. Pure: the same facts give the same
//! context, whether a live request's sources found them or a context file stated them
//! (`stepgate what-if`).

use std::net::IpAddr;
use std::sync::Arc;

use stepgate_policy::{
    CertificateContext, DeviceContext, NetworkContext, RequestContext, RequestInfo, RequestKind,
    RiskContext, RiskLevel, UserAgentContext, UserContext,
};
use stepgate_signals::config::RiskConfig;
use stepgate_signals::geoip::GeoInfo;
use stepgate_signals::risk::{self, RiskAssessment, SignInAttempt, SignInEntry};
use stepgate_store::UserRecord;

use super::request::AccessRequest;

/// What the signal sources say about a request (see [`super::signals::SignalSource`]).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The client address the context uses: the request's, or a demo profile's.
    pub ip: Option<IpAddr>,
    /// Where that address is (GeoIP).
    pub geo: GeoInfo,
    /// Its IP risk score (0–100), when a feed or provider knows it.
    pub ip_risk_score: Option<u8>,
    /// The client software (for an app request, only when some policy reads it).
    pub user_agent: UserAgentContext,
    /// The client certificate, when one was presented.
    pub certificate: Option<CertificateContext>,
    /// The device the request is bound to, with its compliance.
    pub device: Option<DeviceContext>,
    /// The user's past sign-ins, oldest first: for a sign-in, and for an app request when
    /// some policy reads risk ([`stepgate_policy::PolicySet::reads`]).
    pub history: Option<Arc<Vec<SignInEntry>>>,
    /// A risk assessment stated outright (a context file without a history); the live
    /// sources never state one.
    pub risk: Option<RiskContext>,
    /// For a sign-in on a known device, when some policy has an `mfa_frequency`: the MFA
    /// the user completed on that device before ([`stepgate_authn::mfa_memory`]). Not part
    /// of the context: the judge counts it toward a requirement that allows it.
    pub remembered_mfa: Vec<stepgate_authn::PassedFactor>,
}

/// The user as the policy sees them, built once per user record and thread: a cached
/// record (the session service's read cache hands out the same one until it changes or
/// expires) gets the context built for it last time instead of a copy of every name,
/// group and attribute per request. A record that changed is a new record, so a stale
/// context is never reused.
pub fn shared_user_context(u: &Arc<UserRecord>) -> Arc<UserContext> {
    LAST_USER.with(|last| last.get(u, 0, user_context))
}

thread_local! {
    static LAST_USER: crate::app::memo::Latest<UserRecord, UserContext> =
        const { crate::app::memo::Latest::new() };
}

/// The user as the policy sees them.
pub fn user_context(u: &UserRecord) -> UserContext {
    UserContext {
        username: u.username.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        groups: u.groups.clone(),
        attributes: u.attributes.clone(),
    }
}

/// The policy context for `req` by `user`, from `facts`; with the risk assessment behind
/// its risk, when there was a history to score.
pub fn build(
    req: &AccessRequest<'_>,
    user: Option<&Arc<UserRecord>>,
    mut facts: Facts,
    risk_cfg: &RiskConfig,
) -> (RequestContext, Option<RiskAssessment>) {
    let mut network = NetworkContext {
        ip: facts.ip,
        ip_risk_score: facts.ip_risk_score,
        ..NetworkContext::default()
    };
    facts.geo.apply_to(&mut network);
    let stated = facts.risk.take();
    let (risk, assessment) = match &facts.history {
        Some(history) => {
            let (r, a) = assess(req, &facts, history, risk_cfg);
            (r, Some(a))
        }
        None => (stated.unwrap_or_default(), None),
    };
    let ctx = RequestContext {
        kind: req.kind,
        time: req.now,
        user: user.map(shared_user_context),
        request: RequestInfo {
            app: req.app.map(str::to_string),
            method: req.method.as_str().to_string(),
            path: req.path.to_string(),
        },
        network,
        user_agent: facts.user_agent,
        device: facts.device,
        certificate: facts.certificate,
        risk,
    };
    (ctx, assessment)
}

/// The behavioural risk of this request against the user's history. A sign-in counts
/// every reason; within a session only what can change under it counts: where the request
/// comes from now (travel) and how risky that address is.
fn assess(
    req: &AccessRequest<'_>,
    facts: &Facts,
    history: &[SignInEntry],
    cfg: &RiskConfig,
) -> (RiskContext, RiskAssessment) {
    let attempt = SignInAttempt {
        time: req.now,
        ip: facts.ip,
        country: facts.geo.country.clone(),
        city: facts.geo.city.clone(),
        latitude: facts.geo.latitude,
        longitude: facts.geo.longitude,
        device_id: facts.device.as_ref().and_then(|d| d.id.clone()),
        ip_risk_score: facts.ip_risk_score,
    };
    let a = risk::score(history, &attempt, cfg);
    if req.kind == RequestKind::SignIn {
        return (a.to_context(), a);
    }
    let reasons: Vec<_> = a
        .reasons
        .iter()
        .filter(|r| matches!(r.name, "impossible_travel" | "risky_ip"))
        .collect();
    let total: u32 = reasons.iter().map(|r| r.weight).sum();
    let ctx = RiskContext {
        level: if total >= cfg.high_at {
            RiskLevel::High
        } else if total >= cfg.medium_at {
            RiskLevel::Medium
        } else {
            RiskLevel::Low
        },
        reasons: reasons.iter().map(|r| r.name.to_string()).collect(),
        velocity_kmpm: a.velocity_kmpm,
    };
    (ctx, a)
}
