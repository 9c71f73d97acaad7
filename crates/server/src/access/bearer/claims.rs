//! What a verified bearer token stands for: whether its `acr`, `amr` and `auth_time` meet
//! a step-up requirement, the user record and the stand-in session it is judged as.

use chrono::{DateTime, Utc};
use stepgate_authn::{AssuranceConfig, FactorKind, PassedFactor};
use stepgate_policy::{MaxAge, StepUpRequirement};
use stepgate_store::UserRecord;

use super::BearerIdentity;
use crate::session::{Session, SessionData};

const PHISHING_RESISTANT_AMR: &[&str] = &["hwk", "swk", "phr", "phrh", "fido"];
const HARDWARE_BOUND_AMR: &[&str] = &["hwk", "phrh"];

/// Whether a token meets a step-up requirement: level from its `acr`, freshness from its
/// `auth_time`, factors and phishing resistance from its `amr`.
pub fn token_meets(
    id: &BearerIdentity,
    req: &StepUpRequirement,
    cfg: &AssuranceConfig,
    now: DateTime<Utc>,
) -> bool {
    if req.min_aal.is_some_and(|m| id.aal < m) {
        return false;
    }
    let max_age = match req.max_age {
        Some(MaxAge::EveryTime) => Some(cfg.every_time_window.as_secs()),
        Some(MaxAge::Within(d)) => Some(d.as_secs()),
        None => None,
    };
    if let Some(m) = max_age {
        match id.auth_time {
            Some(t) if now.signed_duration_since(t).num_seconds() <= m as i64 => {}
            _ => return false,
        }
    }
    let has = |set: &[&str]| id.amr.iter().any(|a| set.contains(&a.as_str()));
    if req.phishing_resistant && !(id.aal >= 3 || has(PHISHING_RESISTANT_AMR)) {
        return false;
    }
    if req.hardware_bound && !has(HARDWARE_BOUND_AMR) {
        return false;
    }
    if !req.factors.is_empty() {
        let ok = req.factors.iter().any(|f| {
            let amr = FactorKind::ALL
                .iter()
                .find(|k| k.as_str() == f)
                .map(|k| cfg.factor(*k).amr)
                .unwrap_or_else(|| f.clone());
            id.amr.contains(&amr)
        });
        if !ok {
            return false;
        }
    }
    true
}

/// A user record standing for the token's subject (for the policy context and headers).
pub fn user_record(id: &BearerIdentity) -> UserRecord {
    let mut u = UserRecord::new(id.username.clone());
    u.id = id.sub.clone();
    u.email = id.email.clone();
    u.name = id.name.clone();
    u.groups = id.groups.clone();
    u
}

/// A stand-in session for code that reads one (identity headers in forward-auth): the
/// token's `amr` as factors passed at `auth_time`. Never stored.
pub fn stand_in_session(id: &BearerIdentity, cfg: &AssuranceConfig, now: DateTime<Utc>) -> Session {
    let at = id.auth_time.unwrap_or(now);
    let mut factors = Vec::new();
    for a in &id.amr {
        let f = match a.as_str() {
            "hwk" => PassedFactor::webauthn(cfg, at, true, true),
            "swk" => PassedFactor::webauthn(cfg, at, true, false),
            other => match FactorKind::ALL
                .iter()
                .find(|k| cfg.factor(**k).amr == other)
            {
                Some(k) => PassedFactor::new(*k, cfg, at),
                None => continue,
            },
        };
        factors.push(f);
    }
    if factors.is_empty() {
        factors.push(PassedFactor::new(FactorKind::Password, cfg, at));
    }
    let mut data = SessionData::new(&id.sub, &id.username, factors.remove(0), at);
    for f in factors {
        data.add_factor(f);
    }
    Session {
        id: String::new(),
        data: std::sync::Arc::new(data),
    }
}
