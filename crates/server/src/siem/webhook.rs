//! An HTTPS webhook: each batch is one `POST` of a JSON array of events
//! (`Content-Type: application/json`, `Authorization: Bearer <token>` when a secret is
//! configured). Any 2xx answer takes the batch; anything else (or no answer within 30 s)
//! is a failed delivery, retried. With `ca_file`, only its CAs are trusted for the receiver;
//! without it, the system's roots.

use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use stepgate_config::{AuditStreamConfig, AuditStreamFormat};
use stepgate_store::AuditEvent;

use super::Sink;

pub(super) struct Webhook {
    url: String,
    client: reqwest::Client,
    token: Option<String>,
    format: AuditStreamFormat,
}

impl Webhook {
    pub(super) fn new(s: &AuditStreamConfig) -> anyhow::Result<Webhook> {
        let at = super::at(s);
        let url = super::required(&at, "url", s.url.as_ref())?.clone();
        let token = bearer_token(s, &at)?;
        let client = client(s, &at)?
            .build()
            .with_context(|| format!("{at}: the HTTPS client"))?;
        Ok(Webhook {
            url,
            client,
            token,
            format: s.format,
        })
    }
}

/// The token sent as `Authorization: Bearer`: `secret_file`'s text or `secret_env`'s value,
/// trimmed; none when neither is set.
fn bearer_token(s: &AuditStreamConfig, at: &str) -> anyhow::Result<Option<String>> {
    let token = match (&s.secret_file, &s.secret_env) {
        (Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("{at}: secret_file: cannot read {}", f.display()))?,
        (None, Some(var)) => {
            std::env::var(var).with_context(|| format!("{at}: secret_env: ${var} is not set"))?
        }
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    if token.is_empty() {
        anyhow::bail!("{at}: the bearer token is empty");
    }
    Ok(Some(token.to_string()))
}

/// The HTTPS client's settings: HTTPS only, no redirects, the receiver trusted through
/// `ca_file` alone when it is set, the client certificate offered when configured.
fn client(s: &AuditStreamConfig, at: &str) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &s.ca_file {
        let pem = std::fs::read(ca)
            .with_context(|| format!("{at}: ca_file: cannot read {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{at}: ca_file: {} is not PEM", ca.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{at}: ca_file: {} holds no certificate", ca.display());
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&s.client_cert_file, &s.client_key_file) {
        let mut pem = std::fs::read(key)
            .with_context(|| format!("{at}: client_key_file: cannot read {}", key.display()))?;
        pem.extend(
            std::fs::read(cert).with_context(|| {
                format!("{at}: client_cert_file: cannot read {}", cert.display())
            })?,
        );
        let id = reqwest::Identity::from_pem(&pem)
            .with_context(|| format!("{at}: the client certificate or key is not usable"))?;
        b = b.identity(id);
    }
    Ok(b)
}

#[async_trait]
impl Sink for Webhook {
    async fn deliver(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let body: Vec<serde_json::Value> = events
            .iter()
            .map(|e| super::render(self.format, e))
            .collect();
        let mut req = self.client.post(&self.url).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("POST {}", self.url))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            anyhow::bail!("POST {} answered {status}", self.url)
        }
    }
}
