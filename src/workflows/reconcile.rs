//! Reconciliation: the broker's confirmations compared with every booked order each
//! `[broker] reconcile_interval`; each discrepancy is raised once as a
//! `security.reconciliation_discrepancy` alert (listed by GET /v1/admin/security-events).

use super::end_of_day::portfolio_ids;
use super::periodically;
use super::services::Services;
use crate::actors::RequestMeta;
use crate::domain::audit::AuditDraft;
use crate::domain::reconcile::{reconcile, Discrepancy};
use crate::domain::time::Timestamp;
use crate::storage::records::user_shard;
use crate::storage::scope::Groups;
use std::sync::Arc;

/// Booked orders younger than this are not expected to be confirmed yet.
const CONFIRMATION_GRACE_MS: i64 = 5_000;

/// What one reconciliation run found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    pub orders: usize,
    pub confirmations: usize,
    pub discrepancies: usize,
    pub alerted: usize,
}

/// Compares every booked order of the covered groups' users with the broker's confirmations of
/// them; raises each new discrepancy.
pub async fn reconcile_now(state: &Services, scope: &Groups) -> Result<ReconcileSummary, String> {
    let cutoff = Timestamp(state.now().millis() - CONFIRMATION_GRACE_MS);
    let mut booked = Vec::new();
    for user in portfolio_ids(state, scope)? {
        let h = super::portfolio_history(&state.router, &user)
            .await
            .map_err(|e| format!("portfolio history of a user: {e}"))?;
        booked.extend(h.orders.into_values().map(|o| (user.clone(), o)));
    }
    let mut confirmations = Vec::new();
    let mut discrepancies = Vec::new();
    for c in state.broker.confirmations(scope)? {
        match c {
            Ok(c) => confirmations.push(c),
            Err((key, error)) => discrepancies.push(Discrepancy::Unreadable { key, error }),
        }
    }
    discrepancies.extend(reconcile(&booked, &confirmations, cutoff));
    let mut summary = ReconcileSummary {
        orders: booked.len(),
        confirmations: confirmations.len(),
        discrepancies: discrepancies.len(),
        alerted: 0,
    };
    for d in &discrepancies {
        // Marked in the shard of the user it is about (of the record, when unreadable): in the
        // group whose leader found it, so the next leader knows it was raised.
        let shard = match d {
            Discrepancy::Missing { user_id, .. } | Discrepancy::Unknown { user_id, .. } | Discrepancy::Mismatch { user_id, .. } => user_shard(user_id),
            Discrepancy::Unreadable { key, .. } => crate::domain::ids::shard_of(key),
        };
        if state.router.store().is_alerted(shard, &d.key()).map_err(|e| e.to_string())? {
            continue;
        }
        let mut draft = AuditDraft::refused("security.reconciliation_discrepancy", d.kind());
        let subject = match d {
            Discrepancy::Missing { order_id, user_id } | Discrepancy::Unknown { order_id, user_id } => {
                draft = draft.detail("order_id", order_id);
                format!("portfolio/{user_id}")
            }
            Discrepancy::Mismatch {
                order_id,
                user_id,
                field,
                booked,
                confirmed,
            } => {
                draft = draft
                    .detail("order_id", order_id)
                    .detail("field", *field)
                    .detail("booked", booked)
                    .detail("confirmed", confirmed);
                format!("portfolio/{user_id}")
            }
            Discrepancy::Unreadable { key, error } => {
                draft = draft.detail("record", key).detail("error", error);
                "broker".to_string()
            }
        };
        tracing::error!(kind = d.kind(), "reconciliation discrepancy");
        // The alert and the mark that it was raised are one commit: never one without the other.
        let mark = crate::storage::records::alerted(shard, &d.key());
        state.router.audit_with(draft, &subject, &RequestMeta::system("reconciliation"), mark).await?;
        summary.alerted += 1;
    }
    Ok(summary)
}

pub async fn reconciliation_job(state: Arc<Services>, stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.broker.reconcile_interval;
    periodically(every, stop, state.router.clone(), |led| async {
        let led = led;
        match reconcile_now(&state, &led).await {
            Ok(s) if s.alerted > 0 => tracing::warn!(alerts = s.alerted, orders = s.orders, "reconciliation raised alerts"),
            Ok(s) => tracing::debug!(orders = s.orders, confirmations = s.confirmations, "reconciliation clean"),
            Err(e) => tracing::error!(error = %e, "reconciliation failed; retrying at the next run"),
        }
    })
    .await
}
