//! The authentication service against a real SQLite store in a temporary directory.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stepgate_authn::config::{
    Argon2Config, EmailTransportConfig, FileTransportConfig, WebauthnConfig,
};
use stepgate_authn::recovery::normalise_code;
use stepgate_authn::totp::{self, TotpData};
use stepgate_authn::webauthn::StoredCredential;
use stepgate_authn::{AuthError, Authenticator, AuthnSettings, FactorKind, RegistrationKind};
use stepgate_policy::HumanDuration;
use stepgate_store::{
    AuditQuery, DurableStore, SecretKey, SqliteConfig, SqliteStore, UserRecord, UserSource,
};
use tempfile::TempDir;
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::Base64UrlSafeData;

const ORIGIN: &str = "https://auth.example.com";
const PASSWORD: &str = "correct horse battery";

fn settings() -> AuthnSettings {
    let mut s = AuthnSettings::default();
    s.factors.password.argon2 = Argon2Config::insecure_for_tests();
    s.factors.email_otp.enabled = true;
    s.factors.email_otp.transport = EmailTransportConfig::File(FileTransportConfig {
        dir: "outbox/email".into(),
    });
    s.factors.security_questions.enabled = true;
    s.factors.webauthn = WebauthnConfig {
        rp_id: "example.com".into(),
        rp_origin: ORIGIN.into(),
        ..WebauthnConfig::default()
    };
    // Most tests are about one mechanism; the windowed bans are switched on where tested.
    s.regulation.max_retries = 0;
    s.regulation.ip_max_retries = 0;
    s
}

struct Env {
    dir: TempDir,
    key: SecretKey,
    store: SqliteStore,
    auth: Authenticator,
    user: UserRecord,
}

impl Env {
    async fn new(settings: AuthnSettings) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let store = SqliteStore::open(&SqliteConfig::default(), dir.path(), &key)
            .await
            .unwrap();
        let auth = authenticator(&store, &key, settings, dir.path());
        let user = UserRecord::new("jane");
        store.create_user(&user).await.unwrap();
        auth.set_password(&user, PASSWORD).await.unwrap();
        Env {
            dir,
            key,
            store,
            auth,
            user,
        }
    }

    /// A second node on the same store.
    fn second_node(&self, settings: AuthnSettings) -> Authenticator {
        authenticator(&self.store, &self.key, settings, self.dir.path())
    }

    async fn audit_kinds(&self) -> Vec<(String, serde_json::Value)> {
        self.store
            .list_audit(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.detail))
            .collect()
    }

    /// The newest code written by the file e-mail transport.
    fn last_email_code(&self) -> String {
        let dir = self.dir.path().join("outbox/email");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let text = std::fs::read_to_string(files.last().unwrap()).unwrap();
        let at = text.find("code is ").expect("code in the message") + "code is ".len();
        text[at..at + 6].to_string()
    }
}

fn authenticator(
    store: &SqliteStore,
    key: &SecretKey,
    settings: AuthnSettings,
    base: &Path,
) -> Authenticator {
    Authenticator::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        key.clone(),
        settings,
        base,
    )
    .unwrap()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn now() -> u64 {
    chrono::Utc::now().timestamp() as u64
}

