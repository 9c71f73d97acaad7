//! `stepgate policy versions|show N|diff A B|rollback N`: the policy sets saved in the store
//! (`admin.policy_edits: store`), read from the store the configuration names as the other
//! store-reading subcommands do. `rollback` checks the old version loads with the
//! configuration files, saves it as the next version (`app::stored_policies::record`, the
//! server's own write), audits it as `policy.saved` with the operator as actor, and
//! announces it on the change feed when Redis is configured; a single node without Redis
//! puts it in force at its next reload (SIGHUP, `POST /config/reload`) or start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use stepgate_config::{Config, PolicyEdits};
use stepgate_server::admin::policy_history;
use stepgate_server::app::stored_policies::{self, describe};
use stepgate_store::{open_stores, Change, ChangeFeed, PolicyVersion, Stores};

/// Arguments of `stepgate policy`.
#[derive(clap::Args)]
pub struct PolicyArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: PolicyAction,
}

/// `stepgate policy` actions.
#[derive(clap::Subcommand)]
pub enum PolicyAction {
    /// The saved versions, newest first: number, author, time, note.
    Versions {
        /// The configuration file (its store keeps the versions).
        #[arg(long, short)]
        config: PathBuf,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// A version's YAML text.
    Show {
        /// The version.
        version: i64,
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// A unified diff from version A to version B (0: the empty set).
    Diff {
        /// The version to compare from.
        from: i64,
        /// The version to compare to.
        to: i64,
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Save version N's text again as the newest version (history only grows).
    Rollback {
        /// The version to restore.
        version: i64,
        /// The configuration file (the version must load with it).
        #[arg(long, short)]
        config: PathBuf,
        /// Why (saved with the version and in the audit log).
        #[arg(long)]
        note: Option<String>,
        /// Who does it, as the audit log names them (default: $SUDO_USER, else $USER).
        #[arg(long)]
        operator: Option<String>,
    },
}

/// Runs `stepgate policy`.
pub fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(act(args.action))
}

async fn open(config: &Path) -> anyhow::Result<(Config, Stores)> {
    let cfg = super::load_config(config)?;
    let key = cfg
        .secrets
        .load_key(&cfg.base_dir)
        .context("loading the secret key")?;
    let data_dir = cfg.base_dir.join(&cfg.server.data_dir);
    let stores = open_stores(&cfg.store, &data_dir, &key)
        .await
        .context("opening the store")?;
    Ok((cfg, stores))
}

async fn find(stores: &Stores, version: i64) -> anyhow::Result<PolicyVersion> {
    stores
        .durable
        .get_policy_version(version)
        .await
        .context("reading the policy versions")?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "there is no policy version {version} (`stepgate policy versions` lists them)"
            )
        })
}

async fn act(action: PolicyAction) -> anyhow::Result<ExitCode> {
    match action {
        PolicyAction::Versions { config, limit } => {
            let (cfg, stores) = open(&config).await?;
            let all = stores
                .durable
                .list_policy_versions(None, limit.max(1))
                .await
                .context("reading the policy versions")?;
            if cfg.admin.policy_edits != PolicyEdits::Store {
                eprintln!("note: admin.policy_edits is `yaml` in {}: the configuration files' policies are in force, not these", config.display());
            }
            if all.is_empty() {
                println!("no policy version is saved");
            }
            for v in &all {
                let rb = v
                    .rollback_of
                    .map(|r| format!(" (rollback of {r})"))
                    .unwrap_or_default();
                println!(
                    "{:>4}  {}  {}{rb}  {}",
                    v.version,
                    v.created_at.to_rfc3339(),
                    v.author,
                    v.note.as_deref().unwrap_or("")
                );
            }
        }
        PolicyAction::Show { version, config } => {
            let (_, stores) = open(&config).await?;
            print!("{}", find(&stores, version).await?.text);
        }
        PolicyAction::Diff { from, to, config } => {
            let (_, stores) = open(&config).await?;
            let old = match from {
                0 => String::new(),
                n => find(&stores, n).await?.text,
            };
            let new = find(&stores, to).await?.text;
            let (added, removed, diff) = policy_history::unified_diff(from, &old, to, &new);
            print!("{diff}");
            eprintln!("{added} line(s) added, {removed} removed");
        }
        PolicyAction::Rollback {
            version,
            config,
            note,
            operator,
        } => return rollback(&config, version, note, operator).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The operator as the audit log names them: `admin:cli:<name>`.
fn actor(operator: Option<String>) -> anyhow::Result<String> {
    let name = operator
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("say who rolls back with --operator NAME"))?;
    if name.len() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        anyhow::bail!("--operator `{name}`: at most 64 characters, no spaces");
    }
    Ok(format!("admin:cli:{name}"))
}

async fn rollback(
    config: &Path,
    version: i64,
    note: Option<String>,
    operator: Option<String>,
) -> anyhow::Result<ExitCode> {
    let actor = actor(operator)?;
    let note =
        policy_history::checked_note(note).map_err(|p| anyhow::anyhow!("--note: {}", p.detail))?;
    let (cfg, stores) = open(config).await?;
    if cfg.admin.policy_edits != PolicyEdits::Store {
        anyhow::bail!(
            "admin.policy_edits is `yaml` in {}: the policies are the configuration files'; set `admin.policy_edits: store` to roll back saved versions",
            config.display()
        );
    }
    let old = find(&stores, version).await?;
    // Refused before anything is written when it no longer loads with the files.
    stepgate_config::load_with_policies(
        config,
        &stored_policies::source_name(Some(version)),
        &old.text,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "version {version} does not load with {}; nothing was saved:\n{e}",
            config.display()
        )
    })?;
    let v = stored_policies::record(
        stores.durable.as_ref(),
        old.text,
        None,
        &actor,
        note,
        Some(version),
    )
    .await
    .map_err(|e| anyhow::anyhow!("saving the rollback: {}", describe(&e)))?;
    stores
        .durable
        .append_audit(&policy_history::saved_event(&actor, None, &v))
        .await
        .context("auditing the rollback")?;
    println!(
        "saved version {} (rollback of {version}) as {actor}",
        v.version
    );
    match &cfg.store.redis {
        Some(redis) => {
            let feed = ChangeFeed::connect(redis).await.context("connecting the change feed to Redis")?;
            feed.publish(&Change::PolicySet(v.version)).await.context("announcing the version to the running nodes")?;
            println!("announced: every running node puts it in force now");
        }
        None => println!("running nodes put it in force at their next reload (SIGHUP, or POST /admin/api/v1/config/reload) or start"),
    }
    Ok(ExitCode::SUCCESS)
}
