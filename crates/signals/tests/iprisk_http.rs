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
