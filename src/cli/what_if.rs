//! placeholder
use std::process::ExitCode;

/// Arguments.
#[derive(clap::Args)]
pub struct WhatIfArgs {}

/// Runs the subcommand.
pub fn run(_args: WhatIfArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
