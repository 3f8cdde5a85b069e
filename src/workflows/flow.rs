//! The shape of a workflow: a sans-IO state machine that asks for one entity call at a time
//! (an [`Envelope`]) or one effect of an adapter ([`Effect`]: the broker, the vault, the
//! sanctions list), is handed the answer, and ends with its output.
//! Production drives it over the router ([`run`]); the simulator drives the very same machine
//! over its own entities ([`run_with`]). Time and ids come in through the machine's input, never
//! from a clock or the OS inside it.

use crate::actors::entity::EntityFailure;
use crate::cluster::Router;
use crate::domain::account::{Profile, ScreeningOutcome};
use crate::domain::audit::AuditDraft;
use crate::domain::envelope::RequestMeta;
use crate::domain::envelope::{Answer, Envelope};
use crate::domain::portfolio::Order;
use crate::domain::queries::RegulatoryFacts;
use crate::domain::time::Timestamp;
use crate::storage::store::WriteSet;
use crate::workflows::services::Services;
use std::future::Future;

/// The most steps a workflow may take unless it says otherwise (a bound on every loop; a
/// workflow that goes past its bound is a bug, ended with an error).
pub const STEPS_MAX: usize = 1024;

/// What a workflow asks for next.
#[derive(Clone, Debug)]
pub enum Next<O> {
    /// Carry out this entity call and hand back its answer.
    Call(Envelope),
    /// Read a user's entity for the decision that must come next (`Decide`, of an entity in
    /// the same shard). Where this node serves the shard's group, the read is answered here
    /// with no read barrier and the decision's write is proposed only in the read's raft term
    /// (`Router::fence`): the write committing is what proves this node led the group when it
    /// read, and a deposed leader's write never commits. So every outcome of the decision
    /// must be a write the runner waits for (the order path: a fill, or a refusal remembered
    /// under its key). Elsewhere (and in the simulator) it is a `Call`. Anything but that
    /// decision next is a workflow bug, refused.
    Peek(Envelope),
    /// Carry out this entity command and hand back its decision as soon as it is made: the
    /// runner waits for it to be durable before the workflow's next call or its end, while an
    /// effect may run meanwhile (the order path's broker writes its confirmation to the same
    /// shard group, so one flush carries the booking and the confirmation). Where a decision
    /// cannot be had before it is durable (another node leads the group; the simulator), this
    /// is a `Call`.
    Decide(Envelope),
    /// Carry out this effect of an adapter and hand back its result.
    Effect(Effect),
    /// Finished.
    Done(O),
}

