//! The demo's single sign-on, through the live server on the demo's own configuration
//! (examples/demo.yaml) with its two built-in apps: jane signs in on the Licence Console
//! (localhost) and then opens the Team Wiki on its own host (wiki.localhost) without
//! signing in again — the wiki has an upstream and answers with her identity.

mod support;

use stepgate_server::{demo, ServeOptions};
use support::{sign_in, Browser, Page, Server, JANE};

#[tokio::test]
async fn a_session_signed_in_on_the_licence_console_opens_the_team_wiki() {
    let console = demo::start_licence_console("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let wiki = demo::start_team_wiki("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let h = Server::build(include_str!("../../../examples/demo.yaml"))
        .with("127.0.0.1:9001", console)
        .with("127.0.0.1:9002", wiki)
        .public_url(|port| format!("http://localhost:{port}"))
        .options(ServeOptions {
            demo: true,
            config_path: None,
        })
        .demo_users()
        .start()
        .await;
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
