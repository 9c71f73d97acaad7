//! The `admin:` section: who may use the admin console and API (`/admin/` and
//! `/admin/api/v1` under the portal path) with their portal session, how fresh their
//! step-up must be for a change, and the app id policies target them by.
//!
//! ```yaml
//! admin:
//!   group: stepgate-admins     # users in this group may read through the console and API
//!   write_max_age: 5m          # a change also needs AAL3 passed within this long
//!   app: stepgate-admin        # the app id of the console and the API's session calls
//!   policy_edits: yaml         # or `store`: policy sets saved through the API, versioned
//! ```
//! API tokens (`stepgate admin token create`) need none of these: their scopes say what
//! they may do, and policies do not decide their calls.

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
    /// The app id of stepgate's own admin surface: every console page and every admin API
    /// call made with a portal session is decided by the policies under this id (like an
    /// app under `apps`, which may not take it), with `group` and `write_max_age` on top.
    /// Default `stepgate-admin`.
    pub app: String,
    /// Where the policies in force come from: `yaml` (default), the configuration files
    /// alone; `store`, the newest policy set saved through the admin API (versioned in the
    /// durable store, with history and rollback) in place of the files' `policies:`. Read
    /// at start.
    pub policy_edits: PolicyEdits,
}

/// `admin.policy_edits`: where the policies in force come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyEdits {
    /// The configuration files' `policies:` (reviewed in git); the API only validates drafts.
    #[default]
    Yaml,
    /// The newest version saved through the admin API, once one is saved.
    Store,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            group: "stepgate-admins".into(),
            write_max_age: HumanDuration::from_secs(300),
            app: "stepgate-admin".into(),
            policy_edits: PolicyEdits::Yaml,
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
        let app = self.app.as_str();
        if app.is_empty()
            || !app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push(format!(
                "admin.app `{app}`: expected an app id of letters, digits, `-` and `_` only, like stepgate-admin"
            ));
        }
        out
    }
}
