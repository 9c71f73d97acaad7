//! What the provider publishes and issues: discovery and JWKS, access tokens the
//! gateway refuses once revoked, tokens kept apart from identity assertions, pairwise `sub`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::recipe;
use crate::support;
use crate::support::{password, user, Browser, Page, Server, JANE};

#[tokio::test]
async fn discovery_and_jwks_describe_the_provider() {
    let h = provider("60s").await;
    let d: Value = reqwest::get(h.at("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], json!(h.public_url));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    let jwks: Value = reqwest::get(d["jwks_uri"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The provider's own keys: one per algorithm its clients use, none of them the
    // identity assertion's (published apart, at /.well-known/jwks.json).
    let mut algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    algs.sort();
    assert_eq!(algs, ["ES256", "EdDSA", "RS256"], "{jwks}");
    assert_eq!(
        d["jwks_uri"],
        json!(h.at("/_stepgate/oidc/jwks")),
        "the provider's own key set"
    );
    let assertion: Value = reqwest::get(h.at("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids = |set: &Value| -> Vec<String> {
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        kids(&assertion).iter().all(|k| !kids(&jwks).contains(k)),
        "{assertion} / {jwks}"
    );
}

/// A GET of the expenses app through stepgate's gateway with `token` as the bearer token.
async fn at_gateway(h: &Server, token: &str) -> reqwest::Response {
    support::client()
        .build()
        .unwrap()
        .get(format!("http://expenses.test:{}/expenses", h.addr.port()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The gateway's refusal of a bearer token: `401` with RFC 6750's challenge.
async fn assert_refused(h: &Server, token: &str, what: &str) {
    let r = at_gateway(h, token).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("invalid_token"),
        "{what}: {challenge}"
    );
}

#[tokio::test]
async fn the_gateway_refuses_an_access_token_at_once_when_its_grant_is_revoked_or_its_session_ends()
{
    let h = provider("60s").await;

    // The client revokes its refresh token: the whole grant, its access token with it.
    let (_b, code) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &code, VERIFIER).await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(at_gateway(&h, access).await.status(), StatusCode::OK);
    let r = reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/revoke"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", t["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_refused(&h, access, "after the grant was revoked").await;

    // jane signs out on the portal: the access token from that session is refused at the
    // very next request, long before its `exp`.
    let (b, code) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &code, VERIFIER).await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(at_gateway(&h, access).await.status(), StatusCode::OK);
    let page = Page::open(&b, &h.at("/_stepgate/sessions")).await;
    let r = b
        .post(h.at("/_stepgate/logout"))
        .form(&[("csrf", page.field("csrf"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_refused(&h, access, "after signing out").await;

    // "Sign out everywhere" (an admin or CAEP revoke ends sessions the same way).
    let (_b, code) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &code, VERIFIER).await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(at_gateway(&h, access).await.status(), StatusCode::OK);
    let jane = user(&h.st, JANE.username).await;
    h.st.sessions.end_all(&jane.id).await.unwrap();
    assert_refused(&h, access, "after signing out everywhere").await;

    // A service's client_credentials token has no session to end and still passes.
    let r = reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/token"))
        .basic_auth("expense-sync", Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    let service = t["access_token"].as_str().unwrap();
    assert_eq!(at_gateway(&h, service).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_access_token_is_no_identity_assertion_and_neither_assertions_nor_id_tokens_are_access_tokens(
) {
    let h = provider("60s").await;
    let (_b, code) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &code, VERIFIER).await;
    let access = t["access_token"].as_str().unwrap().to_string();
    let id_token = t["id_token"].as_str().unwrap().to_string();

    // The identity assertion the app behind stepgate receives with a request stepgate let
    // through (here one with the access token).
    let r = at_gateway(&h, &access).await;
    assert_eq!(r.status(), StatusCode::OK);
    let echoed: Value = r.json().await.unwrap();
    let assertion = echoed["x-stepgate-assertion"]
        .as_str()
        .unwrap_or_else(|| panic!("no assertion upstream: {echoed}"))
        .to_string();

    // The app verifies assertions with docs/gateway.md's recipe (aud = its app id): the
    // assertion passes; the access token for the same app, from the same issuer, does not,
    // and neither does the ID token: the provider signs with keys of its own...
    let app = recipe::AssertionVerifier::new(&h.public_url, "expenses")
        .with_jwks_url(&h.at("/.well-known/jwks.json"));
    let id = app
        .verify(&assertion)
        .await
        .expect("the live assertion verifies");
    assert_eq!(id.sub, user(&h.st, JANE.username).await.id);
    for (what, token) in [("access token", &access), ("ID token", &id_token)] {
        match app.verify(token).await {
            Err(recipe::AssertionError::UnknownKey(_)) => {}
            other => panic!("the assertion recipe took the {what}: {other:?}"),
        }
    }
    // ...and even an app that fetched the provider's keys by mistake refuses them: their
    // audience is never an app id.
    let misled = recipe::AssertionVerifier::new(&h.public_url, "expenses")
        .with_jwks_url(&h.at("/_stepgate/oidc/jwks"));
    for (what, token) in [("access token", &access), ("ID token", &id_token)] {
        match misled.verify(token).await {
            Err(recipe::AssertionError::Invalid(e)) => assert!(
                matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience),
                "{what}: {e:?}"
            ),
            other => panic!("the assertion recipe took the {what}: {other:?}"),
        }
    }

    // The gateway takes the access token, and refuses the assertion and the ID token.
    assert_eq!(at_gateway(&h, &access).await.status(), StatusCode::OK);
    assert_refused(&h, &assertion, "the identity assertion as a bearer token").await;
    assert_refused(&h, &id_token, "the ID token as a bearer token").await;
}

/// A code for `client` from the signed-in browser `b`, redeemed by that client.
async fn tokens_for(h: &Server, b: &Browser, client: &str) -> Value {
    let url = authorize_url(h, &[]).replace(
        &format!("client_id={CLIENT}"),
        &format!("client_id={client}"),
    );
    let (status, loc) = answer(b, &url).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let code = param(&loc.unwrap(), "code").expect("a code");
    let r = reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/token"))
        .basic_auth(client, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://rp.test/cb"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn pairwise_clients_see_one_opaque_sub_per_sector_everywhere() {
    let h = provider("60s").await;
    let jane = user(&h.st, JANE.username).await;
    let b = Browser::new();
    let r = password(&b, &h.at("/_stepgate/login"), &JANE).await;
    assert!(r.status().is_success());
    let web = tokens_for(&h, &b, "books-web").await;
    let mobile = tokens_for(&h, &b, "books-mobile").await;
    let other = tokens_for(&h, &b, "rp-pairwise").await;
    let public = tokens_for(&h, &b, CLIENT).await;
    let sub = |t: &Value| payload(t["id_token"].as_str().unwrap())["sub"].clone();

    // One sector, one sub; another sector (the redirect URIs' host), another; neither is
    // the user's id, which public clients see.
    assert_eq!(sub(&web), sub(&mobile));
    assert_ne!(sub(&web), sub(&other));
    assert_eq!(sub(&public), json!(jane.id));
    for t in [&web, &other] {
        let s = sub(t);
        let s = s.as_str().unwrap();
        assert!(s != jane.id && !s.contains(&jane.id), "{s}");
    }
    // Stable: a second sign-in of the same client gets the same sub.
    assert_eq!(sub(&tokens_for(&h, &b, "books-web").await), sub(&web));

    // The access token says the same sub, with the user's id only sealed.
    let access = web["access_token"].as_str().unwrap();
    let claims = payload(access);
    assert_eq!(claims["sub"], sub(&web));
    let text = claims.to_string();
    assert!(!text.contains(&jane.id), "{text}");
    // userinfo and introspection (access and refresh token) say it too, and nothing sealed.
    let info: Value = reqwest::Client::new()
        .get(h.at("/_stepgate/oidc/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], sub(&web), "{info}");
    for token in [access, web["refresh_token"].as_str().unwrap()] {
        let i = introspect_as(&h, "books-web", token).await;
        assert_eq!(
            (i["active"].clone(), i["sub"].clone()),
            (json!(true), sub(&web)),
            "{i}"
        );
        assert!(i.get("sgu").is_none(), "{i}");
    }
    // The gateway still knows who it is: the app behind it gets jane's own id.
    let r = at_gateway(&h, access).await;
    assert_eq!(r.status(), StatusCode::OK);
    let echoed: Value = r.json().await.unwrap();
    let assertion = payload(echoed["x-stepgate-assertion"].as_str().unwrap());
    assert_eq!(assertion["sub"], json!(jane.id), "{assertion}");
    assert_eq!(assertion["preferred_username"], json!(JANE.username));

    // The back-channel logout token names the user by the same pairwise sub.
    let sid = payload(web["id_token"].as_str().unwrap())["sid"].clone();
    let page = Page::open(&b, &h.at("/_stepgate/sessions")).await;
    let r = b
        .post(h.at("/_stepgate/logout"))
        .form(&[("csrf", page.field("csrf"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = logout_token(|c| c["aud"] == "books-web" && c["sid"] == sid)
        .await
        .map(|t| payload(&t))
        .expect("a logout token for books-web");
    assert_eq!(got["sub"], sub(&web), "{got}");
}
