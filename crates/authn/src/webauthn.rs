//! WebAuthn passkeys and security keys (webauthn-rs): registration and authentication
//! ceremonies, discoverable credentials for passwordless sign-in, user verification
//! required for passkeys, and attestation checked against configured roots so that a
//! credential can be recorded as hardware-bound.
//!
//! When attestation roots are configured, every registration asks the authenticator for
//! its attestation (`direct`), whichever button started it; webauthn-rs verifies the
//! attestation statement's signature, and [`WebauthnFactor::hardware_binding`] decides
//! whether it proves a hardware key: the attestation certificate chains to a configured
//! root (or *is* a configured self-signed attestation certificate, re-issued with the same
//! subject and key), the authenticator model (AAGUID) is listed under that root, and the
//! credential is not eligible for backup (a synced passkey is not bound to one device).
//!
//! Ceremony states are serialisable so the server can keep them in the session between
//! the two halves of a ceremony.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestationCa, AttestationCaList, AttestationCaListBuilder, AttestationMetadata,
    AttestedPasskey, AttestedPasskeyRegistration, CreationChallengeResponse, Credential,
    CredentialID, DiscoverableAuthentication, DiscoverableKey, ParsedAttestationData, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, SecurityKey, SecurityKeyAuthentication, SecurityKeyRegistration,
    WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::config::WebauthnConfig;
use crate::factor::{FactorKind, FactorMaterial};

/// A WebAuthn failure; the message is safe to log (no credential material).
#[derive(Debug, thiserror::Error)]
pub enum WebauthnFailure {
    /// Configuration problem (rp id/origin, attestation roots).
    #[error("webauthn configuration: {0}")]
    Config(String),
    /// Hardware-bound registration asked for but no attestation roots are configured.
    #[error("hardware-bound registration needs factors.webauthn.attestation_cas")]
    NoAttestationRoots,
    /// A security key was registered while attestation roots are configured, and its
    /// attestation does not prove a trusted hardware key.
    #[error(
        "this security key could not prove it is a hardware key your organisation trusts; \
         add it as a passkey instead, or ask your administrator which keys are accepted"
    )]
    NotHardwareBound,
    /// The ceremony failed (bad signature, wrong origin, no user verification, ...).
    #[error("webauthn ceremony failed: {0}")]
    Ceremony(#[from] WebauthnError),
    /// The asserted credential is not one of the user's.
    #[error("unknown credential")]
    UnknownCredential,
}

/// The credential kinds stepgate registers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebauthnCredential {
    /// A passkey: user verification required, may be synced between devices.
    Passkey(Passkey),
    /// A passkey whose attestation chains to a configured root: hardware-bound.
    AttestedPasskey(AttestedPasskey),
    /// A security key used with touch only (user verification preferred, not required).
    SecurityKey(SecurityKey),
}

/// The `data` of a WebAuthn factor record: public key material, never secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCredential {
    /// The credential.
    pub credential: WebauthnCredential,
    /// Attestation verified against a configured root at registration.
    pub hardware_bound: bool,
}

impl StoredCredential {
    /// The credential id.
    pub fn cred_id(&self) -> &CredentialID {
        match &self.credential {
            WebauthnCredential::Passkey(p) => p.cred_id(),
            WebauthnCredential::AttestedPasskey(p) => p.cred_id(),
            WebauthnCredential::SecurityKey(k) => k.cred_id(),
        }
    }

    fn update(&mut self, res: &webauthn_rs::prelude::AuthenticationResult) {
        match &mut self.credential {
            WebauthnCredential::Passkey(p) => {
                p.update_credential(res);
            }
            WebauthnCredential::AttestedPasskey(p) => {
                p.update_credential(res);
            }
            WebauthnCredential::SecurityKey(k) => {
                k.update_credential(res);
            }
        }
    }

    fn is_passkey(&self) -> bool {
        !matches!(self.credential, WebauthnCredential::SecurityKey(_))
    }
}

/// Which kind of credential to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationKind {
    /// Passkey with user verification (phishing-resistant MFA, AAL2 alone).
    Passkey,
    /// Attested passkey on a trusted hardware authenticator (AAL3 alone).
    HardwarePasskey,
    /// Security key used with touch (a second factor); attested when roots are configured.
    SecurityKey,
}

/// State between the two halves of a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RegistrationState {
    /// Passkey.
    Passkey(PasskeyRegistration),
    /// Attested passkey.
    HardwarePasskey(AttestedPasskeyRegistration),
    /// Security key; `attested` says whether a trusted attestation is required.
    SecurityKey {
        /// webauthn-rs state.
        state: SecurityKeyRegistration,
        /// Attestation was required.
        attested: bool,
    },
}

