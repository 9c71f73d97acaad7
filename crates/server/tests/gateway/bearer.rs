//! Bearer tokens from a test issuer: allowed, stepped up with RFC 9470, refused for
//! another audience, a disabled user, or an issuer whose keys cannot be fetched.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::common::*;

#[tokio::test]
async fn bearer_tokens_allowed_stepped_up_and_refused() {
    let h = start().await;
    let c = plain();
    let call = |path: &str, token: String| c.get(h.url("api.test", path)).bearer_auth(token).send();

    // Allowed: the token's claims stand in for the session.
    let r = call("/data", h.idp.token(|_| {})).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["user"], "robot");
    assert_eq!(seen["aal"], "1");
    let claims = verify_assertion(
        &format!("{}/.well-known/jwks.json", h.base),
        seen["assertion"].as_str().unwrap(),
        "api",
        &h.base,
    )
    .await
    .unwrap();
    assert_eq!(claims["sub"], "svc-42");
    assert_eq!(claims["acr"], "aal1");

    // Stepped up: the admin route needs AAL2 within 5 minutes. RFC 9470, exactly.
    let hits = h.hits();
    let r = call("/admin", h.idp.token(|_| {})).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"insufficient_user_authentication\", error_description=\"Administration needs recent MFA.\", acr_values=\"aal2\", max_age=300"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");
    // AAL2 but authenticated too long ago: still not enough.
    let stale = h.idp.token(|c| {
        c["acr"] = "aal2".into();
        c["amr"] = serde_json::json!(["pwd", "otp"]);
        c["auth_time"] = (chrono::Utc::now().timestamp() - 3600).into();
    });
    assert_eq!(call("/admin", stale).await.unwrap().status(), 401);
    assert_eq!(h.hits(), hits, "never reached upstream");
    // The client comes back with a fresh AAL2 token: through.
    let fresh = h.idp.token(|c| {
        c["acr"] = "aal2".into();
        c["amr"] = serde_json::json!(["pwd", "otp"]);
    });
    let r = call("/admin", fresh).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["aal"], "2");

    // Refused: each of these is a 401 invalid_token and never reaches the upstream.
    let hits = h.hits();
    let (other_key, _) = es256_key();
    let mut hd = Header::new(Algorithm::ES256);
    hd.kid = Some(h.idp.kid.clone());
    let now = chrono::Utc::now().timestamp();
    let forged = jsonwebtoken::encode(
        &hd,
        &serde_json::json!({"iss": "https://issuer.test", "aud": "api", "sub": "x", "exp": now + 300}),
        &other_key,
    )
    .unwrap();
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"iss": "https://issuer.test", "aud": "api", "sub": "x", "exp": now + 300}),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    let cases = [
        ("bad signature", forged),
        ("wrong audience", h.idp.token(|c| c["aud"] = "other".into())),
        ("expired", h.idp.token(|c| c["exp"] = (now - 600).into())),
        (
            "not yet valid",
            h.idp.token(|c| c["nbf"] = (now + 600).into()),
        ),
        (
            "unknown issuer",
            h.idp.token(|c| c["iss"] = "https://evil.test".into()),
        ),
        ("HMAC", hs256),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in cases {
        let r = call("/data", token).await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            www.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {www}"
        );
    }
    assert_eq!(h.hits(), hits);
    // Unknown kid: the JWKS is fetched again (not more than once per 10 s).
    let fetches = h.idp.fetches.load(Ordering::SeqCst);
    let mut hd = Header::new(Algorithm::ES256);
    hd.kid = Some("rotated-away".into());
    let t = jsonwebtoken::encode(
        &hd,
        &serde_json::json!({"iss": "https://issuer.test", "aud": "api", "sub": "x", "exp": now + 300}),
        &h.idp.key,
    )
    .unwrap();
    assert_eq!(call("/data", t.clone()).await.unwrap().status(), 401);
    assert_eq!(call("/data", t).await.unwrap().status(), 401);
    assert!(h.idp.fetches.load(Ordering::SeqCst) <= fetches + 1);
}

#[tokio::test]
async fn an_app_with_its_own_audiences_refuses_tokens_minted_for_another() {
    let h = start().await;
    let c = plain();
    let call = |host: &str, token: String| c.get(h.url(host, "/data")).bearer_auth(token).send();
    // The issuer mints tokens for both apps; `api` lists its own audience.
    let for_console = || h.idp.token(|c| c["aud"] = "console".into());
    let hits = h.hits();
    let r = call("api.test", for_console()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
    assert_eq!(h.hits(), hits, "never reached upstream");
    // The same token is good where no app audience narrows the issuer's.
    assert_eq!(call("app.test", for_console()).await.unwrap().status(), 200);
    // A token for several audiences, one of them `api`: through.
    let both = h
        .idp
        .token(|c| c["aud"] = serde_json::json!(["console", "api"]));
    assert_eq!(call("api.test", both).await.unwrap().status(), 200);
}

#[tokio::test]
async fn bearer_token_for_a_disabled_user_is_refused() {
    let h = start().await;
    let c = plain();
    let call = || {
        c.get(h.url("api.test", "/data"))
            .bearer_auth(h.idp.token(|_| {}))
            .send()
    };
    // No local user named like the token's subject: the token alone decides.
    assert_eq!(call().await.unwrap().status(), 200);
    // An administrator creates and disables the user: the same valid token is refused at
    // once (the write drops the cached lookup) and never reaches the upstream.
    let mut robot = stepgate_store::UserRecord::new("robot");
    robot.disabled = true;
    h.st.stores.durable.create_user(&robot).await.unwrap();
    let hits = h.hits();
    let r = call().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error=\"invalid_token\""));
    assert_eq!(h.hits(), hits);
    // Enabled again: through.
    robot.disabled = false;
    h.st.stores.durable.update_user(&robot).await.unwrap();
    assert_eq!(call().await.unwrap().status(), 200);
}

#[tokio::test]
async fn bearer_issuer_keys_unreachable_is_401_never_allow() {
    let h = start().await;
    let rt = h.st.runtime.load();
    // The issuer's JWKS URL points at a closed port, and at a server that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    for url in [
        "http://127.0.0.1:1/jwks.json".to_string(),
        format!("http://{silent_addr}/jwks.json"),
    ] {
        let mut bearer = rt.config.gateway.bearer.clone();
        bearer.issuers[0].jwks_url = Some(url.clone());
        let v = stepgate_server::access::bearer::BearerVerifier::new();
        let started = Instant::now();
        let err = v
            .verify(&bearer, &rt.config.base_dir, &h.idp.token(|_| {}))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            stepgate_server::access::bearer::BearerError::KeysUnavailable,
            "{url}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the 2 s timeout holds"
        );
    }
    drop(silent);
}
