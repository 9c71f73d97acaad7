//! The audit log exported as lines: stepgate's own records (JSON lines) or OCSF events, in
//! append order, a page at a time. `stepgate audit export` writes them to a file and the
//! admin API's `GET /audit/export` streams them; both read through here.

use stepgate_config::AuditStreamFormat;
use stepgate_store::{AuditEvent, AuditQuery, DurableStore, StoreResult};

/// How many events a page reads.
pub const PAGE: u32 = 1000;

/// The line (without its newline) `e` is exported as: [`super::render`]'s JSON.
pub fn line(e: &AuditEvent, format: AuditStreamFormat) -> String {
    super::render(format, e).to_string()
}

/// The next page of `q`'s events in append order (empty at the end), moving `q` past it.
pub async fn next_page(
    store: &dyn DurableStore,
    q: &mut AuditQuery,
) -> StoreResult<Vec<AuditEvent>> {
    q.newest_first = false;
    q.limit = PAGE;
    let page = store.list_audit(q).await?;
    if let Some(last) = page.last() {
        q.after_seq = Some(last.seq);
    }
    Ok(page)
}
