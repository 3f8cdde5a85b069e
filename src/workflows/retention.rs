//! Retention: security events holding personal data past `[retention] security_events` are
//! redacted from the audit chain (after a `retention.redact` record lists them), regulatory
//! identities past `[retention] regulatory_records` lose their key, old notifications go.

use super::periodically;
use super::services::Services;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand};
use crate::domain::audit::AuditDraft;
use crate::domain::time::Timestamp;
use crate::storage::scope::Groups;

/// The `security.*` audit records that are personal data — who signed in, from which device,
/// session or address, who was refused or locked out — and so are redacted once
/// `[retention] security_events` has passed.
///
/// An explicit list rather than the `security.` prefix: not every security event is personal
/// data. Audit records of any other action are kept, as the chain keeps business records.
pub const PERSONAL_SECURITY_EVENTS: &[&str] = &[
    "security.access_denied",
    "security.lockout",
    "security.login",
    "security.login_failed",
    "security.login_locked",
    "security.logout",
    "security.new_device",
    "security.refresh",
    "security.refresh_token_reused",
];

/// The `security.*` audit records that retention keeps: a reconciliation discrepancy (order id,
/// booked and confirmed values) is a transaction record that must be kept, not personal data,
/// and the daily compliance report reads it. Listed so that every security event is classified
/// on purpose: the test `every_security_event_is_classified` fails on an action in neither list.
pub const KEPT_SECURITY_EVENTS: &[&str] = &["security.reconciliation_discrepancy"];

/// Whether retention redacts audit records of `action` once they are older than
/// `[retention] security_events`.
pub fn redacted_after_retention(action: &str) -> bool {
    PERSONAL_SECURITY_EVENTS.contains(&action)
}

/// What one retention run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RetentionSummary {
    pub security_events_redacted: usize,
    pub regulatory_records_expired: usize,
    pub accounts_checked: usize,
}

/// Enforces `[retention]` as of `now`: security events holding personal data
/// ([`PERSONAL_SECURITY_EVENTS`]) past their period are redacted from the audit chain (after a
/// `retention.redact` record lists them), old notifications deleted.
pub async fn run_retention(state: &Services, now: Timestamp, scope: Groups) -> Result<RetentionSummary, String> {
    let cfg = &state.config.retention;
    let mut summary = RetentionSummary::default();
    let store = state.router.store().clone();
    let cutoff = Timestamp(now.millis() - cfg.security_events.as_millis() as i64);
    let in_scope = scope.clone();
    let due = tokio::task::spawn_blocking(move || store.audit_due_for_redaction(cutoff, &in_scope, |r| redacted_after_retention(&r.action)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliation_discrepancies_are_kept_and_sign_in_records_redacted() {
        assert!(!redacted_after_retention("security.reconciliation_discrepancy"));
        for action in ["security.login", "security.login_failed", "security.access_denied", "security.new_device"] {
            assert!(redacted_after_retention(action), "{action}");
        }
        // Business records are never redacted by retention.
        assert!(!redacted_after_retention("kyc.submit"));
        assert!(!redacted_after_retention(crate::storage::audit_log::REDACT_ACTION));
    }

    /// Every `security.<kind>` action an audit draft is made with anywhere in `src/`
    /// (`AuditDraft::ok("security.…")`, `AuditDraft::refused("security.…", …)`) is in exactly one
    /// of the two lists: a new personal security event left out of `PERSONAL_SECURITY_EVENTS`
    /// would otherwise be kept for good, silently.
    #[test]
    fn every_security_event_is_classified() {
        fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        sources(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut found = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (at, _) in text.match_indices("\"security.") {
                let rest = &text[at + 1..];
                let name_len = rest["security.".len()..]
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len() - "security.".len());
                let end = "security.".len() + name_len;
                // A whole literal `"security.<kind>"` (not the bare prefix `"security."`) that
                // names the action of an audit draft (not, say, a configuration key).
                let drafted = text[..at].ends_with("ok(") || text[..at].ends_with("refused(");
                if drafted && name_len > 0 && rest[end..].starts_with('"') {
                    found.insert(rest[..end].to_string());
                }
            }
        }
        assert!(
            found.contains("security.login") && found.contains("security.reconciliation_discrepancy"),
            "{found:?}"
        );
        for action in &found {
            let personal = PERSONAL_SECURITY_EVENTS.contains(&action.as_str());
            let kept = KEPT_SECURITY_EVENTS.contains(&action.as_str());
            assert!(
                personal != kept,
                "{action} must be in exactly one of PERSONAL_SECURITY_EVENTS (redacted) or KEPT_SECURITY_EVENTS (kept)"
            );
        }
    }
}
