//! `stepgate user`: manage users and their factors in the configured store.
//!
//! Works on the store the configuration names (`store:`, `server.data_dir`) with the key from
//! `secrets:` (`STEPGATE_SECRET_KEY` by default). Passwords are read from standard input,
//! never from the command line (where `ps` and shell history would see them).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use stepgate_authn::password::{self, BreachedList};
use stepgate_authn::service::{AuthError, Authenticator, AuthnSettings};
use stepgate_authn::totp;
use stepgate_authn::FactorsConfig;
use stepgate_store::{open_stores, NewAuditEvent, Stores, UserRecord, UserSource};

use super::user_lifecycle::{self as lifecycle, GroupChange};
use super::user_links::{create_user, Link, NewUser};
use stepgate_authn::LinkPurpose;

/// Who CLI actions are attributed to in the audit log (`admin:cli`).
const ADMIN: &str = "cli";

/// Arguments of `stepgate user`.
#[derive(clap::Args)]
pub struct UserArgs {
    /// The configuration file (its `store`, `secrets`, `factors` sections are used).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: UserAction,
}

/// `stepgate user` actions.
#[derive(clap::Subcommand)]
pub enum UserAction {
    /// Create a local user.
    Add {
        /// Sign-in name.
        username: String,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A group or role (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Also set a password, read from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Show a user, their factors and whether they are locked.
    Show {
        /// Sign-in name.
        username: String,
    },
    /// Disable a user (they can no longer sign in).
    Disable {
        /// Sign-in name.
        username: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Sign-in name.
        username: String,
    },
    /// Lift bans and the consecutive-failure lock on a user.
    Unlock {
        /// Sign-in name.
        username: String,
    },
    /// Set a user's password, read from standard input (NIST rules apply).
    SetPassword {
        /// Sign-in name.
        username: String,
        /// Read the password from standard input (the default; accepted for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove all of a user's factors (but the password unless --include-password) and
    /// lift locks, e.g. after a lost phone.
    ResetFactors {
        /// Sign-in name.
        username: String,
        /// Remove the password too.
        #[arg(long)]
        include_password: bool,
    },
    /// Enrol a TOTP authenticator app: prints the otpauth:// URI and a QR code.
    EnrollTotp {
        /// Sign-in name.
        username: String,
        /// Print the URI only, without the terminal QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Delete a user, their factors and their live sessions (the audit log keeps them).
    Delete {
        /// Sign-in name.
        username: String,
    },
    /// Replace a user's groups (none given: remove every group).
    SetGroups {
        /// Sign-in name.
        username: String,
        /// The groups.
        groups: Vec<String>,
    },
    /// Add a user to groups.
    AddGroup {
        /// Sign-in name.
        username: String,
        /// The groups.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Remove a user from groups.
    RemoveGroup {
        /// Sign-in name.
        username: String,
        /// The groups.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Set an attribute policies read (several values make a list), or remove it with
    /// `--unset`.
    SetAttribute {
        /// Sign-in name.
        username: String,
        /// The attribute, e.g. `department`.
        key: String,
        /// Its value, or values.
        #[arg(required_unless_present = "unset", conflicts_with = "unset")]
        values: Vec<String>,
        /// Remove the attribute.
        #[arg(long)]
        unset: bool,
    },
    /// Invite a user: print a single-use, expiring link (and e-mail it when e-mail is
    /// configured) where they choose a password and add a passkey or authenticator app.
    /// Creates the user if there is none of that name.
    Invite {
        /// Sign-in name.
        username: String,
        /// E-mail address (for a new user; the link is sent there).
        #[arg(long)]
        email: Option<String>,
        /// Display name (for a new user).
        #[arg(long)]
        name: Option<String>,
        /// A group or role for a new user (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the link works (at most 30d).
        #[arg(long, default_value = "72h")]
        valid_for: stepgate_policy::HumanDuration,
        /// Print the link only, even when e-mail is configured.
        #[arg(long)]
        no_email: bool,
    },
    /// Print a single-use, expiring link where the user sets a new password (and e-mail it
    /// when e-mail is configured); their other factors stay.
    ResetLink {
        /// Sign-in name.
        username: String,
        /// How long the link works (at most 30d).
        #[arg(long, default_value = "1h")]
        valid_for: stepgate_policy::HumanDuration,
        /// Print the link only, even when e-mail is configured.
        #[arg(long)]
        no_email: bool,
    },
    /// Hash a password (read from standard input) as argon2id for `users[].password_hash`.
    HashPassword {
        /// Read the password from standard input (the default; accepted for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Runs `stepgate user`.
pub fn run(args: UserArgs) -> anyhow::Result<ExitCode> {
    if let UserAction::HashPassword { .. } = args.action {
        return hash_password(args.config.as_deref());
    }
    let Some(config) = args.config else {
        anyhow::bail!("`stepgate user` needs the configuration: --config FILE");
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_with_store(&config, args.action))
}

fn read_password() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    // One trailing newline (from `echo` or a here-string) is not part of the password.
    let pw = s
        .strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(&s)
        .to_string();
    if pw.is_empty() {
        anyhow::bail!("no password on standard input: pipe it in, e.g. `stepgate user set-password jane --password-stdin < file`");
    }
    Ok(pw)
}

fn hash_password(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (factors, base) = match config {
        Some(p) => {
            let cfg = super::load_config(p)?;
            (cfg.factors, cfg.base_dir)
        }
        None => (FactorsConfig::default(), PathBuf::from(".")),
    };
    let pw = read_password()?;
    let breached = match &factors.password.breached_list {
        Some(p) => BreachedList::load(&base.join(p))
            .with_context(|| format!("reading factors.password.breached_list {}", p.display()))?,
        None => BreachedList::default(),
    };
    password::check_new_password(&factors.password, &breached, "", &pw)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let phc = password::hash_secret(&factors.password.argon2, pw.as_bytes())?;
    println!("{phc}");
    Ok(ExitCode::SUCCESS)
}

/// The password rules, to check a new user's password before the user is created.
struct PasswordRules {
    cfg: stepgate_authn::config::PasswordConfig,
    breached: BreachedList,
}

/// What `open` gives: the stores, the authenticator, the password rules, and the portal's
/// public address (`https://sso.example.com/_stepgate`) for the links the CLI prints.
struct Opened {
    stores: Stores,
    authn: Authenticator,
    rules: PasswordRules,
    portal_url: String,
}

/// Opens the store; `mail`: build the e-mail sender (`factors.email_otp`) to send links.
async fn open(config: &Path, mail: bool) -> anyhow::Result<Opened> {
    let cfg = super::load_config(config)?;
    let public = match &cfg.server.public_url {
        Some(u) => u.as_str().trim_end_matches('/').to_string(),
        None => format!("http://{}", cfg.listen),
    };
    let portal_url = format!("{public}{}", cfg.server.portal_path);
    let breached = match &cfg.factors.password.breached_list {
        Some(p) => BreachedList::load(&cfg.base_dir.join(p))
            .with_context(|| format!("reading factors.password.breached_list {}", p.display()))?,
        None => BreachedList::default(),
    };
    let rules = PasswordRules {
        cfg: cfg.factors.password.clone(),
        breached,
    };
    let key = cfg
        .secrets
        .load_key(&cfg.base_dir)
        .context("loading the secret key")?;
    let data_dir = cfg.base_dir.join(&cfg.server.data_dir);
    let stores = open_stores(&cfg.store, &data_dir, &key)
        .await
        .context("opening the store")?;
    // No cache here, but running nodes cache what this changes: on Redis, announce each
    // write so that they drop their copies at once (a disabled user, ended sessions).
    let (stores, cache) = stepgate_server::session::cache::wrap(stores, Duration::ZERO);
    if let Some(redis) = &cfg.store.redis {
        let feed = stepgate_store::ChangeFeed::connect(redis)
            .await
            .context("connecting the change feed to Redis")?;
        cache.announce(std::sync::Arc::new(feed));
    }
    let mut factors = cfg.factors;
    // The CLI never sends codes: do not build (or require credentials for) the senders,
    // but for the e-mail that carries a link.
    factors.email_otp.enabled &= mail;
    factors.sms_otp.enabled = false;
    let settings = AuthnSettings {
        factors,
        assurance: cfg.assurance,
        regulation: cfg.regulation,
    };
    let authn = Authenticator::new(
        stores.durable.clone(),
        stores.hot.clone(),
        key,
        settings,
        &cfg.base_dir,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Opened {
        stores,
        authn,
        rules,
        portal_url,
    })
}

/// The user called `username`, or an error saying how to find or add one.
pub(super) async fn user(stores: &Stores, username: &str) -> anyhow::Result<UserRecord> {
    stores
        .durable
        .get_user_by_username(username)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!("no user `{username}`; see `stepgate user list` or add one with `stepgate user add {username}`")
        })
}

async fn audit(stores: &Stores, kind: &str, u: &UserRecord) -> anyhow::Result<()> {
    audit_with(
        stores,
        kind,
        u,
        serde_json::json!({ "username": u.username }),
    )
    .await
}

/// Appends an audit event about `u` by `admin:cli`.
pub(super) async fn audit_with(
    stores: &Stores,
    kind: &str,
    u: &UserRecord,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let mut ev = NewAuditEvent::now(kind);
    ev.actor = Some(format!("admin:{ADMIN}"));
    ev.subject = Some(u.id.clone());
    ev.detail = detail;
    stores.durable.append_audit(&ev).await?;
    Ok(())
}

fn authn_err(e: AuthError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn warn_config_managed(u: &UserRecord) {
    if u.source == UserSource::Config {
        eprintln!(
            "note: `{}` is declared in the configuration file; the next start re-applies what the file says",
            u.username
        );
    }
}

async fn run_with_store(config: &Path, action: UserAction) -> anyhow::Result<ExitCode> {
    let mail = matches!(
        action,
        UserAction::Invite {
            no_email: false,
            ..
        } | UserAction::ResetLink {
            no_email: false,
            ..
        }
    );
    let Opened {
        stores,
        authn,
        rules,
        portal_url,
    } = open(config, mail).await?;
    match action {
        UserAction::Add {
            username,
            email,
            name,
            groups,
            password_stdin,
        } => {
            if username.trim().is_empty() || username.trim() != username {
                anyhow::bail!("the username must be non-empty without leading or trailing spaces");
            }
            if let Some(existing) = stores.durable.get_user_by_username(&username).await? {
                anyhow::bail!(
                    "user `{username}` already exists (created {}); nothing was changed. Change them with `stepgate user set-groups`, `set-attribute`, `set-password`, or remove them with `stepgate user delete {username}`",
                    existing.created_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
            // Read and check the password before creating anything.
            let pw = if password_stdin {
                let pw = read_password()?;
                password::check_new_password(&rules.cfg, &rules.breached, &username, &pw)
                    .map_err(|e| anyhow::anyhow!("{e}").context("the user was not created"))?;
                Some(pw)
            } else {
                None
            };
            let mut u = UserRecord::new(&username);
            u.email = email;
            u.name = name;
            u.groups = groups;
            stores.durable.create_user(&u).await.map_err(|e| match e {
                // Added by someone else between the look-up and now.
                stepgate_store::StoreError::Conflict { .. } => {
                    anyhow::anyhow!("user `{username}` already exists; nothing was changed")
                }
                other => other.into(),
            })?;
            if let Some(pw) = pw {
                if let Err(e) = authn.admin_set_password(&u, &pw, ADMIN).await {
                    stores.durable.delete_user(&u.id).await?;
                    return Err(authn_err(e).context("the user was not created"));
                }
            }
            // Only a user that exists as asked is recorded as created.
            audit(&stores, "user.created", &u).await?;
            println!("created user {} ({})", u.username, u.id);
        }
        UserAction::List => {
            let users = stores.durable.list_users().await?;
            println!(
                "{:<24} {:<16} {:<9} {:<8} EMAIL",
                "USERNAME", "SOURCE", "STATE", "FACTORS"
            );
            for u in users {
                let factors = stores.durable.list_factors(&u.id).await?;
                let n = factors
                    .iter()
                    .filter(|f| f.kind != stepgate_authn::service::ENROLMENT_LINK_KIND)
                    .filter(|f| f.kind != stepgate_store::UPSTREAM_LINK_KIND)
                    .count();
                println!(
                    "{:<24} {:<16} {:<9} {:<8} {}",
                    u.username,
                    source_of(&u, &factors),
                    if u.disabled { "disabled" } else { "enabled" },
                    n,
                    u.email.as_deref().unwrap_or("-")
                );
            }
        }
        UserAction::Show { username } => {
            let u = user(&stores, &username).await?;
            println!("username:   {}", u.username);
            println!("id:         {}", u.id);
            println!("name:       {}", u.name.as_deref().unwrap_or("-"));
            println!("email:      {}", u.email.as_deref().unwrap_or("-"));
            println!("groups:     {}", u.groups.join(", "));
            let factors = stores.durable.list_factors(&u.id).await?;
            println!("source:     {}", source_of(&u, &factors));
            println!(
                "state:      {}",
                if u.disabled { "disabled" } else { "enabled" }
            );
            match authn.lock_state(&u).await.map_err(authn_err)? {
                Some(e) => println!("lock:       {e}"),
                None => println!("lock:       none"),
            }
            println!("created:    {}", u.created_at.to_rfc3339());
            let factors = authn.enrolled(&u).await.map_err(authn_err)?;
            println!(
                "factors:    {}",
                if factors.is_empty() { "none" } else { "" }
            );
            for f in factors {
                let mut extra = vec![
                    format!("AAL{} alone", f.aal_alone),
                    format!("amr {}", f.amr),
                ];
                if f.phishing_resistant {
                    extra.push("phishing-resistant".into());
                }
                if f.hardware_bound {
                    extra.push("hardware-bound".into());
                }
                if let Some(n) = f.remaining_codes {
                    extra.push(format!("{n} codes left"));
                }
                if f.managed_by_config {
                    extra.push("from the configuration".into());
                }
                println!(
                    "  - {} {:<16} {:<28} enrolled {}, last used {} ({})",
                    f.id,
                    f.kind.as_str(),
                    f.label,
                    f.created_at.format("%Y-%m-%d %H:%M"),
                    f.last_used_at
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "never".into()),
                    extra.join(", ")
                );
            }
        }
        UserAction::Disable { username } => set_disabled(&stores, &username, true).await?,
        UserAction::Enable { username } => set_disabled(&stores, &username, false).await?,
        UserAction::Unlock { username } => {
            let u = user(&stores, &username).await?;
            authn.unlock(&u, ADMIN).await.map_err(authn_err)?;
            println!("unlocked {}", u.username);
        }
        UserAction::SetPassword { username, .. } => {
            let u = user(&stores, &username).await?;
            let pw = read_password()?;
            authn
                .admin_set_password(&u, &pw, ADMIN)
                .await
                .map_err(authn_err)?;
            println!("password set for {}", u.username);
        }
        UserAction::ResetFactors {
            username,
            include_password,
        } => {
            let u = user(&stores, &username).await?;
            let n = authn
                .admin_reset_factors(&u, include_password, ADMIN)
                .await
                .map_err(authn_err)?;
            println!(
                "removed {n} factor(s) of {} and lifted any lock",
                u.username
            );
        }
        UserAction::EnrollTotp { username, no_qr } => {
            let u = user(&stores, &username).await?;
            if u.disabled {
                eprintln!("note: `{}` is disabled", u.username);
            }
            let (uri, seed, f) = authn.admin_enrol_totp(&u, ADMIN).await.map_err(authn_err)?;
            println!("TOTP enrolled for {} (factor {})", u.username, f.id);
            println!("Scan the QR code or enter the key in the authenticator app:");
            println!("key: {seed}");
            println!("uri: {uri}");
            if !no_qr {
                println!("{}", totp::qr_terminal(&uri)?);
            }
        }
        UserAction::Delete { username } => lifecycle::delete(&stores, &username).await?,
        UserAction::SetGroups { username, groups } => {
            lifecycle::change_groups(&stores, &username, GroupChange::Set(groups)).await?
        }
        UserAction::AddGroup { username, groups } => {
            lifecycle::change_groups(&stores, &username, GroupChange::Add(groups)).await?
        }
        UserAction::RemoveGroup { username, groups } => {
            lifecycle::change_groups(&stores, &username, GroupChange::Remove(groups)).await?
        }
        UserAction::SetAttribute {
            username,
            key,
            values,
            unset: _,
        } => lifecycle::set_attribute(&stores, &username, &key, values).await?,
        UserAction::Invite {
            username,
            email,
            name,
            groups,
            valid_for,
            no_email: _,
        } => {
            let u = match stores.durable.get_user_by_username(&username).await? {
                Some(u) => u,
                None => {
                    let new = NewUser {
                        username: &username,
                        email,
                        name,
                        groups,
                    };
                    create_user(&stores, new).await?
                }
            };
            let link = Link {
                portal_url: &portal_url,
                purpose: LinkPurpose::Invitation,
                valid_for,
            };
            super::user_links::issue(&stores, &authn, &u, link).await?;
        }
        UserAction::ResetLink {
            username,
            valid_for,
            no_email: _,
        } => {
            let u = user(&stores, &username).await?;
            let link = Link {
                portal_url: &portal_url,
                purpose: LinkPurpose::PasswordReset,
                valid_for,
            };
            super::user_links::issue(&stores, &authn, &u, link).await?;
        }
        UserAction::HashPassword { .. } => unreachable!("handled without a store"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The user's source, with the identity providers or directory it is linked to
/// (`upstream:corp`, `local+corp` for a local user linked by a verified e-mail).
fn source_of(u: &UserRecord, factors: &[stepgate_store::FactorRecord]) -> String {
    let links: Vec<&str> = factors
        .iter()
        .filter(|f| f.kind == stepgate_store::UPSTREAM_LINK_KIND)
        .filter_map(|f| f.data.get("provider").and_then(|p| p.as_str()))
        .collect();
    match (u.source, links.is_empty()) {
        (s, true) => source(s).to_string(),
        (UserSource::Upstream, false) => format!("upstream:{}", links.join(",")),
        (s, false) => format!("{}+{}", source(s), links.join(",")),
    }
}

fn source(s: UserSource) -> &'static str {
    match s {
        UserSource::Local => "local",
        UserSource::Config => "config",
        UserSource::Upstream => "upstream",
    }
}

async fn set_disabled(stores: &Stores, username: &str, disabled: bool) -> anyhow::Result<()> {
    let mut u = user(stores, username).await?;
    warn_config_managed(&u);
    if u.disabled == disabled {
        println!(
            "{} is already {}",
            u.username,
            if disabled { "disabled" } else { "enabled" }
        );
        return Ok(());
    }
    u.disabled = disabled;
    u.updated_at = stepgate_store::now_ms();
    stores.durable.update_user(&u).await?;
    if disabled {
        // Sign them out everywhere too.
        stores.hot.delete_sessions_for_user(&u.id).await?;
    }
    audit(
        stores,
        if disabled {
            "user.disabled"
        } else {
            "user.enabled"
        },
        &u,
    )
    .await?;
    println!(
        "{} {}",
        if disabled { "disabled" } else { "enabled" },
        u.username
    );
    Ok(())
}
