//! Advice: computed from the investor's profile, portfolio and the listed instruments (gated by
//! consent and the compliance rules), issued to their account, and recomputed by the advice
//! worker when something it depends on changed.

use super::services::Services;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply, AdviceRecord, AdviceStatus};
use crate::domain::advice::{advise, AdviceTrigger, Product};
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::Portfolio;
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
/// consent and the compliance rules) and issues it to their account: unchanged advice keeps
/// its id and status; unusual advice goes to the review queue.
pub async fn compute(state: &Services, user_id: &str, request: RequestMeta) -> Result<AdviceRecord, AdviceError> {
    let crate::domain::queries::AdviceInputs {
        ai_profiling: consent,
        investor,
        profile,
    } = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::ForAdvice)
        .await
        .map_err(|e| AdviceError::Unavailable(e.to_string()))?;
    // The consent, then the compliance rules engine as it gates orders (the domain's gate).
    if let Err((code, reason)) = crate::domain::advice::gate(consent, &investor) {
        let _ = state
            .router
            .audit(
                crate::domain::audit::AuditDraft::refused("advice.request", code),
                &format!("account/{user_id}"),
                &request,
                false,
            )
            .await;
        return Err(AdviceError::Refused {
            code,
            reason: reason.to_string(),
        });
    }
    let profile = profile.ok_or(AdviceError::Unexpected)?;
    let (cash, holdings) = state
        .router
        .query::<Portfolio, _>(user_id, crate::domain::queries::Holdings)
        .await
        .map_err(|e| AdviceError::Unavailable(e.to_string()))?;
    let holdings = holdings.into_iter().map(|(s, h)| (s, h.quantity)).collect();
    let mut universe = Vec::new();
    for symbol in state.symbols() {
        if let Some(q) = state
            .router
            .query::<Instrument, _>(&symbol, crate::domain::queries::CurrentQuote)
            .await
            .map_err(|e| AdviceError::Unavailable(e.to_string()))?
        {
            universe.push(Product {
                symbol,
                kind: q.listing.kind,
                risk_class: q.listing.risk_class,
                price: q.price,
            });
        }
    }
    let advice = advise(
        &profile,
        &universe,
        cash,
        &holdings,
        &state.config.fees.schedule(),
        &crate::domain::advice::AdvicePolicy {
            slippage_bps: state.config.broker.slippage_bps,
            ..state.config.advice.policy()
        },
    );
    let record = match state
        .router
        .execute::<Account>(user_id, AccountCommand::IssueAdvice { advice }, request.clone())
        .await
        .map_err(AdviceError::Account)?
    {
        AccountReply::Advice(r) => r,
        _ => return Err(AdviceError::Unexpected),
    };
    if record.status == AdviceStatus::PendingReview {
        state
            .router
            .journal()
            .write(crate::storage::records::set_review(&record.advice_id, user_id, true))
            .await
            .map_err(|e| AdviceError::Unavailable(e.to_string()))?;
    }
    state.valuations.rebase(user_id);
    Ok(record)
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
