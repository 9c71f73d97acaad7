//! `stepgate secrets`: the key that seals factor secrets at rest.

use std::process::ExitCode;

use stepgate_store::SecretKey;

/// Arguments of `stepgate secrets`.
#[derive(clap::Args)]
pub struct SecretsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SecretsAction,
}

/// `stepgate secrets` actions.
#[derive(clap::Subcommand)]
pub enum SecretsAction {
    /// Print a new random 256-bit key in base64, for STEPGATE_SECRET_KEY or `secrets.key_file`.
    /// Keep it safe: without it the sealed TOTP seeds and password hashes cannot be read.
    GenerateKey,
}

/// Runs `stepgate secrets`.
pub fn run(args: SecretsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        SecretsAction::GenerateKey => {
            println!("{}", SecretKey::generate().to_base64().as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}
