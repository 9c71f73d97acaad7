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
use mapping::Table;

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

    /// Whether `other` has the same configuration and secret (a reload keeps this one).
    pub fn same_as(&self, other: &Connector) -> bool {
        self.secret.0 == other.secret.0
            && serde_json::to_value(&self.cfg).ok() == serde_json::to_value(&other.cfg).ok()
    }

    /// Reads devices: all of them (`since` `None`), or those the UEM changed since then
    /// where its API can filter (Intune); elsewhere every sync is full.
    pub async fn fetch(&self, since: Option<DateTime<Utc>>) -> Result<Batch, ConnectorError> {
        let (raws, full): (Vec<(Table, serde_json::Value)>, bool) = match self.cfg.kind {
            ConnectorKind::Hexnode => (devices(hexnode::list(self).await?), true),
            ConnectorKind::Intune => (devices(intune::list(self, since).await?), since.is_none()),
            ConnectorKind::Jamf => (jamf::list(self).await?, true),
        };
        let now = Utc::now();
        let mut batch = Batch {
            full,
            ..Batch::default()
        };
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (table, raw) in raws {
            let mut m = match mapping::map_from(&self.cfg, table, &raw) {
                Ok(m) => m,
                Err(e) => {
                    batch.refused.push(e.to_string());
                    continue;
                }
            };
            clamp_future(&mut m.push, now);
            // The same device twice in one listing (a page boundary moving under a
            // concurrent change, or a UEM fault): the same answer is read once; different
            // answers leave nothing to trust, so the device is reported non-compliant.
            match at.get(&m.push.device_id) {
                None => {
                    at.insert(m.push.device_id.clone(), batch.devices.len());
                    batch.devices.push(m);
                }
                Some(&i) if batch.devices[i] == m => {}
                Some(&i) => {
                    let first = &mut batch.devices[i].push;
                    mapping::conflicting(first, &m.push, self.cfg.kind);
                    batch.refused.push(format!(
                        "connector `{}`: device `{}` was listed twice with different details; it is reported non-compliant until the UEM lists it once",
                        self.cfg.name, m.uem_id
                    ));
                }
            }
        }
        Ok(batch)
    }

    /// Reads one device by its UEM id ("Re-check my device"); `None` when the UEM no
    /// longer has it.
    pub async fn fetch_one(&self, uem_id: &str) -> Result<Option<PosturePush>, ConnectorError> {
        let raw = match self.cfg.kind {
            ConnectorKind::Hexnode => hexnode::one(self, uem_id)
                .await?
                .map(|v| (Table::Devices, v)),
            ConnectorKind::Intune => intune::one(self, uem_id)
                .await?
                .map(|v| (Table::Devices, v)),
            ConnectorKind::Jamf => jamf::one(self, uem_id).await?,
        };
        let Some((table, raw)) = raw else {
            return Ok(None);
        };
        let m = mapping::map_from(&self.cfg, table, &raw).map_err(|e| ConnectorError::Shape {
            connector: self.cfg.name.clone(),
            what: "device detail".into(),
            message: e.to_string(),
        })?;
        // The detail must be the device asked for, not another one the UEM answered with.
        if m.uem_id != uem_id {
            return Err(self.shape(
                "device detail",
                format!(
                    "asked for device `{uem_id}`, the answer is device `{}`",
                    m.uem_id
                ),
            ));
        }
        let mut push = m.push;
        clamp_future(&mut push, Utc::now());
        Ok(Some(push))
    }

    /// Refuses a page with more devices than `limit` (what the request asked for), or a
    /// listing past [`MAX_DEVICES`] (a UEM fault or a hostile answer; the sync fails and
    /// changes nothing).
    fn check_page(
        &self,
        what: &str,
        on_page: usize,
        before: usize,
        limit: usize,
    ) -> Result<(), ConnectorError> {
        if on_page > limit {
            return Err(self.shape(
                what,
                format!("{on_page} devices on one page, more than the {limit} asked for"),
            ));
        }
        if before + on_page > MAX_DEVICES {
            return Err(self.shape(what, format!("more than {MAX_DEVICES} devices")));
        }
        Ok(())
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

/// Most devices read in one listing.
const MAX_DEVICES: usize = 500_000;

fn devices(v: Vec<serde_json::Value>) -> Vec<(Table, serde_json::Value)> {
    v.into_iter().map(|d| (Table::Devices, d)).collect()
}

/// A report dated in the future (a UEM's clock or a malformed date) counts as made now: a
/// future date would keep the posture fresh for ever and make the UEM's real later reports
/// look older than it.
fn clamp_future(push: &mut PosturePush, now: DateTime<Utc>) {
    if let Some(t) = push.observed_at {
        if t > now {
            push.observed_at = Some(now);
        }
    }
}
