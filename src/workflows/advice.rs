//! Advice: computed from the investor's profile, portfolio and the listed instruments (gated by
//! consent and the compliance rules), issued to their account, and recomputed by the advice
//! worker when something it depends on changed.

use super::advise::Advise;
use super::flow::NodeEffects;
use super::services::Services;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountRejection, AdviceRecord};
use crate::domain::advice::AdviceTrigger;
use std::sync::Arc;

/// Why no advice was given.
#[derive(Debug, thiserror::Error)]
pub enum AdviceError {
    /// A gate refused (consent, KYC, screening, questionnaire): `code` is the stable one.
    #[error("refused: {code}")]
    Refused { code: &'static str, reason: String },
    #[error("the account refused: {0}")]
    Account(RouteError<AccountRejection>),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("an entity answered what it should not")]
    Unexpected,
}

/// Computes the user's advice from their profile, portfolio and the listed instruments (gated by
/// consent and the compliance rules) and issues it to their account: the advice workflow
/// (`advise.rs`) over the node's router and adapters.
pub async fn compute(state: &Services, user_id: &str, request: RequestMeta) -> Result<AdviceRecord, AdviceError> {
    let policy = crate::domain::advice::AdvicePolicy {
        slippage_bps: state.config.broker.slippage_bps,
        ..state.config.advice.policy()
    };
    let flow = Advise::new(user_id.to_string(), state.symbols(), state.config.fees.schedule(), policy, request);
    super::run(&state.router, &NodeEffects(state), flow)
        .await
        .map_err(|e| AdviceError::Unavailable(e.to_string()))?
}

/// Recomputes the advice of users who have advice when something it depends on changed: a held
/// instrument moved sharply (reported by their live valuation), they moved cash or placed an
/// order themselves, or answered the questionnaire again. Users who never asked for advice, or
/// withdrew consent, are left alone. Triggers that pile up while it works are merged per user.
pub async fn advice_worker(state: Arc<Services>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(mut triggers) = state.advice_triggers.lock().ok().and_then(|mut m| m.take()) else {
        return;
    };
    loop {
        let first = tokio::select! {
            t = triggers.recv() => t,
            _ = stop.changed() => return,
        };
        let Some(first) = first else { return };
        let mut pending = std::collections::BTreeMap::from([first]);
        while let Ok((user, why)) = triggers.try_recv() {
            pending.insert(user, why);
        }
        for (user, why) in pending {
            // A stop ends the pass (each user's call may wait out the request timeout when
            // their group has no leader; the stop must not wait for all of them).
            if *stop.borrow() {
                return;
            }
            let has_advice = state.router.query::<Account, _>(&user, crate::domain::queries::HasAdvice).await;
            if !matches!(has_advice, Ok(true)) {
                continue;
            }
            let request = RequestMeta::system(format!("advice-{}", why.reason()));
            match compute(&state, &user, request.clone()).await {
                Ok(record) => {
                    let mut draft = crate::domain::audit::AuditDraft::ok("advice.recomputed")
                        .detail("reason", why.reason())
                        .detail("advice_id", &record.advice_id);
                    if let AdviceTrigger::SharpMove(m) = &why {
                        draft = draft.detail("symbol", &m.symbol).detail("change", m.change.to_string());
                    }
                    let _ = state.router.audit(draft, &format!("account/{user}"), &request, false).await;
                }
                Err(e) => tracing::info!(error = %e, reason = why.reason(), "advice not recomputed"),
            }
        }
    }
}
