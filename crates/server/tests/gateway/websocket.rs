//! WebSocket pass-through, a WebSocket closed when its session ends, and one that outlives
//! the header timeout.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};

use crate::common::*;
use crate::support::Browser;

/// A WebSocket handshake request for `ws.test` (the WebSocket echo app), sent to the
/// gateway; the caller adds the credentials.
fn ws_request(h: &Harness) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://127.0.0.1:{}/socket", h.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "host",
        format!("ws.test:{}", h.addr.port()).parse().unwrap(),
    );
    req
}

/// A WebSocket to `ws.test` through the gateway, opened with a bearer token.
async fn bearer_websocket(
    h: &Harness,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = ws_request(h);
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", h.idp.token(|_| {})).parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test]
async fn websocket_passes_through() {
    use tokio_tungstenite::tungstenite::Message;
    let h = start().await;
    let mut ws = bearer_websocket(&h).await;
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m.into_text().unwrap().as_str(), format!("echo: hello {i}"));
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.into_data().as_ref(), &big[..]);
    ws.close(None).await.unwrap();

    // Without a token, no upgrade: stepgate answers the handshake itself and sends it to
    // sign in, as it does any request without credentials.
    let req = ws_request(&h);
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 303, "{r:?}");
            let to = r.headers()["location"].to_str().unwrap();
            assert!(to.contains("/_stepgate/login?t="), "{to}");
        }
        Err(e) => panic!("refused, but not by an HTTP answer: {e}"),
        Ok((_, r)) => panic!("upgraded without a token: {r:?}"),
    }
}

#[tokio::test]
async fn a_websocket_closes_when_its_session_ends() {
    use tokio_tungstenite::tungstenite::Message;
    let h = start().await;
    let c = Browser::new();
    sign_in_jane(&h, &c).await;
    let session = c.session_id(&h.url("app.test", "/")).unwrap();
    let mut req = ws_request(&h);
    req.headers_mut().insert(
        "cookie",
        format!("stepgate_session={session}").parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let echo = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, i: u32| {
        ws.send(Message::text(format!("hi {i}"))).await?;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(m))) => Ok(m.into_text()?.to_string()),
            other => Err(tokio_tungstenite::tungstenite::Error::Io(
                std::io::Error::other(format!("{other:?}")),
            )),
        }
    };
    // Checked every second while the session stands: stays open.
    assert_eq!(echo(&mut ws, 1).await.unwrap(), "echo: hi 1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(echo(&mut ws, 2).await.unwrap(), "echo: hi 2");
    // Signed out elsewhere (the session is deleted): closed at a following check.
    h.st.stores.hot.delete_session(&session).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the WebSocket outlived its session");
}

/// A connection switched to a WebSocket is no longer HTTP's to time: quiet for three times
/// `server.header_timeout`, it stays open and still carries messages both ways.
#[tokio::test]
async fn a_quiet_websocket_outlives_the_header_timeout() {
    use tokio_tungstenite::tungstenite::Message;
    let h = start_full(tempfile::tempdir().unwrap(), "", "  header_timeout: 1s\n").await;
    let mut ws = bearer_websocket(&h).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ws.send(Message::text("still there?")).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an echo within 5 s")
        .expect("the WebSocket was closed")
        .unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "echo: still there?");
}
