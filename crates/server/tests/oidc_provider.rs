//! stepgate as an OpenID Provider, driven by a relying party no one here wrote (authlib,
//! tests/oidc/rp.py) and, for what an honest client never does, by hand: a redirect URI
//! that was not registered is never redirected to, a code is good once (and its second use
//! revokes what the first issued), PKCE is S256 and must match, client secrets are checked,
//! codes expire.
//!
//! The RP needs `python3` with authlib, requests and pyotp (`.ci/run` installs them);
//! without them that test is skipped and counted in the run's "skipped: …" line, except
//! under `CI=true`.

mod support;

/// docs/gateway.md's Rust recipe for verifying the identity assertion, as an app compiles it.
#[allow(dead_code)]
mod recipe {
    include!("../../../examples/assertion/verify_assertion.rs");
}

use std::process::{Command, Stdio};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest as _;
use support::{password, upstream, user, Browser, Page, Passkey, Server, JANE};

const CLIENT: &str = "expense-reports";
const SECRET: &str = "s3cret-for-the-test-only";
const PUBLIC: &str = "expense-mobile";
const RP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/rp.py");

const CONFIG: &str = r#"
apps:
  - id: expenses
    name: Expense Reports
    hosts: [expenses.test]
    upstream: "http://UPSTREAM"
    routes:
      - { path: /reports/**, tags: [sensitive] }
  - { id: vault, name: Vault, hosts: [vault.test] }
sessions: { cookie: { secure: false } }
policies:
  - name: sign-in-with-a-password
    priority: 10
    targets: { sign_in: true }
    outcome: allow
  - name: vault-closed
    priority: 15
    targets: { apps: [vault] }
    outcome: { deny: { message: "The vault is closed." } }
  - name: reports-need-mfa
    priority: 20
    targets: { apps: [expenses], routes: [{ tags: [sensitive] }] }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 30
    outcome: allow
oidc:
  code_lifetime: CODE_LIFETIME
  pairwise_secret: { inline_insecure: "a-pairwise-key-for-the-test-only-0123456789" }
  clients:
    - id: expense-reports
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      post_logout_redirect_uris: ["http://rp.test/signed-out"]
      backchannel_logout_uri: "http://BCL/bcl"
      app: expenses
    - id: expense-audit
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      backchannel_logout_uri: "http://FLAKY/bcl"
      app: expenses
    - id: expense-rsa
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      id_token_signed_response_alg: RS256
      app: expenses
    - id: expense-ed
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      id_token_signed_response_alg: EdDSA
      app: expenses
    - id: books-web
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      subject_type: pairwise
      sector_identifier: books.example
      backchannel_logout_uri: "http://BCL/bcl"
      app: expenses
    - id: books-mobile
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      subject_type: pairwise
      sector_identifier: books.example
      app: expenses
    - id: rp-pairwise
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      subject_type: pairwise
      app: expenses
    - id: vault-web
      secret_hash: "SECRET_HASH"
      redirect_uris: ["http://rp.test/cb"]
      app: vault
    - id: expense-batch
      jwks_file: client-jwks.json
      redirect_uris: ["http://rp.test/cb"]
      app: expenses
    - id: expense-sync
      secret_hash: "SECRET_HASH"
      grant_types: [client_credentials]
      app: expenses
    - id: expense-mobile
      type: public
      scopes: [openid, profile]
      redirect_uris: ["http://rp.test/cb"]
      app: expenses
"#;

/// A cheap argon2id hash of `secret` (the test's; a deployment's is the default cost).
fn hash(secret: &str) -> String {
    let cheap = stepgate_authn::config::Argon2Config::insecure_for_tests();
    stepgate_authn::password::hash_secret(&cheap, secret.as_bytes()).unwrap()
}

/// A stepgate with the two clients, codes living `code_lifetime`. The redirect URIs are
/// on `rp.test`, which nothing serves: where stepgate sends a browser is read, never
/// followed.
async fn provider(code_lifetime: &str) -> Server {
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::echo().await)
        .with("CODE_LIFETIME", code_lifetime)
        .with("SECRET_HASH", hash(SECRET))
        .with("BCL", back_channel().0)
        .with("FLAKY", flaky_back_channel().0)
        .demo_users()
        .start()
        .await
}

fn redirect_uri(_h: &Server) -> String {
    "http://rp.test/cb".into()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn s256(verifier: &str) -> String {
    b64(&sha2::Sha256::digest(verifier.as_bytes()))
}

const VERIFIER: &str = "a-pkce-code-verifier-of-at-least-forty-three-characters-000";

fn authorize_url(h: &Server, extra: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&h.at("/_stepgate/oidc/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("client_id", CLIENT)
            .append_pair("redirect_uri", &redirect_uri(h))
            .append_pair("response_type", "code")
            .append_pair("scope", "openid profile")
            .append_pair("state", "st-1")
            .append_pair("code_challenge", &s256(VERIFIER))
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

/// The query of where an authorization request sends the browser (not followed).
async fn answer(b: &Browser, url: &str) -> (StatusCode, Option<url::Url>) {
    let r = b.tab(false).get(url).send().await.unwrap();
    let loc = r
        .headers()
        .get("location")
        .map(|l| url::Url::parse(l.to_str().unwrap()).unwrap());
    (r.status(), loc)
}

fn param(u: &url::Url, k: &str) -> Option<String> {
    u.query_pairs()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.into_owned())
}

/// A browser signed in as jane (password: the sign-in policy asks no more), and a code for
/// the confidential client.
async fn signed_in_code(h: &Server) -> (Browser, String) {
    let b = Browser::new();
    let r = password(&b, &h.at("/_stepgate/login"), &JANE).await;
    assert!(r.status().is_success(), "{}", r.status());
    let c = code(h, &b, &[]).await;
    (b, c)
}

async fn code(h: &Server, b: &Browser, extra: &[(&str, &str)]) -> String {
    let (status, loc) = answer(b, &authorize_url(h, extra)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let loc = loc.unwrap();
    assert!(loc.as_str().starts_with(&redirect_uri(h)), "{loc}");
    assert_eq!(param(&loc, "iss").as_deref(), Some(h.public_url.as_str()));
    param(&loc, "code").unwrap_or_else(|| panic!("no code: {loc}"))
}

async fn exchange(h: &Server, form: &[(&str, &str)], secret: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/token"))
        .form(form);
    if let Some(s) = secret {
        req = req.basic_auth(CLIENT, Some(s));
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn redeem(h: &Server, code: &str, verifier: &str) -> (StatusCode, Value) {
    exchange(
        h,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri(h)),
            ("code_verifier", verifier),
        ],
        Some(SECRET),
    )
    .await
}

async fn introspect(h: &Server, token: &str) -> Value {
    reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/introspect"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

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

/// Whether python3 has authlib, requests and pyotp; under `CI=true` it must.
fn python_has_authlib() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import authlib, requests, pyotp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but python3 has no authlib, requests and pyotp: .ci/run installs them"
        );
        support::skipped::record("python3 with authlib", "pip install authlib requests pyotp");
    }
    ok
}

#[tokio::test]
async fn authlib_signs_in_steps_up_refreshes_revokes_and_logs_out() {
    if !python_has_authlib() {
        return;
    }
    let h = provider("60s").await;
    let settings = json!({
        "issuer": h.public_url,
        "portal": "/_stepgate",
        "redirect_uri": redirect_uri(&h),
        "post_logout_uri": "http://rp.test/signed-out",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "public_client_id": PUBLIC,
        "username": JANE.username,
        "password": JANE.password,
        "totp_base32": JANE.totp_base32,
        "api": h.base,
        "api_host": format!("expenses.test:{}", h.addr.port()),
        "alg_clients": [["expense-rsa", "RS256"], ["expense-ed", "EdDSA"]],
    });
    let file = h.dir.path().join("rp.json");
    std::fs::write(&file, settings.to_string()).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg(RP)
        .arg(&file)
        .env("NO_PROXY", "*")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the RP failed after:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    for want in [
        "discovery",
        "code flow with PKCE, ID token verified via jwks_uri",
        "ID token signed with RS256 verified",
        "ID token signed with EdDSA verified",
        "userinfo",
        "acr_values=aal2 stepped up with TOTP",
        "a satisfying SSO session issues a code without a prompt",
        "essential acr aal3 unmet",
        "prompt=login re-authenticates (auth_time moves)",
        "max_age=0 re-authenticates (auth_time moves)",
        "max_age=3600 met by the session",
        "prompt=none without a session: login_required",
        "voluntary acr_values the user cannot reach",
        "refresh rotation and reuse detection",
        "revoke + introspect",
        "RFC 9470 loop through the gateway",
        "RP-initiated logout",
        "public client without PKCE refused",
    ] {
        assert!(checks.contains(&want), "missing `{want}` in:\n{stdout}");
    }
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

/// Pushes an authorization request (RFC 9126) for the confidential client; the answer.
async fn push(h: &Server, secret: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let s256 = s256(VERIFIER);
    let mut form = vec![
        ("redirect_uri", "http://rp.test/cb"),
        ("response_type", "code"),
        ("scope", "openid profile"),
        ("state", "st-par"),
        ("code_challenge", s256.as_str()),
        ("code_challenge_method", "S256"),
    ];
    form.extend_from_slice(extra);
    let r = reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/par"))
        .basic_auth(CLIENT, Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
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

type Received = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A relying party's back-channel logout endpoint, for the whole test binary (on a thread
/// of its own, so it outlives each test's runtime): where it listens, and the bodies posted
/// to it.
fn back_channel() -> &'static (std::net::SocketAddr, Received) {
    static BCL: std::sync::OnceLock<(std::net::SocketAddr, Received)> = std::sync::OnceLock::new();
    BCL.get_or_init(|| receiver(0))
}

/// Another client's endpoint, which answers `503` to the first two posts it gets (every
/// post is recorded).
fn flaky_back_channel() -> &'static (std::net::SocketAddr, Received) {
    static BCL: std::sync::OnceLock<(std::net::SocketAddr, Received)> = std::sync::OnceLock::new();
    BCL.get_or_init(|| receiver(2))
}

/// A loopback `POST /bcl` receiver that refuses its first `refuse` posts with `503`.
fn receiver(refuse: usize) -> (std::net::SocketAddr, Received) {
    let got: Received = Default::default();
    let keep = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route(
                "/bcl",
                axum::routing::post(move |body: String| {
                    let keep = keep.clone();
                    async move {
                        let n = {
                            let mut got = keep.lock().unwrap();
                            got.push(body);
                            got.len()
                        };
                        if n <= refuse {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                }),
            );
            axum::serve(l, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), got)
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
    let mut token = None;
    for _ in 0..100 {
        token = back_channel()
            .1
            .lock()
            .unwrap()
            .iter()
            .filter_map(|body| {
                url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "logout_token")
                    .map(|(_, v)| v.into_owned())
            })
            .find(|t| payload(t)["sid"] == json!(sid));
        if token.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let token = token.expect("a logout token for the session");
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

async fn introspect_as(h: &Server, client: &str, token: &str) -> Value {
    reqwest::Client::new()
        .post(h.at("/_stepgate/oidc/introspect"))
        .basic_auth(client, Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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

/// The claims of a JWT, unverified.
fn payload(jwt: &str) -> Value {
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
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
    let mut got = None;
    for _ in 0..100 {
        got = back_channel()
            .1
            .lock()
            .unwrap()
            .iter()
            .filter_map(|body| {
                url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "logout_token")
                    .map(|(_, v)| payload(&v))
            })
            .find(|c| c["aud"] == "books-web" && c["sid"] == sid);
        if got.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let got = got.expect("a logout token for books-web");
    assert_eq!(got["sub"], sub(&web), "{got}");
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
