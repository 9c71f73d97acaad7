//! The OTLP exporter's HTTP client: the server's reqwest (rustls only), so that exporting
//! brings neither a second HTTP client nor a second TLS stack. It adds `log.otlp.headers`
//! to every export, their values marked sensitive (never printed, even in a debug dump).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use stepgate_config::identity::SecretSource;

/// How long one export may take, connecting and answering included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts OTLP batches to the collector.
#[derive(Debug)]
pub(super) struct Collector {
    client: reqwest::Client,
    headers: HeaderMap,
}

impl Collector {
    pub(super) fn new(headers: HeaderMap) -> Result<Self, reqwest::Error> {
        Ok(Collector {
            client: reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                // A collector that redirects is misconfigured: the spans go nowhere else.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            headers,
        })
    }
}

/// `log.otlp.headers`, their values read from where each says; an error names the key
/// (`log.otlp.headers.NAME`) and never shows a value.
pub(super) fn headers(
    configured: &BTreeMap<String, SecretSource>,
    base_dir: &Path,
) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, source) in configured {
        let key = format!("log.otlp.headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{key}: is not an HTTP header name"))?;
        let value = crate::idp::read_secret(source, base_dir, &key)?;
        if value.is_empty() {
            return Err(format!("{key}: the value is empty"));
        }
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            format!("{key}: the value holds a character a header cannot carry (a control character or a line break)")
        })?;
        value.set_sensitive(true);
        out.insert(header, value);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl HttpClient for Collector {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        let answer = self.client.execute(request).await?;
        let mut out = Response::builder().status(answer.status());
        if let Some(h) = out.headers_mut() {
            *h = answer.headers().clone();
        }
        Ok(out.body(answer.bytes().await?)?)
    }
}
