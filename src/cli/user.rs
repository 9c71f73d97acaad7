//! placeholder
use std::process::ExitCode;

/// Arguments.
#[derive(clap::Args)]
pub struct UserArgs {}

/// Runs the subcommand.
pub fn run(_args: UserArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
