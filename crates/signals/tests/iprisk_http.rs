//! The HTTP IP risk provider against a loopback server: score extraction and scaling,
//! caching, and what a timeout means under each `on_error` setting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stepgate_policy::HumanDuration;
use stepgate_signals::config::{HttpIpRiskConfig, ProviderFailure};
use stepgate_signals::iprisk::{HttpIpRiskProvider, IpRiskError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers `{"data": {"score": 7}}` (on a 0–10 scale), or never answers when `hang`.
async fn provider(hang: bool) -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if hang {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let body = r#"{"data":{"score":7}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/ip/{{ip}}"), hits)
}

fn cfg(url: String, on_error: ProviderFailure) -> HttpIpRiskConfig {
    HttpIpRiskConfig {
        url,
        score_path: "data.score".into(),
        score_max: 10.0,
        api_key_header: None,
        api_key_env: None,
        api_key_file: None,
        timeout: HumanDuration(Duration::from_millis(200)),
        cache_ttl: HumanDuration::from_secs(60),
        cache_size: 100,
        on_error,
        assume_score: 90,
    }
}

#[tokio::test]
async fn scores_are_scaled_and_cached() {
    let (url, hits) = provider(false).await;
    let p = HttpIpRiskProvider::new(&cfg(url, ProviderFailure::Fail)).unwrap();
    let ip = "203.0.113.9".parse().unwrap();
    assert_eq!(p.lookup(ip).await.unwrap(), Some(70));
    assert_eq!(p.lookup(ip).await.unwrap(), Some(70));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "second lookup from the cache"
    );
}

#[tokio::test]
async fn timeout_means_what_the_config_says() {
    let (url, _) = provider(true).await;
    let ip = "203.0.113.9".parse().unwrap();
    let fail = HttpIpRiskProvider::new(&cfg(url.clone(), ProviderFailure::Fail)).unwrap();
    match fail.lookup(ip).await {
        Err(IpRiskError::Provider { message, .. }) => {
            assert!(message.contains("timed out"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let unknown = HttpIpRiskProvider::new(&cfg(url.clone(), ProviderFailure::Unknown)).unwrap();
    assert_eq!(unknown.lookup(ip).await.unwrap(), None);
    let assume = HttpIpRiskProvider::new(&cfg(url, ProviderFailure::AssumeScore)).unwrap();
    assert_eq!(assume.lookup(ip).await.unwrap(), Some(90));
}

#[test]
fn url_must_have_the_placeholder() {
    let e = HttpIpRiskProvider::new(&cfg("http://x/".into(), ProviderFailure::Fail)).unwrap_err();
    assert!(matches!(e, IpRiskError::BadUrl(_)));
}

/// `api_key_file`: the key in the file (without its final line break) goes in
/// `api_key_header`; a file that cannot be read stops the provider from being built.
#[tokio::test]
async fn the_api_key_can_come_from_a_file() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"data":{"score":1}}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&got).to_lowercase()
    });
    let dir = std::env::temp_dir().join(format!("stepgate-iprisk-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("api.key");
    std::fs::write(&key, "key-from-file\r\n").unwrap();
    let mut c = cfg(format!("http://{addr}/ip/{{ip}}"), ProviderFailure::Fail);
    c.api_key_header = Some("Key".into());
    c.api_key_file = Some(key);
    let p = HttpIpRiskProvider::new(&c).unwrap();
    assert_eq!(
        p.lookup("203.0.113.7".parse().unwrap()).await.unwrap(),
        Some(10)
    );
    assert!(seen.await.unwrap().contains("\r\nkey: key-from-file\r\n"));

    c.api_key_file = Some(dir.join("absent.key"));
    let Err(e) = HttpIpRiskProvider::new(&c) else {
        panic!("a missing key file is refused");
    };
    let e = e.to_string();
    assert!(e.contains("api_key_file: cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
