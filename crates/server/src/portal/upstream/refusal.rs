//! A sign-in through an upstream provider that did not happen: audited (anonymous ones
//! within a per-provider allowance, the rest counted) and a page saying what the person
//! can do.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stepgate_config::identity::IdentityProviderConfig;

use super::display_name;
use crate::app::state::Shared;
use crate::idp::UpstreamError;
use crate::portal::audit;
use crate::portal::error::PortalError;
use crate::portal::extract::Here;

/// A sign-in through `cfg` that did not happen: audited (with the operator's detail) and a
/// page saying what the person can do (fail closed: no session).
pub(super) async fn refused(
    st: &Shared,
    rt: &Here,
    cfg: &IdentityProviderConfig,
    e: &UpstreamError,
    ip: Option<std::net::IpAddr>,
    username: Option<&str>,
) -> Response {
    tracing::warn!(provider = cfg.id.as_str(), error = %e, "upstream sign-in refused");
    let mut detail = serde_json::json!({ "provider": cfg.id.as_str(), "reason": e.reason(), "detail": e.to_string() });
    // Anyone can call the callback: refusals that name no user are audited at most
    // [`ANONYMOUS_AUDIT_PER_MINUTE`] a minute per provider, the rest counted, and the
    // count reported by the next row written.
    let write = match username {
        Some(_) => true,
        None => match anonymous_allowance(st, cfg.id.as_str()).await {
            Some(suppressed) => {
                if suppressed > 0 {
                    detail["suppressed_before"] = suppressed.into();
                }
                true
            }
            None => false,
        },
    };
    if write {
        audit(
            st,
            "signin.upstream_refused",
            username.unwrap_or(&format!("upstream:{}", cfg.id.as_str())),
            ip,
            detail,
        )
        .await;
    }
    let status = match e {
        UpstreamError::Unavailable { .. } | UpstreamError::Config { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        UpstreamError::Unusable { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    PortalError::Upstream {
        portal: rt.portal().to_string(),
        status,
        message: e.public_message(&display_name(cfg)),
    }
    .into_response()
}

/// How many refusals naming no user (a callback without a matching flow, a provider that
/// cannot be reached) are audited per provider and minute; the others are counted.
pub const ANONYMOUS_AUDIT_PER_MINUTE: u64 = 20;

/// The hot-store counter of anonymous refusals not audited for provider `id` (read and
/// reset by the next row written).
pub fn suppressed_audit_key(id: &str) -> String {
    format!("upstream-refused-suppressed:{id}")
}

/// Whether this anonymous refusal may be audited: `Some(how many were suppressed since the
/// last row)` when it may, `None` when over the minute's allowance (then counted). A store
/// failure lets the row through (the audit outbox keeps it).
async fn anonymous_allowance(st: &Shared, id: &str) -> Option<u64> {
    let hot = &st.stores.hot;
    let window = std::time::Duration::from_secs(60);
    let n = match hot
        .incr_counter(&format!("upstream-refused-audited:{id}"), window)
        .await
    {
        Ok(n) => n,
        Err(_) => return Some(0),
    };
    let key = suppressed_audit_key(id);
    if n > ANONYMOUS_AUDIT_PER_MINUTE {
        let _ = hot
            .incr_counter(&key, std::time::Duration::from_secs(24 * 3600))
            .await;
        return None;
    }
    let suppressed = hot.get_counter(&key).await.unwrap_or(0);
    if suppressed > 0 {
        let _ = hot.reset_counter(&key).await;
    }
    Some(suppressed)
}
