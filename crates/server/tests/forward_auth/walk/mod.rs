//! The walk every real front proxy in front of stepgate takes (nginx, Caddy, Traefik and
//! Envoy, each run from its example in `examples/<proxy>/` with only addresses substituted):
//!
//! 1. an anonymous browser is sent to the portal's sign-in page; an anonymous API gets `401`
//!    with exactly one `WWW-Authenticate`;
//! 2. identity headers a client sends, in every spelling that folds (letter case, `_` for
//!    `-`) to one of stepgate's, never reach the app: anonymous, the request goes nowhere;
//!    signed in, the app sees only stepgate's values, and no other spelling at all;
//! 3. after a sign-in through the proxy, the app sees stepgate's identity headers;
//! 4. the decision endpoints cannot be asked through the portal;
//! 5. a sensitive route asks for a step-up: `302` to the step-up page for a browser, the
//!    RFC 9470 challenge (exactly one `WWW-Authenticate`) for an API;
//! 6. a target stepgate cannot read exactly as an upstream would (raw bytes outside ASCII,
//!    `;` path parameters, a backslash, an encoded `/`, a letter that a case-insensitive app
//!    may fold into ASCII) never reaches the app: stepgate refuses it with `403`, or the
//!    proxy with `400`. A proxy that rewrites such a target before asking stepgate and sends
//!    the rewritten one on (Go re-encodes raw bytes and backslashes; Traefik removes dot
//!    segments) passes when the client got what stepgate answers about the rewritten target,
//!    and the app, if reached, received exactly that target; each proxy's test lists those
//!    rewrites and its example's README records them.
//!
//! The app is a [`RecordingUpstream`]: it records each request's target and headers as they
//! came over the wire (underscore names and raw bytes included). Requests whose header
//! spelling or target bytes matter are written over a raw connection, since an HTTP client
//! library would normalise them. Every step runs; the test fails at the end listing each
//! step that did not hold.
//!
//! The walk itself is here; the app it records is in `recording`, the client side of the
//! proxy in `front`.

#![allow(dead_code)]

mod front;
mod recording;

pub use front::{Front, Rewrites};
use recording::SPOOFED;
pub use recording::{fold, spoofed_headers, RecordingUpstream, Seen, IDENTITY_HEADERS};

use std::path::Path;
use std::sync::Arc;

use reqwest::cookie::Jar;

use crate::harness::{
    free_port, let_every_time_window_pass, start_case_insensitive, Harness, ProxyProcess, APP_HOST,
    FIONA, PORTAL_HOST, USER,
};
use crate::support::{header, sign_in, Browser};

/// Targets stepgate cannot read exactly as an upstream would: (what it is, the raw target).
pub const ODD_TARGETS: [(&str, &[u8]); 7] = [
    ("raw UTF-8 in the path", b"/admin\xc3\xa9"),
    ("raw UTF-8 in the query", b"/hello?q=\xc3\xa9"),
    ("a path parameter", b"/admin;x=1"),
    ("a path parameter before a dot segment", b"/x;/../admin"),
    ("backslashes", b"/x\\..\\admin"),
    ("an encoded slash", b"/x/..%2fadmin"),
    (
        "a letter that folds into ASCII (case-insensitive app)",
        b"/adm%C4%B0n",
    ),
];

/// The walk's record: each step's outcome, printed as it goes; failures collected.
struct Walk<'a> {
    front: &'a Front<'a>,
    failed: Vec<String>,
}

impl Walk<'_> {
    fn check(&mut self, step: &str, ok: bool, detail: impl std::fmt::Display) {
        let name = self.front.proxy.name;
        if ok {
            eprintln!("walk[{name}] ok    {step}");
        } else {
            eprintln!("walk[{name}] FAIL  {step}: {detail}");
            self.failed.push(format!("{step}: {detail}"));
        }
    }

    fn note(&self, what: impl std::fmt::Display) {
        eprintln!("walk[{}] note  {what}", self.front.proxy.name);
    }
}

/// Whether an identity header's value is the one stepgate asserts for the test user.
type ValueCheck = fn(&str) -> bool;

