//! placeholder
use std::process::ExitCode;

/// Arguments.
#[derive(clap::Args)]
pub struct CheckArgs {}

/// Runs the subcommand.
pub fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
