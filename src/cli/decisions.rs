//! `stepgate explain REQUEST_ID` and `stepgate replay --config DRAFT.yaml --since 24h`: the
//! decision log read back. `explain` shows one recorded decision with its trace, and runs
//! its recorded context again through the pipeline (`what-if`'s) under the current or a
//! draft configuration; `replay` does that for every decision of a period under a draft and
//! reports the outcomes that would change, grouped by app and policy.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use stepgate_policy::{Explanation, HumanDuration, RequestContext};
use stepgate_server::access::replay::{self, same_decision};
use stepgate_store::{open_stores, DecisionRecord, DurableStore};

use super::what_if::{decide, render};

/// Arguments of `stepgate explain`.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The request id (the `x-request-id` response header; the blocked and step-up pages
    /// show it).
    pub request_id: String,
    /// The configuration in force (its store holds the decision log).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Also decide the recorded request again under the configuration in force.
    #[arg(long)]
    pub rerun: bool,
    /// Also decide the recorded request again under this draft configuration.
    #[arg(long, value_name = "DRAFT.yaml")]
    pub against: Option<PathBuf>,
    /// Print JSON: the record, and the re-run decisions (`rerun`, `against`).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `stepgate replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The draft configuration to decide the recorded requests under.
    #[arg(long, short, value_name = "DRAFT.yaml")]
    pub config: PathBuf,
    /// The configuration whose store holds the decision log (default: the draft's own).
    #[arg(long, value_name = "LIVE.yaml")]
    pub store_config: Option<PathBuf>,
    /// How far back (`24h`, `7d`).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Examples printed per group.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The decision log of the store `config` names.
