//! Requests that try to be read two ways: forwarding headers from an untrusted peer,
//! other spellings of a route's path, letters a case-insensitive app folds, more than one
//! host, and stepgate's cookies between client and upstream.

use crate::common::*;
use crate::support::{raw, raw_get, Browser};

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let h = start().await;
    let c = plain();
    let seen: serde_json::Value = c
        .get(h.url("api.test", "/data"))
        .bearer_auth(h.idp.token(|_| {}))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let host = format!("api.test:{}", h.addr.port());
    assert_eq!(seen["xff"], "127.0.0.1");
    assert_eq!(seen["real_ip"], "127.0.0.1");
    assert_eq!(seen["proto"], "http");
    assert_eq!(seen["host"], host.as_str());
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;host=\"{host}\";proto=http").as_str()
    );
}

/// Sends `GET <target>` as written (no client-side URL clean-up), with a fresh token of
/// the issuer's; the status and the body.
async fn raw_bearer(h: &Harness, host: &str, target: &str) -> (u16, String) {
    let token = h.idp.token(|_| {});
    let a = raw_get(
        h.addr,
        host,
        target.as_bytes(),
        &format!("Authorization: Bearer {token}\r\nAccept: application/json\r\n"),
    )
    .await;
    (a.status, a.body)
}

#[tokio::test]
async fn a_route_cannot_be_dodged_by_spelling_its_path_differently() {
    let h = start().await;
    let hits = h.hits();
    // Each of these is /admin to a typical upstream: each gets the admin route's step-up.
    for target in [
        "/admin",
        "/%61dmin",
        "/%61%64%6D%69%6E/",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/x/%2E%2E/admin",
        "/data/..%2Fadmin",
        "/admin%2F",
        "/data/..;/admin",
        "/data\\..\\admin",
    ] {
        let (status, body) = raw_bearer(&h, "api.test", target).await;
        assert!(status == 401 || status == 400, "{target}: {status} {body}");
    }
    assert_eq!(h.hits(), hits, "none reached the upstream");
    // An equivalent spelling that is allowed reaches the upstream as the path decided on.
    let (status, body) = raw_bearer(&h, "api.test", "/x/../%64ata?q=%2F..").await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/data?q=%2F..");
}

#[tokio::test]
async fn a_case_insensitive_app_refuses_letters_an_upstream_may_fold_into_its_routes() {
    let h = start().await;
    let hits = h.hits();
    // The app's paths are matched ignoring ASCII case: /ADMIN is the admin route.
    let (status, body) = raw_bearer(&h, "iis.test", "/ADMIN").await;
    assert_eq!(status, 401, "{body}");
    // `İ` (U+0130) lowercases to `i`, `ſ` (U+017F) uppercases to `S`: an upstream that
    // folds Unicode case serves these as /admin and /secret. Routes fold ASCII only, so
    // they are refused rather than let past the admin route.
    for target in [
        "/adm%C4%B0n",
        "/ADM%C4%B0N/users",
        "/%C5%BFecret",
        "/x/../adm%c4%b0n",
    ] {
        let (status, body) = raw_bearer(&h, "iis.test", target).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.contains("case-insensitive"), "{target}: {body}");
    }
    assert_eq!(h.hits(), hits, "none reached the upstream");
    // Other letters, and the same path at an app whose paths are case-sensitive (where
    // /admİn is not /admin to the upstream either), are decided as usual.
    let (status, body) = raw_bearer(&h, "iis.test", "/caf%C3%A9").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw_bearer(&h, "api.test", "/adm%C4%B0n").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_request_names_one_host_or_is_refused() {
    let h = start().await;
    let t = h.idp.token(|_| {});
    let hits = h.hits();
    let send = async |head: &str| {
        let a = raw(
            h.addr,
            format!("{head}\r\nAuthorization: Bearer {t}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        (a.status, a.body)
    };
    // Decided for one app, the second Host would pick another at a virtual-hosting upstream.
    let (status, body) = send("GET /data HTTP/1.1\r\nHost: api.test\r\nHost: app.test").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Host"), "{body}");
    // An absolute target naming another host than Host (RFC 9112 3.2.2).
    let (status, body) = send("GET http://app.test/data HTTP/1.1\r\nHost: api.test").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(h.hits(), hits, "none reached the upstream");
    // The same host twice over (absolute target and Host) is one host.
    let (status, body) = send("GET http://api.test/data HTTP/1.1\r\nHost: API.test").await;
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["host_header"], "API.test");
}

#[tokio::test]
async fn stepgates_cookies_never_pass_between_client_and_upstream() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let app = reqwest::Url::parse(&h.url("app.test", "/")).unwrap();
    c.jar.add_cookie_str("theme=dark; Path=/", &app);
    let seen = echo(&c, &h.url("app.test", "/whoami")).await;
    assert_eq!(seen["user"], "jane", "signed in by the session cookie");
    let cookie = seen["cookie"].as_str().unwrap();
    assert!(
        cookie.contains("theme=dark"),
        "the app's own cookie passes: {cookie}"
    );
    assert!(
        !cookie.contains("stepgate"),
        "the session id stays with stepgate: {cookie}"
    );
    // An upstream cannot plant (or clear) the user's stepgate session.
    let r = c
        .get(h.url("app.test", "/set-cookies"))
        .send()
        .await
        .unwrap();
    let set: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(set, ["app_pref=compact; Path=/"], "{r:?}");
    let seen = echo(&c, &h.url("app.test", "/whoami")).await;
    assert_eq!(seen["user"], "jane", "still the same session");
}

