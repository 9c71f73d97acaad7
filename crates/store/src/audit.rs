//! Checking the audit log's hash chain.

use crate::error::StoreError;
use crate::model::{audit_hash, AuditEvent, AuditQuery, AUDIT_GENESIS_HASH};
use crate::traits::DurableStore;

/// Why the audit chain does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditChainError {
    /// An event's content does not match its hash: it was altered after being written.
    #[error("audit event {seq} was altered: its content does not match its hash")]
    Altered {
        /// The event's sequence number.
        seq: i64,
    },
    /// An event does not point at the one before it: events were removed or reordered.
    #[error("the audit chain is broken before event {seq}: events were removed or reordered")]
    Broken {
        /// The first event after the gap.
        seq: i64,
    },
    /// Reading the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the whole audit log in order and checks every link of the hash chain. The number of
/// events checked.
pub async fn verify_audit_chain(store: &dyn DurableStore) -> Result<u64, AuditChainError> {
    let mut prev_hash = AUDIT_GENESIS_HASH.to_owned();
    let mut prev_seq = 0;
    let mut checked = 0u64;
    loop {
        let page = store
            .list_audit(&AuditQuery {
                after_seq: Some(prev_seq),
                limit: 1000,
                ..AuditQuery::default()
            })
            .await?;
        if page.is_empty() {
            return Ok(checked);
        }
        for e in &page {
            if e.seq != prev_seq + 1 || e.prev_hash != prev_hash {
                return Err(AuditChainError::Broken { seq: e.seq });
            }
            if recompute(e)? != e.hash {
                return Err(AuditChainError::Altered { seq: e.seq });
            }
            prev_hash = e.hash.clone();
            prev_seq = e.seq;
            checked += 1;
        }
    }
}

fn recompute(e: &AuditEvent) -> Result<String, AuditChainError> {
    // The stores keep detail as compact JSON text; re-serializing the parsed value gives it back.
    let detail =
        serde_json::to_string(&e.detail).map_err(|err| StoreError::corrupt("audit detail", err))?;
    Ok(audit_hash(
        &e.prev_hash,
        e.seq,
        &e.id,
        e.time.timestamp_millis(),
        &e.kind,
        e.actor.as_deref(),
        e.subject.as_deref(),
        e.ip.as_deref(),
        &detail,
    ))
}
