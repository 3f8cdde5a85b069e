//! Identity: registration, login (password, TOTP, devices, lockouts), refresh-token rotation,
//! logout, the caller's profile, TOTP enrolment and notifications.
//!
//! Register: validate → hash the password (blocking pool) → claim the email's keyed hash in the
//! email index (first claim wins) → create the user's data key → seal the profile → create the
//! account, screened against the sanctions list. If an earlier registration died between the
//! claim and the account, the claim names an account that does not exist and this one completes
//! it.

use super::meta;
use super::unavailable;
use crate::cluster::RouteError;
use crate::domain::account::{
    normalise_email, validate_registration, Account, AccountCommand, AccountRejection, AccountReply, NewSession, Profile, ProfileError, Role,
};
use crate::domain::audit::AuditDraft;
use crate::domain::email_index::EmailIndex;
use crate::domain::time::{Date, Timestamp};
use crate::gateway::auth::{new_refresh_token, parse_refresh_token, random_id, Claims};
use crate::gateway::http::{private_json, Reply, Req};
use crate::gateway::limits::LockedBy;
use crate::gateway::problem::ApiError;
use crate::gateway::refresh_cookie;
use crate::gateway::{mfa, AppState};
use crate::workflows::registration::{self, RegistrationError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warp::http::StatusCode;

use crate::domain::account::PASSWORD_MAX_BYTES;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    email: String,
    password: String,
    full_name: String,
    date_of_birth: String,
    country: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
    #[serde(default)]
    totp_code: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    /// true: the refresh token comes as an HttpOnly cookie (`moneta_refresh`, SameSite=Strict,
    /// Path=/v1/auth) instead of in the body — for the web app, whose scripts never hold it.
    #[serde(default)]
    session_cookie: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshBody {
    /// The refresh token; left out by a client that signed in with `session_cookie`, whose
    /// token travels in the cookie (and whose new one comes back in it).
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeBody {
    code: String,
}

fn validate_profile(b: &RegisterBody, today: Date) -> Result<Profile, ApiError> {
    validate_registration(&b.email, &b.full_name, &b.date_of_birth, &b.country, today).map_err(|e| match e {
        ProfileError::Underage => ApiError::unprocessable("underage", e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    })
}

fn now_secs(state: &AppState) -> i64 {
    state.now().millis() / 1000
}

pub fn check_password_policy(password: &str) -> Result<(), ApiError> {
    match crate::domain::account::password_problem(password) {
        None => Ok(()),
        Some(("weak_password", why)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "weak_password", why)),
        Some((_, why)) => Err(ApiError::bad_request(why)),
    }
}

fn registration_error(e: RegistrationError) -> ApiError {
    match e {
        RegistrationError::EmailTaken => email_taken(),
        RegistrationError::Refused(r) => ApiError::unprocessable(r.code(), "the account could not be created"),
        RegistrationError::Unavailable(e) => unavailable(e),
    }
}

fn email_taken() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "email_taken", "an account with this email already exists")
}

pub async fn register(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let body: RegisterBody = req.json()?;
    let today = Date::from_timestamp(state.now());
    let profile = validate_profile(&body, today)?;
    check_password_policy(&body.password)?;
    let password_hash = state.auth.hash_password(body.password).await?;
    let user_id = registration::create_account(state, profile, password_hash, vec![Role::User], &req.request_id)
        .await
        .map_err(registration_error)?;
    Ok(private_json(StatusCode::CREATED, &serde_json::json!({ "user_id": user_id })))
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    /// Absent when the refresh token went into the cookie.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    token_type: &'static str,
    expires_in: i64,
}

/// The token pair's answer: the refresh token in the body, or in the cookie (`cookie`).
fn token_reply(state: &AppState, pair: TokenResponse, cookie: bool) -> Reply {
    if !cookie {
        return private_json(StatusCode::OK, &pair);
    }
    let refresh = pair.refresh_token.clone().unwrap_or_default();
    let mut r = private_json(StatusCode::OK, &TokenResponse { refresh_token: None, ..pair });
    let ttl = state.config.auth.refresh_token_ttl.as_secs();
    refresh_cookie::set(r.headers_mut(), &refresh, ttl, tls(state));
    r
}

