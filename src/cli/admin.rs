//! `stepgate admin token create|list|revoke`: the admin API's tokens. `create` prints the
//! token once (the store keeps only its SHA-256); every token has a name (the audit log
//! names it by that), scopes and an expiry. Each action is audited as `admin:cli`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use stepgate_policy::HumanDuration;
use stepgate_server::admin::tokens::{self, Scope};
use stepgate_store::{open_stores, NewAuditEvent, StoreError, Stores};

/// Arguments of `stepgate admin`.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: AdminAction,
}

/// `stepgate admin` actions.
#[derive(clap::Subcommand)]
pub enum AdminAction {
    /// The admin API's tokens.
    #[command(subcommand)]
    Token(TokenAction),
}

/// `stepgate admin token` actions.
#[derive(clap::Subcommand)]
pub enum TokenAction {
    /// Make a token and print it, this once.
    Create {
        /// The configuration file (its store keeps the token).
        #[arg(long, short)]
        config: PathBuf,
        /// Its name, unique (the audit log names the token by it).
        #[arg(long)]
        name: String,
        /// A scope it gets (repeat for more): users:read, users:write, devices:read,
        /// devices:write, sessions:read, sessions:write, decisions:read, audit:read,
        /// policies:read, policies:write, config:read, config:write.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it works (`30d`, `12h`; at most `366d`).
        #[arg(long, default_value = "30d")]
        expires: String,
    },
    /// List the tokens (never the tokens themselves).
    List {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Revoke a token by name: its next request is refused.
    Revoke {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The token's name.
        #[arg(long)]
        name: String,
    },
}

/// The longest a token may live.
const MAX_LIFETIME_DAYS: u64 = 366;

/// Runs `stepgate admin`.
pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match args.action {
        AdminAction::Token(t) => runtime.block_on(token(t)),
    }
}

async fn open(config: &Path) -> anyhow::Result<Stores> {
    let cfg = super::load_config(config)?;
    let key = cfg
        .secrets
        .load_key(&cfg.base_dir)
        .context("loading the secret key")?;
    let data_dir = cfg.base_dir.join(&cfg.server.data_dir);
    open_stores(&cfg.store, &data_dir, &key)
        .await
        .context("opening the store")
}

async fn audit(stores: &Stores, kind: &str, detail: serde_json::Value) -> anyhow::Result<()> {
    let mut ev = NewAuditEvent::now(kind);
    ev.actor = Some("admin:cli".into());
    ev.detail = detail;
    stores.durable.append_audit(&ev).await?;
    Ok(())
}

async fn token(action: TokenAction) -> anyhow::Result<ExitCode> {
    match action {
        TokenAction::Create {
            config,
            name,
            scopes,
            expires,
        } => {
            let name = name.trim().to_string();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                anyhow::bail!("--name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`");
            }
            let scopes = scopes
                .iter()
                .map(|s| Scope::parse(s.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let lifetime: HumanDuration = expires
                .parse()
                .map_err(|e| anyhow::anyhow!("--expires `{expires}`: {e}"))?;
            if lifetime.0.is_zero() || lifetime.0.as_secs() > MAX_LIFETIME_DAYS * 86_400 {
                anyhow::bail!(
                    "--expires `{expires}`: a token lives from 1s to {MAX_LIFETIME_DAYS}d"
                );
            }
            let stores = open(&config).await?;
            let expires_at = stepgate_store::now_ms()
                + chrono::Duration::from_std(lifetime.0).context("--expires is too long")?;
            let (token, record) = match tokens::create(
                stores.durable.as_ref(),
                &name,
                &scopes,
                expires_at,
            )
            .await
            {
                Ok(t) => t,
                Err(StoreError::Conflict { .. }) => {
                    anyhow::bail!("a token called `{name}` already exists (see `stepgate admin token list`; revoke it or pick another name)")
                }
                Err(e) => return Err(e.into()),
            };
            audit(
                &stores,
                "admin.token.created",
                serde_json::json!({ "name": record.name, "scopes": record.scopes, "expires_at": record.expires_at }),
            )
            .await?;
            eprintln!(
                "token `{}` (scopes {}; expires {}). It is shown this once; keep it secret:",
                record.name,
                record.scopes.join(" "),
                record.expires_at.to_rfc3339()
            );
            println!("{token}");
        }
        TokenAction::List { config } => {
            let stores = open(&config).await?;
            let now = chrono::Utc::now();
            println!(
                "{:<24} {:<8} {:<26} {:<26} SCOPES",
                "NAME", "STATE", "EXPIRES", "LAST USED"
            );
            for t in stores.durable.list_admin_tokens().await? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at <= now {
                    "expired"
                } else {
                    "live"
                };
                println!(
                    "{:<24} {:<8} {:<26} {:<26} {}",
                    t.name,
                    state,
                    t.expires_at.to_rfc3339(),
                    t.last_used_at
                        .map_or_else(|| "never".to_string(), |t| t.to_rfc3339()),
                    t.scopes.join(" ")
                );
            }
        }
        TokenAction::Revoke { config, name } => {
            let stores = open(&config).await?;
            if !stores
                .durable
                .revoke_admin_token(&name, stepgate_store::now_ms())
                .await?
            {
                eprintln!("no live token called `{name}` (see `stepgate admin token list`)");
                return Ok(ExitCode::FAILURE);
            }
            audit(
                &stores,
                "admin.token.revoked",
                serde_json::json!({ "name": name }),
            )
            .await?;
            println!("revoked token `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}
