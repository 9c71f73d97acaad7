//! The provider's tokens and its token endpoint: forged and replayed ID tokens are
//! refused, garbage at the callback is audited at a bounded rate, and stepgate authenticates
//! itself with `private_key_jwt`.

use stepgate_store::UserRecord;

use crate::common::*;
use crate::support;
use crate::support::oidc_op::{free_port, link_after, Op};
use crate::support::upstream::assert_saw;
use crate::support::{audit, upstream, Browser, Page, Server};

/// Asserts the last sign-in was refused as `reason`, with no session.
async fn refused(s: &Setup, b: &Browser, page: &Page, reason: &str, count: usize) {
    assert_eq!(page.status, 401, "{}", page.html);
    assert!(
        page.html.contains("could not be verified") || page.html.contains("did not sign you in"),
        "{}",
        page.html
    );
    assert!(b.session_id(&s.h.base).is_none(), "no session");
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.len(), count, "{rows:?}");
    assert_eq!(
        rows[count - 1].detail["reason"],
        reason,
        "{:?}",
        rows[count - 1]
    );
}

#[tokio::test]
async fn forged_and_replayed_id_tokens_are_refused() {
    let Some(s) = start().await else { return };
    s.op.next("alice-sub", &["pwd", "mfa"], None, 0).await;

    // Signed with another key that claims the provider's key id, or a key id it never
    // published (the keys are fetched again, and it is still unknown).
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    for (n, kid) in [(1, "op-key-1"), (2, "rotated-2")] {
        let other = other.clone();
        s.tap
            .rewrite(move |t| sign(&claims_of(t), other.as_bytes(), kid));
        let b = Browser::new();
        let page = through_provider(&s, &b, "/").await;
        refused(&s, &b, &page, "bad_token", n).await;
    }
    let detail = audit(&s.h.st, Some("signin.upstream_refused")).await[1].detail["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("rotated-2"), "{detail}");

    // The provider's own key, but issued to another client.
    let key = s.op.key_pem.clone();
    s.tap.rewrite(move |t| {
        let mut c = claims_of(t);
        c["aud"] = "another-app".into();
        sign(&c, &key, "op-key-1")
    });
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    refused(&s, &b, &page, "bad_token", 3).await;
    // ... or to several, stepgate among them, with `azp` naming the other.
    let key = s.op.key_pem.clone();
    s.tap.rewrite(move |t| {
        let mut c = claims_of(t);
        c["aud"] = serde_json::json!(["stepgate", "another-app"]);
        c["azp"] = "another-app".into();
        sign(&c, &key, "op-key-1")
    });
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    refused(&s, &b, &page, "bad_token", 4).await;
    // Re-signed by the provider's key as it was: accepted (the rewrites alone failed).
    let key = s.op.key_pem.clone();
    s.tap
        .rewrite(move |t| sign(&claims_of(t), &key, "op-key-1"));
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    assert_saw(&page, "alice");

    // An earlier sign-in's genuine token, in a new sign-in: its nonce is not this one's.
    let first = s.tap.seen()[0].clone();
    s.tap.rewrite(move |_| first.clone());
    let b = Browser::new();
    let page = through_provider(&s, &b, "/").await;
    refused(&s, &b, &page, "bad_token", 5).await;

    // The same callback twice (its flow cookie stolen along with the URL): the token the
    // first one received, with the right nonce, is refused the second time.
    s.tap.clear();
    let b = Browser::not_following();
    let login = Page::open(&b, &s.h.at("/")).await;
    let mut r = b
        .get(s.h.at(&link_after(
            &login.html,
            "<a class=\"button secondary\" href=\"",
        )))
        .send()
        .await
        .unwrap();
    let callback = loop {
        let to = r.url().join(&support::header(&r, "location")).unwrap();
        if to.path().ends_with("/callback") {
            break to;
        }
        r = b.get(to).send().await.unwrap();
    };
    let flow_cookie = b
        .cookies(callback.as_str())
        .split("; ")
        .find(|c| c.starts_with("stepgate_upstream="))
        .unwrap()
        .to_string();
    let r = b.get(callback.clone()).send().await.unwrap();
    assert_eq!(r.status(), 303, "the genuine callback signs in");
    let genuine = s.tap.seen().last().unwrap().clone();
    s.tap.rewrite(move |_| genuine.clone());
    let attacker = Browser::not_following();
    let r = attacker
        .get(callback.clone())
        .header("cookie", &flow_cookie)
        .send()
        .await
        .unwrap();
    let page = Page::read(r).await;
    refused(&s, &attacker, &page, "bad_token", 6).await;
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert!(
        rows[5].detail["detail"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{:?}",
        rows[5]
    );

    // A callback this browser never started (no flow cookie): refused before any exchange.
    let page = Page::read(Browser::not_following().get(callback).send().await.unwrap()).await;
    assert_eq!(page.status, 401);
    assert_eq!(
        audit(&s.h.st, Some("signin.upstream_refused")).await.len(),
        7
    );
}

#[tokio::test]
async fn anonymous_garbage_at_the_callback_is_audited_at_a_bounded_rate_and_counted() {
    // A local `alice`, not linked: the provider's alice is refused by name.
    let Some(s) = start_with(CONFIG, vec![UserRecord::new("alice")]).await else {
        return;
    };
    let url =
        s.h.at("/_stepgate/login/upstream/corp/callback?code=x&state=y");
    let limit = stepgate_server::portal::upstream::ANONYMOUS_AUDIT_PER_MINUTE as usize;
    for _ in 0..limit + 7 {
        let page = Page::open(&Browser::new(), &url).await;
        assert_eq!(page.status, 401, "{}", page.html);
    }
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(
        rows.len(),
        limit,
        "at most the minute's allowance is written"
    );
    let key = stepgate_server::portal::upstream::suppressed_audit_key("corp");
    assert_eq!(s.h.st.stores.hot.get_counter(&key).await.unwrap(), 7);
    // A refusal that names a user is always written.
    s.op.next("alice-sub", &["pwd"], None, 0).await;
    let page = through_provider(&s, &Browser::new(), "/").await;
    assert_eq!(page.status, 403, "{}", page.html);
    let rows = audit(&s.h.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.len(), limit + 1);
    assert_eq!(rows[limit].actor.as_deref(), Some("alice"));
}

/// An ES256 key pair: its PKCS#8 PEM and its public JWK (`kid` `k1`).
fn es256_key() -> (String, serde_json::Value) {
    use base64::Engine as _;
    let k = rcgen::KeyPair::generate().unwrap();
    let raw = k.public_key_raw();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
        "kid": "k1", "use": "sig", "alg": "ES256",
    });
    (k.serialize_pem(), jwk)
}

