//! The signed identity assertion the gateway sends upstream: it verifies against the
//! published JWKS, survives key rotation, and is minted anew when a session's user changes.

use stepgate_server::demo;

use crate::common::*;
use crate::support::{user, Browser};

#[tokio::test]
async fn assertion_verifies_against_the_published_jwks() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let seen = echo(&c, &h.url("app.test", "/whoami")).await;
    assert_eq!(seen["user"], "jane");
    let token = seen["assertion"].as_str().unwrap();
    let claims = verify_assertion(
        &format!("{}/.well-known/jwks.json", h.base),
        token,
        "console",
        &h.base,
    )
    .await
    .unwrap();
    assert_eq!(claims["preferred_username"], "jane");
    assert_eq!(claims["acr"], "aal2");
    let amr: Vec<&str> = claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(amr.contains(&"pwd") && amr.contains(&"otp"), "{amr:?}");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["staff", "licence-admins"])
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 60, "short-lived");
    assert!(claims["auth_time"].as_i64().unwrap() <= iat);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    let user = user(&h.st, "jane").await;
    assert_eq!(claims["sub"], user.id.as_str());
    // The demo's Licence Console checks it the same way.
    demo::set_assertion_check(demo::AssertionCheck {
        jwks_url: format!("{}/.well-known/jwks.json", h.base),
        jwks_host: None,
        issuer: h.base.clone(),
        audience: "console".into(),
    });
    let mut hm = axum::http::HeaderMap::new();
    hm.insert("x-stepgate-assertion", token.parse().unwrap());
    assert_eq!(demo::check_assertion(&hm).await.as_deref(), Ok("jane"));
    let mut tampered = token.to_string();
    tampered.truncate(token.len() - 4);
    tampered.push_str("AAAA");
    hm.insert("x-stepgate-assertion", tampered.parse().unwrap());
    assert_eq!(
        demo::check_assertion(&hm).await,
        Err("invalid: InvalidSignature".to_string())
    );
    // Meant for the console only.
    let refused = verify_assertion(
        &format!("{}/.well-known/jwks.json", h.base),
        token,
        "api",
        &h.base,
    )
    .await
    .unwrap_err();
    assert_eq!(refused, "InvalidAudience");
    // A client cannot forge one: its own header is replaced.
    let seen = c
        .get(h.url("app.test", "/whoami"))
        .header("x-stepgate-assertion", "forged")
        .header("remote-user", "mallory")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_ne!(seen["assertion"], "forged");
    assert!(
        !seen["assertion"].as_str().unwrap().contains('|'),
        "one header only"
    );
    assert_eq!(seen["user"], "jane");
}

#[tokio::test]
async fn key_rotation_keeps_old_assertions_verifiable_during_the_overlap() {
    let h = start().await;
    let jwks_url = format!("{}/.well-known/jwks.json", h.base);
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let old = echo(&c, &h.url("app.test", "/")).await["assertion"]
        .as_str()
        .unwrap()
        .to_string();
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    // The key came from the store: a second node on the same store signs with it.
    let cfg = h.st.runtime.load().config.gateway.assertion.clone();
    let node2 = stepgate_server::gateway::assertion::AssertionKeys::open(
        h.st.stores.durable.clone(),
        h.key.clone(),
        &cfg,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(node2.current_kid().as_deref(), Some(old_kid.as_str()));

    let now = chrono::Utc::now();
    let new_kid = h.st.assertion.rotate(&cfg, now).await.unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks: serde_json::Value = reqwest::get(&jwks_url).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    verify_assertion(&jwks_url, &old, "console", &h.base)
        .await
        .expect("an assertion signed before the rotation still verifies");
    let fresh = echo(&c, &h.url("app.test", "/")).await["assertion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap(),
        new_kid
    );
    verify_assertion(&jwks_url, &fresh, "console", &h.base)
        .await
        .unwrap();
    // The other node picks the new key up from the store.
    node2.maintain(&cfg, now).await.unwrap();
    assert_eq!(node2.current_kid(), Some(new_kid.clone()));

    // Once every assertion the old key signed has expired, it leaves the JWKS.
    h.st.assertion
        .maintain(&cfg, now + chrono::Duration::minutes(7))
        .await
        .unwrap();
    let jwks: serde_json::Value = reqwest::get(&jwks_url).await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![new_kid.as_str()]);
    let refused = verify_assertion(&jwks_url, &old, "console", &h.base)
        .await
        .unwrap_err();
    assert_eq!(refused, format!("kid {old_kid} not in the JWKS"));
    // And on schedule: a key older than rotate_every is replaced.
    h.st.assertion
        .maintain(&cfg, now + chrono::Duration::hours(25))
        .await
        .unwrap();
    assert_ne!(h.st.assertion.current_kid(), Some(new_kid));
}

/// The claims of an assertion, read without checking it (the tests above check it).
fn claims_of(assertion: &serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    let token = assertion.as_str().expect("an assertion");
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A session's identity headers and assertion are built once and reused while nothing
/// they say changes (the same assertion, not a new signature per request); once the
/// user record changes, the very next request the node sees it on carries the change.
#[tokio::test]
async fn a_session_is_asserted_anew_when_its_user_changes() {
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let first = echo(&c, &h.url("app.test", "/")).await;
    let again = echo(&c, &h.url("app.test", "/")).await;
    assert_eq!(first["assertion"], again["assertion"], "reused");
    assert_ne!(claims_of(&first["assertion"])["name"], "Jane Changed");
    let durable = &h.st.stores.durable;
    let mut jane = durable.get_user_by_username("jane").await.unwrap().unwrap();
    jane.name = Some("Jane Changed".into());
    // Through this node's store, which drops its cached record: the session's own record
    // stays cached, so only the user record's change can make the next block anew.
    durable.update_user(&jane).await.unwrap();
    let changed = echo(&c, &h.url("app.test", "/")).await;
    assert_ne!(changed["assertion"], first["assertion"]);
    assert_eq!(claims_of(&changed["assertion"])["name"], "Jane Changed");
    assert_eq!(changed["user"], "jane");
}
