//! The engine-neutral model of a generated policy set and of generated requests.
//!
//! Everything is generated here once, from a seed; [`crate::yaml`] renders the model as
//! stepgate configuration and [`crate::cedar`] as Cedar policies, entities and requests, so
//! the two engines are handed the same conditions over the same requests by construction.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A named network zone and its CIDRs (`lab` is nested inside `corporate`, on purpose).
#[derive(Clone, Copy, Debug)]
pub struct Zone {
    /// The zone name under `networks`.
    pub name: &'static str,
    /// Its CIDRs.
    pub cidrs: &'static [&'static str],
}

/// The network zones of every generated configuration.
pub const ZONES: [Zone; 5] = [
    Zone {
        name: "corporate",
        cidrs: &["10.0.0.0/8", "192.0.2.0/24", "2001:db8:c0::/48"],
    },
    Zone {
        name: "lab",
        cidrs: &["10.20.0.0/16"],
    },
    Zone {
        name: "vpn",
        cidrs: &["198.51.100.0/24", "2001:db8:f0::/48"],
    },
    Zone {
        name: "branch",
        cidrs: &["172.16.0.0/12"],
    },
    Zone {
        name: "partner",
        cidrs: &["203.0.113.0/24"],
    },
];

/// Number of groups (`g00` … `g19`).
pub const GROUPS: usize = 20;

/// Time zones used by time-of-access conditions: IANA name and the Cedar context key the
/// request builder precomputes the local hour and weekday under.
pub const TIME_ZONES: [(&str, &str); 4] = [
    ("UTC", "utc"),
    ("Europe/Paris", "europe_paris"),
    ("America/New_York", "america_new_york"),
    ("Asia/Tokyo", "asia_tokyo"),
];

/// Values of the `department` user attribute.
pub const DEPARTMENTS: [&str; 8] = [
    "engineering",
    "sales",
    "finance",
    "support",
    "legal",
    "hr",
    "marketing",
    "operations",
];

/// Values of the `employment_type` user attribute.
pub const EMPLOYMENT_TYPES: [&str; 4] = ["employee", "contractor", "intern", "vendor"];

/// E-mail domains (the regex / `like` conditions match on them).
pub const EMAIL_DOMAINS: [&str; 3] = [
    "example.com",
    "contractors.example.com",
    "partner.example.net",
];

/// Route tags carried by the routes every generated app has.
pub const ROUTE_TAGS: [&str; 4] = ["admin", "sensitive", "write", "export"];

/// Device states, least trusted first, in stepgate's spelling; the index is Cedar's rank.
pub const DEVICE_STATES: [&str; 4] = ["unregistered", "registered", "managed", "managed_edr"];

/// Risk levels and app sensitivities in stepgate's spelling; the index is Cedar's rank.
pub const LEVELS: [&str; 3] = ["low", "medium", "high"];

/// Weekday names, Monday first (bit `i` of a weekday mask).
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The HTTP methods requests use.
pub const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// A user attribute conditions compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attr {
    /// `department`.
    Department,
    /// `employment_type`.
    EmploymentType,
}

impl Attr {
    /// The attribute name in both engines.
    pub fn name(self) -> &'static str {
        match self {
            Attr::Department => "department",
            Attr::EmploymentType => "employment_type",
        }
    }
}

