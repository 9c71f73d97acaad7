//! placeholder
use std::process::ExitCode;

/// Arguments.
#[derive(clap::Args)]
pub struct TestArgs {}

/// Runs the subcommand.
pub fn run(_args: TestArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
