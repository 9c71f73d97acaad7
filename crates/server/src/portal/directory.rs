//! The login form's password checked against the LDAP directory (`ldap:`,
//! [`crate::idp::ldap`]) instead of the store: for usernames with no local account, or whose
//! account came from outside (source `upstream`). Local users keep their stepgate password.
//! stepgate's own regulation (per account and per IP) applies as for a local password; the
//! user is found by their directory link, or created just in time, and the sign-in goes on
//! as any password's ([`super::signin::sign_in`]).

use std::net::IpAddr;

use chrono::Utc;
use stepgate_authn::service::AuthError;
use stepgate_authn::{FactorKind, PassedFactor};
use stepgate_store::{UserRecord, UserSource};

use super::audit;
use super::extract::Here;
use crate::app::state::Shared;
use crate::idp::accounts::{self, Source};
use crate::idp::ldap::DirectoryError;
use crate::idp::{UpstreamError, UpstreamIdentity};
use stepgate_config::identity::LdapConfig;

/// What the directory said of a password.
pub enum Checked {
    /// The password is right: the user, and the password factor passed.
    Passed(Box<UserRecord>, PassedFactor),
    /// Refused as a local password would be (wrong, locked, disabled, not linkable).
    Refused(AuthError),
    /// The directory could not be asked: refused, audited, "try again later".
    Unavailable,
}

/// What a person is told when the directory cannot be reached.
pub const UNAVAILABLE: &str =
    "The directory that checks your password cannot be reached, so you cannot sign in right now. Try again in a few minutes.";

/// The directory's answer for `username`, or `None` when the store's password decides (no
/// directory configured, or a local account by that name).
pub async fn password(
    st: &Shared,
    rt: &Here,
    username: &str,
    password: &str,
    ip: Option<IpAddr>,
) -> Option<Checked> {
    let cfg = rt.config.ldap.as_ref()?;
    let local = match st.stores.durable.get_user_by_username(username).await {
        Ok(u) => u,
        Err(e) => return Some(Checked::Refused(AuthError::Store(e))),
    };
    if local
        .as_ref()
        .is_some_and(|u| u.source != UserSource::Upstream)
    {
        return None;
    }
    let unavailable = |detail: String| unavailable(st, cfg, username, ip, detail);
    let dir = match st.idps.directory(cfg, &rt.config.base_dir) {
        Ok(d) => d,
        Err(e) => return Some(unavailable(e).await),
    };
    let checked = st
        .authn
        .verify_external(username, local.as_ref(), ip, async {
            match dir.authenticate(username, password).await {
                Ok(who) => Ok(Some(who)),
                Err(DirectoryError::InvalidCredentials) => Ok(None),
                Err(DirectoryError::Unavailable(m)) => Err(m),
            }
        })
        .await;
    let checked = match checked {
        Err(detail) => Err(detail),
        Ok(Err(e)) => Ok(Checked::Refused(e)),
        Ok(Ok(who)) => linked(st, rt, cfg, &who).await,
    };
    Some(match checked {
        Ok(c) => c,
        Err(detail) => unavailable(detail).await,
    })
}

/// The directory's user `who` as a stepgate user (found by their link, or created), with
/// the password passed; `Err` says why the store could not be asked.
async fn linked(
    st: &Shared,
    rt: &Here,
    cfg: &LdapConfig,
    who: &UpstreamIdentity,
) -> Result<Checked, String> {
    let source = Source {
        id: &cfg.id,
        label: &cfg.id,
        link_by_verified_email: false,
    };
    match accounts::account(st.stores.durable.as_ref(), &source, who).await {
        Ok(user) => {
            let factor = PassedFactor::new(FactorKind::Password, &rt.config.assurance, Utc::now());
            Ok(Checked::Passed(Box::new(user), factor))
        }
        Err(UpstreamError::Unusable { detail, .. }) => Ok(Checked::Refused(AuthError::Rejected(
            format!("You cannot sign in: {detail}."),
        ))),
        Err(e) => Err(e.to_string()),
    }
}

/// A sign-in the directory could not answer: refused, logged and audited.
async fn unavailable(
    st: &Shared,
    cfg: &LdapConfig,
    username: &str,
    ip: Option<IpAddr>,
    detail: String,
) -> Checked {
    tracing::warn!(directory = cfg.id.as_str(), error = %detail, "directory sign-in refused: unavailable");
    audit(
        st,
        "signin.directory_unavailable",
        username,
        ip,
        serde_json::json!({ "directory": cfg.id, "detail": detail }),
    )
    .await;
    Checked::Unavailable
}