/// One condition, engine-neutral.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// Member of at least one group.
    GroupsAny(Vec<usize>),
    /// Member of every group.
    GroupsAll(Vec<usize>),
    /// Client IP in one of the zones (indices into [`ZONES`]).
    NetworkIn(Vec<usize>),
    /// Client IP in none of the zones.
    NetworkNotIn(Vec<usize>),
    /// Device state is one of these ranks.
    DeviceStateIn(Vec<u8>),
    /// Device state rank is at least this.
    DeviceStateAtLeast(u8),
    /// Compliance verdict is known and equal to this.
    Compliant(bool),
    /// Posture `os_version` is known and below `major.minor`.
    OsVersionBelow(u32, u32),
    /// Local time in a zone (index into [`TIME_ZONES`]) is inside `[from, to)` (wrapping
    /// midnight when `from > to`) on one of the weekdays (bit mask, Monday = bit 0).
    Time {
        tz: usize,
        from: u8,
        to: u8,
        weekdays: u8,
    },
    /// A user attribute equals a value.
    AttrEquals(Attr, &'static str),
    /// A user attribute does not equal a value.
    AttrNotEquals(Attr, &'static str),
    /// The e-mail address is in a domain: stepgate regex `.*@<domain>` (whole value),
    /// Cedar `like "*@<domain>"`.
    EmailDomain(&'static str),
    /// Behavioural risk rank at least this.
    RiskAtLeast(u8),
    /// IP risk score known and at least this.
    IpRiskAtLeast(u8),
    /// App sensitivity rank at least this.
    SensitivityAtLeast(u8),
    /// The negation.
    Not(Box<Cond>),
}

/// What a matching policy decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// stepgate `allow`, Cedar `permit`.
    Allow,
    /// stepgate `step_up`, Cedar `forbid` annotated `@outcome("step_up")`.
    StepUp,
    /// stepgate `deny`, Cedar `forbid` annotated `@outcome("deny")`.
    Deny,
}

/// How fresh the step-up factor must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Any age (the session's factor counts however old it is).
    Any,
    /// Passed within this many minutes.
    WithinMinutes(u32),
    /// Passed for this very request.
    EveryTime,
}

/// What a `step_up` policy asks for: stepgate's `min_aal` and `max_age`; in Cedar the
/// deciding `forbid`'s `@min_aal` and `@max_age` annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Minimum assurance level (2 or 3).
    pub min_aal: u8,
    /// How fresh.
    pub max_age: Freshness,
}

impl Requirement {
    /// The requirements step-up policies cycle through (by their position in the set), so
    /// that the equivalence tests see a wrong requirement, not only a wrong verdict.
    pub const VARIANTS: [Requirement; 5] = [
        Requirement {
            min_aal: 2,
            max_age: Freshness::WithinMinutes(15),
        },
        Requirement {
            min_aal: 3,
            max_age: Freshness::WithinMinutes(5),
        },
        Requirement {
            min_aal: 2,
            max_age: Freshness::Any,
        },
        Requirement {
            min_aal: 2,
            max_age: Freshness::EveryTime,
        },
        Requirement {
            min_aal: 3,
            max_age: Freshness::WithinMinutes(60),
        },
    ];

    /// The `max_age` spelling both renderings use (`15m`, `every_time`), if any.
    pub fn max_age_text(&self) -> Option<String> {
        match self.max_age {
            Freshness::Any => None,
            Freshness::WithinMinutes(m) => Some(format!("{m}m")),
            Freshness::EveryTime => Some("every_time".into()),
        }
    }
}

/// A route selector: the matched route carries one of the tags, and (if any) the method
/// is one of these.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSel {
    /// Route tags (any of).
    pub tags: Vec<&'static str>,
    /// Methods (any of; empty: all).
    pub methods: Vec<&'static str>,
}

/// One policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Unique name, also the Cedar policy id.
    pub name: String,
    /// stepgate priority (unique, lowest first).
    pub priority: u32,
    /// Target app (index into the apps); `None` targets every app.
    pub app: Option<usize>,
    /// Optional route selector.
    pub route: Option<RouteSel>,
    /// `match: any` instead of all.
    pub match_any: bool,
    /// The conditions.
    pub conds: Vec<Cond>,
    /// The outcome.
    pub effect: Effect,
    /// For `step_up`: what it asks for (`None` for the other effects).
    pub requirement: Option<Requirement>,
}

/// One protected app.
#[derive(Clone, Debug)]
pub struct App {
    /// Its id (`app-0007`).
    pub id: String,
    /// Sensitivity rank (index into [`LEVELS`]).
    pub sensitivity: u8,
}

/// One user.
#[derive(Clone, Debug)]
pub struct User {
    /// Username, also the Cedar `User` entity id.
    pub name: String,
    /// Group indices.
    pub groups: Vec<usize>,
    /// `department`.
    pub department: &'static str,
    /// `employment_type`.
    pub employment_type: &'static str,
    /// `email`.
    pub email: String,
}

