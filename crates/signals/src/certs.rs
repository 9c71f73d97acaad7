//! Client certificates: chain validation against configured CAs (rustls-webpki), validity
//! period, revocation by CRL (files, or URLs cached until their nextUpdate) and OCSP
//! (responder from config or the certificate's AIA, cached), with a fail-open/fail-closed
//! setting per CA for an unknown revocation status.
//!
//! Nothing here panics on a peer's input: a bad certificate is a [`CertificateCheck`] with
//! `context.valid == false` and a typed [`CertificateProblem`] for the audit log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use der::{Decode, Encode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, TrustAnchor,
    UnixTime,
};
use serde::Serialize;
use sha2::Digest;
use stepgate_policy::CertificateContext;
use webpki::{EndEntityCert, KeyUsage};

use crate::config::{
    CertificateAuthorityConfig, ClientCertificatesConfig, ForwardedCertificateFormat, OcspMode,
    RevocationFailureMode,
};
use crate::device::{hex_encode, DeviceBinding};

/// A configuration problem with a certificate authority (reported at start).
#[derive(Debug, thiserror::Error)]
pub enum CertConfigError {
    /// A file could not be read.
    #[error("client_certificates `{authority}`: cannot read `{path}`: {message}")]
    Read {
        /// Authority name.
        authority: String,
        /// The file.
        path: PathBuf,
        /// I/O error.
        message: String,
    },
    /// No certificate in the CA file, or one webpki cannot use as a trust anchor.
    #[error("client_certificates `{authority}`: `{path}` {message}; it must hold PEM `CERTIFICATE` blocks")]
    BadCa {
        /// Authority name.
        authority: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Two authorities share a name.
    #[error("client_certificates: authority name `{0}` is used twice")]
    DuplicateName(String),
}

/// Why a client certificate is not accepted (for audit and the deny page).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(rename_all = "snake_case", tag = "problem")]
pub enum CertificateProblem {
    /// Not a parseable X.509 certificate.
    #[error("the client certificate is not a valid X.509 certificate ({detail})")]
    Malformed {
        /// Parser message.
        detail: String,
    },
    /// Past its notAfter.
    #[error("the client certificate expired; renew it from the device management system")]
    Expired,
    /// Before its notBefore.
    #[error("the client certificate is not valid yet; check the device clock or wait")]
    NotYetValid,
    /// Chains to no configured CA.
    #[error("the client certificate was issued by `{issuer}`, which is not a configured CA")]
    UnknownIssuer {
        /// The certificate's issuer DN.
        issuer: String,
    },
    /// Chain building failed for another reason (bad signature, wrong key usage, …).
    #[error("the client certificate chain is invalid: {detail}")]
    Invalid {
        /// webpki's reason.
        detail: String,
    },
    /// Revoked.
    #[error("the client certificate was revoked (by {by})")]
    Revoked {
        /// `crl` or `ocsp`.
        by: String,
    },
    /// Revocation status unknown and the CA's policy is fail-closed.
    #[error("the client certificate's revocation status could not be checked ({detail}) and the CA requires it")]
    RevocationUnknown {
        /// What failed.
        detail: String,
    },
}

/// One mechanism's revocation answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "detail")]
pub enum RevocationStatus {
    /// Checked: not revoked.
    Good,
    /// Checked: revoked.
    Revoked,
    /// Could not be determined (why).
    Unknown(String),
}

/// The result of checking one client certificate.
#[derive(Clone, Debug, Serialize)]
pub struct CertificateCheck {
    /// The policy engine's view.
    pub context: CertificateContext,
    /// The configured authority the chain ended at.
    pub authority: Option<String>,
    /// Whether that authority issues device certificates.
    pub device_ca: bool,
    /// Lower-case hex SHA-256 of the leaf's DER.
    pub sha256_fingerprint: String,
    /// Serial number, lower-case hex.
    pub serial: Option<String>,
    /// The leaf's subject common names and DNS / URI subject alternative names: a UEM's
    /// certificate profile puts the device's serial number there.
    pub names: Vec<String>,
    /// Expiry.
    pub not_after: Option<DateTime<Utc>>,
    /// CRL answer, when CRLs are configured.
    pub crl: Option<RevocationStatus>,
    /// OCSP answer, when OCSP applied.
    pub ocsp: Option<RevocationStatus>,
    /// Why it is not accepted.
    pub problem: Option<CertificateProblem>,
}

impl CertificateCheck {
    /// The device binding this certificate proves, when it is valid and from a device CA.
    pub fn device_binding(&self) -> Option<DeviceBinding> {
        (self.context.valid && self.device_ca).then(|| DeviceBinding::Certificate {
            sha256_fingerprint: self.sha256_fingerprint.clone(),
            names: self.names.clone(),
        })
    }
}

/// Why a forwarded certificate header could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardedCertError {
    /// Empty header.
    #[error("the forwarded client certificate header is empty")]
    Empty,
    /// Not in the configured encoding.
    #[error("the forwarded client certificate header is not {expected}; check `client_certificates.forwarded.format` matches the proxy")]
    Encoding {
        /// The configured format.
        expected: &'static str,
    },
}

