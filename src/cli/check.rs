//! `stepgate check --config FILE` (or `stepgate check FILE`): validate a configuration,
//! then review it for what would break a deployment, and print every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use stepgate_config::Severity;

/// Arguments of `stepgate check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The configuration file, as a positional argument (the older form of `--config`).
    #[arg(
        value_name = "CONFIG",
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    pub positional: Option<PathBuf>,
}

/// Prints each error and warning as `file:line:column: error|warning: message`, then `ok`
/// and a summary; exits 1 when there is an error (a load error, or a deployment error such
/// as nobody being able to sign in), 0 otherwise (warnings included).
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = args.config.or(args.positional) else {
        anyhow::bail!("name the configuration file: `stepgate check --config stepgate.yaml`");
    };
    let cfg = match stepgate_config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            eprintln!("{} error(s)", e.diagnostics.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    let findings = stepgate_config::review(&cfg);
    let mut errors = 0;
    for f in &findings {
        let mut d = f.diagnostic.clone();
        d.message = match f.severity {
            Severity::Error => {
                errors += 1;
                format!("error: {}", d.message)
            }
            Severity::Warning => format!("warning: {}", d.message),
        };
        eprintln!("{d}");
    }
    // Allowed, but weaker than the standards: said, not refused.
    let weaker = cfg.assurance.warnings();
    for w in &weaker {
        eprintln!("{}: warning: {w}", path.display());
    }
    let unreachable = providers_unreachable(&cfg);
    for w in &unreachable {
        eprintln!("{}: warning: {w}", path.display());
    }
    let warnings = findings.len() - errors + weaker.len() + unreachable.len();
    if errors > 0 {
        eprintln!("{errors} error(s), {warnings} warning(s)");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{}: ok ({} files, {} apps, {} network zones, {} policies{})",
        path.display(),
        cfg.files.len(),
        cfg.apps.len(),
        cfg.networks.len(),
        cfg.policy_set.len(),
        match warnings {
            0 => String::new(),
            n => format!("; {n} warning(s)"),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The identity providers whose discovery document cannot be read now, or whose client
/// secret cannot be: a warning here (the network may differ from where stepgate runs); at
/// start an error only for a provider marked `required`.
fn providers_unreachable(cfg: &stepgate_config::Config) -> Vec<String> {
    if cfg.identity_providers.is_empty() {
        return Vec::new();
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    // Checking seals nothing: any key does.
    let idps = stepgate_server::idp::IdentityProviders::new(
        &cfg.base_dir,
        stepgate_store::SecretKey::generate(),
    );
    rt.block_on(async {
        let mut out = Vec::new();
        for p in &cfg.identity_providers {
            let then = if p.required {
                "`stepgate serve` will refuse to start (required: true)"
            } else {
                "sign-ins through it will be refused until it answers"
            };
            if let Err(e) = idps.provider(p).await {
                out.push(format!("{e}; {then}"));
            }
            if let Err(e) = idps.check_credentials(p) {
                out.push(format!("{e}; {then}"));
            }
        }
        out
    })
}
