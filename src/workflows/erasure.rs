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
use crate::storage::vault::VaultError;
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
        Err(VaultError::NoKey) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let opened = match sealed_document {
        Some(s) => Some(state.open_json::<KycDocument>(user_id, "kyc", &s).await),
        None => None,
    };
    let document = kept_document(opened)?;
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

/// `keep_regulatory_identity` on a data folder no node runs on: `moneta backup restore`
/// replaying an erasure the backup predates, before it destroys the person's data key. The
/// identity that erasure kept is not in such a backup, and once the key is gone it could never
/// be kept again — the person's trades would be back without the identity behind them. So it
/// is kept here first, from the restored account, under a retention key of its own.
pub fn keep_regulatory_identity_offline(
    store: &crate::storage::Store,
    vault: &crate::storage::vault::Vault,
    user_id: &str,
    now: Timestamp,
    keep_for: std::time::Duration,
) -> Result<(), String> {
    use crate::domain::ids::{EntityId, EntityKind};
    if store.regulatory(user_id).map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    let account = store
        .load::<Account>(&EntityId::new(EntityKind::Account, user_id))
        .map_err(|e| e.to_string())?
        .state;
    if !account.exists() {
        return Ok(());
    }
    let profile: Profile = match vault.open_json(user_id, "profile", &account.sealed_profile) {
        Ok(p) => p,
        Err(VaultError::NoKey) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let sealed_document = account.kyc.as_ref().and_then(|k| k.sealed_document.clone());
    let document = kept_document(sealed_document.map(|s| vault.open_json::<KycDocument>(user_id, "kyc", &s)))?;
    let identity = regulatory_identity(user_id, &profile, document.as_ref(), now);
    let key_id = format!("retention:{user_id}");
    if let Some(w) = vault.new_data_key(&key_id).map_err(|e| e.to_string())? {
        store.apply_offline(&w).map_err(|e| e.to_string())?;
    }
    let sealed = vault.seal_json(&key_id, "regulatory", &identity).map_err(|e| e.to_string())?;
    let record = crate::storage::store::RegulatoryRecord {
        expires_at: Timestamp(now.millis() + keep_for.as_millis() as i64),
        key_id,
        sealed,
    };
    store
        .apply_offline(&crate::storage::records::put_regulatory(user_id, &record))
        .map_err(|e| e.to_string())
}

/// The KYC document to keep with the regulatory identity, given what opening the sealed one
/// gave (`None`: the person never submitted one). A document that could not be opened —
/// corrupt, its key gone mid-erasure, or the key's group unavailable — is an error, not a
/// missing document: the identity would be kept without it and the data key destroyed next,
/// losing the document for good. The error names no personal data; the erasure is retried at
/// the next check.
fn kept_document(opened: Option<Result<KycDocument, VaultError>>) -> Result<Option<KycDocument>, String> {
    match opened {
        None => Ok(None),
        Some(Ok(d)) => Ok(Some(d)),
        Some(Err(e)) => Err(format!(
            "the KYC document could not be opened ({e}): the regulatory identity is not kept without it, so the erasure waits for a later run"
        )),
    }
}

/// Carries out every erasure due in the covered groups; returns how many were completed. One
/// person's failed erasure does not hold up the others': the rest are carried out, then the
/// failures are returned together (each is retried at the next run).
pub async fn run_due_erasures(state: &Services, scope: Groups) -> Result<usize, String> {
    let store = state.router.store().clone();
    let pending = tokio::task::spawn_blocking(move || store.erasures_in(&scope))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let now = state.now();
    let mut done = 0;
    let mut failed = Vec::new();
    for (user_id, p) in pending {
        if p.due_at > now {
            continue;
        }
        let flow = Erase::new(user_id.clone(), p, now, RequestMeta::system("gdpr-erasure-job"));
        match super::run(&state.router, &NodeEffects(state), flow).await {
            Ok(Ok(Erased::Erased)) => {
                tracing::info!(user_id = %user_id, "personal data erased");
                done += 1;
            }
            Ok(Ok(Erased::NotYet)) => {}
            // The user id is a pseudonym; the errors name no personal data.
            Ok(Err(e)) => failed.push(format!("erasing {user_id}: {e}")),
            Err(e) => failed.push(format!("erasing {user_id}: {e}")),
        }
    }
    if !failed.is_empty() {
        return Err(format!("{} due erasure(s) failed ({done} completed): {}", failed.len(), failed.join("; ")));
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
        let marker = crate::storage::store::ErasedMarker {
            email_hash: self.pending.email_hash.clone(),
            erased_at: self.now,
        };
        let writes = crate::storage::records::finish_erasure(&self.user_id, &marker);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kyc::DocumentType;
    use crate::storage::store::{Store, StoreError};
    use crate::storage::vault::Vault;

    fn document() -> KycDocument {
        KycDocument {
            document_type: DocumentType::Passport,
            document_number: "X1234567".into(),
            address: "1 Example Street, Exampleton".into(),
        }
    }

    #[test]
    fn a_document_that_cannot_be_opened_is_an_error_not_a_missing_document() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let vault = Vault::new(&store, &[7u8; 32]).unwrap();
        store.apply_offline(&vault.new_data_key("usr_a").unwrap().expect("a new key")).unwrap();
        let sealed = vault.seal_json("usr_a", "kyc", &document()).unwrap();
        assert_eq!(kept_document(Some(vault.open_json("usr_a", "kyc", &sealed))), Ok(Some(document())));
        assert_eq!(kept_document(None), Ok(None), "no document submitted: kept without one");

        let mut corrupt = sealed;
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let opened = vault.open_json::<KycDocument>("usr_a", "kyc", &corrupt);
        assert!(matches!(opened, Err(VaultError::Corrupt(_))), "{opened:?}");
        let e = kept_document(Some(opened)).expect_err("a corrupt document is not kept as none");
        assert!(e.contains("KYC document could not be opened"), "{e}");
        assert!(!e.contains("X1234567") && !e.contains("Exampleton"), "no personal data in the error: {e}");

        let unavailable = VaultError::Store(StoreError::Unavailable("no leader for the key's group".into()));
        let e = kept_document(Some(Err(unavailable))).expect_err("an unavailable key is retried, not dropped");
        assert!(e.contains("no leader"), "{e}");
    }
}