/// A generated policy set with its apps and users.
#[derive(Clone, Debug)]
pub struct Model {
    /// Apps (`max(1, policies / 10)` of them).
    pub apps: Vec<App>,
    /// Users requests come from.
    pub users: Vec<User>,
    /// Policies, in priority order.
    pub policies: Vec<Policy>,
}

/// The device of a request.
#[derive(Clone, Debug)]
pub struct Device {
    /// State rank.
    pub state: u8,
    /// Compliance verdict (`None`: unknown).
    pub compliant: Option<bool>,
    /// OS version `major.minor` (`None`: not reported).
    pub os_version: Option<(u32, u32)>,
}

/// Which of the app's routes a request goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// `GET /home`: no route.
    Home,
    /// `GET /api/items/N`: no route (the API route is for writes).
    ApiRead,
    /// `POST|PUT|DELETE /api/items/N`: the `write` route.
    ApiWrite,
    /// `GET /reports/N/export`: the `export, sensitive` route.
    Export,
    /// `GET|POST /admin/users/N`: the `admin, sensitive` route.
    Admin,
}

impl RouteKind {
    /// The tags of the route this kind of request matches in every generated app.
    pub fn tags(self) -> &'static [&'static str] {
        match self {
            RouteKind::Home | RouteKind::ApiRead => &[],
            RouteKind::ApiWrite => &["write"],
            RouteKind::Export => &["export", "sensitive"],
            RouteKind::Admin => &["admin", "sensitive"],
        }
    }
}

/// One request, engine-neutral.
#[derive(Clone, Debug)]
pub struct Request {
    /// User index.
    pub user: usize,
    /// App index.
    pub app: usize,
    /// HTTP method.
    pub method: &'static str,
    /// Request path.
    pub path: String,
    /// Which route the path and method select.
    pub route: RouteKind,
    /// Client IP (always present: see the crate docs).
    pub ip: IpAddr,
    /// Device, if known.
    pub device: Option<Device>,
    /// When (UTC).
    pub time: DateTime<Utc>,
    /// Behavioural risk rank.
    pub risk: u8,
    /// IP risk score, if known.
    pub ip_risk: Option<u8>,
}

/// How the generated policies are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Every `deny` / `step_up` policy has a lower priority number than every `allow`, as
    /// real policy sets are written (blocks and step-ups first, grants last). Under this
    /// layout stepgate's first match and Cedar's "permit unless a forbid applies" give the
    /// same verdict for every request.
    Layered,
    /// Priorities shuffled across outcomes: an `allow` may precede a `deny` that also
    /// matches, where the two combining rules disagree.
    Interleaved,
}

impl Model {
    /// Generates `n` policies over `max(1, n / 10)` apps, deterministically from `seed`.
    pub fn generate(n: usize, seed: u64, layout: Layout) -> Model {
        let mut rng = StdRng::seed_from_u64(seed);
        let n_apps = (n / 10).max(1);
        let apps: Vec<App> = (0..n_apps)
            .map(|i| App {
                id: format!("app-{i:04}"),
                sensitivity: pick_weighted(&mut rng, &[30, 45, 25]) as u8,
            })
            .collect();
        let users = (0..500).map(|i| gen_user(&mut rng, i)).collect();

        // A handful of baseline policies apply to every app, whatever the size.
        let globals = (n / 100).clamp(1, 8).min(n);
        let mut policies: Vec<Policy> = Vec::with_capacity(n);
        for i in 0..n {
            if i < globals {
                policies.push(gen_baseline(&mut rng));
                continue;
            }
            let (app, effect) = if i - globals < n_apps {
                // Every app gets at least one grant.
                (Some(i - globals), Effect::Allow)
            } else {
                let effect = match pick_weighted(&mut rng, &[40, 35, 25]) {
                    0 => Effect::Allow,
                    1 => Effect::StepUp,
                    _ => Effect::Deny,
                };
                (Some(rng.gen_range(0..n_apps)), effect)
            };
            policies.push(gen_policy(&mut rng, app, effect));
        }

        // Priorities: layered (non-allow first) or shuffled.
        policies.shuffle(&mut rng);
        if layout == Layout::Layered {
            policies.sort_by_key(|p| p.effect == Effect::Allow);
        }
        for (i, p) in policies.iter_mut().enumerate() {
            p.priority = (i as u32 + 1) * 10;
            let kind = match p.effect {
                Effect::Allow => "allow",
                Effect::StepUp => "step-up",
                Effect::Deny => "deny",
            };
            p.name = format!("p{i:05}-{kind}");
            // Chosen by position, not drawn from the generator, so that the policy set is
            // otherwise the one earlier versions generated.
            p.requirement = (p.effect == Effect::StepUp)
                .then(|| Requirement::VARIANTS[i % Requirement::VARIANTS.len()]);
        }
        Model {
            apps,
            users,
            policies,
        }
    }

