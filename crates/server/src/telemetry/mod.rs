//! OpenTelemetry traces over OTLP/HTTP (`log.otlp`), off by default.
//!
//! When on, [`Traces::start`] builds the exporter (protobuf over the server's own rustls
//! HTTP client, [`collector`]) and a batch span processor on the tokio runtime, and
//! [`Traces::layer`] is the `tracing` layer that turns stepgate's spans into OpenTelemetry
//! spans: one per request (`request`: request id, client, method, app, route, outcome,
//! status, user)
//! with children for the decision's stages (`session`, `signals`, `policy`) and the
//! `upstream` call. W3C `traceparent` is read from an incoming request
//! and written to the upstream's ([`propagate`]); [`request`], [`decided`] and [`answered`]
//! fill in the request span's fields. The stages' spans are `debug` spans: with
//! traces off no layer asks for them, so they cost a level check and nothing more, and the
//! two propagation calls return at once ([`on`]).
//!
//! What a span carries is what the log lines carry: never a secret, a session id or a
//! cookie.

mod collector;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use stepgate_config::OtlpConfig;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::Layer;

/// Whether traces are exported by this process.
static ON: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (`log.otlp` set, and [`Traces::start`] called).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The OTLP exporter refused its settings.
    #[error("log.otlp: the OTLP exporter for `{endpoint}` could not be built: {source}")]
    Exporter {
        /// The collector's URL.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The HTTP client could not be set up.
    #[error("log.otlp: the HTTP client for the collector could not be set up: {0}")]
    Client(#[from] reqwest::Error),
    /// The settings are invalid (`stepgate check` reports the same).
    #[error("{0}")]
    Config(String),
}

/// The running trace export: the layer to install and the provider to flush at exit.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Starts exporting spans as `cfg` says, or `None` when `log.otlp` is absent (nothing
    /// is built, nothing is sent). Called within a tokio runtime: the batch processor's
    /// task runs on it.
    /// `log.otlp.headers`' values are read now (a file relative to `base_dir`).
    pub fn start(
        cfg: Option<&OtlpConfig>,
        base_dir: &std::path::Path,
    ) -> Result<Option<Traces>, TracesError> {
        let Some(cfg) = cfg else {
            return Ok(None);
        };
        if let Some(problem) = cfg.problems().into_iter().next() {
            return Err(TracesError::Config(problem));
        }
        let headers = collector::headers(&cfg.headers, base_dir).map_err(TracesError::Config)?;
        let endpoint = cfg.traces_url();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_http_client(collector::Collector::new(headers)?)
            .build()
            .map_err(|source| TracesError::Exporter { endpoint, source })?;
        let batch = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(cfg.service_name.trim().to_string())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        ON.store(true, Ordering::Relaxed);
        Ok(Some(Traces { provider }))
    }

    /// The `tracing` layer exporting stepgate's spans (down to `debug`), with warnings and
    /// errors logged inside them as span events; nothing else reaches it.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("stepgate"))
            .with_location(false)
            .with_threads(false)
            .with_filter(filter_fn(|m| {
                let ours = m.target().starts_with("stepgate");
                if m.is_span() {
                    ours && *m.level() <= tracing::Level::DEBUG
                } else {
                    ours && *m.level() <= tracing::Level::WARN
                }
            }))
    }

    /// Sends the spans that ended and wait in the batch (blocks the calling thread until
    /// the collector answers; call it off the event loops).
    pub fn flush(&self) -> Result<(), String> {
        self.provider.force_flush().map_err(|e| e.to_string())
    }

    /// Sends what is left and stops the exporter (at exit; blocks like [`Traces::flush`]).
    pub fn shutdown(&self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the last spans were not exported");
        }
    }
}

/// With traces on: the request's method on its span, and the span made a child of the
/// caller's trace when the request carries one well-formed W3C `traceparent`. Two of
/// them, or one that does not read (an unknown version `ff`, wrong lengths, all-zero ids,
/// capitals), are not guessed from: the request starts a trace of its own.
pub fn request(span: &tracing::Span, method: &axum::http::Method, headers: &axum::http::HeaderMap) {
    if !on() {
        return;
    }
    span.record("method", method.as_str());
    let mut given = headers.get_all("traceparent").iter();
    let (Some(one), None) = (given.next(), given.next()) else {
        return;
    };
    if !one.to_str().is_ok_and(well_formed_traceparent) {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Whether `v` is a W3C `traceparent` as the Trace Context recommendation writes it:
/// `version-traceid-parentid-flags` in lower-case hex of exactly 2, 32, 16 and 2 digits,
/// neither id all zeros, version `ff` invalid, and nothing after the flags in version
/// `00` (a later version may add fields after a `-`). Checked here because the
/// propagator pads a short id with zeros rather than refusing it.
fn well_formed_traceparent(v: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let mut parts = v.splitn(5, '-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest_ok = match parts.next() {
        None => true,
        Some(_) => version != "00",
    };
    hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2)
        && rest_ok
}

/// With traces on: the decision's app, the app route the request matched (`route`
/// finds it for the app: its name, or its path pattern as configured; never the request's
/// own path or query, which may carry secrets) and outcome on the current (request) span.
pub fn decided<'a>(
    app: Option<&'a str>,
    route: impl FnOnce(&'a str) -> Option<&'a str>,
    outcome: &'static str,
) {
    if !on() {
        return;
    }
    let span = tracing::Span::current();
    if let Some(app) = app {
        span.record("app", app);
        if let Some(route) = route(app) {
            span.record("route", route);
        }
    }
    span.record("outcome", outcome);
}

/// With traces on: the answer's status on the current (request) span; a server error
/// marks the span failed.
pub fn answered(status: axum::http::StatusCode) {
    if !on() {
        return;
    }
    let span = tracing::Span::current();
    span.record("status", status.as_u16());
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(status.to_string()));
    }
}

/// Writes `span`'s trace context as W3C `traceparent` (and `tracestate`) into a request
/// to an upstream (when traces are on).
pub fn propagate(span: &tracing::Span, headers: &mut axum::http::HeaderMap) {
    if !on() {
        return;
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers))
    });
}

#[cfg(test)]
mod tests {
    use super::well_formed_traceparent as ok;

    #[test]
    fn traceparent_is_read_only_when_well_formed() {
        let (t, p) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        assert!(ok(&format!("00-{t}-{p}-01")));
        assert!(ok(&format!("00-{t}-{p}-00")));
        assert!(ok(&format!("01-{t}-{p}-01-later-fields")));
        for bad in [
            format!("ff-{t}-{p}-01"),
            format!("00-{}-{p}-01", &t[..30]),
            format!("00-{t}-{p}00-01"),
            format!("00-{}-{p}-01", "0".repeat(32)),
            format!("00-{t}-{}-01", "0".repeat(16)),
            format!("00-{}-{p}-01", t.to_uppercase()),
            format!("00-{t}-{p}-01-zz"),
            format!("00-{t}-{p}-1"),
            format!("0-{t}-{p}-01"),
            format!("00-{t}-{p}"),
            format!("00-{t}-{}-01", "g".repeat(16)),
            String::new(),
        ] {
            assert!(!ok(&bad), "{bad:?} read as well formed");
        }
    }
}
