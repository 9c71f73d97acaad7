//! The audit log streamed to a SIEM (`audit.stream`): a syslog-over-TLS receiver (RFC 5425,
//! octet counting; a test CA made with rcgen, a client certificate required) and an HTTPS
//! webhook that refuses for a while. Each receives every audit event exactly once and in
//! order: across a receiver that is down, and across a stepgate restart in between (the
//! cursor is in the store).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use stepgate_store::{AuditQuery, NewAuditEvent};
use support::Server;
use tokio::io::AsyncReadExt as _;
use tokio::task::JoinHandle;

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://127.0.0.1:9
default_outcome: allow
audit:
  stream:
    - STREAM
"#;

/// A test CA, a server certificate for `localhost` and a client certificate, as PEM files in
/// `dir`; the server's rustls settings (client certificate required, from the same CA).
struct Pki {
    server: Arc<rustls::ServerConfig>,
}

fn pki(dir: &std::path::Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "SIEM test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca_cert, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, "stepgate");
    let client = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_cert.pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(server.pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        server: Arc::new(server),
    }
}

/// What a receiver got: each event's sequence number, in arrival order.
type Got = Arc<Mutex<Vec<i64>>>;

/// A receiver on a fixed address that can be taken down and brought back.
struct Receiver {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Receiver {
    fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Octet-counted frames (`LEN SP MSG`) out of `buf`, leaving a partial one.
fn frames(buf: &mut Vec<u8>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(sp) = buf.iter().position(|b| *b == b' ') {
        let len: usize = std::str::from_utf8(&buf[..sp])
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("not octet counting: {:?}", String::from_utf8_lossy(buf)));
        if buf.len() < sp + 1 + len {
            break;
        }
        out.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
        buf.drain(..sp + 1 + len);
    }
    out
}

/// Checks an RFC 5424 message and returns the sequence number its OCSF body carries.
fn syslog_seq(msg: &str) -> i64 {
    // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG
    let re = regex::Regex::new(
        r"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) stepgate (\d+) (\S{1,32}) - (\{.*\})$",
    )
    .unwrap();
    let c = re
        .captures(msg)
        .unwrap_or_else(|| panic!("not RFC 5424: {msg}"));
    let pri: u32 = c[1].parse().unwrap();
    assert_eq!(pri / 8, 10, "facility authpriv: {msg}");
    let body: Value = serde_json::from_str(&c[6]).unwrap();
    assert_eq!(body["metadata"]["product"]["name"], "stepgate");
    assert_eq!(
        c[5],
        body["unmapped"]["kind"].as_str().unwrap()[..]
            .chars()
            .take(32)
            .collect::<String>()
    );
    if body["unmapped"]["kind"] == "authn.lockout" {
        assert_eq!(pri % 8, 4, "a lockout is a warning");
        assert_eq!(body["class_uid"], 3001);
    }
    body["metadata"]["sequence"].as_i64().unwrap()
}

async fn syslog_receiver(
    addr: Option<SocketAddr>,
    tls: Arc<rustls::ServerConfig>,
    got: Got,
) -> Receiver {
    let l = tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let t = tasks.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let got = got.clone();
            let conn = tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    for m in frames(&mut buf) {
                        got.lock().unwrap().push(syslog_seq(&m));
                    }
                }
            });
            t.lock().unwrap().push(conn);
        }
    });
    tasks.lock().unwrap().push(accept);
    Receiver { addr, tasks }
}

/// Appends `n` events of assorted kinds; the kinds.
async fn append(st: &stepgate_server::Shared, n: usize) {
    let kinds = [
        "signin.success",
        "signin.denied",
        "authn.lockout",
        "factor.enrolled",
    ];
    for i in 0..n {
        let mut e = NewAuditEvent::now(kinds[i % kinds.len()]);
        e.actor = Some("jane".into());
        e.subject = Some("u-jane".into());
        e.ip = Some("203.0.113.9".into());
        e.detail = serde_json::json!({ "username": "jane", "i": i });
        st.stores.durable.append_audit(&e).await.unwrap();
    }
}