/// The proxy reads a request's one `Cookie` line once, to decide and to know what to strip
/// (`lookup_many_sorting`): a line holding only the session cookie reaches the app as no
/// `Cookie` at all, and stepgate's cookies under other spellings beside the app's own go
/// while the app's stay, in order.
#[tokio::test]
async fn a_cookie_line_read_once_still_loses_every_spelling_of_stepgates_cookies() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let id = c.session_id(&h.url("app.test", "/")).expect("signed in");
    let session = format!("stepgate_session={id}");
    let plain = plain();
    let send = |line: String| {
        let r = plain
            .get(h.url("app.test", "/whoami"))
            .header("cookie", line)
            .send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let seen = send(session.clone()).await;
    assert_eq!(seen["user"], "jane");
    assert_eq!(
        seen["cookie"], "",
        "nothing but stepgate's cookie: no Cookie line"
    );
    let line = format!(
        "a=1; {session}; STEPGATE_SESSION=x; __Host-stepgate_session=y; \
         stepgate%5Fsession=z; Stepgate-Device=d; b=2"
    );
    let seen = send(line).await;
    assert_eq!(seen["user"], "jane");
    assert_eq!(
        seen["cookie"], "a=1; b=2",
        "only the app's cookies, in order"
    );
    // The one pass's own splitting: tabs and empty pieces around the session, a bare
    // `stepgate_session` (no `=`: no pair, yet stepgate's name), a value holding `=`, a
    // piece with no value at all.
    let seen = send(format!("\t;;a=1;\t{session}\t;stepgate_session;b=x=y; ;c")).await;
    assert_eq!(
        (&seen["user"], &seen["cookie"]),
        (&"jane".into(), &"a=1; b=x=y; c".into())
    );
    let seen = send(format!("\t{session};\tstepgate_session ;")).await;
    assert_eq!(
        (&seen["user"], &seen["cookie"]),
        (&"jane".into(), &"".into()),
        "only stepgate's names, however spaced: no Cookie line"
    );
    // Lines the one pass does not sort are read again by the strip: two lines become one
    // without stepgate's cookies, and a line with bytes outside ASCII goes whole.
    let two = plain
        .get(h.url("app.test", "/whoami"))
        .header("cookie", format!("a=1; {session}"))
        .header("cookie", "__Secure-Stepgate_Session=w; b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 200);
    let seen: serde_json::Value = two.json().await.unwrap();
    assert_eq!(
        (&seen["user"], &seen["cookie"]),
        (&"jane".into(), &"a=1; b=2".into())
    );
    let odd =
        reqwest::header::HeaderValue::from_bytes(format!("a=\u{e9}; {session}; b=2").as_bytes())
            .unwrap();
    let r = plain
        .get(h.url("app.test", "/whoami"))
        .header("cookie", odd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["user"], "jane", "the session's own piece still reads");
    assert_eq!(seen["cookie"], "", "a line that is not ASCII goes whole");
}
