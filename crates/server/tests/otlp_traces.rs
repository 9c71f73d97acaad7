//! OpenTelemetry traces over OTLP/HTTP (`log.otlp`), against a recording collector on
//! loopback that decodes what it is sent (OTLP protobuf): with the key absent nothing is
//! exported and the upstream sees no `traceparent`; with it, a proxied request's span
//! arrives with its request id, app, outcome and status, its stages as children, and the
//! upstream sees a `traceparent` of the same trace (the caller's, when it sent one).
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

/// What the collector was sent, decoded.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    fn spans(&self) -> Vec<(Vec<(String, String)>, Span)> {
        let mut out = Vec::new();
        for export in self.0.lock().unwrap().iter() {
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
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                keep.0.lock().unwrap().push(export);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
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

/// A proxied GET of `/reports` with the session `cookie` (and `traceparent`, when given):
/// the request id stepgate answered with, and the `traceparent` the upstream saw.
async fn proxied(s: &Server, cookie: &str, traceparent: Option<&str>) -> (String, Option<String>) {
    let c = client().redirect(redirects(false)).build().unwrap();
    let mut r = c
        .get(s.url("app.test", "/reports"))
        .header("cookie", cookie);
    if let Some(tp) = traceparent {
        r = r.header("traceparent", tp);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_only_when_configured_and_the_upstream_joins_the_trace() {
    let (endpoint, received) = collector().await;

    // Off: `log.otlp` absent. Nothing is built, nothing sent, no traceparent made up.
    let (s, session) = signed_in(CONFIG).await;
    let cookie = format!("stepgate_session={session}");
    assert!(s.st.runtime.load().config.log.otlp.is_none());
    assert!(Traces::start(None).unwrap().is_none());
    assert!(!telemetry::on());
    let (_, seen) = proxied(&s, &cookie, None).await;
    assert_eq!(seen, None, "no trace context is sent with traces off");
    assert!(received.0.lock().unwrap().is_empty());
    drop(s);

    // On: the same start-up as `stepgate serve`'s, from the configuration's `log.otlp`.
    let config = format!(
        "{CONFIG}log:\n  otlp: {{ endpoint: \"{endpoint}\", service_name: stepgate-test }}\n"
    );
    let (s, session) = signed_in(&config).await;
    let cookie = format!("stepgate_session={session}");
    let traces = Arc::new(
        Traces::start(s.st.runtime.load().config.log.otlp.as_ref())
            .unwrap()
            .expect("log.otlp is set"),
    );
    tracing_subscriber::registry().with(traces.layer()).init();
    assert!(telemetry::on());
    let caller = format!("00-{CALLER_TRACE}-{CALLER_PARENT}-01");
    let (joined_id, joined_seen) = proxied(&s, &cookie, Some(&caller)).await;
    let (own_id, own_seen) = proxied(&s, &cookie, None).await;
    let flushing = traces.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap()
        .unwrap();

    let spans = received.spans();
    let request = |id: &str| {
        spans
            .iter()
            .find(|(_, s)| s.name == "request" && attr(s, "request_id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no request span with request_id {id}"))
            .clone()
    };
    for (id, seen, caller_trace) in [
        (&joined_id, &joined_seen, Some(CALLER_TRACE)),
        (&own_id, &own_seen, None),
    ] {
        let (resource, span) = request(id);
        assert!(resource.contains(&("service.name".into(), "stepgate-test".into())));
        assert_eq!(attr(&span, "app").as_deref(), Some("console"));
        assert_eq!(attr(&span, "outcome").as_deref(), Some("allow"));
        assert_eq!(attr(&span, "status").as_deref(), Some("200"));
        assert_eq!(attr(&span, "method").as_deref(), Some("GET"));
        assert_eq!(attr(&span, "user").as_deref(), Some(JANE.username));
        let trace = hex(&span.trace_id);
        match caller_trace {
            Some(t) => {
                assert_eq!(trace, t, "the caller's trace is joined");
                assert_eq!(hex(&span.parent_span_id), CALLER_PARENT);
            }
            None => assert!(span.parent_span_id.is_empty(), "a trace of its own"),
        }
        // The decision's stages and the upstream call, children of the request.
        let child = |name: &str| {
            spans
                .iter()
                .map(|(_, s)| s)
                .find(|s| s.name == name && s.parent_span_id == span.span_id)
                .unwrap_or_else(|| panic!("no `{name}` span under request {id}"))
        };
        for stage in ["session", "signals", "policy"] {
            assert_eq!(hex(&child(stage).trace_id), trace);
        }
        let up = child("upstream");
        // The upstream saw `traceparent` 00-{trace}-{the upstream span}-{flags}.
        let seen = seen.as_deref().expect("the upstream saw a traceparent");
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "{seen}");
        assert_eq!(parts[1], trace, "the upstream is in the request's trace");
        assert_eq!(
            parts[2],
            hex(&up.span_id),
            "its parent is the upstream span"
        );
        // No session id in any span.
        for (k, v) in attrs(&span.attributes) {
            assert!(!v.contains(&session), "{k} carries the session id");
        }
    }
    traces.shutdown();
}
