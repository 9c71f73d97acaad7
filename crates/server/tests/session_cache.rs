//! The per-node read cache (`sessions.cache_ttl`) over real HTTP: a sign-out, a user
//! disabled or a session deleted through this node takes effect on the very next request;
//! the same changes made by another node (here: a second handle on the same store) are seen
//! within the TTL. Time passes by the cache's own clock, which the tests move ahead
//! (`Caches::advance_clock`) instead of sleeping through the TTL.

mod support;

use std::ops::Deref;
use std::time::Duration;

use stepgate_store::Stores;
use support::{client, redirects, sign_in, upstream, user, Browser, Server, JANE};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
  cache_ttl: 10m
default_outcome: allow
policies:
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// How much less than the TTL the clock is moved ahead to show an entry is still cached:
/// more than the real time a test takes between caching an entry and reading it again.
const MARGIN: Duration = Duration::from_secs(60);

/// This node, and another on the same store.
struct Harness {
    /// This node.
    node: Server,
    /// Another node: the same store, opened separately (no shared cache).
    other: Stores,
}

impl Deref for Harness {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.node
    }
}

async fn start() -> Harness {
    let node = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await;
    let store = node.st.runtime.load().config.store.clone();
    let other = stepgate_store::open_stores(&store, &node.dir.path().join("data"), &node.key)
        .await
        .unwrap();
    Harness { node, other }
}

/// A client that follows no redirects and keeps no cookies.
fn no_redirects() -> reqwest::Client {
    client().redirect(redirects(false)).build().unwrap()
}

impl Harness {
    /// `path` on the app.
    fn app(&self, path: &str) -> String {
        self.url("app.test", path)
    }

    /// Signs jane in (password, then TOTP) and returns her session id.
    async fn sign_in(&self) -> String {
        let b = Browser::new();
        let r = sign_in(&b, &self.app("/"), &JANE, &JANE.code(0)).await;
        assert_eq!(r.status(), 200, "signed in and back at the app");
        b.session_id(&self.app("/")).expect("the session cookie")
    }

    /// The app's answer to a request with session `id` (no redirects followed): its status
    /// and where it sends the browser, if anywhere.
    async fn answer(&self, id: &str) -> (u16, Option<String>) {
        let r = no_redirects()
            .get(self.app("/"))
            .header("cookie", format!("stepgate_session={id}"))
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), location)
    }

    /// Checks that a request with session `id` reaches the app.
    async fn assert_allowed(&self, id: &str, why: &str) {
        assert_eq!(self.answer(id).await, (200, None), "{why}");
    }

    /// Checks that a request with session `id` is sent to sign in, as one without a
    /// session is.
    async fn assert_sent_to_sign_in(&self, id: &str, why: &str) {
        let (status, location) = self.answer(id).await;
        assert_eq!(status, 303, "{why}: {location:?}");
        let location = location.unwrap_or_default();
        assert!(
            location.contains("/_stepgate/login?t="),
            "{why}: sent to {location}"
        );
    }

    /// Moves this node's cache clock `by` ahead.
    fn advance(&self, by: Duration) {
        self.st.cache.advance_clock(by);
    }
}

/// Signs jane in, makes `change` (given the session id) through this node, and checks
/// that the very next request is sent to sign in.
async fn refused_on_the_next_request_after(change: impl AsyncFnOnce(&Harness, &str)) {
    let h = start().await;
    let id = h.sign_in().await;
    h.assert_allowed(&id, "signed in").await;
    h.assert_allowed(&id, "served from the cache").await;
    change(&h, &id).await;
    h.assert_sent_to_sign_in(&id, "the very next request").await;
}

/// Signs jane in, makes `change` (given the session id) through the other node, and checks
/// that this node goes on serving what it cached until its TTL (10 min) has passed, and
/// sends the session to sign in once it has; the nodes and the id.
async fn refused_within_the_ttl_after(
    change: impl AsyncFnOnce(&Stores, &str),
) -> (Harness, String) {
    let h = start().await;
    let ttl = h.st.cache.ttl();
    assert_eq!(ttl, Duration::from_secs(600));
    let id = h.sign_in().await;
    h.assert_allowed(&id, "signed in").await;
    change(&h.other, &id).await;
    h.advance(ttl - MARGIN);
    h.assert_allowed(&id, "not yet seen: cached for the TTL")
        .await;
    h.advance(MARGIN);
    h.assert_sent_to_sign_in(&id, "seen once the TTL has passed")
        .await;
    (h, id)
}

/// Disables jane in `stores`.
async fn disable_jane(stores: &Stores) {
    let mut u = stores
        .durable
        .get_user_by_username("jane")
        .await
        .unwrap()
        .unwrap();
    u.disabled = true;
    stores.durable.update_user(&u).await.unwrap();
}

