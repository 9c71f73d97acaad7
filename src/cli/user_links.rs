//! `stepgate user invite` and `stepgate user reset-link`: the single-use links a user opens
//! to set a password (and, invited, to add a passkey or authenticator app), printed for the
//! administrator and e-mailed to the user when `factors.email_otp` has a transport.

use stepgate_authn::{Authenticator, LinkPurpose};
use stepgate_policy::HumanDuration;
use stepgate_store::{Stores, UserRecord};

use super::user::audit_with;

/// A user `stepgate user invite` creates.
pub struct NewUser<'a> {
    /// Sign-in name.
    pub username: &'a str,
    /// E-mail address.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
}

/// Creates a local user without a password (audited as `user.created`).
pub async fn create_user(stores: &Stores, new: NewUser<'_>) -> anyhow::Result<UserRecord> {
    let username = new.username;
    if username.trim().is_empty() || username.trim() != username {
        anyhow::bail!("the username must be non-empty without leading or trailing spaces");
    }
    let mut u = UserRecord::new(username);
    u.email = new.email;
    u.name = new.name;
    u.groups = new.groups;
    stores.durable.create_user(&u).await.map_err(|e| match e {
        stepgate_store::StoreError::Conflict { .. } => {
            anyhow::anyhow!("user `{username}` already exists; nothing was changed")
        }
        other => other.into(),
    })?;
    let detail = serde_json::json!({ "username": u.username });
    audit_with(stores, "user.created", &u, detail).await?;
    println!("created user {} ({})", u.username, u.id);
    Ok(u)
}

/// What link to issue, and where the portal is.
pub struct Link<'a> {
    /// The portal's public address.
    pub portal_url: &'a str,
    /// Invitation or reset.
    pub purpose: LinkPurpose,
    /// How long it works.
    pub valid_for: HumanDuration,
}

/// Issues the link, prints it, and e-mails it when the user has an address and e-mail is
/// configured (the link is printed either way: a failed delivery is reported, not fatal).
pub async fn issue(
    stores: &Stores,
    authn: &Authenticator,
    u: &UserRecord,
    link: Link<'_>,
) -> anyhow::Result<()> {
    if u.source == stepgate_store::UserSource::Config {
        anyhow::bail!(
            "the password of `{}` is managed in the configuration file (`users[].password_hash`); a link could not set it",
            u.username
        );
    }
    if u.disabled {
        anyhow::bail!(
            "`{}` is disabled: enable them first with `stepgate user enable {}`",
            u.username,
            u.username
        );
    }
    let path = match link.purpose {
        LinkPurpose::Invitation => "invite",
        LinkPurpose::PasswordReset => "reset",
    };
    let issued = authn
        .issue_link(u, link.purpose, link.valid_for.0, Some("cli"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = format!("{}/{path}/{}", link.portal_url, issued.token.as_str());
    let until = issued.expires_at.format("%Y-%m-%d %H:%M UTC");
    let what = match link.purpose {
        LinkPurpose::Invitation => "invitation",
        LinkPurpose::PasswordReset => "password-reset link",
    };
    println!(
        "{what} for {} (works once, until {until}; any earlier one no longer works):",
        u.username
    );
    println!("{url}");
    let (Some(to), true) = (u.email.as_deref(), authn.can_email()) else {
        if authn.can_email() {
            eprintln!(
                "note: `{}` has no e-mail address; send them the link yourself",
                u.username
            );
        }
        return Ok(());
    };
    let (subject, intro) = match link.purpose {
        LinkPurpose::Invitation => (
            "Your new account: choose a password",
            "You have been invited to sign in with stepgate. Open this link to choose a password and add a passkey or an authenticator app:",
        ),
        LinkPurpose::PasswordReset => (
            "Choose a new password",
            "Your administrator sent you a link to choose a new password. Open it to set one; you will be signed out everywhere else:",
        ),
    };
    let body = format!(
        "Hello {},\n\n{intro}\n\n{url}\n\nThe link works once, until {until}. If you did not expect this message, ignore it and tell your help desk.\n",
        u.name.as_deref().unwrap_or(&u.username)
    );
    match authn.send_email(to, subject, &body).await {
        Ok(_) => {
            println!(
                "e-mailed to {}",
                stepgate_authn::service::mask_destination(to)
            );
            let detail =
                serde_json::json!({ "purpose": link.purpose.as_str(), "link_id": issued.id });
            audit_with(stores, "link.emailed", u, detail).await?;
        }
        Err(e) => eprintln!("warning: the e-mail was not sent ({e}); send them the link yourself"),
    }
    Ok(())
}
