//! Request budgets for the endpoints anyone can reach without a session: the CAEP receiver
//! and the device API (`devices.rate_limit`).
//!
//! A budget is a fixed-window counter in the hot store, so all nodes count against the same
//! budget, and windows are aligned to the Unix epoch, so all nodes agree on when one ends.
//! A request over budget is answered `429` with `Retry-After` (the seconds left in the
//! window) before it is verified or audited. It leaves no audit row of its own: the first
//! request dropped in a window schedules one `…rate_limited` event, written when that window
//! is over, that says how many were dropped. A flood therefore adds at most the budget plus
//! one row per window to the audit log.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::json;
use stepgate_signals::config::Rate;
use stepgate_store::{HotStore, StoreError};

use crate::app::state::Shared;

/// How long after a window's end its summary is written: requests admitted or dropped at the
/// very end may still be counting.
const SETTLE: Duration = Duration::from_secs(1);

/// The key of the budget shared by requests whose address is not known.
pub const UNKNOWN_ADDRESS: &str = "unknown";

/// An endpoint with budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST {portal}/caep/events`.
    Caep,
    /// `{portal}/api/devices/…`.
    DeviceApi,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Caep => "caep",
            Endpoint::DeviceApi => "device-api",
        }
    }

    /// The kind of the audit event that sums up a window's dropped requests.
    pub fn audit_kind(self) -> &'static str {
        match self {
            Endpoint::Caep => "caep.rate_limited",
            Endpoint::DeviceApi => "device.rate_limited",
        }
    }
}

/// What a request is counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// The client address ([`address_key`]).
    Address,
    /// The SET's `iss`, before verification.
    Issuer,
    /// The device source its token names.
    Source,
}

impl Budget {
    fn name(self) -> &'static str {
        match self {
            Budget::Address => "address",
            Budget::Issuer => "issuer",
            Budget::Source => "source",
        }
    }
}

/// Whether a request fits its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go on.
    Admit,
    /// Answer `429`; the window ends in this many seconds.
    Refuse {
        /// Whole seconds, at least 1.
        retry_after: u64,
    },
}

