//! `stepgate what-if --config CONFIG --context CONTEXT.json [--json]`: what would stepgate
//! decide for this request, and why.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use stepgate_policy::{Explanation, RequestContext};

/// Arguments of `stepgate what-if`.
#[derive(clap::Args)]
pub struct WhatIfArgs {
    /// The configuration file.
    #[arg(long)]
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
    let mut ctx = ctx;
    let (located, risk) = enrich(&cfg, &mut ctx, args.history.as_deref())?;
    let explanation = cfg.policy_set.explain(&ctx);
    if args.json {
        let mut v = serde_json::to_value(&explanation)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "context".into(),
                serde_json::json!({ "network": ctx.network, "risk": ctx.risk }),
            );
            if let Some(r) = &risk {
                obj.insert("risk".into(), serde_json::to_value(r)?);
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let n = &ctx.network;
        if located {
            println!(
                "geoip:    {} → country {}, region {}, city {}",
                n.ip.map_or("-".into(), |i| i.to_string()),
                n.country.as_deref().unwrap_or("-"),
                n.region.as_deref().unwrap_or("-"),
                n.city.as_deref().unwrap_or("-")
            );
        }
        if let Some(r) = &risk {
            let reasons: Vec<String> = r
                .reasons
                .iter()
                .map(|x| format!("{} ({})", x.name, x.detail))
                .collect();
            println!(
                "risk:     {} (score {}) {}",
                ctx.risk.level.as_str(),
                r.score,
                reasons.join("; ")
            );
        }
        print!("{}", render(&explanation));
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills what the live pipeline would: country/region/city from `signals.geoip` when the
/// context has an IP but no location, and, given a sign-in history, the behavioural risk
/// (new country, impossible travel with its velocity, …) from `signals.risk`. Says whether
/// GeoIP filled the location.
fn enrich(
    cfg: &stepgate_config::Config,
    ctx: &mut RequestContext,
    history: Option<&std::path::Path>,
) -> anyhow::Result<(bool, Option<stepgate_signals::risk::RiskAssessment>)> {
    let mut geo = stepgate_signals::geoip::GeoInfo::default();
    let mut located = false;
    if let (Some(g), Some(ip)) = (&cfg.signals.geoip, ctx.network.ip) {
        let mut g = g.clone();
        if g.database.is_relative() {
            g.database = cfg.base_dir.join(&g.database);
        }
        let db = stepgate_signals::geoip::GeoIp::open(&g)
            .map_err(|e| anyhow::anyhow!("signals.geoip: {e}"))?;
        geo = db
            .lookup(ip)
            .map_err(|e| anyhow::anyhow!("signals.geoip: {e}"))?;
        if ctx.network.country.is_none() && ctx.network.city.is_none() {
            geo.apply_to(&mut ctx.network);
            located = true;
        }
    }
    let Some(path) = history else {
        return Ok((located, None));
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the history file {}", path.display()))?;
    let entries: Vec<stepgate_signals::risk::SignInEntry> =
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: {e} (expected a list of sign-ins)",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
    let attempt = stepgate_signals::risk::SignInAttempt {
        time: ctx.time,
        ip: ctx.network.ip,
        country: ctx.network.country.clone(),
        city: ctx.network.city.clone(),
        latitude: geo.latitude,
        longitude: geo.longitude,
        device_id: ctx.device.as_ref().and_then(|d| d.id.clone()),
        ip_risk_score: ctx.network.ip_risk_score,
    };
    let assessment = stepgate_signals::risk::score(&entries, &attempt, &cfg.signals.risk);
    ctx.risk = assessment.to_context();
    Ok((located, Some(assessment)))
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
