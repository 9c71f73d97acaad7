//! OpenID Shared Signals / CAEP receiving: verification of Security Event Tokens
//! (RFC 8417) delivered by push (RFC 8935), and the events stepgate acts on.
//!
//! [`CaepReceiver::verify`] checks, in order: JWT shape and `typ`, the transmitter (by
//! `iss`), the algorithm, the signature (PEM or JWKS keys from config), `aud`, `iat`
//! freshness, `jti` presence, the events, and only then records the `jti` (so forged tokens
//! cannot burn ids) and rejects replays. Every failure is a typed [`SetError`] the server
//! audits and answers with the RFC 8935 error code from [`SetError::rfc8935_code`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{CaepConfig, SetAlgorithm, TransmitterConfig};
use crate::device::{Device, ReportedCompliance};

/// CAEP event type URIs.
pub mod event_types {
    /// Device compliance changed.
    pub const DEVICE_COMPLIANCE_CHANGE: &str =
        "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change";
    /// A session was revoked.
    pub const SESSION_REVOKED: &str =
        "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
    /// A credential was created, changed, revoked or deleted.
    pub const CREDENTIAL_CHANGE: &str =
        "https://schemas.openid.net/secevent/caep/event-type/credential-change";
    /// The assurance level changed.
    pub const ASSURANCE_LEVEL_CHANGE: &str =
        "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";
}

/// A configuration problem with a transmitter (reported at start).
#[derive(Debug, thiserror::Error)]
pub enum CaepConfigError {
    /// Neither `key_file` nor `jwks_url`.
    #[error("caep transmitter `{0}`: set `key_file` (PEM public key or JWKS) or `jwks_url`")]
    NoKeys(String),
    /// The key file could not be read or parsed.
    #[error("caep transmitter `{name}`: key file `{path}`: {message}")]
    BadKeyFile {
        /// Transmitter.
        name: String,
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Two transmitters with the same issuer.
    #[error("caep: issuer `{0}` is configured twice")]
    DuplicateIssuer(String),
    /// Fetching a JWKS failed.
    #[error("caep transmitter `{name}`: fetching JWKS from `{url}` failed: {message}")]
    JwksFetch {
        /// Transmitter.
        name: String,
        /// URL.
        url: String,
        /// What failed.
        message: String,
    },
}

/// Why a SET was rejected. The server audits it and answers 400 with
/// `{"err": rfc8935_code(), "description": to_string()}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Not a JWS compact serialisation, or claims that are not JSON.
    #[error("the SET is not a well-formed signed JWT: {0}")]
    Malformed(String),
    /// `typ` header present and not `secevent+jwt`.
    #[error("the SET has `typ` `{0}`; a Security Event Token must have `secevent+jwt`")]
    WrongType(String),
    /// No transmitter is configured with this `iss`.
    #[error("no CAEP transmitter is configured with issuer `{0}`")]
    UnknownIssuer(String),
    /// Algorithm not in the transmitter's list.
    #[error("algorithm `{alg}` is not accepted from `{transmitter}`; add it to the transmitter's `algorithms` if intended")]
    AlgorithmNotAllowed {
        /// Header alg.
        alg: String,
        /// Transmitter.
        transmitter: String,
    },
    /// No key with this `kid`.
    #[error("no signing key `{kid}` is known for `{transmitter}`")]
    UnknownKey {
        /// Header kid.
        kid: String,
        /// Transmitter.
        transmitter: String,
    },
    /// The signature does not verify with any key.
    #[error("the SET signature does not verify with `{0}`'s keys")]
    BadSignature(String),
    /// `aud` does not name this receiver.
    #[error("the SET audience does not include `{expected}`")]
    WrongAudience {
        /// Configured audience.
        expected: String,
    },
    /// `exp` passed.
    #[error("the SET expired")]
    Expired,
    /// `iat` older than the transmitter's `max_age`.
    #[error("the SET was issued at {iat}, longer ago than the accepted {max_age}")]
    TooOld {
        /// Issued at.
        iat: DateTime<Utc>,
        /// Configured max age.
        max_age: String,
    },
    /// `iat` in the future beyond leeway.
    #[error("the SET was issued in the future ({0}); check the transmitter's clock")]
    FromFuture(DateTime<Utc>),
    /// A required claim is missing.
    #[error("the SET lacks the `{0}` claim")]
    MissingClaim(&'static str),
    /// The same `jti` was already accepted from this issuer.
    #[error("the SET `jti` `{0}` was already received (replay)")]
    Replayed(String),
    /// `events` is missing or empty.
    #[error("the SET has no events")]
    NoEvents,
    /// An event this receiver handles is missing a required field.
    #[error("event `{event_type}`: {message}")]
    BadEvent {
        /// Event type URI.
        event_type: String,
        /// What is wrong.
        message: String,
    },
}

impl SetError {
    /// The RFC 8935 §2.3 error code.
    pub fn rfc8935_code(&self) -> &'static str {
        match self {
            SetError::UnknownIssuer(_) => "invalid_issuer",
            SetError::WrongAudience { .. } => "invalid_audience",
            SetError::UnknownKey { .. } | SetError::BadSignature(_) => "invalid_key",
            _ => "invalid_request",
        }
    }

