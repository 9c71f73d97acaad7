//! The OTLP exporter's HTTP client: the server's reqwest (rustls only), so that exporting
//! brings neither a second HTTP client nor a second TLS stack.

use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};

/// How long one export may take, connecting and answering included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts OTLP batches to the collector.
#[derive(Debug)]
pub(super) struct Collector(reqwest::Client);

impl Collector {
    pub(super) fn new() -> Result<Self, reqwest::Error> {
        Ok(Collector(
            reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                // A collector that redirects is misconfigured: the spans go nowhere else.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        ))
    }
}

#[async_trait::async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let answer = self.0.execute(request).await?;
        let mut out = Response::builder().status(answer.status());
        if let Some(h) = out.headers_mut() {
            *h = answer.headers().clone();
        }
        Ok(out.body(answer.bytes().await?)?)
    }
}
