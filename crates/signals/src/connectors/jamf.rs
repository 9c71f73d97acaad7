//! Jamf Pro: a client-credentials token from `{url}/api/oauth/token` (API roles and
//! clients), then `GET {url}/api/v1/computers-inventory` with the sections stepgate maps,
//! and (with `mobile_devices`, the default) `GET {url}/api/v2/mobile-devices/detail` with
//! the GENERAL, HARDWARE, USER_AND_LOCATION and SECURITY sections — both paged by `page` /
//! `page-size` until `totalCount` — each device's compliance from the conditional-access
//! endpoint when Jamf has one for it. Jamf's inventory has no "changed since" filter
//! stepgate relies on: every sync reads every computer and mobile device.

use serde_json::Value;

use super::mapping::{Table, JAMF_MOBILE_PREFIX};
use super::{Connector, ConnectorError, MAX_PAGES};

const MOBILE_SECTIONS: &[&str] = &["GENERAL", "HARDWARE", "USER_AND_LOCATION", "SECURITY"];

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

/// Every computer, then (with `mobile_devices`) every mobile device.
pub(super) async fn list(c: &Connector) -> Result<Vec<(Table, Value)>, ConnectorError> {
    let sections: String = SECTIONS.iter().map(|s| format!("&section={s}")).collect();
    let mut out: Vec<(Table, Value)> = paged(c, "computers-inventory", |page| {
        format!(
            "{}/api/v1/computers-inventory?page={page}&page-size={}&sort=id%3Aasc{sections}",
            root(c),
            c.cfg.page_size
        )
    })
    .await?
    .into_iter()
    .map(|d| (Table::Devices, d))
    .collect();
    let mut with_state = Vec::with_capacity(out.len());
    for (t, d) in out.drain(..) {
        with_state.push((t, with_compliance(c, d, Kind::Computer).await?));
    }
    if c.cfg.mobile_devices {
        let sections: String = MOBILE_SECTIONS
            .iter()
            .map(|s| format!("&section={s}"))
            .collect();
        let mobiles = paged(c, "mobile-devices detail", |page| {
            format!(
                "{}/api/v2/mobile-devices/detail?page={page}&page-size={}&sort=mobileDeviceId%3Aasc{sections}",
                root(c),
                c.cfg.page_size
            )
        })
        .await?;
        for d in mobiles {
            with_state.push((
                Table::JamfMobile,
                with_compliance(c, d, Kind::Mobile).await?,
            ));
        }
    }
    Ok(with_state)
}

/// A Jamf Pro API listing `{"totalCount", "results"}`, page by page from 0.
async fn paged(
    c: &Connector,
    what: &str,
    url: impl Fn(usize) -> String,
) -> Result<Vec<Value>, ConnectorError> {
    let mut out = Vec::new();
    for page in 0..MAX_PAGES {
        let body = c
            .get_with_token(&token_url(c), what, &url(page))
            .await?
            .ok_or_else(|| c.shape(what, "HTTP 404; check `url`"))?;
        let results = body
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| c.shape(what, "no `results` array"))?;
        c.check_page(what, results.len(), out.len(), c.cfg.page_size as usize)?;
        let total = body.get("totalCount").and_then(Value::as_u64).unwrap_or(0);
        out.extend(results.iter().cloned());
        let read = (page as u64 + 1) * u64::from(c.cfg.page_size);
        if results.is_empty() || read >= total {
            return Ok(out);
        }
    }
    Err(c.shape(what, format!("more than {MAX_PAGES} pages")))
}

/// Which conditional-access path a device's compliance is under.
#[derive(Clone, Copy)]
enum Kind {
    Computer,
    Mobile,
}

/// Adds `compliance` (and `failingPolicies`) from Jamf's conditional-access compliance
/// information, when Jamf has it for the computer.
async fn with_compliance(c: &Connector, mut d: Value, kind: Kind) -> Result<Value, ConnectorError> {
    let (key, path) = match kind {
        Kind::Computer => ("id", "computer"),
        Kind::Mobile => ("mobileDeviceId", "mobile"),
    };
    let Some(id) = id_text(d.get(key)) else {
        return Ok(d);
    };
    let url = format!(
        "{}/api/v1/conditional-access/device-compliance-information/{path}/{}",
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
    // Jamf's states are COMPLIANT, NON_COMPLIANT and UNKNOWN: only NON_COMPLIANT names a
    // failing vendor; a device whose states are all UNKNOWN has no verdict yet (reported
    // non-compliant by the mapping, with that reason).
    let failing: Vec<Value> = applicable
        .iter()
        .filter(|e| e.get("complianceState").and_then(Value::as_str) == Some("NON_COMPLIANT"))
        .filter_map(|e| e.get("complianceVendor").cloned())
        .collect();
    if !compliant && failing.is_empty() {
        return Ok(d);
    }
    if let Some(o) = d.as_object_mut() {
        o.insert("compliance".into(), Value::Bool(compliant));
        o.insert("failingPolicies".into(), Value::Array(failing));
    }
    Ok(d)
}

/// One computer, or a mobile device (`mobile-<id>`).
pub(super) async fn one(c: &Connector, id: &str) -> Result<Option<(Table, Value)>, ConnectorError> {
    if let Some(mobile) = id.strip_prefix(JAMF_MOBILE_PREFIX) {
        // The inventory listing filtered to the one device, so it has the listing's shape
        // (the per-device `v2/mobile-devices/{id}/detail` answers another one).
        let filter = format!("mobileDeviceId==\"{mobile}\"");
        let sections: String = MOBILE_SECTIONS
            .iter()
            .map(|s| format!("&section={s}"))
            .collect();
        let url = format!(
            "{}/api/v2/mobile-devices/detail?page=0&page-size=1&filter={}{sections}",
            root(c),
            percent_encoding::utf8_percent_encode(&filter, percent_encoding::NON_ALPHANUMERIC)
        );
        let what = "mobile-devices detail";
        let Some(body) = c.get_with_token(&token_url(c), what, &url).await? else {
            return Ok(None);
        };
        let first = body
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| c.shape(what, "no `results` array"))?
            .iter()
            .find(|d| id_text(d.get("mobileDeviceId")).as_deref() == Some(mobile))
            .cloned();
        return match first {
            Some(d) => Ok(Some((
                Table::JamfMobile,
                with_compliance(c, d, Kind::Mobile).await?,
            ))),
            None => Ok(None),
        };
    }
    let url = format!(
        "{}/api/v1/computers-inventory-detail/{}",
        root(c),
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    );
    match c
        .get_with_token(&token_url(c), "computers-inventory-detail", &url)
        .await?
    {
        Some(d) => Ok(Some((
            Table::Devices,
            with_compliance(c, d, Kind::Computer).await?,
        ))),
        None => Ok(None),
    }
}

fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
