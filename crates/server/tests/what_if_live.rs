//! `stepgate what-if` judges exactly as the live gateway does. For random requests and
//! contexts — who (four users with different groups and attributes), what for (every demo
//! app, its routes, other paths, any method, sign-in), from where (corporate, VPN, public
//! and unknown addresses, countries, IP risk, travel since a random history of sign-ins),
//! from what (device states, compliance, posture, user agents, certificates) and when — the
//! live pipeline of a running server (its sessions, users and caches real, its signal
//! sources replaced by ones that return the generated facts) and `what-if` on the same
//! context written out as a context file give the same outcome, deciding policy,
//! step-up requirement and remediation.
//!
//! The configuration is the demo's (examples/demo.yaml) plus policies on the behavioural
//! risk, on region and city names and places, and on travel speed in each form, so every
//! kind of condition it uses is drawn on.

mod support;

use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};

use axum::http::{HeaderMap, HeaderValue, Method};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use stepgate_policy::{
    CertificateContext, DeviceContext, DeviceState, FailingCheck, NetworkContext, Outcome,
    PostureValue, RequestContext, RequestInfo, RequestKind, RiskContext, UserAgentContext,
};
use stepgate_server::access::context::Facts;
use stepgate_server::access::signals::SignalError;
use stepgate_server::access::what_if::{what_if, StatedFacts};
use stepgate_server::access::{
    AccessRequest, Connection, Credentials, SignalSource, Subject, Verdict, Who,
};
use stepgate_server::app::SignalSourceFactory;
use stepgate_server::session::cookies::decision_cookies;
use stepgate_server::{Runtime, Shared};
use stepgate_signals::geoip::GeoInfo;
use stepgate_signals::risk::{SignInEntry, SignInOutcome};
use stepgate_store::{AttributeValue, UserRecord};
use support::{signed_in_session, user, Server, State};

/// Policies on the behavioural risk, on location by name and place and on travel speed,
/// on top of the demo's.
const EXTRA_POLICIES: &str = r#"
  - name: high-risk-sign-in-denied
    priority: 12
    targets: { sign_in: true }
    conditions:
      - risk: { at_least: high }
    outcome: { deny: { message: This sign-in looks too risky. } }
  - name: new-country-steps-up
    priority: 13
    conditions:
      - risk: { reasons: [new_country, impossible_travel] }
    outcome: { step_up: { min_aal: 2, max_age: 10m } }
  - name: medium-risk-apps
    priority: 14
    conditions:
      - risk: { at_least: medium }
    outcome: { step_up: { min_aal: 2, phishing_resistant: true } }
  - name: york-sign-in-steps-up
    priority: 17
    targets: { sign_in: true }
    conditions:
      - location: { city_contains: [york], region_contains: [bavar] }
    outcome: { step_up: { min_aal: 2 } }
  - name: outside-ile-de-france-wiki-writes
    priority: 18
    targets: { apps: [wiki], routes: [{ methods: [POST, PUT, DELETE] }] }
    conditions:
      - location: { region_not_contains: [le-de], city_not_contains: [lyon] }
    outcome: { deny: { message: Wiki changes are made from Ile-de-France only. } }
  - name: places-aws
    priority: 19
    targets: { apps: [aws-console] }
    conditions:
      - location: { places: ["DE/BE/Berlin", "FR/ARA", "US/NY/Buffalo"] }
    outcome: { step_up: { min_aal: 3 } }
  - name: staying-put-wiki
    priority: 21
    targets: { apps: [wiki] }
    conditions:
      - velocity: { below_kmpm: 1 }
    outcome: allow
  - name: driving-speed-licences
    priority: 22
    targets: { apps: [licence-console] }
    conditions:
      - velocity: { between_kmpm: [1, 14] }
    outcome: { step_up: { min_aal: 2, max_age: 5m } }
"#;

