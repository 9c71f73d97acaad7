//! Behavioural risk: the per-user sign-in history and the scorer.
//!
//! The scorer is a pure function of the history, the attempt and [`RiskConfig`]: each
//! reason that applies adds its weight; the total maps to low/medium/high. Defaults and
//! their reasoning are in docs/risk.md.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stepgate_policy::{RiskContext, RiskLevel};

use crate::config::RiskConfig;

/// Outcome of a sign-in attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInOutcome {
    /// Signed in.
    Success,
    /// Wrong credentials or factor.
    Failure,
}

/// One sign-in in a user's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignInEntry {
    /// When.
    pub time: DateTime<Utc>,
    /// Client IP.
    pub ip: Option<IpAddr>,
    /// Network zones the IP was in (`corporate`, `vpn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// GeoIP country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// GeoIP city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// GeoIP latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// GeoIP longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// Device id, when the request was tied to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Raw user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Success or failure.
    pub outcome: SignInOutcome,
}

/// The attempt being scored (the same facts as a history entry, before its outcome).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignInAttempt {
    /// When.
    pub time: DateTime<Utc>,
    /// Client IP.
    pub ip: Option<IpAddr>,
    /// GeoIP country.
    pub country: Option<String>,
    /// GeoIP city.
    pub city: Option<String>,
    /// GeoIP latitude.
    pub latitude: Option<f64>,
    /// GeoIP longitude.
    pub longitude: Option<f64>,
    /// Device id.
    pub device_id: Option<String>,
    /// IP risk score 0–100.
    pub ip_risk_score: Option<u8>,
}

/// A named reason with the points it added.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RiskReason {
    /// `first_sign_in`, `new_device`, `new_ip`, `new_city`, `new_country`,
    /// `impossible_travel`, `failure_streak`, `risky_ip`.
    pub name: &'static str,
    /// Points added.
    pub weight: u32,
    /// Detail for the audit log ("1 240 km in 12 min").
    pub detail: String,
}

/// The scorer's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RiskAssessment {
    /// Level from the total.
    pub level: RiskLevel,
    /// Sum of the weights.
    pub score: u32,
    /// Reasons that applied.
    pub reasons: Vec<RiskReason>,
    /// Speed from the last successful sign-in (km/min), when both have coordinates.
    pub velocity_kmpm: Option<f64>,
}

impl RiskAssessment {
    /// The policy engine's view.
    pub fn to_context(&self) -> RiskContext {
        RiskContext {
            level: self.level,
            reasons: self.reasons.iter().map(|r| r.name.to_owned()).collect(),
            velocity_kmpm: self.velocity_kmpm,
        }
    }
}

/// Great-circle distance in km between two (lat, lon) points in degrees (haversine).
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

