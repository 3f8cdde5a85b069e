//! GDPR erasure: after `[gdpr] erasure_grace_period`, the identity regulation needs is sealed
//! under a retention key of its own, the account forgets the person (personal data,
//! credentials, sessions, advice), the email is freed, the erasure is listed outside the data
//! folder and the person's data key is destroyed (crypto-shredding). Trades and the audit chain
//! stay.

use super::flow::{unexpected, Effect, Effected, Input, Next, NodeEffects, Workflow};
use super::periodically;
use super::services::Services;
use crate::actors::RequestMeta;
use crate::domain::account::{Account, AccountCommand, AccountRejection, AccountReply, Profile};
use crate::domain::email_index::{EmailIndex, EmailIndexCommand};
use crate::domain::envelope::Envelope;
use crate::domain::kyc::KycDocument;
use crate::domain::queries::{ErasureRequested, Regulatory, RegulatoryFacts};
use crate::domain::time::Timestamp;
use crate::storage::scope::Groups;
use crate::storage::store::PendingErasure;
use serde_json::json;

/// The identity regulation needs behind an erased person's trades (from their profile and KYC
/// document), as it is sealed under the retention key.
pub fn regulatory_identity(user_id: &str, profile: &Profile, document: Option<&KycDocument>, now: Timestamp) -> serde_json::Value {
    json!({
        "user_id": user_id,
        "full_name": profile.full_name,
        "date_of_birth": profile.date_of_birth.map(|d| d.to_string()),
        "country": profile.country,
        "document_type": document.map(|d| d.document_type.as_str()),
        "document_number": document.map(|d| d.document_number.clone()),
        "address": document.map(|d| d.address.clone()),
        "erased_at": now.to_rfc3339(),
    })
}

/// Before an erasure: seals the identity regulation needs behind the person's trades under a
/// retention key of its own (`retention:<user id>`), kept until `[retention] regulatory_records`
/// has passed. Idempotent; skipped when the person's data is already unreadable. (The effect
/// `Effect::KeepRegulatory` of the erasure workflow.)
pub(super) async fn keep_regulatory_identity(state: &Services, user_id: &str, facts: &RegulatoryFacts, now: Timestamp) -> Result<(), String> {
    let (sealed_profile, sealed_document) = (&facts.sealed_profile, facts.sealed_document.clone());
    if state.router.store().regulatory(user_id).map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    let profile: Profile = match state.open_json(user_id, "profile", sealed_profile).await {
        Ok(p) => p,
        Err(crate::storage::vault::VaultError::NoKey) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let document: Option<KycDocument> = match sealed_document {
        Some(s) => state.open_json(user_id, "kyc", &s).await.ok(),
        None => None,
    };
    let identity = regulatory_identity(user_id, &profile, document.as_ref(), now);
    let key_id = format!("retention:{user_id}");
    state.create_data_key(&key_id).await?;
    let sealed = state.seal_json(&key_id, "regulatory", &identity).await.map_err(|e| e.to_string())?;
    let record = crate::storage::store::RegulatoryRecord {
        expires_at: Timestamp(now.millis() + state.config.retention.regulatory_records.as_millis() as i64),
        key_id,
        sealed,
    };
    state
        .router
        .journal()
        .write(crate::storage::records::put_regulatory(user_id, &record))
        .await
        .map_err(|e| e.to_string())
}

/// Carries out every erasure due in the covered groups; returns how many were completed.
pub async fn run_due_erasures(state: &Services, scope: Groups) -> Result<usize, String> {
    let store = state.router.store().clone();
    let pending = tokio::task::spawn_blocking(move || store.erasures_in(&scope))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let now = state.now();
    let mut done = 0;
    for (user_id, p) in pending {
        if p.due_at > now {
            continue;
        }
        let flow = Erase::new(user_id.clone(), p, now, RequestMeta::system("gdpr-erasure-job"));
        match super::run(&state.router, &NodeEffects(state), flow).await.map_err(|e| e.to_string())? {
            Ok(Erased::Erased) => {
                tracing::info!(user_id = %user_id, "personal data erased");
                done += 1;
            }
            Ok(Erased::NotYet) => {}
            Err(e) => return Err(format!("erasing {user_id}: {e}")),
        }
    }
    Ok(done)
}

/// What an erasure did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Erased {
    Erased,
    /// Not due yet by the account's record: left for a later run.
    NotYet,
}

