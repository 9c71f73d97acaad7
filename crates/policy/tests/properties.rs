//! Property tests over the operators and the two evaluation paths.

use proptest::prelude::*;
use serde::Deserialize;
use stepgate_policy::spec::{AppSpec, NetworksSpec, PolicySpec};
use stepgate_policy::*;

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    apps: Vec<AppSpec>,
    #[serde(default)]
    networks: NetworksSpec,
    #[serde(default)]
    policies: Vec<PolicySpec>,
    // Other sections of the file (sessions, server, factors, …) are not the engine's.
}

fn compile_yaml(yaml: &str) -> PolicySet {
    let doc: Doc = marked_yaml::from_yaml(0, yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    compile(PolicyInput {
        apps: &doc.apps,
        networks: &doc.networks,
        policies: &doc.policies,
        default_outcome: None,
        // The admin app the configuration loader adds by default (`admin.app`), which the
        // demo's policies target.
        own_apps: &[OwnApp {
            id: "stepgate-admin",
            key: "admin.app",
            sensitivity: spec::Sensitivity::High,
        }],
    })
    .unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
}

/// Whether a single condition (YAML flow text) holds for `ctx`.
fn holds(condition: &str, ctx: &RequestContext) -> bool {
    let set = compile_yaml(&format!(
        "policies:\n  - {{ name: p, priority: 1, conditions: [ {condition} ], outcome: allow }}\n"
    ));
    let d = set.decide(ctx);
    let e = set.explain(ctx);
    assert_eq!(
        d.kind(),
        e.outcome,
        "fast and explained paths disagree on {condition}"
    );
    d.kind() == OutcomeKind::Allow
}

fn yaml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "finance", "fin", "ance", "sales", "Finance", "", "eng",
    ])
    .prop_map(str::to_string)
}

fn ctx_with_attr(v: &Option<Vec<String>>) -> RequestContext {
    let mut user = UserContext {
        username: "u".into(),
        ..UserContext::default()
    };
    if let Some(vs) = v {
        let val = if vs.len() == 1 {
            AttributeValue::One(vs[0].clone())
        } else {
            AttributeValue::Many(vs.clone())
        };
        user.attributes.insert("dept".into(), val);
    }
    RequestContext {
        user: Some(user.into()),
        ..RequestContext::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    // not_equals / not_contains / not_in are the exact negations of their twins, for
    // present, missing and multi-valued attributes alike.
    #[test]
    fn negative_string_operators_negate(
        operand in word(),
        list in prop::collection::vec(word(), 1..3),
        attr in prop::option::of(prop::collection::vec(word(), 1..3)),
    ) {
        let ctx = ctx_with_attr(&attr);
        for (pos, neg) in [("equals", "not_equals"), ("contains", "not_contains")] {
            let p = holds(&format!("{{ user_attribute: {{ attribute: dept, op: {pos}, value: {} }} }}", yaml_str(&operand)), &ctx);
            let n = holds(&format!("{{ user_attribute: {{ attribute: dept, op: {neg}, value: {} }} }}", yaml_str(&operand)), &ctx);
            prop_assert_eq!(p, !n, "{} vs {} on {:?}", pos, neg, attr);
        }
        let items: Vec<String> = list.iter().map(|s| yaml_str(s)).collect();
        let p = holds(&format!("{{ user_attribute: {{ attribute: dept, op: in, values: [{}] }} }}", items.join(", ")), &ctx);
        let n = holds(&format!("{{ user_attribute: {{ attribute: dept, op: not_in, values: [{}] }} }}", items.join(", ")), &ctx);
        prop_assert_eq!(p, !n);
    }

    // `not:` negates every kind of condition.
    #[test]
    fn not_negates_any_condition(
        risk in prop::option::of(0u8..=100),
        state in prop::sample::select(DeviceState::ALL.to_vec()),
        compliant in prop::option::of(any::<bool>()),
        os in prop::sample::select(vec!["9.3", "14.2.1", "15", "15.0.1", "16"]),
        hour in 0u32..24,
        ip in prop::sample::select(vec!["10.1.2.3", "192.0.2.1", "2001:db8::1", "8.8.8.8"]),
        velocity in prop::option::of(0.0f64..50.0),
    ) {
        let ctx = RequestContext {
            time: chrono::DateTime::parse_from_rfc3339(&format!("2026-11-25T{hour:02}:30:00Z")).unwrap().into(),
            network: NetworkContext { ip: Some(ip.parse().unwrap()), ip_risk_score: risk, country: Some("FR".into()), ..Default::default() },
            device: Some(DeviceContext {
                state,
                compliant,
                posture: [("os_version".to_string(), PostureValue::from(os))].into(),
                ..Default::default()
            }),
            risk: RiskContext { velocity_kmpm: velocity, ..Default::default() },
            ..RequestContext::default()
        };
        for cond in [
            "{ ip_risk: { min: 40, max: 80 } }",
            "{ device_state: { at_least: managed } }",
            "{ device_compliance: { compliant: true } }",
            "{ device_posture: { attribute: os_version, op: lt, value: \"15.0\" } }",
            "{ time: { timezone: Europe/Paris, hours: { from: 8, to: 18 }, weekdays: [mon, tue, wed] } }",
            "{ network: { in: [10.0.0.0/8, \"2001:db8::/32\"] } }",
            "{ location: { countries: [fr] } }",
            "{ velocity: { above_kmpm: 15 } }",
        ] {
            let p = holds(cond, &ctx);
            let n = holds(&format!("{{ not: {cond} }}"), &ctx);
            prop_assert_eq!(p, !n, "{}", cond);
        }
    }

    // `all` holds iff every member holds; `any` iff at least one does.
    #[test]
    fn all_and_any_combine(member in prop::collection::vec(any::<bool>(), 1..6)) {
        let groups: Vec<String> = member.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| format!("g{i}")).collect();
        let ctx = RequestContext {
            user: Some(UserContext { username: "u".into(), groups, ..Default::default() }.into()),
            ..RequestContext::default()
        };
        let leaves: Vec<String> = (0..member.len()).map(|i| format!("{{ groups: {{ any: [g{i}] }} }}")).collect();
        prop_assert_eq!(holds(&format!("{{ all: [{}] }}", leaves.join(", ")), &ctx), member.iter().all(|m| *m));
        prop_assert_eq!(holds(&format!("{{ any: [{}] }}", leaves.join(", ")), &ctx), member.iter().any(|m| *m));
        let names: Vec<String> = (0..member.len()).map(|i| format!("g{i}")).collect();
        prop_assert_eq!(holds(&format!("{{ groups: {{ all: [{}] }} }}", names.join(", ")), &ctx), member.iter().all(|m| *m));
    }
}

