//! The listeners' protocols: TLS with h2 and a client certificate, plain HTTP/2 with
//! prior knowledge, HEAD on both protocols, idle HTTP/2 connections told to go away, and
//! HTTP/1.1 connections timed only between requests.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::client;

#[tokio::test]
async fn tls_listener_serves_h2_and_passes_the_client_certificate_on() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "stepgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = KeyPair::generate().unwrap();
    let srv = CertificateParams::new(vec!["mtls.test".to_string(), "app.test".to_string()])
        .unwrap()
        .signed_by(&srv_key, &ca, &ca_key)
        .unwrap();
    let cli_key = KeyPair::generate().unwrap();
    let mut cli_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    cli_params
        .distinguished_name
        .push(DnType::CommonName, "laptop-7");
    cli_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cli = cli_params.signed_by(&cli_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), srv.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), srv_key.serialize_pem()).unwrap();

    let extra = "signals:\n  client_certificates:\n    authorities:\n      - { name: test-ca, ca_file: ca.pem }\n";
    let h = start_with(dir, extra).await;
    let tls = stepgate_config::TlsConfig {
        cert_file: "cert.pem".into(),
        key_file: "key.pem".into(),
        client_ca_file: Some("ca.pem".into()),
    };
    let server_cfg = stepgate_server::app::tls::server_config(&tls, h.dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = h.st.clone();
    tokio::spawn(async move {
        stepgate_server::app::tls::serve_tls_on(st, listener, server_cfg)
            .await
            .unwrap()
    });
    let client = |identity: bool| {
        let mut b = client()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
        if identity {
            let pem = format!("{}{}", cli.pem(), cli_key.serialize_pem());
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let url = format!("https://mtls.test:{}/who", addr.port());
    let token = h.idp.token(|_| {});

    let r = client(true)
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(r.status(), 200, "the certificate reached the policy");
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["proto"], "https");
    // HTTP/2 has no Host header; the upstream (HTTP/1.1) still learns the host asked for.
    let asked = format!("mtls.test:{}", addr.port());
    assert_eq!(seen["host_header"], asked.as_str());
    assert_eq!(seen["host"], asked.as_str(), "X-Forwarded-Host");

    let r = client(false)
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no certificate, denied by the policy");

    // The JWKS and the portal are served over TLS too.
    let r = client(false)
        .get(format!(
            "https://app.test:{}/.well-known/jwks.json",
            addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn plain_http2_with_prior_knowledge_is_served() {
    let h = start().await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c.get(format!("{}/healthz", h.base)).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = reqwest::get(format!("{}/healthz", h.base)).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

#[tokio::test]
async fn a_head_request_gets_a_gets_headers_and_no_body_on_both_protocols() {
    let h = start().await;
    let h1 = plain();
    let h2 = client().http2_prior_knowledge().build().unwrap();
    // An API refusal: a JSON body of stepgate's own, answered without the router.
    let url = h.url("api.test", "/v1/report");
    for (c, version) in [
        (h1, reqwest::Version::HTTP_11),
        (h2, reqwest::Version::HTTP_2),
    ] {
        let get = c
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(get.version(), version);
        let status = get.status();
        assert!(status.is_client_error(), "{status}");
        let body = get.bytes().await.unwrap();
        assert!(!body.is_empty());
        let head = c
            .head(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), status, "{version:?}");
        assert_eq!(
            head.headers()["content-length"],
            body.len().to_string().as_str(),
            "{version:?}: the length a GET would get"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "{version:?}");
    }
}

/// An HTTP/2 connection (prior knowledge) to the gateway, and a task that ends when the
/// gateway closes it.
async fn h2_connection(
    h: &Harness,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (send, tokio::spawn(async move { conn.await.unwrap_or(()) }))
}

/// Reads HTTP/2 frames until the server closes the connection: each frame's type, and
/// when the close came (or `None` if it had not come within `within`).
async fn frames_until_closed(
    s: &mut tokio::net::TcpStream,
    within: Duration,
) -> (Vec<u8>, Option<Instant>) {
    use tokio::io::AsyncReadExt as _;
    let mut types = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout_at(deadline, s.read_exact(&mut head)).await {
            Err(_) => return (types, None),
            Ok(Err(_)) => return (types, Some(Instant::now())),
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        types.push(head[3]);
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return (types, Some(Instant::now()));
        }
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_told_to_go_away_and_cut_off_if_it_stays() {
    use tokio::io::AsyncWriteExt as _;
    const GOAWAY: u8 = 0x7;
    let h = start_full(tempfile::tempdir().unwrap(), "", "  header_timeout: 1s\n").await;
    // A client that opens an HTTP/2 connection (preface and empty SETTINGS) and then says
    // nothing, not even the acknowledgements the protocol asks for.
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let opened = Instant::now();
    let (types, closed) = frames_until_closed(&mut s, Duration::from_secs(10)).await;
    let closed = closed.expect("the connection is closed");
    // Told why before it is closed: a GOAWAY frame, once the limit has passed.
    assert!(types.contains(&GOAWAY), "frames: {types:?}");
    assert!(closed - opened >= Duration::from_millis(900));
    // Whether hyper closes it after GOAWAY or the cut-off does, it is gone within twice
    // the limit (and some slack for a loaded machine).
    assert!(
        closed - opened < Duration::from_secs(5),
        "{:?}",
        closed - opened
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let h = start_full(tempfile::tempdir().unwrap(), "", "  header_timeout: 1s\n").await;
    let get = |host: &str, path: &str, token: Option<String>| {
        let mut b = hyper::Request::get(format!("http://{host}{path}"));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    // A connection that never sends a request is let go.
    let (_send, closed) = h2_connection(&h).await;
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap();

    // One request, then silence: closed no sooner than the limit after it.
    let (mut send, mut closed) = h2_connection(&h).await;
    let r = send
        .send_request(get(
            &format!("127.0.0.1:{}", h.addr.port()),
            "/healthz",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), &mut closed)
        .await
        .expect("closed once idle")
        .unwrap();
    assert!(answered.elapsed() >= Duration::from_millis(900));

    // A request in progress for three times the limit (the upstream's /slow answers after
    // 3 s) keeps its connection, quiet as it is, and is answered.
    let (mut send, closed) = h2_connection(&h).await;
    let r = send
        .send_request(get("api.test", "/slow", Some(h.idp.token(|_| {}))))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"late");
    assert!(!closed.is_finished(), "still open right after the answer");
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("closed once idle after it")
        .unwrap();
}

/// One HTTP/1.1 response read off `s` whole (its head and a `Content-Length` body), as text.
async fn http1_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or_else(|| panic!("no Content-Length: {head}"));
            if got.len() >= end + 4 + len {
                return String::from_utf8_lossy(&got[..end + 4 + len]).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// HTTP/1.1's header timeout counts from connecting or from the previous response's end,
/// never while a request is in progress: a request answered after three times the limit
/// keeps its connection, the next request on it is served, and the connection is closed
/// once it has been idle for the limit after that.
#[tokio::test]
async fn an_http1_connection_is_timed_only_between_requests() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let h = start_full(tempfile::tempdir().unwrap(), "", "  header_timeout: 1s\n").await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let token = h.idp.token(|_| {});
    let slow =
        format!("GET /slow HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {token}\r\n\r\n");
    s.write_all(slow.as_bytes()).await.unwrap();
    let first = http1_response(&mut s).await;
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("late"),
        "{first}"
    );
    // Sent well within the limit of the answer's end: served on the same connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let second = http1_response(&mut s).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    let answered = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed once idle")
        .unwrap_or(0);
    assert_eq!(n, 0, "an answer nobody asked for");
    assert!(answered.elapsed() >= Duration::from_millis(900));
    assert!(
        answered.elapsed() < Duration::from_secs(5),
        "{:?}",
        answered.elapsed()
    );
}
