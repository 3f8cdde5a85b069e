//! Registration, login and the caller's profile.
//!
//! Register: validate → hash the password (blocking pool) → claim the email in the email index
//! (first claim wins) → create the account. If an earlier registration died between the last
//! two steps, the claim names an account that does not exist and this registration completes it.

use super::unavailable;
use crate::actors::RequestMeta;
use crate::cluster::RouteError;
use crate::domain::account::{
    is_weak_password, normalise_email, validate_registration, Account, AccountCommand, AccountRejection, Profile, ProfileError, Role, PASSWORD_MIN_CHARS,
};
use crate::domain::email_index::{EmailIndex, EmailIndexCommand};
use crate::domain::time::Date;
use crate::gateway::http::{json_response, private_json, Reply, Req};
use crate::gateway::problem::ApiError;
use crate::gateway::AppState;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

const PASSWORD_MAX_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: String,
    password: String,
    full_name: String,
    date_of_birth: String,
    country: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    #[serde(default)]
    totp_code: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
}

fn validate_profile(b: &RegisterBody, today: Date) -> Result<Profile, ApiError> {
    validate_registration(&b.email, &b.full_name, &b.date_of_birth, &b.country, today).map_err(|e| match e {
        ProfileError::Underage => ApiError::unprocessable("underage", e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    })
}

fn new_user_id() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    format!("usr_{}", hex::encode(b))
}

pub async fn register(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let body: RegisterBody = req.json()?;
    let today = Date::from_timestamp(crate::actors::wall_clock_now());
    let profile = validate_profile(&body, today)?;
    if body.password.len() > PASSWORD_MAX_BYTES {
        return Err(ApiError::bad_request("password is too long"));
    }
    if is_weak_password(&body.password) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "weak_password",
            format!("use at least {PASSWORD_MIN_CHARS} characters and not a common password"),
        ));
    }
    let password_hash = state.auth.hash_password(body.password).await?;
    let email_hash = state.email_hash(&profile.email);
    let candidate = new_user_id();
    let meta = RequestMeta {
        request_id: req.request_id.clone(),
        actor: candidate.clone(),
    };
    let owner = state
        .router
        .execute::<EmailIndex>(&email_hash, EmailIndexCommand::Claim { user_id: candidate.clone() }, meta.clone())
        .await
        .map_err(|e| match e {
            RouteError::Rejected(never) => match never {},
            RouteError::Unavailable(e) => unavailable(e),
        })?;
    if owner != candidate {
        let exists = state.router.read::<Account, _>(&owner, |a| a.exists()).await.map_err(unavailable)?;
        if exists {
            return Err(ApiError::new(StatusCode::CONFLICT, "email_taken", "an account with this email already exists"));
        }
    }
    let meta = RequestMeta { actor: owner.clone(), ..meta };
    let cmd = AccountCommand::Register {
        profile,
        password_hash,
        roles: vec![Role::User],
    };
    match state.router.execute::<Account>(&owner, cmd, meta).await {
        Ok(()) => Ok(json_response(StatusCode::CREATED, &serde_json::json!({ "user_id": owner }))),
        Err(RouteError::Rejected(AccountRejection::AlreadyRegistered)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "email_taken", "an account with this email already exists"))
        }
        Err(RouteError::Unavailable(e)) => Err(unavailable(e)),
    }
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
}

pub async fn login(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let body: LoginBody = req.json()?;
    let _ = (&body.totp_code, &body.device_id);
    let invalid = || ApiError::unauthorized("the email or password is wrong").with_code("invalid_credentials");
    if body.password.len() > PASSWORD_MAX_BYTES {
        return Err(invalid());
    }
    let account = match normalise_email(&body.email) {
        Some(email) => {
            let email_hash = state.email_hash(&email);
            let owner = state
                .router
                .read::<EmailIndex, _>(&email_hash, |e| e.owner.clone())
                .await
                .map_err(unavailable)?;
            match owner {
                Some(uid) => state
                    .router
                    .read::<Account, _>(&uid, |a| a.exists().then(|| (a.user_id.clone(), a.password_hash.clone(), a.roles.clone())))
                    .await
                    .map_err(unavailable)?,
                None => None,
            }
        }
        None => None,
    };
    let stored = account.as_ref().map(|(_, h, _)| h.clone());
    if !state.auth.verify_password(body.password, stored).await? {
        return Err(invalid());
    }
    let (user_id, _, roles) = account.ok_or_else(invalid)?;
    let now_secs = crate::actors::wall_clock_now().millis() / 1000;
    let token = state.auth.issue(&user_id, &roles, now_secs);
    Ok(private_json(
        StatusCode::OK,
        &TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: state.auth.ttl_secs(),
        },
    ))
}

pub async fn me(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let view = state
        .router
        .read::<Account, _>(&claims.sub, |a| {
            a.profile.as_ref().map(|p| {
                serde_json::json!({
                    "user_id": a.user_id,
                    "email": p.email,
                    "full_name": p.full_name,
                    "country": p.country,
                    "kyc_status": "pending",
                    "screening": "pending",
                    "risk_profile": null,
                    "consents": {"ai_profiling": false, "marketing": false, "analytics": false},
                    "mfa_enabled": false,
                    "roles": a.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                })
            })
        })
        .await
        .map_err(unavailable)?;
    let view = view.ok_or_else(|| ApiError::unauthorized("the account of this token no longer exists"))?;
    Ok(private_json(StatusCode::OK, &view))
}
