//! Latency and failures at the edges the server waits on: the durable and hot stores, by
//! operation ([`StoreCalls`], recorded by [`super::store::TimedDurable`] and
//! [`super::store::TimedHot`]), and the signal providers,
//! by provider ([`SignalCalls`], recorded where the access pipeline asks them).
//!
//! Each name's series are made at its first call and then kept by index, so a call costs
//! two clock reads and a few atomic adds, never a label built or hashed.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One name's series: how long its calls took, and how many failed.
type Series = (Histogram, Counter);

/// Calls across one boundary, by a fixed list of names.
pub struct Calls<L> {
    names: &'static [&'static str],
    label: fn(&'static str) -> L,
    seconds: Family<L, Histogram, fn() -> Histogram>,
    errors: Family<L, Counter>,
    series: Box<[OnceLock<Series>]>,
}

impl<L> Calls<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn new(names: &'static [&'static str], label: fn(&'static str) -> L) -> Self {
        Calls {
            names,
            label,
            seconds: Family::new_with_constructor(super::latency),
            errors: Family::default(),
            series: names.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    fn series(&self, i: usize) -> Option<&Series> {
        let name = *self.names.get(i)?;
        let made = self.series.get(i)?;
        Some(made.get_or_init(|| {
            let l = (self.label)(name);
            (
                self.seconds.get_or_create(&l).clone(),
                self.errors.get_or_create(&l).clone(),
            )
        }))
    }

    /// A call of the `i`th name took `took`, and failed or not.
    pub fn observe(&self, i: usize, took: Duration, failed: bool) {
        if let Some((seconds, errors)) = self.series(i) {
            seconds.observe(took.as_secs_f64());
            if failed {
                errors.inc();
            }
        }
    }

    /// Runs `call` as a call of the `i`th name; `failure` says which errors count as
    /// failed calls.
    pub async fn time<T, E>(
        &self,
        i: usize,
        call: impl Future<Output = Result<T, E>>,
        failure: impl FnOnce(&E) -> bool,
    ) -> Result<T, E> {
        let started = Instant::now();
        let out = call.await;
        let failed = out.as_ref().err().is_some_and(failure);
        self.observe(i, started.elapsed(), failed);
        out
    }

    fn register(&self, r: &mut Registry, (seconds, errors): ((&str, &str), (&str, &str))) {
        r.register(seconds.0, seconds.1, self.seconds.clone());
        r.register(errors.0, errors.1, self.errors.clone());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Provider {
    provider: &'static str,
}

/// Store calls, by operation (the store trait's method name): the durable store's
/// ([`stepgate_store::DurableStore`]) and the hot store's ([`stepgate_store::HotStore`]),
/// in two families each.
pub struct StoreCalls {
    pub(super) durable: Calls<Operation>,
    pub(super) hot: Calls<Operation>,
}

fn operation(operation: &'static str) -> Operation {
    Operation { operation }
}

impl Default for StoreCalls {
    fn default() -> Self {
        StoreCalls {
            durable: Calls::new(super::store::OPERATIONS, operation),
            hot: Calls::new(super::store::HOT_OPERATIONS, operation),
        }
    }
}

impl StoreCalls {
    pub(super) fn register(&self, r: &mut Registry) {
        self.durable.register(
            r,
            (
                ("stepgate_store_operation_duration_seconds", "Time a durable store call took, by operation"),
                ("stepgate_store_errors", "Durable store calls that failed (the store out of reach or refusing), by operation; a conflict or a missing record is an answer, not counted"),
            ),
        );
        self.hot.register(
            r,
            (
                ("stepgate_hot_store_operation_duration_seconds", "Time a hot store call (sessions, counters, bans, one-time codes) took, by operation"),
                ("stepgate_hot_store_errors", "Hot store calls that failed (the store out of reach or refusing), by operation; a conflict or a missing record is an answer, not counted"),
            ),
        );
    }
}

/// A signal provider the access pipeline asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalProvider {
    /// The GeoIP database (`signals.geoip`).
    GeoIp,
    /// The IP risk feeds and HTTP provider (`signals.ip_risk`).
    IpRisk,
    /// Client certificate verification (`signals.client_certificates`).
    ClientCertificate,
    /// The device the request is bound to, from the device registry (connectors' and
    /// posture API's data).
    Device,
    /// The user's sign-in history (behavioural risk).
    SignInHistory,
    /// The MFA a known device remembers (`mfa_frequency`).
    MfaMemory,
}

/// The `provider` label of each [`SignalProvider`], in declaration order.
pub const PROVIDERS: &[&str] = &[
    "geoip",
    "ip_risk",
    "client_certificate",
    "device",
    "sign_in_history",
    "mfa_memory",
];

/// Signal provider calls, by provider.
pub struct SignalCalls(Calls<Provider>);

impl Default for SignalCalls {
    fn default() -> Self {
        SignalCalls(Calls::new(PROVIDERS, |provider| Provider { provider }))
    }
}

impl std::fmt::Debug for SignalCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalCalls")
    }
}

impl SignalCalls {
    /// Runs `call` as a call of `provider`: every error counts as a failure.
    pub async fn time<T, E>(
        &self,
        provider: SignalProvider,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.0.time(provider as usize, call, |_| true).await
    }

    /// Runs `call` as a call of `provider` whose answer can tell of a failure it hid
    /// (`hid_failure`: a fallback answered for a provider that failed): an error, or such
    /// an answer, counts as a failure.
    pub async fn judged<T, E>(
        &self,
        provider: SignalProvider,
        call: impl Future<Output = Result<T, E>>,
        hid_failure: impl FnOnce(&T) -> bool,
    ) -> Result<T, E> {
        let started = Instant::now();
        let out = call.await;
        let failed = out.as_ref().map_or(true, hid_failure);
        self.0.observe(provider as usize, started.elapsed(), failed);
        out
    }

    /// [`SignalCalls::judged`] for a call that answers at once (`call`, synchronous).
    pub fn judged_now<T, E>(
        &self,
        provider: SignalProvider,
        call: impl FnOnce() -> Result<T, E>,
        hid_failure: impl FnOnce(&T) -> bool,
    ) -> Result<T, E> {
        let started = Instant::now();
        let out = call();
        let failed = out.as_ref().map_or(true, hid_failure);
        self.0.observe(provider as usize, started.elapsed(), failed);
        out
    }

    /// Runs `call` as a call of `provider` that cannot fail (its answer may be a refusal).
    pub async fn answer<T>(&self, provider: SignalProvider, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.0.observe(provider as usize, started.elapsed(), false);
        out
    }

    /// Runs the synchronous lookup `call` as a call of `provider`: every error counts as
    /// a failure.
    pub fn lookup<T, E>(
        &self,
        provider: SignalProvider,
        call: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let out = call();
        self.0
            .observe(provider as usize, started.elapsed(), out.is_err());
        out
    }

    pub(super) fn register(&self, r: &mut Registry) {
        self.0.register(
            r,
            (
                (
                    "stepgate_signal_duration_seconds",
                    "Time a signal provider took to answer, by provider",
                ),
                (
                    "stepgate_signal_errors",
                    "Signal provider calls that failed, by provider",
                ),
            ),
        );
    }
}
