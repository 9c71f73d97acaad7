//! The demo's single sign-on, through the live server on the demo's own configuration
//! (examples/demo.yaml) with its two built-in apps: jane signs in on the Licence Console
//! (localhost) and then opens the Team Wiki on its own host (wiki.localhost) without
//! signing in again — the wiki has an upstream and answers with her identity. The session
//! cookie is host-only, as Chromium keeps the demo's cookies, so the wiki gets the session
//! by the hand-off (`sessions.hand_off`): single use, bound to the host and to the
//! browser's hand-off cookie, never a session id in a URL; signing out on either host ends
//! it on both.

mod support;

use stepgate_server::{demo, ServeOptions};
use support::{sign_in, Browser, Page, Server, JANE};

/// The demo on its own configuration, with its Licence Console and Team Wiki.
async fn demo_server() -> Server {
    demo_server_with(|yaml| yaml.to_string()).await
}

/// The same, on the demo's configuration as `edit` changes it.
async fn demo_server_with(edit: impl Fn(&str) -> String) -> Server {
    let console = demo::start_licence_console("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let wiki = demo::start_team_wiki("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Server::build(&edit(include_str!("../../../examples/demo.yaml")))
        .with("127.0.0.1:9001", console)
        .with("127.0.0.1:9002", wiki)
        .public_url(|port| format!("http://localhost:{port}"))
        .options(ServeOptions {
            demo: true,
            config_path: None,
        })
        .demo_users()
        .start()
        .await
}

/// The `Location` of `r`, which must be a redirect.
fn location(r: &reqwest::Response) -> String {
    assert!(r.status().is_redirection(), "{r:?}");
    r.headers()["location"].to_str().unwrap().to_string()
}

/// Jane, signed in on the Licence Console with the TOTP code `step` periods from now (a
/// code is good once); a tab of hers that follows no redirects.
async fn jane_signed_in(h: &Server, step: i64) -> (Browser, Browser) {
    let b = Browser::new();
    let r = sign_in(
        &b,
        &h.url("localhost", "/licences"),
        &JANE,
        &JANE.code(step),
    )
    .await;
    assert!(Page::read(r).await.html.contains("Licence Console"));
    let tab = b.tab(false);
    (b, tab)
}

/// A fresh hand-off for `tab` opening `host`: the wiki's redirect to the portal (setting
/// the hand-off cookie on `host`), and the portal's redirect back with a code; that URL
/// and the nonce.
async fn hand_off(h: &Server, tab: &Browser, host: &str) -> (String, String) {
    let to_portal = location(&tab.get(h.url(host, "/")).send().await.unwrap());
    assert!(
        to_portal.starts_with(&h.url("localhost", "/_stepgate/login?t="))
            && to_portal.contains("&n="),
        "{to_portal}"
    );
    let back = location(&tab.get(&to_portal).send().await.unwrap());
    assert!(
        back.starts_with(&h.url(host, "/_stepgate/handoff?code=")),
        "{back}"
    );
    let nonce = url::Url::parse(&to_portal)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "n")
        .unwrap()
        .1
        .to_string();
    (back, nonce)
}

/// A hand-off URL for `tab` opening `host`.
async fn hand_off_url(h: &Server, tab: &Browser, host: &str) -> String {
    hand_off(h, tab, host).await.0
}

#[tokio::test]
async fn a_session_signed_in_on_the_licence_console_opens_the_team_wiki() {
    let h = demo_server().await;
    let b = Browser::new();
    let r = sign_in(&b, &h.url("localhost", "/licences"), &JANE, &JANE.code(0)).await;
    let page = Page::read(r).await;
    assert!(page.html.contains("Licence Console"), "{}", page.html);

    let page = Page::open(&b, &h.url("wiki.localhost", "/")).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert_eq!(
        page.url.host_str(),
        Some("wiki.localhost"),
        "no sign-in page: {}",
        page.url
    );
    assert!(page.html.contains("<h1>Team Wiki</h1>"), "{}", page.html);
    assert!(
        page.html.contains("<strong id=remote-user>jane</strong>"),
        "{}",
        page.html
    );
    // The wiki has a cookie of its own, for the same session: ending it ends both.
    let console_session = b.session_id(&h.url("localhost", "/")).unwrap();
    assert_eq!(
        b.session_id(&h.url("wiki.localhost", "/")).as_deref(),
        Some(console_session.as_str())
    );
}

#[tokio::test]
async fn a_sign_in_started_on_the_wiki_happens_on_the_portal_and_comes_back_to_the_wiki() {
    let h = demo_server().await;
    let b = Browser::new();
    let r = sign_in(&b, &h.url("wiki.localhost", "/"), &JANE, &JANE.code(0)).await;
    let page = Page::read(r).await;
    assert_eq!(
        page.url.as_str(),
        h.url("wiki.localhost", "/"),
        "{}",
        page.html
    );
    assert!(page.html.contains("<strong id=remote-user>jane</strong>"));
    // The sign-in set the portal host's cookie; the wiki got the same session by hand-off.
    let session = b.session_id(&h.url("localhost", "/")).unwrap();
    assert_eq!(b.session_id(&h.url("wiki.localhost", "/")), Some(session));
}

