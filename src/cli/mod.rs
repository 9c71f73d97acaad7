//! One module per subcommand; each exposes `XArgs` (clap) and `run(args) -> anyhow::Result<ExitCode>`.
pub mod check;
pub mod test_cases;
pub mod user;
pub mod what_if;
