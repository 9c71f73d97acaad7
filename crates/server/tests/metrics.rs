//! Prometheus metrics over real HTTP: a scrape after a known set of requests shows exactly
//! those requests in the counters and histograms, and Debian's `promtool check metrics`
//! accepts the scrape.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use support::{client, redirects, sign_in, upstream, Browser, Server, JANE};

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
    routes:
      - { name: admin, path: "/admin/**", tags: [admin] }
sessions:
  cookie: { secure: false }
server:
  trusted_proxies: [127.0.0.1/32]
  metrics_listen: 127.0.0.1:0
default_outcome: allow
policies:
  - name: admin-needs-aal3
    priority: 10
    targets: { apps: [console], routes: [ { tags: [admin] } ] }
    outcome: { step_up: { min_aal: 3 } }
  - name: no-forbidden
    priority: 20
    targets: { apps: [console], routes: [ { path: "/forbidden" } ] }
    outcome: { deny: { message: "not here" } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// A scrape: the text, and each sample by name and sorted labels.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// The sample `name{labels}` (labels as `k="v"` pairs in any order), 0 when absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        l.sort();
        let key = if l.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", l.join(","))
        };
        self.samples.get(&key).copied().unwrap_or(0.0)
    }
}

async fn scrape(s: &Server) -> Scrape {
    if let Some(log) = s.st.access.decision_log() {
        log.flush().await;
    }
    let addr = s.st.metrics.addr().expect("the metrics listener is up");
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            Some((name, rest)) => {
                let mut l: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                l.sort();
                format!("{name}{{{}}}", l.join(","))
            }
            None => series.to_string(),
        };
        samples.insert(key, value.parse().unwrap());
    }
    Scrape { text, samples }
}

#[tokio::test]
async fn a_scrape_counts_exactly_the_requests_made_and_promtool_accepts_it() {
    let s = Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream").await)
        .demo_users()
        .start()
        .await;
    let b = Browser::new();
    let app = |p: &str| s.url("app.test", p);
    let r = sign_in(&b, &app("/"), &JANE, &JANE.code(0)).await;
    assert_eq!(r.status(), 200);
    let cookie = format!("stepgate_session={}", b.session_id(&app("/")).unwrap());
    let c = client().redirect(redirects(false)).build().unwrap();

    let before = scrape(&s).await;
    // The known set: 3 allowed, 1 step-up, 1 deny (proxy), 2 anonymous, 1 deny (forward-auth).
    for _ in 0..3 {
        let r = c
            .get(app("/reports"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(app("/admin/x"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c
        .get(app("/forbidden"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for _ in 0..2 {
        let r = c.get(app("/")).send().await.unwrap();
        assert_eq!(r.status(), 303);
    }
    let r = c
        .get(s.at("/_stepgate/auth/forward"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", format!("app.test:{}", s.addr.port()))
        .header("x-forwarded-uri", "/forbidden")
        .header("accept", "application/json")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let after = scrape(&s).await;

    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    let console = |o: &'static str| [("app", "console"), ("outcome", o)];
    assert_eq!(delta("stepgate_requests_total", &console("allow")), 3.0);
    assert_eq!(delta("stepgate_requests_total", &console("step_up")), 1.0);
    assert_eq!(delta("stepgate_requests_total", &console("deny")), 2.0);
    assert_eq!(delta("stepgate_requests_total", &console("sign_in")), 2.0);
    assert_eq!(
        delta("stepgate_request_duration_seconds_count", &console("allow")),
        3.0
    );
    let access = |o: &'static str| [("kind", "access"), ("outcome", o)];
    assert_eq!(delta("stepgate_decisions_total", &access("allow")), 3.0);
    assert_eq!(delta("stepgate_decisions_total", &access("deny")), 2.0);
    assert_eq!(delta("stepgate_decisions_total", &access("step_up")), 1.0);
    assert_eq!(
        delta("stepgate_decision_duration_seconds_count", &access("deny")),
        2.0
    );
    assert_eq!(
        delta(
            "stepgate_policy_outcomes_total",
            &[("policy", "no-forbidden"), ("outcome", "deny")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "stepgate_policy_outcomes_total",
            &[("policy", "admin-needs-aal3"), ("outcome", "step_up")]
        ),
        1.0
    );
    // The sign-in was a decision too, before the known set.
    assert!(
        before.get(
            "stepgate_decisions_total",
            &[("kind", "sign_in"), ("outcome", "step_up")]
        ) >= 1.0
    );
    // Every decision reached the log: 8 more, each written or, for an allowed request,
    // left out by the default sampling (`log.decisions.allowed_one_in: 100`); nothing dropped.
    let written = delta("stepgate_decision_log_written_total", &[]);
    let sampled_out = delta("stepgate_decision_log_sampled_out_total", &[]);
    assert_eq!(written + sampled_out, 8.0, "{written} + {sampled_out}");
    assert!(
        sampled_out >= 1.0,
        "allowed requests are sampled by default"
    );
    assert_eq!(after.get("stepgate_decision_log_dropped_total", &[]), 0.0);
    assert_eq!(after.get("stepgate_decision_log_queue_depth", &[]), 0.0);
    assert_eq!(
        after.get(
            "stepgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // promtool (Debian's prometheus package) accepts the scrape.
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("STEPGATE_REQUIRE_PROMTOOL").is_some();
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !required => {
            eprintln!("SKIPPED: promtool is not installed ({e})");
            return;
        }
        Err(e) => panic!("promtool is required (CI / STEPGATE_REQUIRE_PROMTOOL) but: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(after.text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape:\n{}{}\n---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        after.text
    );
}
