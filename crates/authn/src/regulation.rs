//! Brute-force and abuse regulation as pure decisions over counters the hot store keeps.
//!
//! Authelia-style: failures are counted per user and per client IP within `find_time`;
//! reaching `max_retries` (or `ip_max_retries`) bans the user (or IP) for `ban_time`.
//! Independently, NIST SP 800-63B §5.2.2 caps *consecutive* failures per account at 100:
//! past the cap the account refuses every attempt until the counter is reset (an admin
//! reset or a recovery), however slowly the guesses arrive. OTP sends are limited per user
//! and per destination. Each ban is returned as a [`Ban`] for the caller to store and audit.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::RegulationConfig;

/// NIST SP 800-63B §5.2.2: no more than 100 consecutive failed attempts on one account.
pub const NIST_MAX_CONSECUTIVE_FAILURES: u32 = 100;

/// The counters relevant to one attempt, read from the hot store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptCounters {
    /// Failures for this user within `find_time`.
    pub user_failures_in_window: u32,
    /// Failures from this client IP within `find_time`.
    pub ip_failures_in_window: u32,
    /// Failures for this user since the last success or reset.
    pub consecutive_user_failures: u32,
    /// Active ban on the user, if any.
    pub user_banned_until: Option<DateTime<Utc>>,
    /// Active ban on the IP, if any.
    pub ip_banned_until: Option<DateTime<Utc>>,
}

/// Why an attempt is refused before the secret is even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// The user is banned until then.
    UserBanned {
        /// Ban end.
        until: DateTime<Utc>,
    },
    /// The client IP is banned until then.
    IpBanned {
        /// Ban end.
        until: DateTime<Utc>,
    },
    /// The account reached the consecutive-failure cap; an admin must reset it.
    AccountLocked {
        /// Consecutive failures recorded.
        consecutive_failures: u32,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Same wording for user and IP bans: do not tell an attacker which one tripped.
            Refusal::UserBanned { until } | Refusal::IpBanned { until } => {
                write!(
                    f,
                    "too many failed attempts; try again after {}",
                    until.format("%H:%M UTC")
                )
            }
            Refusal::AccountLocked { .. } => f.write_str(
                "this account is locked after too many failed attempts; contact your administrator",
            ),
        }
    }
}

/// Decides whether an attempt may proceed.
pub fn check_attempt(
    cfg: &RegulationConfig,
    c: &AttemptCounters,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let cap = cfg
        .max_consecutive_failures
        .min(NIST_MAX_CONSECUTIVE_FAILURES);
    if c.consecutive_user_failures >= cap {
        return Err(Refusal::AccountLocked {
            consecutive_failures: c.consecutive_user_failures,
        });
    }
    if let Some(until) = c.user_banned_until.filter(|u| *u > now) {
        return Err(Refusal::UserBanned { until });
    }
    if let Some(until) = c.ip_banned_until.filter(|u| *u > now) {
        return Err(Refusal::IpBanned { until });
    }
    Ok(())
}

/// What a ban applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "target", content = "value", rename_all = "snake_case")]
pub enum BanTarget {
    /// A user name.
    User(String),
    /// A client IP.
    Ip(String),
}

/// A ban (or lock) to store and audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    /// Who.
    pub target: BanTarget,
    /// Until when; `None` for a lock that lasts until an admin resets it.
    pub until: Option<DateTime<Utc>>,
    /// Why, for the audit log.
    pub reason: &'static str,
}

/// After a failure has been counted (the counters include it), the bans to impose.
pub fn after_failure(
    cfg: &RegulationConfig,
    user: &str,
    ip: &str,
    c: &AttemptCounters,
    now: DateTime<Utc>,
) -> Vec<Ban> {
    let mut bans = Vec::new();
    let until = now + chrono::Duration::seconds(cfg.ban_time.as_secs() as i64);
    let cap = cfg
        .max_consecutive_failures
        .min(NIST_MAX_CONSECUTIVE_FAILURES);
    if c.consecutive_user_failures == cap {
        bans.push(Ban {
            target: BanTarget::User(user.to_string()),
            until: None,
            reason: "consecutive_failure_cap",
        });
    } else if cfg.max_retries > 0 && c.user_failures_in_window >= cfg.max_retries {
        bans.push(Ban {
            target: BanTarget::User(user.to_string()),
            until: Some(until),
            reason: "user_max_retries",
        });
    }
    if cfg.ip_max_retries > 0 && c.ip_failures_in_window >= cfg.ip_max_retries {
        bans.push(Ban {
            target: BanTarget::Ip(ip.to_string()),
            until: Some(until),
            reason: "ip_max_retries",
        });
    }
    bans
}

