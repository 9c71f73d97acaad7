//! `stepgate oidc client add|list|rotate-secret`: the OpenID Provider's clients. The
//! configuration file stays the source of truth: `add` and `rotate-secret` print the new
//! secret once (it is never stored) and the YAML to put under `oidc.clients`, with only the
//! secret's argon2 hash in it; `list` reads the clients of a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use stepgate_authn::config::Argon2Config;

/// Arguments of `stepgate oidc`.
#[derive(clap::Args)]
pub struct OidcArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: OidcAction,
}

/// `stepgate oidc` actions.
#[derive(clap::Subcommand)]
pub enum OidcAction {
    /// The provider's relying parties.
    #[command(subcommand)]
    Client(ClientAction),
}

/// `stepgate oidc client` actions.
#[derive(clap::Subcommand)]
pub enum ClientAction {
    /// Print the `oidc.clients` entry for a new client, and (for a confidential client) its
    /// new secret, shown this once.
    Add {
        /// The `client_id`.
        #[arg(long)]
        id: String,
        /// The app (`apps[].id`) whose policies decide its sign-ins.
        #[arg(long)]
        app: String,
        /// A redirect URI (repeat for more); matched exactly.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// A post-logout redirect URI (repeat for more).
        #[arg(long = "post-logout-uri")]
        post_logout_uris: Vec<String>,
        /// A public client (browser or native app): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the clients of a configuration.
    List {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a new secret for a client, shown this once, and the `secret_hash` to replace
    /// its old one with.
    RotateSecret {
        /// The configuration file (the client must be in it).
        #[arg(long, short)]
        config: PathBuf,
        /// The `client_id`.
        #[arg(long)]
        id: String,
    },
}

/// A new secret (256 random bits) and its argon2id hash at the default cost.
fn new_secret() -> anyhow::Result<(String, String)> {
    // URL-safe base64 of the 32 bytes: 43 characters, all 256 bits kept (dropping `+` and
    // `/` instead shortened it at random and lost entropy).
    let secret = stepgate_store::SecretKey::generate()
        .to_base64()
        .as_str()
        .replace('+', "-")
        .replace('/', "_")
        .trim_end_matches('=')
        .to_string();
    let hash = stepgate_authn::password::hash_secret(&Argon2Config::default(), secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((secret, hash))
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Runs `stepgate oidc`.
pub fn run(args: OidcArgs) -> anyhow::Result<ExitCode> {
    let OidcAction::Client(action) = args.action;
    match action {
        ClientAction::Add {
            id,
            app,
            redirect_uris,
            post_logout_uris,
            public,
            name,
        } => {
            let list = |v: &[String]| v.iter().map(|u| yaml_str(u)).collect::<Vec<_>>().join(", ");
            let mut y = format!("oidc:\n  clients:\n    - id: {}\n", yaml_str(&id));
            if let Some(n) = name {
                y.push_str(&format!("      name: {}\n", yaml_str(&n)));
            }
            if public {
                y.push_str("      type: public\n");
            } else {
                let (secret, hash) = new_secret()?;
                eprintln!("The client secret (shown this once; stepgate keeps only its hash):\n{secret}\n");
                y.push_str(&format!("      secret_hash: {}\n", yaml_str(&hash)));
            }
            y.push_str(&format!(
                "      redirect_uris: [{}]\n",
                list(&redirect_uris)
            ));
            if !post_logout_uris.is_empty() {
                y.push_str(&format!(
                    "      post_logout_redirect_uris: [{}]\n",
                    list(&post_logout_uris)
                ));
            }
            y.push_str(&format!("      app: {}\n", yaml_str(&app)));
            print!("{y}");
            Ok(ExitCode::SUCCESS)
        }
        ClientAction::List { config } => {
            let cfg = super::load_config(&config)?;
            if cfg.oidc.clients.is_empty() {
                println!("no OIDC clients");
            }
            for c in &cfg.oidc.clients {
                let kind = match c.client_type {
                    stepgate_config::ClientType::Public => "public",
                    stepgate_config::ClientType::Confidential => "confidential",
                };
                let uris: Vec<&str> = c.redirect_uris.iter().map(|u| u.as_str()).collect();
                println!(
                    "{}\t{kind}\tapp={}\tredirect_uris={}",
                    c.id.as_str(),
                    c.app.as_str(),
                    uris.join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientAction::RotateSecret { config, id } => {
            let cfg = super::load_config(&config)?;
            let Some(c) = cfg.oidc.client(&id) else {
                anyhow::bail!("no OIDC client `{id}` in {}", config.display());
            };
            if c.client_type == stepgate_config::ClientType::Public {
                anyhow::bail!("`{id}` is a public client: it has no secret");
            }
            let (secret, hash) = new_secret()?;
            eprintln!("The new client secret (shown this once):\n{secret}\n");
            println!("secret_hash: {}", yaml_str(&hash));
            Ok(ExitCode::SUCCESS)
        }
    }
}
