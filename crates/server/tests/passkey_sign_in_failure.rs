//! A passkey refused as the first factor of a sign-in, through the live portal's JSON
//! ceremony with webauthn-rs's software authenticator: audited as `signin.failure` with
//! the factor, the user the credential names and the client address, and counted under the
//! same bound per account and address as wrong passwords and codes.

mod support;

use stepgate_server::portal::FAILURE_AUDITS_PER_WINDOW;
use support::{password, upstream, user, Browser, Passkey, Person, Server, JANE};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: "http://UPSTREAM"
sessions: { cookie: { secure: false } }
regulation: { max_retries: 0, ip_max_retries: 0, max_consecutive_failures: 100 }
policies:
  - name: everyone
    priority: 20
    outcome: allow
"#;

async fn start() -> Server {
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .demo_users()
        .start()
        .await
}

/// The `signin.failure` events written so far, oldest first.
async fn failures(h: &Server) -> Vec<stepgate_store::AuditEvent> {
    support::audit(&h.st, Some("signin.failure")).await
}

#[tokio::test]
async fn a_refused_passkey_at_sign_in_is_audited_with_its_user_and_address_under_the_bound() {
    let h = start().await;
    let jane = user(&h.st, "jane").await;
    let mut passkey = Passkey::register(&h.st, &jane).await;

    // A forged assertion for her credential: refused, and audited as hers.
    let b = Browser::new();
    let (status, body) = passkey.sign_in_answer(&b, &h.base, true).await;
    assert_eq!(status, 401, "{body}");
    assert!(b.session_id(&h.at("/")).is_none(), "no session");
    let rows = failures(&h).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let e = &rows[0];
    assert_eq!(e.actor.as_deref(), Some("jane"));
    assert_eq!(e.subject.as_deref(), Some(jane.id.as_str()));
    assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(e.detail["factor"], "webauthn", "{e:?}");
    assert_eq!(e.detail["reason"], "invalid_credentials", "{e:?}");
    assert_eq!(e.detail["known_user"], true, "{e:?}");

    // Wrong passwords fill the same bound, up to one short of it.
    let wrong = Person {
        password: "not her password",
        ..JANE
    };
    let bound = FAILURE_AUDITS_PER_WINDOW as usize;
    for _ in 0..bound - 2 {
        let r = password(&Browser::new(), &h.at("/"), &wrong).await;
        assert_eq!(r.status(), 401);
    }
    assert_eq!(failures(&h).await.len(), bound - 1);

    // The next refused passkey is the last audited in the window; the one after is not.
    let (status, _) = passkey.sign_in_answer(&b, &h.base, true).await;
    assert_eq!(status, 401);
    let rows = failures(&h).await;
    assert_eq!(rows.len(), bound);
    let last = rows.last().unwrap();
    assert_eq!(last.detail["factor"], "webauthn", "{last:?}");
    assert_eq!(last.detail["last_audited_in_window"], true, "{last:?}");
    let (status, _) = passkey.sign_in_answer(&b, &h.base, true).await;
    assert_eq!(status, 401);
    assert_eq!(failures(&h).await.len(), bound, "past the bound");

    // Her real passkey still signs her in: the audit bound is no lockout.
    let next = passkey.sign_in(&b, &h.base).await;
    assert!(!next.contains("/login"), "{next}");
}