#[derive(Clone, Debug)]
enum Stage {
    Start,
    Facts,
    Keeping,
    Erasing,
    Checking,
    Completing,
    Revoking,
    Releasing,
    Listing,
    Destroying,
    Unscheduling(Erased),
    Finished,
}

/// The erasure of one person (sans-IO), due per its schedule: the regulatory identity kept,
/// the account erased (its sessions revoked), the email freed, the erasure listed outside the
/// data folder, the data key destroyed, the schedule removed. Every step is idempotent and the
/// schedule goes last, so a crash anywhere is finished by the next run.
#[derive(Clone, Debug)]
pub struct Erase {
    user_id: String,
    pending: PendingErasure,
    now: Timestamp,
    meta: RequestMeta,
    stage: Stage,
    /// The run recorded an interrupted request on the account.
    completed: bool,
}

impl Erase {
    pub fn new(user_id: String, pending: PendingErasure, now: Timestamp, meta: RequestMeta) -> Erase {
        Erase {
            user_id,
            pending,
            now,
            meta,
            stage: Stage::Start,
            completed: false,
        }
    }

    fn go(&mut self, stage: Stage, next: Next<Result<Erased, String>>) -> Next<Result<Erased, String>> {
        self.stage = stage;
        next
    }

    fn erase(&mut self) -> Next<Result<Erased, String>> {
        let cmd = AccountCommand::Erase { replayed: self.pending.replay };
        // Once the request was completed, the account's next command is another one: it goes
        // under a request id of its own (one id, one command).
        let meta = match self.completed {
            false => self.meta.clone(),
            true => self.step_meta("after-request"),
        };
        self.go(Stage::Erasing, Next::Call(Envelope::execute::<Account>(&self.user_id, cmd, meta)))
    }

    /// The run's request id with a step's name: the id of that step's command.
    fn step_meta(&self, step: &str) -> RequestMeta {
        RequestMeta {
            request_id: format!("{}/{step}", self.meta.request_id),
            actor: self.meta.actor.clone(),
        }
    }

    fn release(&mut self) -> Next<Result<Erased, String>> {
        let cmd = EmailIndexCommand::Release { user_id: self.user_id.clone() };
        let call = Envelope::execute::<EmailIndex>(&self.pending.email_hash, cmd, self.meta.clone());
        self.go(Stage::Releasing, Next::Call(call))
    }

    /// The crypto-shredding: the person's data key goes.
    fn destroy(&mut self) -> Next<Result<Erased, String>> {
        if crate::planted::planted(crate::planted::Bug::ErasureKeepsDataKey) {
            return self.unschedule(Erased::Erased);
        }
        self.go(Stage::Destroying, Next::Effect(Effect::DestroyDataKey(self.user_id.clone())))
    }

    fn unschedule(&mut self, outcome: Erased) -> Next<Result<Erased, String>> {
        let writes = crate::storage::records::remove_erasure(&self.user_id);
        self.go(Stage::Unscheduling(outcome), Next::Effect(Effect::Write(writes)))
    }
}

impl Workflow for Erase {
    type Output = Result<Erased, String>;

