//! Microsoft Intune through Microsoft Graph: a client-credentials token from the Entra
//! tenant's token endpoint, then `GET {url}/v1.0/deviceManagement/managedDevices` with
//! `$select`, `$top`, `$filter=lastSyncDateTime ge …` for incremental syncs, following
//! `@odata.nextLink`; for each device that is not compliant, its
//! `deviceCompliancePolicyStates` name the failing policies.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::{Connector, ConnectorError, MAX_PAGES};

const SELECT: &str = "id,deviceName,userPrincipalName,operatingSystem,osVersion,model,serialNumber,complianceState,isEncrypted,jailBroken,managementState,lastSyncDateTime,azureADDeviceId";

fn token_url(c: &Connector) -> &str {
    c.cfg.token_url.as_deref().unwrap_or_default()
}

fn devices_url(c: &Connector) -> String {
    format!(
        "{}/v1.0/deviceManagement/managedDevices",
        c.cfg.url.trim_end_matches('/')
    )
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).collect()
}

/// Every managed device, or those synced with Intune since `since`.
pub(super) async fn list(
    c: &Connector,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Value>, ConnectorError> {
    let mut url = format!(
        "{}?$select={}&$top={}",
        devices_url(c),
        enc(SELECT),
        c.cfg.page_size
    );
    if let Some(t) = since {
        let f = format!(
            "lastSyncDateTime ge {}",
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        url.push_str(&format!("&$filter={}", enc(&f)));
    }
    let what = "list managedDevices";
    let mut out = Vec::new();
    for _ in 0..MAX_PAGES {
        let body = c
            .get_with_token(token_url(c), what, &url)
            .await?
            .ok_or_else(|| c.shape(what, "HTTP 404; check `url`"))?;
        let value = body
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| c.shape(what, "no `value` array"))?;
        c.check_page(what, value.len(), out.len(), c.cfg.page_size as usize)?;
        for d in value {
            out.push(with_failing_policies(c, d.clone()).await?);
        }
        match body.get("@odata.nextLink").and_then(Value::as_str) {
            Some(next) => url = next.to_string(),
            None => return Ok(out),
        }
    }
    Err(c.shape(what, format!("more than {MAX_PAGES} pages")))
}

/// Adds `failingPolicies` (the display names of the policies whose state is not
/// compliant) to a device Intune does not call compliant.
async fn with_failing_policies(c: &Connector, mut d: Value) -> Result<Value, ConnectorError> {
    let state = d.get("complianceState").and_then(Value::as_str);
    let Some(id) = d.get("id").and_then(Value::as_str).map(str::to_string) else {
        return Ok(d);
    };
    if matches!(state, Some("compliant")) {
        return Ok(d);
    }
    let url = format!(
        "{}/{}/deviceCompliancePolicyStates",
        devices_url(c),
        enc(&id)
    );
    let what = "deviceCompliancePolicyStates";
    let Some(body) = c.get_with_token(token_url(c), what, &url).await? else {
        return Ok(d);
    };
    let failing: Vec<Value> = body
        .get("value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| {
            matches!(
                p.get("state").and_then(Value::as_str),
                Some("nonCompliant" | "error" | "conflict")
            )
        })
        .filter_map(|p| p.get("displayName").cloned())
        .collect();
    if let Some(o) = d.as_object_mut() {
        o.insert("failingPolicies".into(), Value::Array(failing));
    }
    Ok(d)
}

/// One managed device.
pub(super) async fn one(c: &Connector, id: &str) -> Result<Option<Value>, ConnectorError> {
    let url = format!("{}/{}?$select={}", devices_url(c), enc(id), enc(SELECT));
    match c
        .get_with_token(token_url(c), "get managedDevice", &url)
        .await?
    {
        Some(d) => Ok(Some(with_failing_policies(c, d).await?)),
        None => Ok(None),
    }
}
