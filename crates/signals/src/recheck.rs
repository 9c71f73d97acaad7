//! "Re-check my device": ask the UEM for fresh posture through a webhook, then wait a
//! bounded time for the posture push (or CAEP event) that answers it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::RecheckConfig;

/// Why a re-check request failed (the page says "could not reach device management").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecheckError {
    /// The bearer token environment variable is unset.
    #[error("devices.recheck: environment variable `{0}` (bearer_token_env) is not set")]
    MissingToken(String),
    /// The bearer token file cannot be read or is empty.
    #[error("{0}")]
    TokenFile(String),
    /// The webhook did not answer in time or failed.
    #[error("the re-check webhook {url} failed: {message}")]
    Webhook {
        /// URL.
        url: String,
        /// What happened.
        message: String,
    },
}

#[derive(Serialize)]
struct RecheckRequest<'a> {
    device_id: &'a str,
    owner: Option<&'a str>,
    requested_at: DateTime<Utc>,
}

/// The webhook client.
#[derive(Debug, Clone)]
pub struct RecheckClient {
    cfg: RecheckConfig,
    token: Option<String>,
    client: reqwest::Client,
}

impl RecheckClient {
    /// Builds the client, reading the bearer token from its file or environment variable.
    pub fn new(cfg: &RecheckConfig) -> Result<Self, RecheckError> {
        let token = match (&cfg.bearer_token_file, &cfg.bearer_token_env) {
            (Some(path), _) => Some(
                crate::config::read_secret_file("devices.recheck.bearer_token_file", path)
                    .map_err(RecheckError::TokenFile)?,
            ),
            (None, Some(v)) => {
                Some(std::env::var(v).map_err(|_| RecheckError::MissingToken(v.clone()))?)
            }
            (None, None) => None,
        };
        Ok(RecheckClient {
            cfg: cfg.clone(),
            token,
            client: reqwest::Client::new(),
        })
    }

    /// How long the user should wait for fresh posture.
    pub fn wait(&self) -> Duration {
        self.cfg.wait.0
    }

    /// POSTs `{"device_id", "owner", "requested_at"}` to the webhook.
    pub async fn request(
        &self,
        device_id: &str,
        owner: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), RecheckError> {
        let err = |message: String| RecheckError::Webhook {
            url: self.cfg.url.clone(),
            message,
        };
        let mut req = self
            .client
            .post(&self.cfg.url)
            .timeout(self.cfg.timeout.0)
            .json(&RecheckRequest {
                device_id,
                owner,
                requested_at: now,
            });
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            err(if e.is_timeout() {
                "timed out".into()
            } else {
                e.to_string()
            })
        })?;
        if !resp.status().is_success() {
            return Err(err(format!("HTTP {}", resp.status())));
        }
        Ok(())
    }
}

/// Announces device updates (from the push API or CAEP) to waiting re-checks.
#[derive(Debug, Clone)]
pub struct DeviceUpdateHub {
    tx: broadcast::Sender<String>,
}