/// The problems with the identity headers the app saw on a signed-in request: a spelling
/// other than stepgate's, a value the client chose, or a value other than stepgate's.
fn identity_problems(seen: &Seen) -> Vec<String> {
    let spoofed: Vec<&str> = SPOOFED.iter().map(|(_, v)| *v).collect();
    let mut problems = Vec::new();
    for (name, value) in &seen.headers {
        let folded = fold(name);
        if !IDENTITY_HEADERS.contains(&folded.as_str()) {
            continue;
        }
        if name.to_ascii_lowercase() != folded {
            problems.push(format!("the app received `{name}: {value}`"));
        }
        if spoofed.contains(&value.as_str()) {
            problems.push(format!("the app received the client's `{name}: {value}`"));
        }
    }
    let expect: [(&str, ValueCheck); 8] = [
        ("remote-user", |v| v == USER),
        ("remote-groups", |v| v == "staff,ops"),
        ("remote-email", |v| v == "fiona@example.test"),
        ("remote-name", |v| v == "Fiona Forward"),
        ("remote-aal", |v| v == "2"),
        ("remote-amr", |v| v.contains("otp")),
        ("remote-auth-time", |v| v.parse::<i64>().is_ok()),
        // stepgate's signed JWT: header.payload.signature
        ("x-stepgate-assertion", |v| v.split('.').count() == 3),
    ];
    for (name, ok) in expect {
        match seen.values(name).as_slice() {
            [v] if ok(v) => {}
            other => problems.push(format!("{name} reached the app as {other:?}")),
        }
    }
    for name in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
    ] {
        if seen.values(name).iter().any(|v| !v.is_empty()) {
            problems.push(format!("{name} reached the app: {:?}", seen.values(name)));
        }
    }
    problems
}

