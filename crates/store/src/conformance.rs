//! One test suite for every backend (feature `conformance`).
//!
//! Each check is an `async fn` over the traits that panics (like `assert!`) on a deviation.
//! A backend's integration test opens a fresh store and calls [`durable_suite`] and/or
//! [`hot_suite`]; restart survival uses [`write_fixture`] before and [`check_fixture`] after
//! reopening. Checks make their own unique names, so they can share a database with other
//! checks running at the same time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use serde_json::json;

use crate::{
    factor_context, new_id, now_ms, sync_users, verify_audit_chain, AdminToken, AttributeValue,
    AuditQuery, DecisionQuery, DecisionRecord, DeviceRecord, DurableStore, FactorRecord, HotStore,
    NewAuditEvent, OtpCheck, PasswordHash, PolicyVersion, SecretError, SecretKey, StoreClock,
    StoreError, UserRecord, UserSource, UserSpec, PASSWORD_FACTOR_KIND,
};

/// How a hot-store run gets past a TTL.
///
/// With a store that reads a [`StoreClock`] (SQLite), the checks move that clock: no
/// sleeping, and no wall-clock luck on a loaded machine (an entry written with a short TTL
/// is live until the clock is moved, however long the write took). A backend that expires
/// entries on its own clock (Redis) can only be waited for: the checks then use TTLs of
/// [`REAL_SHORT`] and sleep [`REAL_PAST`], long enough that a stalled round trip does not
/// outlive the TTL it is checking.
#[derive(Clone, Debug)]
pub enum Expiry {
    /// The store's own clock, moved by the checks. Expired entries stay in the store until
    /// a purge removes them, and the purge check requires that it does.
    Manual(StoreClock),
    /// The backend's clock (Redis's key expiry): the checks sleep.
    Real,
}

/// The TTL of expiry checks under [`Expiry::Real`], and how long they sleep to be past it.
pub const REAL_SHORT: Duration = Duration::from_millis(1000);
/// See [`REAL_SHORT`].
pub const REAL_PAST: Duration = Duration::from_millis(1500);
/// The TTL of expiry checks under [`Expiry::Manual`], and how far they move the clock.
const MANUAL_SHORT: Duration = Duration::from_millis(300);
const MANUAL_PAST: Duration = Duration::from_millis(301);

impl Expiry {
    /// A short TTL.
    fn short(&self) -> Duration {
        match self {
            Expiry::Manual(_) => MANUAL_SHORT,
            Expiry::Real => REAL_SHORT,
        }
    }

    /// Gets past [`Expiry::short`] from now.
    async fn pass_short(&self) {
        match self {
            Expiry::Manual(c) => c.advance(MANUAL_PAST),
            Expiry::Real => tokio::time::sleep(REAL_PAST).await,
        }
    }

    /// Now, by the clock the store judges expiry with.
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Expiry::Manual(c) => c.now(),
            Expiry::Real => now_ms(),
        }
    }
}

/// A TOTP seed used in fixtures; tests look for it in raw database files.
pub const FIXTURE_SEED: &[u8] = b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// A well-formed argon2id PHC string (not a real password's).
pub const FIXTURE_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q6k4cTAzOyCq0QmNEQbCXoJ9bBC9ZJ+IJ+p1fWQBGcE";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &new_id()[..12])
}

fn sample_user(prefix: &str) -> UserRecord {
    let mut u = UserRecord::new(unique(prefix));
    u.email = Some(format!("{}@example.com", u.username));
    u.name = Some("Sample User".into());
    u.groups = vec!["staff".into(), "admins".into()];
    u.attributes = BTreeMap::from([
        (
            "department".to_owned(),
            AttributeValue::One("engineering".into()),
        ),
        (
            "regions".to_owned(),
            AttributeValue::Many(vec!["eu".into(), "us".into()]),
        ),
    ]);
    u
}

/// Runs every durable-store check.
pub async fn durable_suite(store: Arc<dyn DurableStore>) {
    users_crud(&*store).await;
    factors_crud(&*store).await;
    factor_secrets_stay_sealed(&*store).await;
    devices_crud(&*store).await;
    audit_append_order_and_queries(&*store).await;
    audit_concurrent_appends_keep_the_chain(store.clone()).await;
    config_users_sync(&*store).await;
    decisions_log(&*store).await;
    admin_tokens(&*store).await;
    decisions_trimmed_to_a_count(&*store).await;
    audit_stream_cursors(&*store).await;
    policy_versions(&*store).await;
    leases(&*store).await;
}

/// Runs every hot-store check; `expiry` says how they get past a TTL.
pub async fn hot_suite(store: Arc<dyn HotStore>, expiry: Expiry) {
    sessions_lifecycle(&*store).await;
    session_ttl_expiry(&*store, &expiry).await;
    session_replace_if_unchanged(&*store).await;
    counter_windows(&*store, &expiry).await;
    counters_are_atomic(store.clone()).await;
    bans(&*store, &expiry).await;
    otp_single_use(&*store).await;
    otp_attempt_exhaustion(&*store).await;
    otp_expiry(&*store, &expiry).await;
    otp_concurrent_checks_consume_once(store.clone()).await;
    replay_guard(&*store, &expiry).await;
    replay_guard_is_atomic(store.clone()).await;
    recent_lists(&*store, &expiry).await;
    purge_expired(&*store, &expiry).await;
}

/// Users: create, read by id and name, list, update, conflicts, delete (with its factors).
pub async fn users_crud(s: &dyn DurableStore) {
    let u = sample_user("crud");
    s.create_user(&u).await.expect("create user");
    assert_eq!(s.get_user(&u.id).await.unwrap().as_ref(), Some(&u));
    assert_eq!(
        s.get_user_by_username(&u.username).await.unwrap().as_ref(),
        Some(&u)
    );
    assert!(s.get_user("no-such-id").await.unwrap().is_none());
    assert!(s
        .get_user_by_username("no-such-user")
        .await
        .unwrap()
        .is_none());

    let mut dup = UserRecord::new(&u.username);
    dup.id = new_id();
    assert!(
        matches!(s.create_user(&dup).await, Err(StoreError::Conflict { .. })),
        "duplicate username"
    );

    let other = sample_user("crud-other");
    s.create_user(&other).await.unwrap();
    let all = s.list_users().await.unwrap();
    assert!(all.iter().any(|x| x == &u) && all.iter().any(|x| x == &other));
    let names: Vec<&str> = all.iter().map(|x| x.username.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "list_users is ordered by username");

    let mut changed = u.clone();
    changed.email = None;
    changed.name = Some("Renamed".into());
    changed.groups = vec!["contractors".into()];
    changed
        .attributes
        .insert("level".into(), AttributeValue::One("3".into()));
    changed.disabled = true;
    changed.source = UserSource::Config;
    changed.updated_at = now_ms();
    s.update_user(&changed).await.unwrap();
    assert_eq!(s.get_user(&u.id).await.unwrap().as_ref(), Some(&changed));

    let mut clash = changed.clone();
    clash.username = other.username.clone();
    assert!(
        matches!(
            s.update_user(&clash).await,
            Err(StoreError::Conflict { .. })
        ),
        "username taken"
    );
    let ghost = UserRecord::new(unique("ghost"));
    assert!(matches!(
        s.update_user(&ghost).await,
        Err(StoreError::NotFound { .. })
    ));

    let f = FactorRecord::new(&u.id, "totp", "phone");
    s.create_factor(&f).await.unwrap();
    assert!(s.delete_user(&u.id).await.unwrap());
    assert!(!s.delete_user(&u.id).await.unwrap());
    assert!(s.get_user(&u.id).await.unwrap().is_none());
    assert!(
        s.get_factor(&f.id).await.unwrap().is_none(),
        "factors go with their user"
    );
    assert!(s.delete_user(&other.id).await.unwrap());
}