    /// A short stable name for audit records (`bad_signature`, `replayed_jti`, …).
    pub fn audit_kind(&self) -> &'static str {
        match self {
            SetError::Malformed(_) => "malformed",
            SetError::WrongType(_) => "wrong_type",
            SetError::UnknownIssuer(_) => "unknown_issuer",
            SetError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            SetError::UnknownKey { .. } => "unknown_key",
            SetError::BadSignature(_) => "bad_signature",
            SetError::WrongAudience { .. } => "wrong_audience",
            SetError::Expired => "expired",
            SetError::TooOld { .. } => "too_old",
            SetError::FromFuture(_) => "from_future",
            SetError::MissingClaim(_) => "missing_claim",
            SetError::Replayed(_) => "replayed_jti",
            SetError::NoEvents => "no_events",
            SetError::BadEvent { .. } => "bad_event",
        }
    }
}

/// A subject identifier (RFC 9493), simple or complex.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectIdentifier {
    /// `email`, `opaque`, `iss_sub`, `phone_number`, `uri`, `did`, `account`, `complex`, …
    #[serde(default)]
    pub format: String,
    /// `email` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `opaque` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `iss_sub` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `iss_sub` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `phone_number` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// `uri` / `account` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `did` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Complex: the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Box<SubjectIdentifier>>,
    /// Complex: the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Box<SubjectIdentifier>>,
    /// Complex: the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Box<SubjectIdentifier>>,
    /// Complex: the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Box<SubjectIdentifier>>,
}

impl SubjectIdentifier {
    /// The identifying value of a simple identifier.
    pub fn simple_id(&self) -> Option<&str> {
        match self.format.as_str() {
            "opaque" => self.id.as_deref(),
            "iss_sub" => self.sub.as_deref(),
            "email" => self.email.as_deref(),
            "phone_number" => self.phone_number.as_deref(),
            "uri" | "account" => self.uri.as_deref(),
            "did" => self.url.as_deref(),
            _ => self
                .id
                .as_deref()
                .or(self.sub.as_deref())
                .or(self.email.as_deref()),
        }
    }

    /// The device id: the complex subject's `device`, or the simple subject itself.
    pub fn device_id(&self) -> Option<&str> {
        match &self.device {
            Some(d) => d.simple_id(),
            None if self.format != "complex" => self.simple_id(),
            None => None,
        }
    }

    /// The user: the complex subject's `user`, or the simple subject itself.
    pub fn user(&self) -> Option<&str> {
        match &self.user {
            Some(u) => u.simple_id(),
            None if self.format != "complex" => self.simple_id(),
            None => None,
        }
    }

    /// The session id, from a complex subject's `session`.
    pub fn session_id(&self) -> Option<&str> {
        self.session
            .as_deref()
            .and_then(SubjectIdentifier::simple_id)
    }
}

/// Fields every CAEP event may carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCommon {
    /// The subject (event-level `subject`, or the SET's `sub_id`).
    pub subject: SubjectIdentifier,
    /// When the event happened at the transmitter.
    pub event_timestamp: Option<DateTime<Utc>>,
    /// `ADMIN`, `USER`, `POLICY`, `SYSTEM`.
    pub initiating_entity: Option<String>,
    /// Reason for admins.
    pub reason_admin: Option<String>,
    /// Reason for the user (shown on the remediation page).
    pub reason_user: Option<String>,
}

