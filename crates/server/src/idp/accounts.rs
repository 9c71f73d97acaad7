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
    let id = cfg.id;
    let down = |e: stepgate_store::StoreError| UpstreamError::Unavailable {
        provider: id.to_string(),
        detail: format!("the store failed: {e}"),
    };
    let unusable = |detail: String| UpstreamError::Unusable {
        provider: id.to_string(),
        detail,
    };
    let key = link_key(id, &who.sub);
    let linked = match store
        .find_factor(UPSTREAM_LINK_KIND, &key)
        .await
        .map_err(down)?
    {
        Some(link) => store.get_user(&link.user_id).await.map_err(down)?,
        None => None,
    };
    let user = match linked {
        Some(u) => refresh(store, u, who).await.map_err(down)?,
        None => {
            let by_email = match (&who.email, cfg.link_by_verified_email && who.email_verified) {
                (Some(email), true) => {
                    let all = store.list_users().await.map_err(down)?;
                    let mut same = all.into_iter().filter(|u| {
                        u.email
                            .as_deref()
                            .is_some_and(|e| e.eq_ignore_ascii_case(email))
                    });
                    match (same.next(), same.next()) {
                        (Some(u), None) => Some(u),
                        (Some(_), Some(_)) => {
                            return Err(unusable(
                                "more than one account here has your e-mail address; ask your administrator to link yours".into(),
                            ))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            let (user, created) = match by_email {
                Some(u) => (u, false),
                None => {
                    if store
                        .get_user_by_username(&who.username)
                        .await
                        .map_err(down)?
                        .is_some()
                    {
                        return Err(unusable(format!(
                            "an account named `{}` already exists here and is not linked to this provider; ask your administrator",
                            who.username
                        )));
                    }
                    let mut u = UserRecord::new(who.username.clone());
                    u.source = UserSource::Upstream;
                    fill(&mut u, who);
                    store.create_user(&u).await.map_err(down)?;
                    (u, true)
                }
            };
            let mut link = FactorRecord::new(&user.id, UPSTREAM_LINK_KIND, cfg.label);
            link.lookup_key = Some(key);
            link.data = serde_json::json!({ "provider": id, "sub": who.sub });
            store.create_factor(&link).await.map_err(down)?;
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
            store.append_audit(&e).await.map_err(down)?;
            user
        }
    };
    if user.disabled {
        return Err(unusable("your account here is disabled".into()));
    }
    Ok(user)
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