async fn head(st: &stepgate_server::Shared) -> i64 {
    st.stores
        .durable
        .list_audit(&AuditQuery {
            newest_first: true,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .first()
        .map_or(0, |e| e.seq)
}

/// Waits until `got` holds `1..=n` (and fails on anything else once it has as many).
async fn until_all(got: &Got, n: i64) {
    for _ in 0..300 {
        {
            let g = got.lock().unwrap();
            if g.len() as i64 >= n {
                assert_eq!(
                    *g,
                    (1..=n).collect::<Vec<_>>(),
                    "every event once, in order"
                );
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("only {:?} of 1..={n} arrived", got.lock().unwrap());
}

fn metric(st: &stepgate_server::Shared, name: &str) -> f64 {
    let text = st.metrics.encode(0);
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{stream=\"siem\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn syslog_over_tls_gets_every_event_once_across_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let got: Got = Arc::default();
    let rx = syslog_receiver(None, p.server.clone(), got.clone()).await;
    let stream = format!(
        "{{ name: siem, kind: syslog, address: \"127.0.0.1:{}\", server_name: localhost, ca_file: ca.pem, client_cert_file: client.pem, client_key_file: client.key, batch: 3, max_backoff: 2s }}",
        rx.addr.port()
    );
    let s = Server::build(CONFIG)
        .with("STREAM", &stream)
        .in_dir(dir)
        .state()
        .await;
    append(&s.st, 7).await;
    until_all(&got, head(&s.st).await).await;

    // The receiver goes away; events keep coming; it comes back on the same address.
    rx.down();
    append(&s.st, 5).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(metric(&s.st, "stepgate_audit_stream_failures_total") >= 1.0);
    assert!(metric(&s.st, "stepgate_audit_stream_lag_events") >= 5.0);
    let rx = syslog_receiver(Some(rx.addr), p.server.clone(), got.clone()).await;
    until_all(&got, head(&s.st).await).await;

    // stepgate stops; events are written while it is down (another node, the CLI); a new
    // stepgate on the same store carries on from the cursor.
    s.st.siem.stop().await;
    append(&s.st, 4).await;
    let n = head(&s.st).await;
    let key = s.key.clone();
    let again = Server::build(CONFIG)
        .with("STREAM", &stream)
        .in_dir(s.dir)
        .key(key)
        .state()
        .await;
    until_all(&got, n).await;
    // The cursor moves (and the lag is worked out) right after the receiver has the batch.
    for _ in 0..50 {
        if again
            .st
            .stores
            .durable
            .audit_stream_cursor("siem")
            .await
            .unwrap()
            == Some(n)
            && metric(&again.st, "stepgate_audit_stream_lag_events") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        again
            .st
            .stores
            .durable
            .audit_stream_cursor("siem")
            .await
            .unwrap(),
        Some(n)
    );
    assert_eq!(
        metric(&again.st, "stepgate_audit_stream_lag_events"),
        0.0,
        "caught up"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(got.lock().unwrap().len() as i64, n, "nothing sent twice");
    rx.down();
}

/// An HTTPS webhook receiver: refuses (503) the first `refuse` batches, then takes them;
/// every batch must carry the bearer token.
async fn webhook_receiver(
    tls: Arc<rustls::ServerConfig>,
    got: Got,
    refuse: usize,
) -> (SocketAddr, Arc<Mutex<usize>>) {
    use axum::http::{HeaderMap, StatusCode};
    let refused = Arc::new(Mutex::new(0usize));
    let r = refused.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, body: axum::Json<Vec<Value>>| {
            let got = got.clone();
            let r = r.clone();
            async move {
                assert_eq!(
                    h["authorization"], "Bearer hook-token-1",
                    "the bearer token"
                );
                {
                    let mut r = r.lock().unwrap();
                    if *r < refuse {
                        *r += 1;
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                }
                let mut g = got.lock().unwrap();
                for e in body.0 {
                    g.push(e["seq"].as_i64().expect("jsonl records carry seq"));
                }
                StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            });
        }
    });
    (addr, refused)
}

#[tokio::test]
async fn a_webhook_that_refuses_for_a_while_gets_every_event_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    std::fs::write(dir.path().join("hook.token"), "hook-token-1\n").unwrap();
    let got: Got = Arc::default();
    let (addr, refused) = webhook_receiver(p.server.clone(), got.clone(), 3).await;
    let stream = format!(
        "{{ name: siem, kind: webhook, url: \"https://localhost:{}/hook\", ca_file: ca.pem, client_cert_file: client.pem, client_key_file: client.key, secret_file: hook.token, format: jsonl, batch: 4, max_backoff: 1s }}",
        addr.port()
    );
    let s = Server::build(CONFIG)
        .with("STREAM", &stream)
        .in_dir(dir)
        .state()
        .await;
    append(&s.st, 10).await;
    until_all(&got, head(&s.st).await).await;
    assert_eq!(*refused.lock().unwrap(), 3, "three refusals, then taken");
    assert!(metric(&s.st, "stepgate_audit_stream_failures_total") >= 3.0);
    assert_eq!(
        metric(&s.st, "stepgate_audit_stream_delivered_total"),
        head(&s.st).await as f64
    );

    s.st.siem.stop().await;
    append(&s.st, 6).await;
    let n = head(&s.st).await;
    let again = Server::build(CONFIG)
        .with("STREAM", &stream)
        .in_dir(s.dir)
        .key(s.key.clone())
        .state()
        .await;
    until_all(&got, n).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(got.lock().unwrap().len() as i64, n, "nothing sent twice");
    again.st.siem.stop().await;
}

#[tokio::test]
async fn a_stream_whose_ca_cannot_be_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = stepgate_config::load_str(
        "t.yaml",
        &CONFIG.replace(
            "STREAM",
            "{ name: siem, kind: syslog, address: \"127.0.0.1:6514\", ca_file: missing.pem }",
        ),
        Some(dir.path()),
    )
    .unwrap();
    let err = match stepgate_server::siem::Streams::from_config(&cfg) {
        Ok(_) => panic!("a missing CA file must stop the start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("audit.stream `siem`: ca_file: cannot read") && err.contains("missing.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn two_nodes_deliver_each_event_once_and_one_takes_over_when_the_other_stops() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    std::fs::write(dir.path().join("hook.token"), "hook-token-1\n").unwrap();
    let got: Got = Arc::default();
    let (addr, _) = webhook_receiver(p.server.clone(), got.clone(), 0).await;
    let file = |n: &str| dir.path().join(n).display().to_string();
    let stream = format!(
        "{{ name: siem, kind: webhook, url: \"https://localhost:{}/hook\", ca_file: \"{}\", client_cert_file: \"{}\", client_key_file: \"{}\", secret_file: \"{}\", format: jsonl, batch: 4, max_backoff: 1s }}",
        addr.port(),
        file("ca.pem"),
        file("client.pem"),
        file("client.key"),
        file("hook.token"),
    );
    // Two nodes on one store (the data directory is the test's), each with the stream.
    let data = tempfile::tempdir().unwrap();
    let key = stepgate_store::SecretKey::generate();
    let node = || {
        let data = data.path().display().to_string();
        Server::build(CONFIG)
            .with("STREAM", &stream)
            .key(key.clone())
            .configure(move |c| c.server.data_dir = data)
            .state()
    };
    let (a, b) = (node().await, node().await);
    append(&a.st, 10).await;
    until_all(&got, head(&a.st).await).await;
    let delivering = |s: &support::State| metric(&s.st, "stepgate_audit_stream_delivering");
    assert_eq!(
        delivering(&a) + delivering(&b),
        1.0,
        "one node delivers, the other waits"
    );
    let (first, second) = if delivering(&a) == 1.0 {
        (a, b)
    } else {
        (b, a)
    };

    // The deliverer stops (giving its lease up): the other takes over from the cursor.
    first.st.siem.stop().await;
    append(&second.st, 6).await;
    let n = head(&second.st).await;
    until_all(&got, n).await;
    assert_eq!(delivering(&second), 1.0);
    second.st.siem.stop().await;
    assert_eq!(
        *got.lock().unwrap(),
        (1..=n).collect::<Vec<_>>(),
        "each event once, in order"
    );
}
