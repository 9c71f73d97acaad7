//! The global session policy (`sessions:`): lifetimes and idle timeouts, tightened per
//! assurance level, with NIST SP 800-63B defaults.

use serde::Deserialize;
use stepgate_policy::HumanDuration;

/// Which revision of NIST SP 800-63B supplies the per-AAL defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NistRevision {
    /// SP 800-63B rev. 3: AAL1 30 d; AAL2 12 h / 30 min idle; AAL3 12 h / 15 min idle.
    #[default]
    Rev3,
    /// SP 800-63B-4: AAL1 30 d; AAL2 24 h / 1 h idle; AAL3 12 h / 15 min idle.
    Rev4,
}

/// Limits for sessions at one assurance level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// Absolute lifetime from sign-in.
    #[serde(default)]
    pub lifetime: Option<HumanDuration>,
    /// Idle timeout since the last request.
    #[serde(default)]
    pub idle_timeout: Option<HumanDuration>,
}

/// The session cookie.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name; `__Host-` is prefixed when no `domain` is set and the cookie is secure.
    #[serde(default = "default_cookie_name")]
    pub name: String,
    /// Domain for forward-auth across subdomains (e.g. `example.com`). Absent: host-only.
    #[serde(default)]
    pub domain: Option<String>,
    /// Send only over HTTPS (turn off only for plain-HTTP local demos).
    #[serde(default = "yes")]
    pub secure: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: default_cookie_name(),
            domain: None,
            secure: true,
        }
    }
}

fn default_cookie_name() -> String {
    "stepgate_session".into()
}

fn yes() -> bool {
    true
}

/// `sessions:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Source of the per-AAL defaults.
    #[serde(default)]
    pub nist_revision: NistRevision,
    /// Global cap on any session's lifetime.
    #[serde(default)]
    pub lifetime: Option<HumanDuration>,
    /// Global cap on idle time.
    #[serde(default)]
    pub idle_timeout: Option<HumanDuration>,
    /// Overrides for sessions at AAL1.
    #[serde(default)]
    pub aal1: SessionLimits,
    /// Overrides for sessions at AAL2.
    #[serde(default)]
    pub aal2: SessionLimits,
    /// Overrides for sessions at AAL3.
    #[serde(default)]
    pub aal3: SessionLimits,
    /// Offer "keep me signed in" (a persistent cookie); otherwise a browser-session cookie.
    #[serde(default)]
    pub remember_me: bool,
    /// The session cookie.
    #[serde(default)]
    pub cookie: CookieConfig,
    /// Whether signing out also forgets the MFA remembered on the device for the sign-in
    /// policies' `mfa_frequency` (default false: signing out and in again within the
    /// window asks for the first factor only; "sign out everywhere" always forgets it).
    #[serde(default)]
    pub forget_on_sign_out: bool,
    /// Whether app hosts other than the public URL's get the session by a hand-off
    /// (default false): the portal on the public URL's host, seeing a live session, sends
    /// the browser back to the app host with a single-use, short-lived code bound to that
    /// host and browser, which the app host exchanges for its own host-only session cookie.
    /// For app hosts the session cookie cannot reach (another domain, or `localhost`).
    #[serde(default)]
    pub hand_off: bool,
    /// How long a node may reuse the sessions, users, devices and sign-in histories it read
    /// from the stores (default 2 s; `0s` turns the cache off). Changes made on the same
    /// node take effect at once; this bounds how long another node's change (a logout, a
    /// disabled user) takes to be seen.
    #[serde(default)]
    pub cache_ttl: Option<HumanDuration>,
}

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;
const MIN: u64 = 60;

/// `sessions.cache_ttl` when not set.
pub const DEFAULT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

impl SessionsConfig {
    /// The per-node read cache's TTL (`sessions.cache_ttl`, 2 s by default; zero: off).
    pub fn cache_ttl(&self) -> std::time::Duration {
        self.cache_ttl.map_or(DEFAULT_CACHE_TTL, |d| d.0)
    }

    /// The effective (lifetime, idle timeout) for a session at `aal` (1–3; 0 counts as 1):
    /// the NIST default for the level, replaced by the level's override, capped by the
    /// global values.
    pub fn limits(&self, aal: u8) -> (HumanDuration, Option<HumanDuration>) {
        let (nist_life, nist_idle) = match (self.nist_revision, aal) {
            (_, 0 | 1) => (30 * DAY, None),
            (NistRevision::Rev3, 2) => (12 * HOUR, Some(30 * MIN)),
            (NistRevision::Rev4, 2) => (24 * HOUR, Some(HOUR)),
            (_, _) => (12 * HOUR, Some(15 * MIN)),
        };
        let over = match aal {
            0 | 1 => self.aal1,
            2 => self.aal2,
            _ => self.aal3,
        };
        let mut life = over.lifetime.unwrap_or(HumanDuration::from_secs(nist_life));
        let mut idle = over
            .idle_timeout
            .or(nist_idle.map(HumanDuration::from_secs));
        if let Some(cap) = self.lifetime {
            life = life.min(cap);
        }
        if let Some(cap) = self.idle_timeout {
            idle = Some(idle.map_or(cap, |i| i.min(cap)));
        }
        (life, idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nist_rev3_defaults() {
        let s = SessionsConfig::default();
        assert_eq!(s.limits(1), (HumanDuration::from_secs(30 * DAY), None));
        assert_eq!(
            s.limits(2),
            (
                HumanDuration::from_secs(12 * HOUR),
                Some(HumanDuration::from_secs(30 * MIN))
            )
        );
        assert_eq!(
            s.limits(3),
            (
                HumanDuration::from_secs(12 * HOUR),
                Some(HumanDuration::from_secs(15 * MIN))
            )
        );
    }

    #[test]
    fn rev4_and_caps() {
        let s: SessionsConfig = marked_yaml::from_yaml(
            0,
            "nist_revision: rev4\nlifetime: 8h\naal3:\n  idle_timeout: 10m\n",
        )
        .unwrap();
        assert_eq!(
            s.limits(2),
            (
                HumanDuration::from_secs(8 * HOUR),
                Some(HumanDuration::from_secs(HOUR))
            )
        );
        assert_eq!(
            s.limits(3),
            (
                HumanDuration::from_secs(8 * HOUR),
                Some(HumanDuration::from_secs(10 * MIN))
            )
        );
        assert_eq!(s.limits(1).0, HumanDuration::from_secs(8 * HOUR));
    }
}