#[tokio::test]
async fn password_right_wrong_and_unknown_user() {
    let env = Env::new(settings()).await;
    let (u, passed) = env
        .auth
        .verify_password("jane", PASSWORD, ip("192.0.2.1"))
        .await
        .unwrap();
    assert_eq!(u.id, env.user.id);
    assert_eq!(passed.kind, FactorKind::Password);
    assert_eq!(passed.amr, "pwd");

    let wrong = env
        .auth
        .verify_password("jane", "wrong password", ip("192.0.2.1"))
        .await
        .unwrap_err();
    let unknown = env
        .auth
        .verify_password("nobody", PASSWORD, ip("192.0.2.1"))
        .await
        .unwrap_err();
    assert!(matches!(wrong, AuthError::InvalidCredentials));
    assert!(matches!(unknown, AuthError::InvalidCredentials));
    assert_eq!(wrong.public_message(), unknown.public_message());

    // Weak or context-specific passwords are refused with a message the user can act on.
    let err = env.auth.set_password(&env.user, "short").await.unwrap_err();
    assert!(matches!(err, AuthError::Rejected(m) if m.contains("at least 8")));
    let err = env
        .auth
        .set_password(&env.user, "jane-is-great")
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Rejected(_)));

    // Config-declared users keep their password in the file.
    let mut cfg_user = UserRecord::new("ops");
    cfg_user.source = UserSource::Config;
    env.store.create_user(&cfg_user).await.unwrap();
    let err = env
        .auth
        .set_password(&cfg_user, "a fine long password")
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Rejected(m) if m.contains("configuration")));

    // Disabled: only said after the right password.
    let mut disabled = UserRecord::new("gone");
    env.store.create_user(&disabled).await.unwrap();
    env.auth.set_password(&disabled, PASSWORD).await.unwrap();
    disabled.disabled = true;
    env.store.update_user(&disabled).await.unwrap();
    assert!(matches!(
        env.auth.verify_password("gone", "nope nope", None).await,
        Err(AuthError::InvalidCredentials)
    ));
    assert!(matches!(
        env.auth.verify_password("gone", PASSWORD, None).await,
        Err(AuthError::Disabled)
    ));
}

#[tokio::test]
async fn hundred_and_first_attempt_is_refused_even_with_the_right_password() {
    let env = Env::new(settings()).await;
    for i in 0..100 {
        let e = env
            .auth
            .verify_password("jane", "not the password", None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, AuthError::InvalidCredentials),
            "attempt {i}: {e}"
        );
    }
    let e = env
        .auth
        .verify_password("jane", PASSWORD, None)
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::AccountLocked), "{e}");
    // Other factors are locked too.
    assert!(matches!(
        env.auth.verify_totp(&env.user, "123456", None).await,
        Err(AuthError::NotEnrolled(_) | AuthError::AccountLocked)
    ));
    let audit = env.audit_kinds().await;
    let lock: Vec<_> = audit.iter().filter(|(k, _)| k == "authn.lockout").collect();
    assert_eq!(lock.len(), 1, "{audit:?}");
    assert_eq!(lock[0].1["reason"], "consecutive_failure_cap");

    // An administrator unlocks it.
    env.auth.unlock(&env.user, "test").await.unwrap();
    env.auth
        .verify_password("jane", PASSWORD, None)
        .await
        .unwrap();
    assert!(env
        .audit_kinds()
        .await
        .iter()
        .any(|(k, _)| k == "authn.unlock"));
}

#[tokio::test]
async fn a_success_resets_the_consecutive_count() {
    let env = Env::new(settings()).await;
    for round in 0..3 {
        for _ in 0..60 {
            let _ = env.auth.verify_password("jane", "nope nope", None).await;
        }
        env.auth
            .verify_password("jane", PASSWORD, None)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
}

#[tokio::test]
async fn user_and_ip_bans() {
    let mut s = settings();
    s.regulation.max_retries = 3;
    s.regulation.ip_max_retries = 5;
    let env = Env::new(s).await;

    // Per user: three failures ban jane from anywhere, even with the right password.
    for _ in 0..3 {
        let _ = env
            .auth
            .verify_password("jane", "nope nope", ip("198.51.100.1"))
            .await;
    }
    assert!(matches!(
        env.auth
            .verify_password("jane", PASSWORD, ip("198.51.100.2"))
            .await,
        Err(AuthError::Locked { .. })
    ));

    // Per IP: failures against many names from one address ban the address.
    let mut bob = UserRecord::new("bob");
    env.store.create_user(&bob).await.unwrap();
    env.auth.set_password(&bob, PASSWORD).await.unwrap();
    bob = env.auth.find_user("bob").await.unwrap().unwrap();
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        let e = env
            .auth
            .verify_password(name, "nope nope", ip("203.0.113.9"))
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::InvalidCredentials));
    }
    assert!(matches!(
        env.auth
            .verify_password("bob", PASSWORD, ip("203.0.113.9"))
            .await,
        Err(AuthError::Locked { .. })
    ));
    env.auth
        .verify_password(&bob.username, PASSWORD, ip("203.0.113.10"))
        .await
        .unwrap();

    let audit = env.audit_kinds().await;
    assert!(audit
        .iter()
        .any(|(k, d)| k == "authn.lockout" && d["reason"] == "user_max_retries"));
    assert!(audit.iter().any(|(k, _)| k == "authn.ip_ban"));
    // Audit details never carry the password typed.
    assert!(!format!("{audit:?}").contains("nope nope"));
}

