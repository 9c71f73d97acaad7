//! OpenTelemetry traces over OTLP/HTTP (`log.otlp`), against a recording collector on
//! loopback that decodes what it is sent (OTLP protobuf): with the key absent nothing is
//! exported and the upstream sees no `traceparent`; with it, a proxied request's span
//! arrives with its request id, app, outcome and status, its stages as children, and the
//! upstream sees a `traceparent` of the same trace (the caller's, when it sent one). The
//! request span names the matched route (never the query), the collector receives the
//! configured `log.otlp.headers`, and a malformed or doubled `traceparent` starts a new
//! trace instead of being adopted.
//!
//! One test: the trace layer is the process's global subscriber, installed once, so the
//! "off" half runs before it exists.

mod support;

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use stepgate_server::telemetry::{self, Traces};
use support::{client, redirects, sign_in, upstream, Browser, Server, JANE};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [app.test]
    upstream: http://UPSTREAM
    routes:
      - { name: reports, path: "/reports" }
sessions:
  cookie: { secure: false }
default_outcome: allow
policies:
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
"#;

/// A caller's trace: `traceparent` version 00, sampled.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_PARENT: &str = "00f067aa0ba902b7";

/// What the collector was sent, decoded, with each export's request headers.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(axum::http::HeaderMap, ExportTraceServiceRequest)>>>);

impl Received {
    fn spans(&self) -> Vec<(Vec<(String, String)>, Span)> {
        let mut out = Vec::new();
        for (_, export) in self.0.lock().unwrap().iter() {
            for rs in &export.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map_or(vec![], |r| attrs(&r.attributes));
                for ss in &rs.scope_spans {
                    out.extend(ss.spans.iter().map(|s| (resource.clone(), s.clone())));
                }
            }
        }
        out
    }
}

/// A recording OTLP/HTTP collector: `POST /v1/traces` decoded and kept; its base URL.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    keep.0.lock().unwrap().push((headers, export));
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            },
        ),
    );
    let addr = upstream::serve(app).await;
    (format!("http://{addr}"), received)
}