/// What a workflow may ask of the adapters beside the entities.
#[derive(Clone, Debug)]
pub enum Effect {
    /// The broker executes a booked fill and confirms it durably (a failure is logged and left
    /// to reconciliation: the order is booked; a missing confirmation is what it raises).
    Confirm { user_id: String, order: Order },
    /// The data key `id` exists (created unless it did), durably.
    DataKey(String),
    /// `profile` sealed under `owner`'s data key, and screened against the sanctions list when
    /// `screen` (investors are, staff are not).
    SealProfile { owner: String, profile: Box<Profile>, screen: bool },
    /// Before an erasure: the identity regulation needs (from the sealed profile and KYC
    /// document in `facts`) sealed under a retention key of its own and kept as the user's
    /// regulatory record until `[retention] regulatory_records` has passed. Skipped when there
    /// is one already or the person's data is unreadable.
    KeepRegulatory {
        user_id: String,
        facts: Box<RegulatoryFacts>,
        now: Timestamp,
    },
    /// The access tokens of these sessions stop at once.
    RevokeSessions(Vec<String>),
    /// The erasure goes on the erasure list outside the data folder (a restore replays it).
    ListErasure { user_id: String, email_hash: String },
    /// The data key `id` is destroyed (crypto-shredding), durably.
    DestroyDataKey(String),
    /// These writes (shard records) are group-committed, durably.
    Write(WriteSet),
    /// An audit record that belongs to no entity command (a refused request), queued for the
    /// next group commit (not waited for).
    Audit { draft: AuditDraft, subject: String, meta: RequestMeta },
    /// The user's live valuation starts a new period from their current positions (fresh
    /// advice is measured from here).
    Rebase(String),
    /// `sealed_profile` of `user_id` opened and screened against the current sanctions list.
    Screen { user_id: String, sealed_profile: Vec<u8> },
    /// The portfolio's whole journal (its events, oldest first).
    PortfolioJournal(String),
    /// The latest committed quote of a listed symbol from the node's price book, if it has a
    /// recent one (`Effected::Quote`; anything else: ask the instrument).
    Quote(String),
    /// The KYC provider verifies an identity document (`Effected::Kyc`).
    VerifyKyc {
        user_id: String,
        document: Box<crate::domain::kyc::KycDocument>,
    },
    /// One field of `key_id`'s personal data sealed under its data key (`Effected::SealedField`).
    Seal { key_id: String, field: &'static str, plaintext: Vec<u8> },
}

/// The result of an [`Effect`].
#[derive(Clone, Debug, PartialEq)]
pub enum Effected {
    /// Carried out.
    Done,
    Confirmed,
    KeyReady,
    Sealed {
        profile: Vec<u8>,
        screening: Option<ScreeningOutcome>,
    },
    Screened(ScreeningOutcome),
    Journal(Vec<crate::domain::portfolio::PortfolioEvent>),
    Quote(Box<crate::domain::instrument::Quote>),
    Kyc(crate::domain::kyc::KycStatus),
    SealedField(Vec<u8>),
    /// The effect could not be carried out (the vault or the disk refused): nothing of it holds.
    Failed(String),
}

/// What a workflow is handed: nothing at the start, then the answer to its last request.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Start,
    Answer(Answer),
    Effected(Effected),
}

pub trait Workflow {
    type Output;
    fn next(&mut self, input: Input) -> Next<Self::Output>;
    /// The most steps it may take, as far as it knows now (it may grow as it learns, e.g. the
    /// number of orders of accepted advice).
    fn steps_max(&self) -> usize {
        STEPS_MAX
    }
}

fn past_bound(steps: usize) -> EntityFailure {
    tracing::error!(steps, "a workflow went past its step bound");
    EntityFailure::OutcomeUnknown(format!("a workflow went past its bound after {steps} steps"))
}

/// Carries out the effects of workflows (production: the node's adapters).
pub trait Effects {
    /// `fence`: the raft term of the decision answered early just before the effect and not
    /// yet durable (`Next::Decide`), when there is one. A write the effect makes that must
    /// never commit without that decision — the broker's confirmation of the fill it booked —
    /// is fenced to it (`actors::entity::Durable`).
    fn apply(&self, effect: Effect, fence: Option<u64>) -> impl Future<Output = Effected> + Send;
}

