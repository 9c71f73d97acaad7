//! Authorization codes at the token endpoint: good once (a second use revokes what the
//! first issued), PKCE S256 that must match, expiry, and the binding to their redirect URI.

use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn a_code_is_good_once_and_its_second_use_revokes_what_the_first_issued() {
    let h = provider("60s").await;
    let (_b, code) = signed_in_code(&h).await;
    let (status, tokens) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&h, access).await["active"], true);

    let (status, again) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(again["error"], "invalid_grant");
    // What the first use issued is revoked.
    assert_eq!(introspect(&h, access).await["active"], false);
    assert_eq!(introspect(&h, refresh).await["active"], false);
    let (status, r) = exchange(
        &h,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        Some(SECRET),
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn pkce_must_be_s256_and_match() {
    let h = provider("60s").await;
    let (b, code) = signed_in_code(&h).await;
    // A wrong verifier, or none: refused, and the code is not burnt by the attempt.
    let (status, r) = redeem(
        &h,
        &code,
        "another-verifier-of-at-least-forty-three-characters-0000",
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, r) = exchange(
        &h,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri(&h)),
        ],
        Some(SECRET),
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (status, r) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{r}");

    // `plain` (or no method, which means plain) is refused at the authorize endpoint, to
    // the client's redirect URI.
    for method in [Some("plain"), None] {
        let mut url = authorize_url(&h, &[]).replace(
            &format!("&code_challenge={}", s256(VERIFIER)),
            &format!("&code_challenge={VERIFIER}"),
        );
        url = match method {
            Some(m) => url.replace(
                "code_challenge_method=S256",
                &format!("code_challenge_method={m}"),
            ),
            None => url.replace("&code_challenge_method=S256", ""),
        };
        let (status, loc) = answer(&b, &url).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let loc = loc.unwrap();
        assert_eq!(
            param(&loc, "error").as_deref(),
            Some("invalid_request"),
            "{loc}"
        );
        assert_eq!(param(&loc, "state").as_deref(), Some("st-1"));
        assert!(param(&loc, "code").is_none());
    }
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let h = provider("1s").await;
    let (_b, code) = signed_in_code(&h).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, r) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert!(
        r["error_description"].as_str().unwrap().contains("expired"),
        "{r}"
    );
}

#[tokio::test]
async fn a_code_is_bound_to_its_redirect_uri_and_a_forged_code_is_refused() {
    let h = provider("60s").await;
    let (_b, code) = signed_in_code(&h).await;
    let (status, r) = exchange(
        &h,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://rp.test/other"),
            ("code_verifier", VERIFIER),
        ],
        Some(SECRET),
    )
    .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let mut forged = code.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let (status, r) = redeem(&h, &String::from_utf8(forged).unwrap(), VERIFIER).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}
