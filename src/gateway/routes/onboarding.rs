//! What an investor does before trading: consents, KYC (with sanctions screening) and the
//! suitability questionnaire.

use super::identity::account_error_pub as account_error;
use super::meta;
use super::unavailable;
use crate::domain::account::{Account, AccountCommand, AccountReply, Consents};
use crate::domain::kyc::validate_document;
use crate::domain::suitability::{assess, parse_answers};
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use crate::workflows::flow::NodeEffects;
use crate::workflows::onboarding::{Onboarded, SetSuitability, SubmitKyc};
use serde::Deserialize;
use warp::http::StatusCode;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentsBody {
    ai_profiling: bool,
    marketing: bool,
    analytics: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KycBody {
    document_type: String,
    document_number: String,
    address: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuitabilityBody {
    /// objective, horizon_years, loss_tolerance, investment_experience_years,
    /// knows_complex_products, annual_income, liquid_net_worth, emergency_fund_months (all required).
    #[schema(value_type = Object)]
    answers: serde_json::Value,
}

pub async fn put_consents(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let b: ConsentsBody = req.json()?;
    let consents = Consents {
        ai_profiling: b.ai_profiling,
        marketing: b.marketing,
        analytics: b.analytics,
    };
    match state
        .router
        .execute::<Account>(&claims.sub, AccountCommand::SetConsents(consents), meta(req, &claims.sub))
        .await
        .map_err(account_error)?
    {
        AccountReply::Consents(c) => Ok(private_json(StatusCode::OK, &c)),
        _ => Err(ApiError::internal()),
    }
}

/// What an onboarding step's end means to the client.
fn onboarded(o: Onboarded) -> Result<(), ApiError> {
    match o {
        Onboarded::Recorded => Ok(()),
        Onboarded::Refused(r) => Err(account_error(crate::cluster::RouteError::Rejected(r))),
        Onboarded::Unavailable(e) => Err(unavailable(e)),
    }
}

pub async fn submit_kyc(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let b: KycBody = req.json()?;
    let document = validate_document(&b.document_type, &b.document_number, &b.address).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let flow = SubmitKyc::new(claims.sub.clone(), document, state.kyc.name().to_string(), meta(req, &claims.sub));
    onboarded(crate::workflows::run(&state.router, &NodeEffects(state), flow).await.map_err(unavailable)?)?;
    let (kyc, screening) = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::OnboardingStatus)
        .await
        .map_err(unavailable)?;
    Ok(private_json(
        StatusCode::OK,
        &serde_json::json!({ "kyc_status": kyc.as_str(), "screening": screening }),
    ))
}

pub async fn suitability(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let b: SuitabilityBody = req.json()?;
    let answers = parse_answers(&b.answers).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let profile = assess(&answers);
    let flow = SetSuitability::new(claims.sub.clone(), answers, profile.clone(), meta(req, &claims.sub));
    onboarded(crate::workflows::run(&state.router, &NodeEffects(state), flow).await.map_err(unavailable)?)?;
    state.valuations.trigger(&claims.sub, crate::domain::advice::AdviceTrigger::ProfileChanged);
    Ok(private_json(StatusCode::OK, &profile))
}
