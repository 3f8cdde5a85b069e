//! Audit records that belong to no entity command, appended through the router.

use super::*;

impl Router {
    /// Appends an audit record that belongs to no entity command (a failed login, a denied
    /// request, a staff read). With `wait` it returns once the record is durable; without, once
    /// it is queued (it is written in the next group commit) — used where an unauthenticated
    /// caller could otherwise make the node wait on the disk for every request.
    pub async fn audit(&self, draft: AuditDraft, subject: &str, meta: &RequestMeta, wait: bool) -> Result<(), String> {
        self.audit_writing(draft, subject, meta, WriteSet::default(), wait).await
    }

    /// An audit record together with other writes, in one commit (e.g. an alert and the mark
    /// that it was raised); answers once both are durable.
    pub async fn audit_with(&self, draft: AuditDraft, subject: &str, meta: &RequestMeta, writes: WriteSet) -> Result<(), String> {
        self.audit_writing(draft, subject, meta, writes, true).await
    }

    async fn audit_writing(&self, draft: AuditDraft, subject: &str, meta: &RequestMeta, mut writes: WriteSet, wait: bool) -> Result<(), String> {
        let record = AuditRecord {
            seq: 0,
            group: 0,
            at: crate::actors::wall_clock_now(),
            actor: meta.actor.clone(),
            action: draft.action,
            entity: subject.to_string(),
            request_id: meta.request_id.clone(),
            outcome: draft.outcome,
            details: draft.details,
        };
        writes.audit.push(record);
        if writes.shard.is_none() && writes.puts.is_empty() && writes.deletes.is_empty() {
            // Sealed on the chain of the subject's group (a user's records beside the user's).
            writes.shard = Some(crate::domain::ids::shard_of(subject.rsplit('/').next().unwrap_or(subject)));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .journal
            .commit(
                writes,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .await;
        if !wait {
            return Ok(());
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the audit journal stopped".into()),
        }
    }
}