/// An event stepgate understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum SecurityEvent {
    /// `device-compliance-change`.
    DeviceComplianceChange {
        /// Common fields.
        common: EventCommon,
        /// `compliant` → true, `not-compliant` → false.
        compliant: bool,
        /// The previous status, if sent.
        previously_compliant: Option<bool>,
    },
    /// `session-revoked`.
    SessionRevoked {
        /// Common fields.
        common: EventCommon,
    },
    /// `credential-change`.
    CredentialChange {
        /// Common fields.
        common: EventCommon,
        /// `password`, `pin`, `x509`, `fido2-platform`, `fido2-roaming`, `fido-u2f`, `verifiable-credential`, `phone-voice`, `phone-sms`, `app`.
        credential_type: String,
        /// `create`, `revoke`, `update`, `delete`.
        change_type: String,
    },
    /// `assurance-level-change`.
    AssuranceLevelChange {
        /// Common fields.
        common: EventCommon,
        /// e.g. `NIST-AAL`.
        namespace: String,
        /// The new level.
        current_level: String,
        /// The old level.
        previous_level: Option<String>,
        /// `increase` / `decrease`.
        change_direction: Option<String>,
    },
    /// Any other event type: acknowledged, not acted on.
    Other {
        /// The event type URI.
        event_type: String,
    },
}

/// A device compliance change to apply to the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceComplianceUpdate {
    /// The device id from the subject.
    pub device_id: String,
    /// The user from the subject, if any.
    pub user: Option<String>,
    /// The new verdict.
    pub compliant: bool,
    /// `reason_user`, for the remediation page.
    pub reason: Option<String>,
    /// When (event_timestamp, or the SET's iat).
    pub at: DateTime<Utc>,
    /// The transmitter's name (recorded as the source).
    pub source: String,
}

impl DeviceComplianceUpdate {
    /// Applies the update; returns false when the device already has a newer verdict.
    pub fn apply(&self, device: &mut Device) -> bool {
        if device
            .reported_compliance
            .as_ref()
            .is_some_and(|r| r.at > self.at)
        {
            return false;
        }
        device.reported_compliance = Some(ReportedCompliance {
            compliant: self.compliant,
            source: self.source.clone(),
            reason: self.reason.clone(),
            at: self.at,
        });
        true
    }
}

/// A verified SET.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedSet {
    /// The transmitter's configured name.
    pub transmitter: String,
    /// `iss`.
    pub issuer: String,
    /// `jti`.
    pub jti: String,
    /// `iat`.
    pub issued_at: DateTime<Utc>,
    /// `txn`, when present.
    pub txn: Option<String>,
    /// The events.
    pub events: Vec<SecurityEvent>,
}