fn seed_of(base32: &str) -> Vec<u8> {
    totp_rs::Secret::Encoded(base32.to_string())
        .to_bytes()
        .unwrap()
}

fn data() -> TotpData {
    TotpData {
        algorithm: Default::default(),
        digits: 6,
        period: 30,
        last_step: None,
    }
}

#[tokio::test]
async fn totp_enrol_verify_once_and_no_replay_across_nodes() {
    let env = Env::new(settings()).await;
    let pending = env.auth.enrol_totp_start(&env.user).await.unwrap();
    assert!(pending.uri.starts_with("otpauth://totp/"));
    assert!(pending.qr_svg.contains("<svg"));
    let seed = seed_of(&pending.seed_base32);

    // Wrong code and a token for another user are refused.
    let other = UserRecord::new("mallory");
    env.store.create_user(&other).await.unwrap();
    let code = totp::generate(&data(), &seed, now());
    assert!(matches!(
        env.auth
            .enrol_totp_confirm(&other, &pending.token, &code)
            .await,
        Err(AuthError::Expired)
    ));
    let factor = env
        .auth
        .enrol_totp_confirm(&env.user, &pending.token, &code)
        .await
        .unwrap();
    assert_eq!(factor.kind, "totp");
    // The confirmation code cannot be used to sign in.
    assert!(matches!(
        env.auth.verify_totp(&env.user, &code, None).await,
        Err(AuthError::Replayed)
    ));
    // The same token does not enrol twice (its one-time guard, not the code, refuses it).
    let twice = env
        .auth
        .enrol_totp_confirm(&env.user, &pending.token, &code)
        .await
        .unwrap_err();
    assert!(matches!(twice, AuthError::Replayed), "{twice:?}");

    // The next step's code (within the ±1 window) is accepted once.
    let next = totp::generate(&data(), &seed, now() + 30);
    let passed = env.auth.verify_totp(&env.user, &next, None).await.unwrap();
    assert_eq!(passed.kind, FactorKind::Totp);
    assert_eq!(passed.factor_id.as_deref(), Some(factor.id.as_str()));
    assert!(matches!(
        env.auth.verify_totp(&env.user, &next, None).await,
        Err(AuthError::Replayed)
    ));
    // Nor on another node sharing the store.
    let node2 = env.second_node(settings());
    assert!(matches!(
        node2.verify_totp(&env.user, &next, None).await,
        Err(AuthError::Replayed)
    ));
    // Even if a node had not seen the durable last step yet (simulated by rolling it back),
    // the hot store's claim on (factor, step) refuses the code.
    let mut f = env.store.get_factor(&factor.id).await.unwrap().unwrap();
    f.data["last_step"] = serde_json::Value::Null;
    env.store.update_factor(&f).await.unwrap();
    assert!(matches!(
        node2.verify_totp(&env.user, &next, None).await,
        Err(AuthError::Replayed)
    ));
    assert!(matches!(
        env.auth.verify_totp(&env.user, "000000x", None).await,
        Err(AuthError::Rejected(_))
    ));

    // The seed is sealed: not in the database in any encoding.
    env.store.close().await;
    let mut db = Vec::new();
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            db.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(db.len() > 4096, "read the database files");
    let hay = String::from_utf8_lossy(&db).to_string();
    assert!(!hay.contains(&pending.seed_base32));
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!hay.contains(&hex));
    assert!(!db.windows(seed.len()).any(|w| w == seed.as_slice()));
}

