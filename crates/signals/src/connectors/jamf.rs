//! Jamf Pro: a client-credentials token from `{url}/api/oauth/token` (API roles and
//! clients), then `GET {url}/api/v1/computers-inventory` with the sections stepgate maps,
//! paged by `page` / `page-size` until `totalCount`; each computer's compliance from the
//! conditional-access endpoint when Jamf has one for it. Jamf's inventory has no
//! "changed since" filter stepgate relies on: every sync reads every computer.

use serde_json::Value;

use super::{Connector, ConnectorError, MAX_PAGES};

const SECTIONS: &[&str] = &[
    "GENERAL",
    "DISK_ENCRYPTION",
    "OPERATING_SYSTEM",
    "SECURITY",
    "HARDWARE",
    "USER_AND_LOCATION",
];

fn root(c: &Connector) -> &str {
    c.cfg.url.trim_end_matches('/')
}

fn token_url(c: &Connector) -> String {
    c.cfg
        .token_url
        .clone()
        .unwrap_or_else(|| format!("{}/api/oauth/token", root(c)))
}

/// Every computer.
pub(super) async fn list(c: &Connector) -> Result<Vec<Value>, ConnectorError> {
    let sections: String = SECTIONS.iter().map(|s| format!("&section={s}")).collect();
    let what = "computers-inventory";
    let mut out = Vec::new();
    for page in 0..MAX_PAGES {
        let url = format!(
            "{}/api/v1/computers-inventory?page={page}&page-size={}&sort=id%3Aasc{sections}",
            root(c),
            c.cfg.page_size
        );
        let body = c
            .get_with_token(&token_url(c), what, &url)
            .await?
            .ok_or_else(|| c.shape(what, "HTTP 404; check `url`"))?;
        let results = body
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| c.shape(what, "no `results` array"))?;
        let total = body.get("totalCount").and_then(Value::as_u64).unwrap_or(0);
        for d in results {
            out.push(with_compliance(c, d.clone()).await?);
        }
        let read = (page as u64 + 1) * u64::from(c.cfg.page_size);
        if results.is_empty() || read >= total {
            return Ok(out);
        }
    }
    Err(c.shape(what, format!("more than {MAX_PAGES} pages")))
}

/// Adds `compliance` (and `failingPolicies`) from Jamf's conditional-access compliance
/// information, when Jamf has it for the computer.
async fn with_compliance(c: &Connector, mut d: Value) -> Result<Value, ConnectorError> {
    let Some(id) = d.get("id").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }) else {
        return Ok(d);
    };
    let url = format!(
        "{}/api/v1/conditional-access/device-compliance-information/computer/{}",
        root(c),
        percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
    );
    let what = "device-compliance-information";
    let Some(body) = c.get_with_token(&token_url(c), what, &url).await? else {
        return Ok(d);
    };
    let entries: Vec<&Value> = body.as_array().into_iter().flatten().collect();
    let applicable: Vec<&&Value> = entries
        .iter()
        .filter(|e| e.get("applicable").and_then(Value::as_bool) != Some(false))
        .collect();
    if applicable.is_empty() {
        return Ok(d);
    }
    let compliant = applicable
        .iter()
        .all(|e| e.get("complianceState").and_then(Value::as_str) == Some("COMPLIANT"));
    let failing: Vec<Value> = applicable
        .iter()
        .filter(|e| e.get("complianceState").and_then(Value::as_str) != Some("COMPLIANT"))
        .filter_map(|e| e.get("complianceVendor").cloned())
        .collect();
    if let Some(o) = d.as_object_mut() {
        o.insert("compliance".into(), Value::Bool(compliant));
        o.insert("failingPolicies".into(), Value::Array(failing));
    }
    Ok(d)
}

/// One computer.
pub(super) async fn one(c: &Connector, id: &str) -> Result<Option<Value>, ConnectorError> {
    let url = format!(
        "{}/api/v1/computers-inventory-detail/{}",
        root(c),
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    );
    match c
        .get_with_token(&token_url(c), "computers-inventory-detail", &url)
        .await?
    {
        Some(d) => Ok(Some(with_compliance(c, d).await?)),
        None => Ok(None),
    }
}