    fn next(&mut self, input: Input) -> Next<Self::Output> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        let failed = |e: &str| Next::Done(Err(e.to_string()));
        match (stage, input) {
            (Stage::Start, Input::Start) => self.go(
                Stage::Facts,
                Next::Call(Envelope::query::<Account, _>(&self.user_id, Regulatory { now: self.now })),
            ),
            (Stage::Facts, Input::Answer(a)) => {
                let Some(facts) = a.clone().viewed::<Account, Regulatory>() else {
                    unexpected("erasure", &Input::Answer(a))
                };
                if facts.exists && (facts.due || self.pending.replay) {
                    let effect = Effect::KeepRegulatory {
                        user_id: self.user_id.clone(),
                        facts: Box::new(facts),
                        now: self.now,
                    };
                    self.go(Stage::Keeping, Next::Effect(effect))
                } else {
                    self.erase()
                }
            }
            (Stage::Keeping, Input::Effected(Effected::Done)) => self.erase(),
            (Stage::Erasing, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(AccountReply::Erased { sessions })) => self.go(Stage::Revoking, Next::Effect(Effect::RevokeSessions(sessions))),
                Some(Ok(_)) => self.release(),
                Some(Err(AccountRejection::ErasureNotDue)) => {
                    self.go(Stage::Checking, Next::Call(Envelope::query::<Account, _>(&self.user_id, ErasureRequested)))
                }
                // Replayed after a restore for someone the backup never knew (registered later).
                Some(Err(AccountRejection::NotRegistered)) if self.pending.replay => self.release(),
                Some(Err(r)) => Next::Done(Err(format!("the account refused the erasure: {r:?}"))),
                None => unexpected("erasure", &Input::Answer(a)),
            },
            (Stage::Checking, Input::Answer(a)) => match a.clone().viewed::<Account, ErasureRequested>() {
                // Scheduled but never recorded on the account: the request was interrupted
                // between its two steps. The person asked to be erased: the job completes the
                // request (as the next registration completes an interrupted one), then starts
                // over. (Dropping the schedule instead raced with the person's retry, whose new
                // schedule the drop could delete after the account had recorded it: an erasure
                // lost — the cluster simulator found it, seed 20185.)
                Some(false) if !self.completed => {
                    self.completed = true;
                    let cmd = AccountCommand::RequestErasure { due_at: self.pending.due_at };
                    let meta = self.step_meta("request");
                    self.go(Stage::Completing, Next::Call(Envelope::execute::<Account>(&self.user_id, cmd, meta)))
                }
                Some(false) => Next::Done(Err("the account recorded the erasure request and then forgot it".into())),
                // Requested and not yet due on the account's record: a later run.
                Some(true) => Next::Done(Ok(Erased::NotYet)),
                None => unexpected("erasure", &Input::Answer(a)),
            },
            (Stage::Completing, Input::Answer(a)) => match a.clone().executed::<Account>() {
                Some(Ok(AccountReply::ErasureDue(due))) if due <= self.now => self.go(
                    Stage::Facts,
                    Next::Call(Envelope::query::<Account, _>(&self.user_id, Regulatory { now: self.now })),
                ),
                Some(Ok(_)) => Next::Done(Ok(Erased::NotYet)),
                Some(Err(r)) => Next::Done(Err(format!("the account refused to record the erasure request: {r:?}"))),
                None => unexpected("erasure", &Input::Answer(a)),
            },
            (Stage::Revoking, Input::Effected(Effected::Done)) => self.release(),
            (Stage::Releasing, Input::Answer(a)) => match a.clone().executed::<EmailIndex>() {
                // On the erasure list (outside the data folder) before the key goes, so that a
                // restore of any earlier backup erases this person again.
                Some(Ok(_)) if !self.pending.replay => {
                    let effect = Effect::ListErasure {
                        user_id: self.user_id.clone(),
                        email_hash: self.pending.email_hash.clone(),
                    };
                    self.go(Stage::Listing, Next::Effect(effect))
                }
                Some(Ok(_)) => self.destroy(),
                Some(Err(never)) => match never {},
                None => unexpected("erasure", &Input::Answer(a)),
            },
            (Stage::Listing, Input::Effected(Effected::Done)) => self.destroy(),
            (Stage::Destroying, Input::Effected(Effected::Done)) => self.unschedule(Erased::Erased),
            (Stage::Unscheduling(outcome), Input::Effected(Effected::Done)) => Next::Done(Ok(outcome)),
            (_, Input::Effected(Effected::Failed(e))) => failed(&e),
            (_, input) => unexpected("erasure", &input),
        }
    }
}

/// The erasure job: checks every `[gdpr] erasure_check_interval` until `stop` is set.
pub async fn erasure_job(state: std::sync::Arc<Services>, stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.gdpr.erasure_check_interval;
    periodically(every, stop, state.router.clone(), |led| async {
        if let Err(e) = run_due_erasures(&state, led).await {
            tracing::error!(error = %e, "erasure job failed; retrying at the next check");
        }
    })
    .await
}