    /// Generates `m` requests spread across the apps and users, deterministically.
    pub fn requests(&self, m: usize, seed: u64) -> Vec<Request> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_f4e9_u64);
        let start = Utc
            .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
            .single()
            .expect("a valid date");
        (0..m).map(|_| gen_request(&mut rng, self, start)).collect()
    }
}

fn pick_weighted(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn distinct(rng: &mut StdRng, n: usize, k: usize) -> Vec<usize> {
    let mut v = rand::seq::index::sample(rng, n, k).into_vec();
    v.sort_unstable();
    v
}

fn gen_user(rng: &mut StdRng, i: usize) -> User {
    let employment_type = EMPLOYMENT_TYPES[pick_weighted(rng, &[70, 20, 5, 5])];
    let domain = match employment_type {
        "contractor" => EMAIL_DOMAINS[1],
        "vendor" => EMAIL_DOMAINS[2],
        _ => EMAIL_DOMAINS[0],
    };
    let n_groups = rng.gen_range(1..=4);
    User {
        name: format!("u{i:04}"),
        groups: distinct(rng, GROUPS, n_groups),
        department: DEPARTMENTS[rng.gen_range(0..DEPARTMENTS.len())],
        employment_type,
        email: format!("user{i}@{domain}"),
    }
}

fn groups_any(rng: &mut StdRng, k: usize) -> Cond {
    Cond::GroupsAny(distinct(rng, GROUPS, k))
}

fn time_window(rng: &mut StdRng, night: bool) -> Cond {
    let tz = rng.gen_range(0..TIME_ZONES.len());
    let (from, to) = if night {
        (rng.gen_range(20..=23), rng.gen_range(4..=7))
    } else {
        (rng.gen_range(6..=10), rng.gen_range(16..=20))
    };
    let weekdays = match pick_weighted(rng, &[60, 30, 10]) {
        0 => 0b001_1111,
        1 => 0b111_1111,
        _ => rng.gen_range(1..0b111_1111),
    };
    Cond::Time {
        tz,
        from,
        to,
        weekdays,
    }
}

fn attr_value(rng: &mut StdRng, attr: Attr) -> &'static str {
    match attr {
        Attr::Department => DEPARTMENTS[rng.gen_range(0..DEPARTMENTS.len())],
        Attr::EmploymentType => EMPLOYMENT_TYPES[rng.gen_range(0..EMPLOYMENT_TYPES.len())],
    }
}

fn not(c: Cond) -> Cond {
    Cond::Not(Box::new(c))
}

/// A condition that holds for a minority of requests (roughly 2–45%): what blocks and
/// step-ups are made of.
fn narrow_cond(rng: &mut StdRng) -> Cond {
    match pick_weighted(rng, &[14, 4, 12, 4, 10, 8, 6, 8, 8, 7, 4, 7, 6, 4]) {
        0 => {
            let k = rng.gen_range(1..=2);
            groups_any(rng, k)
        }
        1 => Cond::GroupsAll(distinct(rng, GROUPS, 2)),
        2 => Cond::NetworkNotIn(distinct(rng, 3, 2)),
        3 => Cond::NetworkIn(vec![rng.gen_range(3..ZONES.len())]),
        4 => {
            if rng.gen_bool(0.5) {
                let k = rng.gen_range(1..=2);
                Cond::DeviceStateIn(distinct(rng, 2, k).into_iter().map(|s| s as u8).collect())
            } else {
                not(Cond::DeviceStateAtLeast(rng.gen_range(1..=2)))
            }
        }
        5 => Cond::Compliant(false),
        6 => not(Cond::Compliant(true)),
        7 => Cond::OsVersionBelow(rng.gen_range(13..=14), rng.gen_range(0..=9)),
        8 => {
            if rng.gen_bool(0.5) {
                time_window(rng, true)
            } else {
                not(time_window(rng, false))
            }
        }
        9 => {
            let attr = if rng.gen_bool(0.5) {
                Attr::Department
            } else {
                Attr::EmploymentType
            };
            let v = attr_value(rng, attr);
            Cond::AttrEquals(attr, v)
        }
        10 => Cond::EmailDomain(EMAIL_DOMAINS[rng.gen_range(1..EMAIL_DOMAINS.len())]),
        11 => Cond::RiskAtLeast(rng.gen_range(1..=2)),
        12 => Cond::IpRiskAtLeast(rng.gen_range(5..=9) * 10),
        _ => Cond::SensitivityAtLeast(2),
    }
}