/// State between the two halves of an authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AuthenticationState {
    /// Passkeys (UV required).
    Passkey(PasskeyAuthentication),
    /// Security keys.
    SecurityKey(SecurityKeyAuthentication),
    /// Passwordless: any discoverable credential of any user.
    Discoverable(DiscoverableAuthentication),
}

/// A verified assertion: which credential, and what it proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnAssertion {
    /// Index of the credential in the slice given to `finish_*` (its data was updated:
    /// store it back).
    pub index: usize,
    /// The authenticator verified the user (PIN/biometric).
    pub user_verified: bool,
    /// The credential is hardware-bound.
    pub hardware_bound: bool,
}

/// The configured root that *is* the attestation certificate: an attestation made with a
/// single self-signed certificate whose subject and public key equal a configured
/// certificate's. OpenSSL accepts a self-signed certificate only when it is byte for byte
/// in the trust store, and an authenticator that signs its attestation certificate afresh
/// at each registration (Chromium's virtual authenticator does) never is; the attestation
/// statement's signature was verified with this very key by webauthn-rs, so the same
/// subject and key are the same trust as the stored certificate.
fn self_signed_root<'a>(
    data: &ParsedAttestationData,
    roots: &'a AttestationCaList,
) -> Option<&'a AttestationCa> {
    let chain = match data {
        ParsedAttestationData::Basic(c)
        | ParsedAttestationData::AttCa(c)
        | ParsedAttestationData::AnonCa(c) => c,
        _ => return None,
    };
    let [leaf] = chain.as_slice() else {
        return None;
    };
    let key = leaf.public_key().ok()?;
    if !leaf.verify(&key).ok()? {
        return None; // not self-signed
    }
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
    let current = |c: &openssl::x509::X509Ref| *c.not_before() <= now && *c.not_after() >= now;
    if !current(leaf) {
        return None;
    }
    roots.cas().values().find(|ca| {
        let root = ca.ca();
        current(root)
            && root.public_key().is_ok_and(|k| k.public_eq(&key))
            && root
                .subject_name()
                .try_cmp(leaf.subject_name())
                .is_ok_and(|o| o.is_eq())
    })
}

#[cfg(test)]
mod tests;

/// The user a credential is registered for.
#[derive(Debug, Clone)]
pub struct WebauthnUser<'a> {
    /// Stable random id (the WebAuthn user handle; returned by discoverable sign-in).
    pub id: Uuid,
    /// Login name.
    pub name: &'a str,
    /// Display name.
    pub display_name: &'a str,
}

/// The WebAuthn relying party.
pub struct WebauthnFactor {
    webauthn: Webauthn,
    roots: Option<AttestationCaList>,
}

impl WebauthnFactor {
    /// Builds the relying party from configuration, loading the attestation roots.
    pub fn new(cfg: &WebauthnConfig) -> Result<Self, WebauthnFailure> {
        let origin = Url::parse(&cfg.rp_origin)
            .map_err(|e| WebauthnFailure::Config(format!("rp_origin: {e}")))?;
        let webauthn = WebauthnBuilder::new(&cfg.rp_id, &origin)
            .map_err(|e| WebauthnFailure::Config(e.to_string()))?
            .rp_name(&cfg.rp_name)
            .build()
            .map_err(|e| WebauthnFailure::Config(e.to_string()))?;
        let roots = if cfg.attestation_cas.is_empty() {
            None
        } else {
            let mut b = AttestationCaListBuilder::new();
            for ca in &cfg.attestation_cas {
                let pem = std::fs::read(&ca.pem_file).map_err(|e| {
                    WebauthnFailure::Config(format!("{}: {e}", ca.pem_file.display()))
                })?;
                for aaguid in &ca.aaguids {
                    let id = Uuid::parse_str(aaguid).map_err(|_| {
                        WebauthnFailure::Config(format!("`{aaguid}` is not an AAGUID"))
                    })?;
                    b.insert_device_pem(&pem, id, ca.description.clone(), BTreeMap::new())
                        .map_err(|e| {
                            WebauthnFailure::Config(format!("{}: {e}", ca.pem_file.display()))
                        })?;
                }
            }
            Some(b.build())
        };
        Ok(WebauthnFactor { webauthn, roots })
    }

    /// Replaces the attestation roots (tests, or roots from another source).
    pub fn with_attestation_roots(mut self, roots: AttestationCaList) -> Self {
        self.roots = Some(roots);
        self
    }

