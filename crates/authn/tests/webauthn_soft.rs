//! WebAuthn registration + authentication round trips with webauthn-rs's own software
//! authenticators (SoftPasskey, SoftToken); the browser path is covered by the e2e suite.

use chrono::Utc;
use stepgate_authn::assurance::{assess_factors, AssuranceConfig, PassedFactor};
use stepgate_authn::config::WebauthnConfig;
use stepgate_authn::webauthn::{
    RegistrationKind, StoredCredential, WebauthnAssertion, WebauthnFactor, WebauthnFailure,
    WebauthnUser,
};
use stepgate_authn::FactorKind;
use url::Url;
use uuid::Uuid;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::{SoftToken, AAGUID};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{AttestationCaListBuilder, Base64UrlSafeData, WebauthnError};
use webauthn_rs_proto::AttestationConveyancePreference;

const ORIGIN: &str = "https://auth.example.com";

fn rp() -> WebauthnFactor {
    WebauthnFactor::new(&WebauthnConfig {
        rp_id: "example.com".into(),
        rp_origin: ORIGIN.into(),
        ..WebauthnConfig::default()
    })
    .unwrap()
}

fn user(id: Uuid) -> WebauthnUser<'static> {
    WebauthnUser {
        id,
        name: "jane",
        display_name: "Jane Doe",
    }
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

#[test]
fn passkey_register_and_authenticate() {
    let rp = rp();
    // SoftPasskey(true) reports user verification, as a passkey unlocked by PIN would.
    let mut authenticator = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let (ccr, state) = rp
        .start_registration(&user(Uuid::new_v4()), &[], RegistrationKind::Passkey)
        .unwrap();
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    let material = rp
        .finish_registration(&response, &state, "Laptop passkey")
        .unwrap();
    assert_eq!(material.kind, FactorKind::Webauthn);
    assert!(material.secret.is_none());
    let mut creds: Vec<StoredCredential> = vec![serde_json::from_value(material.data).unwrap()];
    assert!(!creds[0].hardware_bound);

    // The ceremony state survives serialisation (kept in the session between requests).
    let (rcr, state) = rp.start_passkey_authentication(&creds).unwrap();
    let state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let assertion = authenticator.do_authentication(origin(), rcr).unwrap();
    let result = rp
        .finish_authentication(&assertion, state, &mut creds)
        .unwrap();
    assert_eq!(
        result,
        WebauthnAssertion {
            index: 0,
            user_verified: true,
            hardware_bound: false
        }
    );

    // A passkey with user verification is AAL2 on its own, phishing-resistant.
    let cfg = AssuranceConfig::default();
    let a = assess_factors(
        &[PassedFactor::webauthn(
            &cfg,
            Utc::now(),
            result.user_verified,
            result.hardware_bound,
        )],
        &cfg,
    );
    assert_eq!(a.aal, 2);
    assert!(a.phishing_resistant);
    assert_eq!(a.amr, vec!["swk", "mfa"]);

    // An assertion replayed against a new challenge fails.
    let (_rcr2, state2) = rp.start_passkey_authentication(&creds).unwrap();
    let replayed = rp
        .finish_authentication(&assertion, state2, &mut creds)
        .unwrap_err();
    assert!(
        matches!(replayed, WebauthnFailure::Ceremony(_)),
        "{replayed:?}"
    );
}

/// The UV bit of authenticator data's flags byte (after the 32-byte RP id hash).
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;

/// A passkey registration whose authenticator data has the UV flag cleared is refused by
/// stepgate itself. The browser side is the attacker's to change: it asks the authenticator
/// for no user verification, whatever stepgate's options said, and the authenticator signs
/// what it did (user present, not verified). The soft authenticator's own refusal of a UV
/// request it cannot meet is not what is tested here.
#[test]
fn passkey_registration_without_the_uv_flag_is_refused_by_stepgate() {
    let rp = rp();
    let mut authenticator = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let (ccr, state) = rp
        .start_registration(&user(Uuid::new_v4()), &[], RegistrationKind::Passkey)
        .unwrap();
    let mut ccr = serde_json::to_value(&ccr).unwrap();
    let uv = &mut ccr["publicKey"]["authenticatorSelection"]["userVerification"];
    assert_eq!(*uv, "required", "stepgate asks for user verification");
    *uv = "discouraged".into();
    let ccr = serde_json::from_value(ccr).unwrap();
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    let err = rp
        .finish_registration(&response, &state, "Laptop passkey")
        .unwrap_err();
    assert!(
        matches!(
            err,
            WebauthnFailure::Ceremony(WebauthnError::UserNotVerified)
        ),
        "{err:?}"
    );
}