#[tokio::test]
async fn sign_out_on_this_node_takes_effect_on_the_next_request() {
    let h = start().await;
    let id = h.sign_in().await;
    h.assert_allowed(&id, "signed in").await;
    h.assert_allowed(&id, "served from the cache").await;
    let r = no_redirects()
        .post(h.app("/_stepgate/logout"))
        .header("cookie", format!("stepgate_session={id}"))
        .form(&[("csrf", h.st.signer.csrf_token(&id))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.assert_sent_to_sign_in(&id, "the old cookie").await;
}

#[tokio::test]
async fn sign_out_everywhere_on_this_node_is_immediate() {
    refused_on_the_next_request_after(async |h, _| {
        let jane = user(&h.st, "jane").await;
        h.st.stores
            .hot
            .delete_sessions_for_user(&jane.id)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_session_deleted_on_this_node_is_refused_on_the_next_request() {
    refused_on_the_next_request_after(async |h, id| {
        h.st.stores.hot.delete_session(id).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_user_disabled_on_this_node_is_refused_on_the_next_request() {
    refused_on_the_next_request_after(async |h, _| disable_jane(&h.st.stores).await).await;
}

#[tokio::test]
async fn a_session_deleted_by_another_node_stops_working_within_the_ttl() {
    refused_within_the_ttl_after(async |other, id| {
        assert!(other.hot.delete_session(id).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_user_disabled_by_another_node_is_refused_within_the_ttl() {
    let (h, id) = refused_within_the_ttl_after(async |other, _| disable_jane(other).await).await;
    // And the session is gone for good, not just refused while the user is disabled.
    assert!(h.other.hot.get_session(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let h = start().await;
    h.st.cache.set_ttl(Duration::ZERO);
    let id = h.sign_in().await;
    h.assert_allowed(&id, "signed in").await;
    assert!(h.other.hot.delete_session(&id).await.unwrap());
    h.assert_sent_to_sign_in(&id, "the very next request").await;
}

#[tokio::test]
async fn a_dead_session_id_is_remembered_as_absent_instead_of_read_on_every_request() {
    let h = start().await;
    let ttl = h.st.cache.ttl();
    let id = h.sign_in().await;
    h.assert_allowed(&id, "signed in").await;
    let entry = h.other.hot.get_session(&id).await.unwrap().unwrap();
    // Signed out elsewhere: refused here once the TTL has passed, and from then on the
    // absence is cached.
    assert!(h.other.hot.delete_session(&id).await.unwrap());
    h.advance(ttl);
    h.assert_sent_to_sign_in(&id, "deleted elsewhere, TTL passed")
        .await;
    // The store holds the id again (which stepgate itself never does: ids are not reused).
    // Requests within the TTL are still refused, so they were answered from the cache and
    // not read from the store; once the TTL has passed the store is read again.
    h.other
        .hot
        .put_session(&id, &entry.user_id, &entry.data, Duration::from_secs(600))
        .await
        .unwrap();
    for _ in 0..3 {
        h.assert_sent_to_sign_in(&id, "the cached absence").await;
    }
    h.advance(ttl - MARGIN);
    h.assert_sent_to_sign_in(&id, "the cached absence, near the TTL")
        .await;
    h.advance(MARGIN);
    h.assert_allowed(&id, "read from the store again after the TTL")
        .await;
    // A made-up id is refused by its MAC and never cached (nothing to observe but the
    // refusal; the unit tests cover the MAC).
    h.assert_sent_to_sign_in("not-a-real-session-id.AAAA", "a made-up id")
        .await;
}

/// Another node marks the session to step up (the CAEP event reached it) while this node
/// still serves the session from its cache and has not heard. When this node next records
/// the session's activity, its write must not undo the mark (before, it rewrote the whole
/// state it had cached), and the request that found the mark is asked to step up.
#[tokio::test]
async fn another_nodes_mark_survives_this_nodes_activity_stamp() {
    let h = start().await;
    let id = h.sign_in().await;
    h.assert_allowed(&id, "signed in").await;
    h.assert_allowed(&id, "served from the cache").await;
    let mut entry = h.other.hot.get_session(&id).await.unwrap().expect("live");
    entry.data["needs_step_up"] = serde_json::json!(true);
    assert!(h
        .other
        .hot
        .update_session(&id, &entry.data, Duration::from_secs(600))
        .await
        .unwrap());
    // The activity stamp is written once the one on record is more than 5 s old.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let (status, location) = h.answer(&id).await;
    let location = location.unwrap_or_default();
    assert_eq!(
        status, 303,
        "the marked session is not let through: {location}"
    );
    assert!(
        location.contains("/_stepgate/step-up"),
        "sent to step up: {location}"
    );
    let stored = h.other.hot.get_session(&id).await.unwrap().expect("live");
    assert_eq!(
        stored.data["needs_step_up"], true,
        "the other node's mark stands in the store"
    );
}

/// A session whose state the store holds as another build of stepgate spelled it (the same
/// state, its keys in another order: builds differ in how serde_json orders them) takes
/// this node's activity stamp. Before, the stamp's conditional write compared the text and
/// was refused on every request, so the session idled out while in use.
#[tokio::test]
async fn a_session_another_build_wrote_is_stamped_with_activity() {
    let h = start().await;
    let id = h.sign_in().await;
    h.assert_allowed(&id, "signed in").await;
    let entry = h.other.hot.get_session(&id).await.unwrap().expect("live");
    let mut state = entry.data.as_object().unwrap().clone();
    let long_ago = chrono::Utc::now() - chrono::Duration::seconds(90);
    state.insert("last_seen".into(), serde_json::json!(long_ago));
    // The keys in reverse order, with spaces: no serializer of this build writes that.
    let respelled = format!(
        "{{ {} }}",
        state
            .iter()
            .rev()
            .map(|(k, v)| format!("{}: {}", serde_json::json!(k), v))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let db = h.dir.path().join("data").join("stepgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let done = sqlx::query("UPDATE hot_sessions SET data_json = ? WHERE id = ?")
        .bind(&respelled)
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    // Past the cache's TTL: the next request reads the store.
    h.advance(Duration::from_secs(11 * 60));
    h.assert_allowed(&id, "the session stands").await;
    let stored = h.other.hot.get_session(&id).await.unwrap().expect("live");
    let seen: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(stored.data["last_seen"].clone()).unwrap();
    assert!(
        seen > long_ago + chrono::Duration::seconds(60),
        "the activity is recorded: last seen {seen}, was {long_ago}"
    );
    pool.close().await;
}
