//! `stepgate audit search|export|verify`: the hash-chained audit log read back. `search`
//! filters it (user, kind, time, client address) into a table or JSON lines; `export`
//! writes all of it (or a period) as JSON lines or as OCSF events (the mapping the SIEM
//! streams use, `stepgate_server::siem::ocsf`); `verify` checks every link of the chain and
//! names the first event that does not hold.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use stepgate_policy::HumanDuration;
use stepgate_server::siem::export;
use stepgate_store::{open_stores, verify_audit_chain, AuditQuery, Stores};

/// Arguments of `stepgate audit`.
#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Find audit events: by user, kind, period, client address; newest first.
    Search(SearchArgs),
    /// Write the audit log (or a period of it) as JSON lines or OCSF, oldest first.
    Export(ExportArgs),
    /// Check the hash chain of the whole audit log; exit 1 naming the first broken event.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct SearchArgs {
    /// The configuration whose store holds the audit log.
    #[arg(long, short)]
    config: PathBuf,
    /// Events this user did or that were done to them (username or user id).
    #[arg(long)]
    user: Option<String>,
    /// Only this kind (`signin.success`, `authn.lockout`, `factor.enrolled`, …).
    #[arg(long)]
    kind: Option<String>,
    /// From this time on: a duration back from now (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Before this time: a duration back from now or an RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only events from this client address.
    #[arg(long)]
    address: Option<String>,
    /// At most this many events (1 to 10000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object a line (the audit record, as `export --format jsonl` writes it).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// stepgate's audit record, one a line, with its sequence number and hashes.
    Jsonl,
    /// OCSF 1.1 events, one a line (Authentication, Account Change, Base Event).
    Ocsf,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The configuration whose store holds the audit log.
    #[arg(long, short)]
    config: PathBuf,
    /// `jsonl` or `ocsf`.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// From this time on: a duration back from now (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Before this time: a duration back from now or an RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The configuration whose store holds the audit log.
    #[arg(long, short)]
    config: PathBuf,
}

/// Runs `stepgate audit …`.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        match args.command {
            AuditCommand::Search(a) => search(a).await,
            AuditCommand::Export(a) => export(a).await,
            AuditCommand::Verify(a) => verify(a).await,
        }
    })
}

async fn stores(config: &Path) -> anyhow::Result<Stores> {
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

/// `24h` (that long before now) or an RFC 3339 time.
fn when(flag: &str, v: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    let d: HumanDuration = v.parse().map_err(|_| {
        anyhow::anyhow!(
            "{flag} `{v}`: expected a duration back from now (`24h`, `7d`) or an RFC 3339 time (`2026-01-31T09:00:00Z`)"
        )
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(d.0).unwrap_or(chrono::Duration::MAX))
}

fn period(since: &Option<String>, until: &Option<String>) -> anyhow::Result<AuditQuery> {
    Ok(AuditQuery {
        since: since.as_deref().map(|v| when("--since", v)).transpose()?,
        until: until.as_deref().map(|v| when("--until", v)).transpose()?,
        ..AuditQuery::default()
    })
}

async fn search(a: SearchArgs) -> anyhow::Result<ExitCode> {
    if !(1..=10_000).contains(&a.limit) {
        anyhow::bail!("--limit {}: expected 1 to 10000", a.limit);
    }
    let st = stores(&a.config).await?;
    let mut q = period(&a.since, &a.until)?;
    q.kind = a.kind;
    q.ip = a.address;
    q.limit = a.limit;
    q.newest_first = true;
    if let Some(u) = a.user {
        // Portal events name the user by username, store events by id: ask for both.
        if let Some(found) = st
            .durable
            .get_user_by_username(&u)
            .await
            .context("reading users")?
        {
            q.user.push(found.id);
        }
        q.user.push(u);
    }
    let events = st
        .durable
        .list_audit(&q)
        .await
        .context("reading the audit log")?;
    let mut out = std::io::stdout().lock();
    if a.json {
        for e in &events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        eprintln!("audit search: no event matches");
        return Ok(ExitCode::SUCCESS);
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| {
            [
                e.seq.to_string(),
                e.time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                e.kind.clone(),
                dash(&e.actor),
                dash(&e.subject),
                dash(&e.ip),
            ]
        })
        .collect();
    let head = ["SEQ", "TIME", "KIND", "ACTOR", "SUBJECT", "ADDRESS"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(&head.map(str::to_string)))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let st = stores(&a.config).await?;
    let mut q = period(&a.since, &a.until)?;
    let format = match a.format {
        Format::Jsonl => stepgate_config::AuditStreamFormat::Jsonl,
        Format::Ocsf => stepgate_config::AuditStreamFormat::Ocsf,
    };
    let mut sink: Box<dyn std::io::Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut n = 0u64;
    loop {
        let page = export::next_page(st.durable.as_ref(), &mut q)
            .await
            .context("reading the audit log")?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            writeln!(sink, "{}", export::line(e, format))?;
            n += 1;
        }
    }
    sink.flush()?;
    if let Some(p) = &a.output {
        eprintln!("audit export: {n} events written to {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let st = stores(&a.config).await?;
    match verify_audit_chain(st.durable.as_ref()).await {
        Ok(n) => {
            println!("audit log verified: {n} events, every link of the hash chain holds");
            Ok(ExitCode::SUCCESS)
        }
        Err(stepgate_store::AuditChainError::Store(e)) => {
            Err(anyhow::Error::new(e).context("reading the audit log"))
        }
        Err(e) => {
            eprintln!("audit verify: FAILED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
