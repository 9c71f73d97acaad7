//! Device connectors: stepgate pulls devices from a UEM's REST API (Hexnode UEM, Microsoft
//! Intune through Graph, Jamf Pro) instead of waiting for a push, and maps each to a
//! [`PosturePush`] the registry applies like any other (the server's
//! `devices::connectors` schedules syncs, applies them and re-evaluates live sessions).
//!
//! - [`config`] — the `devices.connectors:` section;
//! - [`mapping`] — the vendor's device object → stepgate's attributes and failing checks;
//! - `hexnode`, `intune`, `jamf` — each API's paging, tokens and detail calls;
//! - `http` — timeouts, retries with backoff, `Retry-After`.
//!
//! Failing closed: a sync that fails changes no device (their posture ages from the UEM's
//! last report and turns unknown after `devices.compliance.max_posture_age`); a device
//! whose compliance state the UEM does not give is reported non-compliant.

pub mod config;
mod hexnode;
mod http;
mod intune;
mod jamf;
pub mod mapping;

use std::path::Path;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

pub use config::{ConnectorConfig, ConnectorKind, OwnerMatch, SecretSource};
pub use mapping::MappedDevice;

use crate::device::PosturePush;

/// Why a connector could not be set up or a sync failed. Never holds the secret.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConnectorError {
    /// The secret could not be read.
    #[error("connector `{connector}`: {message}")]
    Secret {
        /// Connector.
        connector: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A request failed (after its retries).
    #[error("connector `{connector}`: {what}: {message}")]
    Http {
        /// Connector.
        connector: String,
        /// Which request.
        what: String,
        /// What happened.
        message: String,
    },
    /// The UEM refused the credentials.
    #[error("connector `{connector}`: the UEM refused the credentials ({what}); check the {hint}")]
    Unauthorized {
        /// Connector.
        connector: String,
        /// Which request.
        what: String,
        /// Which credential to check.
        hint: &'static str,
    },
    /// An answer did not have the documented shape.
    #[error("connector `{connector}`: {what}: unexpected answer: {message}")]
    Shape {
        /// Connector.
        connector: String,
        /// Which request.
        what: String,
        /// What was missing.
        message: String,
    },
}

/// A secret read at start; its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// One sync's devices.
#[derive(Debug, Default)]
pub struct Batch {
    /// The devices read (mapped).
    pub devices: Vec<MappedDevice>,
    /// Devices the mapping refused (counted as errors).
    pub refused: Vec<String>,
    /// Whether this was a full listing (devices absent from it may have left the UEM).
    pub full: bool,
}

/// A cached OAuth access token.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: Secret,
    pub until: DateTime<Utc>,
}

/// A configured connector: its HTTP client, secret and (OAuth) token.
#[derive(Debug)]
pub struct Connector {
    cfg: ConnectorConfig,
    secret: Secret,
    client: reqwest::Client,
    token: Mutex<Option<Token>>,
}

