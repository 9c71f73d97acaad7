//! `stepgate user delete | set-groups | add-group | remove-group | set-attribute`: the
//! changes to a user after `add`, each audited as `admin:cli` and refused with a clear
//! message (and no audit event) when it cannot be made.

use std::collections::BTreeSet;

use stepgate_store::{AttributeValue, Stores, UserRecord, UserSource};

use super::user::{audit_with, user};

/// How `set-groups`, `add-group` and `remove-group` change the group list.
pub enum GroupChange {
    /// Replace them all (an empty list removes every group).
    Set(Vec<String>),
    /// Add these (already present ones are kept once).
    Add(Vec<String>),
    /// Remove these (absent ones are reported).
    Remove(Vec<String>),
}

/// A user declared under `users:` is re-applied from the file at every start: a change
/// made here would silently come back, so it is refused with where to make it.
fn refuse_config_managed(u: &UserRecord, what: &str) -> anyhow::Result<()> {
    if u.source == UserSource::Config {
        anyhow::bail!(
            "`{}` is declared under `users:` in the configuration file, which is applied again at every start: {what} there instead",
            u.username
        );
    }
    Ok(())
}

fn check_name(kind: &str, name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() || name.trim() != name || name.contains(',') {
        anyhow::bail!(
            "{kind} `{name}` must be non-empty, without commas or leading/trailing spaces"
        );
    }
    Ok(())
}

/// Deletes a user, their factors and their live sessions (audit events stay, devices stay
/// registered under their id).
pub async fn delete(stores: &Stores, username: &str) -> anyhow::Result<()> {
    let u = user(stores, username).await?;
    refuse_config_managed(&u, "remove them from `users:`")?;
    let signed_out = stores.hot.delete_sessions_for_user(&u.id).await?;
    if !stores.durable.delete_user(&u.id).await? {
        anyhow::bail!("user `{username}` was deleted by someone else meanwhile");
    }
    audit_with(
        stores,
        "user.deleted",
        &u,
        serde_json::json!({ "username": u.username, "sessions_ended": signed_out }),
    )
    .await?;
    println!(
        "deleted user {} ({}), their factors and {signed_out} live session(s)",
        u.username, u.id
    );
    Ok(())
}

/// Changes a user's groups; prints the new list.
pub async fn change_groups(
    stores: &Stores,
    username: &str,
    change: GroupChange,
) -> anyhow::Result<()> {
    let mut u = user(stores, username).await?;
    refuse_config_managed(&u, "change their `groups`")?;
    let before = u.groups.clone();
    let mut groups = match &change {
        GroupChange::Set(g) => {
            let mut seen = BTreeSet::new();
            g.iter()
                .filter(|x| seen.insert(x.as_str()))
                .cloned()
                .collect()
        }
        GroupChange::Add(g) => {
            let mut out = before.clone();
            for x in g {
                if !out.contains(x) {
                    out.push(x.clone());
                }
            }
            out
        }
        GroupChange::Remove(g) => {
            let missing: Vec<&str> = g
                .iter()
                .filter(|x| !before.contains(x))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                anyhow::bail!(
                    "`{}` is not in group(s) {}; their groups are: {}",
                    u.username,
                    missing.join(", "),
                    if before.is_empty() {
                        "none".to_string()
                    } else {
                        before.join(", ")
                    }
                );
            }
            before.iter().filter(|x| !g.contains(x)).cloned().collect()
        }
    };
    for g in &groups {
        check_name("group", g)?;
    }
    groups.shrink_to_fit();
    if groups == before {
        println!("{}: groups unchanged ({})", u.username, shown(&groups));
        return Ok(());
    }
    u.groups = groups;
    u.updated_at = stepgate_store::now_ms();
    stores.durable.update_user(&u).await?;
    audit_with(
        stores,
        "user.groups_changed",
        &u,
        serde_json::json!({ "username": u.username, "before": before, "after": u.groups }),
    )
    .await?;
    println!("{}: groups {}", u.username, shown(&u.groups));
    Ok(())
}

/// Sets (one value, or several as a list) or, with no values, removes an attribute.
pub async fn set_attribute(
    stores: &Stores,
    username: &str,
    key: &str,
    values: Vec<String>,
) -> anyhow::Result<()> {
    check_name("attribute", key)?;
    let mut u = user(stores, username).await?;
    refuse_config_managed(&u, "change their `attributes`")?;
    let value = match values.len() {
        0 => None,
        1 => values.into_iter().next().map(AttributeValue::One),
        _ => Some(AttributeValue::Many(values)),
    };
    let before = u.attributes.get(key).cloned();
    if before == value {
        println!("{}: attribute `{key}` unchanged", u.username);
        return Ok(());
    }
    match &value {
        Some(v) => u.attributes.insert(key.to_string(), v.clone()),
        None => u.attributes.remove(key),
    };
    u.updated_at = stepgate_store::now_ms();
    stores.durable.update_user(&u).await?;
    audit_with(
        stores,
        if value.is_some() {
            "user.attribute_set"
        } else {
            "user.attribute_removed"
        },
        &u,
        serde_json::json!({ "username": u.username, "attribute": key, "before": before, "after": value }),
    )
    .await?;
    match value {
        Some(v) => println!("{}: {key} = {}", u.username, serde_json::to_string(&v)?),
        None => println!("{}: removed attribute `{key}`", u.username),
    }
    Ok(())
}

fn shown(groups: &[String]) -> String {
    if groups.is_empty() {
        "none".into()
    } else {
        groups.join(", ")
    }
}