/// Factors: enroll, read, list in order, find by lookup key, update, touch, delete.
pub async fn factors_crud(s: &dyn DurableStore) {
    let u = sample_user("factors");
    s.create_user(&u).await.unwrap();

    let orphan = FactorRecord::new("no-such-user", "totp", "x");
    assert!(
        matches!(
            s.create_factor(&orphan).await,
            Err(StoreError::NotFound { .. })
        ),
        "a factor needs its user"
    );

    let mut a = FactorRecord::new(&u.id, "totp", "phone");
    a.data = json!({"digits": 6, "period": 30, "algorithm": "SHA1"});
    s.create_factor(&a).await.unwrap();
    let mut b = FactorRecord::new(&u.id, "webauthn", "YubiKey");
    b.created_at = a.created_at + ChronoDuration::milliseconds(5);
    let cred = unique("cred");
    b.lookup_key = Some(cred.clone());
    b.data = json!({"credential": {"id": cred, "counter": 0}});
    s.create_factor(&b).await.unwrap();

    assert_eq!(s.get_factor(&a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        s.list_factors(&u.id).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(
        s.find_factor("webauthn", &cred).await.unwrap().as_ref(),
        Some(&b)
    );
    assert!(
        s.find_factor("totp", &cred).await.unwrap().is_none(),
        "lookup keys are per kind"
    );
    assert!(
        matches!(s.create_factor(&a).await, Err(StoreError::Conflict { .. })),
        "duplicate id"
    );
    let mut same_cred = FactorRecord::new(&u.id, "webauthn", "clone");
    same_cred.lookup_key = Some(cred.clone());
    assert!(
        matches!(
            s.create_factor(&same_cred).await,
            Err(StoreError::Conflict { .. })
        ),
        "duplicate lookup key"
    );

    let mut a2 = a.clone();
    a2.label = "new phone".into();
    a2.data = json!({"digits": 8});
    a2.last_used_at = Some(now_ms());
    s.update_factor(&a2).await.unwrap();
    assert_eq!(s.get_factor(&a.id).await.unwrap().as_ref(), Some(&a2));
    let missing = FactorRecord::new(&u.id, "totp", "ghost");
    assert!(matches!(
        s.update_factor(&missing).await,
        Err(StoreError::NotFound { .. })
    ));

    let t = now_ms() + ChronoDuration::seconds(1);
    assert!(s.touch_factor(&b.id, t).await.unwrap());
    assert_eq!(
        s.get_factor(&b.id)
            .await
            .unwrap()
            .and_then(|f| f.last_used_at),
        Some(t)
    );
    assert!(!s.touch_factor("no-such-factor", t).await.unwrap());

    assert!(s.delete_factor(&a.id).await.unwrap());
    assert!(!s.delete_factor(&a.id).await.unwrap());
    let c = FactorRecord::new(&u.id, "recovery_codes", "codes");
    s.create_factor(&c).await.unwrap();
    assert_eq!(s.delete_factors_for_user(&u.id).await.unwrap(), 2);
    assert!(s.list_factors(&u.id).await.unwrap().is_empty());
    s.delete_user(&u.id).await.unwrap();
}

/// A sealed secret comes back byte for byte, opens with its key and context only.
pub async fn factor_secrets_stay_sealed(s: &dyn DurableStore) {
    let key = SecretKey::generate();
    let u = sample_user("sealed");
    s.create_user(&u).await.unwrap();
    let mut f = FactorRecord::new(&u.id, "totp", "phone");
    let ctx = factor_context(&u.id, &f.id);
    let sealed = key.seal(FIXTURE_SEED, &ctx).unwrap();
    f.secret = Some(sealed.clone());
    s.create_factor(&f).await.unwrap();

    let back = s
        .get_factor(&f.id)
        .await
        .unwrap()
        .and_then(|f| f.secret)
        .expect("secret kept");
    assert_eq!(back, sealed);
    assert_eq!(key.open(&back, &ctx).unwrap().as_slice(), FIXTURE_SEED);
    assert!(
        matches!(
            SecretKey::generate().open(&back, &ctx),
            Err(SecretError::OpenFailed { .. })
        ),
        "another key cannot open it"
    );
    assert!(
        matches!(
            key.open(&back, &factor_context("someone-else", &f.id)),
            Err(SecretError::OpenFailed { .. })
        ),
        "nor another factor's context"
    );
    s.delete_user(&u.id).await.unwrap();
}

/// Devices: upsert, read, list by owner, delete.
pub async fn devices_crud(s: &dyn DurableStore) {
    let owner = unique("owner");
    let mut d = DeviceRecord {
        id: unique("dev"),
        owner: Some(owner.clone()),
        data: json!({"hostname": "laptop-1", "os": {"name": "macOS", "version": "15.1"}}),
        updated_at: now_ms(),
    };
    s.put_device(&d).await.unwrap();
    assert_eq!(s.get_device(&d.id).await.unwrap().as_ref(), Some(&d));
    d.data = json!({"hostname": "laptop-1", "managed": true});
    d.updated_at = now_ms() + ChronoDuration::seconds(1);
    s.put_device(&d).await.unwrap();
    assert_eq!(
        s.get_device(&d.id).await.unwrap().as_ref(),
        Some(&d),
        "put replaces"
    );
    let d2 = DeviceRecord {
        id: unique("dev"),
        owner: None,
        data: json!({}),
        updated_at: now_ms(),
    };
    s.put_device(&d2).await.unwrap();
    assert_eq!(s.list_devices(&owner).await.unwrap(), vec![d.clone()]);
    assert!(s.delete_device(&d.id).await.unwrap());
    assert!(!s.delete_device(&d.id).await.unwrap());
    assert!(s.get_device(&d.id).await.unwrap().is_none());
    assert!(s.delete_device(&d2.id).await.unwrap());
}

/// The audit log keeps append order, filters by kind/actor/subject/time, pages, and chains.
pub async fn audit_append_order_and_queries(s: &dyn DurableStore) {
    let actor = unique("actor");
    let t0 = now_ms();
    let mut appended = Vec::new();
    for i in 0..6i64 {
        let e = NewAuditEvent {
            time: t0 + ChronoDuration::seconds(i),
            kind: if i % 2 == 0 {
                "login.success"
            } else {
                "login.failure"
            }
            .into(),
            actor: Some(actor.clone()),
            subject: Some(format!("{actor}-subject-{}", i % 3)),
            ip: Some("203.0.113.9".into()),
            detail: json!({"i": i, "reasons": ["new_device"]}),
        };
        let got = s.append_audit(&e).await.unwrap();
        assert_eq!(
            (got.time, &got.kind, &got.actor, &got.detail),
            (e.time, &e.kind, &e.actor, &e.detail)
        );
        appended.push(got);
    }
    for w in appended.windows(2) {
        assert!(w[1].seq > w[0].seq, "sequence numbers increase");
    }
    assert_ne!(appended[0].id, appended[1].id);

    let by_actor = s
        .list_audit(&AuditQuery {
            actor: Some(actor.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_actor, appended, "append order, content as written");

    let newest = s
        .list_audit(&AuditQuery {
            actor: Some(actor.clone()),
            newest_first: true,
            limit: 2,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(newest, vec![appended[5].clone(), appended[4].clone()]);

    let failures = s
        .list_audit(&AuditQuery {
            actor: Some(actor.clone()),
            kind: Some("login.failure".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        failures,
        vec![
            appended[1].clone(),
            appended[3].clone(),
            appended[5].clone()
        ]
    );

    let window = s
        .list_audit(&AuditQuery {
            actor: Some(actor.clone()),
            since: Some(t0 + ChronoDuration::seconds(2)),
            until: Some(t0 + ChronoDuration::seconds(4)),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        window,
        appended[2..4].to_vec(),
        "since inclusive, until exclusive"
    );

    let subject = s
        .list_audit(&AuditQuery {
            subject: Some(format!("{actor}-subject-1")),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(subject, vec![appended[1].clone(), appended[4].clone()]);

    // `user`: the name as the actor or as the subject; `ip`: the client address.
    let as_user = s
        .list_audit(&AuditQuery {
            user: vec![format!("{actor}-subject-2"), "nobody-at-all".into()],
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(as_user, vec![appended[2].clone(), appended[5].clone()]);
    let as_actor = s
        .list_audit(&AuditQuery {
            user: vec![actor.clone()],
            kind: Some("login.success".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        as_actor,
        vec![
            appended[0].clone(),
            appended[2].clone(),
            appended[4].clone()
        ]
    );
    let other_ip = s
        .list_audit(&AuditQuery {
            actor: Some(actor.clone()),
            ip: Some("198.51.100.1".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(other_ip.is_empty());
    let same_ip = s
        .list_audit(&AuditQuery {
            actor: Some(actor.clone()),
            ip: Some("203.0.113.9".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(same_ip, appended);

    let page = s
        .list_audit(&AuditQuery {
            actor: Some(actor.clone()),
            after_seq: Some(appended[3].seq),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page, appended[4..].to_vec());

    let checked = verify_audit_chain(s)
        .await
        .expect("the audit chain verifies");
    assert!(checked >= 6);
}

/// Concurrent appends get distinct sequence numbers and leave a valid chain.
pub async fn audit_concurrent_appends_keep_the_chain(s: Arc<dyn DurableStore>) {
    let actor = unique("concurrent");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..16 {
        let s = s.clone();
        let actor = actor.clone();
        set.spawn(async move {
            let mut e = NewAuditEvent::now("test.concurrent");
            e.actor = Some(actor);
            e.detail = json!({ "i": i });
            s.append_audit(&e).await.map(|e| e.seq)
        });
    }
    let mut seqs = Vec::new();
    while let Some(r) = set.join_next().await {
        seqs.push(r.expect("task").expect("append"));
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 16, "every append has its own sequence number");
    verify_audit_chain(&*s)
        .await
        .expect("the chain verifies after concurrent appends");
}

/// Users declared in the configuration: created, kept, updated, password sealed, removed ones
/// disabled.
pub async fn config_users_sync(s: &dyn DurableStore) {
    let key = SecretKey::generate();
    let mut alice = UserSpec::new(unique("cfg-alice"));
    alice.groups = vec!["staff".into()];
    alice
        .attributes
        .insert("department".into(), AttributeValue::One("sales".into()));
    alice.password_hash = Some(PasswordHash::parse(FIXTURE_PHC).unwrap());
    let bob = UserSpec::new(unique("cfg-bob"));

    let r = sync_users(s, &key, &[alice.clone(), bob.clone()])
        .await
        .unwrap();
    assert_eq!(
        r.created,
        vec![alice.username.clone(), bob.username.clone()]
    );
    let a = s
        .get_user_by_username(&alice.username)
        .await
        .unwrap()
        .expect("alice created");
    assert_eq!(a.source, UserSource::Config);
    assert_eq!(a.groups, alice.groups);
    let pw: Vec<FactorRecord> = s
        .list_factors(&a.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.kind == PASSWORD_FACTOR_KIND)
        .collect();
    assert_eq!(pw.len(), 1);
    let sealed = pw[0].secret.as_ref().expect("the hash is sealed");
    let opened = key.open(sealed, &factor_context(&a.id, &pw[0].id)).unwrap();
    assert_eq!(opened.as_slice(), FIXTURE_PHC.as_bytes());

    let r = sync_users(s, &key, &[alice.clone(), bob.clone()])
        .await
        .unwrap();
    assert_eq!(r.unchanged.len(), 2, "{r:?}");
    assert!(r.created.is_empty() && r.updated.is_empty());

    let mut alice2 = alice.clone();
    alice2.email = Some("alice@example.com".into());
    alice2.password_hash = None;
    let r = sync_users(s, &key, &[alice2.clone()]).await.unwrap();
    assert_eq!(r.updated, vec![alice.username.clone()]);
    assert_eq!(r.disabled, vec![bob.username.clone()]);
    let b = s
        .get_user_by_username(&bob.username)
        .await
        .unwrap()
        .expect("bob kept");
    assert!(
        b.disabled,
        "a user removed from the configuration is disabled"
    );
    assert!(
        s.list_factors(&a.id)
            .await
            .unwrap()
            .iter()
            .all(|f| f.kind != PASSWORD_FACTOR_KIND),
        "a password removed from the configuration is removed"
    );
    assert_eq!(
        s.get_user(&a.id)
            .await
            .unwrap()
            .and_then(|u| u.email)
            .as_deref(),
        Some("alice@example.com")
    );

    let err = sync_users(s, &key, &[bob.clone(), bob.clone()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declared twice"), "{err}");

    // Clean up so a later run in the same database starts from nothing of ours.
    s.delete_user(&a.id).await.unwrap();
    s.delete_user(&b.id).await.unwrap();
}

/// Sessions: put, get, touch, list and delete by user.
pub async fn sessions_lifecycle(s: &dyn HotStore) {
    let user = unique("user");
    let a = unique("sess");
    let b = unique("sess");
    let data = json!({"aal": 2, "amr": ["pwd", "otp"], "auth_time": 1_700_000_000});
    s.put_session(&a, &user, &data, Duration::from_secs(600))
        .await
        .unwrap();
    s.put_session(&b, &user, &json!({}), Duration::from_secs(600))
        .await
        .unwrap();
    let got = s.get_session(&a).await.unwrap().expect("live session");
    assert_eq!((got.user_id.as_str(), &got.data), (user.as_str(), &data));
    assert!(got.expires_at > now_ms());
    assert!(s.get_session("no-such-session").await.unwrap().is_none());

    // Other checks may share the store: at least these two are live.
    assert!(s.count_sessions().await.unwrap() >= 2);
    let mut ids = s.list_sessions_for_user(&user).await.unwrap();
    ids.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ids, want);

    assert!(s
        .touch_session(&a, Duration::from_secs(3600))
        .await
        .unwrap());
    let touched = s.get_session(&a).await.unwrap().expect("still live");
    assert!(touched.expires_at > got.expires_at);
    assert!(!s
        .touch_session("no-such-session", Duration::from_secs(60))
        .await
        .unwrap());

    let updated = json!({"aal": 2, "device": "d-1"});
    assert!(s
        .update_session(&a, &updated, Duration::from_secs(3600))
        .await
        .unwrap());
    let got_updated = s.get_session(&a).await.unwrap().expect("still live");
    assert_eq!(
        (got_updated.user_id.as_str(), &got_updated.data),
        (user.as_str(), &updated),
        "update replaces the state, keeps the owner"
    );
    let ghost = unique("sess");
    assert!(!s
        .update_session(&ghost, &updated, Duration::from_secs(60))
        .await
        .unwrap());
    assert!(
        s.get_session(&ghost).await.unwrap().is_none(),
        "update never creates a session"
    );

    let new_data = json!({"aal": 3});
    s.put_session(&a, &user, &new_data, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        s.get_session(&a).await.unwrap().map(|x| x.data),
        Some(new_data),
        "put replaces"
    );

    assert!(s.delete_session(&b).await.unwrap());
    assert!(!s.delete_session(&b).await.unwrap());
    // A write that read the session before it was deleted (a request racing a sign-out)
    // must not bring it back.
    assert!(!s
        .update_session(&b, &json!({"aal": 2}), Duration::from_secs(600))
        .await
        .unwrap());
    assert!(
        s.get_session(&b).await.unwrap().is_none(),
        "a deleted session stays deleted"
    );
    assert_eq!(
        s.list_sessions_for_user(&user).await.unwrap(),
        vec![a.clone()]
    );
    let c = unique("sess");
    s.put_session(&c, &user, &json!({}), Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(s.delete_sessions_for_user(&user).await.unwrap(), 2);
    assert!(s.get_session(&a).await.unwrap().is_none());
    assert!(s.list_sessions_for_user(&user).await.unwrap().is_empty());
}

/// A conditional replace writes only over the state the caller read: a change made in
/// between (another node's mark) is never overwritten, and a gone session stays gone.
pub async fn session_replace_if_unchanged(s: &dyn HotStore) {
    use crate::SessionWrite;
    let user = unique("user");
    let id = unique("sess");
    let read = json!({"aal": 1, "last_seen": 1, "note": "caf\u{e9} \"x\""});
    s.put_session(&id, &user, &read, Duration::from_secs(600))
        .await
        .unwrap();
    let before = s.get_session(&id).await.unwrap().expect("live");
    // Another writer changes the state after it was read.
    let marked =
        json!({"aal": 1, "last_seen": 1, "needs_step_up": true, "note": "caf\u{e9} \"x\""});
    assert!(s
        .update_session(&id, &marked, Duration::from_secs(600))
        .await
        .unwrap());
    let stamped = json!({"aal": 1, "last_seen": 2, "note": "caf\u{e9} \"x\""});
    assert_eq!(
        s.replace_session(&id, &before.data, &stamped, Duration::from_secs(600))
            .await
            .unwrap(),
        SessionWrite::Changed,
        "a write over a state that changed since it was read is refused"
    );
    assert_eq!(
        s.get_session(&id).await.unwrap().map(|e| e.data),
        Some(marked.clone()),
        "the other writer's change stands"
    );
    // Read again, the write goes through, and its expiry is pushed.
    let again = s.get_session(&id).await.unwrap().expect("live");
    let mut both = marked.clone();
    both["last_seen"] = json!(2);
    assert_eq!(
        s.replace_session(&id, &again.data, &both, Duration::from_secs(3600))
            .await
            .unwrap(),
        SessionWrite::Written
    );
    let after = s.get_session(&id).await.unwrap().expect("live");
    assert_eq!(after.data, both);
    assert_eq!(after.user_id, user, "the owner is kept");
    assert!(after.expires_at > again.expires_at, "the expiry is pushed");
    assert_eq!(
        s.list_sessions_for_user(&user).await.unwrap(),
        vec![id.clone()]
    );
    // Gone stays gone, and a replace never creates a session.
    assert!(s.delete_session(&id).await.unwrap());
    assert_eq!(
        s.replace_session(&id, &both, &both, Duration::from_secs(60))
            .await
            .unwrap(),
        SessionWrite::Gone
    );
    assert!(s.get_session(&id).await.unwrap().is_none());
    let never = unique("sess");
    assert_eq!(
        s.replace_session(&never, &json!({}), &json!({}), Duration::from_secs(60))
            .await
            .unwrap(),
        SessionWrite::Gone
    );
    assert!(s.get_session(&never).await.unwrap().is_none());
}

/// Writes `text` as the state of the live session `id`, byte for byte, as another build of
/// stepgate (or an operator) might have spelled it: the store's own writes cannot.
pub type Respell<'a> =
    &'a (dyn Fn(String, String) -> futures_util::future::BoxFuture<'static, ()> + Sync);

/// A conditional write over a state the store holds spelled otherwise (keys in another
/// order, other spacing and escapes: written by a build whose JSON serializer orders keys
/// differently) goes through, still only over that state: a real change in between is
/// refused, whatever its spelling.
pub async fn session_replace_over_another_spelling(s: &dyn HotStore, respell: Respell<'_>) {
    use crate::SessionWrite;
    let user = unique("user");
    let id = unique("sess");
    let state = json!({"aal": 1, "last_seen": 1, "factors": [{"amr": "pwd", "at": 5}], "note": "caf\u{e9}"});
    s.put_session(&id, &user, &state, Duration::from_secs(600))
        .await
        .unwrap();
    let respelled = r#"{ "note": "caf\u00e9", "factors": [ {"at": 5, "amr": "pwd"} ], "last_seen": 1, "aal": 1 }"#;
    respell(id.clone(), respelled.to_owned()).await;
    let read = s.get_session(&id).await.unwrap().expect("live");
    assert_eq!(read.data, state, "the same state, spelled otherwise");
    let stamped = json!({"aal": 1, "last_seen": 2, "factors": [{"amr": "pwd", "at": 5}], "note": "caf\u{e9}"});
    assert_eq!(
        s.replace_session(&id, &read.data, &stamped, Duration::from_secs(600))
            .await
            .unwrap(),
        SessionWrite::Written,
        "the activity stamp goes over the same state spelled otherwise"
    );
    assert_eq!(
        s.get_session(&id).await.unwrap().map(|e| e.data),
        Some(stamped.clone())
    );
    // A change in between, spelled otherwise too, is still a change.
    let changed =
        r#"{"last_seen": 2, "aal": 2, "factors": [{"at": 5, "amr": "pwd"}], "note": "caf\u00e9"}"#;
    respell(id.clone(), changed.to_owned()).await;
    let mut later = stamped.clone();
    later["last_seen"] = json!(3);
    assert_eq!(
        s.replace_session(&id, &stamped, &later, Duration::from_secs(600))
            .await
            .unwrap(),
        SessionWrite::Changed,
        "a write over a state that changed is refused, whatever its spelling"
    );
    assert_eq!(
        s.get_session(&id)
            .await
            .unwrap()
            .map(|e| e.data["aal"].clone()),
        Some(json!(2)),
        "the other writer's change stands"
    );
    assert!(s.delete_session(&id).await.unwrap());
}

/// A session past its TTL is gone: not returned, not touchable, not listed.
pub async fn session_ttl_expiry(s: &dyn HotStore, expiry: &Expiry) {
    let user = unique("user");
    let id = unique("sess");
    s.put_session(&id, &user, &json!({}), expiry.short())
        .await
        .unwrap();
    assert!(s.get_session(&id).await.unwrap().is_some());
    expiry.pass_short().await;
    assert!(
        s.get_session(&id).await.unwrap().is_none(),
        "expired session"
    );
    assert!(
        !s.touch_session(&id, Duration::from_secs(60)).await.unwrap(),
        "cannot revive"
    );
    assert!(
        !s.update_session(&id, &json!({}), Duration::from_secs(60))
            .await
            .unwrap(),
        "cannot revive by update either"
    );
    assert!(s.list_sessions_for_user(&user).await.unwrap().is_empty());
    assert!(s.get_session(&id).await.unwrap().is_none());
}

/// Counters count within a window and start again after it.
pub async fn counter_windows(s: &dyn HotStore, expiry: &Expiry) {
    let k = unique("count");
    assert_eq!(s.get_counter(&k).await.unwrap(), 0);
    for want in 1..=3 {
        assert_eq!(s.incr_counter(&k, expiry.short()).await.unwrap(), want);
    }
    assert_eq!(s.get_counter(&k).await.unwrap(), 3);
    expiry.pass_short().await;
    assert_eq!(s.get_counter(&k).await.unwrap(), 0, "window over");
    assert_eq!(
        s.incr_counter(&k, Duration::from_secs(60)).await.unwrap(),
        1,
        "a new window"
    );
    assert_eq!(
        s.incr_counter(&k, Duration::from_secs(60)).await.unwrap(),
        2
    );
    s.reset_counter(&k).await.unwrap();
    assert_eq!(s.get_counter(&k).await.unwrap(), 0);
    assert_eq!(
        s.incr_counter(&k, Duration::from_secs(60)).await.unwrap(),
        1
    );
}

/// Concurrent increments are all counted, each seeing its own value.
pub async fn counters_are_atomic(s: Arc<dyn HotStore>) {
    let k = unique("count");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let s = s.clone();
        let k = k.clone();
        set.spawn(async move { s.incr_counter(&k, Duration::from_secs(60)).await });
    }
    let mut seen = Vec::new();
    while let Some(r) = set.join_next().await {
        seen.push(r.expect("task").expect("incr"));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
    assert_eq!(s.get_counter(&k).await.unwrap(), 20);
}

/// Bans hold until their time, can be lifted, and a past ban is no ban.
pub async fn bans(s: &dyn HotStore, expiry: &Expiry) {
    let k = unique("ban");
    assert!(s.ban_until(&k).await.unwrap().is_none());
    let until = expiry.now() + ChronoDuration::minutes(15);
    s.set_ban(&k, until).await.unwrap();
    assert_eq!(s.ban_until(&k).await.unwrap(), Some(until));
    s.clear_ban(&k).await.unwrap();
    assert!(s.ban_until(&k).await.unwrap().is_none());
    s.set_ban(&k, expiry.now() - ChronoDuration::seconds(1))
        .await
        .unwrap();
    assert!(
        s.ban_until(&k).await.unwrap().is_none(),
        "a ban in the past is over"
    );
    let short = expiry.now() + ChronoDuration::from_std(expiry.short()).unwrap();
    s.set_ban(&k, short).await.unwrap();
    assert_eq!(s.ban_until(&k).await.unwrap(), Some(short));
    expiry.pass_short().await;
    assert!(s.ban_until(&k).await.unwrap().is_none(), "the ban is over");
}

/// A one-time code works once.
pub async fn otp_single_use(s: &dyn HotStore) {
    let k = unique("otp");
    assert_eq!(
        s.check_otp(&k, b"hash-of-123456").await.unwrap(),
        OtpCheck::Missing
    );
    s.put_otp(&k, b"hash-of-123456", Duration::from_secs(300), 3)
        .await
        .unwrap();
    assert_eq!(
        s.check_otp(&k, b"hash-of-000000").await.unwrap(),
        OtpCheck::Invalid { attempts_left: 2 }
    );
    assert_eq!(
        s.check_otp(&k, b"hash-of-123456").await.unwrap(),
        OtpCheck::Valid
    );
    assert_eq!(
        s.check_otp(&k, b"hash-of-123456").await.unwrap(),
        OtpCheck::Missing,
        "single use"
    );

    s.put_otp(&k, b"first", Duration::from_secs(300), 3)
        .await
        .unwrap();
    s.put_otp(&k, b"second", Duration::from_secs(300), 3)
        .await
        .unwrap();
    assert!(
        matches!(
            s.check_otp(&k, b"first").await.unwrap(),
            OtpCheck::Invalid { .. }
        ),
        "replaced"
    );
    assert_eq!(s.check_otp(&k, b"second").await.unwrap(), OtpCheck::Valid);

    s.put_otp(&k, b"gone", Duration::from_secs(300), 3)
        .await
        .unwrap();
    s.delete_otp(&k).await.unwrap();
    assert_eq!(s.check_otp(&k, b"gone").await.unwrap(), OtpCheck::Missing);
    assert!(
        matches!(
            s.put_otp(&k, b"x", Duration::from_secs(300), 0).await,
            Err(StoreError::Invalid(_))
        ),
        "zero attempts"
    );
}

/// After `max_attempts` wrong codes the right one no longer works.
pub async fn otp_attempt_exhaustion(s: &dyn HotStore) {
    let k = unique("otp");
    s.put_otp(&k, b"right", Duration::from_secs(300), 3)
        .await
        .unwrap();
    for left in [2, 1, 0] {
        assert_eq!(
            s.check_otp(&k, b"wrong").await.unwrap(),
            OtpCheck::Invalid {
                attempts_left: left
            }
        );
    }
    assert_eq!(
        s.check_otp(&k, b"right").await.unwrap(),
        OtpCheck::Missing,
        "exhausted"
    );
}

/// An expired code does not work.
pub async fn otp_expiry(s: &dyn HotStore, expiry: &Expiry) {
    let k = unique("otp");
    s.put_otp(&k, b"right", expiry.short(), 5).await.unwrap();
    assert_eq!(
        s.check_otp(&k, b"wrong").await.unwrap(),
        OtpCheck::Invalid { attempts_left: 4 },
        "live until the TTL"
    );
    expiry.pass_short().await;
    assert_eq!(s.check_otp(&k, b"right").await.unwrap(), OtpCheck::Missing);
}

/// Many concurrent checks of the right code: exactly one succeeds.
pub async fn otp_concurrent_checks_consume_once(s: Arc<dyn HotStore>) {
    let k = unique("otp");
    s.put_otp(&k, b"right", Duration::from_secs(300), 100)
        .await
        .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let s = s.clone();
        let k = k.clone();
        set.spawn(async move { s.check_otp(&k, b"right").await });
    }
    let mut valid = 0;
    while let Some(r) = set.join_next().await {
        if r.expect("task").expect("check") == OtpCheck::Valid {
            valid += 1;
        }
    }
    assert_eq!(valid, 1, "a code is consumed by exactly one check");
}

/// `remember_once` is true only the first time within the TTL.
pub async fn replay_guard(s: &dyn HotStore, expiry: &Expiry) {
    let k = unique("jti");
    assert!(s.remember_once(&k, Duration::from_secs(60)).await.unwrap());
    assert!(!s.remember_once(&k, Duration::from_secs(60)).await.unwrap());
    assert!(s
        .remember_once(&unique("jti"), Duration::from_secs(60))
        .await
        .unwrap());
    let short = unique("totp-step");
    assert!(s.remember_once(&short, expiry.short()).await.unwrap());
    assert!(!s.remember_once(&short, expiry.short()).await.unwrap());
    expiry.pass_short().await;
    assert!(
        s.remember_once(&short, expiry.short()).await.unwrap(),
        "forgotten after the TTL"
    );
}

/// Concurrent `remember_once` on one key: exactly one `true`.
pub async fn replay_guard_is_atomic(s: Arc<dyn HotStore>) {
    let k = unique("jti");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let s = s.clone();
        let k = k.clone();
        set.spawn(async move { s.remember_once(&k, Duration::from_secs(60)).await });
    }
    let mut firsts = 0;
    while let Some(r) = set.join_next().await {
        if r.expect("task").expect("remember") {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
}

/// Recent lists: newest first, capped, expiring.
pub async fn recent_lists(s: &dyn HotStore, expiry: &Expiry) {
    let k = unique("history");
    assert!(s.recent(&k).await.unwrap().is_empty());
    for i in 0..5 {
        s.push_recent(
            &k,
            &json!({"i": i, "ip": "198.51.100.7"}),
            3,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    }
    let got: Vec<i64> = s
        .recent(&k)
        .await
        .unwrap()
        .iter()
        .filter_map(|v| v["i"].as_i64())
        .collect();
    assert_eq!(got, vec![4, 3, 2]);
    let short = unique("history");
    s.push_recent(&short, &json!(1), 3, expiry.short())
        .await
        .unwrap();
    assert_eq!(s.recent(&short).await.unwrap(), vec![json!(1)]);
    expiry.pass_short().await;
    assert!(s.recent(&short).await.unwrap().is_empty());
}

/// Expired entries of every kind are removed by a purge (under [`Expiry::Manual`] they are
/// still in the store until then, and the purge must report removing them); live entries
/// are left alone.
pub async fn purge_expired(s: &dyn HotStore, expiry: &Expiry) {
    // Whatever earlier checks left behind expires and goes first, so that the count below
    // is this check's own.
    if let Expiry::Manual(clock) = expiry {
        clock.advance(Duration::from_secs(24 * 3600));
        s.purge_expired().await.unwrap();
    }

    let long = Duration::from_secs(600);
    let live = unique("sess");
    s.put_session(&live, "u", &json!({}), long).await.unwrap();
    let live_count = unique("count");
    s.incr_counter(&live_count, long).await.unwrap();

    let ttl = expiry.short();
    s.put_session(&unique("sess"), "u", &json!({}), ttl)
        .await
        .unwrap();
    s.incr_counter(&unique("count"), ttl).await.unwrap();
    s.set_ban(
        &unique("ban"),
        expiry.now() + ChronoDuration::from_std(ttl).unwrap(),
    )
    .await
    .unwrap();
    s.put_otp(&unique("otp"), b"code", ttl, 3).await.unwrap();
    assert!(s.remember_once(&unique("once"), ttl).await.unwrap());
    s.push_recent(&unique("history"), &json!(1), 3, ttl)
        .await
        .unwrap();
    expiry.pass_short().await;

    let purged = s.purge_expired().await.unwrap();
    if let Expiry::Manual(_) = expiry {
        assert_eq!(
            purged, 6,
            "one expired session, counter, ban, code, replay key and list entry, \
             kept until the purge"
        );
        assert_eq!(
            s.purge_expired().await.unwrap(),
            0,
            "nothing expired is left"
        );
    }
    assert!(s.get_session(&live).await.unwrap().is_some());
    assert_eq!(s.get_counter(&live_count).await.unwrap(), 1);
    s.delete_session(&live).await.unwrap();
    s.reset_counter(&live_count).await.unwrap();
}

/// What [`write_fixture`] wrote, for [`check_fixture`] after a restart.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The user.
    pub user: UserRecord,
    /// Their TOTP factor (secret sealed over [`FIXTURE_SEED`]).
    pub factor: FactorRecord,
    /// A device.
    pub device: DeviceRecord,
    /// The audit event's sequence number.
    pub audit_seq: i64,
    /// Hot keys (session id, counter, ban, otp, once, recent) written.
    pub hot_key: String,
}

/// Writes one of everything durable (and, when given, hot) for a restart check.
pub async fn write_fixture(
    durable: &dyn DurableStore,
    hot: Option<&dyn HotStore>,
    key: &SecretKey,
) -> Fixture {
    let user = sample_user("restart");
    durable.create_user(&user).await.unwrap();
    let mut factor = FactorRecord::new(&user.id, "totp", "phone");
    factor.secret = Some(
        key.seal(FIXTURE_SEED, &factor_context(&user.id, &factor.id))
            .unwrap(),
    );
    factor.data = json!({"digits": 6});
    durable.create_factor(&factor).await.unwrap();
    let device = DeviceRecord {
        id: unique("dev"),
        owner: Some(user.id.clone()),
        data: json!({"hostname": "h"}),
        updated_at: now_ms(),
    };
    durable.put_device(&device).await.unwrap();
    let mut ev = NewAuditEvent::now("restart.fixture");
    ev.actor = Some(user.id.clone());
    let audit_seq = durable.append_audit(&ev).await.unwrap().seq;
    let hot_key = unique("hot");
    if let Some(h) = hot {
        let long = Duration::from_secs(3600);
        h.put_session(&hot_key, &user.id, &json!({"aal": 2}), long)
            .await
            .unwrap();
        h.incr_counter(&hot_key, long).await.unwrap();
        h.incr_counter(&hot_key, long).await.unwrap();
        h.set_ban(&hot_key, now_ms() + ChronoDuration::hours(1))
            .await
            .unwrap();
        h.put_otp(&hot_key, b"code-hash", long, 3).await.unwrap();
        assert!(h.remember_once(&hot_key, long).await.unwrap());
        h.push_recent(&hot_key, &json!("x"), 5, long).await.unwrap();
    }
    Fixture {
        user,
        factor,
        device,
        audit_seq,
        hot_key,
    }
}

/// Reads back everything [`write_fixture`] wrote, after the store was reopened.
pub async fn check_fixture(
    durable: &dyn DurableStore,
    hot: Option<&dyn HotStore>,
    key: &SecretKey,
    f: &Fixture,
) {
    assert_eq!(
        durable.get_user(&f.user.id).await.unwrap().as_ref(),
        Some(&f.user)
    );
    let factor = durable
        .get_factor(&f.factor.id)
        .await
        .unwrap()
        .expect("factor survives");
    assert_eq!(factor, f.factor);
    let sealed = factor.secret.as_ref().expect("secret survives");
    let seed = key
        .open(sealed, &factor_context(&f.user.id, &factor.id))
        .unwrap();
    assert_eq!(seed.as_slice(), FIXTURE_SEED);
    assert_eq!(
        durable.get_device(&f.device.id).await.unwrap().as_ref(),
        Some(&f.device)
    );
    let events = durable
        .list_audit(&AuditQuery {
            actor: Some(f.user.id.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![f.audit_seq]
    );
    verify_audit_chain(durable)
        .await
        .expect("chain intact after restart");
    if let Some(h) = hot {
        let k = &f.hot_key;
        assert_eq!(
            h.get_session(k).await.unwrap().map(|s| s.data),
            Some(json!({"aal": 2}))
        );
        assert_eq!(h.get_counter(k).await.unwrap(), 2);
        assert!(h.ban_until(k).await.unwrap().is_some());
        assert!(!h.remember_once(k, Duration::from_secs(60)).await.unwrap());
        assert_eq!(h.recent(k).await.unwrap(), vec![json!("x")]);
        assert_eq!(h.check_otp(k, b"code-hash").await.unwrap(), OtpCheck::Valid);
    }
}

/// The decision log: a batch appended and read back whole, by request id and by each
/// indexed filter, newest first, a retried batch written once, and pruning by age.
pub async fn decisions_log(s: &dyn DurableStore) {
    // Unique names: other checks may share the database.
    let tag = new_id();
    let user = format!("dl-{tag}");
    let app = format!("app-{tag}");
    let t0 = now_ms() - ChronoDuration::days(40);
    let record = |n: i64, outcome: &str, policy: Option<&str>| DecisionRecord {
        request_id: format!("{tag}-{n}"),
        time: t0 + ChronoDuration::days(n),
        kind: "access".into(),
        user: Some(user.clone()),
        session: Some("aGFuZGxl".into()),
        app: Some(app.clone()),
        route: Some("admin".into()),
        method: "POST".into(),
        path: "/admin/x".into(),
        ip: Some("203.0.113.9".into()),
        device: Some("dev-1".into()),
        policy: policy.map(str::to_string),
        policy_outcome: Some(outcome.into()),
        outcome: outcome.into(),
        report_only: json!([{ "policy": "trial", "outcome": "deny" }]),
        detail: json!({ "context": { "kind": "access" }, "requirement": null }).into(),
    };
    let batch = vec![
        record(0, "allow", Some("p-allow")),
        record(10, "deny", Some("p-deny")),
        record(20, "step_up", Some("p-mfa")),
        record(30, "allow", None),
    ];
    s.append_decisions(&batch).await.unwrap();
    // A retried batch (the writer could not tell whether the first commit landed) adds
    // nothing and changes nothing.
    let mut again = batch.clone();
    again[1].outcome = "allow".into();
    s.append_decisions(&again).await.unwrap();
    s.append_decisions(&[]).await.unwrap();

    let got = s.get_decision(&batch[1].request_id).await.unwrap().unwrap();
    assert_eq!(got, batch[1], "a decision reads back as written");
    assert!(s.get_decision("no-such-request").await.unwrap().is_none());

    let ids = |v: Vec<DecisionRecord>| v.into_iter().map(|d| d.request_id).collect::<Vec<_>>();
    let by_user = DecisionQuery {
        user: Some(user.clone()),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_decisions(&by_user).await.unwrap()),
        vec![
            batch[3].request_id.clone(),
            batch[2].request_id.clone(),
            batch[1].request_id.clone(),
            batch[0].request_id.clone()
        ],
        "newest first"
    );
    let q = DecisionQuery {
        oldest_first: true,
        limit: 2,
        ..by_user.clone()
    };
    assert_eq!(
        ids(s.list_decisions(&q).await.unwrap()),
        vec![batch[0].request_id.clone(), batch[1].request_id.clone()]
    );
    // A scan reads the same records, each readable one as itself.
    let scanned: Vec<DecisionRecord> = s
        .scan_decisions(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.expect("every record of this log reads"))
        .collect();
    assert_eq!(scanned, s.list_decisions(&q).await.unwrap(), "scan = list");
    let q = DecisionQuery {
        app: Some(app.clone()),
        outcome: Some("allow".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_decisions(&q).await.unwrap()),
        vec![batch[3].request_id.clone(), batch[0].request_id.clone()]
    );
    let q = DecisionQuery {
        policy: Some("p-mfa".into()),
        user: Some(user.clone()),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_decisions(&q).await.unwrap()),
        vec![batch[2].request_id.clone()]
    );
    let q = DecisionQuery {
        since: Some(t0 + ChronoDuration::days(10)),
        until: Some(t0 + ChronoDuration::days(30)),
        ..by_user.clone()
    };
    assert_eq!(
        ids(s.list_decisions(&q).await.unwrap()),
        vec![batch[2].request_id.clone(), batch[1].request_id.clone()]
    );
    // Paging: four decisions in one millisecond, two to a page, each seen once, both ways.
    let same: Vec<DecisionRecord> = (0..4)
        .map(|i| DecisionRecord {
            request_id: format!("{tag}-same-{i}"),
            time: t0 + ChronoDuration::days(35),
            user: Some(format!("{user}-paged")),
            ..record(0, "allow", None)
        })
        .collect();
    s.append_decisions(&same).await.unwrap();
    for oldest_first in [true, false] {
        let mut q = DecisionQuery {
            user: Some(format!("{user}-paged")),
            oldest_first,
            limit: 2,
            ..Default::default()
        };
        let mut pages = Vec::new();
        loop {
            let page = s.list_decisions(&q).await.unwrap();
            let Some(last) = page.last() else { break };
            q.after = Some((last.time, last.request_id.clone()));
            pages.extend(ids(page));
        }
        let mut want: Vec<String> = same.iter().map(|d| d.request_id.clone()).collect();
        if !oldest_first {
            want.reverse();
        }
        assert_eq!(pages, want, "paging oldest_first={oldest_first}");
    }
    let q = DecisionQuery {
        user: Some(format!("{user}-other")),
        ..Default::default()
    };
    assert!(s.list_decisions(&q).await.unwrap().is_empty());

    // Retention: what is older than the cut goes; the rest stays.
    let purged = s
        .purge_decisions(t0 + ChronoDuration::days(15))
        .await
        .unwrap();
    assert!(purged >= 2, "purged {purged}");
    assert_eq!(
        ids(s.list_decisions(&by_user).await.unwrap()),
        vec![batch[3].request_id.clone(), batch[2].request_id.clone()]
    );
    assert!(s
        .get_decision(&batch[0].request_id)
        .await
        .unwrap()
        .is_none());
}

/// Admin API tokens: kept and found by hash, names and hashes unique, listed by name,
/// revoked once (and still found, marked), a use recorded.
pub async fn admin_tokens(s: &dyn DurableStore) {
    let tag = new_id();
    let now = now_ms();
    let token = |name: &str, hash: &str| AdminToken {
        id: new_id(),
        name: format!("{name}-{tag}"),
        token_sha256: format!("{hash}{tag}"),
        scopes: vec!["users:read".into(), "audit:read".into()],
        created_at: now,
        expires_at: now + ChronoDuration::days(30),
        revoked_at: None,
        last_used_at: None,
    };
    let a = token("b-ci", "aa");
    let b = token("a-ops", "bb");
    s.create_admin_token(&a).await.unwrap();
    s.create_admin_token(&b).await.unwrap();
    let same_name = AdminToken {
        id: new_id(),
        token_sha256: format!("cc{tag}"),
        ..a.clone()
    };
    assert!(matches!(
        s.create_admin_token(&same_name).await,
        Err(StoreError::Conflict { .. })
    ));
    let same_hash = AdminToken {
        id: new_id(),
        name: format!("other-{tag}"),
        ..a.clone()
    };
    assert!(s.create_admin_token(&same_hash).await.is_err());

    assert_eq!(
        s.find_admin_token(&a.token_sha256).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.find_admin_token(&format!("zz{tag}")).await.unwrap(), None);
    let mine: Vec<String> = s
        .list_admin_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.name.ends_with(&tag))
        .map(|t| t.name)
        .collect();
    assert_eq!(mine, vec![b.name.clone(), a.name.clone()], "listed by name");

    let later = now + ChronoDuration::minutes(5);
    assert!(s.touch_admin_token(&a.id, later).await.unwrap());
    assert!(!s.touch_admin_token("no-such-token", later).await.unwrap());
    assert!(s.revoke_admin_token(&a.name, later).await.unwrap());
    assert!(
        !s.revoke_admin_token(&a.name, later).await.unwrap(),
        "revoked once"
    );
    assert!(!s.revoke_admin_token("no-such-name", later).await.unwrap());
    let got = s.find_admin_token(&a.token_sha256).await.unwrap().unwrap();
    assert_eq!(got.revoked_at, Some(later));
    assert_eq!(got.last_used_at, Some(later));
    let other = s.find_admin_token(&b.token_sha256).await.unwrap().unwrap();
    assert_eq!(other.revoked_at, None, "only the named token is revoked");
}

/// `log.decisions.max_rows`: all but the newest `keep` decisions go, ties in one
/// millisecond broken by request id, and a log within the bound loses nothing.
pub async fn decisions_trimmed_to_a_count(s: &dyn DurableStore) {
    let tag = new_id();
    // Far in the future: the newest records of a store other checks may share.
    let t = now_ms() + ChronoDuration::days(365 * 50);
    let record = |n: i64, ms: i64| DecisionRecord {
        request_id: format!("{tag}-trim-{n}"),
        time: t + ChronoDuration::milliseconds(ms),
        kind: "access".into(),
        user: Some(format!("trim-{tag}")),
        session: None,
        app: None,
        route: None,
        method: "GET".into(),
        path: "/".into(),
        ip: None,
        device: None,
        policy: None,
        policy_outcome: None,
        outcome: "allow".into(),
        report_only: json!([]),
        detail: json!({}).into(),
    };
    // 0 is the oldest; 1 and 2 share a millisecond; 3 is the newest.
    let batch = vec![record(0, 0), record(1, 5), record(2, 5), record(3, 9)];
    s.append_decisions(&batch).await.unwrap();
    assert_eq!(s.trim_decisions(1_000_000_000).await.unwrap(), 0);
    assert_eq!(kept_of(s, &batch).await, ["0", "1", "2", "3"]);
    let gone = s.trim_decisions(2).await.unwrap();
    assert!(gone >= 2, "trimmed {gone}");
    assert_eq!(kept_of(s, &batch).await, ["2", "3"], "the two newest stay");
    s.trim_decisions(0).await.unwrap();
    assert!(kept_of(s, &batch).await.is_empty());
}

/// Which of `batch` are still kept, by the number their request id ends with.
async fn kept_of(s: &dyn DurableStore, batch: &[DecisionRecord]) -> Vec<String> {
    let mut out = Vec::new();
    for d in batch {
        if s.get_decision(&d.request_id).await.unwrap().is_some() {
            out.push(d.request_id.rsplit('-').next().unwrap().to_string());
        }
    }
    out
}

/// SIEM stream cursors: none until set, then the last value set, per stream.
pub async fn audit_stream_cursors(s: &dyn DurableStore) {
    let a = format!("siem-{}", new_id());
    let b = format!("{a}-other");
    assert_eq!(s.audit_stream_cursor(&a).await.unwrap(), None);
    s.set_audit_stream_cursor(&a, 7).await.unwrap();
    assert_eq!(s.audit_stream_cursor(&a).await.unwrap(), Some(7));
    assert_eq!(s.audit_stream_cursor(&b).await.unwrap(), None);
    s.set_audit_stream_cursor(&a, 12).await.unwrap();
    s.set_audit_stream_cursor(&b, 3).await.unwrap();
    assert_eq!(s.audit_stream_cursor(&a).await.unwrap(), Some(12));
    assert_eq!(s.audit_stream_cursor(&b).await.unwrap(), Some(3));
}

/// Policy versions: numbered from one more than the newest, never twice, never with a gap;
/// read back whole, newest first, paged by `before`.
pub async fn policy_versions(s: &dyn DurableStore) {
    let base = s
        .latest_policy_version()
        .await
        .unwrap()
        .map_or(0, |v| v.version);
    let mut first = PolicyVersion::new(base + 1, "policies: []\n", "admin:jane");
    first.note = Some("start empty".into());
    s.save_policy_version(&first).await.unwrap();
    assert_eq!(
        s.get_policy_version(base + 1).await.unwrap(),
        Some(first.clone())
    );
    // The same number again: another administrator saved on the same version first.
    let again = PolicyVersion::new(base + 1, "policies: [] # mine\n", "admin:joe");
    assert!(
        matches!(
            s.save_policy_version(&again).await,
            Err(StoreError::Conflict { .. })
        ),
        "a number already taken is refused"
    );
    // A gap: not one more than the newest.
    let gap = PolicyVersion::new(base + 3, "policies: []\n", "admin:joe");
    assert!(
        matches!(
            s.save_policy_version(&gap).await,
            Err(StoreError::Conflict { .. })
        ),
        "a number past the next is refused"
    );
    assert_eq!(s.get_policy_version(base + 3).await.unwrap(), None);
    let mut back = PolicyVersion::new(base + 2, first.text.clone(), "admin:token:ci");
    back.rollback_of = Some(base + 1);
    s.save_policy_version(&back).await.unwrap();
    assert_eq!(s.latest_policy_version().await.unwrap(), Some(back.clone()));
    assert_eq!(first.sha256, back.sha256, "the same text, the same digest");
    let listed = s.list_policy_versions(None, 2).await.unwrap();
    assert_eq!(listed, vec![back.clone(), first.clone()], "newest first");
    let older = s.list_policy_versions(Some(base + 2), 10).await.unwrap();
    assert_eq!(older.first(), Some(&first), "below `before` only");
    assert!(older.iter().all(|v| v.version < base + 2));
}

/// Leases: one holder at a time; renewed by its holder; free again once it expires or is
/// given up.
pub async fn leases(s: &dyn DurableStore) {
    let name = format!("lease-{}", new_id());
    let long = Duration::from_secs(60);
    assert!(
        s.acquire_lease(&name, "node-a", long).await.unwrap(),
        "free: taken"
    );
    assert!(
        !s.acquire_lease(&name, "node-b", long).await.unwrap(),
        "held by another"
    );
    assert!(
        s.acquire_lease(&name, "node-a", long).await.unwrap(),
        "renewed by its holder"
    );
    s.release_lease(&name, "node-b").await.unwrap();
    assert!(
        !s.acquire_lease(&name, "node-b", long).await.unwrap(),
        "only the holder gives it up"
    );
    s.release_lease(&name, "node-a").await.unwrap();
    assert!(
        s.acquire_lease(&name, "node-b", long).await.unwrap(),
        "given up: taken"
    );
    // An expired lease is anyone's (a zero TTL has expired by the next call).
    let other = format!("{name}-short");
    assert!(s
        .acquire_lease(&other, "node-a", Duration::ZERO)
        .await
        .unwrap());
    assert!(
        s.acquire_lease(&other, "node-b", long).await.unwrap(),
        "expired: taken"
    );
    assert!(!s.acquire_lease(&other, "node-a", long).await.unwrap());
}