/// Decodes a client certificate chain (leaf first) from a trusted proxy's header.
/// Only call this for requests from configured trusted proxies.
pub fn certificates_from_header(
    value: &str,
    format: ForwardedCertificateFormat,
) -> Result<Vec<Vec<u8>>, ForwardedCertError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ForwardedCertError::Empty);
    }
    let from_pem = |pem: &str, expected| {
        // Some proxies replace newlines with spaces; put them back inside the base64 body.
        let fixed = if pem.contains('\n') {
            pem.to_owned()
        } else {
            pem.replace(
                "-----BEGIN CERTIFICATE----- ",
                "-----BEGIN CERTIFICATE-----\n",
            )
            .replace(" -----END CERTIFICATE-----", "\n-----END CERTIFICATE-----")
        };
        let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(fixed.as_bytes())
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect();
        if certs.is_empty() {
            Err(ForwardedCertError::Encoding { expected })
        } else {
            Ok(certs)
        }
    };
    match format {
        ForwardedCertificateFormat::PemUrlencoded => {
            let pem = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| ForwardedCertError::Encoding {
                    expected: "URL-encoded PEM",
                })?;
            from_pem(&pem, "URL-encoded PEM")
        }
        ForwardedCertificateFormat::Pem => from_pem(value, "PEM"),
        ForwardedCertificateFormat::DerBase64 => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .map(|d| vec![d])
                .map_err(|_| ForwardedCertError::Encoding {
                    expected: "base64 DER",
                })
        }
        ForwardedCertificateFormat::Xfcc => {
            // x-forwarded-client-cert: By=...;Hash=...;Cert="<url-encoded PEM>";Chain="..."
            let first = value.split(',').next().unwrap_or("");
            let mut out = Vec::new();
            for key in ["Cert=", "Chain="] {
                if let Some(part) = first.split(';').find_map(|kv| kv.trim().strip_prefix(key)) {
                    let part = part.trim_matches('"');
                    let pem = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .map_err(|_| ForwardedCertError::Encoding { expected: "XFCC" })?;
                    out.extend(from_pem(&pem, "XFCC")?);
                }
            }
            if out.is_empty() {
                return Err(ForwardedCertError::Encoding {
                    expected: "XFCC with a Cert element",
                });
            }
            Ok(out)
        }
    }
}

struct Authority {
    cfg: CertificateAuthorityConfig,
    anchors: Vec<TrustAnchor<'static>>,
    /// CA and configured intermediate certificates (for OCSP CertIDs and chain building).
    ca_certs: Vec<CertificateDer<'static>>,
    intermediates: Vec<CertificateDer<'static>>,
}

struct CachedCrl {
    der: Vec<u8>,
    next_update: Option<SystemTime>,
    fetched: Instant,
    stamp: Option<(SystemTime, u64)>,
}

/// Validates client certificates against the configured authorities.
pub struct CertificateVerifier {
    authorities: Vec<Authority>,
    http: reqwest::Client,
    crl_cache: Mutex<HashMap<String, CachedCrl>>,
    ocsp_cache: Mutex<HashMap<String, (SystemTime, RevocationStatus)>>,
}

