//! The `server:` section: where stepgate listens and how it sees the network.

use marked_yaml::Spanned;
use serde::Deserialize;
use stepgate_policy::HumanDuration;

/// `server:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// The URL users reach stepgate's portal at (scheme, host, port), used in redirects.
    /// Default: `http://` + `listen`.
    #[serde(default)]
    pub public_url: Option<Spanned<String>>,
    /// Where the embedded store and other state live (relative to the config file).
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Path prefix of the portal on every host stepgate serves.
    #[serde(default = "default_portal_path")]
    pub portal_path: String,
    /// TLS termination; absent: plain HTTP (behind a TLS-terminating proxy).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// The header the trusted proxies write the client address to: `x-forwarded-for` (the
    /// default) or `forwarded` (RFC 7239). Only that one is read: a client can send the
    /// other through a proxy that does not touch it.
    #[serde(default)]
    pub client_address_header: ClientAddressHeader,
    /// How long a signed return target (after login or step-up) stays valid.
    #[serde(default = "default_return_ttl")]
    pub return_target_ttl: HumanDuration,
    /// How long in-flight requests get to finish on SIGTERM.
    #[serde(default = "default_drain")]
    pub shutdown_grace: HumanDuration,
    /// Threads serving connections, each with its own event loop and upstream connection
    /// pool (new connections go to the least loaded); default: one per CPU core.
    #[serde(default)]
    pub workers: Option<Spanned<usize>>,
    /// How long an HTTP/1.1 client gets to send a request's headers, counted from when it
    /// connects or its previous response was sent (so it also closes idle keep-alive
    /// connections). Guards against clients that hold connections open sending nothing
    /// or a byte at a time. Default `75s`: longer than a load balancer's usual idle timeout
    /// (60 s), so one in front never reuses a connection stepgate is closing. An HTTP/2
    /// connection is closed once it has sent nothing and had no request in progress for
    /// this long.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// Where Prometheus scrapes `/metrics` (IP:PORT, a listener of its own with nothing
    /// else on it); absent: no metrics endpoint. Keep it off the public network.
    #[serde(default)]
    pub metrics_listen: Option<Spanned<String>>,
    /// The upstream identity provider (`identity_providers[].id`) the sign-in page sends
    /// everyone to at once, without showing the form; `?local` on the sign-in page still
    /// shows it (for local administrators). Unset: the page with every way to sign in.
    #[serde(default)]
    pub default_provider: Option<Spanned<String>>,
}

/// `server.client_address_header`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For`.
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// TLS files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// PEM CA bundle: when set, clients are asked for a certificate (optional) and it is
    /// validated against these CAs for the device signals.
    #[serde(default)]
    pub client_ca_file: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            public_url: None,
            data_dir: default_data_dir(),
            portal_path: default_portal_path(),
            tls: None,
            trusted_proxies: Vec::new(),
            client_address_header: ClientAddressHeader::default(),
            return_target_ttl: default_return_ttl(),
            shutdown_grace: default_drain(),
            workers: None,
            header_timeout: default_header_timeout(),
            metrics_listen: None,
            default_provider: None,
        }
    }
}

fn default_listen() -> Spanned<String> {
    Spanned::new(marked_yaml::Span::new_blank(), "127.0.0.1:8080".to_string())
}

fn default_data_dir() -> String {
    "data".into()
}

fn default_portal_path() -> String {
    "/_stepgate".into()
}

fn default_return_ttl() -> HumanDuration {
    HumanDuration::from_secs(600)
}

fn default_header_timeout() -> HumanDuration {
    HumanDuration::from_secs(75)
}

fn default_drain() -> HumanDuration {
    HumanDuration::from_secs(10)
}
