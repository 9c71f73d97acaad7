//! `stepgate serve` and `stepgate demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use stepgate_server::{build_state, demo, serve, ServeOptions};
use stepgate_store::{SecretKey, SecretsConfig};

/// The demo configuration, built into the binary (the same file as examples/demo.yaml).
pub const DEMO_YAML: &str = include_str!("../../examples/demo.yaml");

/// Arguments of `stepgate serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Listen address (overrides `server.listen`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// Arguments of `stepgate demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Listen address for the portal and the demo app.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo keeps its SQLite store, key and outbox (default: a `stepgate-demo`
    /// folder in the system temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also offer "Sign in with <name>" through this upstream OpenID Provider (its issuer
    /// URL; https, or http on localhost). Register the demo there as a confidential client
    /// redirecting to `http://localhost:8080/_stepgate/login/upstream/upstream/callback`.
    #[arg(long, value_name = "ISSUER")]
    pub upstream_oidc: Option<String>,
    /// The demo's client id at the upstream provider (or STEPGATE_DEMO_UPSTREAM_CLIENT_ID).
    #[arg(long, value_name = "ID")]
    pub upstream_client_id: Option<String>,
    /// The demo's client secret there (or STEPGATE_DEMO_UPSTREAM_CLIENT_SECRET, better: it
    /// stays out of the process list).
    #[arg(long, value_name = "SECRET")]
    pub upstream_client_secret: Option<String>,
    /// The button's label.
    #[arg(long, value_name = "NAME", default_value = "Upstream SSO")]
    pub upstream_name: String,
}