const DEMO: &str = include_str!("../../../examples/demo.yaml");

fn arb_context() -> impl Strategy<Value = RequestContext> {
    let app = prop::sample::select(vec![
        Some("licence-console"),
        Some("wiki"),
        Some("aws-console"),
        Some("unknown"),
        None,
    ]);
    let route = prop::sample::select(vec![
        ("GET", "/licences"),
        ("POST", "/licences"),
        ("POST", "/licences/9/renew"),
        ("POST", "/licences/9/revoke"),
        ("GET", "/admin/users"),
        ("DELETE", "/x"),
    ]);
    let ip = prop::sample::select(vec![
        "10.0.0.5",
        "192.0.2.9",
        "198.51.100.3",
        "203.0.113.9",
        "2001:db8:c0::1",
        "2001:db8:ff::1",
    ]);
    let groups = prop::sample::subsequence(vec!["staff", "licence-admins", "cloud-admins"], 0..3);
    (
        (any::<bool>(), app, route, ip, groups),
        (
            prop::sample::select(DeviceState::ALL.to_vec()),
            prop::option::of(any::<bool>()),
            any::<bool>(),
        ),
        (
            prop::option::of(0u8..=100),
            prop::option::of(0.0f64..40.0),
            0i64..(14 * 24),
            prop::option::of(prop::sample::select(vec!["KP", "FR"])),
        ),
    )
        .prop_map(
            |(
                (sign_in, app, (method, path), ip, groups),
                (state, compliant, contractor),
                (risk, velocity, hours, country),
            )| {
                let mut user = UserContext {
                    username: "u".into(),
                    groups: groups.into_iter().map(str::to_string).collect(),
                    ..Default::default()
                };
                if contractor {
                    user.attributes.insert(
                        "employment_type".into(),
                        AttributeValue::One("contractor".into()),
                    );
                }
                RequestContext {
                    kind: if sign_in {
                        RequestKind::SignIn
                    } else {
                        RequestKind::Access
                    },
                    time: chrono::DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")
                        .unwrap()
                        .to_utc()
                        + chrono::Duration::hours(hours),
                    user: Some(user.into()),
                    request: RequestInfo {
                        app: app.map(str::to_string),
                        method: method.into(),
                        path: path.into(),
                    },
                    network: NetworkContext {
                        ip: Some(ip.parse().unwrap()),
                        ip_risk_score: risk,
                        country: country.map(str::to_string),
                        ..Default::default()
                    },
                    device: Some(DeviceContext {
                        state,
                        compliant,
                        ..Default::default()
                    }),
                    risk: RiskContext {
                        velocity_kmpm: velocity,
                        ..Default::default()
                    },
                    ..RequestContext::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // The indexed fast path and the exhaustive explained path always agree.
    #[test]
    fn decide_agrees_with_explain_on_the_demo_policies(ctx in arb_context()) {
        let set = demo();
        let fast = set.decide(&ctx);
        let slow = set.explain(&ctx);
        prop_assert_eq!(fast.kind(), slow.outcome);
        prop_assert_eq!(fast.policy, slow.policy.as_deref());
        prop_assert_eq!(fast.report_only, slow.report_only.as_deref());
        // The report-only pass lists exactly the report-only policies the trace shows as
        // matched ahead of the decision, in the same order.
        let listed: Vec<&str> = set.report_only(&ctx, &fast).map(|m| m.policy).collect();
        let traced: Vec<&str> = slow.trace.iter()
            .filter(|t| t.mode == "report_only" && t.matched == Some(true))
            .map(|t| t.policy.as_str()).collect();
        prop_assert_eq!(listed, traced);
        // The trace ends at the deciding policy, which is the only one marked decided.
        prop_assert_eq!(slow.trace.iter().filter(|t| t.decided).count(), usize::from(slow.policy.is_some()));
    }
}

fn demo() -> &'static PolicySet {
    static SET: std::sync::OnceLock<PolicySet> = std::sync::OnceLock::new();
    SET.get_or_init(|| compile_yaml(DEMO))
}

#[test]
fn default_outcome_is_deny() {
    let set = compile_yaml("policies: []\n");
    let d = set.decide(&RequestContext::default());
    assert_eq!(d.kind(), OutcomeKind::Deny);
    assert_eq!(d.policy, None);
}

#[test]
fn disabled_and_report_only_policies_never_decide() {
    let set = compile_yaml(
        "policies:
  - { name: off, priority: 1, enabled: false, outcome: allow }
  - { name: trial, priority: 2, report_only: true, outcome: allow }
  - { name: real, priority: 3, outcome: { step_up: { min_aal: 2 } } }
",
    );
    let d = set.decide(&RequestContext::default());
    assert_eq!(d.policy, Some("real"));
    assert_eq!(d.report_only, Some("trial"));
    let e = set.explain(&RequestContext::default());
    assert_eq!(e.trace.len(), 3);
    assert_eq!(e.trace[0].mode, "disabled");
    assert_eq!(e.trace[0].matched, None);
}

#[test]
fn report_only_pass_lists_every_match_ahead_of_the_decision_with_its_outcome() {
    let set = compile_yaml(
        "policies:
  - { name: trial-deny, priority: 1, report_only: true, outcome: { deny: { message: no } } }
  - { name: trial-other, priority: 2, report_only: true, conditions: [ { groups: { any: [x] } } ], outcome: allow }
  - { name: trial-mfa, priority: 3, report_only: true, outcome: { step_up: { min_aal: 2 } } }
  - { name: real, priority: 4, outcome: allow }
  - { name: trial-after, priority: 5, report_only: true, outcome: { deny: { message: late } } }
",
    );
    let ctx = RequestContext::default();
    let d = set.decide(&ctx);
    assert_eq!(d.policy, Some("real"));
    let seen: Vec<(&str, OutcomeKind)> = set
        .report_only(&ctx, &d)
        .map(|m| (m.policy, m.outcome.kind()))
        .collect();
    // trial-other's condition fails; trial-after ranks after the decision.
    assert_eq!(
        seen,
        vec![
            ("trial-deny", OutcomeKind::Deny),
            ("trial-mfa", OutcomeKind::StepUp)
        ]
    );
    // No report-only policy matched: the pass yields nothing.
    let plain = compile_yaml("policies:\n  - { name: real, priority: 1, outcome: allow }\n");
    let d = plain.decide(&ctx);
    assert_eq!(plain.report_only(&ctx, &d).count(), 0);
}

#[test]
fn lowest_priority_number_wins_whatever_the_file_order() {
    let set = compile_yaml(
        "policies:
  - { name: later, priority: 20, outcome: allow }
  - { name: first, priority: 5, outcome: deny }
",
    );
    assert_eq!(set.decide(&RequestContext::default()).policy, Some("first"));
}

#[test]
fn trace_records_seen_values() {
    let set = compile_yaml(
        "networks:\n  corporate: [10.0.0.0/8]\npolicies:\n  - { name: office, priority: 1, conditions: [ { network: { in: [corporate] } }, { device_state: { at_least: managed } } ], outcome: allow }\n",
    );
    let ctx: RequestContext = serde_json::from_str(
        r#"{"network": {"ip": "10.9.8.7"}, "device": {"state": "registered"}}"#,
    )
    .unwrap();
    let e = set.explain(&ctx);
    assert_eq!(e.outcome, OutcomeKind::Deny);
    let conds = &e.trace[0].conditions;
    let net = conds
        .iter()
        .find(|c| c.condition.starts_with("network"))
        .unwrap();
    assert!(
        net.held && net.seen.contains("10.9.8.7") && net.seen.contains("corporate"),
        "{net:?}"
    );
    let dev = conds
        .iter()
        .find(|c| c.condition.starts_with("device state"))
        .unwrap();
    assert!(!dev.held && dev.seen == "registered", "{dev:?}");
}

#[test]
fn a_case_insensitive_app_matches_paths_in_any_case_and_only_it() {
    let set = compile_yaml(
        "apps:
  - { id: iis, case_insensitive_paths: true, routes: [ { path: /admin/**, tags: [admin] } ] }
  - { id: unix, routes: [ { path: /admin/**, tags: [admin] } ] }
policies:
  - { name: admin, priority: 1, targets: { routes: [ { tags: [admin] } ] }, outcome: deny }
  - { name: reports, priority: 2, targets: { routes: [ { path: /Reports/** } ] }, outcome: deny }
  - { name: export, priority: 3, conditions: [ { request: { path: /export/* } } ], outcome: deny }
  - { name: rest, priority: 9, outcome: allow }
",
    );
    let decide = |app: &str, path: &str| {
        let ctx: RequestContext = serde_json::from_str(&format!(
            r#"{{"request": {{"app": "{app}", "method": "GET", "path": "{path}"}}}}"#
        ))
        .unwrap();
        let d = set.decide(&ctx);
        assert_eq!(d.kind(), set.explain(&ctx).outcome, "{app} {path}");
        d.policy.unwrap_or("default").to_string()
    };
    // What an IIS upstream serves as /admin is /admin to the policy, whatever the case.
    for path in ["/admin/users", "/ADMIN/users", "/Admin"] {
        assert_eq!(decide("iis", path), "admin", "{path}");
    }
    assert_eq!(decide("iis", "/reports/q3"), "reports");
    assert_eq!(decide("iis", "/EXPORT/all"), "export");
    assert_eq!(decide("iis", "/administrator"), "rest");
    // A case-sensitive upstream serves /ADMIN as another resource: no admin route.
    assert_eq!(decide("unix", "/admin/users"), "admin");
    assert_eq!(decide("unix", "/ADMIN/users"), "rest");
    assert_eq!(decide("unix", "/reports/q3"), "rest");
    assert_eq!(decide("unix", "/Reports/q3"), "reports");
    assert_eq!(decide("unix", "/EXPORT/all"), "rest");
}

/// `reads()` names a signal exactly when some condition, however deeply nested (and in a
/// disabled or report-only policy too), reads it: the gateway leaves out what it does not
/// name, so a condition it missed would be judged on an empty signal.
#[test]
fn the_set_says_which_signals_its_conditions_read() {
    use stepgate_policy::SignalsRead;
    let reads = |conditions: &str, extra: &str| {
        compile_yaml(&format!(
            "policies:\n  - {{ name: p, priority: 1, {extra} conditions: [ {conditions} ], outcome: allow }}\n"
        ))
        .reads()
    };
    let ua = "{ user_agent: { field: browser, op: equals, value: Chrome } }";
    let neither = SignalsRead::default();
    let risk_only = SignalsRead {
        risk: true,
        user_agent: false,
    };
    let ua_only = SignalsRead {
        risk: false,
        user_agent: true,
    };
    assert_eq!(reads("{ ip_risk: { min: 40, max: 80 } }", ""), neither);
    assert_eq!(reads("{ groups: { any: [a] } }", ""), neither);
    assert_eq!(reads("{ risk: { at_least: medium } }", ""), risk_only);
    assert_eq!(reads("{ velocity: { above_kmpm: 15 } }", ""), risk_only);
    assert_eq!(reads(ua, ""), ua_only);
    assert_eq!(
        reads(
            &format!(
                "{{ any: [ {{ not: {{ all: [ {ua}, {{ risk: {{ levels: [high] }} }} ] }} }} ] }}"
            ),
            ""
        ),
        SignalsRead {
            risk: true,
            user_agent: true
        }
    );
    assert_eq!(
        reads("{ risk: { at_least: high } }", "enabled: false,"),
        risk_only
    );
    assert_eq!(reads(ua, "report_only: true,"), ua_only);
}
