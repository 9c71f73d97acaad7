//! TLS termination (rustls, HTTP/2 and HTTP/1.1 by ALPN) with an optional client
//! certificate request.
//!
//! With `server.tls.client_ca_file`, clients are asked for a certificate but not required
//! to send one; a certificate that is sent must chain to those CAs (rustls checks the
//! chain; the device signals check revocation and the rest). The presented chain (leaf
//! first, DER) goes into each request's extensions as
//! [`crate::access::signals::PeerCertificates`], and [`Tls`] marks the request as having come over
//! TLS (so `X-Forwarded-Proto: https` goes upstream).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stepgate_config::TlsConfig;
use tokio_rustls::TlsAcceptor;

use super::state::Shared;
use crate::access::signals::PeerCertificates;

/// Marks a request that arrived over stepgate's own TLS listener.
#[derive(Clone, Copy, Debug)]
pub struct Tls;

/// How long a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration from `server.tls` (paths relative to `base_dir`).
pub fn server_config(cfg: &TlsConfig, base_dir: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = certificate_chain(&base_dir.join(&cfg.cert_file))?;
    let key_path = base_dir.join(&cfg.key_file);
    let key = PrivateKeyDer::from_pem_file(&key_path).with_context(|| {
        format!(
            "server.tls.key_file: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &cfg.client_ca_file {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(&base_dir.join(ca))?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("server.tls: the private key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `server.tls.cert_file`'s certificate chain.
fn certificate_chain(cert_path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("server.tls.cert_file: cannot read {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "server.tls.cert_file: {} is not a PEM certificate chain",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "server.tls.cert_file: {} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
            cert_path.display()
        );
    }
    Ok(certs)
}

/// Asks clients for a certificate chaining to `server.tls.client_ca_file`'s CAs, and lets
/// those without one through.
fn client_verifier(
    ca_path: &Path,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_path).with_context(|| {
        format!(
            "server.tls.client_ca_file: cannot read {}",
            ca_path.display()
        )
    })? {
        let c = c.with_context(|| {
            format!(
                "server.tls.client_ca_file: {} is not PEM",
                ca_path.display()
            )
        })?;
        roots.add(c).with_context(|| {
            format!(
                "server.tls.client_ca_file: a certificate in {} is not a usable CA",
                ca_path.display()
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .context("server.tls.client_ca_file: no usable CA certificate")
}

/// Serves HTTPS on an already bound listener until SIGTERM/SIGINT (tests bind port 0).
pub async fn serve_tls_on(
    state: Shared,
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
) -> anyhow::Result<()> {
    super::reload::spawn_reloader(state.clone());
    let stop = super::reload::wait_for_stop();
    super::listen::serve_connections(
        state,
        super::listen::Incoming::Listener(listener),
        Some(TlsAcceptor::from(config)),
        stop,
    )
    .await
}

/// Completes the TLS handshake on an accepted connection (bounded in time) and returns the
/// stream with the client certificate chain it presented (leaf first, DER; empty if none).
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    PeerCertificates,
)> {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let chain: Vec<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|cs| cs.iter().map(|c| c.as_ref().to_vec()).collect())
        .unwrap_or_default();
    Some((tls, PeerCertificates(chain)))
}
