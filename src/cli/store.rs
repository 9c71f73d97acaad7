//! `stepgate store backup FILE`: a consistent copy of the embedded SQLite store, taken while
//! stepgate serves from it (docs/operations.md has restore and the PostgreSQL route).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

/// Arguments of `stepgate store`.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The configuration file (its `store` and `server.data_dir` name the store).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: StoreAction,
}

/// `stepgate store` actions.
#[derive(clap::Subcommand)]
pub enum StoreAction {
    /// Copy the SQLite store to FILE (which must not exist), safely while stepgate runs.
    /// Back up the secret key separately: the copy cannot be read without it.
    Backup {
        /// Where to write the copy.
        file: PathBuf,
    },
}

/// Runs `stepgate store`.
pub fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config else {
        anyhow::bail!("`stepgate store` needs the configuration: --config FILE");
    };
    let cfg = super::load_config(&config)?;
    match args.action {
        StoreAction::Backup { file } => {
            if cfg.store.postgres.is_some() {
                anyhow::bail!(
                    "this configuration keeps users, factors and the audit log in PostgreSQL (store.postgres): back it up with `pg_dump` (docs/operations.md); `store backup` copies the embedded SQLite store"
                );
            }
            let data_dir = cfg.base_dir.join(&cfg.server.data_dir);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let report = rt
                .block_on(stepgate_store::backup_sqlite(
                    &cfg.store.sqlite,
                    &data_dir,
                    &file,
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("the backup was not written")?;
            println!(
                "backed up {} to {} ({} bytes, {} users, integrity ok)",
                report.source.display(),
                report.dest.display(),
                report.bytes,
                report.users
            );
            println!("keep the secret key (secrets.key_file or $STEPGATE_SECRET_KEY) safe too, apart from this file: the copy cannot be read without it");
            Ok(ExitCode::SUCCESS)
        }
    }
}