fn tls(state: &AppState) -> bool {
    !state.config.gateway.tls_cert_file.as_os_str().is_empty()
}

/// A refusal that also removes the cookie it came with.
fn refused_with_cookie(e: ApiError, cookie: bool, state: &AppState) -> ApiError {
    if cookie {
        e.clearing_refresh_cookie(tls(state))
    } else {
        e
    }
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("the email or password is wrong").with_code("invalid_credentials")
}

fn mfa_required() -> ApiError {
    ApiError::unauthorized("this account needs a valid, unused TOTP code (totp_code)").with_code("mfa_required")
}

fn too_many(secs: u64) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "too many failed logins; try again later");
    e.retry_after = Some(secs);
    e
}

/// A failed attempt: counted, audited as a security event, answered 401 (or 429 when it used
/// up an allowance).
/// Seconds until the email may try again, counting its failed logins at every node (the
/// email-index entity keeps them).
async fn account_locked(state: &AppState, limit_key: &str) -> Result<Option<u64>, ApiError> {
    let q = crate::domain::queries::LoginLocked {
        now: state.now(),
        allowance: state.config.auth.failed_logins_per_account,
        window_ms: state.config.auth.failed_login_window.as_millis() as i64,
    };
    state.router.query::<EmailIndex, _>(limit_key, q).await.map_err(unavailable)
}

/// Counts and audits a failed sign-in. `account`: the account the address belongs to, when
/// one does (the records are about that person, so their export holds them and retention
/// redacts them); `signed_in`: whether the password was right (then the person is the actor,
/// else the actor is anonymous).
async fn login_failed(state: &AppState, req: &Req, limit_key: &str, account: Option<&str>, signed_in: bool, reason: &str, answer: ApiError) -> ApiError {
    let ip = req.remote.map(|a| a.ip());
    // The account's failures are counted in its email-index entity (cluster-wide); the
    // address's in this node.
    let counted = state
        .router
        .execute::<EmailIndex>(limit_key, crate::domain::email_index::EmailIndexCommand::LoginFailed, meta(req, "anonymous"))
        .await;
    let by_account = match counted {
        Ok(_) => account_locked(state, limit_key).await.ok().flatten(),
        Err(e) => {
            tracing::warn!(error = ?e, "a failed login could not be counted");
            None
        }
    };
    let locked = match (by_account, state.logins.address_failed(ip)) {
        (Some(secs), _) => Some((LockedBy::Account, secs)),
        (None, Some(secs)) => Some((LockedBy::Address, secs)),
        (None, None) => None,
    };
    let m = meta(req, account.filter(|_| signed_in).unwrap_or("anonymous"));
    let subject = account.map(|u| format!("account/{u}")).unwrap_or_else(|| "gateway".into());
    let mut draft = AuditDraft::refused("security.login_failed", reason);
    if let Some(ip) = ip {
        draft = draft.detail("address", ip);
    }
    let _ = state.router.audit(draft, &subject, &m, false).await;
    match locked {
        Some((by, secs)) => {
            let by = match by {
                LockedBy::Account => "account",
                LockedBy::Address => "address",
            };
            let mut draft = AuditDraft::refused("security.lockout", "too_many_attempts")
                .detail("by", by)
                .detail("seconds", secs);
            if let Some(ip) = ip {
                draft = draft.detail("address", ip);
            }
            let _ = state.router.audit(draft, &subject, &m, false).await;
            too_many(secs)
        }
        None => answer,
    }
}

fn device_hash(user_id: &str, device_id: &str) -> [u8; 32] {
    Sha256::digest([b"moneta-device\0".as_slice(), user_id.as_bytes(), b"\0", device_id.as_bytes()].concat()).into()
}

