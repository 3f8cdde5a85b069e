//! Retention: security events past `[retention] security_events` are redacted from the audit
//! chain (after a `retention.redact` record lists them), regulatory identities past
//! `[retention] regulatory_records` lose their key, old notifications go.

use super::periodically;
use super::services::Services;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand};
use crate::domain::audit::AuditDraft;
use crate::domain::time::Timestamp;
use crate::storage::scope::Groups;

/// What one retention run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetentionSummary {
    pub security_events_redacted: usize,
    pub regulatory_records_expired: usize,
    pub accounts_checked: usize,
}

/// Enforces `[retention]` as of `now`: security events past their period are redacted from
/// the audit chain (after a `retention.redact` record lists them), old notifications deleted.
pub async fn run_retention(state: &Services, now: Timestamp, scope: Groups) -> Result<RetentionSummary, String> {
    let cfg = &state.config.retention;
    let mut summary = RetentionSummary::default();
    let store = state.router.store().clone();
    let cutoff = Timestamp(now.millis() - cfg.security_events.as_millis() as i64);
    let in_scope = scope.clone();
    let due = tokio::task::spawn_blocking(move || store.audit_due_for_redaction(cutoff, &in_scope, |r| r.action.starts_with("security.")))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // Each group's chain is redacted by a record on that chain, applied with it on every replica.
    let mut by_group: std::collections::BTreeMap<u32, Vec<u64>> = std::collections::BTreeMap::new();
    for (g, seq) in due {
        by_group.entry(g).or_default().push(seq);
    }
    for (group, seqs) in by_group {
        for chunk in seqs.chunks(10_000) {
            let draft = AuditDraft::ok(crate::storage::audit_log::REDACT_ACTION)
                .detail("class", "security_events")
                .detail("count", chunk.len())
                .detail("before", cutoff.to_rfc3339())
                .detail("seqs", crate::storage::audit_log::ranges(chunk));
            let writes = crate::storage::store::WriteSet {
                shard: Some(u16::try_from(group).map_err(|e| e.to_string())?),
                redact: chunk.to_vec(),
                ..Default::default()
            };
            state.router.audit_with(draft, "audit", &RequestMeta::system("retention-job"), writes).await?;
            summary.security_events_redacted += chunk.len();
        }
    }
    // Regulatory identities whose retention ended: their retention key goes (crypto-shredding).
    let store = state.router.store().clone();
    let in_scope = scope.clone();
    let records = tokio::task::spawn_blocking(move || store.regulatory_records_in(&in_scope))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let expired: Vec<_> = records.into_iter().filter(|(_, r)| r.expires_at <= now).collect();
    if !expired.is_empty() {
        let draft = AuditDraft::ok("retention.expire")
            .detail("class", "regulatory_records")
            .detail("count", expired.len())
            .detail("user_ids", expired.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(","));
        state.router.audit(draft, "retention", &RequestMeta::system("retention-job"), true).await?;
        for (uid, r) in &expired {
            state.destroy_data_key(&r.key_id).await?;
            state
                .router
                .journal()
                .write(crate::storage::records::remove_regulatory(uid))
                .await
                .map_err(|e| e.to_string())?;
            summary.regulatory_records_expired += 1;
        }
    }
    let store = state.router.store().clone();
    let ids = tokio::task::spawn_blocking(move || store.entity_ids_in(crate::domain::ids::EntityKind::Account, &scope))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let before = Timestamp(now.millis() - cfg.notifications.as_millis() as i64);
    for uid in ids {
        match state
            .router
            .execute::<Account>(&uid, AccountCommand::PruneNotifications { before }, RequestMeta::system("retention-job"))
            .await
        {
            Ok(_) | Err(RouteError::Rejected(_)) => summary.accounts_checked += 1,
            Err(RouteError::Failed(e)) => return Err(format!("{uid}: {e}")),
        }
    }
    Ok(summary)
}

/// The retention job: runs every `[retention] check_interval` until `stop` is set.
pub async fn retention_job(state: std::sync::Arc<Services>, stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.retention.check_interval;
    periodically(every, stop, state.router.clone(), |led| async {
        match run_retention(&state, state.now(), led).await {
            Ok(s) if s.security_events_redacted > 0 => tracing::info!(redacted = s.security_events_redacted, "retention: security events redacted"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention job failed; retrying at the next run"),
        }
    })
    .await
}
