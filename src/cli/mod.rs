//! One module per subcommand; each exposes `XArgs` (clap) and `run(args) -> anyhow::Result<ExitCode>`.
//!
//! What does not belong here: any decision logic. `what-if` and `test` run the server's
//! access pipeline (`stepgate_server::access`) with the stated context as the signal
//! source; `serve` and `demo` start the server; `user` and `secrets` work on the store.
pub mod admin;
pub mod audit;
pub mod check;
pub mod decisions;
pub mod devices;
pub mod logging;
pub mod oidc;
pub mod policy;
pub mod probe;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod test_cases;
pub mod user;
pub mod user_lifecycle;
pub mod user_links;
pub mod what_if;

use std::path::Path;

/// Loads a configuration for a subcommand, turning diagnostics into one error.
pub fn load_config(path: &Path) -> anyhow::Result<stepgate_config::Config> {
    stepgate_config::load(path).map_err(|e| anyhow::anyhow!("the configuration has errors:\n{e}"))
}
