//! `{portal}/admin/`: the dashboard — the last 24 hours' decisions by hour and outcome
//! (stacked bars drawn as inline SVG by the template from the numbers here), step-ups by
//! reason, the policies that denied most, locked users and non-compliant devices. It reads
//! the decision log as the policies' report-only impact does (`admin::decisions::last_day`:
//! recorded decisions, so allowed requests as `log.decisions.allowed_one_in` samples them),
//! the users as the users page does and the devices as the API's listing does.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Timelike, Utc};
use minijinja::context;
use serde::Serialize;
use stepgate_store::DecisionRecord;

use super::{shown, Admin};
use crate::admin::decisions::last_day;
use crate::admin::devices::listing;
use crate::portal::error::PortalError;

/// The outcomes, in the order the bars stack them (bottom first).
const OUTCOMES: [&str; 5] = ["allow", "sign_in", "step_up", "deny", "unavailable"];
/// The chart's plot height, in SVG units.
const PLOT: u64 = 160;

/// One outcome's part of an hour's bar.
#[derive(Serialize)]
struct Segment {
    outcome: &'static str,
    n: u64,
    y: u64,
    h: u64,
}

/// One hour's bar.
#[derive(Serialize)]
struct Hour {
    x: usize,
    label: String,
    total: u64,
    segments: Vec<Segment>,
}

/// A counted thing with its bar's width in percent of the largest.
#[derive(Serialize)]
struct Count {
    label: String,
    n: u64,
    w: u64,
}

/// The hourly bars of `recent` over the 24 hours up to `now`, and the largest hour.
fn hours(recent: &[DecisionRecord], now: DateTime<Utc>) -> (Vec<Hour>, u64) {
    let end = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        + Duration::hours(1);
    let start = end - Duration::hours(24);
    let mut counts = [[0u64; OUTCOMES.len()]; 24];
    for d in recent {
        let Ok(i) = usize::try_from((d.time - start).num_hours()) else {
            continue;
        };
        if let (Some(row), Some(k)) = (
            counts.get_mut(i),
            OUTCOMES.iter().position(|o| *o == d.outcome),
        ) {
            row[k] += 1;
        }
    }
    let max = counts
        .iter()
        .map(|r| r.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut y = PLOT;
            let segments = OUTCOMES
                .iter()
                .zip(row)
                .filter(|(_, n)| **n > 0)
                .map(|(o, n)| {
                    let h = (n * PLOT).div_ceil(max.max(1));
                    y = y.saturating_sub(h);
                    Segment {
                        outcome: o,
                        n: *n,
                        y,
                        h,
                    }
                })
                .collect();
            Hour {
                x: i * 30,
                label: (start + Duration::hours(i as i64))
                    .format("%H:00")
                    .to_string(),
                total: row.iter().sum(),
                segments,
            }
        })
        .collect();
    (bars, max)
}

/// The `top` largest of `counts`, largest first, with their bars' widths.
fn ranked(counts: BTreeMap<String, u64>, top: usize) -> Vec<Count> {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(top);
    let max = v.first().map(|c| c.1).unwrap_or(1).max(1);
    v.into_iter()
        .map(|(label, n)| Count {
            label,
            n,
            w: (n * 100).div_ceil(max),
        })
        .collect()
}

/// Why a step-up was asked: the deciding policy and the level it wanted.
fn reason(d: &DecisionRecord) -> String {
    let policy = d.policy.as_deref().unwrap_or("(default outcome)");
    let requirement = d.detail.member("requirement").unwrap_or_default();
    match requirement["min_aal"].as_u64() {
        Some(n) => format!("{policy}: AAL{n}"),
        None => policy.to_string(),
    }
}

/// `GET {portal}/admin/`.
pub async fn page(a: Admin) -> Result<Response, PortalError> {
    let (recent, error) = match last_day(&a.st).await {
        Ok((_, r)) => (r, None),
        Err(p) => (Vec::new(), Some(shown(&p).1)),
    };
    let (bars, max) = hours(&recent, Utc::now());
    let (mut step_ups, mut denials) = (BTreeMap::new(), BTreeMap::new());
    for d in &recent {
        match d.outcome.as_str() {
            "step_up" => *step_ups.entry(reason(d)).or_default() += 1,
            "deny" => {
                let p = d
                    .policy
                    .clone()
                    .unwrap_or_else(|| "(before any policy)".into());
                *denials.entry(p).or_default() += 1;
            }
            _ => {}
        }
    }
    let locked: Vec<_> = super::users::rows(&a.st, "")
        .await?
        .into_iter()
        .filter(|u| u.locked.is_some())
        .collect();
    let failing: Vec<_> = listing(&a.st, None)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["compliant"] == false)
        .collect();
    let mut totals = BTreeMap::new();
    for d in &recent {
        *totals.entry(d.outcome.clone()).or_insert(0u64) += 1;
    }
    Ok(a.render(
        if error.is_some() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        },
        "admin_dashboard.html",
        context! {
            bars => bars, max => max, plot => PLOT, outcomes => OUTCOMES, totals => totals,
            decisions => recent.len(), step_ups => ranked(step_ups, 8),
            denials => ranked(denials, 8), locked => locked, failing => failing, error => error,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: DateTime<Utc>, outcome: &str) -> DecisionRecord {
        DecisionRecord {
            request_id: stepgate_store::new_id(),
            time,
            kind: "access".into(),
            user: None,
            session: None,
            app: None,
            route: None,
            method: "GET".into(),
            path: "/".into(),
            ip: None,
            device: None,
            policy: None,
            policy_outcome: None,
            outcome: outcome.into(),
            report_only: serde_json::Value::Null,
            detail: stepgate_store::JsonText::default(),
        }
    }

    #[test]
    fn the_hours_count_each_outcome_and_stack_within_the_plot() {
        let now = DateTime::parse_from_rfc3339("2026-01-31T10:20:00Z")
            .unwrap()
            .to_utc();
        let recent = vec![
            at(now, "allow"),
            at(now, "allow"),
            at(now, "deny"),
            at(now - Duration::hours(3), "step_up"),
            at(now - Duration::hours(30), "deny"),
        ];
        let (bars, max) = hours(&recent, now);
        assert_eq!(bars.len(), 24);
        assert_eq!(max, 3);
        let last = &bars[23];
        assert_eq!(last.label, "10:00");
        assert_eq!(last.total, 3);
        assert_eq!(last.segments.len(), 2);
        assert_eq!((last.segments[0].outcome, last.segments[0].n), ("allow", 2));
        assert_eq!(last.segments[1].y, 0, "the tallest bar fills the plot");
        assert_eq!(bars[20].segments[0].outcome, "step_up");
        assert_eq!(
            bars.iter().map(|b| b.total).sum::<u64>(),
            4,
            "the 30-hour-old one is out"
        );
    }

    #[test]
    fn rankings_are_largest_first_with_widths_relative_to_the_largest() {
        let r = ranked(
            BTreeMap::from([
                ("a".to_string(), 1),
                ("b".to_string(), 4),
                ("c".to_string(), 2),
            ]),
            2,
        );
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].label.as_str(), r[0].n, r[0].w), ("b", 4, 100));
        assert_eq!((r[1].label.as_str(), r[1].w), ("c", 50));
    }
}
