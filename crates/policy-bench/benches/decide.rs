//! Policy decisions: stepgate's `PolicySet::decide` against `cedar-policy`'s
//! `Authorizer::is_authorized` on an equivalent policy set, in the same run, with Cedar
//! given the whole set (unsliced) and the request's app's slice of it (sliced).
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
//! requests spread across the apps, renders them as stepgate YAML and as Cedar, and checks
//! on every one of the 1,000 requests, at every size, that stepgate, unsliced Cedar and
//! sliced Cedar give the same verdict, deciding policy and step-up requirement. Then:
//!
//! 1. criterion groups `decide/stepgate/N`, `decide/cedar-sliced/N` and
//!    `decide/cedar-unsliced/N`, each iteration deciding the next of the 1,000 pre-built
//!    requests (the request objects, Cedar's entity store and every policy set are built
//!    before any timing; the sliced arm looks the request's app's set up inside the
//!    iteration, as a deployment would);
//! 2. a per-decision latency pass at every size: each decision timed on its own with
//!    `Instant::now()`, minus the median cost of an empty `now()`/`now()` pair (the timer
//!    overhead, measured first and printed). The three engines are measured in five
//!    interleaved rounds, so that a burst of load from another process on a shared
//!    machine lands on all of them rather than on one. Timing single decisions rather than
//!    batches keeps the tail honest (a batch of 8 hides a slow decision among fast ones);
//! 3. a table per size of the criterion medians, one of p50 / p99 per decision for the
//!    three engines with both ratios (Cedar's p50 over stepgate's), the targets (at 1,000
//!    policies: p50 < 1 µs, p99 < 5 µs, at least 10× the sliced Cedar; at 10,000: p99 <
//!    1 µs), and last the line
//!    `stepgate vs cedar (sliced) at 1000 policies: N.Nx; unsliced: M.Mx`.
//!
//! # What the ratios measure
//!
//! Both engines decide the same thing (the crate docs list every difference in what they
//! are handed), but two differences in how much *work* they do dominate the timings, and
//! both favour stepgate:
//!
//! * **stepgate's per-app candidate index.** stepgate evaluates only the policies that can
//!   apply to the request's app (about ten, plus the global ones, at every size); the
//!   unsliced Cedar set evaluates all `n`. That is why the unsliced ratio grows about
//!   tenfold per size: it measures the index more than either engine. The sliced arm gives
//!   Cedar the same index (one `PolicySet` per app plus the global policies, picked by the
//!   request's app inside the timed region): the like-for-like figure is the sliced one.
//! * **First match.** stepgate stops at the first matching policy by priority; Cedar
//!   evaluates every policy it is given, sliced or not (its combining rule needs every
//!   `forbid` checked). This one belongs to the languages and stays in the comparison.
//!
//! The other differences are small next to these and go both ways: Cedar is handed each
//! time zone's local hour and weekday and the matched route's tags precomputed (stepgate
//! converts the time and matches the route inside `decide`); stepgate reads the user from
//! the request context, Cedar from an entity store; Cedar's `like` stands in for the
//! generated `.*@domain` regexes.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use cedar_policy::Authorizer;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use stepgate_policy_bench::{CedarSet, Fixture};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const REQUESTS: usize = 1_000;
const SEED: u64 = 2026;
/// The size DESIGN.md §6's targets are stated at.
const TARGET_SIZE: usize = 1_000;
/// The size the tail target (p99 < 1 µs) is stated at.
const LARGE_SIZE: usize = 10_000;
/// Interleaved rounds of the latency pass.
const ROUNDS: usize = 5;

/// The three arms, in the order they are measured and printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    Stepgate,
    CedarSliced,
    CedarUnsliced,
}

impl Engine {
    const ALL: [Engine; 3] = [Engine::Stepgate, Engine::CedarSliced, Engine::CedarUnsliced];

    fn id(self) -> &'static str {
        match self {
            Engine::Stepgate => "stepgate",
            Engine::CedarSliced => "cedar-sliced",
            Engine::CedarUnsliced => "cedar-unsliced",
        }
    }
}

struct Settings {
    quick: bool,
    warm_up: Duration,
    measurement: Duration,
    samples: usize,
    /// Time each engine gets in the latency pass, per size.
    latency_budget: Duration,
    /// Decisions timed per engine and size, at least and at most.
    latency_min: usize,
    latency_max: usize,
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
                latency_budget: Duration::from_millis(300),
                latency_min: 500,
                latency_max: 50_000,
            }
        } else {
            Settings {
                quick,
                warm_up: Duration::from_secs(1),
                measurement: Duration::from_secs(4),
                samples: 50,
                latency_budget: Duration::from_secs(3),
                latency_min: 2_000,
                latency_max: 1_000_000,
            }
        }
    }
}

