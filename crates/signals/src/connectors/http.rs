//! Requests to a UEM API: a timeout on each, retries with exponential backoff on network
//! errors, `429` and `5xx`, honouring `Retry-After` (seconds or an HTTP date) up to
//! `max_retry_after`. The secret never appears in an error or a log line.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::config::ConnectorConfig;
use super::ConnectorError;

/// What a retried request needs besides the URL.
pub(crate) struct Retrying<'a> {
    pub cfg: &'a ConnectorConfig,
}

/// A JSON answer, or an authentication failure the caller may fix (a token expired).
pub(crate) enum Answer {
    /// 2xx with its JSON body.
    Json(serde_json::Value),
    /// 401: the credentials (or a token) were refused.
    Unauthorized,
    /// 404.
    NotFound,
}

impl Retrying<'_> {
    /// Sends `build()` (rebuilt for each attempt) and reads a JSON answer.
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Answer, ConnectorError> {
        let cfg = self.cfg;
        let mut wait = cfg.backoff.0;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last = attempt > cfg.retries;
            let err = |message: String| ConnectorError::Http {
                connector: cfg.name.clone(),
                what: what.to_string(),
                message,
            };
            let resp = match build().timeout(cfg.timeout.0).send().await {
                Ok(r) => r,
                Err(e) => {
                    let m = if e.is_timeout() {
                        format!("timed out after {}", cfg.timeout)
                    } else {
                        // Without the URL (it may carry a query); never a header value.
                        chain(&e.without_url())
                    };
                    if last {
                        return Err(err(m));
                    }
                    tracing::warn!(connector = %cfg.name, what, attempt, error = %m, "UEM request failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                    continue;
                }
            };
            let status = resp.status();
            if status.is_success() {
                let bytes = capped(resp, MAX_BODY).await.map_err(err)?;
                let body = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|e| err(format!("the answer is not JSON: {e}")))?;
                return Ok(Answer::Json(body));
            }
            match status {
                StatusCode::UNAUTHORIZED => return Ok(Answer::Unauthorized),
                StatusCode::NOT_FOUND => return Ok(Answer::NotFound),
                s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                    let asked = retry_after(resp.headers());
                    if last {
                        return Err(err(format!("HTTP {s} after {attempt} attempts")));
                    }
                    let pause = match asked {
                        Some(a) if a > cfg.max_retry_after.0 => {
                            return Err(err(format!(
                                "HTTP {s} with Retry-After {} s, longer than max_retry_after {}",
                                a.as_secs(),
                                cfg.max_retry_after
                            )))
                        }
                        Some(a) => a,
                        None => wait,
                    };
                    tracing::warn!(connector = %cfg.name, what, status = %s, wait_ms = pause.as_millis() as u64, "UEM throttled or failed; retrying");
                    tokio::time::sleep(pause).await;
                    wait = wait.saturating_mul(2);
                }
                s => return Err(err(format!("HTTP {s}"))),
            }
        }
    }
}

/// The largest answer read (a page of 1000 detailed devices is a few MB).
pub(crate) const MAX_BODY: usize = 32 * 1024 * 1024;

/// The body, refused once it passes `max` bytes (never buffered past that).
async fn capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_big = || {
        format!(
            "the answer is larger than {} MB; lower `page_size`",
            max / (1024 * 1024)
        )
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {}", chain(&e.without_url())))?
    {
        if out.len() + chunk.len() > max {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `Retry-After` as a delay: delta-seconds or an HTTP date.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(d.to_std().unwrap_or(Duration::ZERO))
}

/// An error with its causes (`error sending request: … Connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A GET request.
pub(crate) fn get(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client.request(Method::GET, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::TimeDelta::seconds(30)).to_rfc2822();
        h.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
