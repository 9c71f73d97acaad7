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
            if recompute(e) != e.hash {
                return Err(AuditChainError::Altered { seq: e.seq });
            }
            prev_hash = e.hash.clone();
            prev_seq = e.seq;
            checked += 1;
        }
    }
}

/// The hash of `e` as its store keeps it: over its detail's text as stored, which is what
/// the hash was made over (serialising the parsed detail again need not give that text
/// back).
fn recompute(e: &AuditEvent) -> String {
    audit_hash(
        &e.prev_hash,
        e.seq,
        &e.id,
        e.time.timestamp_millis(),
        &e.kind,
        e.actor.as_deref(),
        e.subject.as_deref(),
        e.ip.as_deref(),
        &e.detail_text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewAuditEvent, SecretKey, SqliteConfig, SqliteStore};

    /// An event whose detail another build of stepgate wrote (its keys in an order, its
    /// spacing, as this build's serializer would not write them) verifies over the text
    /// stored; changing that text is still an alteration.
    #[tokio::test]
    async fn the_chain_covers_the_detail_as_stored_not_as_serialised_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stepgate.db");
        let config = SqliteConfig {
            path: path.clone(),
            ..SqliteConfig::default()
        };
        let store = SqliteStore::open(&config, dir.path(), &SecretKey::generate())
            .await
            .unwrap();
        let first = store
            .append_audit(&NewAuditEvent::now("login.success"))
            .await
            .unwrap();
        let detail = r#"{"user": "jane", "app": "caf\u00e9", "reasons": ["new_device"]}"#;
        let (id, time) = ("another-build", first.time.timestamp_millis() + 1);
        let hash = audit_hash(
            &first.hash,
            2,
            id,
            time,
            "signout",
            None,
            None,
            None,
            detail,
        );
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO audit_events (seq, id, time, kind, actor, subject, ip, detail_json, \
             prev_hash, hash) VALUES (2, ?, ?, 'signout', NULL, NULL, NULL, ?, ?, ?)",
        )
        .bind(id)
        .bind(time)
        .bind(detail)
        .bind(&first.hash)
        .bind(&hash)
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(verify_audit_chain(&store).await.unwrap(), 2);
        let read = store.list_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(read[1].detail["app"], "café");
        assert_eq!(read[1].detail_text, detail);

        // Without its stored text (as an export carries it), the event does not verify;
        // nor with a changed text.
        let mut exported = read[1].clone();
        exported.detail_text.clear();
        assert!(recompute(&exported) != exported.hash);
        exported.detail_text = detail.replace("jane", "joan");
        assert!(recompute(&exported) != exported.hash, "altered");
        pool.close().await;
    }
}
