//! The `admin:` section: who may use the admin API (`/admin/api/v1` under the portal path)
//! with their portal session, and how fresh their step-up must be for a change.
//!
//! ```yaml
//! admin:
//!   group: stepgate-admins     # users in this group may read through the API
//!   write_max_age: 5m          # a change also needs AAL3 passed within this long
//! ```
//! API tokens (`stepgate admin token create`) need neither: their scopes say what they may do.

use serde::Deserialize;
use stepgate_policy::HumanDuration;

/// `admin:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The group whose members may use the admin API with their portal session. Default
    /// `stepgate-admins`.
    pub group: String,
    /// How recently an administrator's session must have reached AAL3 for a change (a
    /// write) through the API; reads need the group only. Default `5m`.
    pub write_max_age: HumanDuration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            group: "stepgate-admins".into(),
            write_max_age: HumanDuration::from_secs(300),
        }
    }
}

impl AdminConfig {
    /// The problems with these settings, in words (`admin.…`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.group.trim().is_empty() {
            out.push("admin.group is empty: name the group of administrators".into());
        }
        let secs = self.write_max_age.0.as_secs();
        if !(10..=3600).contains(&secs) {
            out.push(format!(
                "admin.write_max_age is {}: expected 10s to 1h",
                self.write_max_age
            ));
        }
        out
    }
}
