//! The device API's budgets (`devices.rate_limit.api`) over real HTTP: requests without a
//! valid token are counted per client address, requests with one per source, both before
//! anything is read or audited; over budget is `429` with `Retry-After`, and a window's
//! dropped requests are summed up in one audit row.

mod support;

use serde_json::json;
use support::{after_window, audit, retry_after, sha256_hex, window_start, Server};

/// The agent source's token; its SHA-256 is in [`CONFIG`].
const TOKEN: &str = "device-api-rate-limit-test-token";

const CONFIG: &str = r#"
apps: []
server:
  trusted_proxies: [127.0.0.1]
devices:
  sources:
    - { name: laptop-agent, kind: agent, token_sha256: TOKEN_SHA256, scopes: ["devices:write"] }
  rate_limit: RATE_LIMIT
"#;

async fn start(rate_limit: &str) -> Server {
    Server::build(CONFIG)
        .with("TOKEN_SHA256", sha256_hex(TOKEN))
        .with("RATE_LIMIT", rate_limit)
        .start()
        .await
}

/// `PUT /api/devices/posture` as the client at `from` (in `X-Forwarded-For`; the test itself
/// is a trusted proxy) or directly, with `token`. The status and `Retry-After`.
async fn put(
    h: &Server,
    from: Option<&str>,
    token: Option<&str>,
    body: &serde_json::Value,
) -> (u16, Option<u64>) {
    let mut req = reqwest::Client::new()
        .put(format!("{}/_stepgate/api/devices/posture", h.base))
        .json(body);
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), retry_after(&r))
}

fn posture(device: &str) -> serde_json::Value {
    json!({ "device_id": device, "platform": "macos", "posture": { "firewall": true } })
}

#[tokio::test]
async fn requests_without_a_valid_token_are_bounded_per_address() {
    const FLOODER: &str = "192.0.2.60";
    let h = start("{ api: { per_address: 4/1h, per_source: 1000/1h } }").await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        // Wrong tokens and no token, pushes and reads: one budget for the address.
        let token = (i % 3 != 0).then(|| format!("guess-{i}"));
        let (s, retry) = if i % 4 == 3 {
            let mut req = reqwest::Client::new()
                .get(format!("{}/_stepgate/api/devices/mac-1", h.base))
                .header("x-forwarded-for", FLOODER);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), retry_after(&r))
        } else {
            put(&h, Some(FLOODER), token.as_deref(), &posture("mac-1")).await
        };
        if s == 429 {
            let retry = retry.expect("a 429 says when to come back");
            assert!((1..=3600).contains(&retry), "Retry-After {retry}");
        }
        statuses.push(s);
    }
    let mut want = vec![401; 4];
    want.extend([429; 8]);
    assert_eq!(statuses, want);

    // Another address still gets its answer, and the source's own token is served from the
    // flooded address: its requests count against the source's budget.
    assert_eq!(
        put(&h, Some("198.51.100.7"), None, &posture("mac-1"))
            .await
            .0,
        401
    );
    let (s, _) = put(&h, Some(FLOODER), Some(TOKEN), &posture("mac-1")).await;
    assert_eq!(s, 200);
    assert_eq!(audit(&h.st, Some("device.posture")).await.len(), 1);

    // Requests whose address cannot be read share one budget, however they spell it.
    let mut statuses = Vec::new();
    for garbage in [
        "unknown",
        "",
        "not-an-ip",
        "1.2.3.4.5",
        "1.2.3",
        "_hidden",
        "x",
        "y",
    ] {
        statuses.push(put(&h, Some(garbage), None, &posture("mac-1")).await.0);
    }
    let mut want = vec![401; 4];
    want.extend([429; 4]);
    assert_eq!(statuses, want);
}

#[tokio::test]
async fn a_source_is_bounded_and_its_dropped_pushes_summed_up_once_per_window() {
    const WINDOW: i64 = 5;
    let h = start(&format!(
        "{{ api: {{ per_address: 1000/1h, per_source: 5/{WINDOW}s }} }}"
    ))
    .await;
    let before = audit(&h.st, None).await.len();
    // Start at the beginning of a window, so the burst falls in one.
    let window_end = window_start(WINDOW).await;

    // An agent may claim no more than `registered`: each push is refused and audited, from
    // whichever address it comes.
    let mut statuses = Vec::new();
    for i in 0..20 {
        let mut p = posture(&format!("mac-{i}"));
        p["state"] = json!("managed");
        let from = format!("203.0.113.{}", i + 1);
        statuses.push(put(&h, Some(&from), Some(TOKEN), &p).await.0);
    }
    let mut want = vec![400; 5];
    want.extend([429; 15]);
    assert_eq!(statuses, want);
    assert_eq!(audit(&h.st, Some("device.posture.refused")).await.len(), 5);
    assert!(
        chrono::Utc::now().timestamp_millis() < window_end,
        "the burst outlasted its {WINDOW}s window: too slow a machine for this test"
    );

    after_window(window_end).await;
    let summary = audit(&h.st, Some("device.rate_limited")).await;
    assert_eq!(summary.len(), 1, "{summary:?}");
    let d = &summary[0].detail;
    assert_eq!(
        (&d["budget"], &d["dropped"], &d["first_over"]),
        (&json!("source"), &json!(15), &json!("laptop-agent")),
        "{d}"
    );
    assert_eq!(audit(&h.st, None).await.len(), before + 5 + 1);

    // The next window takes the source's pushes again.
    let (s, _) = put(&h, None, Some(TOKEN), &posture("mac-1")).await;
    assert_eq!(s, 200);
}