fn attrs(kv: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    kv.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    attrs(&span.attributes)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A proxied GET of `path` with the session `cookie` (and each of `traceparents` as a
/// `traceparent` header): the request id stepgate answered with, and the `traceparent`
/// the upstream saw.
async fn proxied(
    s: &Server,
    cookie: &str,
    path: &str,
    traceparents: &[&str],
) -> (String, Option<String>) {
    let c = client().redirect(redirects(false)).build().unwrap();
    let mut r = c.get(s.url("app.test", path)).header("cookie", cookie);
    for tp in traceparents {
        r = r.header("traceparent", *tp);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{path} with {traceparents:?}");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen: serde_json::Value = r.json().await.unwrap();
    (id, seen["traceparent"].as_str().map(str::to_string))
}

async fn signed_in(config: &str) -> (Server, String) {
    let s = Server::build(config)
        .with("UPSTREAM", upstream::echo().await)
        .demo_users()
        .start()
        .await;
    let b = Browser::new();
    let app = s.url("app.test", "/");
    assert_eq!(sign_in(&b, &app, &JANE, &JANE.code(0)).await.status(), 200);
    let session = b.session_id(&app).unwrap();
    (s, session)
}

/// The API key the collector expects, from the environment, and the tenant, from a file.
const API_KEY: &str = "otlp-key-5b1f0c";
const API_KEY_ENV: &str = "STEPGATE_TEST_OTLP_KEY";
const TENANT: &str = "tenant-7";
/// A query value that must appear in no span.
const QUERY_SECRET: &str = "query-secret-91d2";

/// `traceparent`s that must not be adopted, each with what is wrong; each is sent alone,
/// except the two of [`TWO_TRACEPARENTS`].
fn malformed() -> Vec<(&'static str, String)> {
    let (t, p) = (CALLER_TRACE, CALLER_PARENT);
    vec![
        ("version ff", format!("ff-{t}-{p}-01")),
        // The propagator alone reads this one, padded with zeros: 004bf92f….
        ("short trace id", format!("00-{}-{p}-01", &t[..30])),
        ("long parent id", format!("00-{t}-{p}00-01")),
        ("all-zero trace id", format!("00-{}-{p}-01", "0".repeat(32))),
        (
            "all-zero parent id",
            format!("00-{t}-{}-01", "0".repeat(16)),
        ),
        ("upper-case hex", format!("00-{}-{p}-01", t.to_uppercase())),
        ("extra field in version 00", format!("00-{t}-{p}-01-zz")),
        ("not a traceparent", "not-a-traceparent".to_string()),
    ]
}

/// Two well-formed `traceparent` headers on one request (neither is picked).
const TWO_TRACEPARENTS: [&str; 2] = [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01",
];

/// The configuration with `log.otlp` sending to `endpoint`, with the two headers.
fn traced(endpoint: &str) -> String {
    format!(
        "{CONFIG}log:\n  otlp:\n    endpoint: \"{endpoint}\"\n    service_name: stepgate-test\n    headers:\n      x-api-key: {{ env: {API_KEY_ENV} }}\n      x-scope-orgid: {{ file: otlp-tenant }}\n"
    )
}

/// A header the configuration cannot give is refused at start, naming its key and never
/// its value: a variable not set, a file missing, a value with a line break.
fn header_errors_name_the_key(cfg: &stepgate_config::OtlpConfig, dir: &std::path::Path) {
    use stepgate_config::identity::SecretSource;
    let with = |source: SecretSource| {
        let mut cfg = cfg.clone();
        cfg.headers = [("x-api-key".to_string(), source)].into();
        match Traces::start(Some(&cfg), dir) {
            Ok(_) => panic!("the exporter started with {:?}", cfg.headers),
            Err(e) => e.to_string(),
        }
    };
    let e = with(SecretSource::Env("STEPGATE_TEST_OTLP_UNSET".into()));
    assert!(e.contains("log.otlp.headers.x-api-key"), "{e}");
    assert!(e.contains("STEPGATE_TEST_OTLP_UNSET"), "{e}");
    let e = with(SecretSource::File("no-such-file".into()));
    assert!(e.contains("log.otlp.headers.x-api-key"), "{e}");
    std::fs::write(dir.join("two-lines"), "secret-first\nsecret-second\n").unwrap();
    let e = with(SecretSource::File("two-lines".into()));
    assert!(e.contains("log.otlp.headers.x-api-key"), "{e}");
    assert!(!e.contains("secret-first"), "the value is shown: {e}");
    assert!(!telemetry::on(), "a refused start turns nothing on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_only_when_configured_and_the_upstream_joins_the_trace() {
    let (endpoint, received) = collector().await;

    // Off: `log.otlp` absent. Nothing is built, nothing sent, no traceparent made up.
    let (s, session) = signed_in(CONFIG).await;
    let cookie = format!("stepgate_session={session}");
    assert!(s.st.runtime.load().config.log.otlp.is_none());
    assert!(Traces::start(None, std::path::Path::new("."))
        .unwrap()
        .is_none());
    assert!(!telemetry::on());
    let (_, seen) = proxied(&s, &cookie, "/reports", &[]).await;
    assert_eq!(seen, None, "no trace context is sent with traces off");
    assert!(received.0.lock().unwrap().is_empty());
    drop(s);

    // On: the same start-up as `stepgate serve`'s, from the configuration's `log.otlp`.
    let (s, session) = signed_in(&traced(&endpoint)).await;
    let cookie = format!("stepgate_session={session}");
    let rt = s.st.runtime.load_full();
    let (otlp, base_dir) = (rt.config.log.otlp.as_ref(), &rt.config.base_dir);
    header_errors_name_the_key(otlp.expect("log.otlp is set"), base_dir);
    std::env::set_var(API_KEY_ENV, API_KEY);
    std::fs::write(base_dir.join("otlp-tenant"), format!("{TENANT}\n")).unwrap();
    let traces = Arc::new(
        Traces::start(otlp, base_dir)
            .unwrap()
            .expect("log.otlp is set"),
    );
    tracing_subscriber::registry().with(traces.layer()).init();
    assert!(telemetry::on());
    let caller = format!("00-{CALLER_TRACE}-{CALLER_PARENT}-01");
    let with_query = format!("/reports?token={QUERY_SECRET}");
    let joined = proxied(&s, &cookie, &with_query, &[&caller]).await;
    let own = proxied(&s, &cookie, "/reports", &[]).await;
    let mut refused = Vec::new();
    for (what, tp) in malformed() {
        refused.push((what, proxied(&s, &cookie, "/reports", &[&tp]).await));
    }
    refused.push((
        "two traceparents",
        proxied(&s, &cookie, "/reports", &TWO_TRACEPARENTS).await,
    ));
    let flushing = traces.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap()
        .unwrap();

    let spans = received.spans();
    for (id, seen, caller_trace) in [
        (&joined.0, &joined.1, Some(CALLER_TRACE)),
        (&own.0, &own.1, None),
    ] {
        let span = request_span(&spans, id);
        request_joined(&spans, &span, seen.as_deref(), caller_trace, &session);
    }
    for (what, (id, seen)) in &refused {
        let span = request_span(&spans, id);
        let trace = hex(&span.trace_id);
        assert_ne!(
            trace, CALLER_TRACE,
            "{what}: the caller's trace was adopted"
        );
        assert_ne!(trace, "0".repeat(32), "{what}: an all-zero trace");
        assert!(
            !trace.contains(&CALLER_TRACE[..24]),
            "{what}: {trace} is made from it"
        );
        request_joined(&spans, &span, seen.as_deref(), None, &session);
    }
    collector_got_the_headers(&received);
    traces.shutdown();
}

/// The request span with request id `id`, and its check that the resource is named.
fn request_span(spans: &[(Vec<(String, String)>, Span)], id: &str) -> Span {
    let (resource, span) = spans
        .iter()
        .find(|(_, s)| s.name == "request" && attr(s, "request_id").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no request span with request_id {id}"))
        .clone();
    assert!(resource.contains(&("service.name".into(), "stepgate-test".into())));
    span
}

/// Checks a request span: its attributes (the route named, no query, no session id), its
/// trace (the caller's, or one of its own), its stages as children, and the upstream's
/// `traceparent` (`seen`) naming its `upstream` child in the same trace.
fn request_joined(
    spans: &[(Vec<(String, String)>, Span)],
    span: &Span,
    seen: Option<&str>,
    caller_trace: Option<&str>,
    session: &str,
) {
    assert_eq!(attr(span, "app").as_deref(), Some("console"));
    assert_eq!(attr(span, "route").as_deref(), Some("reports"));
    assert_eq!(attr(span, "outcome").as_deref(), Some("allow"));
    assert_eq!(attr(span, "status").as_deref(), Some("200"));
    assert_eq!(attr(span, "method").as_deref(), Some("GET"));
    assert_eq!(attr(span, "user").as_deref(), Some(JANE.username));
    let trace = hex(&span.trace_id);
    match caller_trace {
        Some(t) => {
            assert_eq!(trace, t, "the caller's trace is joined");
            assert_eq!(hex(&span.parent_span_id), CALLER_PARENT);
        }
        None => assert!(
            span.parent_span_id.is_empty(),
            "a trace of its own: {trace} under {}",
            hex(&span.parent_span_id)
        ),
    }
    // The decision's stages and the upstream call, children of the request.
    let child = |name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name && s.parent_span_id == span.span_id)
            .unwrap_or_else(|| panic!("no `{name}` span under request {trace}"))
    };
    for stage in ["session", "signals", "policy"] {
        assert_eq!(hex(&child(stage).trace_id), trace);
    }
    let up = child("upstream");
    // The upstream saw `traceparent` 00-{trace}-{the upstream span}-{flags}.
    let seen = seen.expect("the upstream saw a traceparent");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(parts[1], trace, "the upstream is in the request's trace");
    assert_eq!(
        parts[2],
        hex(&up.span_id),
        "its parent is the upstream span"
    );
    // No session id and no query string in any span.
    for (_, s) in spans {
        for (k, v) in attrs(&s.attributes) {
            assert!(!v.contains(session), "{k} carries the session id");
            assert!(!v.contains(QUERY_SECRET), "{k} carries the query: {v}");
        }
    }
}

/// Every export carried `log.otlp.headers`: the API key from the environment, the tenant
/// from its file (its line break trimmed).
fn collector_got_the_headers(received: &Received) {
    let exports = received.0.lock().unwrap();
    assert!(!exports.is_empty());
    for (headers, _) in exports.iter() {
        assert_eq!(headers.get("x-api-key").unwrap(), API_KEY);
        assert_eq!(headers.get("x-scope-orgid").unwrap(), TENANT);
        assert_eq!(
            headers.get("content-type").unwrap(),
            "application/x-protobuf"
        );
    }
}
