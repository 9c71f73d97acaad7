//! WebAuthn passkeys and security keys (webauthn-rs): registration and authentication
//! ceremonies, discoverable credentials for passwordless sign-in, user verification
//! required for passkeys, and attestation checked against configured roots so that a
//! credential can be recorded as hardware-bound.
//!
//! Ceremony states are serialisable so the server can keep them in the session between
//! the two halves of a ceremony.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestedPasskey, AttestedPasskeyRegistration,
    CreationChallengeResponse, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey,
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
    /// Security key; `attested` says whether roots were enforced.
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
                let (ccr, s) =
                    w.start_passkey_registration(user.id, user.name, user.display_name, exclude)?;
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
                let roots = self.roots.clone();
                let attested = roots.is_some();
                let (ccr, s) = w.start_securitykey_registration(
                    user.id,
                    user.name,
                    user.display_name,
                    exclude,
                    roots,
                    None,
                )?;
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
            RegistrationState::Passkey(s) => StoredCredential {
                credential: WebauthnCredential::Passkey(
                    w.finish_passkey_registration(response, s)?,
                ),
                hardware_bound: false,
            },
            RegistrationState::HardwarePasskey(s) => StoredCredential {
                credential: WebauthnCredential::AttestedPasskey(
                    w.finish_attested_passkey_registration(response, s)?,
                ),
                hardware_bound: true,
            },
            RegistrationState::SecurityKey { state, attested } => StoredCredential {
                credential: WebauthnCredential::SecurityKey(
                    w.finish_securitykey_registration(response, state)?,
                ),
                hardware_bound: *attested,
            },
        };
        Ok(FactorMaterial {
            kind: FactorKind::Webauthn,
            label: label.to_string(),
            secret: None,
            data: serde_json::to_value(&stored)
                .map_err(|e| WebauthnFailure::Config(e.to_string()))?,
        })
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
