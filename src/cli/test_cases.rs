//! `stepgate test --config CONFIG CASES.yaml`: policy unit tests for admins' CI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use marked_yaml::Spanned;
use serde::Deserialize;
use stepgate_policy::{OutcomeKind, RequestContext};

/// Arguments of `stepgate test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// The configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The cases file.
    pub cases: PathBuf,
    /// Print the trace of failing cases.
    #[arg(long, short)]
    pub verbose: bool,
}

/// A cases file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    cases: Vec<Case>,
}

/// One case: a context and what must come out.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Spanned<String>,
    context: RequestContext,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    outcome: OutcomeKind,
    /// The deciding policy; `default` for the default outcome.
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    min_aal: Option<u8>,
    #[serde(default)]
    phishing_resistant: Option<bool>,
    /// Remediation check ids that must be listed.
    #[serde(default)]
    remediation: Vec<String>,
    /// The report-only policy that must have matched first.
    #[serde(default)]
    report_only: Option<String>,
}

/// Runs every case; prints `N passed, M failed`.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(&args.config)?;
    let text = std::fs::read_to_string(&args.cases)
        .with_context(|| format!("reading the cases file {}", args.cases.display()))?;
    let file: CasesFile = marked_yaml::from_yaml(0, &text).map_err(|e| {
        let at = match &e {
            marked_yaml::FromYamlError::FromNode(n) => n.start_mark(),
            marked_yaml::FromYamlError::ParseYaml(_) => None,
        };
        match at {
            Some(m) => anyhow::anyhow!("{}:{}:{}: {e}", args.cases.display(), m.line(), m.column()),
            None => anyhow::anyhow!("{}: {e}", args.cases.display()),
        }
    })?;
    let geoip = super::what_if::open_geoip(&cfg)?;
    let rt = stepgate_server::Runtime::new(cfg);
    let (mut passed, mut failed) = (0usize, 0usize);
    for case in &file.cases {
        // Through the access pipeline, as `what-if` runs a context.
        let (fast_policy, explained) =
            super::what_if::decide(&rt, &case.context, None, geoip.as_ref())?;
        let exp = explained.explanation;
        let mut problems = Vec::new();
        if exp.outcome != case.expect.outcome {
            problems.push(format!(
                "outcome {} (expected {})",
                exp.outcome.as_str(),
                case.expect.outcome.as_str()
            ));
        }
        let got_policy = exp.policy.as_deref().unwrap_or("default");
        if let Some(want) = &case.expect.policy {
            if got_policy != want {
                problems.push(format!("policy `{got_policy}` (expected `{want}`)"));
            }
        }
        let req = exp.requirement.as_ref();
        if let Some(want) = case.expect.min_aal {
            let got = req.and_then(|r| r.min_aal);
            if got != Some(want) {
                problems.push(format!("min_aal {got:?} (expected {want})"));
            }
        }
        if let Some(want) = case.expect.phishing_resistant {
            let got = req.is_some_and(|r| r.phishing_resistant);
            if got != want {
                problems.push(format!("phishing_resistant {got} (expected {want})"));
            }
        }
        for check in &case.expect.remediation {
            if !exp.remediation.iter().any(|r| &r.check == check) {
                problems.push(format!("remediation lacks `{check}`"));
            }
        }
        if case.expect.report_only.is_some() && exp.report_only != case.expect.report_only {
            problems.push(format!(
                "report-only {:?} (expected {:?})",
                exp.report_only, case.expect.report_only
            ));
        }
        // The fast path and the explained path must agree.
        if fast_policy != exp.policy {
            problems.push(format!("fast path decided by {fast_policy:?}"));
        }
        let line = case.name.span().start().map_or(0, |m| m.line());
        if problems.is_empty() {
            passed += 1;
            println!("ok    {} (line {line})", case.name.as_str());
        } else {
            failed += 1;
            println!(
                "FAIL  {} (line {line}): {}",
                case.name.as_str(),
                problems.join("; ")
            );
            if args.verbose {
                print!("{}", super::what_if::render(&exp));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