/// The demo's `identity_providers:` for `--upstream-oidc`: the provider's `amr` values
/// `pwd`, `otp`, `mfa`, `hwk` and stepgate's own `acr` `aal2`/`aal3` trusted for 10 minutes
/// (a demo's choice: a deployment decides what it believes of its provider).
fn demo_upstream(args: &DemoArgs) -> anyhow::Result<Option<String>> {
    let Some(issuer) = &args.upstream_oidc else {
        return Ok(None);
    };
    let from_env = |flag: &Option<String>, var: &str| {
        flag.clone()
            .or_else(|| std::env::var(var).ok())
            .filter(|v| !v.trim().is_empty())
    };
    let client_id = from_env(&args.upstream_client_id, "STEPGATE_DEMO_UPSTREAM_CLIENT_ID")
        .context(
            "--upstream-oidc needs --upstream-client-id (or STEPGATE_DEMO_UPSTREAM_CLIENT_ID)",
        )?;
    let secret = from_env(
        &args.upstream_client_secret,
        "STEPGATE_DEMO_UPSTREAM_CLIENT_SECRET",
    )
    .context(
        "--upstream-oidc needs --upstream-client-secret (or STEPGATE_DEMO_UPSTREAM_CLIENT_SECRET)",
    )?;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    Ok(Some(format!(
        "\nidentity_providers:\n  - id: upstream\n    name: {name}\n    issuer: {issuer}\n    client_id: {client_id}\n    client_secret: {{ inline_insecure: {secret} }}\n    scopes: [openid, profile, email]\n    sign_out_upstream: true\n    trust:\n      window: 10m\n      amr: {{ pwd: knowledge, otp: possession, mfa: possession, hwk: hardware_bound }}\n      acr: {{ aal2: [knowledge, possession], aal3: [knowledge, hardware_bound] }}\n",
        name = q(&args.upstream_name),
        issuer = q(issuer.trim_end_matches('/')),
        client_id = q(&client_id),
        secret = q(&secret),
    )))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs the gateway.
pub fn run_serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = super::load_config(&args.config)?;
    let runtime = runtime()?;
    // The trace exporter's batches run on the runtime (`log.otlp`; off: nothing is built).
    let traces = {
        let _on = runtime.enter();
        stepgate_server::telemetry::Traces::start(cfg.log.otlp.as_ref(), &cfg.base_dir)?
    };
    super::logging::init(&cfg.log, &cfg.base_dir, traces.as_ref())?;
    for f in stepgate_config::review(&cfg) {
        match f.severity {
            stepgate_config::Severity::Error => {
                tracing::error!(problem = %f.diagnostic, "the configuration would not work as deployed (`stepgate check` reports this)")
            }
            stepgate_config::Severity::Warning => {
                tracing::warn!(problem = %f.diagnostic, "configuration warning")
            }
        }
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    let key = cfg
        .secrets
        .load_key(&cfg.base_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let addr = cfg.listen;
    let version = cfg.version.clone();
    runtime.block_on(async move {
        let st = build_state(
            cfg,
            key,
            ServeOptions {
                demo: false,
                config_path: Some(args.config.clone()),
            },
        )
        .await?;
        tracing::info!(%addr, config_version = %version, "stepgate listening");
        serve(st, addr).await
    })?;
    // The spans of the last requests, sent before the process ends.
    if let Some(t) = traces {
        t.shutdown();
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the demo: built-in configuration, SQLite store, Licence Console upstream, seeded users.
pub fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let upstream = demo_upstream(&args)?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| std::env::temp_dir().join("stepgate-demo"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let yaml = match upstream {
        Some(provider) => format!("{DEMO_YAML}{provider}"),
        None => DEMO_YAML.to_string(),
    };
    let mut cfg =
        stepgate_config::load_str("examples/demo.yaml (built in)", &yaml, Some(&data_dir))
            .map_err(|e| anyhow::anyhow!("the built-in demo configuration is invalid:\n{e}"))?;
    super::logging::init(&cfg.log, &data_dir, None)?;
    // The demo's key lives beside its store; a real deployment keeps it elsewhere.
    let key_file = data_dir.join("secret.key");
    if !key_file.exists() {
        std::fs::write(&key_file, SecretKey::generate().to_base64().as_bytes())
            .context("writing the demo key")?;
    }
    cfg.secrets = SecretsConfig {
        key_file: Some(key_file),
        ..SecretsConfig::default()
    };
    let key = cfg
        .secrets
        .load_key(&data_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    cfg.base_dir = data_dir.clone();
    cfg.server.data_dir = ".".into();
    cfg.listen = args.listen;
    let host = if args.listen.ip().is_loopback() {
        "localhost".to_string()
    } else {
        args.listen.ip().to_string()
    };
    let public = format!("http://{host}:{}", args.listen.port());
    cfg.server.public_url = Some(marked_yaml::Spanned::new(
        marked_yaml::Span::new_blank(),
        public.clone(),
    ));
    cfg.factors.webauthn.rp_origin = public.clone();
    // The `stepgate user` commands (invite, reset-link, …) work on the demo's store with this.
    let cli_yaml = format!(
        "# `stepgate user … --config {}`: the running demo's store, key, URL and e-mail outbox\n\
         server: {{ public_url: \"{public}\", data_dir: . }}\n\
         secrets: {{ key_file: secret.key }}\n\
         factors:\n  email_otp: {{ enabled: true, transport: {{ file: {{ dir: outbox/mail }} }} }}\n",
        data_dir.join("cli.yaml").display()
    );
    std::fs::write(data_dir.join("cli.yaml"), cli_yaml).context("writing the demo's cli.yaml")?;
    stepgate_server::demo::write_files(&data_dir).context("writing the demo's files")?;
    runtime()?.block_on(async move {
        let console = demo::start_licence_console("127.0.0.1:0".parse()?)
            .await
            .context("starting the Licence Console")?;
        let wiki = demo::start_team_wiki("127.0.0.1:0".parse()?)
            .await
            .context("starting the Team Wiki")?;
        let expense_reports =
            stepgate_server::demo_rp::start_expense_reports("127.0.0.1:0".parse()?)
                .await
                .context("starting Expense Reports")?;
        expense_reports.connect(&public, &cfg.server.portal_path);
        let expenses = expense_reports.addr;
        for c in cfg.oidc.clients.iter_mut() {
            if c.id.as_str() == stepgate_server::demo_rp::CLIENT_ID {
                let at = |s: String| marked_yaml::Spanned::new(marked_yaml::Span::new_blank(), s);
                c.redirect_uris = vec![at(stepgate_server::demo_rp::redirect_uri(expenses))];
                c.post_logout_redirect_uris =
                    vec![at(format!("http://localhost:{}/", expenses.port()))];
            }
        }
        for app in cfg.apps.iter_mut() {
            let at = match app.id.as_str() {
                "licence-console" => console,
                "wiki" => wiki,
                _ => continue,
            };
            app.upstream = Some(marked_yaml::Spanned::new(
                marked_yaml::Span::new_blank(),
                format!("http://{at}"),
            ));
        }
        let st = build_state(
            cfg,
            key.clone(),
            ServeOptions {
                demo: true,
                config_path: None,
            },
        )
        .await?;
        demo::seed(&st, &key).await?;
        print_banner(&public, &data_dir);
        println!("  Expense Reports (an OpenID Connect app): open http://localhost:{}/", expenses.port());
        println!("   Sign in with stepgate (SSO: no prompt if you are signed in), then \"Approve expenses\": it asks for acr_values=aal3 — with a security key enrolled, stepgate steps you up with it first; without one, the app gets the level you can reach (its acr says which).");
        println!();
        serve(st, args.listen).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn print_banner(public: &str, data_dir: &std::path::Path) {
    println!();
    println!("  stepgate demo is running: open {public}/licences");
    println!();
    for u in demo::USERS {
        println!(
            "  user {:<5} password {:<20} {}",
            u.username, u.password, u.note
        );
        println!(
            "        TOTP seed {} (add it to any authenticator app)",
            u.totp_base32
        );
        println!("        {}", demo::otpauth_uri(u));
    }
    println!();
    println!("  Try:");
    println!("   1. Sign in as jane: password, then the code from your authenticator app (MFA, since you are not on the office network).");
    println!("   2. List licences: allowed. Provision one: allowed (your MFA is fresh).");
    println!("   3. Revoke one: stepgate asks for a passkey — \"Add a passkey\", then \"Continue to Licence Console\", confirm, and press Revoke again.");
    println!("   4. Security settings › Demo: this device → \"disk encryption off\", then open /licences: blocked, with the failing checks.");
    println!("      (Scripts can send the header `X-Stepgate-Demo-Device: noncompliant|healthy|office|byod|unknown` instead.)");
    println!(
        "   5. Invite a new user: stepgate user invite alice --config {} — open the link it prints.",
        data_dir.join("cli.yaml").display()
    );
    println!();
    println!(
        "  Demo data (store, key, e-mail/SMS outbox): {}",
        data_dir.display()
    );
    println!();
}
