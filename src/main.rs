//! The `stepgate` command line: check, what-if, test, and user administration.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alloc;
mod cli;

/// mimalloc ([`alloc`]): per-request allocations freed on another worker thread made glibc
/// malloc's arena locks a large share of the gateway's cost under load.
#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;

/// stepgate: an identity-aware proxy with context-based step-up authentication.
#[derive(Parser)]
#[command(name = "stepgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print every error with file:line:column.
    Check(cli::check::CheckArgs),
    /// Ask what stepgate would decide for a given request context, with the full trace.
    WhatIf(cli::what_if::WhatIfArgs),
    /// Show a recorded decision by its request id, with its trace; decide it again under the
    /// configuration in force or a draft.
    Explain(cli::decisions::ExplainArgs),
    /// Decide the recorded decisions of a period again under a draft configuration and
    /// report the outcomes that would change.
    Replay(cli::decisions::ReplayArgs),
    /// The audit log: search it, export it (JSON lines or OCSF), verify its hash chain.
    Audit(cli::audit::AuditArgs),
    /// Run policy test cases (a context and the expected decision each).
    Test(cli::test_cases::TestArgs),
    /// Manage users and their factors in the configured store.
    User(cli::user::UserArgs),
    /// Device connectors: run a sync now and print what it did.
    Devices(cli::devices::DevicesArgs),
    /// Back up the embedded store.
    Store(cli::store::StoreArgs),
    /// Generate the key that seals factor secrets at rest.
    Secrets(cli::secrets::SecretsArgs),
    /// The OpenID Provider's clients: add one (its secret shown once), list, rotate a secret.
    Oidc(cli::oidc::OidcArgs),
    /// Run the gateway: portal, step-up, proxy.
    Serve(cli::serve::ServeArgs),
    /// Run the demo: built-in configuration, demo app and users, nothing to install.
    Demo(cli::serve::DemoArgs),
    /// The admin API's tokens: create (printed once), list, revoke.
    Admin(cli::admin::AdminArgs),
    /// Policy sets saved in the store (`admin.policy_edits: store`): list, show, diff, roll back.
    Policy(cli::policy::PolicyArgs),
    /// Health check for containers: GET a local endpoint, exit 0 on a 2xx answer.
    Probe(cli::probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => cli::check::run(args),
        Command::WhatIf(args) => cli::what_if::run(args),
        Command::Explain(args) => cli::decisions::explain(args),
        Command::Replay(args) => cli::decisions::replay(args),
        Command::Audit(args) => cli::audit::run(args),
        Command::Test(args) => cli::test_cases::run(args),
        Command::User(args) => cli::user::run(args),
        Command::Devices(args) => cli::devices::run(args),
        Command::Store(args) => cli::store::run(args),
        Command::Secrets(args) => cli::secrets::run(args),
        Command::Oidc(args) => cli::oidc::run(args),
        Command::Serve(args) => cli::serve::run_serve(args),
        Command::Demo(args) => cli::serve::run_demo(args),
        Command::Probe(args) => cli::probe::run(args),
        Command::Admin(args) => cli::admin::run(args),
        Command::Policy(args) => cli::policy::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
