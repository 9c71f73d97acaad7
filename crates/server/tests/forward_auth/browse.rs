//! What a browser and an API see through a front proxy that asks stepgate before each request
//! (nginx's `auth_request`, Caddy's `forward_auth`): anonymous users are sent to the portal
//! and APIs challenged, even when claiming to be someone; the decision endpoint cannot be
//! asked through the portal; after a sign-in the app sees stepgate's identity headers and no
//! client's; a sensitive route asks for a step-up; a denied one shows the blocked page.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::{
    free_port, let_every_time_window_pass, start, ProxyProcess, APP_HOST, FIONA, PORTAL_HOST, USER,
};
use crate::support::{header, sign_in, Browser, Page};

/// Starts stepgate (with [`start`], its portal at the proxy's address) and the proxy that
/// `start_proxy(dir, port, stepgate_port, app_port)` starts on `port` (its files in `dir`),
/// and browses the app through it. `internal` are paths of the app's site the proxy keeps
/// to itself (`404`); `portal_ask(port)` the headers a client tries the decision endpoint
/// with through the portal.
pub async fn browse_behind(
    internal: &[&str],
    portal_ask: impl FnOnce(u16) -> Vec<(&'static str, String)>,
    start_proxy: impl AsyncFnOnce(&Path, u16, u16, u16) -> ProxyProcess,
) {
    let port = free_port();
    let h = start(move |_| format!("http://{PORTAL_HOST}:{port}")).await;
    let proxy = start_proxy(h.dir.path(), port, h.addr.port(), h.upstream.port()).await;
    browse(port, internal, &portal_ask(port), &proxy).await;
}

/// Browses the app through `proxy` on `port` (see [`browse_behind`]).
async fn browse(
    port: u16,
    internal: &[&str],
    portal_ask: &[(&'static str, String)],
    proxy: &ProxyProcess,
) {
    let app = format!("http://{APP_HOST}:{port}");
    let portal = format!("http://{PORTAL_HOST}:{port}");
    let c = Browser::not_following();
    let follow = c.tab(true);

    // Anonymous: redirected to the portal (through the proxy's portal site), even when
    // claiming to be someone.
    let login = format!("{portal}/_stepgate/login?t=");
    let r = c
        .get(format!("{app}/hello?x=1"))
        .header("remote-user", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", proxy.log());
    assert!(header(&r, "location").starts_with(&login), "{r:?}");
    // An API gets 401 with a challenge instead.
    let r = c
        .get(format!("{app}/hello"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), "Bearer");
    for path in internal {
        let r = c.get(format!("{app}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} is the proxy's own");
    }
    // Nor can a client reach the decision endpoint through the portal's site.
    let mut ask = c.get(format!("{portal}/_stepgate/auth/forward"));
    for (name, value) in portal_ask {
        ask = ask.header(*name, value);
    }
    assert_eq!(ask.send().await.unwrap().status(), 404);

    // Sign in through the portal behind the proxy: password, then TOTP; back at the app.
    let r = follow.get(format!("{app}/hello?x=1")).send().await.unwrap();
    assert!(r.url().as_str().starts_with(&login), "{}", r.url());
    let r = sign_in(&follow, r.url().as_str(), &FIONA, &FIONA.code(0)).await;
    assert_eq!(r.url().as_str(), format!("{app}/hello?x=1"));
    let seen: BTreeMap<String, String> = r.json().await.unwrap();
    assert_eq!(seen["path"], "/hello?x=1");
    assert_eq!(seen["remote-user"], USER);
    assert_eq!(seen["remote-groups"], "staff,ops");
    assert_eq!(seen["remote-email"], "fiona@example.test");
    assert_eq!(seen["remote-name"], "Fiona Forward");
    assert_eq!(seen["remote-aal"], "2");
    assert!(seen["remote-amr"].contains("otp"), "{seen:?}");
    assert!(seen["remote-auth-time"].parse::<i64>().is_ok());

    // Spoofed identity headers are replaced or removed, never passed on.
    let r = c
        .get(format!("{app}/hello"))
        .header("remote-user", "mallory")
        .header("remote-groups", "admins")
        .header("x-stepgate-assertion", "forged")
        .header("x-forwarded-user", "mallory")
        .header("x-forwarded-email", "mallory@example.test")
        .header("x-forwarded-groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: BTreeMap<String, String> = r.json().await.unwrap();
    assert_eq!(seen["remote-user"], USER, "{seen:?}");
    assert_eq!(seen["remote-groups"], "staff,ops");
    // The assertion is stepgate's signed JWT (header.payload.signature), not the forgery.
    let assertion = &seen["x-stepgate-assertion"];
    assert!(
        assertion != "forged" && assertion.split('.').count() == 3,
        "{seen:?}"
    );
    for name in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
    ] {
        assert!(!seen.contains_key(name), "{name} reached the app: {seen:?}");
    }

    // A sensitive route: step-up redirect for browsers, RFC 9470 for APIs.
    let_every_time_window_pass().await;
    let step_up_url = format!("{portal}/_stepgate/step-up?t=");
    let r = c.get(format!("{app}/admin")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&step_up_url), "{r:?}");
    let r = c
        .get(format!("{app}/admin"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        header(&r, "www-authenticate").contains("error=\"insufficient_user_authentication\""),
        "{r:?}"
    );
    // Stepping up returns to the page, which now reaches the app.
    let page = Page::open(&follow, &format!("{app}/admin")).await;
    let r = page.submit_code(&follow, &FIONA.code(1)).await;
    assert_eq!(r.url().as_str(), format!("{app}/admin"));
    let seen: BTreeMap<String, String> = r.json().await.unwrap();
    assert_eq!(seen["path"], "/admin");
    assert_eq!(seen["remote-user"], USER);

    // A denied route: the blocked page.
    let r = c.get(format!("{app}/closed")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&format!("{portal}/_stepgate/blocked?t=")));
}