/// Scores an attempt against the user's history (any order; entries after the attempt are ignored).
pub fn score(history: &[SignInEntry], attempt: &SignInAttempt, cfg: &RiskConfig) -> RiskAssessment {
    let w = &cfg.weights;
    let mut reasons = Vec::new();
    let past: Vec<&SignInEntry> = history.iter().filter(|e| e.time <= attempt.time).collect();
    let successes: Vec<&&SignInEntry> = past
        .iter()
        .filter(|e| e.outcome == SignInOutcome::Success)
        .collect();
    let mut velocity = None;

    if successes.is_empty() {
        reasons.push(RiskReason {
            name: "first_sign_in",
            weight: w.first_sign_in,
            detail: "no earlier successful sign-in".into(),
        });
    } else {
        if let Some(d) = &attempt.device_id {
            if !successes.iter().any(|e| e.device_id.as_ref() == Some(d)) {
                reasons.push(RiskReason {
                    name: "new_device",
                    weight: w.new_device,
                    detail: format!("device {d} not seen before"),
                });
            }
        } else {
            reasons.push(RiskReason {
                name: "new_device",
                weight: w.new_device,
                detail: "request not tied to a known device".into(),
            });
        }
        match attempt.ip {
            Some(ip) => {
                if !successes.iter().any(|e| e.ip == Some(ip)) {
                    reasons.push(RiskReason {
                        name: "new_ip",
                        weight: w.new_ip,
                        detail: format!("{ip} not seen before"),
                    });
                }
            }
            // A trusted proxy forwarded the request without a readable address: not one
            // seen before either.
            None => reasons.push(RiskReason {
                name: "new_ip",
                weight: w.new_ip,
                detail: "the client address is unknown".into(),
            }),
        }
        let mut new_country = false;
        if let Some(c) = &attempt.country {
            if !successes.iter().any(|e| {
                e.country
                    .as_deref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(c))
            }) {
                new_country = true;
                reasons.push(RiskReason {
                    name: "new_country",
                    weight: w.new_country,
                    detail: format!("country {c} not seen before"),
                });
            }
        }
        if let Some(c) = &attempt.city {
            let seen = successes.iter().any(|e| {
                e.city.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(c))
                    && (attempt.country.is_none() || e.country == attempt.country)
            });
            if !seen && !new_country {
                reasons.push(RiskReason {
                    name: "new_city",
                    weight: w.new_city,
                    detail: format!("city {c} not seen before"),
                });
            }
        }
        let last = successes.iter().max_by_key(|e| e.time);
        if let (Some(last), Some(lat), Some(lon)) = (last, attempt.latitude, attempt.longitude) {
            if let (Some(plat), Some(plon)) = (last.latitude, last.longitude) {
                let km = haversine_km(plat, plon, lat, lon);
                // At least one minute: two sign-ins in the same second are not infinitely fast.
                let minutes = ((attempt.time - last.time).num_seconds() as f64 / 60.0).max(1.0);
                let v = km / minutes;
                velocity = Some(v);
                if km >= cfg.min_travel_km && v > cfg.impossible_travel_kmpm {
                    reasons.push(RiskReason {
                        name: "impossible_travel",
                        weight: w.impossible_travel,
                        detail: format!("{km:.0} km in {minutes:.0} min ({v:.1} km/min)"),
                    });
                }
            }
        }
    }

    let window_start =
        attempt.time - chrono::TimeDelta::seconds(cfg.failure_window.as_secs() as i64);
    let mut sorted = past.clone();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.time));
    let streak = sorted
        .iter()
        .take_while(|e| e.outcome == SignInOutcome::Failure && e.time >= window_start)
        .count();
    if cfg.failure_streak > 0 && streak >= cfg.failure_streak as usize {
        reasons.push(RiskReason {
            name: "failure_streak",
            weight: w.failure_streak,
            detail: format!("{streak} failed sign-ins in a row"),
        });
    }
    if let Some(s) = attempt.ip_risk_score {
        if s >= cfg.risky_ip_score {
            reasons.push(RiskReason {
                name: "risky_ip",
                weight: w.risky_ip,
                detail: format!("IP risk score {s}"),
            });
        }
    }
    let total: u32 = reasons.iter().map(|r| r.weight).sum();
    let level = if total >= cfg.high_at {
        RiskLevel::High
    } else if total >= cfg.medium_at {
        RiskLevel::Medium
    } else {
        RiskLevel::Low
    };
    RiskAssessment {
        level,
        score: total,
        reasons,
        velocity_kmpm: velocity,
    }
}