#[tokio::test]
async fn private_key_jwt_authenticates_stepgate_at_the_token_endpoint() {
    let (pem, jwk) = es256_key();
    let (other_pem, _) = es256_key();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.pem"), &pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), &other_pem).unwrap();
    let op_port = free_port();
    let issuer = format!("http://127.0.0.1:{op_port}");
    // No tap: the assertion's audience is the provider's own token endpoint.
    let config = |key: &str| {
        CONFIG
            .replace(
                "    client_id: stepgate\n",
                "    client_id: stepgate-pkjwt\n",
            )
            .replace(
                "    client_secret: { inline_insecure: stepgate-secret }\n",
                &format!(
                    "    private_key_jwt: {{ key_file: \"{}\", key_id: k1 }}\n",
                    dir.path().join(key).display()
                ),
            )
            .replace(
                "\"DISCOVERY\"",
                "\"ISSUER/.well-known/openid-configuration\"",
            )
    };
    let upstream_url = upstream::whoami().await;
    // stepgate with the registered key, and another with a key the provider does not know.
    let h = Server::build(&config("client.pem"))
        .with("ISSUER", &issuer)
        .with("UPSTREAM", upstream_url)
        .start()
        .await;
    let h2 = Server::build(&config("other.pem"))
        .with("ISSUER", &issuer)
        .with("UPSTREAM", upstream_url)
        .start()
        .await;
    let callbacks = [&h, &h2]
        .map(|h| format!("{}/_stepgate/login/upstream/corp/callback", h.public_url))
        .join(" ");
    let jwk = jwk.to_string();
    let Some(op) = Op::start_with(op_port, &callbacks, &[("OP_PKJWT_JWK", &jwk)]).await else {
        return;
    };
    op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let b = Browser::new();
    let login = Page::open(&b, &h.at("/")).await;
    let page = Page::open(
        &b,
        &h.at(&link_after(
            &login.html,
            "<a class=\"button secondary\" href=\"",
        )),
    )
    .await;
    assert_saw(&page, "alice");

    // The other key: the provider's token endpoint refuses stepgate, and so the sign-in
    // is refused.
    op.next("alice-sub", &["pwd", "mfa"], None, 0).await;
    let b = Browser::new();
    let login = Page::open(&b, &h2.at("/")).await;
    let page = Page::open(
        &b,
        &h2.at(&link_after(
            &login.html,
            "<a class=\"button secondary\" href=\"",
        )),
    )
    .await;
    assert_eq!(page.status, 401, "{}", page.html);
    let rows = audit(&h2.st, Some("signin.upstream_refused")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].detail["reason"], "refused");
    assert!(
        rows[0].detail["detail"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{:?}",
        rows[0]
    );
}