#[tokio::test]
async fn email_otp_single_use_bounded_guesses_and_expiry() {
    let env = Env::new(settings()).await;
    assert!(matches!(
        env.auth.send_otp(&env.user, FactorKind::EmailOtp).await,
        Err(AuthError::NotEnrolled(FactorKind::EmailOtp))
    ));
    env.auth
        .enrol_contact_start(&env.user, FactorKind::EmailOtp, "jane@example.com")
        .await
        .unwrap();
    let code = env.last_email_code();
    let f = env
        .auth
        .enrol_contact_confirm(&env.user, FactorKind::EmailOtp, &code)
        .await
        .unwrap();
    assert_eq!(f.data["destination"], "jane@example.com");

    let masked = env
        .auth
        .send_otp(&env.user, FactorKind::EmailOtp)
        .await
        .unwrap();
    assert_eq!(masked, "j***@example.com");
    let code = env.last_email_code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for i in 1..=10 {
        let e = env
            .auth
            .verify_otp(&env.user, FactorKind::EmailOtp, wrong, None)
            .await
            .unwrap_err();
        if i < 10 {
            assert!(matches!(e, AuthError::InvalidCredentials), "guess {i}: {e}");
        } else {
            assert!(matches!(e, AuthError::TooManyGuesses), "guess {i}: {e}");
        }
    }
    // The 11th guess is refused, even the right code: the code is gone.
    let eleventh = env
        .auth
        .verify_otp(&env.user, FactorKind::EmailOtp, &code, None)
        .await
        .unwrap_err();
    assert!(matches!(eleventh, AuthError::Expired), "{eleventh:?}");

    // Single use.
    env.auth
        .send_otp(&env.user, FactorKind::EmailOtp)
        .await
        .unwrap();
    let code = env.last_email_code();
    let passed = env
        .auth
        .verify_otp(&env.user, FactorKind::EmailOtp, &code, None)
        .await
        .unwrap();
    assert_eq!(passed.kind, FactorKind::EmailOtp);
    assert!(matches!(
        env.auth
            .verify_otp(&env.user, FactorKind::EmailOtp, &code, None)
            .await,
        Err(AuthError::Expired)
    ));

    // Sends are rate limited per user: 5 in the window (enrolment + 2 so far + these two).
    for _ in 0..2 {
        env.auth
            .send_otp(&env.user, FactorKind::EmailOtp)
            .await
            .unwrap();
    }
    assert!(matches!(
        env.auth.send_otp(&env.user, FactorKind::EmailOtp).await,
        Err(AuthError::RateLimited(_))
    ));

    // Expiry, on a node with a 1-second lifetime.
    let mut s = settings();
    s.factors.otp.lifetime = HumanDuration::from_secs(1);
    s.regulation.otp_sends_per_user = 100;
    s.regulation.otp_sends_per_destination = 100;
    let short = env.second_node(s);
    short
        .send_otp(&env.user, FactorKind::EmailOtp)
        .await
        .unwrap();
    let code = env.last_email_code();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(matches!(
        short
            .verify_otp(&env.user, FactorKind::EmailOtp, &code, None)
            .await,
        Err(AuthError::Expired)
    ));

    // The code never reaches the audit log.
    assert!(!format!("{:?}", env.audit_kinds().await).contains(&code));
}

