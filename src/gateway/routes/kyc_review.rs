//! Identity documents the KYC provider sent to review (a document number starting `REVIEW`
//! with the sandbox provider): a compliance officer decides them. While they wait, the person
//! cannot send other documents to go round the review (409 `kyc_in_review`).
//!
//! `GET /v1/compliance/kyc-reviews` lists the people waiting, oldest submission first, from the
//! audit trail's `kyc.submit` records that went to review, each checked against the account's
//! current status. `POST /v1/compliance/kyc-reviews/{user_id}` decides:
//! `{decision: "approve"|"reject", note}` → 200 `{user_id, kyc_status}`.

use super::identity::account_error_pub as account_error;
use super::{meta, unavailable};
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection};
use crate::domain::kyc::KycStatus;
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use warp::http::StatusCode;

/// At most this many submissions are looked through for the list (newest first).
const SUBMISSIONS_SCANNED_MAX: usize = 10_000;

/// GET /v1/compliance/kyc-reviews — the people whose documents wait for a decision.
pub async fn list(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    state.claims(req)?;
    // Every group's submissions, also those of groups this node holds no replica of.
    let query = crate::domain::audit::AuditQuery::ActionWithStatus {
        action: "kyc.submit".into(),
        status: KycStatus::Review.as_str().into(),
        equal: true,
    };
    let submitted = state.router.audit_where(query, SUBMISSIONS_SCANNED_MAX).await.map_err(unavailable)?;
    // Newest first: a person's latest submission to review, once each.
    let mut seen = std::collections::BTreeSet::new();
    let mut waiting = Vec::new();
    for r in submitted.iter().rev().take(SUBMISSIONS_SCANNED_MAX) {
        let Some(user_id) = r.entity.strip_prefix("account/").map(str::to_string) else {
            continue;
        };
        if !seen.insert(user_id.clone()) {
            continue;
        }
        let (kyc, _) = state
            .router
            .query::<Account, _>(&user_id, crate::domain::queries::OnboardingStatus)
            .await
            .map_err(unavailable)?;
        if kyc == KycStatus::Review {
            waiting.push(serde_json::json!({
                "user_id": user_id,
                "submitted_at": r.at.to_rfc3339(),
                "document_type": r.details.get("document_type"),
                "provider": r.details.get("provider"),
            }));
        }
    }
    waiting.reverse();
    Ok(private_json(StatusCode::OK, &waiting))
}

/// POST /v1/compliance/kyc-reviews/{user_id} — approve or reject documents in review.
pub async fn decide(state: &AppState, req: &Req, user_id: &str) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let (approve, note) = super::review_of(req)?;
    state
        .router
        .execute::<Account>(user_id, AccountCommand::ReviewKyc { approve, note }, meta(req, &claims.sub))
        .await
        .map_err(|e| match e {
            RouteError::Rejected(AccountRejection::KycNotInReview) => ApiError::new(
                StatusCode::CONFLICT,
                "kyc_not_in_review",
                "this user has no identity documents waiting for a review",
            ),
            RouteError::Rejected(AccountRejection::NotRegistered) => ApiError::not_found("no such user"),
            e => account_error(e),
        })?;
    let (kyc, screening) = state
        .router
        .query::<Account, _>(user_id, crate::domain::queries::OnboardingStatus)
        .await
        .map_err(unavailable)?;
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({ "user_id": user_id, "kyc_status": kyc.as_str(), "screening": screening }),
    ))
}