/// The facts the live pipeline's signal source returns, by the session of the request
/// (cases run side by side, each with a session of its own).
#[derive(Default)]
struct Generated {
    facts: Mutex<std::collections::HashMap<String, Facts>>,
}

/// A signal source that returns the generated facts.
struct GeneratedSource(Arc<Generated>);

#[async_trait::async_trait]
impl SignalSource for GeneratedSource {
    async fn facts(
        &self,
        _: &Runtime,
        _: &AccessRequest<'_>,
        subject: &Subject,
    ) -> Result<Facts, SignalError> {
        let Who::Session(s) = &subject.who else {
            panic!("the live cases come with a session");
        };
        Ok(self.0.facts.lock().unwrap()[&s.id].clone())
    }
}

/// A running server's state and its users.
struct World {
    st: Shared,
    users: Vec<UserRecord>,
    generated: Arc<Generated>,
    _dir: tempfile::TempDir,
}

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

static WORLD: LazyLock<World> = LazyLock::new(|| RT.block_on(world()));

async fn world() -> World {
    let yaml = [include_str!("../../../examples/demo.yaml"), EXTRA_POLICIES].concat();
    let generated = Arc::new(Generated::default());
    let g = generated.clone();
    let factory: SignalSourceFactory = Box::new(move |_| Arc::new(GeneratedSource(g)));
    let State { st, dir, .. } = Server::build(&yaml)
        .signals(factory)
        .demo_users()
        .state()
        .await;
    let mut users = vec![user(&st, "jane").await, user(&st, "john").await];
    let mut carol = UserRecord::new("carol");
    carol.groups = vec!["licence-admins".into(), "staff".into()];
    carol.attributes.insert(
        "employment_type".into(),
        AttributeValue::One("contractor".into()),
    );
    carol.email = Some("carol@example.test".into());
    let mut dave = UserRecord::new("dave");
    dave.attributes.insert(
        "department".into(),
        AttributeValue::Many(vec!["ops".into(), "licensing".into()]),
    );
    for u in [carol, dave] {
        st.stores.durable.create_user(&u).await.unwrap();
        users.push(u);
    }
    World {
        st,
        users,
        generated,
        _dir: dir,
    }
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    user: usize,
    sign_in: bool,
    app: usize,
    method: &'static str,
    path: &'static str,
    ip: Option<IpAddr>,
    place: Option<Place>,
    ip_risk: Option<u8>,
    device: Option<DeviceContext>,
    user_agent: UserAgentContext,
    certificate: Option<CertificateContext>,
    time: DateTime<Utc>,
    history: Vec<SignInEntry>,
}

const APPS: [&str; 3] = ["licence-console", "wiki", "aws-console"];
const PATHS: [&str; 8] = [
    "/licences",
    "/licences/7/renew",
    "/licences/7/revoke",
    "/admin",
    "/admin/users/3",
    "/",
    "/reports",
    "/licences/7",
];
/// Country, region (as GeoIP names it, or unknown), city, latitude, longitude.
type Place = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    f64,
    f64,
);
const PLACES: [Place; 9] = [
    ("FR", Some("Île-de-France"), Some("Paris"), 48.85, 2.35),
    ("US", Some("New York"), Some("New York"), 40.71, -74.0),
    ("DE", Some("Berlin"), Some("Berlin"), 52.52, 13.40),
    ("KP", None, Some("Pyongyang"), 39.03, 125.75),
    (
        "FR",
        Some("Auvergne-Rhône-Alpes"),
        Some("Lyon"),
        45.76,
        4.83,
    ),
    ("US", Some("NY"), Some("Buffalo"), 42.89, -78.88),
    ("DE", Some("Bavaria"), None, 48.14, 11.58),
    ("GB", Some("England"), Some("York"), 53.96, -1.08),
    // A few kilometres from Paris: slow travel from there.
    ("FR", Some("Île-de-France"), Some("Versailles"), 48.80, 2.13),
];