pub async fn login(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let body: LoginBody = req.json()?;
    if let Some(d) = &body.device_id {
        if d.is_empty() || d.len() > 128 || !d.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(ApiError::bad_request("device_id must be 1–128 visible ASCII characters"));
        }
    }
    let email = normalise_email(&body.email);
    // Unknown and malformed emails are limited like known ones (by the keyed hash).
    let limit_key = state.email_hash(email.as_deref().unwrap_or(&body.email.trim().to_lowercase()));
    // From the lockout check to the failure's count, one attempt per account and per address
    // at a time on this node: in parallel, every attempt passed the check before any failure
    // was counted (`gateway::attempts`).
    let mut lanes = vec![format!("account:{limit_key}")];
    lanes.extend(req.remote.map(|a| format!("address:{}", a.ip())));
    let Some(_attempt) = state.logins.attempts.enter(&lanes).await else {
        return Err(too_many(1));
    };
    let locked = match state.logins.address_locked(req.remote.map(|a| a.ip())) {
        Some(secs) => Some(secs),
        None => account_locked(state, &limit_key).await?,
    };
    if let Some(secs) = locked {
        let _ = state
            .router
            .audit(
                AuditDraft::refused("security.login_locked", "too_many_attempts"),
                "gateway",
                &meta(req, "anonymous"),
                false,
            )
            .await;
        return Err(too_many(secs));
    }
    let facts = match (&email, body.password.len() <= PASSWORD_MAX_BYTES) {
        (Some(email), true) => {
            let owner = state
                .router
                .query::<EmailIndex, _>(&state.email_hash(email), crate::domain::queries::Owner)
                .await
                .map_err(unavailable)?;
            match owner {
                Some(uid) => state
                    .router
                    .query::<Account, _>(&uid, crate::domain::queries::Login)
                    .await
                    .map_err(unavailable)?,
                None => None,
            }
        }
        _ => None,
    };
    let stored = facts.as_ref().map(|f| f.password_hash.clone());
    let password_ok = state.auth.verify_password(body.password, stored).await?;
    let account = facts.as_ref().map(|f| f.user_id.clone());
    let Some(facts) = facts.filter(|_| password_ok) else {
        return Err(login_failed(state, req, &limit_key, account.as_deref(), false, "invalid_credentials", invalid_credentials()).await);
    };
    let uid = facts.user_id.clone();
    let totp_step = match (&facts.mfa, &body.totp_code) {
        (None, _) => None,
        // The password was right; the client has to ask for the code. Not a failure.
        (Some(_), None) => return Err(mfa_required()),
        (Some(sealed), Some(code)) => {
            let secret = state.open(&uid, "totp", sealed).await.map_err(unavailable)?;
            match mfa::check(&secret, code, now_secs(state).max(0) as u64) {
                Some(step) => Some(step),
                None => return Err(login_failed(state, req, &limit_key, Some(&uid), true, "mfa_required", mfa_required()).await),
            }
        }
    };
    let family = random_id("ses");
    let (refresh_token, token_hash) = new_refresh_token(&uid, &family);
    let now = state.now();
    let cmd = AccountCommand::Login {
        device: body.device_id.as_deref().map(|d| device_hash(&uid, d)),
        totp_step,
        session: NewSession {
            family: family.clone(),
            token_hash,
            expires_at: Timestamp(now.millis() + state.config.auth.refresh_token_ttl.as_millis() as i64),
        },
    };
    let (roles, amr) = match state.router.execute::<Account>(&uid, cmd, meta(req, &uid)).await {
        Ok(AccountReply::LoggedIn { roles, amr, .. }) => (roles, amr),
        Ok(_) => return Err(ApiError::internal()),
        Err(RouteError::Rejected(AccountRejection::MfaRequired)) => {
            return Err(login_failed(state, req, &limit_key, Some(&uid), true, "mfa_code_reused", mfa_required()).await)
        }
        Err(RouteError::Rejected(_)) => return Err(invalid_credentials()),
        Err(RouteError::Failed(e)) => return Err(unavailable(e)),
    };
    let token = state.auth.issue(&uid, &roles, &amr, Some(&family), now.millis() / 1000);
    let pair = TokenResponse {
        access_token: token,
        refresh_token: Some(refresh_token),
        token_type: "Bearer",
        expires_in: state.auth.ttl_secs(),
    };
    Ok(token_reply(state, pair, body.session_cookie))
}

