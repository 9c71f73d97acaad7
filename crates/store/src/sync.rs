//! Users declared in the configuration, synced into the durable store on start.

use std::collections::BTreeSet;

use crate::config::UserSpec;
use crate::error::{StoreError, StoreResult};
use crate::model::{now_ms, FactorRecord, UserRecord, UserSource, PASSWORD_FACTOR_KIND};
use crate::secrets::{factor_context, SecretKey};
use crate::traits::DurableStore;

/// What [`sync_users`] changed, by username.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Users that did not exist and were created.
    pub created: Vec<String>,
    /// Users whose record or password changed.
    pub updated: Vec<String>,
    /// Users already as declared.
    pub unchanged: Vec<String>,
    /// Users synced from the configuration earlier but no longer in it: disabled, not deleted
    /// (their history and factors stay for the audit trail).
    pub disabled: Vec<String>,
}

/// The `data` of a password factor created from the configuration.
fn config_password_data() -> serde_json::Value {
    serde_json::json!({ "source": "config" })
}

/// Upserts the users declared in the configuration, marking them [`UserSource::Config`].
///
/// The declaration wins: email, name, groups, attributes and `disabled` are set as written; a
/// `password_hash` becomes the user's `password` factor (its PHC string sealed with `key`
/// under [`factor_context`]); removing `password_hash` removes a password that came from the
/// configuration. A user of the same name created in the store is taken over (with a
/// warning). Users synced earlier but since removed from the file are disabled.
pub async fn sync_users(
    store: &dyn DurableStore,
    key: &SecretKey,
    specs: &[UserSpec],
) -> StoreResult<SyncReport> {
    let mut seen = BTreeSet::new();
    for s in specs {
        if s.username.trim().is_empty() {
            return Err(StoreError::Config(
                "a user in `users` has an empty username".into(),
            ));
        }
        if !seen.insert(s.username.as_str()) {
            return Err(StoreError::Config(format!(
                "user `{}` is declared twice in `users`; keep one entry",
                s.username
            )));
        }
    }

    let mut report = SyncReport::default();
    for spec in specs {
        let existing = store.get_user_by_username(&spec.username).await?;
        let (user, mut changed) = match existing {
            None => {
                let mut u = UserRecord::new(&spec.username);
                apply(spec, &mut u);
                store.create_user(&u).await?;
                report.created.push(spec.username.clone());
                (u, false)
            }
            Some(mut u) => {
                if u.source != UserSource::Config {
                    tracing::warn!(username = %u.username, "a user created in the store is now managed by the configuration");
                }
                let before = u.clone();
                apply(spec, &mut u);
                let changed = u != before;
                if changed {
                    u.updated_at = now_ms();
                    store.update_user(&u).await?;
                }
                (u, changed)
            }
        };
        changed |= sync_password(store, key, spec, &user).await?;
        if changed {
            report.updated.push(spec.username.clone());
        } else if !report.created.contains(&spec.username) {
            report.unchanged.push(spec.username.clone());
        }
    }

    for mut u in store.list_users().await? {
        if u.source == UserSource::Config && !seen.contains(u.username.as_str()) && !u.disabled {
            u.disabled = true;
            u.updated_at = now_ms();
            store.update_user(&u).await?;
            tracing::warn!(username = %u.username, "a user removed from the configuration was disabled");
            report.disabled.push(u.username.clone());
        }
    }
    tracing::info!(
        created = report.created.len(),
        updated = report.updated.len(),
        disabled = report.disabled.len(),
        "synced users from the configuration"
    );
    Ok(report)
}

fn apply(spec: &UserSpec, u: &mut UserRecord) {
    u.email = spec.email.clone();
    u.name = spec.name.clone();
    u.groups = spec.groups.clone();
    u.attributes = spec.attributes.clone();
    u.disabled = spec.disabled;
    u.source = UserSource::Config;
}

/// Makes the user's password factor match the spec. Whether anything changed.
async fn sync_password(
    store: &dyn DurableStore,
    key: &SecretKey,
    spec: &UserSpec,
    user: &UserRecord,
) -> StoreResult<bool> {
    let factors = store.list_factors(&user.id).await?;
    let current = factors.iter().find(|f| f.kind == PASSWORD_FACTOR_KIND);
    match (&spec.password_hash, current) {
        (None, None) => Ok(false),
        (None, Some(f)) => {
            if f.data.get("source").and_then(|v| v.as_str()) == Some("config") {
                store.delete_factor(&f.id).await?;
                Ok(true)
            } else {
                Ok(false)
            }
        }
        (Some(phc), Some(f)) => {
            let ctx = factor_context(&user.id, &f.id);
            let same = match &f.secret {
                Some(s) => key
                    .open(s, &ctx)
                    .is_ok_and(|p| p.as_slice() == phc.as_str().as_bytes()),
                None => false,
            };
            if same {
                return Ok(false);
            }
            let mut f = f.clone();
            f.secret = Some(key.seal(phc.as_str().as_bytes(), &ctx)?);
            f.data = config_password_data();
            store.update_factor(&f).await?;
            Ok(true)
        }
        (Some(phc), None) => {
            let mut f = FactorRecord::new(&user.id, PASSWORD_FACTOR_KIND, "password");
            f.secret = Some(key.seal(phc.as_str().as_bytes(), &factor_context(&user.id, &f.id))?);
            f.data = config_password_data();
            store.create_factor(&f).await?;
            Ok(true)
        }
    }
}
