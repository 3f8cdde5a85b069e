//! What an investor does before trading: consents, KYC (with sanctions screening) and the
//! suitability questionnaire.

use super::identity::account_error_pub as account_error;
use super::meta;
use super::unavailable;
use crate::adapters::sanctions;
use crate::domain::account::{Account, AccountCommand, AccountReply, Consents, Profile};
use crate::domain::kyc::validate_document;
use crate::domain::suitability::{assess, parse_answers};
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
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

pub async fn submit_kyc(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let b: KycBody = req.json()?;
    let document = validate_document(&b.document_type, &b.document_number, &b.address).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let sealed_profile = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::SealedProfile)
        .await
        .map_err(unavailable)?;
    let profile: Profile = state.open_json(&claims.sub, "profile", &sealed_profile).await.map_err(unavailable)?;
    let status = state.kyc.verify(&claims.sub, &document).await.map_err(unavailable)?;
    let screening = sanctions::screen(&state.sanctions_list(), &profile);
    let sealed_document = state.seal_json(&claims.sub, "kyc", &document).await.map_err(unavailable)?;
    let cmd = AccountCommand::SubmitKyc {
        document_type: document.document_type,
        sealed_document,
        provider: state.kyc.name().to_string(),
        status,
        screening,
    };
    state
        .router
        .execute::<Account>(&claims.sub, cmd, meta(req, &claims.sub))
        .await
        .map_err(account_error)?;
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
    let sealed_answers = state.seal_json(&claims.sub, "suitability", &answers).await.map_err(unavailable)?;
    let cmd = AccountCommand::SetSuitability {
        profile: profile.clone(),
        sealed_answers,
    };
    state
        .router
        .execute::<Account>(&claims.sub, cmd, meta(req, &claims.sub))
        .await
        .map_err(account_error)?;
    state.valuations.trigger(&claims.sub, crate::domain::advice::AdviceTrigger::ProfileChanged);
    Ok(private_json(StatusCode::OK, &profile))
}
