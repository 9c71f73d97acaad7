//! MFA frequency across sign-ins (Entra's sign-in frequency, "MFA frequency in minutes"):
//! the factors beyond the password that a completed sign-in passed on a device are
//! remembered for that user *and that device* — never by session id, so no cookie of its
//! own can be stolen, and a session ending does not end it. A later sign-in on the same
//! device may count them while they are within the sign-in policy's `mfa_frequency`
//! (the requirement checks their own times), provided each factor is still the user's and
//! the user's MFA was not forgotten since: a password change, a removed or reset factor,
//! "sign out everywhere" (and signing out, when `sessions.forget_on_sign_out`).
//!
//! Kept in the hot store (every backend): one entry per user and device, and one
//! "forgotten at" time per user.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_store::{DurableStore, HotStore, StoreError};

use crate::assurance::PassedFactor;
use crate::factor::FactorKind;

/// How long a "forgotten at" mark is kept: longer than any window it has to outlast.
const FORGOTTEN_KEPT: Duration = Duration::from_secs(400 * 86_400);

fn memory_key(user_id: &str, device_id: &str) -> String {
    format!("mfa-memory:{user_id}:{device_id}")
}

fn forgotten_key(user_id: &str) -> String {
    format!("mfa-forgotten:{user_id}")
}

/// What is remembered of a sign-in on a device.
#[derive(Serialize, Deserialize)]
struct Remembered {
    factors: Vec<PassedFactor>,
}

/// Remembers the factors beyond the password among `factors` (a completed multi-factor
/// sign-in's) as passed by `user_id` on `device_id`, for `keep` (the longest window any
/// policy allows).
pub async fn remember(
    hot: &dyn HotStore,
    user_id: &str,
    device_id: &str,
    factors: &[PassedFactor],
    keep: Duration,
) -> Result<(), StoreError> {
    let factors: Vec<PassedFactor> = factors
        .iter()
        .filter(|f| f.kind != FactorKind::Password)
        .cloned()
        .collect();
    if factors.is_empty() {
        return Ok(());
    }
    let value = serde_json::to_value(Remembered { factors })
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    hot.push_recent(&memory_key(user_id, device_id), &value, 1, keep)
        .await
}

/// The factors `user_id` passed on `device_id` that still count: passed after the user's
/// MFA was last forgotten, and still the user's factors. Their times are their own: the
/// requirement's `mfa_frequency` decides which are recent enough.
pub async fn remembered(
    hot: &dyn HotStore,
    durable: &dyn DurableStore,
    user_id: &str,
    device_id: &str,
) -> Result<Vec<PassedFactor>, StoreError> {
    let Some(entry) = hot
        .recent(&memory_key(user_id, device_id))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Vec::new());
    };
    let forgotten: Option<DateTime<Utc>> = hot
        .recent(&forgotten_key(user_id))
        .await?
        .into_iter()
        .next()
        .and_then(|v| serde_json::from_value(v).ok());
    // An entry that does not read is no memory (fail closed: MFA is asked again).
    let Ok(r) = serde_json::from_value::<Remembered>(entry) else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::new();
    for f in r.factors {
        if forgotten.is_some_and(|t| f.at <= t) {
            continue;
        }
        let still_theirs = match &f.factor_id {
            Some(id) => durable
                .get_factor(id)
                .await?
                .is_some_and(|rec| rec.user_id == user_id),
            None => false,
        };
        if still_theirs {
            kept.push(f);
        }
    }
    Ok(kept)
}

/// Forgets every device's remembered MFA of `user_id` as of `now`.
pub async fn forget(
    hot: &dyn HotStore,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let value = serde_json::to_value(now).map_err(|e| StoreError::Invalid(e.to_string()))?;
    hot.push_recent(&forgotten_key(user_id), &value, 1, FORGOTTEN_KEPT)
        .await
}
