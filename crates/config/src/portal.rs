//! The `portal:` section: what the portal's pages tell people beyond the policy's words —
//! where to get help (`portal.help`), shown on blocked pages, on step-up pages with nothing
//! to offer, and on "Forgot your password?".

use marked_yaml::Spanned;
use serde::{Deserialize, Serialize};

/// `portal:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// The help desk people are pointed to; none: the pages say "your administrator".
    #[serde(default)]
    pub help: Option<Spanned<HelpDesk>>,
}

/// `portal.help`: how to reach the help desk. At least one of the three.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HelpDesk {
    /// Who to ask, in words ("the IT service desk, extension 4321").
    #[serde(default)]
    pub text: Option<String>,
    /// A help-desk page (http or https).
    #[serde(default)]
    pub url: Option<String>,
    /// A help-desk e-mail address.
    #[serde(default)]
    pub email: Option<String>,
}

impl PortalConfig {
    /// What is wrong with the section, each with the fix.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(h) = &self.help else {
            return out;
        };
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&h.text) && blank(&h.url) && blank(&h.email) {
            out.push(
                "portal.help is empty: give at least one of `text`, `url`, `email` (or remove it)"
                    .into(),
            );
        }
        if let Some(u) = &h.url {
            let ok = url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                out.push(format!(
                    "portal.help.url `{u}`: expected an http(s) URL such as https://help.example.com"
                ));
            }
        }
        if let Some(e) = &h.email {
            let ok = e.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !e.contains(char::is_whitespace)
            });
            if !ok {
                out.push(format!(
                    "portal.help.email `{e}`: expected an address such as it-help@example.com"
                ));
            }
        }
        out
    }
}
