//! Who may call the admin API: the OpenAPI document's routes each answer a problem
//! without credentials, each endpoint needs its scope, and expired, revoked and forged tokens
//! are refused.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::Value;
use stepgate_server::admin::tokens::{self, Scope};
use stepgate_server::admin::{BASE, ENDPOINTS};

use crate::common::*;

/// An endpoint's path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{username}", "john")
        .replace("{id}", "no-such-device")
        .replace("{handle}", "no-such-handle")
        .replace("{request_id}", "no-such-request")
        .replace("{version}", "1")
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_answers_a_problem_without_credentials() {
    let s = start().await;
    let r = call(&s, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["servers"][0]["url"],
        format!("{}/_stepgate{BASE}", s.public_url)
    );
    let mut operations = 0;
    for e in &ENDPOINTS {
        let op = &doc["paths"][e.path][e.method.as_str().to_ascii_lowercase()];
        assert_eq!(
            op["operationId"], e.operation,
            "{} {} is in the document",
            e.method, e.path
        );
        operations += 1;
        if e.operation == "openapi" {
            continue;
        }
        assert_eq!(op["x-required-scope"], e.scope.as_str());
        // The route exists (the router's answer would be the portal's 404 page) and wants
        // credentials.
        let m = Method::from_bytes(e.method.as_str().as_bytes()).unwrap();
        let r = call(&s, m, &concrete(e.path), None, body_for(e.operation)).await;
        let p = problem(r, 401).await;
        assert!(p["detail"].as_str().unwrap().contains("token"), "{p}");
    }
    let in_doc: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        in_doc, operations,
        "nothing in the document that is not a route"
    );
    // Anything else under the API is a problem document too, never the portal's page.
    problem(
        call(&s, Method::GET, "/nothing-here", None, None).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn every_endpoint_refuses_a_token_without_its_scope_and_serves_one_with_it() {
    let s = start().await;
    for e in ENDPOINTS.iter().filter(|e| e.operation != "openapi") {
        let m = Method::from_bytes(e.method.as_str().as_bytes()).unwrap();
        let others: Vec<Scope> = Scope::ALL.into_iter().filter(|x| *x != e.scope).collect();
        let without = token(&s.st, &format!("without-{}", e.operation), &others).await;
        let r = call(
            &s,
            m.clone(),
            &concrete(e.path),
            Some(&without),
            body_for(e.operation),
        )
        .await;
        let p = problem(r, 403).await;
        assert_eq!(p["required_scope"], e.scope.as_str(), "{}", e.operation);

        let with = token(&s.st, &format!("with-{}", e.operation), &[e.scope]).await;
        let r = call(&s, m, &concrete(e.path), Some(&with), body_for(e.operation)).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            !matches!(status.as_u16(), 401 | 403),
            "{} with its scope: {status} {text}",
            e.operation
        );
        assert!(status.as_u16() < 500, "{}: {status} {text}", e.operation);
    }
}

#[tokio::test]
async fn expired_revoked_and_forged_tokens_are_refused() {
    let s = start().await;
    let st = &s.st;
    let (expired, _) = tokens::create(
        st.stores.durable.as_ref(),
        "old",
        &[Scope::UsersRead],
        Utc::now() - Duration::seconds(1),
    )
    .await
    .unwrap();
    let revoked = token(st, "gone", &[Scope::UsersRead]).await;
    let live = token(st, "live", &[Scope::UsersRead]).await;
    assert_eq!(
        call(&s, Method::GET, "/users", Some(&revoked), None)
            .await
            .status(),
        200
    );
    assert!(st
        .stores
        .durable
        .revoke_admin_token("gone", Utc::now())
        .await
        .unwrap());

    let p = problem(
        call(&s, Method::GET, "/users", Some(&expired), None).await,
        401,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    let p = problem(
        call(&s, Method::GET, "/users", Some(&revoked), None).await,
        401,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    // A token of the right shape stepgate never issued, one with a character changed, and
    // the hash the store keeps presented as the token.
    let forged = format!("{}{}", tokens::TOKEN_PREFIX, "A".repeat(43));
    let mut changed = live.clone().into_bytes();
    let last = changed.len() - 1;
    changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    for bad in [forged, changed, tokens::token_hash(&live), "".into()] {
        let r = call(&s, Method::GET, "/users", Some(&bad), None).await;
        let r = problem(r, 401).await;
        assert_eq!(r["type"], "https://stepgate.dev/problems/unauthenticated");
    }
    let r = http()
        .get(api(&s, "/users"))
        .header("authorization", format!("Basic {live}"))
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    assert_eq!(
        call(&s, Method::GET, "/users", Some(&live), None)
            .await
            .status(),
        200
    );
}
