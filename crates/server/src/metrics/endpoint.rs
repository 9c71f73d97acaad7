//! The metrics listener (`server.metrics_listen`, `/metrics` only) and what a scrape does:
//! the gauges read at scrape time, and the client library's OpenMetrics text rewritten as
//! the Prometheus text format.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Metrics;
use crate::app::state::Shared;

/// How often, at most, `stepgate_sessions_live` is counted when counting scans the hot
/// store (Redis).
pub const SCANNED_COUNT_EVERY: Duration = Duration::from_secs(30);

/// When the live sessions were last counted.
#[derive(Default)]
pub(super) struct LastCount(Mutex<Option<Instant>>);

impl LastCount {
    /// Whether a count is due at `now` (none made within `every`); if so, it is taken as
    /// made now, so that concurrent scrapes count once.
    fn due(&self, now: Instant, every: Duration) -> bool {
        let Ok(mut last) = self.0.lock() else {
            return true;
        };
        if last.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The last count failed: the next scrape counts.
    fn forget(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = None;
        }
    }
}

impl Metrics {
    /// Where the metrics listener listens, once it does.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.get().copied()
    }

    /// Starts the metrics listener when `server.metrics_listen` is set.
    pub async fn spawn_listener(st: &Shared) -> anyhow::Result<()> {
        let Some(addr) = st
            .runtime
            .load()
            .config
            .server
            .metrics_listen
            .as_ref()
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        else {
            return Ok(());
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        let bound = listener.local_addr()?;
        let _ = st.metrics.addr.set(bound);
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(scrape))
            .with_state(st.clone());
        tracing::info!(addr = %bound, "serving metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
        Ok(())
    }
}

/// OpenMetrics text (what the client library writes) as the Prometheus text format, which
/// every Prometheus and `promtool check metrics` read: a counter's `HELP` and `TYPE` name
/// its samples (`x_total`, not OpenMetrics' `x`), and there is no `# EOF` or `# UNIT`.
pub(super) fn prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

async fn scrape(State(st): State<Shared>) -> Response {
    let queued = st.access.decision_log().map_or(0, |l| l.queued());
    let now = chrono::Utc::now();
    for name in st.connectors.names() {
        let stale = st.connectors.health().stale(&name, now).is_some();
        st.metrics.connector_stale(&name, stale);
    }
    // Redis counts by scanning its session keys: at most once per SCANNED_COUNT_EVERY,
    // whatever the scrape interval (and however many scrapers). SQLite's count is an
    // indexed query, made at each scrape.
    let every = if st.runtime.load().config.store.redis.is_some() {
        SCANNED_COUNT_EVERY
    } else {
        Duration::ZERO
    };
    if st.metrics.sessions_counted.due(Instant::now(), every) {
        match st.stores.hot.count_sessions().await {
            Ok(n) => {
                st.metrics
                    .sessions_live
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => {
                // Counted again at the next scrape.
                st.metrics.sessions_counted.forget();
                tracing::warn!(error = %e, "metrics: cannot count the live sessions");
            }
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.encode(queued),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scanned_count_is_made_at_most_once_per_interval() {
        let c = LastCount::default();
        let t0 = Instant::now();
        assert!(c.due(t0, SCANNED_COUNT_EVERY), "the first scrape counts");
        assert!(!c.due(t0 + Duration::from_secs(29), SCANNED_COUNT_EVERY));
        assert!(c.due(t0 + Duration::from_secs(30), SCANNED_COUNT_EVERY));
        assert!(!c.due(t0 + Duration::from_secs(31), SCANNED_COUNT_EVERY));
        c.forget();
        assert!(
            c.due(t0 + Duration::from_secs(32), SCANNED_COUNT_EVERY),
            "after a failure"
        );
        assert!(
            c.due(t0 + Duration::from_secs(32), Duration::ZERO),
            "an indexed count: every scrape"
        );
    }
}
