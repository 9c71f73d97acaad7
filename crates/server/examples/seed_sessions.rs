//! Fills a stepgate store with live sessions, for `bench/load.sh`'s many-sessions pass.
//!
//! ```text
//! seed_sessions --config stepgate.yaml --username bench --count 1000 --out ids.txt
//! seed_sessions --config stepgate.yaml --count 100000
//! ```
//!
//! With `--username`, the sessions belong to that (existing) user, passed password + TOTP
//! (AAL2) just now, and their ids (cookie values, with the MAC stepgate checks) are written
//! to `--out`, one per line. Without it, each session belongs to a user of its own who does
//! not exist: sessions that only take up room in the store, as other users' would.
//! The sessions go through the same store code as `stepgate serve`'s, into the store the
//! configuration names, while stepgate runs.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use chrono::Utc;
use stepgate_authn::{FactorKind, PassedFactor};
use stepgate_server::app::signer::Signer;
use stepgate_server::session::SessionData;

struct Args {
    config: PathBuf,
    username: Option<String>,
    count: usize,
    out: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut config = None;
    let mut username = None;
    let mut count = None;
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--username" => username = Some(value()?),
            "--count" => {
                let v = value()?;
                count = Some(
                    v.parse()
                        .with_context(|| format!("--count {v}: expected a whole number"))?,
                );
            }
            "--out" => out = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        config: config.context("--config is required")?,
        username,
        count: count.context("--count is required")?,
        out,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let cfg = stepgate_config::load(&a.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = cfg
        .secrets
        .load_key(&cfg.base_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data_dir = cfg.base_dir.join(&cfg.server.data_dir);
    let stores = stepgate_store::open_stores(&cfg.store, &data_dir, &key)
        .await
        .context("opening the stores")?;
    // The same MAC key `stepgate serve` derives, so the ids are ones it accepts.
    let signer = Signer::new(key.to_base64().as_bytes());
    let owner = match &a.username {
        Some(name) => {
            let u = stores
                .durable
                .get_user_by_username(name)
                .await?
                .with_context(|| format!("no user named {name}"))?;
            Some((u.id, u.username))
        }
        None => None,
    };
    let mut out = match &a.out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let ttl = std::time::Duration::from_secs(12 * 3600);
    let started = std::time::Instant::now();
    for i in 0..a.count {
        let now = Utc::now();
        let (user_id, username) = match &owner {
            Some((id, name)) => (id.clone(), name.clone()),
            None => (format!("seeded-user-{i}"), format!("seeded{i}")),
        };
        let mut data = SessionData::new(
            &user_id,
            &username,
            PassedFactor::new(FactorKind::Password, &cfg.assurance, now),
            now,
        );
        data.add_factor(PassedFactor::new(FactorKind::Totp, &cfg.assurance, now));
        let id = signer.session_id();
        stores
            .hot
            .put_session(&id, &user_id, &serde_json::to_value(&data)?, ttl)
            .await?;
        if let Some(w) = out.as_mut() {
            writeln!(w, "{id}")?;
        }
    }
    if let Some(mut w) = out {
        w.flush()?;
    }
    eprintln!(
        "seed_sessions: {} sessions in {:.1} s",
        a.count,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