/// Adds an entry and prunes the history to `history_size` entries within `history_max_age`
/// (newest kept). The server stores the result.
pub fn record(history: &mut Vec<SignInEntry>, entry: SignInEntry, cfg: &RiskConfig) {
    let now = entry.time;
    history.push(entry);
    let oldest =
        now - chrono::TimeDelta::seconds(cfg.history_max_age.as_secs().min(i64::MAX as u64) as i64);
    history.retain(|e| e.time >= oldest);
    history.sort_by_key(|e| e.time);
    if history.len() > cfg.history_size {
        let excess = history.len() - cfg.history_size;
        history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap() + chrono::TimeDelta::minutes(min)
    }

    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const NYC: (f64, f64) = (40.7128, -74.0060);
    const VERSAILLES: (f64, f64) = (48.8049, 2.1204);

    fn ok_at(
        min: i64,
        ip: &str,
        country: &str,
        city: &str,
        at: (f64, f64),
        device: &str,
    ) -> SignInEntry {
        SignInEntry {
            time: t(min),
            ip: Some(ip.parse().unwrap()),
            zones: vec![],
            country: Some(country.into()),
            city: Some(city.into()),
            latitude: Some(at.0),
            longitude: Some(at.1),
            device_id: Some(device.into()),
            user_agent: None,
            outcome: SignInOutcome::Success,
        }
    }

    fn attempt(
        min: i64,
        ip: &str,
        country: &str,
        city: &str,
        at: (f64, f64),
        device: &str,
    ) -> SignInAttempt {
        SignInAttempt {
            time: t(min),
            ip: Some(ip.parse().unwrap()),
            country: Some(country.into()),
            city: Some(city.into()),
            latitude: Some(at.0),
            longitude: Some(at.1),
            device_id: Some(device.into()),
            ip_risk_score: None,
        }
    }

    fn names(a: &RiskAssessment) -> Vec<&'static str> {
        a.reasons.iter().map(|r| r.name).collect()
    }

    #[test]
    fn haversine_paris_new_york() {
        let d = haversine_km(PARIS.0, PARIS.1, NYC.0, NYC.1);
        assert!((d - 5837.0).abs() < 10.0, "{d}");
        assert_eq!(haversine_km(1.0, 2.0, 1.0, 2.0), 0.0);
    }

    #[test]
    fn first_sign_in_is_low_by_default() {
        let a = score(
            &[],
            &attempt(0, "198.51.100.7", "FR", "Paris", PARIS, "d1"),
            &RiskConfig::default(),
        );
        assert_eq!(names(&a), ["first_sign_in"]);
        assert_eq!(a.level, RiskLevel::Low);
    }

    #[test]
    fn familiar_sign_in_is_low_with_no_reasons() {
        let h = vec![ok_at(0, "198.51.100.7", "FR", "Paris", PARIS, "d1")];
        let a = score(
            &h,
            &attempt(600, "198.51.100.7", "FR", "Paris", PARIS, "d1"),
            &RiskConfig::default(),
        );
        assert!(a.reasons.is_empty());
        assert_eq!(a.level, RiskLevel::Low);
        assert_eq!(a.velocity_kmpm, Some(0.0));
    }

    #[test]
    fn an_unknown_address_is_not_a_familiar_one() {
        let h = vec![ok_at(0, "198.51.100.7", "FR", "Paris", PARIS, "d1")];
        let mut unknown = attempt(600, "198.51.100.7", "FR", "Paris", PARIS, "d1");
        unknown.ip = None;
        let a = score(&h, &unknown, &RiskConfig::default());
        assert_eq!(names(&a), ["new_ip"]);
        assert_eq!(a.reasons[0].detail, "the client address is unknown");
    }

    #[test]
    fn impossible_travel_is_high() {
        let h = vec![ok_at(0, "198.51.100.7", "FR", "Paris", PARIS, "d1")];
        let a = score(
            &h,
            &attempt(60, "203.0.113.9", "US", "New York", NYC, "d1"),
            &RiskConfig::default(),
        );
        assert_eq!(names(&a), ["new_ip", "new_country", "impossible_travel"]);
        assert_eq!(a.level, RiskLevel::High);
        let v = a.velocity_kmpm.unwrap();
        assert!(v > 90.0 && v < 100.0, "{v}");
        // eight hours later the same trip is a plane ride
        let a = score(
            &h,
            &attempt(480, "203.0.113.9", "US", "New York", NYC, "d1"),
            &RiskConfig::default(),
        );
        assert_eq!(names(&a), ["new_ip", "new_country"]);
        assert_eq!(a.level, RiskLevel::Medium);
    }

    #[test]
    fn short_hops_are_not_travel() {
        let h = vec![ok_at(0, "198.51.100.7", "FR", "Paris", PARIS, "d1")];
        let a = score(
            &h,
            &attempt(1, "198.51.100.8", "FR", "Versailles", VERSAILLES, "d1"),
            &RiskConfig::default(),
        );
        assert_eq!(names(&a), ["new_ip", "new_city"]);
        assert_eq!(a.level, RiskLevel::Low);
    }

    #[test]
    fn new_device_failure_streak_and_risky_ip() {
        let mut h = vec![ok_at(0, "198.51.100.7", "FR", "Paris", PARIS, "d1")];
        for i in 1..=5 {
            let mut f = ok_at(100 + i, "198.51.100.7", "FR", "Paris", PARIS, "d1");
            f.outcome = SignInOutcome::Failure;
            h.push(f);
        }
        let mut at = attempt(110, "198.51.100.7", "FR", "Paris", PARIS, "d2");
        at.ip_risk_score = Some(90);
        let a = score(&h, &at, &RiskConfig::default());
        assert_eq!(names(&a), ["new_device", "failure_streak", "risky_ip"]);
        assert_eq!(a.level, RiskLevel::High);
        assert_eq!(
            a.to_context().reasons,
            ["new_device", "failure_streak", "risky_ip"]
        );
        // old failures fall out of the window
        let a = score(
            &h,
            &attempt(300, "198.51.100.7", "FR", "Paris", PARIS, "d1"),
            &RiskConfig::default(),
        );
        assert!(a.reasons.is_empty());
    }

    #[test]
    fn failures_do_not_build_trust() {
        let mut f = ok_at(0, "198.51.100.7", "FR", "Paris", PARIS, "d1");
        f.outcome = SignInOutcome::Failure;
        let a = score(
            &[f],
            &attempt(5, "198.51.100.7", "FR", "Paris", PARIS, "d1"),
            &RiskConfig::default(),
        );
        assert_eq!(names(&a), ["first_sign_in"]);
    }

    #[test]
    fn record_prunes_by_size_and_age() {
        let cfg = RiskConfig {
            history_size: 3,
            ..RiskConfig::default()
        };
        let mut h = Vec::new();
        for i in 0..5 {
            record(
                &mut h,
                ok_at(i, "198.51.100.7", "FR", "Paris", PARIS, "d1"),
                &cfg,
            );
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].time, t(2));
        record(
            &mut h,
            ok_at(200 * 24 * 60, "198.51.100.7", "FR", "Paris", PARIS, "d1"),
            &cfg,
        );
        assert_eq!(h.len(), 1);
    }
}
