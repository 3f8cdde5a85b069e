//! Onboarding after registration (sans-IO), run by the gateway's `POST /v1/me/kyc` and
//! `POST /v1/me/suitability` and by the cluster simulator alike:
//! - KYC: the person's profile is opened and screened against the sanctions list, the identity
//!   document verified by the KYC provider and sealed under the person's data key, and the
//!   account records the outcome;
//! - suitability: the answers are sealed and the account records the risk profile they make.

use super::flow::{unexpected, Effect, Effected, Input, Next, Workflow};
use crate::domain::account::{Account, AccountCommand, AccountRejection};
use crate::domain::envelope::{Envelope, RequestMeta};
use crate::domain::kyc::KycDocument;
use crate::domain::queries::SealedProfile;
use crate::domain::suitability::{Answers, RiskProfile};

/// How an onboarding step ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Onboarded {
    /// The account recorded it.
    Recorded,
    /// The account refused it.
    Refused(AccountRejection),
    /// An adapter could not do its part (the vault, the provider): nothing was recorded.
    Unavailable(String),
}

#[derive(Clone, Debug)]
enum KycStage {
    Start,
    Profile,
    Screening,
    Verifying(Box<crate::domain::account::ScreeningOutcome>),
    Sealing(Box<crate::domain::account::ScreeningOutcome>, crate::domain::kyc::KycStatus),
    Recording,
    Finished,
}

/// KYC for `user_id` with `document` (validated by the caller).
#[derive(Clone, Debug)]
pub struct SubmitKyc {
    user_id: String,
    document: Box<KycDocument>,
    provider: String,
    meta: RequestMeta,
    stage: KycStage,
}

impl SubmitKyc {
    pub fn new(user_id: String, document: KycDocument, provider: String, meta: RequestMeta) -> SubmitKyc {
        SubmitKyc {
            user_id,
            document: Box::new(document),
            provider,
            meta,
            stage: KycStage::Start,
        }
    }
}

impl Workflow for SubmitKyc {
    type Output = Onboarded;

    fn next(&mut self, input: Input) -> Next<Onboarded> {
        match (std::mem::replace(&mut self.stage, KycStage::Finished), input) {
            (KycStage::Start, Input::Start) => {
                self.stage = KycStage::Profile;
                Next::Call(Envelope::query::<Account, _>(&self.user_id, SealedProfile))
            }
            (KycStage::Profile, Input::Answer(a)) => match a.clone().viewed::<Account, SealedProfile>() {
                Some(sealed_profile) => {
                    self.stage = KycStage::Screening;
                    Next::Effect(Effect::Screen {
                        user_id: self.user_id.clone(),
                        sealed_profile,
                    })
                }
                None => unexpected("kyc", &Input::Answer(a)),
            },
            (KycStage::Screening, Input::Effected(Effected::Screened(screening))) => {
                self.stage = KycStage::Verifying(Box::new(screening));
                Next::Effect(Effect::VerifyKyc {
                    user_id: self.user_id.clone(),
                    document: self.document.clone(),
                })
            }
            (KycStage::Verifying(screening), Input::Effected(Effected::Kyc(status))) => {
                self.stage = KycStage::Sealing(screening, status);
                Next::Effect(Effect::Seal {
                    key_id: self.user_id.clone(),
                    field: "kyc",
                    plaintext: serde_json::to_vec(&*self.document).expect("a document serialises"),
                })
            }
            (KycStage::Sealing(screening, status), Input::Effected(Effected::SealedField(sealed_document))) => {
                self.stage = KycStage::Recording;
                let cmd = AccountCommand::SubmitKyc {
                    document_type: self.document.document_type,
                    sealed_document,
                    provider: self.provider.clone(),
                    status,
                    screening: *screening,
                };
                Next::Call(Envelope::execute::<Account>(&self.user_id, cmd, self.meta.clone()))
            }
            (KycStage::Recording, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(_)) => Next::Done(Onboarded::Recorded),
                Some(Err(r)) => Next::Done(Onboarded::Refused(r)),
                None => unexpected("kyc", &Input::Answer(a)),
            },
            (_, Input::Effected(Effected::Failed(e))) => Next::Done(Onboarded::Unavailable(e)),
            (_, input) => unexpected("kyc", &input),
        }
    }
}

#[derive(Clone, Debug)]
enum SuitabilityStage {
    Start,
    Sealing,
    Recording,
    Finished,
}

/// The suitability answers of `user_id` and the risk profile they make (assessed by the caller).
#[derive(Clone, Debug)]
pub struct SetSuitability {
    user_id: String,
    answers: Box<Answers>,
    profile: Box<RiskProfile>,
    meta: RequestMeta,
    stage: SuitabilityStage,
}

impl SetSuitability {
    pub fn new(user_id: String, answers: Answers, profile: RiskProfile, meta: RequestMeta) -> SetSuitability {
        SetSuitability {
            user_id,
            answers: Box::new(answers),
            profile: Box::new(profile),
            meta,
            stage: SuitabilityStage::Start,
        }
    }
}

impl Workflow for SetSuitability {
    type Output = Onboarded;

    fn next(&mut self, input: Input) -> Next<Onboarded> {
        match (std::mem::replace(&mut self.stage, SuitabilityStage::Finished), input) {
            (SuitabilityStage::Start, Input::Start) => {
                self.stage = SuitabilityStage::Sealing;
                Next::Effect(Effect::Seal {
                    key_id: self.user_id.clone(),
                    field: "suitability",
                    plaintext: serde_json::to_vec(&*self.answers).expect("answers serialise"),
                })
            }
            (SuitabilityStage::Sealing, Input::Effected(Effected::SealedField(sealed_answers))) => {
                self.stage = SuitabilityStage::Recording;
                let cmd = AccountCommand::SetSuitability {
                    profile: (*self.profile).clone(),
                    sealed_answers,
                };
                Next::Call(Envelope::execute::<Account>(&self.user_id, cmd, self.meta.clone()))
            }
            (SuitabilityStage::Recording, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(_)) => Next::Done(Onboarded::Recorded),
                Some(Err(r)) => Next::Done(Onboarded::Refused(r)),
                None => unexpected("suitability", &Input::Answer(a)),
            },
            (_, Input::Effected(Effected::Failed(e))) => Next::Done(Onboarded::Unavailable(e)),
            (_, input) => unexpected("suitability", &input),
        }
    }
}
