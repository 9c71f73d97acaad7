//! How a client authenticates at the token endpoint: its own secret, a
//! `private_key_jwt` assertion used once, and the client-credentials grant's narrow token.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::support;
use crate::support::Browser;

#[tokio::test]
async fn the_client_must_authenticate_with_its_own_secret() {
    let h = provider("60s").await;
    let (_b, code) = signed_in_code(&h).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://rp.test/cb"),
        ("code_verifier", VERIFIER),
    ];
    let (status, r) = exchange(&h, &form, Some("wrong")).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let (status, r) = exchange(&h, &form, None).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    // The public client cannot redeem the confidential client's code.
    let mut public = form.to_vec();
    public.push(("client_id", PUBLIC));
    let (status, r) = exchange(&h, &public, None).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // A client field sent twice (the form read as one of the two) is refused, whichever
    // value comes first, and does not burn the code either.
    for ids in [[PUBLIC, CLIENT], [CLIENT, PUBLIC]] {
        let mut twice = form.to_vec();
        twice.extend([("client_id", ids[0]), ("client_id", ids[1])]);
        twice.push(("client_secret", SECRET));
        let (status, r) = exchange(&h, &twice, None).await;
        assert!(status.is_client_error(), "{status} {r}");
    }
    // client_secret_post works, and the code was not burnt by the failures.
    let mut post = form.to_vec();
    post.push(("client_id", CLIENT));
    post.push(("client_secret", SECRET));
    let (status, r) = exchange(&h, &post, None).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    // A code is bound to its redirect URI too.
}

/// A P-256 key pair for `private_key_jwt`: the signing key and the public JWKS.
fn client_key() -> (jsonwebtoken::EncodingKey, Value) {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::EncodePrivateKey as _;
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = sk.to_pkcs8_der().unwrap();
    let point = sk.public_key().to_encoded_point(false);
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": "batch-1", "alg": "ES256", "use": "sig",
        "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
    }]});
    (jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()), jwks)
}

fn client_assertion(
    key: &jsonwebtoken::EncodingKey,
    claims: Value,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let mut hd = jsonwebtoken::Header::new(alg);
    hd.kid = Some("batch-1".into());
    jsonwebtoken::encode(&hd, &claims, key).unwrap()
}

#[tokio::test]
async fn private_key_jwt_authenticates_a_client_once_per_assertion() {
    let h = provider("60s").await;
    let (key, jwks) = client_key();
    std::fs::write(h.dir.path().join("client-jwks.json"), jwks.to_string()).unwrap();
    let (b, _) = signed_in_code(&h).await;
    let batch_code = |b: &Browser| {
        let url =
            authorize_url(&h, &[]).replace("client_id=expense-reports", "client_id=expense-batch");
        let b = b.tab(false);
        async move {
            let r = b.get(url).send().await.unwrap();
            let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
            param(&loc, "code").unwrap()
        }
    };
    let token_endpoint = h.at("/_stepgate/oidc/token");
    let now = chrono::Utc::now().timestamp();
    let good = |jti: &str| {
        json!({ "iss": "expense-batch", "sub": "expense-batch", "aud": token_endpoint,
                "exp": now + 60, "iat": now, "jti": jti })
    };
    let exchange_with = |code: String, assertion: String| {
        let h = &h;
        async move {
            let r = reqwest::Client::new()
                .post(h.at("/_stepgate/oidc/token"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", "http://rp.test/cb"),
                    ("code_verifier", VERIFIER),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let es = jsonwebtoken::Algorithm::ES256;
    let code = batch_code(&b).await;
    // Refused, without using the code up: another key, the wrong audience or subject, an
    // HMAC "signature" with the public key as secret, no jti, alg none.
    let (other, _) = client_key();
    let hs = jsonwebtoken::EncodingKey::from_secret(jwks.to_string().as_bytes());
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","kid":"batch-1"}"#),
        b64(good("n").to_string().as_bytes())
    );
    let mut wrong_aud = good("a");
    wrong_aud["aud"] = json!("https://elsewhere.example");
    let mut wrong_sub = good("s");
    wrong_sub["sub"] = json!("expense-reports");
    let mut no_jti = good("x");
    no_jti.as_object_mut().unwrap().remove("jti");
    for (what, assertion) in [
        ("another key", client_assertion(&other, good("1"), es)),
        ("wrong aud", client_assertion(&key, wrong_aud, es)),
        ("wrong sub", client_assertion(&key, wrong_sub, es)),
        (
            "HS256",
            client_assertion(&hs, good("2"), jsonwebtoken::Algorithm::HS256),
        ),
        ("no jti", client_assertion(&key, no_jti, es)),
        ("alg none", none),
    ] {
        let (status, r) = exchange_with(code.clone(), assertion).await;
        assert_eq!(
            (status, r["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{what}: {r}"
        );
    }
    let assertion = client_assertion(&key, good("ok-1"), es);
    let (status, r) = exchange_with(code, assertion.clone()).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    // The same assertion again: refused, even with a fresh code.
    let (status, r) = exchange_with(batch_code(&b).await, assertion).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{r}"
    );
    // Nor does this client have a secret to try.
    let (status, _) = exchange(
        &h,
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "expense-batch"),
            ("client_secret", "guess"),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn client_credentials_gives_a_service_a_token_for_its_app_and_nothing_more() {
    let h = provider("60s").await;
    let cc = |client: &'static str, scope: &'static str| {
        let h = &h;
        async move {
            let r = reqwest::Client::new()
                .post(h.at("/_stepgate/oidc/token"))
                .basic_auth(client, Some(SECRET))
                .form(&[("grant_type", "client_credentials"), ("scope", scope)])
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, t) = cc("expense-sync", "profile").await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(
        t.get("id_token").is_none() && t.get("refresh_token").is_none(),
        "{t}"
    );
    let access = t["access_token"].as_str().unwrap();
    let i = introspect_as(&h, "expense-sync", access).await;
    assert_eq!(
        (i["active"].clone(), i["sub"].clone()),
        (json!(true), json!("expense-sync")),
        "{i}"
    );
    // The gateway takes it for the app; a route that needs a person's MFA challenges it.
    let api = support::client().build().unwrap();
    let url = |p: &str| format!("http://expenses.test:{}{p}", h.addr.port());
    let r = api
        .get(url("/expenses"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api
        .get(url("/reports/q3"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // No ID token to be had, and only clients allowed the grant.
    let (status, r) = cc("expense-sync", "openid").await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (status, r) = cc(CLIENT, "").await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
}