/// Why an OTP send is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum SendRefusal {
    /// Too many codes sent to this user recently.
    #[error("too many codes were sent recently; wait a few minutes before asking for another")]
    PerUser,
    /// Too many codes sent to this address or number recently.
    #[error("too many codes were sent to this address recently; wait a few minutes before asking for another")]
    PerDestination,
}

/// Decides whether one more OTP may be sent, given sends already counted in the window.
pub fn check_otp_send(
    cfg: &RegulationConfig,
    sent_to_user: u32,
    sent_to_destination: u32,
) -> Result<(), SendRefusal> {
    if sent_to_user >= cfg.otp_sends_per_user {
        return Err(SendRefusal::PerUser);
    }
    if sent_to_destination >= cfg.otp_sends_per_destination {
        return Err(SendRefusal::PerDestination);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    }

    /// A model of the hot store's windowed counters and bans, to drive the pure decisions.
    #[derive(Default)]
    struct Model {
        user_fail_times: Vec<DateTime<Utc>>,
        ip_fail_times: Vec<DateTime<Utc>>,
        consecutive: u32,
        user_ban: Option<DateTime<Utc>>,
        ip_ban: Option<DateTime<Utc>>,
        locked: bool,
        audit: Vec<Ban>,
    }

    impl Model {
        fn counters(&self, cfg: &RegulationConfig, now: DateTime<Utc>) -> AttemptCounters {
            let since = now - chrono::Duration::seconds(cfg.find_time.as_secs() as i64);
            AttemptCounters {
                user_failures_in_window: self.user_fail_times.iter().filter(|t| **t > since).count()
                    as u32,
                ip_failures_in_window: self.ip_fail_times.iter().filter(|t| **t > since).count()
                    as u32,
                consecutive_user_failures: self.consecutive,
                user_banned_until: self.user_ban,
                ip_banned_until: self.ip_ban,
            }
        }

        /// One sign-in attempt; `Ok(true)` = secret was right.
        fn attempt(
            &mut self,
            cfg: &RegulationConfig,
            now: DateTime<Utc>,
            correct: bool,
        ) -> Result<bool, Refusal> {
            check_attempt(cfg, &self.counters(cfg, now), now)?;
            assert!(!self.locked);
            if correct {
                self.consecutive = 0;
                return Ok(true);
            }
            self.user_fail_times.push(now);
            self.ip_fail_times.push(now);
            self.consecutive += 1;
            for ban in after_failure(cfg, "jane", "203.0.113.9", &self.counters(cfg, now), now) {
                match (&ban.target, ban.until) {
                    (BanTarget::User(_), None) => self.locked = true,
                    (BanTarget::User(_), Some(u)) => self.user_ban = Some(u),
                    (BanTarget::Ip(_), u) => self.ip_ban = u,
                }
                self.audit.push(ban);
            }
            Ok(false)
        }
    }

    #[test]
    fn authelia_style_ban_after_max_retries() {
        let cfg = RegulationConfig::default(); // 3 retries in 2m, 5m ban
        let mut m = Model::default();
        let now = t0();
        assert_eq!(m.attempt(&cfg, now, false), Ok(false));
        assert_eq!(m.attempt(&cfg, now, false), Ok(false));
        assert_eq!(m.attempt(&cfg, now, false), Ok(false));
        let until = now + chrono::Duration::minutes(5);
        assert_eq!(
            m.attempt(&cfg, now, true),
            Err(Refusal::UserBanned { until })
        );
        assert_eq!(m.audit.len(), 1);
        assert_eq!(m.audit[0].reason, "user_max_retries");
        // After the ban, the right password works and resets the consecutive count.
        assert_eq!(m.attempt(&cfg, until, true), Ok(true));
        assert_eq!(m.consecutive, 0);
    }

    #[test]
    fn failures_outside_find_time_do_not_ban() {
        let cfg = RegulationConfig::default();
        let mut m = Model::default();
        for i in 0..10 {
            let now = t0() + chrono::Duration::minutes(3 * i);
            assert_eq!(m.attempt(&cfg, now, false), Ok(false));
        }
        assert!(m.audit.is_empty());
    }

    #[test]
    fn ip_ban_covers_many_users() {
        let cfg = RegulationConfig::default();
        let c = AttemptCounters {
            ip_failures_in_window: 10,
            ..Default::default()
        };
        let bans = after_failure(&cfg, "user7", "198.51.100.1", &c, t0());
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].target, BanTarget::Ip("198.51.100.1".into()));
        let c = AttemptCounters {
            ip_banned_until: bans[0].until,
            ..Default::default()
        };
        assert!(matches!(
            check_attempt(&cfg, &c, t0()),
            Err(Refusal::IpBanned { .. })
        ));
    }

    /// Slow guessing that never trips the windowed ban still stops at 100: the 101st
    /// attempt is refused, even with the right password.
    #[test]
    fn hundred_and_first_attempt_is_refused() {
        let cfg = RegulationConfig::default();
        let mut m = Model::default();
        for i in 0..100 {
            let now = t0() + chrono::Duration::minutes(3 * i);
            assert_eq!(m.attempt(&cfg, now, false), Ok(false), "attempt {}", i + 1);
        }
        let now = t0() + chrono::Duration::minutes(300);
        assert_eq!(
            m.attempt(&cfg, now, true),
            Err(Refusal::AccountLocked {
                consecutive_failures: 100
            })
        );
        assert_eq!(
            m.audit.last().map(|b| b.reason),
            Some("consecutive_failure_cap")
        );
        // Days later it is still locked.
        assert_eq!(
            m.attempt(&cfg, now + chrono::Duration::days(3), true),
            Err(Refusal::AccountLocked {
                consecutive_failures: 100
            })
        );
    }

    /// Also when the windowed bans fire along the way.
    #[test]
    fn cap_holds_with_bans_in_between() {
        let cfg = RegulationConfig::default();
        let mut m = Model::default();
        let mut now = t0();
        let mut failures = 0;
        while failures < 100 {
            match m.attempt(&cfg, now, false) {
                Ok(false) => failures += 1,
                Err(Refusal::UserBanned { until }) => now = until,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(
            m.attempt(&cfg, now + chrono::Duration::hours(1), true),
            Err(Refusal::AccountLocked { .. })
        ));
    }

    #[test]
    fn a_lower_configured_cap_applies() {
        let cfg = RegulationConfig {
            max_retries: 0,
            ip_max_retries: 0,
            max_consecutive_failures: 10,
            ..RegulationConfig::default()
        };
        let mut m = Model::default();
        for _ in 0..10 {
            assert_eq!(m.attempt(&cfg, t0(), false), Ok(false));
        }
        assert!(matches!(
            m.attempt(&cfg, t0(), true),
            Err(Refusal::AccountLocked { .. })
        ));
    }

    #[test]
    fn otp_send_limits() {
        let cfg = RegulationConfig::default();
        let table = [
            (0, 0, Ok(())),
            (4, 4, Ok(())),
            (5, 0, Err(SendRefusal::PerUser)),
            (0, 5, Err(SendRefusal::PerDestination)),
        ];
        for (u, d, want) in table {
            assert_eq!(check_otp_send(&cfg, u, d), want, "user {u} dest {d}");
        }
    }

    #[test]
    fn refusal_messages_do_not_distinguish_user_and_ip() {
        let u = Refusal::UserBanned { until: t0() }.to_string();
        let i = Refusal::IpBanned { until: t0() }.to_string();
        assert_eq!(u, i);
    }
}