    /// Starts a registration; `existing` credentials are excluded so one authenticator is
    /// not registered twice.
    pub fn start_registration(
        &self,
        user: &WebauthnUser<'_>,
        existing: &[StoredCredential],
        kind: RegistrationKind,
    ) -> Result<(CreationChallengeResponse, RegistrationState), WebauthnFailure> {
        let exclude: Option<Vec<CredentialID>> =
            Some(existing.iter().map(|c| c.cred_id().clone()).collect());
        let w = &self.webauthn;
        Ok(match kind {
            RegistrationKind::Passkey => {
                let (mut ccr, s) =
                    w.start_passkey_registration(user.id, user.name, user.display_name, exclude)?;
                self.ask_for_attestation(&mut ccr);
                (ccr, RegistrationState::Passkey(s))
            }
            RegistrationKind::HardwarePasskey => {
                let roots = self
                    .roots
                    .clone()
                    .ok_or(WebauthnFailure::NoAttestationRoots)?;
                let (ccr, s) = w.start_attested_passkey_registration(
                    user.id,
                    user.name,
                    user.display_name,
                    exclude,
                    roots,
                    None,
                )?;
                (ccr, RegistrationState::HardwarePasskey(s))
            }
            RegistrationKind::SecurityKey => {
                // The roots are applied by `hardware_binding` at the finish, not by
                // webauthn-rs, so that a configured self-signed attestation certificate
                // (re-issued at each registration) is recognised as well.
                let (mut ccr, s) = w.start_securitykey_registration(
                    user.id,
                    user.name,
                    user.display_name,
                    exclude,
                    None,
                    None,
                )?;
                self.ask_for_attestation(&mut ccr);
                // webauthn-rs asks security keys for credProtect "user verification
                // required" while preferring (not requiring) user verification; Chromium
                // refuses that pair outright (NotSupportedError: "Requested protection
                // policy is inconsistent"), so no security key could be added there. The
                // extension is a hint to the key: the ceremony's checks do not depend on it.
                if let Some(ext) = ccr.public_key.extensions.as_mut() {
                    ext.cred_protect = None;
                }
                let attested = self.roots.is_some();
                (ccr, RegistrationState::SecurityKey { state: s, attested })
            }
        })
    }

    /// Finishes a registration; returns the factor material to store.
    pub fn finish_registration(
        &self,
        response: &RegisterPublicKeyCredential,
        state: &RegistrationState,
        label: &str,
    ) -> Result<FactorMaterial, WebauthnFailure> {
        let w = &self.webauthn;
        let stored = match state {
            RegistrationState::Passkey(s) => {
                let passkey = w.finish_passkey_registration(response, s)?;
                let cred = Credential::from(passkey);
                if self.hardware_binding(&cred).is_some() {
                    StoredCredential {
                        credential: WebauthnCredential::AttestedPasskey(AttestedPasskey::from(
                            cred,
                        )),
                        hardware_bound: true,
                    }
                } else {
                    StoredCredential {
                        credential: WebauthnCredential::Passkey(Passkey::from(cred)),
                        hardware_bound: false,
                    }
                }
            }
            RegistrationState::HardwarePasskey(s) => StoredCredential {
                credential: WebauthnCredential::AttestedPasskey(
                    w.finish_attested_passkey_registration(response, s)?,
                ),
                hardware_bound: true,
            },
            RegistrationState::SecurityKey { state, attested } => {
                let key = w.finish_securitykey_registration(response, state)?;
                let cred = Credential::from(key);
                let hardware_bound = self.hardware_binding(&cred).is_some();
                if *attested && !hardware_bound {
                    return Err(WebauthnFailure::NotHardwareBound);
                }
                StoredCredential {
                    credential: WebauthnCredential::SecurityKey(SecurityKey::from(cred)),
                    hardware_bound,
                }
            }
        };
        Ok(FactorMaterial {
            kind: FactorKind::Webauthn,
            label: label.to_string(),
            secret: None,
            data: serde_json::to_value(&stored)
                .map_err(|e| WebauthnFailure::Config(e.to_string()))?,
        })
    }

    /// With attestation roots configured, asks the authenticator for its attestation
    /// statement (webauthn-rs asks for none on passkeys); webauthn-rs verifies whatever
    /// statement comes back, and [`Self::hardware_binding`] judges it.
    fn ask_for_attestation(&self, ccr: &mut CreationChallengeResponse) {
        if self.roots.is_some() {
            ccr.public_key.attestation =
                Some(webauthn_rs_proto::AttestationConveyancePreference::Direct);
        }
    }