async fn open_log(config: &Path) -> anyhow::Result<std::sync::Arc<dyn DurableStore>> {
    let cfg = super::load_config(config)?;
    let key = cfg
        .secrets
        .load_key(&cfg.base_dir)
        .context("loading the secret key")?;
    let data_dir = cfg.base_dir.join(&cfg.server.data_dir);
    let stores = open_stores(&cfg.store, &data_dir, &key)
        .await
        .context("opening the store")?;
    Ok(stores.durable)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// The context a record was decided on, when it reached the policies.
fn context_of(d: &DecisionRecord) -> anyhow::Result<Option<RequestContext>> {
    replay::context_of(d)
        .with_context(|| format!("reading the context recorded for {}", d.request_id))
}

/// A decision under `cfg` of what `ctx` states (the what-if pipeline: no session, so the
/// policy's outcome alone).
fn redecide(cfg: stepgate_config::Config, ctx: &RequestContext) -> anyhow::Result<Explanation> {
    let rt = stepgate_server::Runtime::new(cfg);
    let (_, explained) = decide(&rt, ctx, None, None)?;
    Ok(explained.explanation)
}

/// Shows a recorded decision.
pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let record = runtime()?.block_on(async {
        let log = open_log(&args.config).await?;
        log.get_decision(&args.request_id)
            .await
            .context("reading the decision log")
    })?;
    let Some(d) = record else {
        eprintln!(
            "explain: no decision is recorded for request `{}` (check the id; decisions older than log.decisions.retention are deleted)",
            args.request_id
        );
        return Ok(ExitCode::FAILURE);
    };
    let ctx = context_of(&d)?;
    // The trace: as recorded, or (an allowed request's, or one recorded under an earlier
    // configuration) worked out again from the context under the configuration in force.
    let live = super::load_config(&args.config)?;
    let recorded = d.detail.member("trace");
    let traced_again = match (&recorded, &ctx) {
        (Some(_), _) => None,
        (_, Some(c)) => Some(live.policy_set.explain(c)),
        _ => None,
    };
    let mut reruns = Vec::new();
    if let Some(c) = &ctx {
        if args.rerun {
            reruns.push(("the configuration in force".to_string(), redecide(live, c)?));
        }
        if let Some(draft) = &args.against {
            let cfg = super::load_config(draft)?;
            reruns.push((draft.display().to_string(), redecide(cfg, c)?));
        }
    } else if args.rerun || args.against.is_some() {
        eprintln!("explain: this request never reached the policies (no context to decide again)");
    }
    if args.json {
        let v = serde_json::json!({
            "decision": d,
            "traced_again": traced_again,
            "reruns": reruns.iter().map(|(k, e)| serde_json::json!({ "under": k, "decision": e })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", describe(&d));
    match (recorded, traced_again) {
        (Some(t), _) => {
            println!("recorded trace:");
            print!("{}", indent(&render_recorded(&t)));
        }
        (_, Some(e)) => {
            println!("trace (worked out again from the recorded context, under the configuration in force):");
            print!("{}", indent(&render(&e)));
        }
        _ => println!("trace:    none (the request never reached the policies)"),
    }
    for (under, e) in &reruns {
        let same = same_decision(&d, e);
        println!(
            "decided again under {under}: {}{}",
            e.outcome.as_str(),
            if same { " (unchanged)" } else { " (CHANGED)" }
        );
        print!("{}", indent(&render(e)));
    }
    Ok(ExitCode::SUCCESS)
}

/// A recorded trace (the JSON of an [`Explanation`]) in `what-if`'s words.
fn render_recorded(t: &serde_json::Value) -> String {
    let mut s = String::new();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let by = t["policy"]
        .as_str()
        .map_or("the default outcome (no policy matched)".to_string(), |p| {
            format!("policy `{p}`")
        });
    let _ = writeln!(s, "decision: {} by {by}", text(&t["outcome"]));
    if let Some(m) = t["message"].as_str() {
        let _ = writeln!(s, "message:  {m}");
    }
    for r in t["remediation"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "fix:      [{}] {}",
            text(&r["check"]),
            text(&r["message"])
        );
    }
    let _ = writeln!(s, "trace:");
    for p in t["trace"].as_array().into_iter().flatten() {
        let status = if p["mode"] == "disabled" {
            "disabled"
        } else if p["targeted"] != true {
            "not targeted"
        } else if p["decided"] == true {
            "MATCHED — decided"
        } else if p["matched"] == true && p["mode"] == "report_only" {
            "matched (report-only, not enforced)"
        } else if p["matched"] == true {
            "matched"
        } else {
            "conditions not met"
        };
        let _ = writeln!(
            s,
            "  [{}] {} ({}) — {status}",
            p["priority"],
            text(&p["policy"]),
            text(&p["target"])
        );
        for c in p["conditions"].as_array().into_iter().flatten() {
            let depth = text(&c["path"]).matches('.').count();
            let _ = writeln!(
                s,
                "  {}{} {} — seen {}",
                "  ".repeat(depth),
                if c["held"] == true { "✓" } else { "✗" },
                text(&c["condition"]),
                text(&c["seen"])
            );
        }
    }
    s
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// The record's fields, one a line.
fn describe(d: &DecisionRecord) -> String {
    let mut s = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(s, "request:  {}", d.request_id);
    let _ = writeln!(s, "time:     {}", d.time.to_rfc3339());
    let _ = writeln!(s, "kind:     {}", d.kind);
    let _ = writeln!(s, "user:     {}", opt(&d.user));
    let _ = writeln!(s, "session:  {}", opt(&d.session));
    let _ = writeln!(s, "app:      {} (route {})", opt(&d.app), opt(&d.route));
    let _ = writeln!(s, "request:  {} {}", d.method, d.path);
    let _ = writeln!(s, "client:   {}", opt(&d.ip));
    let _ = writeln!(s, "device:   {}", opt(&d.device));
    let by = d
        .policy
        .as_deref()
        .map_or("the default outcome".to_string(), |p| {
            format!("policy `{p}`")
        });
    match &d.policy_outcome {
        Some(po) => {
            let _ = writeln!(s, "outcome:  {} (the policy said {po}, by {by})", d.outcome);
        }
        None => {
            let _ = writeln!(s, "outcome:  {} (before any policy)", d.outcome);
        }
    }
    if let Some(r) = d.detail.member("requirement") {
        let _ = writeln!(s, "requires: {r}");
    }
    for r in d.report_only.as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "report-only: `{}` matched and would have decided {}",
            r["policy"].as_str().unwrap_or("?"),
            r["outcome"].as_str().unwrap_or("?")
        );
    }
    s
}

/// Decides every recorded decision of the period again under the draft.
pub fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let since: HumanDuration = args
        .since
        .parse()
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let draft = super::load_config(&args.config)?;
    let rt = stepgate_server::Runtime::new(draft);
    let store_config = args.store_config.as_deref().unwrap_or(&args.config);
    let from = chrono::Utc::now() - chrono::Duration::from_std(since.0).unwrap_or_default();
    let run = runtime()?;
    let report = run.block_on(async {
        let log = open_log(store_config).await?;
        replay::replay(log.as_ref(), &rt, from, args.examples, usize::MAX, None)
            .await
            .map_err(anyhow::Error::from)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "replay: {} decisions since {} ({} reached the policies); {} would change under {}",
        report.decisions,
        from.to_rfc3339(),
        report.compared,
        report.changed,
        args.config.display()
    );
    if report.unreadable > 0 {
        println!(
            "  {} records could not be re-decided (skipped): {}",
            report.unreadable,
            report.unreadable_examples.join("; ")
        );
    }
    for c in &report.groups {
        println!(
            "  {}: {} → {} ×{} (was `{}`, now `{}`); e.g. {}",
            c.app,
            c.from,
            c.to,
            c.count,
            c.policy_before,
            c.policy_after,
            c.examples.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