/// One decision by `engine` on request `i` of `f`, returning something to `black_box`.
#[inline(always)]
fn decide(engine: Engine, f: &Fixture, authorizer: &Authorizer, i: usize) {
    let r = &f.requests[i % REQUESTS];
    match engine {
        Engine::Stepgate => {
            black_box(f.policy_set.decide(black_box(&r.context)).policy);
        }
        Engine::CedarSliced => {
            // The slice is chosen here, inside the timed region, by the request's app.
            let set = &f.cedar_sliced[black_box(r.app_id.as_str())];
            black_box(authorizer.is_authorized(black_box(&r.cedar), set, &f.cedar_entities));
        }
        Engine::CedarUnsliced => {
            black_box(authorizer.is_authorized(
                black_box(&r.cedar),
                &f.cedar_policies,
                &f.cedar_entities,
            ));
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
    for engine in Engine::ALL {
        for f in &fixtures {
            let n = f.policy_set.len();
            if engine == Engine::CedarUnsliced && n >= 10_000 {
                // Each decision takes milliseconds: fewer, flat samples.
                group.sampling_mode(SamplingMode::Flat).sample_size(10);
            } else {
                group
                    .sampling_mode(SamplingMode::Auto)
                    .sample_size(settings.samples);
            }
            group.bench_with_input(BenchmarkId::new(engine.id(), n), f, |b, f| {
                let mut i = 0;
                b.iter(|| {
                    decide(engine, f, &authorizer, i);
                    i += 1;
                });
            });
        }
    }
    group.finish();
    c.final_summary();

    println!();
    println!("criterion medians per decision (cycling through {REQUESTS} requests):");
    println!(
        "  {:>8}  {:>12}  {:>14}  {:>16}  {:>14}  {:>16}",
        "policies", "stepgate", "cedar sliced", "cedar unsliced", "sliced/sg", "unsliced/sg"
    );
    for n in SIZES {
        let m: Vec<Option<f64>> = Engine::ALL
            .iter()
            .map(|e| criterion_median_ns(e.id(), n, started))
            .collect();
        let ratio = |c: Option<f64>| match (m[0], c) {
            (Some(s), Some(c)) => format!("{:.1}x", c / s),
            _ => "n/a".into(),
        };
        println!(
            "  {n:>8}  {:>12}  {:>14}  {:>16}  {:>14}  {:>16}",
            fmt_ns(m[0]),
            fmt_ns(m[1]),
            fmt_ns(m[2]),
            ratio(m[1]),
            ratio(m[2])
        );
    }

    let overhead = timer_overhead_ns();
    let mut rows = Vec::new();
    for f in &fixtures {
        rows.push((
            f.policy_set.len(),
            latency_row(f, &authorizer, &settings, overhead),
        ));
    }
    println!();
    println!(
        "per-decision latency (each decision timed alone, timer overhead {overhead} ns subtracted, \
         {ROUNDS} interleaved rounds){}:",
        if settings.quick { ", QUICK mode" } else { "" }
    );
    println!(
        "  {:>8}  {:>24}  {:>24}  {:>24}  {:>10}  {:>12}",
        "policies",
        "stepgate p50 / p99",
        "cedar-sliced p50 / p99",
        "cedar-unsliced p50 / p99",
        "sliced/sg",
        "unsliced/sg"
    );
    for (n, row) in &rows {
        let cell = |l: &Latency| format!("{} / {}", fmt_us(l.p50), fmt_us(l.p99));
        println!(
            "  {n:>8}  {:>24}  {:>24}  {:>24}  {:>9.1}x  {:>11.1}x",
            cell(&row[0]),
            cell(&row[1]),
            cell(&row[2]),
            row[1].p50 / row[0].p50,
            row[2].p50 / row[0].p50,
        );
    }
    println!("  (decisions timed per engine and size:");
    for (n, row) in &rows {
        println!(
            "    {n:>6}: {}; p99.9 / max stepgate {} / {})",
            row.iter()
                .zip(Engine::ALL)
                .map(|(l, e)| format!("{} {}", e.id(), l.count))
                .collect::<Vec<_>>()
                .join(", "),
            fmt_us(row[0].p999),
            fmt_us(row[0].max),
        );
    }

    let at = |size: usize| {
        &rows
            .iter()
            .find(|(n, _)| *n == size)
            .expect("every size is measured")
            .1
    };
    let target = at(TARGET_SIZE);
    let large = at(LARGE_SIZE);
    let sliced = target[1].p50 / target[0].p50;
    let unsliced = target[2].p50 / target[0].p50;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    println!(
        "targets at {TARGET_SIZE} policies: p50 < 1 µs {} ({}), p99 < 5 µs {} ({}), ≥ 10× cedar (sliced) {} ({sliced:.1}x)",
        verdict(target[0].p50 < 1_000.0),
        fmt_us(target[0].p50),
        verdict(target[0].p99 < 5_000.0),
        fmt_us(target[0].p99),
        verdict(sliced >= 10.0),
    );
    println!(
        "target at {LARGE_SIZE} policies: p99 < 1 µs {} ({})",
        verdict(large[0].p99 < 1_000.0),
        fmt_us(large[0].p99),
    );
    println!(
        "stepgate vs cedar (sliced) at {TARGET_SIZE} policies: {sliced:.1}x; unsliced: {unsliced:.1}x"
    );
}

/// Builds one size and checks, before timing anything, that the three arms agree on every
/// request: verdict, deciding policy and step-up requirement.
fn build(n: usize) -> Fixture {
    let t = Instant::now();
    let f =
        Fixture::build(n, REQUESTS, SEED).unwrap_or_else(|e| panic!("building {n} policies: {e}"));
    let authorizer = Authorizer::new();
    for i in 0..f.requests.len() {
        let s = f.stepgate_verdict(i);
        for which in [CedarSet::Sliced, CedarSet::Unsliced] {
            let c = f
                .cedar_verdict_from(&authorizer, i, which)
                .unwrap_or_else(|e| {
                    panic!("{n} policies, request {i}: cedar ({which:?}) error: {e}")
                });
            assert_eq!(
                s, c,
                "{n} policies, request {i}: stepgate and cedar ({which:?}) disagree"
            );
        }
    }
    let mix = f.outcome_mix();
    let cands = f.requests.len() as f64;
    let slice = f.cedar_slice(0).policies().count();
    println!(
        "{n:>6} policies over {:>4} apps (a slice holds ~{slice}): built in {:.1?}; stepgate outcomes over \
         {REQUESTS} requests: {:.0}% allow, {:.0}% step-up, {:.0}% deny, {:.0}% default deny; \
         same verdicts, policies and requirements as both cedar arms on all {REQUESTS}",
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

/// Per-decision latencies of the three engines on one fixture: a warm-up pass over the
/// requests (which also sizes each engine's sample to the time budget), then `ROUNDS`
/// interleaved rounds timing single decisions.
fn latency_row(
    f: &Fixture,
    authorizer: &Authorizer,
    settings: &Settings,
    overhead: u64,
) -> Vec<Latency> {
    let counts: Vec<usize> = Engine::ALL
        .iter()
        .map(|&e| {
            let t = Instant::now();
            for i in 0..REQUESTS {
                decide(e, f, authorizer, i);
            }
            let mean = t.elapsed().as_nanos() as f64 / REQUESTS as f64;
            let fit = (settings.latency_budget.as_nanos() as f64 / mean.max(1.0)) as usize;
            fit.clamp(settings.latency_min, settings.latency_max)
        })
        .collect();
    let mut samples: Vec<Vec<u64>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    let mut next = [0usize; 3];
    for round in 0..ROUNDS {
        for (k, &e) in Engine::ALL.iter().enumerate() {
            let share = counts[k] / ROUNDS + usize::from(round < counts[k] % ROUNDS);
            for _ in 0..share {
                let i = next[k];
                next[k] += 1;
                let t0 = Instant::now();
                decide(e, f, authorizer, i);
                let t1 = Instant::now();
                samples[k].push(((t1 - t0).as_nanos() as u64).saturating_sub(overhead));
            }
        }
    }
    samples
        .into_iter()
        .map(|mut ns| {
            ns.sort_unstable();
            let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64;
            Latency {
                count: ns.len(),
                p50: at(0.50),
                p99: at(0.99),
                p999: at(0.999),
                max: ns[ns.len() - 1] as f64,
            }
        })
        .collect()
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
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.3} µs", ns / 1_000.0)
    }
}
