//! Apps behind a test's stepgate, each on a free port of 127.0.0.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse as _, Response};
use axum::routing::any;

/// Serves `app`; its address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    a
}

/// An app that answers every request with `body`.
pub async fn text(body: &'static str) -> SocketAddr {
    serve(axum::Router::new().fallback(any(move || async move { body }))).await
}

/// A provider that is down: every request answered `500 down`.
pub async fn failing() -> SocketAddr {
    serve(axum::Router::new().fallback(any(|| async {
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
    })))
    .await
}

/// An app that answers every request with a JSON object of every header it received (names
/// in lower case, repeated ones joined with `, `), `"path"`, its target, and `"method"`;
/// except `/set-cookie?…`, which answers with each query pair (percent-decoded) as a
/// `Set-Cookie`.
pub async fn echo() -> SocketAddr {
    serve(axum::Router::new().fallback(any(echoed))).await
}

async fn echoed(method: Method, uri: Uri, h: HeaderMap) -> Response {
    if uri.path() == "/set-cookie" {
        let mut r = Response::new(axum::body::Body::from("set"));
        for pair in uri.query().unwrap_or("").split('&') {
            let v = percent_encoding::percent_decode_str(pair).decode_utf8_lossy();
            r.headers_mut().append("set-cookie", v.parse().unwrap());
        }
        return r;
    }
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &h {
        let v = String::from_utf8_lossy(v.as_bytes()).to_string();
        m.entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    m.insert("path".into(), uri.to_string());
    m.insert("method".into(), method.to_string());
    axum::Json(m).into_response()
}

/// An app that says whom stepgate told it the user is: `app saw user=<remote-user>
/// groups=<remote-groups> amr=<remote-amr> ` (`-` for a header that is missing).
pub async fn whoami() -> SocketAddr {
    serve(axum::Router::new().fallback(any(|h: HeaderMap| async move {
        let v = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        format!(
            "app saw user={} groups={} amr={} ",
            v("remote-user"),
            v("remote-groups"),
            v("remote-amr")
        )
    })))
    .await
}

/// Asserts that `page` is [`whoami`]'s, for `user`.
#[track_caller]
pub fn assert_saw(page: &super::Page, user: &str) {
    assert!(
        page.html.contains(&format!("app saw user={user} ")),
        "the app should have seen {user}: {} {}\n{}",
        page.status,
        page.url,
        page.html
    );
}