/// The same at sign-in: a passkey registered with user verification, then an assertion
/// signed with the UV flag cleared (the client asked the authenticator for none), is
/// refused by stepgate, and the same authenticator verifying the user is accepted.
#[test]
fn passkey_assertion_without_the_uv_flag_is_refused_by_stepgate() {
    let rp = rp();
    let mut authenticator = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let (ccr, state) = rp
        .start_registration(&user(Uuid::new_v4()), &[], RegistrationKind::Passkey)
        .unwrap();
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    let material = rp.finish_registration(&response, &state, "Phone").unwrap();
    let mut creds: Vec<StoredCredential> = vec![serde_json::from_value(material.data).unwrap()];

    let (rcr, state) = rp.start_passkey_authentication(&creds).unwrap();
    let mut rcr = serde_json::to_value(&rcr).unwrap();
    let uv = &mut rcr["publicKey"]["userVerification"];
    assert_eq!(*uv, "required", "stepgate asks for user verification");
    *uv = "discouraged".into();
    let rcr = serde_json::from_value(rcr).unwrap();
    let assertion = authenticator.do_authentication(origin(), rcr).unwrap();
    let flags = assertion.response.authenticator_data.as_ref()[32];
    assert_eq!(
        flags & (FLAG_UP | FLAG_UV),
        FLAG_UP,
        "signed as present, not verified"
    );
    let err = rp
        .finish_authentication(&assertion, state, &mut creds)
        .unwrap_err();
    assert!(
        matches!(
            err,
            WebauthnFailure::Ceremony(WebauthnError::UserNotVerified)
        ),
        "{err:?}"
    );

    // The control: the same credential with the user verified signs in.
    let (rcr, state) = rp.start_passkey_authentication(&creds).unwrap();
    let assertion = authenticator.do_authentication(origin(), rcr).unwrap();
    assert_eq!(
        assertion.response.authenticator_data.as_ref()[32] & FLAG_UV,
        FLAG_UV
    );
    assert!(
        rp.finish_authentication(&assertion, state, &mut creds)
            .unwrap()
            .user_verified
    );
}

/// A page on another origin under the RP id (a compromised sibling subdomain) relaying
/// our challenge is refused: only the configured origin is accepted.
#[test]
fn wrong_origin_is_refused() {
    let rp = rp();
    let mut authenticator = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let (ccr, state) = rp
        .start_registration(&user(Uuid::new_v4()), &[], RegistrationKind::Passkey)
        .unwrap();
    let phished = authenticator
        .do_registration(Url::parse("https://evil.example.com").unwrap(), ccr)
        .unwrap();
    assert!(matches!(
        rp.finish_registration(&phished, &state, "x"),
        Err(WebauthnFailure::Ceremony(_))
    ));
}

