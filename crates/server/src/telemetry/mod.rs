//! OpenTelemetry traces over OTLP/HTTP (`log.otlp`), off by default.
//!
//! When on, [`Traces::start`] builds the exporter (protobuf over the server's own rustls
//! HTTP client, [`collector`]) and a batch span processor on the tokio runtime, and
//! [`Traces::layer`] is the `tracing` layer that turns stepgate's spans into OpenTelemetry
//! spans: one per request (`request`: request id, client, method, app, outcome, status, user)
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

use opentelemetry::trace::TracerProvider as _;
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
    pub fn start(cfg: Option<&OtlpConfig>) -> Result<Option<Traces>, TracesError> {
        let Some(cfg) = cfg else {
            return Ok(None);
        };
        if let Some(problem) = cfg.problems().into_iter().next() {
            return Err(TracesError::Config(problem));
        }
        let endpoint = cfg.traces_url();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_http_client(collector::Collector::new()?)
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
/// caller's trace when the request carries a W3C `traceparent`.
pub fn request(span: &tracing::Span, method: &axum::http::Method, headers: &axum::http::HeaderMap) {
    if !on() {
        return;
    }
    span.record("method", method.as_str());
    if headers.contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&opentelemetry_http::HeaderExtractor(headers))
        });
        let _ = span.set_parent(parent);
    }
}

/// With traces on: the decision's app and outcome on the current (request) span.
pub fn decided(app: Option<&str>, outcome: &'static str) {
    if !on() {
        return;
    }
    let span = tracing::Span::current();
    if let Some(app) = app {
        span.record("app", app);
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