impl std::fmt::Debug for CertificateVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateVerifier")
            .field(
                "authorities",
                &self
                    .authorities
                    .iter()
                    .map(|a| &a.cfg.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

static SIG_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9), DER value bytes.
static OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

fn read_pem_certs(
    authority: &str,
    path: &PathBuf,
) -> Result<Vec<CertificateDer<'static>>, CertConfigError> {
    let bytes = std::fs::read(path).map_err(|e| CertConfigError::Read {
        authority: authority.to_owned(),
        path: path.clone(),
        message: e.to_string(),
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| CertConfigError::BadCa {
            authority: authority.to_owned(),
            path: path.clone(),
            message: format!("is not valid PEM ({e})"),
        })?;
    if certs.is_empty() {
        return Err(CertConfigError::BadCa {
            authority: authority.to_owned(),
            path: path.clone(),
            message: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn to_unix(t: DateTime<Utc>) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.timestamp().max(0) as u64))
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
}

fn crl_der(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.starts_with(b"-----") {
        if let Ok(c) = CertificateRevocationListDer::from_pem_slice(&bytes) {
            return c.as_ref().to_vec();
        }
    }
    bytes
}

fn crl_next_update(der: &[u8]) -> Option<SystemTime> {
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    let t = crl.next_update()?.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
}

impl CertificateVerifier {
    /// Loads the configured CAs and intermediates.
    pub fn new(cfg: &ClientCertificatesConfig) -> Result<Self, CertConfigError> {
        let mut authorities = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for a in &cfg.authorities {
            if !names.insert(a.name.clone()) {
                return Err(CertConfigError::DuplicateName(a.name.clone()));
            }
            let ca_certs = read_pem_certs(&a.name, &a.ca_file)?;
            let anchors = ca_certs
                .iter()
                .map(|c| webpki::anchor_from_trusted_cert(c).map(|t| t.to_owned()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CertConfigError::BadCa {
                    authority: a.name.clone(),
                    path: a.ca_file.clone(),
                    message: format!("has a certificate that cannot be a trust anchor ({e})"),
                })?;
            let intermediates = match &a.intermediates_file {
                Some(p) => read_pem_certs(&a.name, p)?,
                None => Vec::new(),
            };
            authorities.push(Authority {
                cfg: a.clone(),
                anchors,
                ca_certs,
                intermediates,
            });
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| CertConfigError::Read {
                authority: "-".into(),
                path: PathBuf::new(),
                message: format!("HTTP client: {e}"),
            })?;
        Ok(CertificateVerifier {
            authorities,
            http,
            crl_cache: Mutex::new(HashMap::new()),
            ocsp_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Checks a presented chain (leaf first, then any intermediates the client sent) at `now`.
    pub async fn verify(&self, chain: &[Vec<u8>], now: DateTime<Utc>) -> CertificateCheck {
        let Some(leaf_der) = chain.first() else {
            return malformed(String::new(), "no certificate".into());
        };
        let fingerprint = hex_encode(&sha2::Sha256::digest(leaf_der));
        let parsed = match x509_parser::parse_x509_certificate(leaf_der) {
            Ok((_, c)) => c,
            Err(e) => return malformed(fingerprint, e.to_string()),
        };
        let issuer = parsed.issuer().to_string();
        let subject = parsed.subject().to_string();
        let serial = Some(hex_encode(parsed.raw_serial()));
        let names = leaf_names(&parsed);
        let not_after = DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0);
        let aia_ocsp = ocsp_url_from_aia(&parsed);
        let mut check = CertificateCheck {
            context: CertificateContext {
                valid: false,
                issuer: Some(issuer.clone()),
                subject: Some(subject),
                revoked: None,
            },
            authority: None,
            device_ca: false,
            sha256_fingerprint: fingerprint,
            serial,
            names,
            not_after,
            crl: None,
            ocsp: None,
            problem: None,
        };
        let leaf = CertificateDer::from(leaf_der.as_slice());
        let ee = match EndEntityCert::try_from(&leaf) {
            Ok(e) => e,
            Err(e) => {
                check.problem = Some(CertificateProblem::Malformed {
                    detail: e.to_string(),
                });
                return check;
            }
        };
        let presented: Vec<CertificateDer<'_>> = chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let time = to_unix(now);

        let mut last_err = None;
        let mut matched = None;
        for a in &self.authorities {
            let mut inters = presented.clone();
            inters.extend(a.intermediates.iter().cloned());
            match ee.verify_for_usage(
                SIG_ALGS,
                &a.anchors,
                &inters,
                time,
                KeyUsage::client_auth(),
                None,
                None,
            ) {
                Ok(path) => {
                    let issuer_der = path
                        .intermediate_certificates()
                        .next()
                        .map(|c| c.der().to_vec())
                        .or_else(|| find_issuer(&a.ca_certs, &parsed))
                        .or_else(|| find_issuer(&a.intermediates, &parsed));
                    matched = Some((
                        a,
                        inters
                            .iter()
                            .map(|c| c.clone().into_owned())
                            .collect::<Vec<_>>(),
                        issuer_der,
                    ));
                    break;
                }
                Err(e) => {
                    let rank = |e: &webpki::Error| matches!(e, webpki::Error::UnknownIssuer) as u8;
                    if last_err.as_ref().is_none_or(|l| rank(l) >= rank(&e)) {
                        last_err = Some(e);
                    }
                }
            }
        }
        let Some((authority, inters, issuer_der)) = matched else {
            check.problem = Some(match last_err {
                Some(webpki::Error::CertExpired { .. }) => CertificateProblem::Expired,
                Some(webpki::Error::CertNotValidYet { .. }) => CertificateProblem::NotYetValid,
                Some(webpki::Error::UnknownIssuer) | None => {
                    CertificateProblem::UnknownIssuer { issuer }
                }
                Some(e) => CertificateProblem::Invalid {
                    detail: e.to_string(),
                },
            });
            return check;
        };
        check.authority = Some(authority.cfg.name.clone());
        check.device_ca = authority.cfg.device_ca;

        // Revocation: CRLs first (local or cached), then OCSP.
        let crls = self.crls_for(authority, now).await;
        if let Some(crls) = crls {
            check.crl = Some(match crls {
                Err(why) => RevocationStatus::Unknown(why),
                Ok(list) => {
                    let owned: Vec<webpki::CertRevocationList<'static>> = list
                        .iter()
                        .filter_map(|d| webpki::OwnedCertRevocationList::from_der(d).ok())
                        .map(webpki::CertRevocationList::from)
                        .collect();
                    let refs: Vec<&webpki::CertRevocationList<'_>> = owned.iter().collect();
                    match webpki::RevocationOptionsBuilder::new(&refs) {
                        Err(_) => RevocationStatus::Unknown("no CRL could be parsed".into()),
                        Ok(b) => {
                            let opts = b
                                .with_depth(webpki::RevocationCheckDepth::EndEntity)
                                .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                                .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                                .build();
                            match ee.verify_for_usage(
                                SIG_ALGS,
                                &authority.anchors,
                                &inters,
                                time,
                                KeyUsage::client_auth(),
                                Some(opts),
                                None,
                            ) {
                                Ok(_) => RevocationStatus::Good,
                                Err(webpki::Error::CertRevoked) => RevocationStatus::Revoked,
                                Err(webpki::Error::CrlExpired { .. }) => RevocationStatus::Unknown(
                                    "the CRL is past its nextUpdate".into(),
                                ),
                                Err(webpki::Error::UnknownRevocationStatus) => {
                                    RevocationStatus::Unknown(
                                        "no CRL from this certificate's issuer".into(),
                                    )
                                }
                                Err(e) => {
                                    RevocationStatus::Unknown(format!("CRL check failed: {e}"))
                                }
                            }
                        }
                    }
                }
            });
        }
        if authority.cfg.ocsp == OcspMode::IfAvailable
            && check.crl != Some(RevocationStatus::Revoked)
        {
            if let Some(url) = authority.cfg.ocsp_responder.clone().or(aia_ocsp) {
                check.ocsp = Some(match issuer_der {
                    None => RevocationStatus::Unknown(
                        "issuer certificate not available for OCSP".into(),
                    ),
                    Some(issuer) => self.ocsp(authority, &url, leaf_der, &issuer, now).await,
                });
            }
        }

        let statuses: Vec<(&str, &RevocationStatus)> =
            [("crl", check.crl.as_ref()), ("ocsp", check.ocsp.as_ref())]
                .into_iter()
                .filter_map(|(n, s)| s.map(|s| (n, s)))
                .collect();
        if let Some((by, _)) = statuses
            .iter()
            .find(|(_, s)| **s == RevocationStatus::Revoked)
        {
            check.context.revoked = Some(true);
            check.problem = Some(CertificateProblem::Revoked {
                by: (*by).to_owned(),
            });
            return check;
        }
        let unknown: Vec<String> = statuses
            .iter()
            .filter_map(|(n, s)| match s {
                RevocationStatus::Unknown(w) => Some(format!("{n}: {w}")),
                _ => None,
            })
            .collect();
        if !unknown.is_empty() {
            check.context.revoked = None;
            match authority.cfg.on_revocation_unknown {
                RevocationFailureMode::FailClosed => {
                    check.problem = Some(CertificateProblem::RevocationUnknown {
                        detail: unknown.join("; "),
                    });
                    return check;
                }
                RevocationFailureMode::FailOpen => {
                    tracing::warn!(authority = %authority.cfg.name, detail = %unknown.join("; "), "revocation status unknown; fail-open");
                }
            }
        } else if !statuses.is_empty() {
            check.context.revoked = Some(false);
        }
        check.context.valid = true;
        check
    }

    /// The CRLs for an authority: `None` when none are configured, `Err` when all failed.
    async fn crls_for(
        &self,
        a: &Authority,
        now: DateTime<Utc>,
    ) -> Option<Result<Vec<Vec<u8>>, String>> {
        if a.cfg.crl_files.is_empty() && a.cfg.crl_urls.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for path in &a.cfg.crl_files {
            let key = format!("file:{}", path.display());
            let stamp = file_stamp(path);
            let cached = {
                let cache = self.crl_cache.lock().unwrap_or_else(|p| p.into_inner());
                cache
                    .get(&key)
                    .filter(|c| c.stamp == stamp && stamp.is_some())
                    .map(|c| c.der.clone())
            };
            match cached {
                Some(d) => out.push(d),
                None => match std::fs::read(path) {
                    Ok(bytes) => {
                        let der = crl_der(bytes);
                        let entry = CachedCrl {
                            next_update: crl_next_update(&der),
                            der: der.clone(),
                            fetched: Instant::now(),
                            stamp,
                        };
                        self.crl_cache
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key, entry);
                        out.push(der);
                    }
                    Err(e) => errors.push(format!("{}: {e}", path.display())),
                },
            }
        }
        for url in &a.cfg.crl_urls {
            let key = format!("url:{url}");
            let now_st = system_time(now);
            let cached = {
                let cache = self.crl_cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.get(&key).map(|c| {
                    let fresh = match c.next_update {
                        Some(n) => now_st < n,
                        None => c.fetched.elapsed() < Duration::from_secs(3600),
                    };
                    (c.der.clone(), fresh)
                })
            };
            match cached {
                Some((der, true)) => out.push(der),
                stale => match self.fetch(url, a.cfg.revocation_timeout.0, None).await {
                    Ok(bytes) => {
                        let der = crl_der(bytes);
                        let entry = CachedCrl {
                            next_update: crl_next_update(&der),
                            der: der.clone(),
                            fetched: Instant::now(),
                            stamp: None,
                        };
                        self.crl_cache
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key, entry);
                        out.push(der);
                    }
                    Err(e) => {
                        // A stale copy still proves revocation; webpki reports it expired otherwise.
                        if let Some((der, _)) = stale {
                            out.push(der);
                        }
                        errors.push(format!("{url}: {e}"));
                    }
                },
            }
        }
        if out.is_empty() {
            Some(Err(errors.join("; ")))
        } else {
            Some(Ok(out))
        }
    }

    async fn fetch(
        &self,
        url: &str,
        timeout: Duration,
        ocsp_request: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        let req = match ocsp_request {
            Some(body) => self
                .http
                .post(url)
                .header("content-type", "application/ocsp-request")
                .header("accept", "application/ocsp-response")
                .body(body),
            None => self.http.get(url),
        };
        let resp = req.timeout(timeout).send().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                format!("unreachable ({e})")
            }
        })?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("read failed ({e})"))?;
        Ok(bytes.to_vec())
    }

    async fn ocsp(
        &self,
        a: &Authority,
        url: &str,
        leaf_der: &[u8],
        issuer_der: &[u8],
        now: DateTime<Utc>,
    ) -> RevocationStatus {
        let (leaf, issuer) = match (
            x509_cert::Certificate::from_der(leaf_der),
            x509_cert::Certificate::from_der(issuer_der),
        ) {
            (Ok(l), Ok(i)) => (l, i),
            _ => return RevocationStatus::Unknown("certificate not decodable for OCSP".into()),
        };
        let req = match x509_ocsp::Request::from_cert::<sha1::Sha1>(&issuer, &leaf) {
            Ok(r) => r,
            Err(e) => return RevocationStatus::Unknown(format!("cannot build OCSP request ({e})")),
        };
        let cert_id = req.req_cert.clone();
        let key = format!(
            "{url}|{}|{}",
            hex_encode(cert_id.issuer_key_hash.as_bytes()),
            hex_encode(cert_id.serial_number.as_bytes())
        );
        let now_st = system_time(now);
        if let Some((until, status)) = self
            .ocsp_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if now_st < *until {
                return status.clone();
            }
        }
        let body = match x509_ocsp::builder::OcspRequestBuilder::default()
            .with_request(req)
            .build()
            .to_der()
        {
            Ok(b) => b,
            Err(e) => {
                return RevocationStatus::Unknown(format!("cannot encode OCSP request ({e})"))
            }
        };
        let resp = match self
            .fetch(url, a.cfg.revocation_timeout.0, Some(body))
            .await
        {
            Ok(r) => r,
            Err(e) => return RevocationStatus::Unknown(format!("OCSP responder {url} {e}")),
        };
        match check_ocsp_response(&resp, &cert_id, issuer_der, now) {
            Ok((status, next_update)) => {
                let cap = now_st + a.cfg.ocsp_cache_max.0;
                let until = next_update.map_or(cap, |n| n.min(cap));
                self.ocsp_cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (until, status.clone()));
                status
            }
            Err(e) => RevocationStatus::Unknown(format!("OCSP response from {url} rejected: {e}")),
        }
    }

    /// Turns a check into the request's certificate context (absent when none was presented).
    pub fn context(check: Option<&CertificateCheck>) -> Option<CertificateContext> {
        check.map(|c| c.context.clone())
    }
}

