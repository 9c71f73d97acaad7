//! What the portal tests share: the config, starting stepgate, and reaching into a
//! session's stored record to age it.

use axum::routing::any;

use crate::support::{sign_in, upstream, Browser, Server, JANE};

pub(crate) const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
    routes:
      - { name: danger zone, methods: [POST], path: /danger, tags: [sensitive] }
server:
  return_target_ttl: 10m
regulation:
  max_retries: 50     # keep the account and IP bans out of the way of the per-code guess limit
  ip_max_retries: 50
sessions:
  cookie: { secure: false }
  aal2: { lifetime: 1h, idle_timeout: 10m }
factors:
  email_otp:
    enabled: true
    transport: { file: { dir: outbox } }
policies:
  - name: sensitive-needs-fresh-totp
    priority: 10
    targets: { routes: [{ tags: [sensitive] }] }
    outcome: { step_up: { min_aal: 2, factors: [totp, email_otp], max_age: every_time, message: The danger zone needs a fresh code. } }
  - name: everyone-with-mfa
    priority: 20
    outcome: { step_up: { min_aal: 2 } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// stepgate in front of an app that says whom stepgate told it the user is.
pub(crate) async fn start() -> Server {
    let app = axum::Router::new().fallback(any(|h: axum::http::HeaderMap| async move {
        format!(
            "upstream saw user={}",
            h.get("remote-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        )
    }));
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::serve(app).await)
        .demo_users()
        .start()
        .await
}

/// Rewrites the stored session `id` with `edit`, as if time had gone by.
pub(crate) async fn edit_session(h: &Server, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let entry = h.st.stores.hot.get_session(id).await.unwrap().unwrap();
    let mut data = entry.data.clone();
    edit(&mut data);
    h.st.stores
        .hot
        .put_session(
            id,
            &entry.user_id,
            &data,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
}

/// Moves every factor the session passed `minutes` into the past, as if time had gone by.
pub(crate) async fn age_factors(h: &Server, b: &Browser, minutes: i64) {
    let id = b.session_id(&h.base).expect("a session");
    edit_session(h, &id, |data| {
        for f in data["factors"].as_array_mut().unwrap() {
            let at: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(f["at"].clone()).unwrap();
            f["at"] = serde_json::to_value(at - chrono::Duration::minutes(minutes)).unwrap();
        }
    })
    .await;
}

/// Signs jane in (password, then TOTP `code`) from the app's page; the final page.
pub(crate) async fn signed_in(h: &Server, b: &Browser, code: &str) -> reqwest::Response {
    sign_in(b, &h.at("/app"), &JANE, code).await
}