impl VerifiedSet {
    /// The device updates the SET carries (from `device-compliance-change` events).
    pub fn device_updates(&self) -> Vec<DeviceComplianceUpdate> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SecurityEvent::DeviceComplianceChange {
                    common, compliant, ..
                } => Some(DeviceComplianceUpdate {
                    device_id: common.subject.device_id()?.to_owned(),
                    user: common
                        .subject
                        .user()
                        .map(str::to_owned)
                        .filter(|_| common.subject.user.is_some()),
                    compliant: *compliant,
                    reason: common
                        .reason_user
                        .clone()
                        .or_else(|| common.reason_admin.clone()),
                    at: common.event_timestamp.unwrap_or(self.issued_at),
                    source: self.transmitter.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

/// Remembers accepted `jti`s until they could no longer pass the `iat` check.
/// The server may back it with the hot store for multi-node deployments.
pub trait JtiReplayGuard: Send + Sync {
    /// Records `(issuer, jti)`; returns false if it was already recorded and not expired.
    fn check_and_record(
        &self,
        issuer: &str,
        jti: &str,
        forget_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool;
}

/// In-memory [`JtiReplayGuard`] (one node).
#[derive(Debug, Default)]
pub struct MemoryReplayGuard {
    seen: Mutex<HashMap<(String, String), DateTime<Utc>>>,
}

impl JtiReplayGuard for MemoryReplayGuard {
    fn check_and_record(
        &self,
        issuer: &str,
        jti: &str,
        forget_after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, until| *until > now);
        let key = (issuer.to_owned(), jti.to_owned());
        if seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, forget_after);
        true
    }
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    key: DecodingKey,
}

struct Transmitter {
    cfg: TransmitterConfig,
    keys: RwLock<Vec<Key>>,
}

/// Verifies SETs from the configured transmitters.
pub struct CaepReceiver {
    transmitters: Vec<Transmitter>,
    guard: Arc<dyn JtiReplayGuard>,
}

impl std::fmt::Debug for CaepReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaepReceiver")
            .field(
                "transmitters",
                &self
                    .transmitters
                    .iter()
                    .map(|t| &t.cfg.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn algorithm(a: SetAlgorithm) -> Algorithm {
    match a {
        SetAlgorithm::ES256 => Algorithm::ES256,
        SetAlgorithm::ES384 => Algorithm::ES384,
        SetAlgorithm::RS256 => Algorithm::RS256,
        SetAlgorithm::RS384 => Algorithm::RS384,
        SetAlgorithm::RS512 => Algorithm::RS512,
        SetAlgorithm::PS256 => Algorithm::PS256,
        SetAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Parses a JWKS document, keeping only asymmetric keys (never `oct`: no HMAC confusion).
fn keys_from_jwks(text: &str) -> Result<Vec<Key>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS ({e})"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| format!("unusable key {:?} ({e})", jwk.common.key_id))?;
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    if out.is_empty() {
        return Err("holds no asymmetric key".into());
    }
    Ok(out)
}

fn keys_from_file(path: &Path) -> Result<Vec<Key>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    if text.trim_start().starts_with('{') {
        return keys_from_jwks(&text);
    }
    let key = DecodingKey::from_ec_pem(&bytes)
        .or_else(|_| DecodingKey::from_rsa_pem(&bytes))
        .or_else(|_| DecodingKey::from_ed_pem(&bytes))
        .map_err(|_| "is neither a JWKS nor a PEM EC, RSA or Ed25519 public key".to_owned())?;
    Ok(vec![Key { kid: None, key }])
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    jti: Option<String>,
    iat: Option<i64>,
    txn: Option<String>,
    events: Option<serde_json::Map<String, serde_json::Value>>,
    sub_id: Option<SubjectIdentifier>,
}

fn ts(v: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(v, 0)
}

impl CaepReceiver {
    /// Builds the receiver, loading key files (JWKS URLs are loaded by [`Self::refresh_keys`]).
    pub fn new(cfg: &CaepConfig, guard: Arc<dyn JtiReplayGuard>) -> Result<Self, CaepConfigError> {
        let mut transmitters = Vec::new();
        let mut issuers = std::collections::BTreeSet::new();
        for t in &cfg.transmitters {
            if !issuers.insert(t.issuer.clone()) {
                return Err(CaepConfigError::DuplicateIssuer(t.issuer.clone()));
            }
            let keys = match (&t.key_file, &t.jwks_url) {
                (Some(p), _) => {
                    keys_from_file(p).map_err(|message| CaepConfigError::BadKeyFile {
                        name: t.name.clone(),
                        path: p.display().to_string(),
                        message,
                    })?
                }
                (None, Some(_)) => Vec::new(),
                (None, None) => return Err(CaepConfigError::NoKeys(t.name.clone())),
            };
            transmitters.push(Transmitter {
                cfg: t.clone(),
                keys: RwLock::new(keys),
            });
        }
        Ok(CaepReceiver {
            transmitters,
            guard,
        })
    }

    /// Fetches the JWKS of every transmitter with a `jwks_url` (at start, and when a SET
    /// names an unknown `kid`).
    pub async fn refresh_keys(&self, client: &reqwest::Client) -> Result<(), CaepConfigError> {
        for t in &self.transmitters {
            let Some(url) = &t.cfg.jwks_url else { continue };
            let err = |message: String| CaepConfigError::JwksFetch {
                name: t.cfg.name.clone(),
                url: url.clone(),
                message,
            };
            let resp = client
                .get(url)
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| err(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(err(format!("HTTP {}", resp.status())));
            }
            let text = resp.text().await.map_err(|e| err(e.to_string()))?;
            let keys = keys_from_jwks(&text).map_err(err)?;
            *t.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        }
        Ok(())
    }

    /// Verifies a SET (the body of an RFC 8935 push) at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedSet, SetError> {
        let token = token.trim();
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| SetError::Malformed(e.to_string()))?;
        if let Some(typ) = &header.typ {
            let t = typ.to_ascii_lowercase();
            if t != "secevent+jwt" && t != "application/secevent+jwt" {
                return Err(SetError::WrongType(typ.clone()));
            }
        }
        // Read `iss` before verifying only to pick the transmitter's keys.
        let unverified = unverified_claims(token)?;
        let iss = unverified.iss.ok_or(SetError::MissingClaim("iss"))?;
        let t = self
            .transmitters
            .iter()
            .find(|t| t.cfg.issuer == iss)
            .ok_or_else(|| SetError::UnknownIssuer(iss.clone()))?;
        let allowed: Vec<Algorithm> = t.cfg.algorithms.iter().copied().map(algorithm).collect();
        if !allowed.contains(&header.alg) {
            return Err(SetError::AlgorithmNotAllowed {
                alg: format!("{:?}", header.alg),
                transmitter: t.cfg.name.clone(),
            });
        }
        let keys: Vec<Key> = {
            let all = t.keys.read().unwrap_or_else(|p| p.into_inner());
            match &header.kid {
                Some(kid) if all.iter().any(|k| k.kid.is_some()) => all
                    .iter()
                    .filter(|k| k.kid.as_ref() == Some(kid))
                    .cloned()
                    .collect(),
                _ => all.clone(),
            }
        };
        if keys.is_empty() {
            return Err(SetError::UnknownKey {
                kid: header.kid.clone().unwrap_or_default(),
                transmitter: t.cfg.name.clone(),
            });
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = allowed;
        v.set_issuer(&[&t.cfg.issuer]);
        v.set_audience(&[&t.cfg.audience]);
        v.required_spec_claims = ["iss", "aud"].iter().map(|s| s.to_string()).collect();
        v.leeway = t.cfg.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = false;
        let mut last = SetError::BadSignature(t.cfg.name.clone());
        let mut claims = None;
        for k in &keys {
            match jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &v) {
                Ok(d) => {
                    claims = Some(d.claims);
                    break;
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature
                        | K::InvalidAlgorithm
                        | K::InvalidEcdsaKey
                        | K::InvalidRsaKey(_)
                        | K::InvalidKeyFormat => SetError::BadSignature(t.cfg.name.clone()),
                        K::InvalidAudience => {
                            return Err(SetError::WrongAudience {
                                expected: t.cfg.audience.clone(),
                            })
                        }
                        K::MissingRequiredClaim(c) if c == "aud" => {
                            return Err(SetError::MissingClaim("aud"))
                        }
                        K::InvalidIssuer => return Err(SetError::UnknownIssuer(iss.clone())),
                        K::ExpiredSignature => return Err(SetError::Expired),
                        other => return Err(SetError::Malformed(format!("{other:?}"))),
                    };
                }
            }
        }
        let claims = claims.ok_or(last)?;
        let raw: RawClaims =
            serde_json::from_value(claims).map_err(|e| SetError::Malformed(e.to_string()))?;
        let jti = raw
            .jti
            .filter(|j| !j.is_empty())
            .ok_or(SetError::MissingClaim("jti"))?;
        let iat = raw.iat.and_then(ts).ok_or(SetError::MissingClaim("iat"))?;
        let leeway = chrono::TimeDelta::seconds(t.cfg.leeway.as_secs() as i64);
        let max_age = chrono::TimeDelta::seconds(t.cfg.max_age.as_secs() as i64);
        if iat > now + leeway {
            return Err(SetError::FromFuture(iat));
        }
        if iat < now - max_age - leeway {
            return Err(SetError::TooOld {
                iat,
                max_age: t.cfg.max_age.to_string(),
            });
        }
        let events = raw
            .events
            .filter(|e| !e.is_empty())
            .ok_or(SetError::NoEvents)?;
        let mut parsed = Vec::new();
        for (uri, payload) in &events {
            parsed.push(parse_event(uri, payload, raw.sub_id.as_ref())?);
        }
        if !self
            .guard
            .check_and_record(&iss, &jti, iat + max_age + leeway * 2, now)
        {
            return Err(SetError::Replayed(jti));
        }
        Ok(VerifiedSet {
            transmitter: t.cfg.name.clone(),
            issuer: iss,
            jti,
            issued_at: iat,
            txn: raw.txn,
            events: parsed,
        })
    }
}

fn unverified_claims(token: &str) -> Result<RawClaims, SetError> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SetError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| SetError::Malformed(format!("payload is not base64url ({e})")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| SetError::Malformed(format!("payload is not a JSON object ({e})")))
}