pub async fn refresh(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let body: RefreshBody = req.json()?;
    // The body's token, else the cookie's (a web app session).
    let cookie = body.refresh_token.is_none();
    let Some(presented_token) = body.refresh_token.or_else(|| refresh_cookie::read(&req.headers)) else {
        return Err(ApiError::bad_request("refresh_token is required (or the session cookie of a web app sign-in)"));
    };
    let invalid = || {
        refused_with_cookie(
            ApiError::unauthorized("the refresh token is not valid").with_code("invalid_refresh_token"),
            cookie,
            state,
        )
    };
    let Some(presented) = parse_refresh_token(&presented_token) else {
        return Err(invalid());
    };
    let family = presented.family.clone();
    let (next_token, next) = new_refresh_token(&presented.user_id, &family);
    let now = state.now();
    let cmd = AccountCommand::Refresh {
        family: family.clone(),
        presented: presented.hash,
        next,
        expires_at: Timestamp(now.millis() + state.config.auth.refresh_token_ttl.as_millis() as i64),
    };
    let uid = presented.user_id;
    match state.router.execute::<Account>(&uid, cmd, meta(req, &uid)).await {
        Ok(AccountReply::Refreshed { roles, amr }) => {
            let token = state.auth.issue(&uid, &roles, &amr, Some(&family), now.millis() / 1000);
            let pair = TokenResponse {
                access_token: token,
                refresh_token: Some(next_token),
                token_type: "Bearer",
                expires_in: state.auth.ttl_secs(),
            };
            Ok(token_reply(state, pair, cookie))
        }
        Ok(AccountReply::Reused) => {
            state.revoke_sessions_everywhere(vec![family]).await;
            Err(refused_with_cookie(reused(), cookie, state))
        }
        Ok(_) | Err(RouteError::Rejected(_)) => Err(invalid()),
        Err(RouteError::Failed(e)) => Err(unavailable(e)),
    }
}

fn reused() -> ApiError {
    ApiError::unauthorized("this refresh token was already used; every token of its session is now revoked — log in again").with_code("refresh_token_reused")
}

pub async fn logout(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    // A client may send the refresh token it holds, as OAuth clients do (RFC 7009); the family
    // logged out is the access token's either way. Any other field is unknown.
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let LogoutBody { refresh_token: _ } = req.json()?;
    }
    if let Some(family) = claims.sid.clone() {
        // The durable logout first, then the access tokens refused on every node, before the
        // answer. The other way round, a logout whose durable step failed (503) left the access
        // token refused, so the retry API.md promises is safe was a 401 and could never finish
        // it — while the account still held the session live for refreshes.
        match state
            .router
            .execute::<Account>(&claims.sub, AccountCommand::Logout { family: family.clone() }, meta(req, &claims.sub))
            .await
        {
            Ok(_) | Err(RouteError::Rejected(_)) => {}
            Err(RouteError::Failed(e)) => return Err(unavailable(e)),
        }
        state.revoke_sessions_everywhere(vec![family]).await;
    }
    let mut r = crate::gateway::http::no_content();
    refresh_cookie::clear(r.headers_mut(), tls(state));
    Ok(r)
}

/// What a logout may carry: nothing, or the refresh token the client holds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutBody {
    #[allow(dead_code)]
    refresh_token: Option<String>,
}

/// The caller's decrypted profile and the non-personal facts beside it.
pub async fn me(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let account = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::Registered)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::unauthorized("the account of this token no longer exists"))?;
    let profile: Profile = state
        .open_json(&account.user_id, "profile", &account.sealed_profile)
        .await
        .map_err(unavailable)?;
    let view = serde_json::json!({
        "user_id": account.user_id,
        "email": profile.email,
        "full_name": profile.full_name,
        "date_of_birth": profile.date_of_birth.map(|d| d.to_string()),
        "country": profile.country,
        "kyc_status": account.kyc_status().as_str(),
        "screening": account.screening_status(),
        "risk_profile": account.suitability.as_ref().map(|s| &s.profile),
        "consents": account.consents,
        "mfa_enabled": account.mfa_enabled(),
        "roles": account.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        // When the person asked to be erased: when it is due (null when not asked).
        "erasure_due_at": account.erasure.as_ref().map(|e| e.due_at.to_rfc3339()),
    });
    Ok(private_json(StatusCode::OK, &view))
}

