//! The authorization endpoint: unregistered redirect URIs, a policy deny, refused
//! request objects, prompts and response types, `acr_values` step-up, pushed requests (PAR),
//! and a sign-in page's form redirected to its own client only.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;
use crate::support::{user, Browser, Page, Passkey, Server, JANE};

#[tokio::test]
async fn a_redirect_uri_that_was_not_registered_is_never_redirected_to() {
    let h = provider("60s").await;
    let (b, _) = signed_in_code(&h).await;
    for bad in [
        "http://evil.test/cb",
        "http://rp.test/cb/",
        "http://rp.test/cb?x=1",
        "http://RP.test/cb",
        "https://rp.test/cb",
        "",
    ] {
        let url = authorize_url(&h, &[]).replace(
            &format!("redirect_uri={}", urlenc(&redirect_uri(&h))),
            &format!("redirect_uri={}", urlenc(bad)),
        );
        let (status, loc) = answer(&b, &url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(loc.is_none(), "{bad}: redirected to {loc:?}");
    }
    // An unknown client: the same.
    let url = authorize_url(&h, &[]).replace("client_id=expense-reports", "client_id=nobody");
    let (status, loc) = answer(&b, &url).await;
    assert_eq!((status, loc), (StatusCode::BAD_REQUEST, None));
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_policy_deny_ends_at_the_blocked_page_or_as_access_denied() {
    let h = provider("60s").await;
    let (b, _) = signed_in_code(&h).await;
    let url = authorize_url(&h, &[]).replace("client_id=expense-reports", "client_id=vault-web");
    let (status, loc) = answer(&b, &url).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let loc = loc.unwrap();
    assert_eq!(loc.path(), "/_stepgate/blocked", "{loc}");
    let page = Page::open(&b, loc.as_str()).await;
    assert!(page.html.contains("The vault is closed."), "{}", page.html);
    // Giving up returns `access_denied` to the client.
    let i = page
        .html
        .find("id=\"give-up\"")
        .expect("a way back to the app");
    let href = page.html[..i]
        .rsplit("href=\"")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&");
    let (_, loc) = answer(&b, &href).await;
    let loc = loc.unwrap();
    assert!(loc.as_str().starts_with("http://rp.test/cb?"), "{loc}");
    assert_eq!(param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&loc, "state").as_deref(), Some("st-1"));
    // Without interaction: access_denied to the client, naming no policy.
    let (_, loc) = answer(&b, &format!("{url}&prompt=none")).await;
    let loc = loc.unwrap();
    assert!(loc.as_str().starts_with("http://rp.test/cb?"), "{loc}");
    assert_eq!(param(&loc, "error").as_deref(), Some("access_denied"));
    assert!(!param(&loc, "error_description")
        .unwrap()
        .contains("vault-closed"));
    // And the same request for the open app gets its code on the same session.
    let (_, loc) = answer(&b, &authorize_url(&h, &[("prompt", "none")])).await;
    assert!(param(&loc.unwrap(), "code").is_some());
}

#[tokio::test]
async fn request_objects_unknown_prompts_and_other_response_types_are_refused() {
    let h = provider("60s").await;
    let (b, _) = signed_in_code(&h).await;
    // An unsigned (`alg: none`) request object, a request_uri, the implicit and hybrid
    // flows, a form_post or fragment response mode, a bad max_age: each refused to the
    // client, and no code.
    let none_jwt = "eyJhbGciOiJub25lIn0.eyJjbGllbnRfaWQiOiJleHBlbnNlLXJlcG9ydHMifQ.";
    for (extra, error) in [
        (vec![("request", none_jwt)], "request_not_supported"),
        (
            vec![("request_uri", "https://evil.test/r")],
            "request_uri_not_supported",
        ),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("prompt", "sudo")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
        (vec![("response_mode", "fragment")], "invalid_request"),
        (vec![("claims", "{not json")], "invalid_request"),
    ] {
        let (status, loc) = answer(&b, &authorize_url(&h, &extra)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let loc = loc.unwrap();
        assert_eq!(
            param(&loc, "error").as_deref(),
            Some(error),
            "{extra:?}: {loc}"
        );
        assert!(param(&loc, "code").is_none());
    }
    for rt in ["token", "code id_token", "id_token"] {
        let url = authorize_url(&h, &[]).replace(
            "response_type=code",
            &format!("response_type={}", urlenc(rt)),
        );
        let (_, loc) = answer(&b, &url).await;
        assert_eq!(
            param(&loc.unwrap(), "error").as_deref(),
            Some("unsupported_response_type"),
            "{rt}"
        );
    }
    // A scope the client may not ask for, or no `openid`.
    let url = authorize_url(&h, &[]).replace("scope=openid+profile", "scope=openid+admin");
    let (_, loc) = answer(&b, &url).await;
    assert_eq!(
        param(&loc.unwrap(), "error").as_deref(),
        Some("invalid_scope")
    );
    let url = authorize_url(&h, &[]).replace("scope=openid+profile", "scope=profile");
    let (_, loc) = answer(&b, &url).await;
    assert_eq!(
        param(&loc.unwrap(), "error").as_deref(),
        Some("invalid_scope")
    );
}

#[tokio::test]
async fn acr_values_step_up_with_a_passkey_and_the_tokens_say_so() {
    let h = provider("60s").await;
    let jane = user(&h.st, JANE.username).await;
    let mut passkey = Passkey::register(&h.st, &jane).await;
    let (b, first) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &first, VERIFIER).await;
    let claims = |t: &Value| -> Value {
        let id = t["id_token"].as_str().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(id.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims(&t)["acr"], "aal1");

    // The client asks for aal2: the portal's step-up page, passed with the passkey, returns
    // to the authorization request, which now issues the code.
    let (status, loc) = answer(&b, &authorize_url(&h, &[("acr_values", "aal2")])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let loc = loc.unwrap();
    assert_eq!(loc.path(), "/_stepgate/step-up", "{loc}");
    let page = Page::open(&b, loc.as_str()).await;
    assert!(
        page.html.contains("Expense Reports asks for"),
        "{}",
        page.html
    );
    let back = passkey.step_up(&b, &h.base, &page).await;
    let back = url::Url::parse(&h.base).unwrap().join(&back).unwrap();
    assert!(back.path().ends_with("/oidc/authorize"), "{back}");
    let (_, loc) = answer(&b, back.as_str()).await;
    let code = param(&loc.unwrap(), "code").expect("a code after the step-up");
    let (status, t) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let c = claims(&t);
    assert_eq!(c["acr"], "aal2", "{c}");
    let amr: Vec<&str> = c["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(amr.contains(&"pwd") && amr.contains(&"mfa"), "{amr:?}");
    assert!(!amr.contains(&"otp"), "no TOTP was used: {amr:?}");
    assert!(
        amr.iter()
            .any(|a| ["swk", "hwk", "user", "pop"].contains(a)),
        "{amr:?}"
    );
    assert!(c["auth_time"].as_i64().unwrap() >= claims(&t)["iat"].as_i64().unwrap() - 5);
}

fn authorize_pushed(h: &Server, client: &str, request_uri: &str) -> String {
    format!(
        "{}?client_id={client}&request_uri={}",
        h.at("/_stepgate/oidc/authorize"),
        urlenc(request_uri)
    )
}

#[tokio::test]
async fn a_pushed_request_is_redeemed_once_for_its_own_client_and_survives_a_step_up() {
    let h = provider("60s").await;
    let (b, _) = signed_in_code(&h).await;
    let (status, r) = push(&h, SECRET, &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(r["expires_in"], 90);
    let uri = r["request_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("urn:ietf:params:oauth:request_uri:"),
        "{uri}"
    );

    let (_, loc) = answer(&b, &authorize_pushed(&h, CLIENT, uri)).await;
    let loc = loc.unwrap();
    assert_eq!(param(&loc, "state").as_deref(), Some("st-par"));
    let code = param(&loc, "code").unwrap();
    let (status, t) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    // Once.
    let (_, loc) = answer(&b, &authorize_pushed(&h, CLIENT, uri)).await;
    assert_eq!(
        param(&loc.unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    // Another client naming it, or a changed one: refused, never redirected.
    let (_, r2) = push(&h, SECRET, &[]).await;
    let uri2 = r2["request_uri"].as_str().unwrap();
    let (status, loc) = answer(&b, &authorize_pushed(&h, "vault-web", uri2)).await;
    assert_eq!((status, loc), (StatusCode::BAD_REQUEST, None));
    // One character in the middle changed (the last one may carry only base64 padding
    // bits, so changing it can leave the decoded bytes as they were).
    let mid = uri2.len() / 2;
    let other = if &uri2[mid..mid + 1] == "A" { "B" } else { "A" };
    let tampered = format!("{}{other}{}", &uri2[..mid], &uri2[mid + 1..]);
    let (status, loc) = answer(&b, &authorize_pushed(&h, CLIENT, &tampered)).await;
    assert_eq!((status, loc), (StatusCode::BAD_REQUEST, None));

    // Pushing needs the client's secret and a registered redirect URI.
    let (status, r) = push(&h, "wrong", &[]).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, r) = push(&h, SECRET, &[("redirect_uri", "http://evil.test/cb")]).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, r) = push(&h, SECRET, &[("code_challenge_method", "plain")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");

    // A pushed request that needs a step-up comes back to itself after the TOTP step.
    let (_, r) = push(&h, SECRET, &[("acr_values", "aal2")]).await;
    let uri = r["request_uri"].as_str().unwrap();
    let page = Page::open(&b, &authorize_pushed(&h, CLIENT, uri)).await;
    assert!(page.url.path().ends_with("/step-up"), "{}", page.url);
    let r = page.submit_code(&b.tab(false), &JANE.code(0)).await;
    let back = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        back.contains("request_uri="),
        "the return names the pushed request: {back}"
    );
    assert!(
        !back.contains("acr_values"),
        "and not its parameters: {back}"
    );
    let (_, loc) = answer(&b, &back).await;
    let code = param(&loc.unwrap(), "code").expect("a code after the step-up");
    let (status, t) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{t}");
}

#[tokio::test]
async fn a_sign_in_page_for_a_client_lets_its_form_be_redirected_to_that_client_only() {
    let h = provider("60s").await;
    // Not signed in: the authorization request sends the browser to the sign-in page.
    let b = Browser::new();
    let (status, loc) = answer(&b, &authorize_url(&h, &[])).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let login = loc.unwrap();
    assert_eq!(login.path(), "/_stepgate/login", "{login}");
    let csp = |r: &reqwest::Response| {
        r.headers()
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    // A browser applies `form-action` to the POST's whole redirect chain (sign-in →
    // authorize → the client's redirect URI): the client's registered origin is allowed.
    let r = b.get(login.as_str()).send().await.unwrap();
    assert!(
        csp(&r).contains("form-action 'self' http://rp.test;"),
        "{}",
        csp(&r)
    );
    // A sign-in page with no client to return to allows no other origin.
    let r = Browser::new()
        .get(h.at("/_stepgate/login"))
        .send()
        .await
        .unwrap();
    assert!(csp(&r).contains("form-action 'self';"), "{}", csp(&r));
}