impl Connector {
    /// Reads the secret (a relative `file` against `base_dir`) and builds the client.
    pub fn new(cfg: &ConnectorConfig, base_dir: &Path) -> Result<Self, ConnectorError> {
        let err = |message: String| ConnectorError::Secret {
            connector: cfg.name.clone(),
            message,
        };
        let secret = match &cfg.secret {
            SecretSource::File(p) => {
                let p = if p.is_absolute() {
                    p.clone()
                } else {
                    base_dir.join(p)
                };
                std::fs::read_to_string(&p)
                    .map_err(|e| err(format!("secret file {}: {e}", p.display())))?
            }
            SecretSource::Env(v) => std::env::var(v).map_err(|_| {
                err(format!(
                    "secret: environment variable `{v}` is not set; export it with the {}",
                    secret_name(cfg.kind)
                ))
            })?,
            SecretSource::InlineInsecure(s) => s.clone(),
        };
        let secret = secret.trim().to_string();
        if secret.is_empty() {
            return Err(err(format!("the {} is empty", secret_name(cfg.kind))));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.timeout.0)
            .build()
            .map_err(|e| err(format!("HTTP client: {e}")))?;
        Ok(Connector {
            cfg: cfg.clone(),
            secret: Secret(secret),
            client,
            token: Mutex::new(None),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &ConnectorConfig {
        &self.cfg
    }

    /// Reads devices: all of them (`since` `None`), or those the UEM changed since then
    /// where its API can filter (Intune); elsewhere every sync is full.
    pub async fn fetch(&self, since: Option<DateTime<Utc>>) -> Result<Batch, ConnectorError> {
        let (raws, full) = match self.cfg.kind {
            ConnectorKind::Hexnode => (hexnode::list(self).await?, true),
            ConnectorKind::Intune => (intune::list(self, since).await?, since.is_none()),
            ConnectorKind::Jamf => (jamf::list(self).await?, true),
        };
        let mut batch = Batch {
            full,
            ..Batch::default()
        };
        for raw in raws {
            match mapping::map_device(&self.cfg, &raw) {
                Ok(m) => batch.devices.push(m),
                Err(e) => batch.refused.push(e.to_string()),
            }
        }
        Ok(batch)
    }

    /// Reads one device by its UEM id ("Re-check my device"); `None` when the UEM no
    /// longer has it.
    pub async fn fetch_one(&self, uem_id: &str) -> Result<Option<PosturePush>, ConnectorError> {
        let raw = match self.cfg.kind {
            ConnectorKind::Hexnode => hexnode::one(self, uem_id).await?,
            ConnectorKind::Intune => intune::one(self, uem_id).await?,
            ConnectorKind::Jamf => jamf::one(self, uem_id).await?,
        };
        let Some(raw) = raw else {
            return Ok(None);
        };
        mapping::map_device(&self.cfg, &raw)
            .map(|m| Some(m.push))
            .map_err(|e| ConnectorError::Shape {
                connector: self.cfg.name.clone(),
                what: "device detail".into(),
                message: e.to_string(),
            })
    }

    /// The UEM id of a stepgate device id this connector wrote (`hexnode-42` → `42`).
    pub fn uem_id<'a>(&self, device_id: &'a str) -> Option<&'a str> {
        device_id
            .strip_prefix(self.cfg.name.as_str())
            .and_then(|r| r.strip_prefix('-'))
            .filter(|r| !r.is_empty())
    }

    fn retrying(&self) -> http::Retrying<'_> {
        http::Retrying { cfg: &self.cfg }
    }

    fn shape(&self, what: &str, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Shape {
            connector: self.cfg.name.clone(),
            what: what.into(),
            message: message.into(),
        }
    }

    fn unauthorized(&self, what: &str) -> ConnectorError {
        ConnectorError::Unauthorized {
            connector: self.cfg.name.clone(),
            what: what.into(),
            hint: secret_name(self.cfg.kind),
        }
    }

    /// An OAuth 2.0 client-credentials access token (cached until a minute before it
    /// expires; `renew` forces a new one after a `401`).
    async fn bearer(&self, token_url: &str, renew: bool) -> Result<Secret, ConnectorError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            if !renew && t.until > Utc::now() {
                return Ok(t.value.clone());
            }
        }
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", self.cfg.client_id.clone().unwrap_or_default()),
            ("client_secret", self.secret.0.clone()),
        ];
        if let Some(s) = self.scope() {
            form.push(("scope", s));
        }
        let what = "token request";
        let answer = self
            .retrying()
            .send(what, || self.client.post(token_url).form(&form))
            .await?;
        let body = match answer {
            http::Answer::Json(b) => b,
            _ => return Err(self.unauthorized(what)),
        };
        let access = body
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| self.shape(what, "no `access_token`"))?;
        let life = body
            .get("expires_in")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(300);
        let t = Token {
            value: Secret(access.to_string()),
            until: Utc::now() + chrono::TimeDelta::seconds((life - 60).max(0)),
        };
        *cached = Some(t.clone());
        Ok(t.value)
    }

    fn scope(&self) -> Option<String> {
        match self.cfg.kind {
            ConnectorKind::Intune => Some(
                self.cfg
                    .scope
                    .clone()
                    .unwrap_or_else(|| "https://graph.microsoft.com/.default".into()),
            ),
            _ => self.cfg.scope.clone(),
        }
    }

    /// A GET with a bearer token from `token_url`, renewing the token once on `401`.
    async fn get_with_token(
        &self,
        token_url: &str,
        what: &str,
        url: &str,
    ) -> Result<Option<serde_json::Value>, ConnectorError> {
        for renew in [false, true] {
            let token = self.bearer(token_url, renew).await?;
            let answer = self
                .retrying()
                .send(what, || http::get(&self.client, url).bearer_auth(&token.0))
                .await?;
            match answer {
                http::Answer::Json(b) => return Ok(Some(b)),
                http::Answer::NotFound => return Ok(None),
                http::Answer::Unauthorized => continue,
            }
        }
        Err(self.unauthorized(what))
    }
}

/// What the secret is, for messages.
fn secret_name(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Hexnode => "Hexnode API key",
        ConnectorKind::Intune => "Entra app registration's client secret",
        ConnectorKind::Jamf => "Jamf Pro API client's secret",
    }
}

/// Most pages read in one listing (a loop guard against a UEM that never stops paging).
const MAX_PAGES: usize = 10_000;