/// Drives `wf` over the node's router: each call is dispatched to its entity (local today, over
/// the network in a cluster). A failed call ends the workflow with that failure; its steps are
/// exactly once per request id, so running it again with the same ids is safe.
pub async fn run<W: Workflow>(router: &Router, effects: &impl Effects, mut wf: W) -> Result<W::Output, EntityFailure> {
    let mut input = Input::Start;
    let mut steps = 0;
    // Decisions answered before they were durable (`Next::Decide`), not yet waited for.
    let mut undurable: Vec<crate::actors::entity::Durable> = Vec::new();
    // A read served with no barrier (`Next::Peek`): its shard and raft term, for the decision.
    let mut fence: Option<(u16, u64)> = None;
    while steps < wf.steps_max() {
        steps += 1;
        let next = wf.next(input);
        let fence_now = fence.take();
        after_peek(fence_now.map(|(shard, _)| shard), &next)?;
        input = match next {
            Next::Done(out) => {
                settle(&mut undurable).await?;
                return Ok(out);
            }
            Next::Call(envelope) => {
                settle(&mut undurable).await?;
                Input::Answer(router.dispatch(envelope).await?)
            }
            Next::Peek(envelope) => {
                settle(&mut undurable).await?;
                let id = envelope.entity_id().to_string();
                match router.fence(&id) {
                    Some(term) => {
                        fence = Some((crate::domain::ids::shard_of(&id), term));
                        Input::Answer(router.peek(envelope, term).await?)
                    }
                    // Not served here: an ordinary read, with its barrier where it is served.
                    None => Input::Answer(router.dispatch(envelope).await?),
                }
            }
            Next::Decide(envelope) => {
                settle(&mut undurable).await?;
                let (answer, durable) = router.dispatch_early(envelope, fence_now.map(|(_, term)| term)).await?;
                undurable.extend(durable);
                Input::Answer(answer)
            }
            Next::Effect(effect) => {
                let fence = undurable.last().and_then(|d| d.term);
                Input::Effected(effects.apply(effect, fence).await)
            }
        };
    }
    Err(past_bound(steps))
}

/// The rule of `Next::Peek`, for every driver (these two and the cluster simulator's): after a
/// peek at `peeked` (its shard), the next step must be a decision in that shard. Anything else
/// could tell a client what a deposed leader believed: a bug in the workflow, and nothing more
/// of it runs.
pub fn after_peek<O>(peeked: Option<u16>, next: &Next<O>) -> Result<(), EntityFailure> {
    match peeked {
        Some(shard) if !matches!(next, Next::Decide(e) if crate::domain::ids::shard_of(e.entity_id()) == shard) => Err(unfenced(next)),
        _ => Ok(()),
    }
}

fn unfenced<O>(next: &Next<O>) -> EntityFailure {
    let what = match next {
        Next::Call(_) => "a call",
        Next::Peek(_) => "another read",
        Next::Decide(_) => "a decision in another shard",
        Next::Effect(_) => "an effect",
        Next::Done(_) => "its end",
    };
    tracing::error!(next = what, "a workflow read with no barrier and did not decide on it next");
    EntityFailure::NotApplied(format!("a workflow read with no barrier, then asked for {what} instead of a decision"))
}

/// Waits until every decision answered early is durable; the first that failed to become so
/// is the workflow's failure (its outcome unknown to the caller, who retries under its ids).
async fn settle(undurable: &mut Vec<crate::actors::entity::Durable>) -> Result<(), EntityFailure> {
    for d in undurable.drain(..) {
        match d.await {
            Ok(r) => r?,
            Err(_) => return Err(EntityFailure::OutcomeUnknown("the journal stopped before a decision was durable".into())),
        }
    }
    Ok(())
}

/// Drives `wf` synchronously over `call` (the simulator's entities) and `confirm`.
pub fn run_with<W: Workflow>(
    mut wf: W,
    mut call: impl FnMut(Envelope) -> Result<Answer, EntityFailure>,
    mut effect: impl FnMut(Effect) -> Effected,
) -> Result<W::Output, EntityFailure> {
    let mut input = Input::Start;
    let mut steps = 0;
    // The simulator's entities serve every read as of the last write, so a peek is an ordinary
    // read here; its rule is kept all the same, so a workflow that breaks it fails in tests
    // and simulations too, not only on a node.
    let mut peeked: Option<u16> = None;
    while steps < wf.steps_max() {
        steps += 1;
        let next = wf.next(input);
        after_peek(peeked.take(), &next)?;
        input = match next {
            Next::Done(out) => return Ok(out),
            Next::Peek(envelope) => {
                peeked = Some(crate::domain::ids::shard_of(envelope.entity_id()));
                Input::Answer(call(envelope)?)
            }
            Next::Call(envelope) | Next::Decide(envelope) => Input::Answer(call(envelope)?),
            Next::Effect(e) => Input::Effected(effect(e)),
        };
    }
    Err(past_bound(steps))
}