fn challenges(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// A location without its query (the `t=` token differs on every answer).
fn location_path(location: &str) -> &str {
    location.split('?').next().unwrap_or("")
}

/// What stepgate answers, asked directly at `/auth/forward` as the proxy would ask, about
/// `target` on the app: (status, location without its query).
async fn ask_stepgate(h: &Harness, front: &Front<'_>, target: &str, cookie: &str) -> (u16, String) {
    let c = Browser::not_following();
    let mut req = c
        .get(format!(
            "http://{PORTAL_HOST}:{}/_stepgate/auth/forward",
            h.addr.port()
        ))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", front.scheme())
        .header("x-forwarded-host", format!("{APP_HOST}:{}", front.port))
        .header("x-forwarded-uri", target);
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    let r = req.send().await.unwrap();
    (
        r.status().as_u16(),
        location_path(&header(&r, "location")).to_string(),
    )
}

/// Sets the walk up and walks it: stepgate (with [`start_case_insensitive`], its portal at
/// the proxy's address, over HTTPS when `tls`), a [`RecordingUpstream`] for the app, and
/// the proxy that `start(dir, port, stepgate_port, app_port)` starts on `port`, its files
/// in `dir`.
pub async fn walk_behind(
    tls: bool,
    rewrites: Rewrites,
    start: impl AsyncFnOnce(&Path, u16, u16, u16) -> ProxyProcess,
) {
    let port = free_port();
    let scheme = if tls { "https" } else { "http" };
    let h = start_case_insensitive(move |_| format!("{scheme}://{PORTAL_HOST}:{port}")).await;
    let up = RecordingUpstream::start().await;
    let proxy = start(h.dir.path(), port, h.addr.port(), up.addr.port()).await;
    let front = Front {
        proxy: &proxy,
        tls,
        port,
        rewrites,
    };
    walk(&h, &up, &front).await;
}

/// Walks `front` (configured to send the app's requests to `up`) in front of `h`, which was
/// started with [`start_case_insensitive`] and the proxy's portal address as its public URL.
pub async fn walk(h: &Harness, up: &RecordingUpstream, front: &Front<'_>) {
    let mut w = Walk {
        front,
        failed: Vec::new(),
    };
    let app = front.origin(APP_HOST);
    let portal = h.public_url.clone();
    let login = format!("{portal}/_stepgate/login");
    let jar = Arc::new(Jar::default());
    let c = front.client(&jar, false);
    let follow = front.client(&jar, true);
    let anon = front.client(&Arc::new(Jar::default()), false);
    let spoofed = spoofed_headers();

    // 1. Anonymous: a browser goes to sign in, an API gets one challenge.
    let n = up.count();
    let r = anon.get(format!("{app}/hello?x=1")).send().await.unwrap();
    let location = header(&r, "location");
    w.check(
        "anonymous browser → 302 to the portal's sign-in page",
        r.status() == 302 && location_path(&location) == login && up.count() == n,
        format_args!("{} location={location:?}", r.status()),
    );
    let r = anon
        .get(format!("{app}/hello"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let ch = challenges(&r);
    w.check(
        "anonymous API → 401 with one WWW-Authenticate",
        r.status() == 401 && ch.len() == 1 && ch[0].starts_with("Bearer") && up.count() == n,
        format_args!("{} WWW-Authenticate={ch:?}", r.status()),
    );

    // 2a. Anonymous, claiming to be someone in every spelling: the request goes nowhere.
    // stepgate refuses (403) an identity header under another spelling, so a 403 here
    // means the proxy passed one on.
    let r = front.raw(APP_HOST, b"/hello", &spoofed).await;
    w.check(
        "anonymous with spoofed identity headers (every spelling) → not passed on",
        matches!(r.status, 302 | 400) && up.count() == n,
        format_args!(
            "{} (reached the app: {}; 403 = stepgate saw a spelling the proxy should have dropped)",
            r.status,
            up.count() > n
        ),
    );

    // 3. Sign in through the portal behind the proxy; back at the app with stepgate's
    // identity.
    let r = follow.get(format!("{app}/hello?x=1")).send().await.unwrap();
    assert!(
        r.url().as_str().starts_with(&login),
        "{}: not sent to sign in: {}\n{}",
        front.proxy.name,
        r.url(),
        front.proxy.log()
    );
    let n = up.count();
    let r = sign_in(&follow, r.url().as_str(), &FIONA, &FIONA.code(0)).await;
    let back = r.url().as_str() == format!("{app}/hello?x=1") && r.status() == 200;
    let seen = up.since(n);
    let problems = seen.last().map(identity_problems);
    w.check(
        "signed in → stepgate's identity headers reach the app",
        back && seen.len() == 1
            && seen[0].target == b"/hello?x=1"
            && problems.as_ref().is_some_and(Vec::is_empty),
        format_args!(
            "ended at {} ({}); app saw {seen:?}; {problems:?}",
            r.url(),
            r.status()
        ),
    );
    let cookie = c.cookies(&app);
    assert!(
        !cookie.is_empty(),
        "{}: no session cookie for {app}",
        front.proxy.name
    );

    // 2b. Signed in, claiming to be someone else in every spelling: the app sees only
    // stepgate's values (or the proxy refuses the request itself).
    let mut with_cookie = spoofed.clone();
    with_cookie.push(("Cookie".into(), cookie.clone()));
    let n = up.count();
    let r = front.raw(APP_HOST, b"/hello", &with_cookie).await;
    let seen = up.since(n);
    let problems: Vec<String> = seen.iter().flat_map(identity_problems).collect();
    w.check(
        "signed in with spoofed identity headers (every spelling, HTTP/1.1) → only stepgate's reach the app",
        (r.status == 200 && seen.len() == 1 && problems.is_empty())
            || (r.status == 400 && seen.is_empty()),
        format_args!("{} (403 = stepgate saw a spelling the proxy should have dropped); {problems:?}", r.status),
    );
    // The same through an HTTP client (HTTP/2 where the proxy offers it over TLS): names in
    // lower case, with underscores.
    let mut req = c.get(format!("{app}/hello"));
    for (name, value) in SPOOFED {
        let name = name.to_ascii_lowercase();
        req = req
            .header(name.replace('-', "_"), value)
            .header(name, value);
    }
    let n = up.count();
    let r = req.send().await.unwrap();
    let (status, version) = (r.status(), r.version());
    let seen = up.since(n);
    let problems: Vec<String> = seen.iter().flat_map(identity_problems).collect();
    w.check(
        &format!(
            "signed in with spoofed identity headers ({version:?}) → only stepgate's reach the app"
        ),
        (status == 200 && seen.len() == 1 && problems.is_empty())
            || (status == 400 && seen.is_empty()),
        format_args!("{status}; {problems:?}"),
    );

    // Not asserted (stepgate folds letter case and `_` only): whether spellings with a `.`,
    // which PHP and CGI also read as `_`, reach the app.
    let dotted: Vec<(String, String)> = SPOOFED
        .iter()
        .map(|(n, v)| (n.replace('-', "."), v.to_string()))
        .chain([("Cookie".to_string(), cookie.clone())])
        .collect();
    let n = up.count();
    let r = front.raw(APP_HOST, b"/hello", &dotted).await;
    let through: Vec<String> = up
        .since(n)
        .iter()
        .flat_map(|s| s.headers.iter().filter(|(n, _)| n.contains('.')))
        .map(|(n, _)| n.clone())
        .collect();
    w.note(format_args!(
        "`.` spellings (Remote.User, ...): {}; reached the app: {through:?}",
        r.status
    ));

    // 4. The decision endpoints answer the proxy, never a client coming through the portal.
    let app_authority = format!("{APP_HOST}:{}", front.port);
    let app_hello = format!("{app}/hello");
    let asks: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "/_stepgate/auth/forward",
            vec![
                ("x-forwarded-host", app_authority.as_str()),
                ("x-forwarded-uri", "/hello"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-proto", front.scheme()),
            ],
        ),
        (
            "/_stepgate/auth/nginx",
            vec![
                ("x-original-url", app_hello.as_str()),
                ("x-original-method", "GET"),
            ],
        ),
        ("/_stepgate/auth/envoy/hello", vec![]),
    ];
    for (path, headers) in asks {
        let mut req = c.get(format!("{portal}{path}"));
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let r = req.send().await.unwrap();
        w.check(
            &format!("{path} through the portal → refused"),
            matches!(r.status().as_u16(), 403 | 404) && header(&r, "remote-user").is_empty(),
            format_args!("{} remote-user={:?}", r.status(), header(&r, "remote-user")),
        );
    }

    // 5. A sensitive route once the sign-in's code has aged: step-up.
    let_every_time_window_pass().await;
    let n = up.count();
    let r = c.get(format!("{app}/admin")).send().await.unwrap();
    let location = header(&r, "location");
    w.check(
        "sensitive route, browser → 302 to the step-up page",
        r.status() == 302
            && location_path(&location) == format!("{portal}/_stepgate/step-up")
            && up.count() == n,
        format_args!("{} location={location:?}", r.status()),
    );
    let r = c
        .get(format!("{app}/admin"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let ch = challenges(&r);
    w.check(
        "sensitive route, API → 401 with one RFC 9470 challenge",
        r.status() == 401
            && ch.len() == 1
            && ch[0].starts_with("Bearer")
            && ch[0].contains("error=\"insufficient_user_authentication\"")
            && up.count() == n,
        format_args!("{} WWW-Authenticate={ch:?}", r.status()),
    );

    // 6. Targets stepgate cannot read as the app will: never passed on.
    for (what, target) in ODD_TARGETS {
        let shown = String::from_utf8_lossy(target).into_owned();
        for (who, cookie) in [("anonymous", ""), ("signed in", cookie.as_str())] {
            let headers: Vec<(String, String)> = if cookie.is_empty() {
                vec![]
            } else {
                vec![("Cookie".into(), cookie.to_string())]
            };
            let n = up.count();
            let r = front.raw(APP_HOST, target, &headers).await;
            let seen = up.since(n);
            let location = r
                .values("location")
                .first()
                .map(|l| location_path(l).to_string());
            let step = format!("{what} `{}` ({who})", target.escape_ascii());
            match front.rewrites.iter().find(|(t, _)| t == &target) {
                Some((_, rewritten)) => {
                    let (status, expected_location) =
                        ask_stepgate(h, front, rewritten, cookie).await;
                    let reached_ok = if status == 200 {
                        seen.len() == 1 && seen[0].target == rewritten.as_bytes()
                    } else {
                        seen.is_empty()
                    };
                    let same_location = status / 100 != 3
                        || location.as_deref() == Some(expected_location.as_str());
                    w.check(
                        &format!("{step} → rewritten to `{rewritten}`, decided and sent on as that"),
                        r.status == status && same_location && reached_ok,
                        format_args!(
                            "the client got {} ({location:?}); stepgate answers {status} ({expected_location:?}) about `{rewritten}`; the app received {:?}",
                            r.status,
                            seen.iter().map(Seen::target).collect::<Vec<_>>()
                        ),
                    );
                    w.note(format_args!(
                        "{} rewrites `{shown}` to `{rewritten}` before asking stepgate ({who}: {status})",
                        front.proxy.name
                    ));
                }
                None => {
                    w.check(
                        &format!(
                            "{step} → refused (403 stepgate / 400 proxy), never reaches the app"
                        ),
                        matches!(r.status, 400 | 403) && seen.is_empty(),
                        format_args!(
                            "{} ({location:?}); the app received {:?}",
                            r.status,
                            seen.iter().map(Seen::target).collect::<Vec<_>>()
                        ),
                    );
                    w.note(format_args!("`{shown}` ({who}): {}", r.status));
                }
            }
        }
    }

    if !w.failed.is_empty() {
        panic!(
            "{}: {} step(s) of the walk failed:\n  - {}\n\n{} log:\n{}",
            front.proxy.name,
            w.failed.len(),
            w.failed.join("\n  - "),
            front.proxy.name,
            tail(&front.proxy.log(), 60)
        );
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
