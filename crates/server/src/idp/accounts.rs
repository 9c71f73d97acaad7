//! The stepgate user an upstream subject signs in as.
//!
//! Linking rules, in order: the user already linked to (provider, `sub`) (an
//! [`UPSTREAM_LINK_KIND`] factor record, unique per kind and lookup key); with
//! `link_by_verified_email`, the one user whose e-mail is the address the provider says it
//! verified (linked from then on); otherwise a new user, created just in time with the
//! mapped username — unless a user by that name exists, which is refused: an upstream
//! account never takes over a local one by name. An upstream user's name, e-mail, groups
//! and attributes are refreshed at each sign-in; a linked local user keeps its own.

use stepgate_store::{
    DurableStore, FactorRecord, NewAuditEvent, UserRecord, UserSource, UPSTREAM_LINK_KIND,
};

use super::{UpstreamError, UpstreamIdentity};

/// The link record's lookup key for `sub` at provider `id`.
pub fn link_key(id: &str, sub: &str) -> String {
    format!("{id}\n{sub}")
}

/// Where an identity comes from: an OpenID Provider or the LDAP directory.
pub struct Source<'a> {
    /// Its id (`identity_providers[].id`, `ldap.id`).
    pub id: &'a str,
    /// Its name, as the link record's label.
    pub label: &'a str,
    /// Whether a verified e-mail links to an existing user.
    pub link_by_verified_email: bool,
}

/// The user `who` signs in as (found, linked or created); refused when disabled.
pub async fn account(
    store: &dyn DurableStore,
    cfg: &Source<'_>,
    who: &UpstreamIdentity,
) -> Result<UserRecord, UpstreamError> {
    let down = store_down(cfg.id);
    let key = link_key(cfg.id, &who.sub);
    let linked = match store
        .find_factor(UPSTREAM_LINK_KIND, &key)
        .await
        .map_err(&down)?
    {
        Some(link) => store.get_user(&link.user_id).await.map_err(&down)?,
        None => None,
    };
    let user = match linked {
        Some(u) => refresh(store, u, who).await.map_err(&down)?,
        None => {
            let (user, created) = match by_verified_email(store, cfg, who).await? {
                Some(u) => (u, false),
                None => (create(store, cfg.id, who).await?, true),
            };
            link(store, cfg, who, &user, key, created)
                .await
                .map_err(&down)?;
            user
        }
    };
    if user.disabled {
        return Err(unusable(cfg.id, "your account here is disabled".into()));
    }
    Ok(user)
}

/// The store failed while `id`'s user was looked for.
fn store_down(id: &str) -> impl Fn(stepgate_store::StoreError) -> UpstreamError + '_ {
    move |e| UpstreamError::Unavailable {
        provider: id.to_string(),
        detail: format!("the store failed: {e}"),
    }
}

/// `id`'s identity cannot be signed in as, for the reason `detail` tells the user.
fn unusable(id: &str, detail: String) -> UpstreamError {
    UpstreamError::Unusable {
        provider: id.to_string(),
        detail,
    }
}

/// With `link_by_verified_email`, the one user whose e-mail is the address the provider
/// says it verified; refused when several have it.
async fn by_verified_email(
    store: &dyn DurableStore,
    cfg: &Source<'_>,
    who: &UpstreamIdentity,
) -> Result<Option<UserRecord>, UpstreamError> {
    let (Some(email), true) = (&who.email, cfg.link_by_verified_email && who.email_verified) else {
        return Ok(None);
    };
    let all = store.list_users().await.map_err(store_down(cfg.id))?;
    let mut same = all.into_iter().filter(|u| {
        u.email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(email))
    });
    match (same.next(), same.next()) {
        (Some(u), None) => Ok(Some(u)),
        (Some(_), Some(_)) => Err(unusable(
            cfg.id,
            "more than one account here has your e-mail address; ask your administrator to link yours".into(),
        )),
        _ => Ok(None),
    }
}

/// A new upstream user, created just in time under the mapped username — unless a user by
/// that name exists: an upstream account never takes over a local one by name.
async fn create(
    store: &dyn DurableStore,
    id: &str,
    who: &UpstreamIdentity,
) -> Result<UserRecord, UpstreamError> {
    let down = store_down(id);
    if store
        .get_user_by_username(&who.username)
        .await
        .map_err(&down)?
        .is_some()
    {
        return Err(unusable(id, format!(
            "an account named `{}` already exists here and is not linked to this provider; ask your administrator",
            who.username
        )));
    }
    let mut u = UserRecord::new(who.username.clone());
    u.source = UserSource::Upstream;
    fill(&mut u, who);
    store.create_user(&u).await.map_err(&down)?;
    Ok(u)
}

/// Links `user` (`created` just now, or found by e-mail) to `who` under `key`, audited.
async fn link(
    store: &dyn DurableStore,
    cfg: &Source<'_>,
    who: &UpstreamIdentity,
    user: &UserRecord,
    key: String,
    created: bool,
) -> Result<(), stepgate_store::StoreError> {
    let id = cfg.id;
    let mut link = FactorRecord::new(&user.id, UPSTREAM_LINK_KIND, cfg.label);
    link.lookup_key = Some(key);
    link.data = serde_json::json!({ "provider": id, "sub": who.sub });
    store.create_factor(&link).await?;
    let mut e = NewAuditEvent::now(if created {
        "user.created"
    } else {
        "user.linked"
    });
    e.actor = Some(format!("upstream:{id}"));
    e.detail = serde_json::json!({
        "user": user.username, "provider": id, "sub": who.sub,
        "how": if created { "just_in_time" } else { "verified_email" },
    });
    store.append_audit(&e).await.map(|_| ())
}

fn fill(u: &mut UserRecord, who: &UpstreamIdentity) {
    u.name = who.name.clone();
    u.email = who.email.clone();
    u.groups = who.groups.clone();
    u.attributes = who.attributes.clone();
}

/// An upstream user as the provider describes them now (stored when it changed).
async fn refresh(
    store: &dyn DurableStore,
    user: UserRecord,
    who: &UpstreamIdentity,
) -> Result<UserRecord, stepgate_store::StoreError> {
    if user.source != UserSource::Upstream {
        return Ok(user);
    }
    let mut fresh = user.clone();
    fill(&mut fresh, who);
    if fresh != user {
        fresh.updated_at = stepgate_store::now_ms();
        store.update_user(&fresh).await?;
    }
    Ok(fresh)
}
