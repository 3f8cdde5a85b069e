//! Registration: the email is claimed in the email index first (first claim wins), then the
//! account is created with a data key of its own and the profile sealed under it; investors
//! are screened from the start. A registration that died between the two steps is completed by
//! the next one for that email.

use super::services::Services;
use crate::actors::RequestMeta;
use crate::adapters::sanctions;
use crate::cluster::RouteError;
use crate::domain::account::{Account, AccountCommand, AccountRejection, Profile, Role};
use crate::domain::email_index::{EmailIndex, EmailIndexCommand};

/// Why no account was created.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("refused: {0:?}")]
    Refused(AccountRejection),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Creates an account (users through the API, staff through `moneta staff add`).
pub async fn create_account(
    state: &Services,
    profile: Profile,
    password_hash: String,
    roles: Vec<Role>,
    request_id: &str,
) -> Result<String, RegistrationError> {
    let email_hash = state.email_hash(&profile.email);
    let candidate = crate::actors::random_id("usr");
    let m = RequestMeta {
        request_id: request_id.to_string(),
        actor: candidate.clone(),
    };
    let owner = state
        .router
        .execute::<EmailIndex>(&email_hash, EmailIndexCommand::Claim { user_id: candidate.clone() }, m.clone())
        .await
        .map_err(|e| match e {
            RouteError::Rejected(never) => match never {},
            RouteError::Failed(e) => RegistrationError::Unavailable(e.to_string()),
        })?;
    if owner != candidate {
        let exists = state
            .router
            .query::<Account, _>(&owner, crate::domain::queries::Exists)
            .await
            .map_err(|e| RegistrationError::Unavailable(e.to_string()))?;
        if exists {
            return Err(RegistrationError::EmailTaken);
        }
    }
    state.create_data_key(&owner).await.map_err(RegistrationError::Unavailable)?;
    let sealed_profile = state
        .vault
        .seal_json(&owner, "profile", &profile)
        .map_err(|e| RegistrationError::Unavailable(e.to_string()))?;
    // Investors are screened from the start; staff are not investors.
    let screening = roles.contains(&Role::User).then(|| sanctions::screen(&state.sanctions_list(), &profile));
    let m = RequestMeta { actor: owner.clone(), ..m };
    let cmd = AccountCommand::Register {
        sealed_profile,
        password_hash,
        roles,
        screening,
    };
    match state.router.execute::<Account>(&owner, cmd, m).await {
        Ok(_) => Ok(owner),
        Err(RouteError::Rejected(AccountRejection::AlreadyRegistered)) => Err(RegistrationError::EmailTaken),
        Err(RouteError::Rejected(r)) => Err(RegistrationError::Refused(r)),
        Err(RouteError::Failed(e)) => Err(RegistrationError::Unavailable(e.to_string())),
    }
}