#[tokio::test]
async fn recovery_codes_are_single_use_and_regeneration_voids_them() {
    let env = Env::new(settings()).await;
    let codes = env.auth.regenerate_recovery_codes(&env.user).await.unwrap();
    assert_eq!(codes.len(), 10);
    env.auth
        .verify_recovery_code(&env.user, &codes[2].to_lowercase(), None)
        .await
        .unwrap();
    assert!(matches!(
        env.auth
            .verify_recovery_code(&env.user, &codes[2], None)
            .await,
        Err(AuthError::InvalidCredentials)
    ));
    let info = env.auth.enrolled(&env.user).await.unwrap();
    let rc = info
        .iter()
        .find(|i| i.kind == FactorKind::RecoveryCodes)
        .unwrap();
    assert_eq!(rc.remaining_codes, Some(9));

    let fresh = env.auth.regenerate_recovery_codes(&env.user).await.unwrap();
    let old = env
        .auth
        .verify_recovery_code(&env.user, &codes[3], None)
        .await
        .unwrap_err();
    assert!(matches!(old, AuthError::InvalidCredentials), "{old:?}");
    env.auth
        .verify_recovery_code(&env.user, &normalise_code(&fresh[0]), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn security_questions() {
    let env = Env::new(settings()).await;
    let answers = vec![
        ("First pet?".to_string(), "Rex".to_string()),
        ("Birth city?".to_string(), "New York".to_string()),
        ("First school?".to_string(), "Lincoln High".to_string()),
    ];
    assert!(matches!(
        env.auth.enrol_questions(&env.user, &answers[..2]).await,
        Err(AuthError::Rejected(_))
    ));
    env.auth.enrol_questions(&env.user, &answers).await.unwrap();
    let challenge = env.auth.questions_challenge(&env.user).await.unwrap();
    assert_eq!(challenge.len(), 2);
    let asked: Vec<usize> = challenge.iter().map(|(i, _)| *i).collect();
    let right: Vec<String> = asked.iter().map(|i| answers[*i].1.to_uppercase()).collect();
    let passed = env
        .auth
        .verify_questions(&env.user, &asked, &right, None)
        .await
        .unwrap();
    assert_eq!(passed.amr, "kba");
    let mut wrong = right.clone();
    wrong[0] = "nope".into();
    assert!(matches!(
        env.auth
            .verify_questions(&env.user, &asked, &wrong, None)
            .await,
        Err(AuthError::InvalidCredentials)
    ));
    // Answering only one question (the one an attacker knows) is not enough.
    assert!(matches!(
        env.auth
            .verify_questions(&env.user, &asked[..1], &right[..1], None)
            .await,
        Err(AuthError::Rejected(_))
    ));
}

#[tokio::test]
async fn webauthn_register_authenticate_and_passwordless() {
    let env = Env::new(settings()).await;
    let origin = Url::parse(ORIGIN).unwrap();
    let mut key = WebauthnAuthenticator::new(SoftPasskey::new(true));

    let (ccr, state) = env
        .auth
        .webauthn_register_start(&env.user, RegistrationKind::Passkey)
        .await
        .unwrap();
    // The state survives a round trip through JSON text (it is kept in the session).
    let state: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let response = key
        .do_registration(origin.clone(), serde_json::from_value(ccr).unwrap())
        .unwrap();
    let factor = env
        .auth
        .webauthn_register_finish(
            &env.user,
            state,
            serde_json::to_value(&response).unwrap(),
            "Laptop",
        )
        .await
        .unwrap();
    assert_eq!(factor.label, "Laptop");
    assert!(factor.lookup_key.is_some());

    let info = env.auth.enrolled(&env.user).await.unwrap();
    let wa = info
        .iter()
        .find(|i| i.kind == FactorKind::Webauthn)
        .unwrap();
    assert!(wa.user_verifying && wa.phishing_resistant && !wa.hardware_bound);
    assert_eq!(wa.aal_alone, 2);
    let step_up = Authenticator::enrolled_for_step_up(&info);
    assert!(step_up
        .iter()
        .any(|e| e.kind == FactorKind::Webauthn && e.user_verifying));

    // Second factor / known user.
    let (rcr, state) = env.auth.webauthn_auth_start(Some(&env.user)).await.unwrap();
    let assertion = key
        .do_authentication(origin.clone(), serde_json::from_value(rcr).unwrap())
        .unwrap();
    let assertion = serde_json::to_value(&assertion).unwrap();
    let (u, passed) = env
        .auth
        .webauthn_auth_finish(state, assertion.clone(), None)
        .await
        .unwrap();
    assert_eq!(u.id, env.user.id);
    assert!(passed.user_verified && passed.phishing_resistant);
    assert_eq!(passed.factor_id.as_deref(), Some(factor.id.as_str()));
    // The same assertion against a new challenge fails.
    let (_, state2) = env.auth.webauthn_auth_start(Some(&env.user)).await.unwrap();
    let replayed = env
        .auth
        .webauthn_auth_finish(state2, assertion, None)
        .await
        .unwrap_err();
    assert!(
        matches!(replayed, AuthError::InvalidCredentials),
        "{replayed:?}"
    );

    // Passwordless: no user known up front. The soft authenticator keeps no resident keys,
    // so the test fills in what a discoverable authenticator would (see webauthn_soft.rs).
    let (mut rcr, state) = env.auth.webauthn_auth_start(None).await.unwrap();
    assert_eq!(rcr["publicKey"]["allowCredentials"], serde_json::json!([]));
    let stored: StoredCredential = serde_json::from_value(factor.data.clone()).unwrap();
    rcr["publicKey"]["allowCredentials"] = serde_json::json!([
        { "type": "public-key", "id": serde_json::to_value(stored.cred_id()).unwrap() }
    ]);
    let assertion = key
        .do_authentication(origin.clone(), serde_json::from_value(rcr).unwrap())
        .unwrap();
    let mut assertion = serde_json::to_value(&assertion).unwrap();
    let handle = uuid::Uuid::parse_str(&env.user.id).unwrap();
    assertion["response"]["userHandle"] =
        serde_json::to_value(Base64UrlSafeData::from(handle.as_bytes().to_vec())).unwrap();
    let (u, passed) = env
        .auth
        .webauthn_auth_finish(state, assertion, ip("192.0.2.7"))
        .await
        .unwrap();
    assert_eq!(u.username, "jane");
    assert!(passed.user_verified);

    // Removal is audited; the credential is gone.
    env.auth.remove_factor(&env.user, &factor.id).await.unwrap();
    assert!(matches!(
        env.auth.webauthn_auth_start(Some(&env.user)).await,
        Err(AuthError::NotEnrolled(FactorKind::Webauthn))
    ));
    let audit = env.audit_kinds().await;
    assert!(audit
        .iter()
        .any(|(k, d)| k == "factor.enrolled" && d["kind"] == "webauthn"));
    assert!(audit
        .iter()
        .any(|(k, d)| k == "factor.removed" && d["kind"] == "webauthn"));
}

#[tokio::test]
async fn enrolment_and_removal_are_audited_without_secrets() {
    let env = Env::new(settings()).await;
    let pending = env.auth.enrol_totp_start(&env.user).await.unwrap();
    let seed = seed_of(&pending.seed_base32);
    let f = env
        .auth
        .enrol_totp_confirm(
            &env.user,
            &pending.token,
            &totp::generate(&data(), &seed, now()),
        )
        .await
        .unwrap();
    // Another user cannot remove it.
    let other = UserRecord::new("mallory");
    env.store.create_user(&other).await.unwrap();
    let refused = env.auth.remove_factor(&other, &f.id).await.unwrap_err();
    assert!(matches!(refused, AuthError::Rejected(_)), "{refused:?}");
    env.auth.remove_factor(&env.user, &f.id).await.unwrap();

    let events = env.store.list_audit(&AuditQuery::default()).await.unwrap();
    let enrolled = events
        .iter()
        .find(|e| e.kind == "factor.enrolled" && e.detail["kind"] == "totp")
        .expect("enrolment audited");
    assert_eq!(enrolled.actor.as_deref(), Some(env.user.id.as_str()));
    assert_eq!(enrolled.subject.as_deref(), Some(env.user.id.as_str()));
    assert!(events
        .iter()
        .any(|e| e.kind == "factor.removed" && e.detail["factor_id"] == f.id.as_str()));
    let all = format!("{events:?}");
    assert!(!all.contains(&pending.seed_base32));
    assert!(!all.contains(PASSWORD));
    stepgate_store::verify_audit_chain(&env.store)
        .await
        .unwrap();
}