/// A condition that holds for most requests (roughly 35–95%): what grants are made of.
fn broad_cond(rng: &mut StdRng) -> Cond {
    match pick_weighted(rng, &[16, 14, 12, 6, 10, 8, 6, 8, 6, 4, 4, 2]) {
        0 => {
            let k = rng.gen_range(3..=5);
            groups_any(rng, k)
        }
        1 => {
            let k = rng.gen_range(2..=3);
            Cond::NetworkIn(distinct(rng, ZONES.len(), k))
        }
        2 => Cond::DeviceStateAtLeast(rng.gen_range(1..=2)),
        3 => Cond::DeviceStateIn(vec![1, 2, 3]),
        4 => Cond::Compliant(true),
        5 => time_window(rng, false),
        6 => not(Cond::RiskAtLeast(rng.gen_range(1..=2))),
        7 => {
            let attr = if rng.gen_bool(0.5) {
                Attr::Department
            } else {
                Attr::EmploymentType
            };
            let v = attr_value(rng, attr);
            Cond::AttrNotEquals(attr, v)
        }
        8 => not(Cond::OsVersionBelow(
            rng.gen_range(12..=13),
            rng.gen_range(0..=9),
        )),
        9 => not(Cond::EmailDomain(
            EMAIL_DOMAINS[rng.gen_range(1..EMAIL_DOMAINS.len())],
        )),
        10 => not(Cond::IpRiskAtLeast(rng.gen_range(5..=9) * 10)),
        _ => Cond::SensitivityAtLeast(rng.gen_range(0..=1)),
    }
}

/// A security-baseline policy for every app: narrow, like the demo's risky-IP block.
fn gen_baseline(rng: &mut StdRng) -> Policy {
    let (conds, effect) = match rng.gen_range(0..4) {
        0 => (
            vec![Cond::IpRiskAtLeast(rng.gen_range(8..=9) * 10)],
            Effect::Deny,
        ),
        1 => (
            vec![
                Cond::RiskAtLeast(rng.gen_range(1..=2)),
                Cond::NetworkNotIn(vec![0, 2]),
            ],
            Effect::StepUp,
        ),
        2 => (
            vec![Cond::DeviceStateAtLeast(2), Cond::Compliant(false)],
            Effect::Deny,
        ),
        _ => (
            vec![
                Cond::OsVersionBelow(12, rng.gen_range(1..=9)),
                Cond::SensitivityAtLeast(1),
            ],
            Effect::StepUp,
        ),
    };
    Policy {
        name: String::new(),
        priority: 0,
        app: None,
        route: None,
        match_any: false,
        conds,
        effect,
        requirement: None,
    }
}

