//! Advice: `GET /v1/advice` (computed by the domain's engine from the caller's risk profile,
//! portfolio and the listed instruments; gated by consent and the compliance rules; unusual
//! advice held for review), `POST /v1/advice/{id}/accept` (its orders through the normal order
//! path, idempotently), and the compliance review queue.

use super::meta;
use super::unavailable;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply, AdviceRecord, AdviceStatus};
use crate::domain::advice::{advise, AdviceTrigger, Product, DISCLOSURE, MODEL_VERSION};
use crate::domain::compliance::{self, ProductFacts, Purpose};
use crate::domain::money::plain_string;
use crate::domain::portfolio::{Portfolio, PortfolioReply};
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use crate::workflows::accept_advice::{AcceptAdvice, Accepted, NotAccepted};
use crate::workflows::{self, BrokerEffects};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use warp::http::StatusCode;

fn status_text(s: AdviceStatus) -> &'static str {
    match s {
        AdviceStatus::Published => "published",
        AdviceStatus::PendingReview => "pending_review",
        AdviceStatus::Approved => "approved",
        AdviceStatus::Rejected => "rejected",
        AdviceStatus::Accepted => "accepted",
    }
}

pub fn view(r: &AdviceRecord) -> serde_json::Value {
    json!({
        "advice_id": r.advice_id,
        "generated_by": "ai",
        "model_version": MODEL_VERSION,
        "generated_at": r.generated_at.to_rfc3339(),
        "disclosure": DISCLOSURE,
        "rationale": r.advice.rationale,
        "risk_band": r.advice.risk_band.as_str(),
        "target_allocation": r.advice.target_allocation.iter().map(|(s, w)| json!({"symbol": s, "weight": plain_string(*w)})).collect::<Vec<_>>(),
        "proposed_orders": r.advice.proposed_orders.iter().map(|o| json!({"symbol": o.symbol, "side": o.side.as_str(), "quantity": plain_string(o.quantity)})).collect::<Vec<_>>(),
        "status": status_text(r.status),
        "review_reason": r.advice.review_reason,
        "review_note": r.review_note,
    })
}

fn account_error(e: RouteError<AccountRejection>) -> ApiError {
    match e {
        RouteError::Rejected(AccountRejection::UnknownAdvice) => ApiError::not_found("no such advice"),
        RouteError::Rejected(r @ AccountRejection::AdviceNotActionable(_)) => {
            ApiError::new(StatusCode::CONFLICT, r.code(), "the advice cannot be acted on in its current state")
        }
        RouteError::Rejected(r) => ApiError::unprocessable(r.code(), "refused"),
        RouteError::Failed(e) => unavailable(e),
    }
}

/// GET /v1/advice — the caller's current advice (recomputed from the latest numbers; unchanged
/// advice keeps its id and status).
pub async fn get(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let record = compute(state, &claims.sub, meta(req, &claims.sub)).await?;
    Ok(private_json(StatusCode::OK, &view(&record)))
}

/// Computes the user's advice from their profile, portfolio and the listed instruments (gated by
/// consent and the compliance rules) and issues it to their account: unchanged advice keeps
/// its id and status; unusual advice goes to the review queue.
async fn compute(state: &AppState, user_id: &str, request: RequestMeta) -> Result<AdviceRecord, ApiError> {
    let crate::domain::queries::AdviceInputs {
        ai_profiling: consent,
        investor,
        profile,
    } = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::ForAdvice)
        .await
        .map_err(unavailable)?;
    if !consent {
        let _ = state
            .router
            .audit(
                crate::domain::audit::AuditDraft::refused("advice.request", "consent_required"),
                &format!("account/{user_id}"),
                &request,
                false,
            )
            .await;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "consent_required",
            "personalised advice needs your ai_profiling consent",
        ));
    }
    // The compliance rules engine gates advice as it gates orders (KYC, screening, questionnaire).
    let any = ProductFacts { complex: false, risk_class: 1 };
    if let Err(rule) = compliance::check(&investor, any, Purpose::Advise) {
        let _ = state
            .router
            .audit(
                crate::domain::audit::AuditDraft::refused("advice.request", rule.code()),
                &format!("account/{user_id}"),
                &request,
                false,
            )
            .await;
        return Err(ApiError::new(StatusCode::CONFLICT, rule.code(), rule.reason()));
    }
    let profile = profile.ok_or_else(ApiError::internal)?;
    let (cash, holdings) = state
        .router
        .query::<Portfolio, _>(user_id, crate::domain::queries::Holdings)
        .await
        .map_err(unavailable)?;
    let holdings = holdings.into_iter().map(|(s, h)| (s, h.quantity)).collect();
    let mut universe = Vec::new();
    for symbol in state.symbols() {
        if let Some(q) = super::market::quote(state, &symbol).await? {
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
        .map_err(account_error)?
    {
        AccountReply::Advice(r) => r,
        _ => return Err(ApiError::internal()),
    };
    if record.status == AdviceStatus::PendingReview {
        state.router.store().set_review(&record.advice_id, Some(user_id)).map_err(unavailable)?;
    }
    state.valuations.rebase(user_id);
    Ok(record)
}

/// Recomputes the advice of users who have advice when something it depends on changed: a held
/// instrument moved sharply (reported by their live valuation), they moved cash or placed an
/// order themselves, or answered the questionnaire again. Users who never asked for advice, or
/// withdrew consent, are left alone. Triggers that pile up while it works are merged per user.
pub async fn advice_worker(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
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
                Err(e) => tracing::info!(code = e.code, reason = why.reason(), "advice not recomputed"),
            }
        }
    }
}

