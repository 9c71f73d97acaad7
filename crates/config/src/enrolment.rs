//! The `enrolment:` section: how a person with only a password gets a second way to sign
//! in without an administrator's link. `at_first_sign_in` (off by default) lets a user who
//! has nothing but a password, signing in from one of the named networks, add a passkey or
//! an authenticator app right after the password, and then go on with the sign-in.

use marked_yaml::Spanned;
use serde::Deserialize;

/// `enrolment:`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentConfig {
    /// Enrolment right after the password, from trusted networks; none: off.
    #[serde(default)]
    pub at_first_sign_in: Option<Spanned<AtFirstSignIn>>,
}

/// `enrolment.at_first_sign_in`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtFirstSignIn {
    /// The named networks (`networks:` zones) a first enrolment is accepted from.
    pub networks: Vec<Spanned<String>>,
}

impl EnrolmentConfig {
    /// The networks `at_first_sign_in` accepts, by name (empty: off).
    pub fn first_sign_in_networks(&self) -> impl Iterator<Item = &str> {
        self.at_first_sign_in
            .iter()
            .flat_map(|a| a.networks.iter().map(|n| n.as_str()))
    }

    /// What is wrong with the section given the configured zone names, each with where and
    /// the fix.
    pub fn problems(&self, zones: &[&str]) -> Vec<(marked_yaml::Span, String)> {
        let mut out = Vec::new();
        let Some(a) = &self.at_first_sign_in else {
            return out;
        };
        if a.networks.is_empty() {
            out.push((
                *a.span(),
                "enrolment.at_first_sign_in.networks is empty: name at least one zone of \
                 `networks` (or remove at_first_sign_in)"
                    .to_string(),
            ));
        }
        for n in &a.networks {
            if !zones.contains(&n.as_str()) {
                out.push((
                    *n.span(),
                    format!(
                        "enrolment.at_first_sign_in.networks: `{}` is not a zone of `networks` \
                         (known: {})",
                        n.as_str(),
                        if zones.is_empty() {
                            "none".to_string()
                        } else {
                            zones.join(", ")
                        }
                    ),
                ));
            }
        }
        out
    }
}
