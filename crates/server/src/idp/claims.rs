//! From a verified ID token's claims: who the user is (the provider's claim mapping), and
//! what the upstream's authentication counts for here (the provider's trust mapping).
//!
//! Pure functions: the caller passes the claims, the configuration and `now`.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use stepgate_authn::{AuthenticatorClass, PassedFactor};
use stepgate_config::identity::{ClaimMapping, TrustConfig, TrustedFactor};
use stepgate_store::AttributeValue;

/// The `amr` recorded for the upstream sign-in when nothing it says is trusted.
pub const UPSTREAM_AMR: &str = "fed";

/// Longest username, display name, e-mail, group or attribute value taken from a provider.
const MAX_VALUE: usize = 256;
/// Most groups taken from a provider.
const MAX_GROUPS: usize = 256;

/// The user an upstream provider vouched for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// The provider's subject identifier (stable, unique per provider).
    pub sub: String,
    /// The username (the mapped claim).
    pub username: String,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Whether the provider says it verified the address (`email_verified: true`).
    pub email_verified: bool,
    /// Groups, prefixed as configured.
    pub groups: Vec<String>,
    /// Mapped attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// `amr` as sent.
    pub amr: Vec<String>,
    /// `acr` as sent.
    pub acr: Option<String>,
    /// When the user authenticated at the provider (`auth_time`).
    pub auth_time: Option<DateTime<Utc>>,
}

/// A string fit to keep: not empty, no control characters, not too long.
fn clean(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s.len() <= MAX_VALUE && !s.chars().any(char::is_control))
        .then(|| s.to_string())
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => clean(s),
        Value::Number(n) => clean(&n.to_string()),
        _ => None,
    }
}

fn list_claim(claims: &Map<String, Value>, name: &str, separator: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().and_then(clean))
            .take(MAX_GROUPS)
            .collect(),
        Some(Value::String(s)) => s
            .split(separator)
            .filter_map(clean)
            .take(MAX_GROUPS)
            .collect(),
        _ => Vec::new(),
    }
}

/// Group names as a user's groups: `prefix` before each, sorted, each once.
pub fn prefixed_groups(names: impl Iterator<Item = String>, prefix: &str) -> Vec<String> {
    let mut groups: Vec<String> = names.map(|g| format!("{prefix}{g}")).collect();
    groups.sort();
    groups.dedup();
    groups
}

/// The identity the claims describe under `map`; an error names what is missing.
pub fn identity(
    claims: &Map<String, Value>,
    map: &ClaimMapping,
) -> Result<UpstreamIdentity, String> {
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or("the token has no subject")?
        .to_string();
    let mut username = string_claim(claims, &map.username).ok_or_else(|| {
        format!(
            "the provider sent no usable `{}` claim to name you by",
            map.username
        )
    })?;
    if map.username_lowercase {
        username = username.to_lowercase();
    }
    let groups = prefixed_groups(
        list_claim(claims, &map.groups, &map.groups_separator).into_iter(),
        &map.groups_prefix,
    );
    let mut attributes = BTreeMap::new();
    for (attr, claim) in &map.attributes {
        let v = match claims.get(claim) {
            Some(Value::Array(_)) => AttributeValue::Many(list_claim(claims, claim, ",")),
            _ => match string_claim(claims, claim) {
                Some(s) => AttributeValue::One(s),
                None => continue,
            },
        };
        attributes.insert(attr.clone(), v);
    }
    Ok(UpstreamIdentity {
        sub,
        username,
        name: string_claim(claims, &map.name),
        email: string_claim(claims, &map.email),
        email_verified: matches!(claims.get("email_verified"), Some(Value::Bool(true))),
        groups,
        attributes,
        amr: amr_claim(claims),
        acr: string_claim(claims, "acr"),
        auth_time: claims
            .get("auth_time")
            .and_then(Value::as_i64)
            .and_then(|t| Utc.timestamp_opt(t, 0).single()),
    })
}