fn ip() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        (0u8..=255).prop_map(|x| Some(IpAddr::from([10, 1, 2, x]))),
        (0u8..=255).prop_map(|x| Some(IpAddr::from([198, 51, 100, x]))),
        (0u8..=255).prop_map(|x| Some(IpAddr::from([203, 0, 113, x]))),
        Just(Some("2001:db8:c0::5".parse().unwrap())),
    ]
}

fn device() -> impl Strategy<Value = Option<DeviceContext>> {
    let state = prop_oneof![
        Just(DeviceState::Unregistered),
        Just(DeviceState::Registered),
        Just(DeviceState::Managed),
        Just(DeviceState::ManagedEdr),
    ];
    let compliant = prop_oneof![Just(None), Just(Some(true)), Just(Some(false))];
    let os = prop_oneof![Just(None), Just(Some("14.2")), Just(Some("15.1"))];
    let failing =
        prop::sample::subsequence(vec!["disk_encryption", "os_version", "firewall"], 0..=2);
    prop::option::of((state, compliant, os, failing, 0u8..4)).prop_map(|d| {
        d.map(|(state, compliant, os, failing, id)| DeviceContext {
            id: Some(format!("device-{id}")),
            state,
            compliant,
            failing_checks: failing
                .into_iter()
                .map(|c| FailingCheck {
                    id: c.into(),
                    message: Some(format!("{c} fails")),
                    fix: Some(format!("fix {c}")),
                })
                .collect(),
            posture: os
                .map(|v| [("os_version".to_string(), PostureValue::from(v))].into())
                .unwrap_or_default(),
            ..DeviceContext::default()
        })
    })
}

fn user_agent() -> impl Strategy<Value = UserAgentContext> {
    let pick = |v: Vec<&'static str>| prop::option::of(prop::sample::select(v));
    (
        pick(vec!["Chrome", "Firefox", "Safari"]),
        pick(vec!["macOS", "Windows", "iOS", "Linux"]),
        pick(vec!["desktop", "mobile"]),
    )
        .prop_map(|(b, o, d)| UserAgentContext {
            raw: None,
            browser: b.map(Into::into),
            os: o.map(Into::into),
            device_class: d.map(Into::into),
        })
}

fn history(now: DateTime<Utc>) -> impl Strategy<Value = Vec<SignInEntry>> {
    let entry = (
        1i64..200_000,
        0usize..PLACES.len(),
        ip(),
        any::<bool>(),
        0u8..4,
    );
    prop::collection::vec(entry, 0..5).prop_map(move |es| {
        let mut out: Vec<SignInEntry> = es
            .into_iter()
            .map(|(ago, place, ip, ok, dev)| {
                let (country, _, city, lat, lon) = PLACES[place];
                SignInEntry {
                    time: now - Duration::seconds(ago),
                    ip,
                    zones: Vec::new(),
                    country: Some(country.into()),
                    city: city.map(Into::into),
                    latitude: Some(lat),
                    longitude: Some(lon),
                    device_id: Some(format!("device-{dev}")),
                    user_agent: None,
                    outcome: if ok {
                        SignInOutcome::Success
                    } else {
                        SignInOutcome::Failure
                    },
                }
            })
            .collect();
        out.sort_by_key(|e| e.time);
        out
    })
}

fn case() -> impl Strategy<Value = Case> {
    // A fixed week (Monday 2026-11-30), so working hours and weekends both come up.
    let base = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
    let when = (0i64..7 * 86_400).prop_map(move |s| base + Duration::seconds(s));
    let who = (0usize..4, prop::bool::weighted(0.2), 0usize..APPS.len());
    let what = (
        prop::sample::select(vec!["GET", "POST", "DELETE", "PUT"]),
        prop::sample::select(PATHS.to_vec()),
    );
    let from = (
        ip(),
        prop::option::of(prop::sample::select(PLACES.to_vec())),
        prop::option::of(0u8..=100),
    );
    let cert = prop::option::of(any::<bool>()).prop_map(|c| {
        c.map(|valid| CertificateContext {
            valid,
            issuer: Some("CN=Devices".into()),
            ..CertificateContext::default()
        })
    });
    (who, what, from, device(), user_agent(), cert, when).prop_flat_map(
        |((user, sign_in, app), (method, path), (ip, place, ip_risk), device, ua, cert, time)| {
            history(time).prop_map(move |history| Case {
                user,
                sign_in,
                app,
                method,
                path,
                ip,
                place,
                ip_risk,
                device: device.clone(),
                user_agent: ua.clone(),
                certificate: cert.clone(),
                time,
                history,
            })
        },
    )
}