impl Default for DeviceUpdateHub {
    fn default() -> Self {
        DeviceUpdateHub {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl DeviceUpdateHub {
    /// Tells waiters that `device_id` was updated.
    pub fn notify(&self, device_id: &str) {
        let _ = self.tx.send(device_id.to_owned());
    }

    /// Subscribes before sending the webhook, so no update can be missed.
    pub fn subscribe(&self) -> DeviceUpdateWaiter {
        DeviceUpdateWaiter {
            rx: self.tx.subscribe(),
        }
    }
}

/// A subscription from [`DeviceUpdateHub::subscribe`].
#[derive(Debug)]
pub struct DeviceUpdateWaiter {
    rx: broadcast::Receiver<String>,
}

impl DeviceUpdateWaiter {
    /// Waits up to `wait` for an update of `device_id`; true if one came.
    pub async fn wait_for(mut self, device_id: &str, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return false,
                Ok(Ok(id)) if id == device_id => return true,
                Ok(Ok(_)) => continue,
                // Missed messages: the device may have been among them; let the caller re-read it.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return true,
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepgate_policy::HumanDuration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn another_devices_update_does_not_end_the_wait() {
        let hub = DeviceUpdateHub::default();
        let w = hub.subscribe();
        hub.notify("other");
        hub.notify("mac-0041");
        // Only other devices were updated: the wait runs out (a wait that woke on any
        // update would say "updated" here).
        assert!(!w.wait_for("mac-0042", Duration::from_millis(200)).await);
    }

    #[tokio::test]
    async fn waits_past_other_devices_for_the_right_one() {
        let hub = DeviceUpdateHub::default();
        let w = hub.subscribe();
        let waiting =
            tokio::spawn(async move { w.wait_for("mac-0042", Duration::from_secs(30)).await });
        // Another device first: the waiter must keep waiting. `yield_now` lets it see that
        // update before the next is sent, so it cannot take both from the queue at once.
        hub.notify("other");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "the wait ended on another device's update"
        );
        hub.notify("mac-0042");
        assert!(
            waiting.await.unwrap(),
            "the right device's update ends the wait"
        );
    }

    #[tokio::test]
    async fn nothing_within_the_bound_is_no_update() {
        let hub = DeviceUpdateHub::default();
        let w = hub.subscribe();
        assert!(!w.wait_for("mac-0042", Duration::from_millis(30)).await);
    }

    /// A webhook on loopback that takes one request (read until it names `device`), answers
    /// 202, and hands back the request as it came.
    async fn webhook_once(
        device: &'static str,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains(device) {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).to_string()
        });
        (addr, server)
    }

    #[tokio::test]
    async fn webhook_posts_and_reports_failures() {
        let (addr, server) = webhook_once("mac-0042").await;
        let cfg = RecheckConfig {
            url: format!("http://{addr}/recheck"),
            bearer_token_env: None,
            bearer_token_file: None,
            timeout: HumanDuration::from_secs(5),
            wait: HumanDuration::from_secs(10),
        };
        let c = RecheckClient::new(&cfg).unwrap();
        c.request("mac-0042", Some("jane"), Utc::now())
            .await
            .unwrap();
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /recheck"), "{req}");
        assert!(req.contains("\"owner\":\"jane\""), "{req}");

        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = RecheckClient::new(&RecheckConfig {
            url: format!("http://{dead}/"),
            ..cfg.clone()
        })
        .unwrap();
        assert!(matches!(
            c.request("x", None, Utc::now()).await,
            Err(RecheckError::Webhook { .. })
        ));
        let e = RecheckClient::new(&RecheckConfig {
            bearer_token_env: Some("STEPGATE_TEST_SURELY_UNSET_VAR".into()),
            ..cfg
        })
        .unwrap_err();
        assert_eq!(
            e,
            RecheckError::MissingToken("STEPGATE_TEST_SURELY_UNSET_VAR".into())
        );
    }

    /// The token a `bearer_token_file` holds is what the webhook gets (without the file's
    /// final line break); a missing or empty file is an error naming the key, never a
    /// request without the token.
    #[tokio::test]
    async fn bearer_token_file_is_sent_and_a_bad_one_refused() {
        let dir = std::env::temp_dir().join(format!("stepgate-recheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "s3cr3t-from-a-file\n").unwrap();
        let (addr, server) = webhook_once("mac-7").await;
        let cfg = RecheckConfig {
            url: format!("http://{addr}/recheck"),
            // The file wins; this variable is never read.
            bearer_token_env: None,
            bearer_token_file: Some(file.clone()),
            timeout: HumanDuration::from_secs(5),
            wait: HumanDuration::from_secs(10),
        };
        let c = RecheckClient::new(&cfg).unwrap();
        c.request("mac-7", None, Utc::now()).await.unwrap();
        let req = server.await.unwrap().to_lowercase();
        assert!(
            req.contains("authorization: bearer s3cr3t-from-a-file\r\n"),
            "{req}"
        );

        std::fs::write(&file, "\n").unwrap();
        let e = RecheckClient::new(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("bearer_token_file") && e.contains("is empty"),
            "{e}"
        );
        let missing = RecheckConfig {
            bearer_token_file: Some(dir.join("absent")),
            ..cfg
        };
        let e = RecheckClient::new(&missing).unwrap_err().to_string();
        assert!(e.contains("bearer_token_file: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
