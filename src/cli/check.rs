//! `stepgate check CONFIG`: validate a configuration and print every problem.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `stepgate check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The configuration file.
    pub config: PathBuf,
}

/// Prints `ok` and a summary, or each error as `file:line:column: message`.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    match stepgate_config::load(&args.config) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} files, {} apps, {} network zones, {} policies)",
                args.config.display(),
                cfg.files.len(),
                cfg.apps.len(),
                cfg.networks.len(),
                cfg.policy_set.len()
            );
            // Allowed, but weaker than the standards: said, not refused.
            for w in cfg.assurance.warnings() {
                eprintln!("{}: warning: {w}", args.config.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            eprintln!("{} error(s)", e.diagnostics.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