/// Subject common names, then DNS and URI subject alternative names.
fn leaf_names(c: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut out: Vec<String> = c
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(s) | GeneralName::URI(s) = n {
                out.push((*s).to_string());
            }
        }
    }
    out
}

fn malformed(fingerprint: String, detail: String) -> CertificateCheck {
    CertificateCheck {
        context: CertificateContext::default(),
        authority: None,
        device_ca: false,
        sha256_fingerprint: fingerprint,
        serial: None,
        names: Vec::new(),
        not_after: None,
        crl: None,
        ocsp: None,
        problem: Some(CertificateProblem::Malformed { detail }),
    }
}

fn find_issuer(
    certs: &[CertificateDer<'_>],
    leaf: &x509_parser::certificate::X509Certificate<'_>,
) -> Option<Vec<u8>> {
    certs.iter().find_map(|c| {
        let (_, p) = x509_parser::parse_x509_certificate(c).ok()?;
        (p.subject().as_raw() == leaf.issuer().as_raw()).then(|| c.as_ref().to_vec())
    })
}

fn ocsp_url_from_aia(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityInfoAccess(aia) => aia.accessdescs.iter().find_map(|d| {
                (d.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP)
                    .then_some(&d.access_location)
                    .and_then(|l| match l {
                        GeneralName::URI(u) => Some((*u).to_owned()),
                        _ => None,
                    })
            }),
            _ => None,
        })
}

