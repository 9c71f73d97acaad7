//! Fixed rate-limit windows, aligned to the epoch as stepgate's are.

use std::time::Duration;

/// Waits until a window of `secs` seconds has just begun, so a burst sent now falls in one
/// window; returns the window's end (Unix milliseconds).
pub async fn window_start(secs: i64) -> i64 {
    let ms = secs * 1000;
    let now = chrono::Utc::now().timestamp_millis();
    let next = (now / ms + 1) * ms;
    tokio::time::sleep(Duration::from_millis((next - now + 20) as u64)).await;
    next + ms
}

/// Waits until 2.5 s after a window's end (Unix milliseconds), by when stepgate has summed
/// up the requests it dropped in that window.
pub async fn after_window(end_ms: i64) {
    let wait = end_ms - chrono::Utc::now().timestamp_millis() + 2_500;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
}