/// POST /v1/advice/{advice_id}/accept — places the advice's orders. The body is empty or `{}`.
/// Idempotency-Key: order i is placed under [`series_key`]`(key, i)` — the client's key itself
/// for the first, so the key is spent for any other request — fingerprinted by the advice and
/// the index. A retry with the key replays every order's first answer (and places any a crash
/// left unplaced), even after newer advice replaced the accepted one; accepted advice cannot be
/// accepted again under another key (409 `advice_already_accepted`).
pub async fn accept(state: &AppState, req: &Req, advice_id: &str) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let key = req.idempotency_key()?;
    if !req.body.is_empty() {
        let AcceptBody {} = req.json()?;
    }
    let _one_at_a_time = state.accepting.lock(&claims.sub).await;
    let flow = AcceptAdvice::new(
        claims.sub.clone(),
        advice_id.to_string(),
        key,
        meta(req, &claims.sub),
        super::portfolio::order_terms(state),
        state.symbols().into_iter().collect(),
    );
    let accepted = workflows::run(&state.router, &BrokerEffects(state.broker.as_ref()), flow)
        .await
        .map_err(unavailable)?;
    let orders: Vec<serde_json::Value> = match accepted {
        Ok(Accepted::Remembered(replies)) => replies.into_iter().map(remembered_order).collect(),
        Ok(Accepted::Orders(outcomes)) => {
            let mut placed = Vec::new();
            for (o, outcome) in outcomes {
                match super::portfolio::order_view(outcome) {
                    Ok(order) => placed.push(serde_json::to_value(order).unwrap_or_default()),
                    Err(e) if e.code != "idempotency_key_reused" && (e.status == StatusCode::UNPROCESSABLE_ENTITY || e.status == StatusCode::NOT_FOUND) => {
                        placed.push(
                            json!({"symbol": o.symbol, "side": o.side.as_str(), "quantity": plain_string(o.quantity), "status": "refused", "code": e.code}),
                        )
                    }
                    Err(e) => return Err(e),
                }
            }
            super::eod::refresh_valuation(state, &claims.sub).await;
            placed
        }
        Err(NotAccepted::Portfolio(r)) => return Err(super::portfolio::rejection(r)),
        Err(NotAccepted::Account(r)) => return Err(account_error(RouteError::Rejected(r))),
        Err(NotAccepted::Unexpected) => return Err(ApiError::internal()),
    };
    Ok(private_json(StatusCode::CREATED, &json!({ "advice_id": advice_id, "orders": orders })))
}

/// Accepting advice takes no fields.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptBody {}

/// An order of accepted advice as its idempotency memory answers it, for a retry after the
/// advice itself was replaced. A refusal's memory holds only its code.
fn remembered_order(reply: PortfolioReply) -> serde_json::Value {
    match reply {
        PortfolioReply::Order(o) => serde_json::to_value(super::portfolio::OrderView::from(&o)).unwrap_or_default(),
        PortfolioReply::Refused(r) => json!({"status": "refused", "code": r.code()}),
        PortfolioReply::Cash { .. } | PortfolioReply::Statement(_) => json!({"status": "refused", "code": "idempotency_key_reused"}),
    }
}

/// GET /v1/compliance/review-queue — advice held for human review.
pub async fn review_queue(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    state.claims(req)?;
    let queue = state.router.store().review_queue().map_err(unavailable)?;
    let mut out = Vec::new();
    for (advice_id, user_id) in queue {
        let record = state
            .router
            .query::<Account, _>(&user_id, crate::domain::queries::CurrentAdvice)
            .await
            .map_err(unavailable)?;
        match record.filter(|r| r.advice_id == advice_id && r.status == AdviceStatus::PendingReview) {
            Some(r) => {
                let mut v = view(&r);
                v["user_id"] = json!(user_id);
                out.push(v);
            }
            // Superseded, deleted (consent withdrawn) or decided: off the queue.
            None => state.router.store().set_review(&advice_id, None).map_err(unavailable)?,
        }
    }
    Ok(private_json(StatusCode::OK, &out))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewBody {
    /// "approve" or "reject".
    decision: String,
    #[serde(default)]
    note: String,
}

/// POST /v1/compliance/review-queue/{advice_id} — approve or reject held advice.
pub async fn review(state: &AppState, req: &Req, advice_id: &str) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let b: ReviewBody = req.json()?;
    let approve = match b.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::bad_request("decision must be approve or reject")),
    };
    if b.note.chars().count() > 1000 {
        return Err(ApiError::bad_request("note is limited to 1000 characters"));
    }
    let user_id = state
        .router
        .store()
        .review_queue()
        .map_err(unavailable)?
        .into_iter()
        .find(|(a, _)| a == advice_id)
        .map(|(_, u)| u)
        .ok_or_else(|| ApiError::not_found("no such advice in the review queue"))?;
    let cmd = AccountCommand::ReviewAdvice {
        advice_id: advice_id.to_string(),
        approve,
        note: b.note,
    };
    let record = match state
        .router
        .execute::<Account>(&user_id, cmd, meta(req, &claims.sub))
        .await
        .map_err(account_error)?
    {
        AccountReply::Advice(r) => r,
        _ => return Err(ApiError::internal()),
    };
    state.router.store().set_review(advice_id, None).map_err(unavailable)?;
    Ok(private_json(StatusCode::OK, &view(&record)))
}
