//! The portal in the reader's language over real HTTP: French from `Accept-Language`, the
//! switcher's cookie winning over it and coming back only to a path on this server, a
//! step-up reason and a wrong password in French, the gateway's own error page (502) in
//! French, an API's JSON still in English, and the language read from headers as a client
//! may spell them (byte for byte).

mod support;

use support::{api_refusal, client, error_page, password, upstream, Browser, Page, Server, JANE};

const CONFIG: &str = r#"
apps:
  - { id: console, name: Console, hosts: [127.0.0.1], upstream: "http://UPSTREAM" }
  - { id: down, hosts: [down.test], upstream: "http://127.0.0.1:1" }
sessions: { cookie: { secure: false } }
policies:
  - name: sign-in-mfa
    priority: 10
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - { name: everyone, priority: 50, outcome: allow }
"#;

async fn start() -> Server {
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .demo_users()
        .start()
        .await
}

/// A browser that asks for French, keeping cookies and following redirects.
fn french(follow: bool) -> Browser {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        "accept-language",
        "fr-CH, fr;q=0.9, en;q=0.5".parse().unwrap(),
    );
    Browser::on(
        Default::default(),
        client()
            .default_headers(h)
            .redirect(support::redirects(follow)),
    )
}

/// The page as written, with minijinja's `&#x2f;` read as `/` and `&amp;` as `&`.
async fn text(r: reqwest::Response) -> String {
    r.text()
        .await
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn the_portal_speaks_french_from_accept_language_with_a_switcher_back_to_english() {
    let h = start().await;
    let b = french(true);
    let r = b.get(h.at("/_stepgate/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    assert!(page.contains("<html lang=\"fr\">"), "{page}");
    assert!(page.contains("<h1>Se connecter</h1>"), "{page}");
    assert!(page.contains("Nom d’utilisateur"), "{page}");
    assert!(page.contains("Mot de passe oublié ?"), "{page}");
    // The page scripts' words come in French too.
    assert!(
        page.contains("data-not-allowed=\"Aucune clé d’accès n’a été utilisée"),
        "{page}"
    );
    // The switcher: a plain link to English that comes back to this page.
    let link = "/_stepgate/lang?to=en&back=%2F_stepgate%2Flogin";
    assert!(page.contains(&format!("href=\"{link}\"")), "{page}");
    assert!(
        !page.contains("lang?to=fr"),
        "no link to the page's own language"
    );

    // Following it sets the cookie and comes back; the cookie then wins over the header.
    let nf = b.tab(false);
    let r = nf.get(h.at(link)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/_stepgate/login");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("stepgate_lang=en;"), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    let page = text(b.get(h.at("/_stepgate/login")).send().await.unwrap()).await;
    assert!(page.contains("<html lang=\"en\">"), "{page}");
    assert!(page.contains("<h1>Sign in</h1>"), "{page}");
    assert!(page.contains("lang?to=fr"), "{page}");

    // It comes back only to a path here; an unknown language is a page, not a cookie.
    for back in [
        "%2F%2Fevil.example%2F",
        "https%3A%2F%2Fevil.example%2F",
        "%2F%5Cevil.example",
    ] {
        let r = nf
            .get(h.at(&format!("/_stepgate/lang?to=fr&back={back}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let to = r.headers()["location"].to_str().unwrap().to_string();
        assert!(to.ends_with("/_stepgate/account"), "{back} went to {to}");
    }
    let r = nf.get(h.at("/_stepgate/lang?to=xx")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn a_french_reader_gets_the_sign_in_its_errors_and_the_step_up_reason_in_french() {
    let h = start().await;
    let b = french(true);
    // A wrong password.
    let page = Page::open(&b, &h.at("/")).await;
    let r = page
        .submit(
            &b,
            "/_stepgate/login",
            &[("username", "jane"), ("password", "not-her-password")],
        )
        .await;
    assert_eq!(r.status(), 401);
    let body = text(r).await;
    assert!(
        body.contains("Nom d’utilisateur ou mot de passe incorrect."),
        "{body}"
    );
    // The right one: the sign-in policy's step-up, worded by stepgate, in French.
    let r = password(&b, &h.at("/"), &JANE).await;
    assert!(
        r.url().path().ends_with("/_stepgate/step-up"),
        "{}",
        r.url()
    );
    let body = text(r).await;
    assert!(
        body.contains("Encore une étape pour vous connecter"),
        "{body}"
    );
    assert!(
        body.contains("Pour vous connecter, il faut un deuxième moyen de confirmer que c’est bien vous, en plus de votre mot de passe."),
        "{body}"
    );
    assert!(
        body.contains("Code de votre application d’authentification"),
        "{body}"
    );
    for word in ["AAL", "factor", "enrolled"] {
        assert!(!body.contains(word), "{word} in {body}");
    }
}

#[tokio::test]
async fn the_gateways_error_page_is_in_french_and_an_apis_json_in_english() {
    let h = start().await;
    let b = french(true);
    let r = support::sign_in(&b, &h.url("down.test", "/reports"), &JANE, &JANE.code(0)).await;
    let body = error_page(r, 502, "L’application ne répond pas").await;
    assert!(body.contains(">Réessayer</a>"), "{body}");
    assert!(body.contains("Aller à votre compte"), "{body}");
    assert!(
        body.contains("Référence <code id=\"request-id\">"),
        "{body}"
    );
    // The same refusal to an API client that reads French: JSON, in English.
    let j = api_refusal(b.get(h.url("down.test", "/reports")), 502).await;
    assert_eq!(j["error"], "bad_gateway");
    assert_eq!(
        j["error_description"],
        "the upstream application is unavailable"
    );
    // A refusal whose API description is the page's sentence: English for the API, French
    // for the page.
    let j = api_refusal(b.get(h.url("nowhere.test", "/x")), 421).await;
    assert!(
        j["error_description"]
            .as_str()
            .unwrap()
            .starts_with("This address is not one stepgate serves"),
        "{j}"
    );
    let r = b
        .get(h.url("nowhere.test", "/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    error_page(r, 421, "Adresse non desservie").await;
}

/// The language read from requests as a client may spell them, byte for byte: the header
/// name in capitals, a line twice, the cookie in a second `Cookie` line or twice in one,
/// an empty value, bytes outside ASCII, more preferences than are read (32). Each page
/// says which language it chose in `<html lang>`: the one the request's headers ask for,
/// read once, whether the language is chosen at once (a header sent twice) or when the
/// page asks for it (each header once).
#[tokio::test]
async fn the_language_is_read_from_every_spelling_of_the_headers_as_negotiation_reads_it() {
    let h = start().await;
    let many = format!("{}fr", "de;q=0.9, ".repeat(32));
    let cases: &[(&str, String, &str)] = &[
        ("one line", "Accept-Language: fr\r\n".into(), "fr"),
        ("name in capitals", "ACCEPT-LANGUAGE: fr\r\n".into(), "fr"),
        (
            "two lines, the best in the second",
            "Accept-Language: de\r\naccept-language: fr;q=0.5\r\n".into(),
            "fr",
        ),
        (
            "the cookie over Accept-Language",
            "Cookie: stepgate_lang=fr\r\nAccept-Language: en\r\n".into(),
            "fr",
        ),
        (
            "the cookie in a second Cookie line",
            "Cookie: a=b\r\nCookie: stepgate_lang=fr\r\nAccept-Language: en\r\n".into(),
            "fr",
        ),
        (
            "the cookie twice: no choice",
            "Cookie: stepgate_lang=fr; stepgate_lang=fr\r\n".into(),
            "en",
        ),
        (
            "a cookie whose name only holds it",
            "Cookie: xstepgate_lang=fr\r\n".into(),
            "en",
        ),
        ("an empty value", "Accept-Language: \r\n".into(), "en"),
        (
            "bytes outside ASCII",
            "Accept-Language: fr-\u{e9}, fr\r\n".into(),
            "en",
        ),
        (
            "a 33rd preference is not read",
            format!("Accept-Language: {many}\r\n"),
            "en",
        ),
    ];
    for (what, lines, lang) in cases {
        let r = support::raw_get(h.addr, "127.0.0.1", b"/_stepgate/login", lines).await;
        assert_eq!(r.status, 200, "{what}: {}", r.head);
        assert!(
            r.body.contains(&format!("<html lang=\"{lang}\">")),
            "{what}: expected {lang}: {}",
            &r.body[..r.body.len().min(200)]
        );
    }
}
