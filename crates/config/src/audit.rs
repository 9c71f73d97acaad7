//! The `audit:` section: where the audit log is streamed (a SIEM), besides the durable
//! store that always keeps it.
//!
//! ```yaml
//! audit:
//!   stream:
//!     - name: splunk                   # names the stream's cursor in the store: keep it
//!       kind: syslog                   # RFC 5424 over TCP+TLS, octet counting (RFC 6587/5425)
//!       address: siem.example.com:6514
//!       ca_file: /etc/stepgate/siem-ca.pem  # the only CA trusted for this stream
//!       client_cert_file: /etc/stepgate/siem-client.pem   # optional, with client_key_file
//!       client_key_file: /etc/stepgate/siem-client.key
//!     - name: sentinel
//!       kind: webhook                  # HTTPS POST of a JSON array per batch
//!       url: https://collector.example.com/stepgate
//!       secret_file: /etc/stepgate/siem-token   # sent as `Authorization: Bearer …`
//!       format: ocsf                   # or jsonl (stepgate's own audit records)
//! ```
//! Each stream delivers every audit event once, in order: it keeps the sequence number of
//! the last event delivered in the durable store and resumes after it.

use std::path::PathBuf;

use serde::Deserialize;
use stepgate_policy::HumanDuration;

/// `audit:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `audit.stream`: SIEM destinations.
    pub stream: Vec<AuditStreamConfig>,
}

/// One SIEM destination (`audit.stream[]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditStreamConfig {
    /// The stream's name; its delivery cursor is kept under it (rename it and the stream
    /// starts again from the first event).
    pub name: String,
    /// `syslog` or `webhook`.
    pub kind: AuditStreamKind,
    /// `ocsf` (default) or `jsonl`: the event as OCSF, or as stepgate's audit record.
    #[serde(default)]
    pub format: AuditStreamFormat,
    /// syslog: `host:port` of the receiver (TLS).
    #[serde(default)]
    pub address: Option<String>,
    /// webhook: the `https://` URL batches are POSTed to.
    #[serde(default)]
    pub url: Option<String>,
    /// PEM CA certificate(s): the only ones trusted to sign the receiver's certificate
    /// (required for syslog; for a webhook, replaces the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the receiver's certificate must carry (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM client certificate chain, sent when the receiver asks (with `client_key_file`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// webhook: a file holding the bearer token.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// webhook: an environment variable holding the bearer token.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Events per delivery, 1 to 10000. Default `100`.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The longest wait between two failed deliveries (the wait doubles from 1 s).
    /// Default `60s`.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
}

fn default_batch() -> usize {
    100
}

fn default_max_backoff() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// `audit.stream[].kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditStreamKind {
    /// RFC 5424 messages over TCP+TLS, framed by octet counting (RFC 5425 / RFC 6587).
    Syslog,
    /// HTTPS POST of a JSON array of events per batch.
    Webhook,
}

/// `audit.stream[].format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditStreamFormat {
    /// OCSF 1.1 (Authentication, Account Change, Base Event).
    #[default]
    Ocsf,
    /// stepgate's audit record as `stepgate audit export --format jsonl` writes it.
    Jsonl,
}

impl AuditConfig {
    /// The problems with these settings, in words (`audit.stream[N]…`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.stream.iter().enumerate() {
            let at = format!("audit.stream[{i}]");
            if s.name.trim().is_empty() {
                out.push(format!("{at}.name is empty: name the stream"));
            } else if !seen.insert(s.name.as_str()) {
                out.push(format!("{at}.name `{}` is used twice", s.name));
            }
            if !(1..=10_000).contains(&s.batch) {
                out.push(format!(
                    "{at}.batch is {}: expected 1 to 10000 events",
                    s.batch
                ));
            }
            if s.max_backoff.as_secs() < 1 {
                out.push(format!("{at}.max_backoff must be at least `1s`"));
            }
            if s.client_cert_file.is_some() != s.client_key_file.is_some() {
                out.push(format!(
                    "{at}: client_cert_file and client_key_file go together"
                ));
            }
            match s.kind {
                AuditStreamKind::Syslog => {
                    match &s.address {
                        None => {
                            out.push(format!("{at}: a syslog stream needs `address: host:port`"))
                        }
                        Some(a)
                            if a.rsplit_once(':')
                                .and_then(|(_, p)| p.parse::<u16>().ok())
                                .is_none() =>
                        {
                            out.push(format!("{at}.address `{a}` is not `host:port`"))
                        }
                        Some(_) => {}
                    }
                    if s.ca_file.is_none() {
                        out.push(format!(
                            "{at}: a syslog stream needs `ca_file` (the CA that signs the receiver's certificate)"
                        ));
                    }
                    if s.url.is_some() || s.secret_file.is_some() || s.secret_env.is_some() {
                        out.push(format!(
                            "{at}: url, secret_file and secret_env are for webhook streams"
                        ));
                    }
                }
                AuditStreamKind::Webhook => {
                    match &s.url {
                        None => out.push(format!("{at}: a webhook stream needs `url`")),
                        Some(u) if !u.starts_with("https://") => out.push(format!(
                            "{at}.url `{u}` is not https: audit events go over TLS only"
                        )),
                        Some(_) => {}
                    }
                    if s.address.is_some() {
                        out.push(format!("{at}: address is for syslog streams (use url)"));
                    }
                    if s.secret_file.is_some() && s.secret_env.is_some() {
                        out.push(format!(
                            "{at}: secret_file and secret_env are two ways to give one token: keep one"
                        ));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(kind: AuditStreamKind) -> AuditStreamConfig {
        AuditStreamConfig {
            name: "s".into(),
            kind,
            format: AuditStreamFormat::Ocsf,
            address: None,
            url: None,
            ca_file: None,
            server_name: None,
            client_cert_file: None,
            client_key_file: None,
            secret_file: None,
            secret_env: None,
            batch: 100,
            max_backoff: default_max_backoff(),
        }
    }

    #[test]
    fn streams_say_what_they_lack() {
        let mut syslog = stream(AuditStreamKind::Syslog);
        let mut hook = stream(AuditStreamKind::Webhook);
        hook.url = Some("http://collector.example.com/".into());
        let p = AuditConfig {
            stream: vec![syslog.clone(), hook.clone()],
        }
        .problems();
        assert!(p.iter().any(|m| m.contains("needs `address")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("needs `ca_file`")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("is used twice")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("is not https")), "{p:?}");
        syslog.address = Some("siem:6514".into());
        syslog.ca_file = Some("ca.pem".into());
        hook.name = "h".into();
        hook.url = Some("https://collector.example.com/".into());
        let ok = AuditConfig {
            stream: vec![syslog, hook],
        };
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
    }
}
