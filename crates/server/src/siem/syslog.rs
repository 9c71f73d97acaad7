//! RFC 5424 syslog messages over TCP+TLS (RFC 5425), each framed by octet counting
//! (`LEN SP MSG`, RFC 6587 §3.4.1). The receiver's certificate must chain to the stream's
//! `ca_file` (and only to it) and carry `server_name` (default: the host of `address`); a
//! client certificate is offered when one is configured.
//!
//! A message: `<PRI>1 TIME HOST stepgate PID KIND - JSON`, with facility `authpriv` (10)
//! and severity informational for what worked, notice for refusals, warning for lockouts
//! and IP bans (OCSF severity 3 and up).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use futures_util::FutureExt as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use stepgate_config::{AuditStreamConfig, AuditStreamFormat};
use stepgate_store::AuditEvent;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::ocsf::{mapping, Status};
use super::Sink;

/// How long connecting (TCP and TLS) and writing a batch may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `authpriv`.
const FACILITY: u8 = 10;

pub(super) struct Syslog {
    name: String,
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    format: AuditStreamFormat,
    host: String,
    conn: Option<TlsStream<TcpStream>>,
}

fn certs(what: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{what}: cannot read {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what}: {} is not PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "{what}: {} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
            path.display()
        );
    }
    Ok(certs)
}

/// The TLS client settings of a stream: only `ca_file`'s CAs trusted, the client
/// certificate offered when configured.
pub(super) fn client_config(s: &AuditStreamConfig) -> anyhow::Result<rustls::ClientConfig> {
    let at = super::at(s);
    let ca = super::required(&at, "ca_file", s.ca_file.as_deref())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&format!("{at}: ca_file"), ca)? {
        roots.add(c).with_context(|| {
            format!("{at}: a certificate in {} is not a usable CA", ca.display())
        })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots);
    Ok(match (&s.client_cert_file, &s.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(&format!("{at}: client_cert_file"), cert)?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
                format!(
                    "{at}: client_key_file {} holds no PEM private key",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .with_context(|| format!("{at}: the client key does not match its certificate"))?
        }
        _ => builder.with_no_client_auth(),
    })
}

impl Syslog {
    pub(super) fn new(s: &AuditStreamConfig) -> anyhow::Result<Syslog> {
        let at = super::at(s);
        let address = super::required(&at, "address", s.address.as_ref())?.clone();
        let host = address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(&address);
        let name = s.server_name.as_deref().unwrap_or(host).to_string();
        let server_name = ServerName::try_from(name.clone())
            .with_context(|| format!("{at}: `{name}` is not a server name"))?;
        Ok(Syslog {
            name: s.name.clone(),
            address,
            server_name,
            connector: TlsConnector::from(Arc::new(client_config(s)?)),
            format: s.format,
            host: hostname(),
            conn: None,
        })
    }

    async fn connect(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .context("connecting timed out")?
            .with_context(|| format!("connecting to {}", self.address))?;
        let _ = tcp.set_nodelay(true);
        tokio::time::timeout(
            IO_TIMEOUT,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .context("the TLS handshake timed out")?
        .with_context(|| format!("the TLS handshake with {}", self.address))
    }

    /// One event as an RFC 5424 message.
    fn message(&self, e: &AuditEvent) -> String {
        let m = mapping(&e.kind);
        let severity: u8 = match (m.status, m.severity_id) {
            (_, s) if s >= 3 => 4,
            (Status::Failure, _) => 5,
            (Status::Success, _) => 6,
        };
        let msgid: String = e
            .kind
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(32)
            .collect();
        let body = super::render(self.format, e);
        format!(
            "<{}>1 {} {} stepgate {} {} - {}",
            FACILITY * 8 + severity,
            e.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            self.host,
            std::process::id(),
            if msgid.is_empty() { "-".into() } else { msgid },
            body
        )
    }
}

/// This machine's name (RFC 5424 HOSTNAME), `-` when unknown.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if name.is_empty() {
        "-".into()
    } else {
        name
    }
}

/// `LEN SP MSG` (octet counting).
pub(super) fn frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

#[async_trait]
impl Sink for Syslog {
    async fn deliver(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let mut bytes = Vec::new();
        for e in events {
            bytes.extend(frame(&self.message(e)));
        }
        // A receiver never writes: a connection that reads anything (its end, an error) was
        // closed by the receiver, and bytes written to it now would be lost unseen.
        if let Some(conn) = self.conn.as_mut() {
            let mut buf = [0u8; 64];
            if conn.read(&mut buf).now_or_never().is_some() {
                tracing::info!(stream = %self.name, "audit stream: the receiver closed the connection; reconnecting");
                self.conn = None;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
            tracing::info!(stream = %self.name, address = %self.address, "audit stream: connected");
        }
        let Some(conn) = self.conn.as_mut() else {
            anyhow::bail!("not connected");
        };
        let written = tokio::time::timeout(IO_TIMEOUT, async {
            conn.write_all(&bytes).await?;
            conn.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(anyhow::Error::new(e).context(format!("writing to {}", self.address)))
            }
            Err(_) => {
                self.conn = None;
                anyhow::bail!("writing to {} timed out", self.address)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_counting_counts_bytes() {
        assert_eq!(frame("<86>1 é"), b"8 <86>1 \xc3\xa9".to_vec());
    }
}