impl Case {
    /// The facts a live signal source would find.
    fn facts(&self) -> Facts {
        let mut geo = GeoInfo::default();
        if let Some((country, region, city, lat, lon)) = self.place {
            geo.country = Some(country.into());
            geo.region = region.map(Into::into);
            geo.city = city.map(Into::into);
            geo.latitude = Some(lat);
            geo.longitude = Some(lon);
        }
        Facts {
            ip: self.ip,
            geo,
            ip_risk_score: self.ip_risk,
            user_agent: self.user_agent.clone(),
            certificate: self.certificate.clone(),
            device: self.device.clone(),
            history: Some(Arc::new(self.history.clone())),
            risk: None,
            remembered_mfa: Vec::new(),
        }
    }

    /// The same, as a context file states it.
    fn context_file(&self, user: &UserRecord) -> String {
        let network = NetworkContext {
            ip: self.ip,
            country: self.place.map(|p| p.0.to_string()),
            region: self.place.and_then(|p| p.1).map(Into::into),
            city: self.place.and_then(|p| p.2).map(Into::into),
            ip_risk_score: self.ip_risk,
            latitude: self.place.map(|p| p.3),
            longitude: self.place.map(|p| p.4),
        };
        let ctx = RequestContext {
            kind: if self.sign_in {
                RequestKind::SignIn
            } else {
                RequestKind::Access
            },
            time: self.time,
            user: Some(stepgate_server::access::context::user_context(user).into()),
            request: RequestInfo {
                app: (!self.sign_in).then(|| APPS[self.app].to_string()),
                method: self.method.into(),
                path: self.path.into(),
            },
            network,
            user_agent: self.user_agent.clone(),
            device: self.device.clone(),
            certificate: self.certificate.clone(),
            risk: RiskContext::default(),
        };
        serde_json::to_string(&ctx).unwrap()
    }
}

/// What both sides must agree on.
#[derive(Debug, PartialEq)]
struct Answer {
    outcome: Option<Outcome>,
    policy: Option<String>,
    remediation: Option<Vec<stepgate_policy::RemediationItem>>,
}

fn answer(j: stepgate_server::access::Judged<'_>) -> Answer {
    let remediation = match &j.verdict {
        Verdict::Deny(d) => Some(d.remediation.clone()),
        _ => None,
    };
    Answer {
        outcome: j.decision.map(|d| d.outcome.clone()),
        policy: j.decision.and_then(|d| d.policy).map(str::to_string),
        remediation,
    }
}

/// The live pipeline on `c`: the request as the gateway reads it, the session cookie of
/// the case's user.
async fn live(w: &World, c: &Case) -> Answer {
    let rt = w.st.runtime.load_full();
    // A session signed in (password and TOTP) at the case's time, so its lifetime is
    // judged at that time as at any other.
    let session = signed_in_session(&w.st, &w.users[c.user], c.time).await;
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("{}={session}", rt.session_cookie)).unwrap(),
    );
    let cookies = decision_cookies(&rt, &headers).unwrap();
    let method = Method::from_bytes(c.method.as_bytes()).unwrap();
    w.generated
        .facts
        .lock()
        .unwrap()
        .insert(session.clone(), c.facts());
    let req = AccessRequest {
        id: stepgate_server::access::RequestId::new(),
        kind: if c.sign_in {
            RequestKind::SignIn
        } else {
            RequestKind::Access
        },
        app: (!c.sign_in).then_some(APPS[c.app]),
        method: &method,
        path: c.path,
        headers: &headers,
        ip: c.ip,
        credentials: Credentials::Cookies(&cookies),
        connection: Connection::default(),
        now: c.time,
    };
    let got = answer(w.st.access.decide(&rt, &req).await);
    w.st.sessions.end(&session).await.unwrap();
    w.generated.facts.lock().unwrap().remove(&session);
    got
}

