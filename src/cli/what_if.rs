//! `stepgate what-if --config CONFIG --context CONTEXT.json [--json]`: what would stepgate
//! decide for this request, and why.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use stepgate_policy::{Explanation, RequestContext};
use stepgate_server::access::what_if::{what_if, StatedFacts};
use stepgate_server::access::Explained;
use stepgate_signals::geoip::GeoIp;
use stepgate_signals::risk::SignInEntry;

/// Arguments of `stepgate what-if`.
#[derive(clap::Args)]
pub struct WhatIfArgs {
    /// The configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The request context as JSON (`-` for standard input).
    #[arg(long)]
    pub context: PathBuf,
    /// Print the decision and trace as JSON.
    #[arg(long)]
    pub json: bool,
    /// The user's previous sign-ins (a JSON list of `{time, ip, country, city, latitude,
    /// longitude, device_id, outcome}`), to score behavioural risk and travel velocity the
    /// way a live sign-in would. Without it the context's own `risk` is used.
    #[arg(long)]
    pub history: Option<PathBuf>,
}

/// Prints the decision, the deciding policy and the trace.
pub fn run(args: WhatIfArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&args.config)?;
    let text = if args.context.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .context("reading the context from standard input")?
    } else {
        std::fs::read_to_string(&args.context)
            .with_context(|| format!("reading the context file {}", args.context.display()))?
    };
    let ctx: RequestContext = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: {e} (expected a request context: see docs/configuration.md#request-context)",
            args.context.display(),
            e.line(),
            e.column()
        )
    })?;
    let history = args.history.as_deref().map(read_history).transpose()?;
    let geoip = open_geoip(&cfg)?;
    let located = geoip.is_some()
        && ctx.network.ip.is_some()
        && ctx.network.country.is_none()
        && ctx.network.city.is_none();
    let rt = stepgate_server::Runtime::new(cfg);
    let (_, explained) = decide(&rt, &ctx, history, geoip.as_ref())?;
    let Explained {
        explanation,
        context,
        assessment,
    } = explained;
    if args.json {
        let mut v = serde_json::to_value(&explanation)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "context".into(),
                serde_json::json!({ "network": context.network, "risk": context.risk }),
            );
            if let Some(r) = &assessment {
                obj.insert("risk".into(), serde_json::to_value(r)?);
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let n = &context.network;
        if located {
            println!(
                "geoip:    {} → country {}, region {}, city {}",
                n.ip.map_or("-".into(), |i| i.to_string()),
                n.country.as_deref().unwrap_or("-"),
                n.region.as_deref().unwrap_or("-"),
                n.city.as_deref().unwrap_or("-")
            );
        }
        if let Some(r) = &assessment {
            let reasons: Vec<String> = r
                .reasons
                .iter()
                .map(|x| format!("{} ({})", x.name, x.detail))
                .collect();
            println!(
                "risk:     {} (score {}) {}",
                context.risk.level.as_str(),
                r.score,
                reasons.join("; ")
            );
        }
        print!("{}", render(&explanation));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `ctx` (and a sign-in history) through stepgate's access pipeline, with the signal
/// sources replaced by what the context states (GeoIP, when configured, fills the
/// location and coordinates it leaves out).
pub fn decide(
    rt: &stepgate_server::Runtime,
    ctx: &RequestContext,
    history: Option<Vec<SignInEntry>>,
    geoip: Option<&GeoIp>,
) -> anyhow::Result<(Option<String>, Explained)> {
    let source = StatedFacts::new(ctx, history, geoip);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the pipeline's runtime")?;
    let (judged, explained) = runtime.block_on(what_if(rt, ctx, &source));
    let explained = explained.context("the request never reached the policies")?;
    let policy = judged.decision.and_then(|d| d.policy).map(str::to_string);
    Ok((policy, explained))
}

/// The GeoIP database `signals.geoip` names, when one is configured.
pub fn open_geoip(cfg: &stepgate_config::Config) -> anyhow::Result<Option<GeoIp>> {
    let Some(g) = &cfg.signals.geoip else {
        return Ok(None);
    };
    let mut g = g.clone();
    if g.database.is_relative() {
        g.database = cfg.base_dir.join(&g.database);
    }
    GeoIp::open(&g)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("signals.geoip: {e}"))
}

fn read_history(path: &std::path::Path) -> anyhow::Result<Vec<SignInEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the history file {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: {e} (expected a list of sign-ins)",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// The human-readable report.
pub fn render(e: &Explanation) -> String {
    let mut s = String::new();
    let by = e
        .policy
        .as_deref()
        .map_or("the default outcome (no policy matched)".to_string(), |p| {
            format!("policy `{p}`")
        });
    let _ = writeln!(s, "decision: {} by {by}", e.outcome.as_str());
    if let Some(m) = &e.message {
        let _ = writeln!(s, "message:  {m}");
    }
    if let Some(r) = &e.requirement {
        let mut parts = Vec::new();
        if let Some(a) = r.min_aal {
            parts.push(format!("AAL{a}"));
        }
        if !r.factors.is_empty() {
            parts.push(format!("one of [{}]", r.factors.join(", ")));
        }
        if r.phishing_resistant {
            parts.push("phishing-resistant".into());
        }
        if r.hardware_bound {
            parts.push("hardware-bound".into());
        }
        if let Some(m) = r.max_age {
            parts.push(format!("max_age {m}"));
        }
        let _ = writeln!(s, "requires: {}", parts.join(", "));
    }
    for r in &e.remediation {
        let _ = write!(s, "fix:      [{}] {}", r.check, r.message);
        if let Some(f) = &r.fix {
            let _ = write!(s, " — {f}");
        }
        let _ = writeln!(s);
    }
    if let Some(r) = &e.report_only {
        let _ = writeln!(
            s,
            "report-only: `{r}` matched first and would have decided if enforced"
        );
    }
    if let Some(r) = &e.route {
        let _ = writeln!(
            s,
            "route:    {} {} [{}]",
            r.name.as_deref().unwrap_or("(unnamed)"),
            r.path,
            r.tags.join(", ")
        );
    }
    let _ = writeln!(s, "trace:");
    for p in &e.trace {
        let status = match (p.mode, p.targeted, p.matched, p.decided) {
            ("disabled", ..) => "disabled".to_string(),
            (_, false, ..) => "not targeted".to_string(),
            (_, _, _, true) => "MATCHED — decided".to_string(),
            ("report_only", _, Some(true), _) => "matched (report-only, not enforced)".to_string(),
            (_, _, Some(true), _) => "matched".to_string(),
            _ => "conditions not met".to_string(),
        };
        let _ = writeln!(
            s,
            "  [{}] {} ({}) — {status}",
            p.priority, p.policy, p.target
        );
        for c in &p.conditions {
            let depth = c.path.matches('.').count();
            let _ = writeln!(
                s,
                "  {}{} {} — seen {}",
                "  ".repeat(depth),
                if c.held { "✓" } else { "✗" },
                c.condition,
                c.seen
            );
        }
    }
    s
}
