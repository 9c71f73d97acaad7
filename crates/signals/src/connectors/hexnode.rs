//! Hexnode UEM: `GET {url}/api/v1/devices/?page=N&per_page=S` (`{"count", "next",
//! "previous", "results"}`), then each device's detail `GET {url}/api/v1/devices/{id}/`,
//! with `Authorization: <api key>`. Hexnode has no "changed since" filter: every sync reads
//! every device.

use serde_json::Value;

use super::http::{get, Answer};
use super::{Connector, ConnectorError, MAX_PAGES};

/// The most devices one page of Hexnode's list may hold.
const HEXNODE_MAX_PAGE: usize = 1000;

fn base(c: &Connector) -> String {
    format!("{}/api/v1/devices/", c.cfg.url.trim_end_matches('/'))
}

async fn call(c: &Connector, what: &str, url: &str) -> Result<Option<Value>, ConnectorError> {
    let key = &c.secret.0;
    match c
        .retrying()
        .send(what, || get(&c.client, url).header("Authorization", key))
        .await?
    {
        Answer::Json(v) => Ok(Some(v)),
        Answer::NotFound => Ok(None),
        Answer::Unauthorized => Err(c.unauthorized(what)),
    }
}

/// Every device, each merged with its detail.
pub(super) async fn list(c: &Connector) -> Result<Vec<Value>, ConnectorError> {
    let mut out = Vec::new();
    for page in 1..=MAX_PAGES {
        let url = format!("{}?page={page}&per_page={}", base(c), c.cfg.page_size);
        let what = "list devices";
        let body = call(c, what, &url)
            .await?
            .ok_or_else(|| c.shape(what, "HTTP 404 for the device list; check `url`"))?;
        let results = body
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| c.shape(what, "no `results` array"))?;
        // Hexnode's `per_page` is not confirmed from its documentation: a portal that
        // ignores it and answers its own page size still syncs, up to HEXNODE_MAX_PAGE.
        let limit = (c.cfg.page_size as usize).max(HEXNODE_MAX_PAGE);
        c.check_page(what, results.len(), out.len(), limit)?;
        for summary in results {
            out.push(detailed(c, summary).await?);
        }
        let more = body.get("next").is_some_and(|n| !n.is_null());
        if !more || results.is_empty() {
            return Ok(out);
        }
    }
    Err(c.shape("list devices", format!("more than {MAX_PAGES} pages")))
}

/// The list entry with the detail's fields over it (a device deleted meanwhile keeps its
/// list entry; the next sync will not see it).
async fn detailed(c: &Connector, summary: &Value) -> Result<Value, ConnectorError> {
    let Some(id) = summary.get("id").and_then(id_text) else {
        return Ok(summary.clone());
    };
    let mut merged = summary.clone();
    if let (Some(Value::Object(d)), Some(m)) = (one(c, &id).await?, merged.as_object_mut()) {
        // The detail must describe the device listed, never another one.
        if d.get("id")
            .is_some_and(|other| id_text(other).as_deref() != Some(id.as_str()))
        {
            return Err(c.shape(
                "device detail",
                format!("asked for device `{id}`, the answer is another device"),
            ));
        }
        m.extend(d);
    }
    Ok(merged)
}

/// One device's detail.
pub(super) async fn one(c: &Connector, id: &str) -> Result<Option<Value>, ConnectorError> {
    let id: String =
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
    call(c, "device detail", &format!("{}{id}/", base(c))).await
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}
