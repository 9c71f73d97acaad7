//! Enrolment links (invitations and password resets) against a real SQLite store: the
//! secret is stored only hashed, works once (also when two requests race), not after it
//! expires, not for another purpose, and not once a newer link replaced it; each step is
//! audited.

use std::sync::Arc;
use std::time::Duration;

use stepgate_authn::config::Argon2Config;
use stepgate_authn::service::ENROLMENT_LINK_KIND;
use stepgate_authn::{AuthError, Authenticator, AuthnSettings, FactorKind, LinkPurpose};
use stepgate_store::{AuditQuery, DurableStore, SecretKey, SqliteConfig, SqliteStore, UserRecord};
use tempfile::TempDir;

const DAY: Duration = Duration::from_secs(86_400);
const NEW_PASSWORD: &str = "amber violin orchard";

struct Env {
    _dir: TempDir,
    store: SqliteStore,
    auth: Authenticator,
    user: UserRecord,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let store = SqliteStore::open(&SqliteConfig::default(), dir.path(), &key)
        .await
        .unwrap();
    let mut s = AuthnSettings::default();
    s.factors.password.argon2 = Argon2Config::insecure_for_tests();
    let auth = Authenticator::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        key,
        s,
        dir.path(),
    )
    .unwrap();
    let user = UserRecord::new("alice");
    store.create_user(&user).await.unwrap();
    Env {
        _dir: dir,
        store,
        auth,
        user,
    }
}

async fn audit_kinds(store: &SqliteStore) -> Vec<(String, Option<String>)> {
    store
        .list_audit(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.actor))
        .collect()
}

#[tokio::test]
async fn an_invitation_sets_the_password_once() {
    let e = env().await;
    let link = e
        .auth
        .issue_link(&e.user, LinkPurpose::Invitation, 3 * DAY, Some("cli"))
        .await
        .unwrap();
    // Only the hash is stored.
    let records = e.store.list_factors(&e.user.id).await.unwrap();
    let rec = records
        .iter()
        .find(|f| f.kind == ENROLMENT_LINK_KIND)
        .unwrap();
    assert_ne!(rec.lookup_key.as_deref(), Some(link.token.as_str()));
    assert!(!serde_json::to_string(rec)
        .unwrap()
        .contains(link.token.as_str()));
    // Not a factor the user has.
    assert!(e.auth.enrolled(&e.user).await.unwrap().is_empty());

    // Opening it does not use it up.
    let open = e
        .auth
        .open_link(&link.token, LinkPurpose::Invitation)
        .await
        .unwrap();
    assert_eq!(open.user.id, e.user.id);
    e.auth
        .open_link(&link.token, LinkPurpose::Invitation)
        .await
        .unwrap();

    // A rejected password leaves it usable.
    let weak = e
        .auth
        .redeem_link(&link.token, LinkPurpose::Invitation, "short", None)
        .await;
    assert!(matches!(weak, Err(AuthError::Rejected(_))), "{weak:?}");

    let (u, passed) = e
        .auth
        .redeem_link(&link.token, LinkPurpose::Invitation, NEW_PASSWORD, None)
        .await
        .unwrap();
    assert_eq!(u.id, e.user.id);
    assert_eq!(passed.kind, FactorKind::Password);
    e.auth
        .verify_password("alice", NEW_PASSWORD, None)
        .await
        .unwrap();

    // Used: refused, and gone from the store.
    let again = e
        .auth
        .redeem_link(
            &link.token,
            LinkPurpose::Invitation,
            "another long password",
            None,
        )
        .await;
    assert!(matches!(again, Err(AuthError::Expired)), "{again:?}");
    assert!(matches!(
        e.auth.open_link(&link.token, LinkPurpose::Invitation).await,
        Err(AuthError::Expired)
    ));
    e.auth
        .verify_password("alice", NEW_PASSWORD, None)
        .await
        .unwrap();
    let kinds = audit_kinds(&e.store).await;
    assert!(
        kinds.contains(&("link.issued".into(), Some("admin:cli".into()))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("link.redeemed".into(), Some(e.user.id.clone()))),
        "{kinds:?}"
    );
    assert!(
        kinds.iter().any(|(k, _)| k == "factor.enrolled"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn two_racing_redemptions_one_wins() {
    let e = env().await;
    let link = e
        .auth
        .issue_link(&e.user, LinkPurpose::Invitation, DAY, Some("cli"))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        e.auth
            .redeem_link(&link.token, LinkPurpose::Invitation, NEW_PASSWORD, None),
        e.auth.redeem_link(
            &link.token,
            LinkPurpose::Invitation,
            "a different long password",
            None
        ),
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");
}

#[tokio::test]
async fn expired_wrong_purpose_replaced_and_guessed_links_are_refused() {
    let e = env().await;
    let invite = e
        .auth
        .issue_link(&e.user, LinkPurpose::Invitation, DAY, Some("cli"))
        .await
        .unwrap();
    // Not a reset link.
    assert!(matches!(
        e.auth
            .open_link(&invite.token, LinkPurpose::PasswordReset)
            .await,
        Err(AuthError::Expired)
    ));
    // A guess.
    assert!(matches!(
        e.auth
            .open_link("A".repeat(43).as_str(), LinkPurpose::Invitation)
            .await,
        Err(AuthError::Expired)
    ));
    assert!(matches!(
        e.auth.open_link("", LinkPurpose::Invitation).await,
        Err(AuthError::Expired)
    ));

    // A newer invitation voids the older one.
    let newer = e
        .auth
        .issue_link(&e.user, LinkPurpose::Invitation, DAY, Some("cli"))
        .await
        .unwrap();
    assert!(matches!(
        e.auth
            .open_link(&invite.token, LinkPurpose::Invitation)
            .await,
        Err(AuthError::Expired)
    ));

    // Past its expiry (moved into the past in the store rather than waited for).
    let mut rec = e
        .store
        .list_factors(&e.user.id)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.kind == ENROLMENT_LINK_KIND)
        .unwrap();
    rec.data["expires_at"] = serde_json::json!(chrono::Utc::now() - chrono::Duration::seconds(1));
    e.store.update_factor(&rec).await.unwrap();
    assert!(matches!(
        e.auth
            .redeem_link(&newer.token, LinkPurpose::Invitation, NEW_PASSWORD, None)
            .await,
        Err(AuthError::Expired)
    ));
    assert!(
        e.store.list_factors(&e.user.id).await.unwrap().is_empty(),
        "the expired link is deleted and no password was set"
    );
}

#[tokio::test]
async fn links_are_refused_for_disabled_users_and_odd_lifetimes() {
    let e = env().await;
    for ttl in [Duration::ZERO, 31 * DAY] {
        let r = e
            .auth
            .issue_link(&e.user, LinkPurpose::PasswordReset, ttl, Some("cli"))
            .await;
        assert!(matches!(r, Err(AuthError::Rejected(_))), "{ttl:?}");
    }
    let link = e
        .auth
        .issue_link(&e.user, LinkPurpose::PasswordReset, DAY, None)
        .await
        .unwrap();
    let mut u = e.user.clone();
    u.disabled = true;
    e.store.update_user(&u).await.unwrap();
    assert!(matches!(
        e.auth
            .open_link(&link.token, LinkPurpose::PasswordReset)
            .await,
        Err(AuthError::Disabled)
    ));
    assert!(matches!(
        e.auth
            .issue_link(&u, LinkPurpose::PasswordReset, DAY, None)
            .await,
        Err(AuthError::Disabled)
    ));
}
