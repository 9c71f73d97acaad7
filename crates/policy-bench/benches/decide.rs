//! Policy decisions: stepgate's `PolicySet::decide` against `cedar-policy`'s
//! `Authorizer::is_authorized` on an equivalent policy set, in the same run.
//!
//! Run it with:
//!
//! ```text
//! cargo bench -p stepgate-policy-bench
//! STEPGATE_BENCH_QUICK=1 cargo bench -p stepgate-policy-bench   # a smoke run of a minute or so
//! ```
//!
//! For 10, 100, 1,000 and 10,000 policies it generates (seeded, see
//! `stepgate_policy_bench::model`) a policy set over `max(1, n / 10)` apps and 1,000
//! requests spread across the apps, renders them as stepgate YAML and as Cedar, checks that
//! both engines give the same verdict and deciding policy on 250 of the requests (the unit
//! tests check all of them), then:
//!
//! 1. criterion groups `decide/stepgate/N` and `decide/cedar/N`, each iteration deciding
//!    the next of the 1,000 pre-built requests (the request objects, Cedar's entity store
//!    and both policy sets are built before any timing);
//! 2. a per-decision latency pass at 1,000 policies: each decision timed on its own with
//!    `Instant::now()` on both sides, minus the median cost of an empty `now()`/`now()` pair
//!    (the timer overhead, measured first and printed). Timing single decisions rather than
//!    batches keeps the tail honest (a batch of 8 hides a slow decision among fast ones);
//!    on this machine's TSC clock source the overhead is a few tens of nanoseconds, small
//!    next to a decision and measured rather than guessed;
//! 3. the criterion medians per size, p50 / p99 per decision for both engines, the targets
//!    (p50 < 1 µs, p99 < 5 µs, at least 10× Cedar), and last the line
//!    `stepgate vs cedar at 1000 policies: N.Nx faster` (Cedar's p50 over stepgate's).
//!
//! # What is and isn't equivalent
//!
//! The same conditions, over the same requests, with the same verdict on every request
//! (the crate's tests check verdict *and* deciding policy request by request, and each
//! condition kind alone). The differences, all in Cedar's favour or neutral:
//!
//! * stepgate is first-match by priority, Cedar is "a permit holds and no forbid does". The
//!   generated sets put every `deny` / `step_up` before every `allow` (as real sets are
//!   written), which makes the two rules agree; an interleaved order would not.
//! * `step_up` is a Cedar `forbid` annotated `@outcome("step_up")`: Cedar says "not
//!   allowed", the step-up requirement comes from the deciding policy.
//! * Cedar has no time zones: each zone's local hour and weekday are precomputed into the
//!   context outside the timed region; stepgate converts the time inside `decide`.
//! * Route matching (method and path against the app's routes) happens inside stepgate's
//!   `decide`; Cedar gets the matched route's tags in the context.
//! * Cedar has no version type (`os_version` `major.minor` is `major * 1000 + minor`) and no
//!   regex (the generated regexes are `.*@domain`, which `like "*@domain"` matches the same).
//! * Optional values are guarded with `has` in Cedar to reproduce stepgate's "unknown
//!   never matches a positive test"; every request has an IP.
//! * Cedar reads users, groups and apps from one shared entity store; stepgate reads the
//!   user from the request context.
//! * Not generated: report-only, sign-in targets, app tags, location, user agent,
//!   certificate and velocity conditions.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use cedar_policy::Authorizer;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use stepgate_policy_bench::Fixture;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const REQUESTS: usize = 1_000;
const SEED: u64 = 2026;
const LATENCY_SIZE: usize = 1_000;

struct Settings {
    quick: bool,
    warm_up: Duration,
    measurement: Duration,
    samples: usize,
    latency_stepgate: usize,
    latency_cedar: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("STEPGATE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        if quick {
            Settings {
                quick,
                warm_up: Duration::from_millis(200),
                measurement: Duration::from_millis(500),
                samples: 10,
                latency_stepgate: 20_000,
                latency_cedar: 2_000,
            }
        } else {
            Settings {
                quick,
                warm_up: Duration::from_secs(1),
                measurement: Duration::from_secs(4),
                samples: 50,
                latency_stepgate: 1_000_000,
                latency_cedar: 100_000,
            }
        }
    }
}

