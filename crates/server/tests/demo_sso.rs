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