/// A workflow was handed an answer to a request it did not make: a driver bug.
#[track_caller]
pub(crate) fn unexpected(workflow: &str, input: &Input) -> ! {
    panic!("{workflow}: unexpected input {input:?}");
}

fn done(r: Result<(), String>) -> Effected {
    match r {
        Ok(()) => Effected::Done,
        Err(e) => Effected::Failed(e),
    }
}

/// The node's effects: its broker, vault and sanctions list.
pub struct NodeEffects<'a>(pub &'a Services);

impl Effects for NodeEffects<'_> {
    async fn apply(&self, effect: Effect, fence: Option<u64>) -> Effected {
        let s = self.0;
        match effect {
            Effect::Confirm { user_id, order } => {
                if let Err(e) = s.broker.execute(&user_id, &order, fence).await {
                    tracing::error!(error = %e, "the broker did not confirm a booked order");
                }
                Effected::Confirmed
            }
            Effect::DataKey(id) => match s.create_data_key(&id).await {
                Ok(()) => Effected::KeyReady,
                Err(e) => Effected::Failed(e),
            },
            Effect::SealProfile { owner, profile, screen } => match s.seal_json(&owner, "profile", &*profile).await {
                Ok(sealed) => Effected::Sealed {
                    profile: sealed,
                    screening: screen.then(|| crate::adapters::sanctions::screen(&s.sanctions_list(), &profile)),
                },
                Err(e) => Effected::Failed(e.to_string()),
            },
            Effect::KeepRegulatory { user_id, facts, now } => done(super::erasure::keep_regulatory_identity(s, &user_id, &facts, now).await),
            Effect::RevokeSessions(sessions) => {
                s.revoke_sessions_everywhere(sessions).await;
                Effected::Done
            }
            Effect::ListErasure { user_id, email_hash } => {
                let list = &s.config.gdpr.erasure_list;
                done(crate::storage::store::append_erasure_list(list, &user_id, &email_hash).map_err(|e| format!("erasure list {}: {e}", list.display())))
            }
            Effect::DestroyDataKey(id) => done(s.destroy_data_key(&id).await),
            Effect::Write(writes) => done(s.router.journal().write(writes).await.map_err(|e| e.to_string())),
            Effect::Audit { draft, subject, meta } => {
                if let Err(e) = s.router.audit(draft, &subject, &meta, false).await {
                    tracing::error!(error = %e, "an audit record could not be queued");
                }
                Effected::Done
            }
            Effect::Rebase(user) => {
                s.valuations.rebase(&user);
                Effected::Done
            }
            Effect::Screen { user_id, sealed_profile } => match s.open_json::<Profile>(&user_id, "profile", &sealed_profile).await {
                Ok(profile) => Effected::Screened(crate::adapters::sanctions::screen(&s.sanctions_list(), &profile)),
                Err(e) => Effected::Failed(format!("{user_id}: {e}")),
            },
            Effect::Quote(symbol) => match s.quotes.recent(&symbol) {
                Some(q) => Effected::Quote(Box::new(q)),
                None => Effected::Failed(format!("no recent price of {symbol} on this node")),
            },
            Effect::VerifyKyc { user_id, document } => match s.kyc.verify(&user_id, &document).await {
                Ok(status) => Effected::Kyc(status),
                Err(e) => Effected::Failed(e.to_string()),
            },
            Effect::Seal { key_id, field, plaintext } => match s.seal(&key_id, field, &plaintext).await {
                Ok(sealed) => Effected::SealedField(sealed),
                Err(e) => Effected::Failed(e.to_string()),
            },
            Effect::PortfolioJournal(user) => match s.router.read_journal::<crate::domain::portfolio::Portfolio>(&user).await {
                Ok(j) => Effected::Journal(j.into_iter().map(|e| e.event).collect()),
                Err(e) => Effected::Failed(e.to_string()),
            },
        }
    }
}
