//! Registration: the email is claimed in the email index first (first claim wins), then the
//! account is created with a data key of its own and the profile sealed under it; investors
//! are screened from the start. A registration that died between the two steps is completed by
//! the next one for that email.

use super::flow::{unexpected, Effect, Effected, Input, Next, NodeEffects, Workflow};
use super::services::Services;
use crate::domain::account::{Account, AccountCommand, AccountRejection, Profile, Role};
use crate::domain::email_index::{EmailIndex, EmailIndexCommand};
use crate::domain::envelope::{Envelope, RequestMeta};
use crate::domain::queries::Exists;

/// Why no account was created.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RegistrationError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("refused: {0:?}")]
    Refused(AccountRejection),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Creates an account (users through the API, staff through `moneta staff add`): the
/// registration workflow over the node's router and adapters.
pub async fn create_account(
    state: &Services,
    profile: Profile,
    password_hash: String,
    roles: Vec<Role>,
    request_id: &str,
) -> Result<String, RegistrationError> {
    let flow = Register::new(
        state.email_hash(&profile.email),
        crate::actors::random_id("usr"),
        profile,
        password_hash,
        roles,
        request_id.to_string(),
    );
    super::run(&state.router, &NodeEffects(state), flow)
        .await
        .map_err(|e| RegistrationError::Unavailable(e.to_string()))?
}

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Claiming,
    Checking { owner: String },
    Keying { owner: String },
    Sealing { owner: String },
    Registering { owner: String },
    Finished,
}

/// The registration workflow (sans-IO): claim the email for a fresh candidate id; if another
/// id holds it and that account exists, the email is taken; else (a registration that died
/// between its steps) finish that one. Then the data key, the sealed (and, for investors,
/// screened) profile, and the account.
#[derive(Clone, Debug)]
pub struct Register {
    email_hash: String,
    candidate: String,
    profile: Box<Profile>,
    password_hash: String,
    roles: Vec<Role>,
    request_id: String,
    stage: Stage,
}

impl Register {
    pub fn new(email_hash: String, candidate: String, profile: Profile, password_hash: String, roles: Vec<Role>, request_id: String) -> Register {
        Register {
            email_hash,
            candidate,
            profile: Box::new(profile),
            password_hash,
            roles,
            request_id,
            stage: Stage::Start,
        }
    }

    fn meta(&self, actor: &str) -> RequestMeta {
        RequestMeta {
            request_id: self.request_id.clone(),
            actor: actor.to_string(),
        }
    }

    fn key(&mut self, owner: String) -> Next<Result<String, RegistrationError>> {
        self.stage = Stage::Keying { owner: owner.clone() };
        Next::Effect(Effect::DataKey(owner))
    }
}

impl Workflow for Register {
    type Output = Result<String, RegistrationError>;

    fn next(&mut self, input: Input) -> Next<Self::Output> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match (stage, input) {
            (Stage::Start, Input::Start) => {
                self.stage = Stage::Claiming;
                let claim = EmailIndexCommand::Claim {
                    user_id: self.candidate.clone(),
                };
                Next::Call(Envelope::execute::<EmailIndex>(&self.email_hash, claim, self.meta(&self.candidate)))
            }
            (Stage::Claiming, Input::Answer(a)) => match a.clone().executed::<EmailIndex>() {
                Some(Ok(owner)) if owner == self.candidate => self.key(owner),
                Some(Ok(owner)) => {
                    self.stage = Stage::Checking { owner: owner.clone() };
                    Next::Call(Envelope::query::<Account, _>(&owner, Exists))
                }
                Some(Err(never)) => match never {},
                None => unexpected("registration", &Input::Answer(a)),
            },
            (Stage::Checking { owner }, Input::Answer(a)) => match a.clone().viewed::<Account, Exists>() {
                Some(true) => Next::Done(Err(RegistrationError::EmailTaken)),
                Some(false) => self.key(owner),
                None => unexpected("registration", &Input::Answer(a)),
            },
            (Stage::Keying { owner }, Input::Effected(Effected::KeyReady)) => {
                self.stage = Stage::Sealing { owner: owner.clone() };
                Next::Effect(Effect::SealProfile {
                    owner,
                    profile: self.profile.clone(),
                    // Investors are screened from the start; staff are not investors.
                    screen: self.roles.contains(&Role::User),
                })
            }
            (Stage::Sealing { owner }, Input::Effected(Effected::Sealed { profile, screening })) => {
                self.stage = Stage::Registering { owner: owner.clone() };
                let cmd = AccountCommand::Register {
                    sealed_profile: profile,
                    password_hash: std::mem::take(&mut self.password_hash),
                    roles: self.roles.clone(),
                    screening,
                };
                Next::Call(Envelope::execute::<Account>(&owner, cmd, self.meta(&owner)))
            }
            (Stage::Keying { .. } | Stage::Sealing { .. }, Input::Effected(Effected::Failed(e))) => Next::Done(Err(RegistrationError::Unavailable(e))),
            (Stage::Registering { owner }, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(_)) => Next::Done(Ok(owner)),
                Some(Err(AccountRejection::AlreadyRegistered)) => Next::Done(Err(RegistrationError::EmailTaken)),
                Some(Err(r)) => Next::Done(Err(RegistrationError::Refused(r))),
                None => unexpected("registration", &Input::Answer(a)),
            },
            (_, input) => unexpected("registration", &input),
        }
    }
}
