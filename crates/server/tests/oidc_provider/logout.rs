//! Signing out: grants end when a user signs out everywhere or is disabled, and clients
//! get a verifiable back-channel logout token, retried while they refuse it.

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::support::{password, user, Browser, Page, JANE};

#[tokio::test]
async fn signing_out_everywhere_or_being_disabled_ends_the_grants() {
    let h = provider("60s").await;
    let refresh = |t: &Value| t["refresh_token"].as_str().unwrap().to_string();
    let try_refresh = |token: String| {
        let h = &h;
        async move {
            exchange(
                h,
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                Some(SECRET),
            )
            .await
        }
    };
    // Sign out everywhere (an admin or the user on the sessions page).
    let (_b, code) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &code, VERIFIER).await;
    let (status, t2) = try_refresh(refresh(&t)).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let jane = user(&h.st, JANE.username).await;
    h.st.sessions.end_all(&jane.id).await.unwrap();
    let (status, r) = try_refresh(refresh(&t2)).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        introspect(&h, t2["access_token"].as_str().unwrap()).await["active"],
        false
    );

    // A disabled user: the same, whatever their sessions.
    let (_b, code) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(
        introspect(&h, t["access_token"].as_str().unwrap()).await["active"],
        true
    );
    let mut jane = user(&h.st, JANE.username).await;
    jane.disabled = true;
    h.st.stores.durable.update_user(&jane).await.unwrap();
    let (status, r) = try_refresh(refresh(&t)).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        introspect(&h, t["access_token"].as_str().unwrap()).await["active"],
        false
    );
}

#[tokio::test]
async fn signing_out_sends_the_client_a_verifiable_logout_token() {
    let h = provider("60s").await;
    let (b, code) = signed_in_code(&h).await;
    let (_, t) = redeem(&h, &code, VERIFIER).await;
    let payload = |jwt: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwt.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let id = payload(t["id_token"].as_str().unwrap());
    let sid = id["sid"].as_str().unwrap().to_string();

    // jane signs out on the portal's sessions page.
    let page = Page::open(&b, &h.at("/_stepgate/sessions")).await;
    let r = b
        .post(h.at("/_stepgate/logout"))
        .form(&[("csrf", page.field("csrf"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The delivery is asynchronous: wait for it (bounded).
    let token = logout_token(|c| c["sid"] == json!(sid))
        .await
        .expect("a logout token for the session");
    // Verified as a client verifies it: the provider's JWKS, its issuer, the client.
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(h.at("/_stepgate/oidc/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_issuer(&[h.public_url.as_str()]);
    v.set_audience(&[CLIENT]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], id["sub"]);
    assert!(claims["events"]
        .get("http://schemas.openid.net/event/backchannel-logout")
        .is_some());
    assert!(claims.get("nonce").is_none());
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

#[tokio::test]
async fn a_back_channel_logout_the_client_refuses_for_a_while_is_delivered_on_a_retry() {
    let h = provider("60s").await;
    let b = Browser::new();
    let r = password(&b, &h.at("/_stepgate/login"), &JANE).await;
    assert!(r.status().is_success());
    // The client whose endpoint answers 503 to its first two posts signs jane in.
    let url =
        authorize_url(&h, &[]).replace("client_id=expense-reports", "client_id=expense-audit");
    let (status, loc) = answer(&b, &url).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(param(&loc.unwrap(), "code").is_some());

    let page = Page::open(&b, &h.at("/_stepgate/sessions")).await;
    let r = b
        .post(h.at("/_stepgate/logout"))
        .form(&[("csrf", page.field("csrf"))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Refused twice, then taken: the third post (after the 1 s and 3 s backoffs).
    let posts = || flaky_back_channel().1.lock().unwrap().clone();
    let delivered = "stepgate_oidc_backchannel_logouts_total{outcome=\"delivered\"} 1";
    for _ in 0..200 {
        if h.st.metrics.encode(0).contains(delivered) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let got = posts();
    assert_eq!(got.len(), 3, "tries: {got:?}");
    let jtis: std::collections::HashSet<String> = got
        .iter()
        .map(|body| {
            let t = url::form_urlencoded::parse(body.as_bytes())
                .find(|(k, _)| k == "logout_token")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            let c: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(c["aud"], "expense-audit");
            c["jti"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(jtis.len(), 3, "each try is a fresh token");
    let metrics = h.st.metrics.encode(0);
    for line in [
        "stepgate_oidc_backchannel_logouts_total{outcome=\"retried\"} 2",
        "stepgate_oidc_backchannel_logouts_total{outcome=\"dropped\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains(delivered), "{metrics}");
}