/// `amr` as sent (at most 16 values, none longer than 32 bytes).
fn amr_claim(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("amr") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| s.len() <= 32)
            .map(str::to_string)
            .take(16)
            .collect(),
        _ => Vec::new(),
    }
}

/// What the upstream's authentication counts for at `now`: one factor per trusted `amr`
/// value and per class a trusted `acr` names, passed at the upstream's `auth_time` — when
/// that is within the trust window. Otherwise (nothing trusted, no `auth_time`, outside
/// the window) the sign-in alone, one knowledge-class factor (AAL1). Never empty.
pub fn factors(
    who: &UpstreamIdentity,
    trust: &TrustConfig,
    now: DateTime<Utc>,
) -> Vec<PassedFactor> {
    let at = who.auth_time.map_or(now, |t| t.min(now));
    let window = chrono::Duration::from_std(trust.window.0).unwrap_or_default();
    let within = who.auth_time.is_some() && now - at <= window;
    let mut out: Vec<PassedFactor> = Vec::new();
    if within {
        let mut push = |amr: &str, t: TrustedFactor| {
            let (class, pr, hw) = match t {
                TrustedFactor::Knowledge => (AuthenticatorClass::Knowledge, false, false),
                TrustedFactor::Possession => (AuthenticatorClass::Possession, false, false),
                TrustedFactor::PhishingResistant => (AuthenticatorClass::Possession, true, false),
                TrustedFactor::HardwareBound => (AuthenticatorClass::Possession, true, true),
            };
            if !out.iter().any(|f| f.amr == amr && f.class == Some(class)) {
                out.push(PassedFactor::upstream(amr, class, pr, hw, at));
            }
        };
        for a in &who.amr {
            if let Some(t) = trust.amr.get(a) {
                push(a, *t);
            }
        }
        if let Some(classes) = who.acr.as_ref().and_then(|acr| trust.acr.get(acr)) {
            for t in classes {
                let amr = match t {
                    TrustedFactor::Knowledge => "pwd",
                    TrustedFactor::Possession => "otp",
                    TrustedFactor::PhishingResistant => "swk",
                    TrustedFactor::HardwareBound => "hwk",
                };
                push(amr, *t);
            }
        }
    }
    if out.is_empty() {
        out.push(PassedFactor::upstream(
            UPSTREAM_AMR,
            AuthenticatorClass::Knowledge,
            false,
            false,
            at,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use stepgate_authn::{assess_factors, AssuranceConfig};
    use stepgate_policy::HumanDuration;

    fn map() -> ClaimMapping {
        let mut m = ClaimMapping {
            groups_prefix: "corp:".into(),
            ..ClaimMapping::default()
        };
        m.attributes.insert("department".into(), "dept".into());
        m
    }

    fn who(amr: &[&str], acr: Option<&str>, auth_time: Option<DateTime<Utc>>) -> UpstreamIdentity {
        UpstreamIdentity {
            sub: "s".into(),
            username: "jane".into(),
            name: None,
            email: None,
            email_verified: false,
            groups: vec![],
            attributes: BTreeMap::new(),
            amr: amr.iter().map(|s| s.to_string()).collect(),
            acr: acr.map(str::to_string),
            auth_time,
        }
    }

    fn entra() -> TrustConfig {
        let mut t = TrustConfig {
            window: HumanDuration::from_secs(600),
            ..TrustConfig::default()
        };
        t.amr.insert("pwd".into(), TrustedFactor::Knowledge);
        t.amr.insert("mfa".into(), TrustedFactor::Possession);
        t.amr.insert("hwk".into(), TrustedFactor::HardwareBound);
        t.acr.insert(
            "urn:mfa".into(),
            vec![TrustedFactor::Knowledge, TrustedFactor::Possession],
        );
        t
    }

    fn aal(f: &[PassedFactor]) -> u8 {
        assess_factors(f, &AssuranceConfig::default()).aal
    }

    #[test]
    fn claims_map_to_the_user_with_prefixed_groups_and_attributes() {
        let c = json!({"sub": "abc", "preferred_username": "Jane", "name": "Jane Doe",
            "email": "jane@example.com", "email_verified": true,
            "groups": ["admins", "staff", "admins", "bad\u{7}group"], "dept": "finance",
            "amr": ["pwd", "mfa"], "acr": "urn:mfa", "auth_time": 1_700_000_000});
        let id = identity(c.as_object().unwrap(), &map()).unwrap();
        assert_eq!(id.username, "Jane");
        assert_eq!(id.groups, vec!["corp:admins", "corp:staff"]);
        assert_eq!(
            id.attributes["department"],
            AttributeValue::One("finance".into())
        );
        assert!(id.email_verified);
        assert_eq!(id.amr, vec!["pwd", "mfa"]);
        let lower = ClaimMapping {
            username_lowercase: true,
            ..map()
        };
        assert_eq!(
            identity(c.as_object().unwrap(), &lower).unwrap().username,
            "jane"
        );
        // A string groups claim is split; a missing username claim is refused by name.
        let c = json!({"sub": "abc", "preferred_username": "j", "groups": "a, b", "email_verified": "true"});
        let id = identity(c.as_object().unwrap(), &map()).unwrap();
        assert_eq!(id.groups, vec!["corp:a", "corp:b"]);
        assert!(!id.email_verified, "only a JSON true verifies an address");
        let c = json!({"sub": "abc"});
        let e = identity(c.as_object().unwrap(), &map()).unwrap_err();
        assert!(e.contains("preferred_username"), "{e}");
    }

    #[test]
    fn trusted_amr_within_the_window_reaches_aal2_and_nothing_else_does() {
        let now = Utc::now();
        let at = now - chrono::Duration::minutes(2);
        let recent = Some(at);
        let old = Some(now - chrono::Duration::minutes(11));
        let f = factors(&who(&["pwd", "mfa"], None, recent), &entra(), now);
        assert_eq!(aal(&f), 2);
        assert_eq!(f[0].at, at, "passed when the upstream says");
        // Outside the window, without auth_time, or with nothing trusted: the sign-in alone.
        for w in [
            who(&["pwd", "mfa"], None, old),
            who(&["pwd", "mfa"], None, None),
            who(&["pwd", "mfa"], None, recent),
        ] {
            let trust = if w.auth_time == recent {
                TrustConfig::default()
            } else {
                entra()
            };
            let f = factors(&w, &trust, now);
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].amr, UPSTREAM_AMR);
            assert_eq!(aal(&f), 1);
        }
        // Untrusted values never count, whatever they claim.
        let f = factors(
            &who(&["pwd", "otp", "sms"], Some("urn:other"), recent),
            &entra(),
            now,
        );
        assert_eq!(aal(&f), 1);
        // A trusted acr counts as its classes; hardware-bound + knowledge is AAL3.
        assert_eq!(
            aal(&factors(&who(&[], Some("urn:mfa"), recent), &entra(), now)),
            2
        );
        let f = factors(&who(&["pwd", "hwk"], None, recent), &entra(), now);
        assert_eq!(aal(&f), 3);
        // An auth_time in the future counts as now, not later.
        let f = factors(
            &who(&["pwd"], None, Some(now + chrono::Duration::hours(1))),
            &entra(),
            now,
        );
        assert_eq!(f[0].at, now);
    }

    #[test]
    fn an_upstream_factor_answers_to_its_kind_only() {
        let now = Utc::now();
        let f = factors(&who(&["pwd", "mfa"], None, Some(now)), &entra(), now);
        let req = stepgate_authn::StepUpRequirement {
            factors: vec!["pwd".into()],
            ..Default::default()
        };
        assert!(!stepgate_authn::assurance::meets(
            &f,
            &req,
            &AssuranceConfig::default(),
            now
        ));
        let req = stepgate_authn::StepUpRequirement {
            factors: vec!["upstream".into()],
            ..Default::default()
        };
        assert!(stepgate_authn::assurance::meets(
            &f,
            &req,
            &AssuranceConfig::default(),
            now
        ));
    }
}
