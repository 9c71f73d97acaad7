//! SIGHUP reloads the configuration (an invalid file is refused and the running one
//! kept); SIGTERM and SIGINT stop the server.

use std::path::Path;
use std::sync::Arc;

use super::state::{Runtime, Shared};

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) fn spawn_reloader(state: Shared) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            // A version saved by `stepgate policy rollback` (no running node heard it).
            super::stored_policies::follow(&state, "reload").await;
            reload(&state);
        }
    });
}

/// Re-reads the configuration file and swaps it in atomically; keeps the old one (and
/// logs every error) when the new one is invalid. Stores, factors and keys are not
/// reloaded: they need a restart.
pub fn reload(state: &Shared) -> bool {
    reload_checked(state).is_ok()
}

/// Why a reload was refused.
#[derive(Debug)]
pub enum ReloadRefused {
    /// The server runs the built-in demo configuration: there is no file to re-read.
    NoFile,
    /// The file does not load, or a connector it names cannot be built: each error, with
    /// its file and position where it has one.
    Invalid(Vec<String>),
}

/// [`reload`], saying why not: the new configuration's version, or the errors (also
/// logged). The admin API's reload and SIGHUP both come here. With `admin.policy_edits:
/// store`, the stored policy set in force takes the place of the files' `policies:`.
pub fn reload_checked(state: &Shared) -> Result<String, ReloadRefused> {
    let stored = state.stored_policies.in_force();
    let name = stored
        .as_ref()
        .map(|v| super::stored_policies::source_name(Some(v.version)));
    let policies = stored
        .as_ref()
        .zip(name.as_deref())
        .map(|(v, n)| (n, v.text.as_str()));
    match load_config(state, policies) {
        Ok(cfg) => swap_in(state, cfg),
        Err(None) => {
            tracing::warn!("reload: no configuration file to reload (built-in demo configuration)");
            Err(ReloadRefused::NoFile)
        }
        Err(Some(e)) => {
            for d in &e.diagnostics {
                tracing::error!(%d, "reload refused; keeping the running configuration");
            }
            Err(ReloadRefused::Invalid(
                e.diagnostics.iter().map(|d| d.to_string()).collect(),
            ))
        }
    }
}

/// Loads the configuration file as a reload does, with `policies` (a policy set's name and
/// YAML text) in place of its `policies:` when given. `Err(None)`: there is no file (the
/// built-in demo configuration).
pub(crate) fn load_config(
    state: &Shared,
    policies: Option<(&str, &str)>,
) -> Result<stepgate_config::Config, Option<stepgate_config::ConfigError>> {
    let path = state.options.config_path.clone().ok_or(None)?;
    match policies {
        Some((name, text)) => stepgate_config::load_with_policies(Path::new(&path), name, text),
        None => stepgate_config::load(Path::new(&path)),
    }
    .map_err(Some)
}

/// Puts a loaded configuration in force: its connectors first (one that cannot be built
/// refuses the whole reload, and the running ones go on), then the rest, swapped whole.
/// A file whose `admin.policy_edits` differs from the one read at start is refused.
pub(crate) fn swap_in(
    state: &Shared,
    cfg: stepgate_config::Config,
) -> Result<String, ReloadRefused> {
    policy_edits_unchanged(state, &cfg)?;
    let connectors = match crate::devices::connectors::Connectors::reload(state, &cfg) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; keeping the running configuration and connectors");
            return Err(ReloadRefused::Invalid(vec![e.to_string()]));
        }
    };
    if connectors != Default::default() {
        tracing::info!(added = ?connectors.added, removed = ?connectors.removed,
            changed = ?connectors.changed, "device connectors reloaded");
    }
    let n = cfg.policy_set.len();
    let version = cfg.version.clone();
    state.cache.set_ttl(cfg.sessions.cache_ttl());
    // A client that asks for an algorithm no key exists for yet gets one now.
    let keys = state.oidc_keys.clone();
    let (key_cfg, algs) = (
        crate::oidc::tokens::key_config(&cfg),
        crate::oidc::tokens::key_algs(&cfg),
    );
    tokio::spawn(async move {
        if let Err(e) = keys
            .maintain_algs(&key_cfg, &algs, chrono::Utc::now())
            .await
        {
            tracing::warn!(error = %e, "oidc keys: making the keys the reloaded clients ask for failed");
        }
    });
    state.runtime.store(Arc::new(Runtime::new(cfg)));
    tracing::info!(policies = n, %version, "configuration reloaded");
    Ok(version)
}

/// Refuses a configuration that changes `admin.policy_edits`: where the policies come from
/// is fixed at start. Switching at run time would either drop the stored set for the
/// files' (which may be looser, and on one node of many) or start following the store
/// without its change feed; a restart does either cleanly.
fn policy_edits_unchanged(
    state: &Shared,
    cfg: &stepgate_config::Config,
) -> Result<(), ReloadRefused> {
    let name = |m: stepgate_config::PolicyEdits| match m {
        stepgate_config::PolicyEdits::Yaml => "yaml",
        stepgate_config::PolicyEdits::Store => "store",
    };
    let (running, asked) = (state.stored_policies.mode(), cfg.admin.policy_edits);
    if running == asked {
        return Ok(());
    }
    let e = format!(
        "admin.policy_edits changed from `{}` to `{}`: it is read only at start; restart stepgate to change it (the running configuration is kept)",
        name(running),
        name(asked)
    );
    tracing::error!(error = %e, "reload refused");
    Err(ReloadRefused::Invalid(vec![e]))
}