/// The budget key of a client address: the address itself for IPv4, the /64 for IPv6 (one
/// host is usually given a whole /64), and [`UNKNOWN_ADDRESS`] for an address that is not
/// known (`None`, or unspecified): all such requests share one budget.
pub fn address_key(ip: impl Into<Option<IpAddr>>) -> String {
    match ip.into() {
        None => UNKNOWN_ADDRESS.to_string(),
        Some(ip) if ip.is_unspecified() => UNKNOWN_ADDRESS.to_string(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let net = u128::from(v6) & !(u64::MAX as u128);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
    }
}

/// One window of one budget.
struct Window {
    /// Index since the epoch.
    index: i64,
    start_ms: i64,
    end_ms: i64,
}

impl Window {
    fn of(rate: Rate, now: DateTime<Utc>) -> Window {
        let len = i64::try_from(rate.window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let index = now.timestamp_millis().div_euclid(len);
        Window {
            index,
            start_ms: index.saturating_mul(len),
            end_ms: index.saturating_add(1).saturating_mul(len),
        }
    }
}

/// [`admit`], answered as the endpoint's API answers: `429` saying `too_many` and when to
/// retry, or `503` when the hot store does not answer.
pub async fn admit_or_refuse(
    st: &Shared,
    endpoint: Endpoint,
    budget: Budget,
    key: &str,
    rate: Rate,
    too_many: &str,
) -> Result<(), super::error::ApiError> {
    use super::error::{ApiError, Endpoint as Api};
    let (api, store) = match endpoint {
        Endpoint::Caep => (Api::Caep, "hot store"),
        Endpoint::DeviceApi => (Api::PostureApi, "device API"),
    };
    match admit(st, endpoint, budget, key, rate).await {
        Ok(Admission::Admit) => Ok(()),
        Ok(Admission::Refuse { retry_after }) => {
            let why = format!("{too_many}; retry after {retry_after} s");
            Err(ApiError::rate_limited(api, why, retry_after))
        }
        Err(e) => Err(ApiError::unavailable(api, store, e)),
    }
}

/// Counts a request against `budget`'s `key` (an address, issuer or source) and says
/// whether it fits. The first request dropped in a window schedules the window's summary.
pub async fn admit(
    st: &Shared,
    endpoint: Endpoint,
    budget: Budget,
    key: &str,
    rate: Rate,
) -> Result<Admission, StoreError> {
    let now = Utc::now();
    let w = Window::of(rate, now);
    let prefix = format!("rate:{}:{}:{}", endpoint.name(), budget.name(), w.index);
    // Kept past the window's end so the summary can still read the window's counts.
    let keep = rate.window + SETTLE + Duration::from_secs(60);
    let hot = &st.stores.hot;
    let n = hot.incr_counter(&format!("{prefix}:={key}"), keep).await?;
    if n <= u64::from(rate.count) {
        return Ok(Admission::Admit);
    }
    if n == u64::from(rate.count) + 1 {
        hot.incr_counter(&format!("{prefix}#over"), keep).await?;
        tracing::warn!(
            endpoint = endpoint.name(),
            budget = budget.name(),
            key,
            limit = %rate,
            "request budget spent; dropping until the window ends"
        );
    }
    if hot.incr_counter(&format!("{prefix}#dropped"), keep).await? == 1 {
        let spent = Spent {
            endpoint,
            budget,
            rate,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            prefix: &prefix,
            first: key,
        };
        summarise_later(st, spent);
    }
    let left_ms = (w.end_ms - now.timestamp_millis()).max(0) as u64;
    Ok(Admission::Refuse {
        retry_after: left_ms.div_ceil(1000).max(1),
    })
}

/// A budget spent in a window: what the window's audit event reports.
struct Spent<'a> {
    endpoint: Endpoint,
    budget: Budget,
    rate: Rate,
    start_ms: i64,
    end_ms: i64,
    /// The window's counters' key prefix.
    prefix: &'a str,
    /// The first key over the budget.
    first: &'a str,
}

/// Writes the window's one `…rate_limited` audit event once the window is over.
fn summarise_later(st: &Shared, spent: Spent<'_>) {
    let Spent {
        endpoint,
        budget,
        rate,
        start_ms,
        end_ms,
        prefix,
        first,
    } = spent;
    let hot: std::sync::Arc<dyn HotStore> = st.stores.hot.clone();
    let audit = st.audit.clone();
    let (prefix, first) = (prefix.to_string(), first.to_string());
    tokio::spawn(async move {
        let wait_ms = (end_ms - Utc::now().timestamp_millis()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait_ms) + SETTLE).await;
        let count = |k: String| {
            let hot = hot.clone();
            async move { hot.get_counter(&k).await.unwrap_or(0) }
        };
        let dropped = count(format!("{prefix}#dropped")).await;
        let over = count(format!("{prefix}#over")).await;
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
        let mut e = stepgate_store::NewAuditEvent::now(endpoint.audit_kind());
        e.detail = json!({
            "budget": budget.name(),
            "limit": rate.to_string(),
            "window_start": at(start_ms),
            "window_end": at(end_ms),
            "dropped": dropped,
            "over_budget": over,
            "first_over": first,
        });
        audit.append(e).await;
    });
}

/// Adds `Retry-After` to a `429`.
pub fn with_retry_after(mut r: Response, seconds: u64) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_by_host_and_ipv6_by_slash_64() {
        let k = |s: &str| address_key(s.parse::<IpAddr>().unwrap());
        assert_eq!(k("203.0.113.9"), "203.0.113.9");
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(k("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(k("2001:db8:1:3::1"), k("2001:db8:1:2::1"));
        assert_eq!(k("0.0.0.0"), UNKNOWN_ADDRESS);
        assert_eq!(k("::"), UNKNOWN_ADDRESS);
        assert_eq!(address_key(None), UNKNOWN_ADDRESS);
    }

    #[test]
    fn windows_are_aligned_and_contain_now() {
        let rate: Rate = "5/10s".parse().unwrap();
        let now = DateTime::<Utc>::from_timestamp_millis(1_700_000_003_250).unwrap();
        let w = Window::of(rate, now);
        assert_eq!(w.start_ms, 1_700_000_000_000);
        assert_eq!(w.end_ms, 1_700_000_010_000);
        assert_eq!(w.index, 170_000_000);
    }
}