    /// The configured root a newly registered credential proves it is bound to, if any:
    /// its verified attestation chains to the root (or is the root's own self-signed
    /// attestation certificate, re-issued with the same subject and key), its model
    /// (AAGUID) is listed under the root, and it is not eligible for backup.
    pub fn hardware_binding<'a>(&'a self, cred: &Credential) -> Option<&'a AttestationCa> {
        let roots = self.roots.as_ref()?;
        if cred.backup_eligible || cred.backup_state {
            return None;
        }
        let ca = match cred.verify_attestation(roots) {
            Ok(Some(ca)) => ca,
            _ => self_signed_root(&cred.attestation.data, roots)?,
        };
        if ca.blanket_allow() {
            return Some(ca);
        }
        match &cred.attestation.metadata {
            AttestationMetadata::Packed { aaguid } | AttestationMetadata::Tpm { aaguid, .. }
                if ca.aaguids().contains_key(aaguid) =>
            {
                Some(ca)
            }
            _ => None,
        }
    }

    /// Starts a sign-in with the user's passkeys (user verification required).
    pub fn start_passkey_authentication(
        &self,
        creds: &[StoredCredential],
    ) -> Result<(RequestChallengeResponse, AuthenticationState), WebauthnFailure> {
        let keys: Vec<Passkey> = creds
            .iter()
            .filter_map(|c| match &c.credential {
                WebauthnCredential::Passkey(p) => Some(p.clone()),
                WebauthnCredential::AttestedPasskey(p) => Some(Passkey::from(p)),
                WebauthnCredential::SecurityKey(_) => None,
            })
            .collect();
        let (rcr, s) = self.webauthn.start_passkey_authentication(&keys)?;
        Ok((rcr, AuthenticationState::Passkey(s)))
    }

    /// Starts a sign-in with the user's security keys (touch; UV preferred).
    pub fn start_security_key_authentication(
        &self,
        creds: &[StoredCredential],
    ) -> Result<(RequestChallengeResponse, AuthenticationState), WebauthnFailure> {
        let keys: Vec<SecurityKey> = creds
            .iter()
            .filter_map(|c| match &c.credential {
                WebauthnCredential::SecurityKey(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        let (rcr, s) = self.webauthn.start_securitykey_authentication(&keys)?;
        Ok((rcr, AuthenticationState::SecurityKey(s)))
    }

    /// Starts a passwordless sign-in: the authenticator picks a discoverable credential
    /// and reveals the user handle.
    pub fn start_passwordless(
        &self,
    ) -> Result<(RequestChallengeResponse, AuthenticationState), WebauthnFailure> {
        let (rcr, s) = self.webauthn.start_discoverable_authentication()?;
        Ok((rcr, AuthenticationState::Discoverable(s)))
    }

    /// For passwordless sign-in: the user handle the authenticator returned, to look up
    /// the user and their credentials before [`Self::finish_authentication`].
    pub fn identify_passwordless(
        &self,
        response: &PublicKeyCredential,
    ) -> Result<Uuid, WebauthnFailure> {
        Ok(self
            .webauthn
            .identify_discoverable_authentication(response)?
            .0)
    }

    /// Finishes any authentication against the user's credentials; updates the used
    /// credential's counter in `creds` (store it back).
    pub fn finish_authentication(
        &self,
        response: &PublicKeyCredential,
        state: AuthenticationState,
        creds: &mut [StoredCredential],
    ) -> Result<WebauthnAssertion, WebauthnFailure> {
        let w = &self.webauthn;
        let res = match state {
            AuthenticationState::Passkey(s) => w.finish_passkey_authentication(response, &s)?,
            AuthenticationState::SecurityKey(s) => {
                w.finish_securitykey_authentication(response, &s)?
            }
            AuthenticationState::Discoverable(s) => {
                let keys: Vec<DiscoverableKey> = creds
                    .iter()
                    .filter(|c| c.is_passkey())
                    .filter_map(|c| match &c.credential {
                        WebauthnCredential::Passkey(p) => Some(DiscoverableKey::from(p)),
                        WebauthnCredential::AttestedPasskey(p) => Some(DiscoverableKey::from(p)),
                        WebauthnCredential::SecurityKey(_) => None,
                    })
                    .collect();
                w.finish_discoverable_authentication(response, s, &keys)?
            }
        };
        let index = creds
            .iter()
            .position(|c| c.cred_id() == res.cred_id())
            .ok_or(WebauthnFailure::UnknownCredential)?;
        creds[index].update(&res);
        Ok(WebauthnAssertion {
            index,
            user_verified: res.user_verified(),
            hardware_bound: creds[index].hardware_bound,
        })
    }
}