pub async fn notifications(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    let list = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::Notifications)
        .await
        .map_err(unavailable)?;
    let view: Vec<_> = list
        .iter()
        .rev()
        .map(|n| serde_json::json!({"id": n.id, "at": n.at.to_rfc3339(), "kind": n.kind, "message": n.message}))
        .collect();
    Ok(private_json(StatusCode::OK, &view))
}

fn account_error(e: RouteError<AccountRejection>) -> ApiError {
    match e {
        RouteError::Rejected(AccountRejection::MfaAlreadyEnabled) => ApiError::new(StatusCode::CONFLICT, "mfa_already_enabled", "TOTP is already enabled"),
        RouteError::Rejected(AccountRejection::InvalidCode) => ApiError::bad_request("the code is wrong, expired or already used").with_code("invalid_code"),
        RouteError::Rejected(AccountRejection::KycAlreadyVerified) => {
            ApiError::new(StatusCode::CONFLICT, "kyc_already_verified", "identity is already verified")
        }
        RouteError::Rejected(AccountRejection::KycInReview) => ApiError::new(
            StatusCode::CONFLICT,
            "kyc_in_review",
            "the identity documents you sent are being reviewed by our compliance team; you will be told of the decision",
        ),
        RouteError::Rejected(AccountRejection::NotRegistered) => ApiError::unauthorized("the account of this token no longer exists"),
        RouteError::Rejected(r) => ApiError::unprocessable(r.code(), "the request was refused"),
        RouteError::Failed(e) => unavailable(e),
    }
}

pub(super) fn account_error_pub(e: RouteError<AccountRejection>) -> ApiError {
    account_error(e)
}

/// Starts TOTP enrolment: a new secret, sealed on the account, active once confirmed.
pub async fn totp_enrol(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims = state.claims(req)?;
    req.no_fields()?;
    let (enabled, sealed_profile) = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::MfaSetup)
        .await
        .map_err(unavailable)?;
    if enabled {
        return Err(account_error(RouteError::Rejected(AccountRejection::MfaAlreadyEnabled)));
    }
    let profile: Profile = state.open_json(&claims.sub, "profile", &sealed_profile).await.map_err(unavailable)?;
    let secret = mfa::new_secret();
    let sealed_secret = state.seal(&claims.sub, "totp", &secret).await.map_err(unavailable)?;
    state
        .router
        .execute::<Account>(&claims.sub, AccountCommand::EnrolTotp { sealed_secret }, meta(req, &claims.sub))
        .await
        .map_err(account_error)?;
    let b32 = mfa::base32(&secret);
    let uri = mfa::otpauth_uri(&state.config.auth.issuer, &profile.email, &b32);
    Ok(private_json(StatusCode::CREATED, &serde_json::json!({ "secret": b32, "otpauth_uri": uri })))
}

pub async fn totp_confirm(state: &AppState, req: &Req) -> Result<Reply, ApiError> {
    let claims: Claims = state.claims(req)?;
    let body: CodeBody = req.json()?;
    let pending = state
        .router
        .query::<Account, _>(&claims.sub, crate::domain::queries::PendingTotp)
        .await
        .map_err(unavailable)?;
    let invalid = || account_error(RouteError::Rejected(AccountRejection::InvalidCode));
    let Some(sealed) = pending else {
        return Err(invalid());
    };
    let secret = state.open(&claims.sub, "totp", &sealed).await.map_err(unavailable)?;
    let step = mfa::check(&secret, &body.code, now_secs(state).max(0) as u64).ok_or_else(invalid)?;
    state
        .router
        .execute::<Account>(&claims.sub, AccountCommand::ConfirmTotp { step }, meta(req, &claims.sub))
        .await
        .map_err(account_error)?;
    Ok(crate::gateway::http::no_content())
}
