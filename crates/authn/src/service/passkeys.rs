//! WebAuthn (passkeys and security keys): registration and authentication ceremonies,
//! the state kept between their halves, and the user handle credentials are bound to.

use std::net::IpAddr;

use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stepgate_store::{now_ms, FactorRecord, StoreError, UserRecord};
use uuid::Uuid;

use super::{Actor, AuthError, Authenticator};
use crate::assurance::PassedFactor;
use crate::factor::FactorKind;
use crate::webauthn::{
    AuthenticationState, RegistrationKind, RegistrationState, StoredCredential, WebauthnCredential,
    WebauthnFactor, WebauthnFailure, WebauthnUser,
};

/// The WebAuthn user handle for a user: the 128-bit hex id itself when it is one, otherwise
/// derived from it (stable, so credentials keep working).
pub(super) fn user_handle(user: &UserRecord) -> Uuid {
    if user.id.len() == 32 {
        if let Ok(u) = Uuid::try_parse(&user.id) {
            return u;
        }
    }
    let d = Sha256::digest(user.id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

pub(super) fn cred_lookup_key(id: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// What is kept server-side between the halves of a registration.
#[derive(Serialize, Deserialize)]
pub(super) struct RegistrationEnvelope {
    user_id: String,
    state: RegistrationState,
}

/// What is kept server-side between the halves of an authentication.
#[derive(Serialize, Deserialize)]
pub(super) struct AuthenticationEnvelope {
    user_id: Option<String>,
    state: AuthenticationState,
}

pub(super) fn json_err(e: serde_json::Error) -> AuthError {
    AuthError::Rejected(format!("malformed WebAuthn data: {e}"))
}

pub(super) fn webauthn_err(e: WebauthnFailure) -> AuthError {
    match e {
        WebauthnFailure::Ceremony(_) | WebauthnFailure::UnknownCredential => {
            AuthError::InvalidCredentials
        }
        WebauthnFailure::NoAttestationRoots | WebauthnFailure::NotHardwareBound => {
            AuthError::Rejected(e.to_string())
        }
        WebauthnFailure::Config(m) => AuthError::Internal(m),
    }
}

impl Authenticator {
    pub(super) fn rp(&self) -> Result<&WebauthnFactor, AuthError> {
        self.inner
            .webauthn
            .as_ref()
            .ok_or(AuthError::FactorUnavailable(FactorKind::Webauthn))
    }

    pub(super) async fn credentials_of(
        &self,
        user_id: &str,
    ) -> Result<(Vec<FactorRecord>, Vec<StoredCredential>), AuthError> {
        let mut records = Vec::new();
        let mut creds = Vec::new();
        for f in self.durable().list_factors(user_id).await? {
            if f.kind != FactorKind::Webauthn.as_str() {
                continue;
            }
            match serde_json::from_value::<StoredCredential>(f.data.clone()) {
                Ok(c) => {
                    creds.push(c);
                    records.push(f);
                }
                Err(e) => {
                    tracing::error!(factor = %f.id, error = %e, "unreadable WebAuthn credential")
                }
            }
        }
        Ok((records, creds))
    }

    /// Starts registering a passkey or security key. Returns the options for
    /// `navigator.credentials.create` and the state to keep server-side for the finish.
    pub async fn webauthn_register_start(
        &self,
        user: &UserRecord,
        kind: RegistrationKind,
    ) -> Result<(serde_json::Value, serde_json::Value), AuthError> {
        let rp = self.rp()?;
        let (_, existing) = self.credentials_of(&user.id).await?;
        let display = user.name.clone().unwrap_or_else(|| user.username.clone());
        let wu = WebauthnUser {
            id: user_handle(user),
            name: &user.username,
            display_name: &display,
        };
        let (ccr, state) = rp
            .start_registration(&wu, &existing, kind)
            .map_err(webauthn_err)?;
        let state = RegistrationEnvelope {
            user_id: user.id.clone(),
            state,
        };
        Ok((
            serde_json::to_value(&ccr).map_err(|e| AuthError::Internal(e.to_string()))?,
            serde_json::to_value(&state).map_err(|e| AuthError::Internal(e.to_string()))?,
        ))
    }

    /// Finishes a registration with the browser's response; stores the credential.
    pub async fn webauthn_register_finish(
        &self,
        user: &UserRecord,
        state: serde_json::Value,
        response: serde_json::Value,
        label: &str,
    ) -> Result<FactorRecord, AuthError> {
        let rp = self.rp()?;
        let env: RegistrationEnvelope = serde_json::from_value(state).map_err(json_err)?;
        if env.user_id != user.id {
            return Err(AuthError::Rejected(
                "this registration was started for another account".into(),
            ));
        }
        let response = serde_json::from_value(response).map_err(json_err)?;
        let label = match label.trim() {
            "" => "Passkey",
            l => l,
        };
        let material = rp
            .finish_registration(&response, &env.state, label)
            .map_err(|e| match e {
                WebauthnFailure::Ceremony(c) => {
                    AuthError::Rejected(format!("the authenticator's response was refused: {c}"))
                }
                other => webauthn_err(other),
            })?;
        let stored: StoredCredential = serde_json::from_value(material.data.clone())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut f = FactorRecord::new(&user.id, FactorKind::Webauthn.as_str(), material.label);
        f.lookup_key = Some(cred_lookup_key(stored.cred_id().as_ref()));
        f.data = material.data;
        self.durable()
            .create_factor(&f)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => {
                    AuthError::Rejected("this authenticator is already registered".into())
                }
                other => AuthError::Store(other),
            })?;
        self.audit(
            "factor.enrolled",
            Actor::User,
            user,
            Some(&f.id),
            serde_json::json!({
                "kind": f.kind,
                "label": f.label,
                "hardware_bound": stored.hardware_bound,
            }),
        )
        .await?;
        Ok(f)
    }

    /// Starts a WebAuthn step-up of `user` towards `req`: the ceremony offers exactly the
    /// credentials that can satisfy it — when it needs a hardware-bound authenticator
    /// (`hardware_bound`, or AAL3), only those proven hardware-bound at registration — so a
    /// user with a synced passkey and a security key is asked for the key. Passkeys are
    /// asked with user verification, security keys with touch (one ceremony per kind:
    /// passkeys when any qualifies, else security keys).
    pub async fn webauthn_step_up_start(
        &self,
        user: &UserRecord,
        req: &crate::assurance::StepUpRequirement,
    ) -> Result<(serde_json::Value, serde_json::Value), AuthError> {
        let rp = self.rp()?;
        let (_, creds) = self.credentials_of(&user.id).await?;
        let hardware = req.hardware_bound || req.min_aal.is_some_and(|a| a >= 3);
        let creds: Vec<StoredCredential> = creds
            .into_iter()
            .filter(|c| !hardware || c.hardware_bound)
            .collect();
        if creds.is_empty() {
            return Err(if hardware {
                AuthError::Rejected(
                    "none of your passkeys is a hardware security key; add one under Security settings".into(),
                )
            } else {
                AuthError::NotEnrolled(FactorKind::Webauthn)
            });
        }
        let any_passkey = creds
            .iter()
            .any(|c| !matches!(c.credential, WebauthnCredential::SecurityKey(_)));
        let (rcr, state) = if any_passkey {
            rp.start_passkey_authentication(&creds)
        } else {
            rp.start_security_key_authentication(&creds)
        }
        .map_err(webauthn_err)?;
        let env = AuthenticationEnvelope {
            user_id: Some(user.id.clone()),
            state,
        };
        Ok((
            serde_json::to_value(&rcr).map_err(|e| AuthError::Internal(e.to_string()))?,
            serde_json::to_value(&env).map_err(|e| AuthError::Internal(e.to_string()))?,
        ))
    }

    /// Starts a WebAuthn sign-in: with `Some(user)` against their credentials (passkeys if
    /// they have any, else security keys), with `None` passwordless (any discoverable
    /// credential). Returns the options for `navigator.credentials.get` and the state.
    pub async fn webauthn_auth_start(
        &self,
        user: Option<&UserRecord>,
    ) -> Result<(serde_json::Value, serde_json::Value), AuthError> {
        let rp = self.rp()?;
        let (rcr, state) = match user {
            None => rp.start_passwordless().map_err(webauthn_err)?,
            Some(u) => {
                let (_, creds) = self.credentials_of(&u.id).await?;
                if creds.is_empty() {
                    return Err(AuthError::NotEnrolled(FactorKind::Webauthn));
                }
                let any_passkey = creds
                    .iter()
                    .any(|c| !matches!(c.credential, WebauthnCredential::SecurityKey(_)));
                if any_passkey {
                    rp.start_passkey_authentication(&creds)
                } else {
                    rp.start_security_key_authentication(&creds)
                }
                .map_err(webauthn_err)?
            }
        };
        let env = AuthenticationEnvelope {
            user_id: user.map(|u| u.id.clone()),
            state,
        };
        Ok((
            serde_json::to_value(&rcr).map_err(|e| AuthError::Internal(e.to_string()))?,
            serde_json::to_value(&env).map_err(|e| AuthError::Internal(e.to_string()))?,
        ))
    }

    /// The user the credential of a passkey assertion (`response`, as the browser sent it)
    /// is registered to, if any: who a failed passkey sign-in claimed to be, for its audit.
    pub async fn passkey_owner(&self, response: &serde_json::Value) -> Option<UserRecord> {
        let response: webauthn_rs::prelude::PublicKeyCredential =
            serde_json::from_value(response.clone()).ok()?;
        let key = cred_lookup_key(response.get_credential_id());
        let f = self
            .durable()
            .find_factor(FactorKind::Webauthn.as_str(), &key)
            .await
            .ok()??;
        self.durable().get_user(&f.user_id).await.ok()?
    }

    /// Finishes a WebAuthn sign-in; returns the user (found from the credential for a
    /// passwordless sign-in) and the passed factor (user verification and hardware binding
    /// recorded).
    pub async fn webauthn_auth_finish(
        &self,
        state: serde_json::Value,
        response: serde_json::Value,
        ip: Option<IpAddr>,
    ) -> Result<(UserRecord, PassedFactor), AuthError> {
        let rp = self.rp()?;
        let env: AuthenticationEnvelope = serde_json::from_value(state).map_err(json_err)?;
        let response: webauthn_rs::prelude::PublicKeyCredential =
            serde_json::from_value(response).map_err(json_err)?;
        let user_id = match env.user_id {
            Some(id) => id,
            None => {
                let key = cred_lookup_key(response.get_credential_id());
                let f = self
                    .durable()
                    .find_factor(FactorKind::Webauthn.as_str(), &key)
                    .await?
                    .ok_or(AuthError::InvalidCredentials)?;
                f.user_id
            }
        };
        let user = self
            .durable()
            .get_user(&user_id)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if matches!(env.state, AuthenticationState::Discoverable(_)) {
            let handle = rp
                .identify_passwordless(&response)
                .map_err(|_| AuthError::InvalidCredentials)?;
            if handle != user_handle(&user) {
                return Err(AuthError::InvalidCredentials);
            }
        }
        let (records, mut creds) = self.credentials_of(&user.id).await?;
        let state = env.state;
        let passed = self
            .regulated(&user, ip, FactorKind::Webauthn, async {
                let a = rp
                    .finish_authentication(&response, state, &mut creds)
                    .map_err(webauthn_err)?;
                let mut f = records[a.index].clone();
                f.data = serde_json::to_value(&creds[a.index])
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                f.last_used_at = Some(now_ms());
                self.durable().update_factor(&f).await?;
                let mut p = PassedFactor::webauthn(
                    &self.inner.settings.assurance,
                    Utc::now(),
                    a.user_verified,
                    a.hardware_bound,
                );
                p.factor_id = Some(f.id.clone());
                Ok(p)
            })
            .await?;
        Ok((user, passed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn user_handle_is_the_hex_id_or_derived() {
        let mut u = UserRecord::new("jane");
        assert_eq!(user_handle(&u).simple().to_string(), u.id);
        u.id = "config-jane".into();
        assert_eq!(user_handle(&u), user_handle(&u));
    }
}
