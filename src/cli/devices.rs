//! `stepgate devices sync [--connector NAME] [--full]`: runs one sync of the configured
//! device connectors against the configured store, as the server's schedule would, and
//! prints what each did. Exits 1 when a connector failed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use stepgate_server::devices::connectors::Connectors;
use stepgate_server::{build_state, ServeOptions};

/// Arguments of `stepgate devices`.
#[derive(clap::Args)]
pub struct DevicesArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: DevicesAction,
}

/// `stepgate devices` actions.
#[derive(clap::Subcommand)]
pub enum DevicesAction {
    /// Pull devices from the UEM connectors now.
    Sync {
        /// The configuration file (its `devices.connectors`, `store` and `secrets`).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this connector (default: every connector).
        #[arg(long)]
        connector: Option<String>,
        /// A full listing even where an incremental one would do.
        #[arg(long)]
        full: bool,
    },
}

/// Runs `stepgate devices`.
pub fn run(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    let DevicesAction::Sync {
        config,
        connector,
        full,
    } = args.action;
    let cfg = super::load_config(&config)?;
    if cfg.devices.connectors.is_empty() {
        anyhow::bail!(
            "{}: no `devices.connectors` configured (see docs/connectors.md)",
            config.display()
        );
    }
    let key = cfg
        .secrets
        .load_key(&cfg.base_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let results = rt.block_on(async move {
        let options = ServeOptions {
            demo: false,
            config_path: Some(config.clone()),
        };
        let st = build_state(cfg, key, options).await?;
        anyhow::Ok(Connectors::sync(&st, connector.as_deref(), full).await)
    })?;
    let mut failed = false;
    for (name, r) in results {
        match r {
            Ok(c) => println!(
                "{name}: new {}, changed {}, now non-compliant {}, removed {}, errors {}",
                c.new, c.changed, c.now_non_compliant, c.removed, c.errors
            ),
            Err(e) => {
                failed = true;
                println!("{name}: failed: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
