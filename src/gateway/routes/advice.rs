//! Advice: `GET /v1/advice` (computed by the domain's engine from the caller's risk profile,
//! portfolio and the listed instruments; gated by consent and the compliance rules; unusual
//! advice held for review), `POST /v1/advice/{id}/accept` (its orders through the normal order
//! path, idempotently), and the compliance review queue.

use super::meta;
use super::unavailable;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply, AdviceRecord, AdviceStatus};
use crate::domain::advice::{DISCLOSURE, MODEL_VERSION};
use crate::domain::money::plain_string;
use crate::domain::portfolio::PortfolioReply;
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use crate::workflows::accept_advice::{Accepted, NotAccepted};
use crate::workflows::advice::AdviceError;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;

/// The advice's `status` as API.md names it: advice a compliance officer approved is published
/// to the investor like advice that needed no review (`review_decision` says it was reviewed).
/// Rejected advice is not published and keeps its own word; accepted advice is never the
/// current advice (the next GET computes advice on the new holdings), only an export shows it.
fn status_text(s: AdviceStatus) -> &'static str {
    match s {
        AdviceStatus::Published | AdviceStatus::Approved => "published",
        AdviceStatus::PendingReview => "pending_review",
        AdviceStatus::Rejected => "rejected",
        AdviceStatus::Accepted => "accepted",
    }
}

/// A compliance officer's decision on held advice, if there was one.
fn review_decision(r: &AdviceRecord) -> Option<&'static str> {
    match r.status {
        AdviceStatus::Approved => Some("approved"),
        AdviceStatus::Rejected => Some("rejected"),
        AdviceStatus::Accepted if r.advice.review_reason.is_some() => Some("approved"),
        _ => None,
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
        // The cash the model keeps (its buffer, and whatever no permitted product takes): with
        // the weights above it sums to 1.
        "cash_weight": plain_string(rust_decimal::Decimal::ONE - r.advice.target_allocation.iter().map(|(_, w)| *w).sum::<rust_decimal::Decimal>()),
        "proposed_orders": r.advice.proposed_orders.iter().map(|o| json!({"symbol": o.symbol, "side": o.side.as_str(), "quantity": plain_string(o.quantity)})).collect::<Vec<_>>(),
        "status": status_text(r.status),
        "review_decision": review_decision(r),
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
        RouteError::Rejected(r @ AccountRejection::AdviceOutdated) => ApiError::new(
            StatusCode::CONFLICT,
            r.code(),
            "the advice sells more than you hold now; GET /v1/advice for advice on your current holdings",
        ),
        RouteError::Rejected(r) => ApiError::unprocessable(r.code(), "refused"),
        RouteError::Failed(e) => unavailable(e),
    }
}

fn advice_error(e: AdviceError) -> ApiError {
    match e {
        AdviceError::Refused { code, reason } => ApiError::new(StatusCode::CONFLICT, code, reason),
        AdviceError::Account(e) => account_error(e),
        AdviceError::Unavailable(e) => unavailable(e),
        AdviceError::Unexpected => ApiError::internal(),
    }
}

/// GET /v1/advice — the caller's current advice (recomputed from the latest numbers; unchanged
/// advice keeps its id and status).
pub async fn get(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let record = crate::workflows::advice::compute(state, &claims.sub, meta(req, &claims.sub))
        .await
        .map_err(advice_error)?;
    Ok(private_json(StatusCode::OK, &view(&record)))
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
    let accepted = crate::workflows::accept_advice::accept(state, &claims.sub, advice_id, key, meta(req, &claims.sub))
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
            state.valuations.mark_stale(&claims.sub);
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
    // Every group's queue, also those of groups this node holds no replica of.
    let queue = state.router.review_queue().await.map_err(unavailable)?;
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
            None => state
                .router
                .journal()
                .write(crate::storage::records::set_review(&advice_id, &user_id, false))
                .await
                .map_err(unavailable)?,
        }
    }
    Ok(private_json(StatusCode::OK, &out))
}

/// POST /v1/compliance/review-queue/{advice_id} — approve or reject held advice.
pub async fn review(state: &AppState, req: &Req, advice_id: &str) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let (approve, note) = super::review_of(req)?;
    let user_id = state
        .router
        .review_queue()
        .await
        .map_err(unavailable)?
        .into_iter()
        .find(|(a, _)| a == advice_id)
        .map(|(_, u)| u)
        .ok_or_else(|| ApiError::not_found("no such advice in the review queue"))?;
    let cmd = AccountCommand::ReviewAdvice {
        advice_id: advice_id.to_string(),
        approve,
        note,
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
    state
        .router
        .journal()
        .write(crate::storage::records::set_review(advice_id, &user_id, false))
        .await
        .map_err(unavailable)?;
    Ok(private_json(StatusCode::OK, &view(&record)))
}