fn algorithms_for(
    oid: &der::asn1::ObjectIdentifier,
) -> Vec<&'static dyn SignatureVerificationAlgorithm> {
    match oid.to_string().as_str() {
        "1.2.840.10045.4.3.2" => vec![
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P384_SHA256,
        ],
        "1.2.840.10045.4.3.3" => vec![
            webpki::ring::ECDSA_P384_SHA384,
            webpki::ring::ECDSA_P256_SHA384,
        ],
        "1.2.840.113549.1.1.11" => vec![webpki::ring::RSA_PKCS1_2048_8192_SHA256],
        "1.2.840.113549.1.1.12" => vec![webpki::ring::RSA_PKCS1_2048_8192_SHA384],
        "1.2.840.113549.1.1.13" => vec![webpki::ring::RSA_PKCS1_2048_8192_SHA512],
        "1.3.101.112" => vec![webpki::ring::ED25519],
        _ => Vec::new(),
    }
}

fn verify_with(
    cert_der: &[u8],
    algs: &[&dyn SignatureVerificationAlgorithm],
    msg: &[u8],
    sig: &[u8],
) -> bool {
    let der = CertificateDer::from(cert_der);
    let Ok(ee) = EndEntityCert::try_from(&der) else {
        return false;
    };
    algs.iter()
        .any(|alg| ee.verify_signature(*alg, msg, sig).is_ok())
}