fn main() {
    let settings = Settings::from_env();
    let started = SystemTime::now();
    let fixtures: Vec<Fixture> = SIZES.iter().map(|&n| build(n)).collect();
    let authorizer = Authorizer::new();

    let mut c = Criterion::default()
        .warm_up_time(settings.warm_up)
        .measurement_time(settings.measurement)
        .sample_size(settings.samples)
        .configure_from_args();
    let mut group = c.benchmark_group("decide");
    for f in &fixtures {
        let n = f.policy_set.len();
        group.bench_with_input(BenchmarkId::new("stepgate", n), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                let r = &f.requests[i % REQUESTS];
                i += 1;
                black_box(f.policy_set.decide(black_box(&r.context)).policy)
            });
        });
    }
    for f in &fixtures {
        let n = f.policy_set.len();
        if n >= 10_000 {
            // Each decision takes milliseconds: fewer, flat samples.
            group.sampling_mode(SamplingMode::Flat).sample_size(10);
        }
        group.bench_with_input(BenchmarkId::new("cedar", n), f, |b, f| {
            let mut i = 0;
            b.iter(|| {
                let r = &f.requests[i % REQUESTS];
                i += 1;
                black_box(authorizer.is_authorized(
                    black_box(&r.cedar),
                    &f.cedar_policies,
                    &f.cedar_entities,
                ))
            });
        });
    }
    group.finish();
    c.final_summary();

    println!();
    println!("criterion medians per decision (cycling through {REQUESTS} requests):");
    println!(
        "  {:>8}  {:>12}  {:>12}  {:>8}",
        "policies", "stepgate", "cedar", "ratio"
    );
    for n in SIZES {
        let s = criterion_median_ns("stepgate", n, started);
        let ce = criterion_median_ns("cedar", n, started);
        let ratio = match (s, ce) {
            (Some(s), Some(ce)) => format!("{:.1}x", ce / s),
            _ => "n/a".into(),
        };
        println!(
            "  {n:>8}  {:>12}  {:>12}  {ratio:>8}",
            fmt_ns(s),
            fmt_ns(ce)
        );
    }

    let f = fixtures
        .iter()
        .find(|f| f.policy_set.len() == LATENCY_SIZE)
        .expect("the 1,000-policy fixture is built");
    let overhead = timer_overhead_ns();
    let s = latency(settings.latency_stepgate, overhead, |i| {
        black_box(
            f.policy_set
                .decide(black_box(&f.requests[i % REQUESTS].context))
                .policy,
        );
    });
    let ce = latency(settings.latency_cedar, overhead, |i| {
        let r = &f.requests[i % REQUESTS];
        black_box(authorizer.is_authorized(
            black_box(&r.cedar),
            &f.cedar_policies,
            &f.cedar_entities,
        ));
    });
    println!();
    println!(
        "per-decision latency at {LATENCY_SIZE} policies (each decision timed alone; timer overhead {overhead} ns subtracted){}:",
        if settings.quick { ", QUICK mode" } else { "" }
    );
    for (name, l) in [("stepgate", &s), ("cedar", &ce)] {
        println!(
            "  {name:<8}  p50 {}  p99 {}  p99.9 {}  max {}  mean {}  ({} decisions)",
            fmt_us(l.p50),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            fmt_us(l.mean),
            l.count
        );
    }
    let ratio = ce.p50 / s.p50;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "targets at {LATENCY_SIZE} policies: p50 < 1 µs {} ({}), p99 < 5 µs {} ({}), ≥ 10× cedar {} ({ratio:.1}x)",
        verdict(s.p50 < 1_000.0),
        fmt_us(s.p50),
        verdict(s.p99 < 5_000.0),
        fmt_us(s.p99),
        verdict(ratio >= 10.0),
    );
    println!("stepgate vs cedar at {LATENCY_SIZE} policies: {ratio:.1}x faster");
}

/// Builds one size and checks, before timing anything, that both engines agree on a sample.
fn build(n: usize) -> Fixture {
    let t = Instant::now();
    let f =
        Fixture::build(n, REQUESTS, SEED).unwrap_or_else(|e| panic!("building {n} policies: {e}"));
    let authorizer = Authorizer::new();
    for i in 0..250.min(f.requests.len()) {
        let s = f.stepgate_verdict(i);
        let c = f
            .cedar_verdict(&authorizer, i)
            .unwrap_or_else(|e| panic!("{n} policies, request {i}: cedar error: {e}"));
        assert_eq!(s, c, "{n} policies, request {i}: the engines disagree");
    }
    let mix = f.outcome_mix();
    let cands = f.requests.len() as f64;
    println!(
        "{n:>6} policies over {:>4} apps: built in {:.1?}; stepgate outcomes over {REQUESTS} requests: \
         {:.0}% allow, {:.0}% step-up, {:.0}% deny, {:.0}% default deny; same verdicts as cedar on 250",
        f.model.apps.len(),
        t.elapsed(),
        100.0 * mix.allow as f64 / cands,
        100.0 * mix.step_up as f64 / cands,
        100.0 * mix.deny as f64 / cands,
        100.0 * mix.default_deny as f64 / cands,
    );
    f
}

struct Latency {
    count: usize,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

/// The median cost of reading the clock twice with nothing between, in nanoseconds.
fn timer_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..100_000)
        .map(|_| {
            let t0 = Instant::now();
            let t1 = Instant::now();
            (t1 - t0).as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

/// Times `count` calls of `decide(i)` one by one (after one warm-up pass over the requests).
fn latency(count: usize, overhead: u64, mut decide: impl FnMut(usize)) -> Latency {
    for i in 0..REQUESTS {
        decide(i);
    }
    let mut ns: Vec<u64> = Vec::with_capacity(count);
    for i in 0..count {
        let t0 = Instant::now();
        decide(i);
        let t1 = Instant::now();
        ns.push(((t1 - t0).as_nanos() as u64).saturating_sub(overhead));
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64;
    Latency {
        count,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: ns[ns.len() - 1] as f64,
        mean: ns.iter().sum::<u64>() as f64 / ns.len() as f64,
    }
}

/// The median estimate criterion saved for `decide/<engine>/<n>` in this run (not a stale
/// one from an earlier run that a filter skipped now), in nanoseconds.
fn criterion_median_ns(engine: &str, n: usize, since: SystemTime) -> Option<f64> {
    let base = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion"))
        });
    let base = base.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion")
    });
    let path = base.join(format!("decide/{engine}/{n}/new/estimates.json"));
    if std::fs::metadata(&path).and_then(|m| m.modified()).ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn fmt_ns(ns: Option<f64>) -> String {
    match ns {
        Some(ns) if ns >= 1_000_000.0 => format!("{:.2} ms", ns / 1_000_000.0),
        Some(ns) if ns >= 1_000.0 => format!("{:.2} µs", ns / 1_000.0),
        Some(ns) => format!("{ns:.0} ns"),
        None => "n/a".into(),
    }
}

fn fmt_us(ns: f64) -> String {
    format!("{:.3} µs", ns / 1_000.0)
}
