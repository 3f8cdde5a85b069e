//! A person asks to be erased (`DELETE /v1/me`): the schedule first (with the email index key
//! the erasure job will need once the profile is gone), then the account's record of the
//! request. A crash between the two leaves a schedule entry the job drops, never a request the
//! job would miss. Asked again, the first date stands.

use super::flow::{unexpected, Effect, Effected, Input, Next, Workflow};
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply};
use crate::domain::envelope::{Envelope, RequestMeta};
use crate::domain::queries::ErasureDue;
use crate::domain::time::Timestamp;
use crate::storage::store::PendingErasure;

/// What asking for an erasure did.
#[derive(Clone, Debug, PartialEq)]
pub enum ErasureRequest {
    /// Scheduled (now or earlier): the person's data goes at this time.
    Due(Timestamp),
    /// The account refused (it does not exist).
    Refused(AccountRejection),
    /// The schedule could not be written: nothing was recorded on the account.
    Unavailable(String),
}

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Asking,
    Scheduling,
    Recording,
    Finished,
}

/// The request (sans-IO): `pending` carries the due date and the email index key.
#[derive(Clone, Debug)]
pub struct RequestErasure {
    user_id: String,
    pending: PendingErasure,
    meta: RequestMeta,
    stage: Stage,
}

impl RequestErasure {
    pub fn new(user_id: String, pending: PendingErasure, meta: RequestMeta) -> RequestErasure {
        RequestErasure {
            user_id,
            pending,
            meta,
            stage: Stage::Start,
        }
    }

    fn record(&mut self) -> Next<ErasureRequest> {
        self.stage = Stage::Recording;
        let cmd = AccountCommand::RequestErasure { due_at: self.pending.due_at };
        Next::Call(Envelope::execute::<Account>(&self.user_id, cmd, self.meta.clone()))
    }
}

impl Workflow for RequestErasure {
    type Output = ErasureRequest;

    fn next(&mut self, input: Input) -> Next<ErasureRequest> {
        match (std::mem::replace(&mut self.stage, Stage::Finished), input) {
            (Stage::Start, Input::Start) => {
                self.stage = Stage::Asking;
                Next::Call(Envelope::query::<Account, _>(&self.user_id, ErasureDue))
            }
            (Stage::Asking, Input::Answer(a)) => match a.clone().viewed::<Account, ErasureDue>() {
                // Scheduled before: the account keeps its first date (and the schedule stands).
                Some(Some(_)) => self.record(),
                Some(None) => {
                    self.stage = Stage::Scheduling;
                    Next::Effect(Effect::Write(crate::storage::records::schedule_erasure(&self.user_id, &self.pending)))
                }
                None => unexpected("erasure request", &Input::Answer(a)),
            },
            (Stage::Scheduling, Input::Effected(Effected::Done)) => self.record(),
            (Stage::Scheduling, Input::Effected(Effected::Failed(e))) => Next::Done(ErasureRequest::Unavailable(e)),
            (Stage::Recording, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(AccountReply::ErasureDue(due))) => Next::Done(ErasureRequest::Due(due)),
                Some(Err(r)) => Next::Done(ErasureRequest::Refused(r)),
                _ => unexpected("erasure request", &Input::Answer(a)),
            },
            (_, input) => unexpected("erasure request", &input),
        }
    }
}