#[tokio::test]
async fn a_hand_off_code_serves_once_on_its_own_host_in_its_own_browser() {
    let h = demo_server().await;
    let (b, tab) = jane_signed_in(&h, 0).await;
    let session = b.session_id(&h.url("localhost", "/")).unwrap();

    // Redirected to another app host (aws.localhost also gets its session by hand-off):
    // refused, and the code is spent.
    // Even with the nonce (it is in the sign-in URL, and a host outside stepgate's
    // control could set any cookie), the code serves only the origin it was issued for.
    let (code, nonce) = hand_off(&h, &tab, "wiki.localhost").await;
    assert!(!code.contains(&session), "no session id in the URL: {code}");
    let elsewhere = code.replace("wiki.localhost", "aws.localhost");
    let r = Browser::new()
        .tab(false)
        .get(&elsewhere)
        .header("cookie", format!("stepgate_handoff={nonce}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(b.session_id(&h.url("aws.localhost", "/")).is_none());
    let r = tab.get(&code).send().await.unwrap();
    assert_eq!(r.status(), 400, "spent by the try on another host");
    assert!(b.session_id(&h.url("wiki.localhost", "/")).is_none());

    // Sent to another browser (an attacker's code in a victim's browser, or a stolen
    // one): without the hand-off cookie it is bound to, refused.
    let code = hand_off_url(&h, &tab, "wiki.localhost").await;
    let other = Browser::new();
    let r = other.tab(false).get(&code).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(other.session_id(&h.url("wiki.localhost", "/")).is_none());

    // Its own browser, its own host: the wiki's cookie is set and the page opens; a
    // second use gets nothing.
    let code = hand_off_url(&h, &tab, "wiki.localhost").await;
    let r = tab.get(&code).send().await.unwrap();
    assert_eq!(location(&r), h.url("wiki.localhost", "/"));
    assert_eq!(
        b.session_id(&h.url("wiki.localhost", "/")).as_deref(),
        Some(session.as_str())
    );
    let r = tab.get(&code).send().await.unwrap();
    assert_eq!(r.status(), 400, "used once");
    let page = Page::open(&b, &h.url("wiki.localhost", "/")).await;
    assert!(page.html.contains("<strong id=remote-user>jane</strong>"));

    // Codes that were never issued, in every odd shape.
    let long = "A".repeat(10_000);
    for bad in [
        "",
        "x",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%2F",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        long.as_str(),
    ] {
        let r = tab
            .get(h.url("wiki.localhost", &format!("/_stepgate/handoff?code={bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad:.50}");
    }
}

#[tokio::test]
async fn signing_out_on_either_host_ends_the_session_on_both() {
    let h = demo_server().await;
    for (step, out_on, other) in [
        (0, "wiki.localhost", "localhost"),
        (1, "localhost", "wiki.localhost"),
    ] {
        let (b, _) = jane_signed_in(&h, step).await;
        let page = Page::open(&b, &h.url("wiki.localhost", "/")).await;
        assert!(page.html.contains("<strong id=remote-user>jane</strong>"));

        let sessions = Page::open(&b, &h.url(out_on, "/_stepgate/sessions")).await;
        let r = b
            .post(h.url(out_on, "/_stepgate/logout"))
            .form(&[("csrf", sessions.field("csrf"))])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "signed out on {out_on}");
        for host in [out_on, other] {
            let page = Page::open(&b, &h.url(host, "/")).await;
            assert!(
                page.url.path().ends_with("/_stepgate/login"),
                "{host} after signing out on {out_on}: {}",
                page.url
            );
        }
    }
}

/// The demo's OpenID Connect app: jane signs in to Expense Reports through stepgate (the
/// demo's sign-in policy asks a second factor off the office network), and the app shows
/// the verified ID token's level; a second sign-in rides the SSO session with no page.
#[tokio::test]
async fn expense_reports_signs_in_through_the_openid_provider() {
    let console = demo::start_licence_console("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let wiki = demo::start_team_wiki("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let rp = stepgate_server::demo_rp::start_expense_reports("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = rp.addr.port();
    let h = Server::build(include_str!("../../../examples/demo.yaml"))
        .with("127.0.0.1:9001", console)
        .with("127.0.0.1:9002", wiki)
        .with("localhost:9092", format!("localhost:{port}"))
        .public_url(|port| format!("http://localhost:{port}"))
        .options(ServeOptions {
            demo: true,
            config_path: None,
        })
        .demo_users()
        .start()
        .await;
    rp.connect(&h.public_url, "/_stepgate");
    let b = Browser::new();
    let app = format!("http://localhost:{port}");
    let r = sign_in(&b, &format!("{app}/login"), &JANE, &JANE.code(0)).await;
    let page = Page::read(r).await;
    assert_eq!(page.url.as_str(), format!("{app}/"), "{}", page.html);
    assert!(
        page.html.contains("<strong id=user>jane</strong>"),
        "{}",
        page.html
    );
    assert!(page.html.contains("<td id=acr>aal2</td>"), "{}", page.html);
    assert!(
        page.html.contains("<td id=amr>pwd otp mfa</td>"),
        "{}",
        page.html
    );

    // Signed in at stepgate already: the next sign-in is a code with no page between.
    let fresh = b.tab(false);
    let r = fresh.get(format!("{app}/login")).send().await.unwrap();
    let to_stepgate = r.headers()["location"].to_str().unwrap().to_string();
    let r = fresh.get(&to_stepgate).send().await.unwrap();
    let back = r.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(&format!("{app}/callback?code=")), "{back}");
}

#[tokio::test]
async fn hosts_the_cookie_domain_covers_share_the_cookie_and_get_no_hand_off() {
    // A second, host-only session cookie there would make every request carry the session
    // cookie twice (refused): such hosts sign in on their own portal as before.
    let h = demo_server_with(|yaml| {
        yaml.replacen(
            "    secure: false",
            "    secure: false\n    domain: localhost",
            1,
        )
    })
    .await;
    let r = Browser::new()
        .tab(false)
        .get(h.url("wiki.localhost", "/"))
        .send()
        .await
        .unwrap();
    let to = location(&r);
    assert!(
        to.starts_with(&h.url("wiki.localhost", "/_stepgate/login?t=")) && !to.contains("&n="),
        "{to}"
    );
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("stepgate_handoff=")));
}
