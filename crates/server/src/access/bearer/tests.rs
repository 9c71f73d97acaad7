use super::*;
use stepgate_authn::AssuranceConfig;
use stepgate_config::BearerIssuer;
use stepgate_policy::{MaxAge, StepUpRequirement};

fn issuer() -> BearerIssuer {
    BearerIssuer {
        issuer: "https://idp".into(),
        jwks_url: None,
        jwks_file: Some("jwks.json".into()),
        audiences: vec!["api".into()],
        algorithms: vec!["ES256".into()],
        acr_values: [("urn:idp:mfa".to_string(), 2u8)].into_iter().collect(),
        username_claim: "preferred_username".into(),
        groups_claim: "groups".into(),
    }
}

#[test]
fn acr_maps_to_aal() {
    let i = issuer();
    assert_eq!(aal_of("aal2", &i), Some(2));
    assert_eq!(
        aal_of("http://idmanagement.gov/ns/assurance/aal/3", &i),
        Some(3)
    );
    assert_eq!(aal_of("urn:idp:mfa", &i), Some(2));
    assert_eq!(aal_of("aal9", &i), None);
    assert_eq!(aal_of("silver", &i), None);
}

#[test]
fn requirements_against_token_claims() {
    let now = Utc::now();
    let id = BearerIdentity {
        issuer: "https://idp".into(),
        sub: "s".into(),
        username: "jane".into(),
        email: None,
        name: None,
        groups: vec![],
        acr: Some("aal2".into()),
        aal: 2,
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: Some(now - chrono::Duration::minutes(10)),
        expires: None,
        audiences: vec!["api".into()],
    };
    let cfg = AssuranceConfig::default();
    // Whether the token meets the requirement `f` makes of the default one.
    let meets = |f: &dyn Fn(&mut StepUpRequirement)| {
        let mut r = StepUpRequirement::default();
        f(&mut r);
        token_meets(&id, &r, &cfg, now)
    };
    let within = |secs| {
        Some(MaxAge::Within(stepgate_policy::HumanDuration::from_secs(
            secs,
        )))
    };
    assert!(meets(&|r| r.min_aal = Some(2)));
    assert!(!meets(&|r| r.min_aal = Some(3)));
    assert!(meets(&|r| r.max_age = within(900)));
    assert!(!meets(&|r| r.max_age = within(300)));
    assert!(!meets(&|r| r.max_age = Some(MaxAge::EveryTime)));
    assert!(meets(&|r| r.factors = vec!["totp".into()]));
    assert!(!meets(&|r| r.factors = vec!["webauthn".into()]));
    assert!(!meets(&|r| r.phishing_resistant = true));
    let s = stand_in_session(&id, &cfg, now);
    assert_eq!(s.data.assurance(&cfg).aal, 2);
}

#[test]
fn bearer_header_parsing() {
    let mut h = axum::http::HeaderMap::new();
    h.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
    assert_eq!(bearer_token(&h), Some("abc.def.ghi"));
    h.insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(bearer_token(&h), None);
}