fn gen_policy(rng: &mut StdRng, app: Option<usize>, effect: Effect) -> Policy {
    // Blocks and step-ups: two or three narrow conditions, all of which must hold (or,
    // for `match: any`, two narrow ones either of which blocks). Grants: zero to two broad
    // ones (or, for `match: any`, two narrow ones, as "finance or admins").
    let match_any = rng.gen_bool(0.1);
    let conds: Vec<Cond> = match (effect, match_any) {
        (Effect::Allow, false) => {
            let k = pick_weighted(rng, &[10, 50, 40]);
            (0..k).map(|_| broad_cond(rng)).collect()
        }
        (Effect::Allow, true) => (0..2).map(|_| narrow_cond(rng)).collect(),
        (_, false) => {
            let k = 2 + pick_weighted(rng, &[75, 25]);
            (0..k).map(|_| narrow_cond(rng)).collect()
        }
        (_, true) => vec![
            Cond::GroupsAll(distinct(rng, GROUPS, 2)),
            Cond::IpRiskAtLeast(rng.gen_range(8..=9) * 10),
        ],
    };
    let route = (app.is_some() && rng.gen_bool(0.3)).then(|| RouteSel {
        tags: vec![ROUTE_TAGS[rng.gen_range(0..ROUTE_TAGS.len())]],
        methods: if rng.gen_bool(0.2) {
            vec!["POST"]
        } else {
            Vec::new()
        },
    });
    Policy {
        name: String::new(),
        priority: 0,
        app,
        route,
        match_any,
        conds,
        effect,
        requirement: None,
    }
}

fn gen_request(rng: &mut StdRng, model: &Model, start: DateTime<Utc>) -> Request {
    let user = rng.gen_range(0..model.users.len());
    let app = rng.gen_range(0..model.apps.len());
    let id = rng.gen_range(1..10_000);
    let route = match pick_weighted(rng, &[40, 20, 15, 10, 15]) {
        0 => RouteKind::Home,
        1 => RouteKind::ApiRead,
        2 => RouteKind::ApiWrite,
        3 => RouteKind::Export,
        _ => RouteKind::Admin,
    };
    let (method, path) = match route {
        RouteKind::Home => ("GET", "/home".to_string()),
        RouteKind::ApiRead => ("GET", format!("/api/items/{id}")),
        RouteKind::ApiWrite => (METHODS[rng.gen_range(1..=3)], format!("/api/items/{id}")),
        RouteKind::Export => ("GET", format!("/reports/{id}/export")),
        RouteKind::Admin => (
            if rng.gen_bool(0.7) { "GET" } else { "POST" },
            format!("/admin/users/{id}"),
        ),
    };
    let ip = gen_ip(rng);
    let device = rng.gen_bool(0.9).then(|| Device {
        state: pick_weighted(rng, &[15, 25, 35, 25]) as u8,
        compliant: match pick_weighted(rng, &[70, 20, 10]) {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        },
        os_version: rng
            .gen_bool(0.9)
            .then(|| (rng.gen_range(12..=16), rng.gen_range(0..=9))),
    });
    // Four weeks from Monday 2 March 2026: crosses New York's switch to daylight saving time.
    let time = start + Duration::seconds(rng.gen_range(0..28 * 24 * 3600));
    Request {
        user,
        app,
        method,
        path,
        route,
        ip,
        device,
        time,
        risk: pick_weighted(rng, &[75, 18, 7]) as u8,
        ip_risk: rng.gen_bool(0.6).then(|| {
            if rng.gen_bool(0.8) {
                rng.gen_range(0..50)
            } else {
                rng.gen_range(50..=100)
            }
        }),
    }
}

fn gen_ip(rng: &mut StdRng) -> IpAddr {
    let b = |rng: &mut StdRng| rng.gen_range(1..=254u8);
    match pick_weighted(rng, &[35, 8, 7, 10, 10, 5, 20, 5]) {
        0 => IpAddr::V4(Ipv4Addr::new(10, rng.gen_range(0..=255), b(rng), b(rng))),
        1 => IpAddr::V4(Ipv4Addr::new(10, 20, b(rng), b(rng))),
        2 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, b(rng))),
        3 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, b(rng))),
        4 => IpAddr::V4(Ipv4Addr::new(172, rng.gen_range(16..=31), b(rng), b(rng))),
        5 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, b(rng))),
        6 => IpAddr::V4(Ipv4Addr::new(
            rng.gen_range(81..=95),
            b(rng),
            b(rng),
            b(rng),
        )),
        _ => {
            let prefix: u16 = [0xc0, 0xf0, 0xee][rng.gen_range(0..3)];
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                prefix,
                0,
                0,
                0,
                0,
                rng.gen_range(1..0xffff),
            ))
        }
    }
}
