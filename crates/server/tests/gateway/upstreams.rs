//! What passes to and from upstreams: a streamed 100 MB upload, 502/504 on upstream
//! failures, kept connections, the exact path and method, an app's own health and JWKS paths,
//! a broken store, and the gateway's own error pages.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::common::*;
use crate::support::{api_refusal, client, error_page, redirects, sign_in, Browser, JANE};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_100_mb_upload_streams_through_without_buffering() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1600; // 100 MiB
    let h = start().await;
    let c = plain();
    let last_sent: Arc<Mutex<Option<Instant>>> = Arc::default();
    let ls = last_sent.clone();
    let body = futures_util::stream::iter(0..CHUNKS).map(move |i| {
        if i == CHUNKS - 1 {
            *ls.lock().unwrap() = Some(Instant::now());
        }
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; CHUNK]))
    });
    let before = rss_kib();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let (p2, stop) = (
        peak.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let stop2 = stop.clone();
    let sampler = tokio::spawn(async move {
        while !stop2.load(Ordering::Relaxed) {
            p2.fetch_max(rss_kib(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let started = Instant::now();
    let r = c
        .post(h.url("api.test", "/upload"))
        .bearer_auth(h.idp.token(|_| {}))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        (CHUNK * CHUNKS).to_string(),
        "every byte arrived"
    );
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let first = h.seen.first_upload_chunk.lock().unwrap().unwrap();
    let last = last_sent.lock().unwrap().unwrap();
    assert!(
        first < last,
        "the upstream got its first bytes before the client had produced its last"
    );
    let growth_mib = peak.load(Ordering::Relaxed).saturating_sub(before) / 1024;
    eprintln!(
        "100 MiB upload through the proxy: {:.2} s, upstream first byte {} ms before the client's last chunk, peak RSS growth {growth_mib} MiB",
        elapsed.as_secs_f64(),
        (last - first).as_millis()
    );
    assert!(
        growth_mib < 64,
        "the proxy must not buffer the body (RSS grew {growth_mib} MiB)"
    );
}

#[tokio::test]
async fn upstream_failures_are_502_or_504_and_say_nothing_of_internals() {
    let h = start().await;
    let c = plain();
    let token = h.idp.token(|_| {});
    // Down: connection refused.
    let r = c
        .get(h.url("down.test", "/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("bad_gateway"), "{body}");
    for leak in ["127.0.0.1", "refused", "tcp", "hyper", "error trying"] {
        assert!(!body.to_lowercase().contains(leak), "{leak} in {body}");
    }
    // Browser: HTML.
    let r = c
        .get(h.url("down.test", "/"))
        .bearer_auth(&token)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // Too slow for the app's 1 s timeout.
    let started = Instant::now();
    let r = c
        .get(h.url("slow.test", "/slow"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(r.text().await.unwrap().contains("gateway_timeout"));
}

#[tokio::test]
async fn upstream_connections_are_kept_replaced_when_closed_and_never_queued() {
    let h = start().await;
    let c = plain();
    let token = h.idp.token(|_| {});
    let get = |path: &'static str| {
        let c = c.clone();
        let url = h.url("keep.test", path);
        let token = token.clone();
        async move {
            let r = c.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // One after another: one kept connection serves them all.
    for _ in 0..3 {
        assert_eq!(get("/").await, (200, "served /".to_string()));
    }
    assert_eq!(h.keep.accepted.load(Ordering::SeqCst), 1);

    // The upstream closes the kept connection without a word: the next request goes out on
    // a new one instead of failing.
    assert_eq!(get("/drop").await, (200, "served /drop".to_string()));
    tokio::time::timeout(Duration::from_secs(10), h.keep.drop_noticed.notified())
        .await
        .expect("stepgate never closed its end of the connection the upstream closed");
    assert_eq!(get("/").await, (200, "served /".to_string()));
    assert_eq!(h.keep.accepted.load(Ordering::SeqCst), 2);

    // A request never waits behind another one's unfinished response: /slow is answered
    // only after / is, so / must go out on a connection of its own.
    let slow = tokio::spawn(get("/slow"));
    h.keep.slow_arrived.notified().await;
    let fast = tokio::time::timeout(Duration::from_secs(10), get("/"))
        .await
        .expect("/ waited behind /slow");
    assert_eq!(fast, (200, "served /".to_string()));
    assert_eq!(slow.await.unwrap(), (200, "served /slow".to_string()));
    assert_eq!(h.keep.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_broken_store_refuses_with_503() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    assert_eq!(
        c.get(h.url("app.test", "/")).send().await.unwrap().status(),
        200
    );
    // Break the hot store under the running server: its session table disappears.
    let db = h.dir.path().join("data").join("stepgate.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&opts)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE hot_sessions RENAME TO hot_sessions_gone")
        .execute(&mut conn)
        .await
        .unwrap();
    // Another process broke it, so this node's read cache does not know: the session it
    // cached stays usable for at most `sessions.cache_ttl`, then the store is asked again.
    h.st.cache.advance_clock(h.st.cache.ttl());
    let hits = h.hits();
    let r = c.get(h.url("app.test", "/")).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "5");
    let body = error_page(r, 503, "Try again in a moment").await;
    assert!(!body.contains("hot_sessions"), "no internals: {body}");
    assert!(
        body.contains(&format!(
            "href=\"{}\" id=\"continue\">Try again</a>",
            h.url("app.test", "/")
        )),
        "{body}"
    );
    let j = api_refusal(c.get(h.url("app.test", "/")), 503).await;
    assert_eq!(j["error"], "temporarily_unavailable");
    assert_eq!(h.hits(), hits, "nothing let through");
}

#[tokio::test]
async fn an_app_keeps_its_own_healthz_readyz_and_jwks() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let before = h.hits();
    // On an app's host these paths are the app's: the upstream answers, with the identity.
    for path in ["/healthz", "/readyz", "/.well-known/jwks.json"] {
        let seen = echo(&c, &h.url("app.test", path)).await;
        assert_eq!(seen["user"], "jane", "{path} reached the app as jane");
    }
    let r = c.post(h.url("app.test", "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "any method goes to the app");
    assert_eq!(h.hits(), before + 4);
    // Anonymous, they are guarded like any other path of the app.
    let anon = client().redirect(redirects(false)).build().unwrap();
    let r = anon
        .get(h.url("app.test", "/.well-known/jwks.json"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/_stepgate/login"));
    // On stepgate's own host they are stepgate's.
    let r = anon
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = anon.get(format!("{}/readyz", h.base)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ready");
    let jwks: serde_json::Value = anon
        .get(format!("{}/.well-known/jwks.json", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    let r = anon
        .post(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert_eq!(h.hits(), before + 4, "none of these reached the app");
}

#[tokio::test]
async fn the_upstream_is_never_told_another_path_or_method() {
    let h = start().await;
    let c = plain();
    // Written out, not taken from stepgate's list: the headers with which Symfony, Laravel,
    // IIS, Express, ASP.NET and others let a request name another path or method, under
    // their own names and as CGI-style upstreams also read them.
    let rewrites = [
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-original-method", "DELETE"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x_original_url", "/admin"),
        ("x_http_method_override", "DELETE"),
    ];
    let mut req = c
        .post(h.url("echo.test", "/data"))
        .bearer_auth(h.idp.token(|_| {}))
        .header("x-app-note", "kept");
    for (name, value) in rewrites {
        req = req.header(name, value);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The echo upstream reports every header it received.
    let seen: serde_json::Map<String, serde_json::Value> = r.json().await.unwrap();
    let said = |name: &str| seen.get(name).and_then(|v| v.as_str());
    assert_eq!(said("path"), Some("/data"), "{seen:?}");
    assert_eq!(said("method"), Some("POST"), "{seen:?}");
    assert_eq!(
        said("x-app-note"),
        Some("kept"),
        "the app's own header passes: {seen:?}"
    );
    for (name, _) in rewrites {
        assert!(
            !seen.contains_key(name),
            "{name} reached the upstream: {seen:?}"
        );
    }
}

#[tokio::test]
async fn the_gateways_own_errors_are_portal_pages_with_a_way_on() {
    let h = start().await;
    let c = plain();
    let html = |req: reqwest::RequestBuilder| req.header("accept", "text/html").send();
    let account = format!(
        "href=\"http://127.0.0.1:{}/_stepgate/account\"",
        h.addr.port()
    );

    // A host stepgate does not serve: 421, a way to the account page on the public URL.
    let r = html(c.get(h.url("nowhere.test", "/x"))).await.unwrap();
    let body = error_page(r, 421, "Not served here").await;
    assert!(body.contains(&account), "{body}");
    // An API keeps its JSON.
    let j = api_refusal(c.get(h.url("nowhere.test", "/x")), 421).await;
    assert_eq!(j["error"], "invalid_request");

    // The portal's own host, where no app is: 404 in the portal's layout.
    let r = html(c.get(h.url("127.0.0.1", "/nothing-here")))
        .await
        .unwrap();
    let body = error_page(r, 404, "Page not found").await;
    assert!(body.contains(&account), "{body}");

    // An app that is down, for a signed-in browser: "Try again" repeats the GET, with the
    // account page beside it (the sign-in lands there).
    let b = Browser::new();
    let r = sign_in(
        &b,
        &h.url("down.test", "/reports?week=3"),
        &JANE,
        &JANE.code(0),
    )
    .await;
    let body = error_page(r, 502, "The application is not answering").await;
    assert!(
        body.contains(r#"<a class="button" href="/reports?week=3" id="continue">Try again</a>"#),
        "{body}"
    );
    assert!(body.contains(&account), "{body}");
    for leak in ["127.0.0.1:1", "refused", "hyper"] {
        assert!(!body.contains(leak), "{leak} in {body}");
    }
    // A form's POST is not repeated by a link: the app's start page instead.
    let r = html(b.post(h.url("down.test", "/reports"))).await.unwrap();
    let body = error_page(r, 502, "The application is not answering").await;
    assert!(
        body.contains(r#"href="/" id="continue">Go to the start page of down</a>"#),
        "{body}"
    );
    // An address odd enough to escape into the page is escaped, never markup.
    let r = html(b.get(h.url("down.test", "/a\"><b>x"))).await.unwrap();
    let body = error_page(r, 502, "The application is not answering").await;
    assert!(!body.contains("\"><b>"), "{body}");
    // An API client (a bearer token) keeps its JSON.
    let token = h.idp.token(|_| {});
    let r = c
        .get(h.url("down.test", "/"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "bad_gateway"
    );

    // Too slow: 504 with the same way on.
    let r = sign_in(&b, &h.url("slow.test", "/slow"), &JANE, &JANE.code(1)).await;
    let body = error_page(r, 504, "The application took too long").await;
    assert!(
        body.contains(r#"href="/slow" id="continue">Try again</a>"#),
        "{body}"
    );
}