#[test]
fn attested_hardware_key_is_hardware_bound_and_reaches_aal3() {
    let (token, ca) = SoftToken::new(true).unwrap();
    let mut roots = AttestationCaListBuilder::new();
    roots
        .insert_device_x509(ca, AAGUID, "softtoken".into(), Default::default())
        .unwrap();
    let rp = rp().with_attestation_roots(roots.build());
    let mut authenticator = WebauthnAuthenticator::new(token);
    let uid = Uuid::new_v4();

    // Hardware-bound passkey (attested, UV): AAL3 alone.
    let (ccr, state) = rp
        .start_registration(&user(uid), &[], RegistrationKind::HardwarePasskey)
        .unwrap();
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    let material = rp
        .finish_registration(&response, &state, "Hardware key")
        .unwrap();
    let mut creds: Vec<StoredCredential> = vec![serde_json::from_value(material.data).unwrap()];
    assert!(creds[0].hardware_bound);

    let (rcr, state) = rp.start_passkey_authentication(&creds).unwrap();
    let assertion = authenticator.do_authentication(origin(), rcr).unwrap();
    let result = rp
        .finish_authentication(&assertion, state, &mut creds)
        .unwrap();
    assert!(result.user_verified && result.hardware_bound);
    let cfg = AssuranceConfig::default();
    let passed = PassedFactor::webauthn(
        &cfg,
        Utc::now(),
        result.user_verified,
        result.hardware_bound,
    );
    assert_eq!(passed.amr, "hwk");
    assert_eq!(assess_factors(&[passed], &cfg).aal, 3);

    // Security-key registration of a second credential, excluding the first.
    let (ccr, state) = rp
        .start_registration(&user(uid), &creds, RegistrationKind::SecurityKey)
        .unwrap();
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    let material = rp
        .finish_registration(&response, &state, "Touch key")
        .unwrap();
    creds.push(serde_json::from_value(material.data).unwrap());
    assert!(
        creds[1].hardware_bound,
        "attested against the configured root"
    );
    let (rcr, state) = rp.start_security_key_authentication(&creds).unwrap();
    let assertion = authenticator.do_authentication(origin(), rcr).unwrap();
    let result = rp
        .finish_authentication(&assertion, state, &mut creds)
        .unwrap();
    assert_eq!(result.index, 1);
    assert!(result.hardware_bound);
}

#[test]
fn hardware_registration_without_roots_is_refused() {
    let rp = rp();
    assert!(matches!(
        rp.start_registration(
            &user(Uuid::new_v4()),
            &[],
            RegistrationKind::HardwarePasskey
        ),
        Err(WebauthnFailure::NoAttestationRoots)
    ));
}

/// Passwordless sign-in with a discoverable credential. The soft authenticators do not
/// store resident keys, so the test plays the discoverable authenticator's part: it finds
/// its credential for the RP (fills the allow list the browser leaves empty) and returns
/// the user handle it stored at registration. Signature, challenge and origin are checked
/// by webauthn-rs as for a real passkey.
#[test]
fn passwordless_discoverable_sign_in() {
    let rp = rp();
    let uid = Uuid::new_v4();
    let mut authenticator = WebauthnAuthenticator::new(SoftPasskey::new(true));
    let (ccr, state) = rp
        .start_registration(&user(uid), &[], RegistrationKind::Passkey)
        .unwrap();
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    let material = rp.finish_registration(&response, &state, "Phone").unwrap();
    let mut creds: Vec<StoredCredential> = vec![serde_json::from_value(material.data).unwrap()];

    let (rcr, state) = rp.start_passwordless().unwrap();
    assert!(
        rcr.public_key.allow_credentials.is_empty(),
        "no user known yet"
    );
    let mut rcr_json = serde_json::to_value(&rcr).unwrap();
    rcr_json["publicKey"]["allowCredentials"] = serde_json::json!([{ "type": "public-key", "id": serde_json::to_value(creds[0].cred_id()).unwrap() }]);
    let rcr = serde_json::from_value(rcr_json).unwrap();
    let assertion = authenticator.do_authentication(origin(), rcr).unwrap();
    let mut assertion_json = serde_json::to_value(&assertion).unwrap();
    assertion_json["response"]["userHandle"] =
        serde_json::to_value(Base64UrlSafeData::from(uid.as_bytes().to_vec())).unwrap();
    let assertion = serde_json::from_value(assertion_json).unwrap();

    assert_eq!(rp.identify_passwordless(&assertion).unwrap(), uid);
    let result = rp
        .finish_authentication(&assertion, state, &mut creds)
        .unwrap();
    assert!(result.user_verified);
}

/// Roots trusting `ca` for `aaguid`.
fn trusting(ca: webauthn_rs::prelude::AttestationCaList) -> WebauthnFactor {
    rp().with_attestation_roots(ca)
}