/// Checks a DER OCSP response for `cert_id`: status successful, signature by the issuer or
/// by a delegated responder the issuer certified for OCSP signing, times current.
/// Returns the status and the response's nextUpdate.
fn check_ocsp_response(
    der_bytes: &[u8],
    cert_id: &x509_ocsp::CertId,
    issuer_der: &[u8],
    now: DateTime<Utc>,
) -> Result<(RevocationStatus, Option<SystemTime>), String> {
    let resp = x509_ocsp::OcspResponse::from_der(der_bytes)
        .map_err(|e| format!("not an OCSP response ({e})"))?;
    if resp.response_status != x509_ocsp::OcspResponseStatus::Successful {
        return Err(format!("responder status {:?}", resp.response_status));
    }
    let bytes = resp.response_bytes.ok_or("no response bytes")?;
    if bytes.response_type.to_string() != "1.3.6.1.5.5.7.48.1.1" {
        return Err(format!("unsupported response type {}", bytes.response_type));
    }
    let basic = x509_ocsp::BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| format!("bad basic response ({e})"))?;
    let tbs = basic
        .tbs_response_data
        .to_der()
        .map_err(|e| e.to_string())?;
    let sig = basic
        .signature
        .as_bytes()
        .ok_or("signature has unused bits")?;
    let algs = algorithms_for(&basic.signature_algorithm.oid);
    if algs.is_empty() {
        return Err(format!(
            "unsupported signature algorithm {}",
            basic.signature_algorithm.oid
        ));
    }
    let mut signed = verify_with(issuer_der, &algs, &tbs, sig);
    if !signed {
        // A delegated responder: its certificate must be issued by the same CA for OCSP signing.
        let issuer_cert = CertificateDer::from(issuer_der);
        let anchor = webpki::anchor_from_trusted_cert(&issuer_cert).map_err(|e| e.to_string())?;
        for c in basic.certs.iter().flatten() {
            let Ok(cder) = c.to_der() else { continue };
            let cd = CertificateDer::from(cder.as_slice());
            let Ok(ee) = EndEntityCert::try_from(&cd) else {
                continue;
            };
            let ok_chain = ee
                .verify_for_usage(
                    SIG_ALGS,
                    std::slice::from_ref(&anchor),
                    &[],
                    to_unix(now),
                    KeyUsage::required(OCSP_SIGNING),
                    None,
                    None,
                )
                .is_ok();
            if ok_chain && verify_with(&cder, &algs, &tbs, sig) {
                signed = true;
                break;
            }
        }
    }
    if !signed {
        return Err("signature does not verify with the issuer or a delegated responder".into());
    }
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.serial_number == cert_id.serial_number
                && r.cert_id.issuer_key_hash == cert_id.issuer_key_hash
                && r.cert_id.issuer_name_hash == cert_id.issuer_name_hash
        })
        .ok_or("no answer for this certificate")?;
    let now_st = system_time(now);
    let leeway = Duration::from_secs(300);
    let this_update = single.this_update.0.to_system_time();
    if this_update > now_st + leeway {
        return Err("thisUpdate is in the future".into());
    }
    let next_update = single.next_update.map(|n| n.0.to_system_time());
    if let Some(n) = next_update {
        if n + leeway < now_st {
            return Err("the response is past its nextUpdate".into());
        }
    }
    let status = match single.cert_status {
        x509_ocsp::CertStatus::Good(_) => RevocationStatus::Good,
        x509_ocsp::CertStatus::Revoked(_) => RevocationStatus::Revoked,
        x509_ocsp::CertStatus::Unknown(_) => {
            RevocationStatus::Unknown("the responder does not know the certificate".into())
        }
    };
    Ok((status, next_update))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_formats() {
        let e = certificates_from_header("", ForwardedCertificateFormat::Pem).unwrap_err();
        assert_eq!(e, ForwardedCertError::Empty);
        let e =
            certificates_from_header("%%%", ForwardedCertificateFormat::PemUrlencoded).unwrap_err();
        assert!(matches!(e, ForwardedCertError::Encoding { .. }));
        let e =
            certificates_from_header("By=spiffe://x;Hash=abc", ForwardedCertificateFormat::Xfcc)
                .unwrap_err();
        assert!(matches!(e, ForwardedCertError::Encoding { .. }));
        assert_eq!(
            certificates_from_header("AQID", ForwardedCertificateFormat::DerBase64).unwrap(),
            vec![vec![1u8, 2, 3]]
        );
    }
}