/// CAEP reasons are language maps (`{"en": "..."}`) or, from some transmitters, strings.
fn reason(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m
            .get("en")
            .or_else(|| m.values().next())
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        _ => None,
    }
}

fn parse_event(
    uri: &str,
    payload: &serde_json::Value,
    sub_id: Option<&SubjectIdentifier>,
) -> Result<SecurityEvent, SetError> {
    let bad = |message: &str| SetError::BadEvent {
        event_type: uri.to_owned(),
        message: message.to_owned(),
    };
    let known = [
        event_types::DEVICE_COMPLIANCE_CHANGE,
        event_types::SESSION_REVOKED,
        event_types::CREDENTIAL_CHANGE,
        event_types::ASSURANCE_LEVEL_CHANGE,
    ];
    if !known.contains(&uri) {
        return Ok(SecurityEvent::Other {
            event_type: uri.to_owned(),
        });
    }
    let obj = payload
        .as_object()
        .ok_or_else(|| bad("the event payload must be a JSON object"))?;
    let subject = match obj.get("subject") {
        Some(s) => {
            serde_json::from_value(s.clone()).map_err(|e| bad(&format!("bad subject ({e})")))?
        }
        None => sub_id
            .cloned()
            .ok_or_else(|| bad("no subject (neither `subject` in the event nor `sub_id`)"))?,
    };
    let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let common = EventCommon {
        subject,
        event_timestamp: obj
            .get("event_timestamp")
            .and_then(|v| v.as_i64())
            .and_then(ts),
        initiating_entity: s("initiating_entity"),
        reason_admin: reason(obj.get("reason_admin")),
        reason_user: reason(obj.get("reason_user")),
    };
    let status = |k: &str| -> Result<Option<bool>, SetError> {
        match obj.get(k).and_then(|v| v.as_str()) {
            None => Ok(None),
            Some("compliant") => Ok(Some(true)),
            Some("not-compliant") => Ok(Some(false)),
            Some(other) => Err(bad(&format!(
                "`{k}` is `{other}`, expected `compliant` or `not-compliant`"
            ))),
        }
    };
    Ok(match uri {
        event_types::DEVICE_COMPLIANCE_CHANGE => {
            if common.subject.device_id().is_none() {
                return Err(bad("the subject names no device"));
            }
            SecurityEvent::DeviceComplianceChange {
                compliant: status("current_status")?
                    .ok_or_else(|| bad("`current_status` is required"))?,
                previously_compliant: status("previous_status")?,
                common,
            }
        }
        event_types::SESSION_REVOKED => SecurityEvent::SessionRevoked { common },
        event_types::CREDENTIAL_CHANGE => SecurityEvent::CredentialChange {
            credential_type: s("credential_type")
                .ok_or_else(|| bad("`credential_type` is required"))?,
            change_type: s("change_type").ok_or_else(|| bad("`change_type` is required"))?,
            common,
        },
        _ => SecurityEvent::AssuranceLevelChange {
            namespace: s("namespace").ok_or_else(|| bad("`namespace` is required"))?,
            current_level: s("current_level").ok_or_else(|| bad("`current_level` is required"))?,
            previous_level: s("previous_level"),
            change_direction: s("change_direction"),
            common,
        },
    })
}