fn roots_for(ca: openssl::x509::X509, aaguid: Uuid) -> webauthn_rs::prelude::AttestationCaList {
    let mut roots = AttestationCaListBuilder::new();
    roots
        .insert_device_x509(ca, aaguid, "softtoken".into(), Default::default())
        .unwrap();
    roots.build()
}

/// Registers with `kind`; whether the options asked for a direct attestation, and the
/// result.
fn register(
    rp: &WebauthnFactor,
    authenticator: &mut WebauthnAuthenticator<SoftToken>,
    kind: RegistrationKind,
) -> (bool, Result<StoredCredential, WebauthnFailure>) {
    let (ccr, state) = rp
        .start_registration(&user(Uuid::new_v4()), &[], kind)
        .unwrap();
    let asked = matches!(
        ccr.public_key.attestation,
        Some(AttestationConveyancePreference::Direct)
    );
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    let stored = rp
        .finish_registration(&response, &state, "key")
        .map(|m| serde_json::from_value(m.data).unwrap());
    (asked, stored)
}

#[test]
fn a_trusted_key_registered_with_the_passkey_button_is_hardware_bound_and_reaches_aal3() {
    let (token, ca) = SoftToken::new(true).unwrap();
    let rp = trusting(roots_for(ca, AAGUID));
    let mut authenticator = WebauthnAuthenticator::new(token);
    let (asked, stored) = register(&rp, &mut authenticator, RegistrationKind::Passkey);
    assert!(
        asked,
        "with roots configured, the passkey button asks for attestation"
    );
    let mut creds = vec![stored.unwrap()];
    assert!(
        creds[0].hardware_bound,
        "attested against the configured root"
    );
    let (rcr, state) = rp.start_passkey_authentication(&creds).unwrap();
    let assertion = authenticator.do_authentication(origin(), rcr).unwrap();
    let result = rp
        .finish_authentication(&assertion, state, &mut creds)
        .unwrap();
    assert!(result.user_verified && result.hardware_bound);
    let cfg = AssuranceConfig::default();
    let passed = PassedFactor::webauthn(&cfg, Utc::now(), true, result.hardware_bound);
    assert_eq!(assess_factors(&[passed], &cfg).aal, 3);
}

#[test]
fn a_key_from_an_untrusted_maker_is_a_plain_passkey_and_refused_as_a_security_key() {
    let (token, _own_ca) = SoftToken::new(true).unwrap();
    let (_, other_ca) = SoftToken::new(true).unwrap();
    let rp = trusting(roots_for(other_ca, AAGUID));
    let mut authenticator = WebauthnAuthenticator::new(token);
    let (_, stored) = register(&rp, &mut authenticator, RegistrationKind::Passkey);
    assert!(
        !stored.unwrap().hardware_bound,
        "a passkey whose attestation chains to no configured root is accepted, not hardware-bound"
    );
    let (asked, stored) = register(&rp, &mut authenticator, RegistrationKind::SecurityKey);
    assert!(asked);
    assert!(
        matches!(stored, Err(WebauthnFailure::NotHardwareBound)),
        "{stored:?}"
    );
}

#[test]
fn a_trusted_root_proves_only_the_models_listed_under_it() {
    let (token, ca) = SoftToken::new(true).unwrap();
    let rp = trusting(roots_for(ca, Uuid::new_v4()));
    let mut authenticator = WebauthnAuthenticator::new(token);
    let (_, stored) = register(&rp, &mut authenticator, RegistrationKind::Passkey);
    assert!(!stored.unwrap().hardware_bound);
    let (_, stored) = register(&rp, &mut authenticator, RegistrationKind::SecurityKey);
    assert!(matches!(stored, Err(WebauthnFailure::NotHardwareBound)));
}

#[test]
fn without_roots_no_attestation_is_asked_for_and_nothing_is_hardware_bound() {
    let (token, _) = SoftToken::new(true).unwrap();
    let rp = rp();
    let mut authenticator = WebauthnAuthenticator::new(token);
    for kind in [RegistrationKind::Passkey, RegistrationKind::SecurityKey] {
        let (asked, stored) = register(&rp, &mut authenticator, kind);
        assert!(!asked);
        assert!(!stored.unwrap().hardware_bound, "{kind:?}");
    }
}
