//! What the gateway answers when it refuses or cannot pass a request on: a page in the
//! portal's layout for a browser ([`error_page`]), JSON for an API client ([`api_refusal`]).

/// The parts every error page of the gateway has: the portal's layout (its stylesheet, no
/// inline script), a heading, the request's id as sent in `x-request-id`, and the
/// security headers. Returns the body.
pub async fn error_page(r: reqwest::Response, status: u16, heading: &str) -> String {
    assert_eq!(r.status(), status);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    let id = h["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 24, "{id}");
    // minijinja escapes `/` in attributes; read the page with it as written.
    let body = r.text().await.unwrap().replace("&#x2f;", "/");
    assert!(body.contains("/_stepgate/static/style.css"), "{body}");
    assert!(body.contains(&format!("<h1>{heading}</h1>")), "{body}");
    assert!(
        body.contains(&format!("<code id=\"request-id\">{id}</code>")),
        "the page shows the id the header names: {body}"
    );
    assert_eq!(
        body.matches("<script").count(),
        body.matches("<script src=").count(),
        "no inline script: {body}"
    );
    body
}

/// Sends `req` as an API client (`Accept: application/json`), checks the answer is
/// `status` with a request id, and returns its JSON.
pub async fn api_refusal(req: reqwest::RequestBuilder, status: u16) -> serde_json::Value {
    let r = req
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), status);
    assert!(r.headers().contains_key("x-request-id"));
    r.json().await.unwrap()
}
