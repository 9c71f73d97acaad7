//! The forward-auth endpoints over real HTTP, asked the way nginx, Traefik/Caddy and Envoy
//! ask: anonymous, signed in, sensitive route, denied route, browsers and APIs, and peers
//! that are not trusted proxies.

#[path = "forward_auth/harness.rs"]
mod harness;
mod support;

use harness::*;
use support::{client, header, redirects, sign_in, Browser, Page};

/// Stepgate alone; the "front proxy" is this test, from 127.0.0.1 (a trusted proxy).
async fn direct() -> (Harness, String) {
    let h = start(|port| format!("http://{PORTAL_HOST}:{port}")).await;
    let app = format!("{APP_HOST}:{}", h.addr.port());
    (h, app)
}

/// Asks `/auth/forward` (Traefik / Caddy) about `method path` on the app (as a browser
/// unless the caller adds `Accept: application/json` or a bearer token).
fn forward(
    c: &reqwest::Client,
    h: &Harness,
    app: &str,
    method: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    c.get(format!(
        "http://{PORTAL_HOST}:{}/_stepgate/auth/forward",
        h.addr.port()
    ))
    .header("x-forwarded-method", method)
    .header("x-forwarded-proto", "http")
    .header("x-forwarded-host", app)
    .header("x-forwarded-uri", path)
}

/// Asks `/auth/nginx` (nginx `auth_request`).
fn nginx(
    c: &reqwest::Client,
    h: &Harness,
    app: &str,
    method: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    c.get(format!(
        "http://{PORTAL_HOST}:{}/_stepgate/auth/nginx",
        h.addr.port()
    ))
    .header("x-original-method", method)
    .header("x-original-url", format!("http://{app}{path}"))
}

/// Asks `/auth/envoy/…` (Envoy `ext_authz`): the original method, host and path.
fn envoy(
    c: &reqwest::Client,
    h: &Harness,
    app: &str,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    c.request(
        method,
        format!(
            "http://{PORTAL_HOST}:{}/_stepgate/auth/envoy{path}",
            h.addr.port()
        ),
    )
    .header("host", app)
    .header("accept", "text/html")
}

