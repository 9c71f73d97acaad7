//! The front proxy as the walk's client sees it: its origin, cookie-keeping clients, and
//! raw HTTP/1.1 requests over plain TCP or TLS (any certificate; signatures checked).

use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::Jar;

use crate::harness::ProxyProcess;
use crate::support::raw::{exchange, get_request, parse, RawAnswer};
use crate::support::{client, redirects, Browser};

/// A front proxy under test: where it listens (one port for the portal and the app).
pub struct Front<'a> {
    /// The running proxy (its name and log, for messages).
    pub proxy: &'a ProxyProcess,
    /// Whether it serves HTTPS (with a certificate the walk does not check).
    pub tls: bool,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Targets it rewrites before asking stepgate, and sends on rewritten: (sent, what
    /// stepgate and the app get instead).
    pub rewrites: Rewrites,
}

/// Targets a proxy rewrites before asking stepgate, and sends on rewritten: (sent, what
/// stepgate and the app get instead).
pub type Rewrites = &'static [(&'static [u8], &'static str)];

impl Front<'_> {
    pub(super) fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// `scheme://host:port`.
    pub fn origin(&self, host: &str) -> String {
        format!("{}://{host}:{}", self.scheme(), self.port)
    }

    /// A client of the proxy on `jar` (the test hosts resolve to loopback), following
    /// redirects or not.
    pub fn client(&self, jar: &Arc<Jar>, follow: bool) -> Browser {
        Browser::on(
            jar.clone(),
            client()
                .danger_accept_invalid_certs(self.tls)
                .timeout(Duration::from_secs(20))
                .redirect(redirects(follow)),
        )
    }

    /// `GET target` on `host` over a fresh HTTP/1.1 connection, written byte for byte with
    /// `headers` as given. A connection the proxy drops without an answer is status `0`.
    pub async fn raw(&self, host: &str, target: &[u8], headers: &[(String, String)]) -> RawAnswer {
        let lines: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let req = get_request(&format!("{host}:{}", self.port), target, &lines);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.proxy.name));
        let within = Duration::from_secs(20);
        let mut out = Vec::new();
        let done = if self.tls {
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
            match tls_connector().connect(name, tcp).await {
                Ok(s) => exchange(s, &req, &mut out, within).await,
                Err(e) => Err(e),
            }
        } else {
            exchange(tcp, &req, &mut out, within).await
        };
        match done {
            Ok(()) => parse(&out),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("{}: the proxy did not answer within 20 s", self.proxy.name)
            }
            Err(e) => RawAnswer {
                status: 0,
                head: String::new(),
                headers: Vec::new(),
                body: e.to_string(),
            },
        }
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Accepts the proxy's self-signed certificate (the walk is about what crosses it, not
/// about its identity); signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