/// `stepgate what-if` on `c` written as a context file, with the history beside it.
async fn offline(w: &World, c: &Case) -> Answer {
    let rt = w.st.runtime.load_full();
    let user = &w.users[c.user];
    let file: RequestContext = serde_json::from_str(&c.context_file(user)).unwrap();
    let history: Vec<SignInEntry> =
        serde_json::from_str(&serde_json::to_string(&c.history).unwrap()).unwrap();
    let source = StatedFacts::new(&file, Some(history), None);
    let (judged, _) = what_if(&rt, &file, &source).await;
    answer(judged)
}

fn cases() -> u32 {
    std::env::var("STEPGATE_WHAT_IF_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn what_if_decides_as_the_live_gateway_does(c in case()) {
        let w = &*WORLD;
        let (got, want) = RT.block_on(async { (live(w, &c).await, offline(w, &c).await) });
        prop_assert!(got.outcome.is_some(), "the live request reached the policies");
        prop_assert_eq!(got, want, "{:?}", c);
    }
}

#[test]
fn the_generated_cases_reach_every_outcome() {
    // The property above is only as good as its cases: each outcome, and a good share of
    // the configuration's policies, must come up in a modest run.
    let w = &*WORLD;
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut policies = std::collections::BTreeSet::new();
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..2_000 {
        let c = case().new_tree(&mut runner).unwrap().current();
        let a = RT.block_on(live(w, &c));
        kinds.insert(a.outcome.map(|o| o.kind().as_str()));
        policies.insert(a.policy);
    }
    for k in ["allow", "step_up", "deny"] {
        assert!(kinds.contains(&Some(k)), "{k} never came up: {kinds:?}");
    }
    assert!(
        policies.len() >= 15,
        "only {} policies decided: {policies:?}",
        policies.len()
    );
    // Each form of the location and velocity conditions decides some cases, so the
    // property compares them live and offline.
    for p in [
        "york-sign-in-steps-up",
        "outside-ile-de-france-wiki-writes",
        "places-aws",
        "staying-put-wiki",
        "driving-speed-licences",
    ] {
        assert!(
            policies.contains(&Some(p.to_string())),
            "{p} never decided: {policies:?}"
        );
    }
}

#[test]
fn coordinates_a_context_file_states_measure_travel_as_geoip_would() {
    // Found by the property above: what-if read a context file's place but not its
    // coordinates, so a live request's impossible travel was an ordinary one offline.
    let w = &*WORLD;
    let t = Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap();
    let c = Case {
        user: 0,
        sign_in: false,
        app: 0,
        method: "GET",
        path: "/licences",
        ip: None,
        place: Some(PLACES[0]),
        ip_risk: None,
        device: None,
        user_agent: UserAgentContext::default(),
        certificate: None,
        time: t,
        history: vec![SignInEntry {
            time: t - Duration::minutes(5),
            ip: None,
            zones: vec![],
            country: Some("US".into()),
            city: Some("New York".into()),
            latitude: Some(40.71),
            longitude: Some(-74.0),
            device_id: None,
            user_agent: None,
            outcome: SignInOutcome::Success,
        }],
    };
    let (live, offline) = RT.block_on(async { (live(w, &c).await, offline(w, &c).await) });
    assert_eq!(live.policy.as_deref(), Some("impossible-travel-apps"));
    assert_eq!(offline, live);
}