#[tokio::test]
async fn a_case_insensitive_app_refuses_letters_an_upstream_may_fold_into_ascii() {
    let (h, _) = direct().await;
    let c = Browser::not_following();
    let app = format!("legacy.example.test:{}", h.addr.port());
    // Decided as usual: an anonymous browser is sent to sign in.
    let r = forward(&c, &h, &app, "GET", "/ADMIN").send().await.unwrap();
    assert_eq!(r.status(), 302);
    // `İ` lowercases to `i`: /admİn is /admin to an upstream that folds Unicode case.
    for path in ["/adm%C4%B0n", "/%C5%BFecret"] {
        let r = forward(&c, &h, &app, "GET", path).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = nginx(&c, &h, &app, "GET", path).send().await.unwrap();
        assert_eq!(r.status(), 403, "nginx {path}");
        assert!(
            r.text().await.unwrap().contains("case-insensitive"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn anonymous_requests_are_sent_to_the_portal_or_challenged() {
    let (h, app) = direct().await;
    let c = Browser::not_following();
    let login = format!("{}/_stepgate/login?t=", h.public_url);

    let r = forward(&c, &h, &app, "GET", "/hello?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&login), "{r:?}");
    assert_eq!(header(&r, "cache-control"), "no-store");

    let r = forward(&c, &h, &app, "GET", "/hello")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an API gets a challenge, not a redirect");
    assert_eq!(header(&r, "www-authenticate"), "Bearer");
    assert_eq!(header(&r, "location"), "");

    let r = nginx(&c, &h, &app, "GET", "/hello").send().await.unwrap();
    assert_eq!(r.status(), 401, "nginx gets 401 and redirects itself");
    assert!(header(&r, "x-stepgate-redirect").starts_with(&login));
    let r = nginx(&c, &h, &app, "GET", "/hello")
        .header("authorization", "Bearer abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "x-stepgate-redirect"),
        "",
        "no redirect for APIs"
    );

    let r = envoy(&c, &h, &app, reqwest::Method::POST, "/hello?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&login));

    // The return target is the original URL: following the sign-in link comes back there.
    let c = c.tab(true);
    let r = forward(&c, &h, &app, "GET", "/hello?x=1")
        .send()
        .await
        .unwrap();
    let final_page = sign_in(&c, r.url().as_str(), &FIONA, &FIONA.code(0)).await;
    assert_eq!(
        final_page.url().as_str(),
        format!("http://{app}/hello?x=1"),
        "back where the user was going"
    );
}

#[tokio::test]
async fn a_signed_in_user_is_allowed_with_identity_headers_and_stepped_up_on_sensitive_routes() {
    let (h, app) = direct().await;
    let follow = Browser::new();
    let r = forward(&follow, &h, &app, "GET", "/hello")
        .send()
        .await
        .unwrap();
    let r = sign_in(&follow, r.url().as_str(), &FIONA, &FIONA.code(0)).await;
    assert_eq!(r.status(), 200);
    let c = follow.tab(false);

    let check_identity = |r: &reqwest::Response, what: &str| {
        assert_eq!(r.status(), 200, "{what}: {r:?}");
        assert_eq!(header(r, "remote-user"), USER, "{what}");
        assert_eq!(header(r, "remote-groups"), "staff,ops", "{what}");
        assert_eq!(header(r, "remote-email"), "fiona@example.test", "{what}");
        assert_eq!(header(r, "remote-name"), "Fiona Forward", "{what}");
        assert_eq!(header(r, "remote-aal"), "2", "{what}");
        let amr = header(r, "remote-amr");
        assert!(
            amr.contains("pwd") && amr.contains("otp"),
            "{what}: amr {amr}"
        );
        assert!(
            header(r, "remote-auth-time").parse::<i64>().is_ok(),
            "{what}"
        );
        assert_eq!(
            header(r, "x-stepgate-assertion").split('.').count(),
            3,
            "{what}: the signed assertion"
        );
        // The kept answer (built once per session state) carries the security headers
        // and each answer its own request id.
        assert_eq!(header(r, "cache-control"), "no-store", "{what}");
        assert_eq!(header(r, "x-frame-options"), "DENY", "{what}");
        assert_eq!(header(r, "x-content-type-options"), "nosniff", "{what}");
        assert!(
            header(r, "content-security-policy").starts_with("default-src 'none'"),
            "{what}"
        );
        let id = header(r, "x-request-id");
        assert!(
            id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{what}: request id {id:?}"
        );
        assert_eq!(
            r.headers().get_all("x-request-id").iter().count(),
            1,
            "{what}"
        );
        // The kept answer's length (no body), once: not added again on the way out.
        let lengths: Vec<_> = r.headers().get_all("content-length").iter().collect();
        assert_eq!(lengths, ["0"], "{what}");
        id
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = forward(&c, &h, &app, "GET", "/hello").send().await.unwrap();
        ids.push(check_identity(&r, "forward"));
        let r = nginx(&c, &h, &app, "GET", "/hello").send().await.unwrap();
        ids.push(check_identity(&r, "nginx"));
        let r = envoy(&c, &h, &app, reqwest::Method::GET, "/hello")
            .send()
            .await
            .unwrap();
        ids.push(check_identity(&r, "envoy"));
    }
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "one id per answer: {ids:?}");

    // A sensitive route needs a fresh code: step up.
    let_every_time_window_pass().await;
    let step_up_url = format!("{}/_stepgate/step-up?t=", h.public_url);
    let r = forward(&c, &h, &app, "GET", "/admin").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&step_up_url), "{r:?}");
    assert_eq!(header(&r, "remote-user"), "", "no identity on a refusal");
    let r = nginx(&c, &h, &app, "POST", "/admin").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(header(&r, "x-stepgate-redirect").starts_with(&step_up_url));
    let r = envoy(&c, &h, &app, reqwest::Method::POST, "/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&step_up_url));
    // Another spelling of the sensitive route is the same route.
    for path in ["/%61dmin", "/x/../admin", "/./%61dmin/"] {
        let r = forward(&c, &h, &app, "GET", path).send().await.unwrap();
        assert_eq!(r.status(), 302, "{path}");
        assert!(header(&r, "location").starts_with(&step_up_url), "{path}");
        let r = nginx(&c, &h, &app, "GET", path).send().await.unwrap();
        assert_eq!(r.status(), 401, "nginx {path}");
        let r = envoy(&c, &h, &app, reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "envoy {path}");
    }
    // One whose meaning depends on the upstream is refused outright.
    for path in ["/x/..%2Fadmin", "/x/..;/admin"] {
        let r = forward(&c, &h, &app, "GET", path).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(header(&r, "remote-user"), "", "no identity on a refusal");
    }
    let r = forward(&c, &h, &app, "GET", "/admin")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "RFC 9470 for APIs");
    let challenge = header(&r, "www-authenticate");
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\"")
            && challenge.contains("acr_values=\"aal2\"")
            && challenge.contains("max_age=0"),
        "{challenge}"
    );

    // Stepping up through the portal returns to the sensitive page, now allowed.
    let r = follow
        .get(header(
            &forward(&c, &h, &app, "GET", "/admin").send().await.unwrap(),
            "location",
        ))
        .send()
        .await
        .unwrap();
    let page = Page::read(r).await;
    assert!(page.html.contains("The admin area needs a fresh code."));
    let r = page.submit_code(&follow, &FIONA.code(1)).await;
    assert_eq!(r.url().as_str(), format!("http://{app}/admin"));

    // A denied route: the blocked page for browsers, 403 for APIs and nginx.
    let blocked = format!("{}/_stepgate/blocked?t=", h.public_url);
    let r = forward(&c, &h, &app, "GET", "/closed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(header(&r, "location").starts_with(&blocked));
    let r = nginx(&c, &h, &app, "GET", "/closed").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(header(&r, "x-stepgate-redirect").starts_with(&blocked));
    let r = forward(&c, &h, &app, "GET", "/closed")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Closed for maintenance."));

    // A host with no app is refused, even with a valid session.
    let r = forward(&c, &h, "elsewhere.example.test", "GET", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn peers_that_are_not_trusted_proxies_cannot_steer_the_decision() {
    let (h, app) = direct().await;
    // Same machine, but from 127.0.0.2, which is not in server.trusted_proxies.
    let outsider = client()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .redirect(redirects(false))
        .build()
        .unwrap();
    let trusted = Browser::not_following();
    for (c, want) in [(&outsider, 403), (&*trusted, 302)] {
        let r = forward(c, &h, &app, "GET", "/").send().await.unwrap();
        assert_eq!(r.status(), want, "forward");
        let r = envoy(c, &h, &app, reqwest::Method::GET, "/")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "envoy");
    }
    let r = nginx(&outsider, &h, &app, "GET", "/").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert!(r.text().await.unwrap().contains("trusted_proxies"));
}

#[tokio::test]
async fn malformed_forwarding_headers_are_rejected() {
    let (h, app) = direct().await;
    let c = Browser::not_following();
    let base = format!("http://{PORTAL_HOST}:{}/_stepgate/auth", h.addr.port());
    // Refused with 403, which every front proxy passes on (nginx turns a 400 into a 500).
    let r = c.get(format!("{base}/forward")).send().await.unwrap();
    assert_eq!(r.status(), 403, "no X-Forwarded-* at all");
    let r = c.get(format!("{base}/nginx")).send().await.unwrap();
    assert_eq!(r.status(), 403, "no X-Original-URL");
    let r = c
        .get(format!("{base}/nginx"))
        .header("x-original-url", "/relative")
        .header("x-original-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = forward(&c, &h, "evil.test/@app.example.test", "GET", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = forward(&c, &h, &app, "GET", "/a;b").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Every refusal, like every answer, is never cached.
    assert_eq!(header(&r, "cache-control"), "no-store");
    let r = forward(&c, &h, "unknown.example.test", "GET", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a host no application is configured for");
    assert_eq!(header(&r, "cache-control"), "no-store");
}
