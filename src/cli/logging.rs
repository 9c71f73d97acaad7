//! Sets up `tracing` from the `log:` section: level (or `STEPGATE_LOG`, which overrides
//! it), `text` or `json`, standard output or a file; colour codes only on a terminal.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::Context as _;
use stepgate_config::{LogConfig, LogFormat};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The environment variable that overrides `log.level`.
pub const LEVEL_ENV: &str = "STEPGATE_LOG";

/// Installs the global subscriber for `cfg` (`file` relative to `base_dir`), exporting
/// spans through `traces` when `log.otlp` started them.
pub fn init(
    cfg: &LogConfig,
    base_dir: &Path,
    traces: Option<&stepgate_server::telemetry::Traces>,
) -> anyhow::Result<()> {
    let from_env = std::env::var(LEVEL_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match &from_env {
        Some(directives) => EnvFilter::try_new(directives).with_context(|| {
            format!("{LEVEL_ENV}=`{directives}` is not a level such as `debug` or `info,stepgate_server=debug`")
        })?,
        None => EnvFilter::try_new(&cfg.level)
            .with_context(|| format!("log.level `{}`", cfg.level))?,
    };
    let (writer, ansi) = match &cfg.file {
        Some(file) => {
            let path = base_dir.join(file);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| {
                    format!("log.file: cannot open `{}` for appending", path.display())
                })?;
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(f)),
                false,
            )
        }
        None => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        ),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(writer);
    let layer = match cfg.format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().with_ansi(false).boxed(),
    };
    // The level filters the log lines only: the trace layer picks its own spans (down to
    // `debug`), so a trace has the decision's stages whatever `log.level` says.
    // A second call (a test harness that already installed one) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .with(traces.map(|t| t.layer()))
        .try_init();
    Ok(())
}
