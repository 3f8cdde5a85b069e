//! The generic entity actor: hosts one domain state machine, persists its events through the
//! audit journal's group commit and answers each caller only once its events are durable.
//!
//! - Activation (`on_start`) waits for a journal barrier, so every commit an earlier incarnation
//!   sent is on disk, then recovers snapshot + journal tail. A restart after a panic does the same.
//! - Commands are decided and applied in mailbox order without waiting for the disk; the reply
//!   travels with the commit and is sent from the journal's callback (a delegated reply).
//! - Reads and idempotent replays wait until everything they saw is durable (`durable` watermark).
//! - An idle entity with nothing in flight passivates (stops normally; the router reactivates it).
//! - Exactly once: every command carries a request id; the entity remembers the ids it applied
//!   with their outcomes (in its shard range, for `[entities] request_memory`), so a command
//!   retried after an ambiguous failure is answered again, not applied again.
//! - Every message checks that this node still owns the entity's shard (the shard map's epoch
//!   moves when a shard moves): a live actor of a shard that moved away refuses and stops.

use crate::actors::journal::{AuditJournal, CommitCallback};
use crate::actors::RequestMeta;
use crate::domain::audit::AuditRecord;
use crate::domain::ctx::{Ctx, Effect};
use crate::domain::entity::{Applied, Decision, Entity, RequestLog, Seen};
pub use crate::domain::envelope::{EntityFailure, OwnerHint};
use crate::domain::ids::EntityId;
use crate::domain::shard_map::ShardMap;
use crate::domain::time::Timestamp;
use crate::storage::store::{JournalEntry, Snapshot, WriteSet};
use crate::storage::{codec, keys, Store, StoreError};
use crate::telemetry::Metrics;
use kameo::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod reads;

/// How many times the last snapshot's size the journal tail must reach before the next snapshot.
const SNAPSHOT_TAIL_FACTOR: u64 = 4;

/// Called when an entity passivates, so the router forgets it.
pub type PassivateHook = Arc<dyn Fn(&EntityId, ActorId) + Send + Sync>;

/// What every entity of the node shares.
pub struct EntityEnv {
    pub store: Store,
    pub journal: AuditJournal,
    pub metrics: Arc<Metrics>,
    pub snapshot_every: u64,
    pub idle_timeout: Duration,
    pub now: fn() -> Timestamp,
    pub on_passivate: PassivateHook,
    /// This node, and which node owns each shard (shared with the router).
    pub node_id: String,
    pub shards: Arc<RwLock<ShardMap>>,
    /// How long, and how many, applied request ids each entity remembers.
    pub request_memory: Duration,
    pub request_memory_max: usize,
}

impl EntityEnv {
    /// `Ok` while this node owns `shard`.
    /// `Ok` while this node serves `shard`: it owns it in the shard map and leads its group
    /// (an entity runs only on its group's leader; a node that lost leadership refuses).
    pub fn owns(&self, shard: u16) -> Result<(), OwnerHint> {
        self.shards.read().expect("shard map lock").check(shard, &self.node_id)?;
        let group = crate::domain::ids::group_of(shard, self.store.groups());
        let l = self.journal.leadership(group);
        if l.served {
            Ok(())
        } else {
            Err(OwnerHint {
                shard,
                owner: l.leader.map(|id| format!("raft:{id}")).unwrap_or_default(),
                epoch: 0,
            })
        }
    }
}

#[derive(Clone)]
pub struct EntityArgs {
    pub id: EntityId,
    pub env: Arc<EntityEnv>,
}

#[derive(Debug)]
pub enum ExecError<R> {
    Rejected(R),
    Failed(EntityFailure),
}

pub struct EntityActor<E: Entity> {
    id: EntityId,
    state: E,
    seq: u64,
    since_snapshot: u64,
    tail_bytes: u64,
    snapshot_bytes: u64,
    durable: watch::Sender<u64>,
    /// A write of this entity failed to commit: its memory holds what storage does not, so it
    /// serves nothing more and stops (the next message activates it again from storage).
    poisoned: Arc<std::sync::atomic::AtomicBool>,
    /// The raft term in which this node served the entity's group when it was loaded (None:
    /// it did not). Its memory holds what the group committed up to then and what it decided
    /// since; it is valid only while the node still leads in that term, and each of its
    /// writes is proposed only then (fenced: never forwarded to another leader, never
    /// committed in a later term, where another leader may have written the same journal
    /// positions in between).
    term: Option<u64>,
    env: Arc<EntityEnv>,
    rng: ChaCha20Rng,
    last_activity: Instant,
    requests: RequestLog<E::Reply, E::Rejection>,
}

/// Executes a domain command.
pub struct Execute<E: Entity> {
    pub cmd: E::Command,
    pub meta: RequestMeta,
}

/// Executes a domain command and answers with its decision at once, before it is durable,
/// with a ticket that resolves once it is. The caller must wait for the ticket before it tells
/// anyone of the outcome; meanwhile it may send writes of its own to the entity's group,
/// which are then behind the command's in the group's log (the order path's broker
/// confirmation: one flush carries both).
pub struct ExecuteEarly<E: Entity> {
    pub cmd: E::Command,
    pub meta: RequestMeta,
    /// The command was decided on a read served here without a read barrier in this raft
    /// term (`Router::fence`): its write is proposed only while this node still leads the
    /// group in that term (`AuditJournal::commit_fenced`).
    pub fence: Option<u64>,
}

/// Resolves once what an early answer decided is durable (or failed to become so); `term` is
/// the raft term its write was fenced to (None: nothing written, or not fenced). A write that
/// must never commit without the decision — the broker's confirmation of the fill it booked —
/// is fenced to the same term at the same node (`AuditJournal::commit_fenced`): one leader's
/// entries of one term commit in log order, so it commits only with the decision before it.
#[derive(Debug)]
pub struct Durable {
    ticket: tokio::sync::oneshot::Receiver<Result<(), EntityFailure>>,
    pub term: Option<u64>,
}

impl std::future::Future for Durable {
    type Output = Result<Result<(), EntityFailure>, tokio::sync::oneshot::error::RecvError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.ticket).poll(cx)
    }
}

/// An early answer: the decision (or the refusal) and the ticket for its durability.
pub type EarlyAnswer<E> = Result<(Result<<E as Entity>::Reply, <E as Entity>::Rejection>, Durable), EntityFailure>;

/// What a command came to: its outcome, and what makes it durable.
enum Decided<R, J> {
    Failed(EntityFailure),
    /// Durable once everything the entity applied so far is.
    Settled(Result<R, J>),
    /// Durable once this write is.
    Write(Result<R, J>, WriteSet),
}

/// Answers a named read from the durable state.
pub struct RunQuery<E: Entity> {
    pub query: E::Query,
}

/// Reads the entity's whole journal (its history), once everything applied so far is durable.
pub struct ReadJournal<E>(PhantomData<E>);

impl<E> Default for ReadJournal<E> {
    fn default() -> Self {
        ReadJournal(PhantomData)
    }
}

/// Test and operations hook: panics inside the entity (never reachable from the gateway).
#[doc(hidden)]
pub struct DebugPanic;

struct IdleCheck;

/// An entity's journal seq and state, for tests and diagnostics.
pub struct Inspect<E>(PhantomData<E>);

impl<E> Default for Inspect<E> {
    fn default() -> Self {
        Inspect(PhantomData)
    }
}

impl<E: Entity> Actor for EntityActor<E> {
    type Args = EntityArgs;
    type Error = StoreError;

    fn name() -> &'static str {
        "EntityActor"
    }

    async fn on_start(args: EntityArgs, me: ActorRef<Self>) -> Result<Self, StoreError> {
        let EntityArgs { id, env } = args;
        // The term first: a load that happens while this node leads in it has everything
        // committed before the term, and nobody else commits in it.
        let term = env.journal.serving_term(crate::domain::ids::group_of(id.shard(), env.store.groups()));
        // Everything an earlier incarnation committed must be written before we read it back.
        env.journal.barrier().await?;
        let loaded = {
            let store = env.store.clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || store.load::<E>(&id))
                .await
                .map_err(|e| StoreError::Io(e.to_string()))?
        };
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                if let StoreError::Corrupt { location, .. } = &e {
                    env.metrics.corrupt_record(location);
                }
                tracing::error!(entity = %id, error = %e, "entity cannot be recovered");
                return Err(e);
            }
        };
        let kind = Metrics::kind(id.kind.name());
        env.metrics.entity_activations.get_or_create(&kind).inc();
        env.metrics.entities_active.get_or_create(&kind).inc();
        spawn_idle_timer(me.downgrade(), env.idle_timeout);
        let (durable, _) = watch::channel(loaded.seq);
        // Request ids past their memory go at activation too (an idle entity is written to
        // rarely); their records are deleted in a commit of their own, not waited for.
        let mut requests = loaded.requests;
        let keep_ms = i64::try_from(env.request_memory.as_millis()).unwrap_or(i64::MAX);
        let expired = requests.expire((env.now)(), keep_ms, env.request_memory_max);
        if let Some(term) = term.filter(|_| !expired.is_empty()) {
            let deletes = expired.iter().map(|r| keys::request_key(&id, r)).collect();
            let writes = WriteSet {
                deletes,
                ..WriteSet::default()
            };
            env.journal.commit_fenced(writes, term, Box::new(|_| {})).await;
        }
        Ok(EntityActor {
            id,
            state: loaded.state,
            seq: loaded.seq,
            since_snapshot: loaded.since_snapshot,
            tail_bytes: loaded.tail_bytes,
            snapshot_bytes: loaded.snapshot_bytes,
            durable,
            poisoned: Arc::default(),
            term,
            env,
            rng: ChaCha20Rng::from_os_rng(),
            last_activity: Instant::now(),
            requests,
        })
    }

    async fn on_panic(&mut self, _: WeakActorRef<Self>, err: PanicError) -> Result<std::ops::ControlFlow<ActorStopReason>, StoreError> {
        tracing::error!(entity = %self.id, error = ?err, "entity panicked; the supervisor restarts it from storage");
        self.env.metrics.entity_restarts.get_or_create(&Metrics::kind(self.id.kind.name())).inc();
        Ok(std::ops::ControlFlow::Break(ActorStopReason::Panicked(err)))
    }

    async fn on_stop(&mut self, _: WeakActorRef<Self>, _: ActorStopReason) -> Result<(), StoreError> {
        self.env.metrics.entities_active.get_or_create(&Metrics::kind(self.id.kind.name())).dec();
        Ok(())
    }
}

fn spawn_idle_timer<E: Entity>(me: WeakActorRef<EntityActor<E>>, idle: Duration) {
    let period = (idle / 2).max(Duration::from_millis(50));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(actor) = me.upgrade() else { break };
            if actor.tell(IdleCheck).try_send().is_err() && !actor.is_alive() {
                break;
            }
        }
    });
}

impl<E: Entity> EntityActor<E> {
    fn audit_records(&self, effects: Vec<Effect>, meta: &RequestMeta, now: Timestamp) -> Vec<AuditRecord> {
        effects
            .into_iter()
            .map(|Effect::Audit(d)| AuditRecord {
                seq: 0,
                group: 0,
                at: now,
                actor: meta.actor.clone(),
                action: d.action,
                entity: self.id.to_string(),
                request_id: meta.request_id.clone(),
                outcome: d.outcome,
                details: d.details,
            })
            .collect()
    }

    /// Applies the decided events to memory and builds what must be written for them.
    fn persist_events(&mut self, events: Vec<E::Event>, meta: &RequestMeta, now: Timestamp) -> WriteSet {
        let mut writes = WriteSet::default();
        for event in events {
            self.seq += 1;
            let entry = JournalEntry {
                seq: self.seq,
                at: now,
                request_id: meta.request_id.clone(),
                event,
            };
            let bytes = codec::encode(&entry);
            self.tail_bytes += bytes.len() as u64;
            writes.puts.push((keys::journal_key(&self.id, self.seq), bytes));
            self.state.apply(&entry.event);
            self.since_snapshot += 1;
        }
        self.state.check_invariants();
        // Snapshot when enough events have passed AND the tail outweighs the last snapshot
        // `SNAPSHOT_TAIL_FACTOR` times: snapshot writes then cost at most a quarter of the journal's
        // bytes however large the state grows, and recovery reads at most 5× the snapshot.
        if self.since_snapshot >= self.env.snapshot_every && self.tail_bytes >= SNAPSHOT_TAIL_FACTOR * self.snapshot_bytes {
            let snapshot = codec::encode(&Snapshot {
                seq: self.seq,
                state: &self.state,
            });
            self.snapshot_bytes = snapshot.len() as u64;
            self.tail_bytes = 0;
            writes.puts.push((keys::snapshot_key(&self.id), snapshot));
            if !E::journal_is_record() {
                let first = self.seq + 1 - self.since_snapshot;
                writes.deletes.extend((first..=self.seq).map(|s| keys::journal_key(&self.id, s)));
            }
            self.since_snapshot = 0;
        }
        writes
    }

    /// Sends `writes` to the journal, fenced to the term the entity was loaded in; `reply` runs
    /// once they are durable (and the watermark moves). A write that fails poisons the entity
    /// (before `reply` runs, so whoever hears of the failure finds it stopping): its memory
    /// applied what was not committed.
    ///
    /// An empty write (the replay of an outcome, `Seen::Again`) is a barrier: it completes after
    /// every write sent before it. It answers only if none of them failed — the outcome it
    /// replays may be one of them, still in flight when the request came again.
    async fn commit<R: Send + 'static>(&self, writes: WriteSet, reply: impl FnOnce(Result<(), StoreError>) -> R + Send + 'static) {
        let durable = self.durable.clone();
        let poisoned = self.poisoned.clone();
        let seq = self.seq;
        let replay = writes.is_empty();
        let done: CommitCallback = Box::new(move |r: Result<(), StoreError>| {
            let r = match r {
                Ok(()) if replay && poisoned.load(std::sync::atomic::Ordering::SeqCst) => Err(StoreError::Unavailable(
                    "an earlier write of the entity, perhaps the one replayed, did not commit".into(),
                )),
                r => r,
            };
            if r.is_ok() {
                durable.send_if_modified(|d| {
                    let moved = seq > *d;
                    *d = (*d).max(seq);
                    moved
                });
            } else {
                poisoned.store(true, std::sync::atomic::Ordering::SeqCst);
                // Wakes whoever waits for the watermark (`when_durable`): it will not get there.
                durable.send_modify(|_| {});
            }
            reply(r);
        });
        match self.term {
            Some(term) => self.env.journal.commit_fenced(writes, term, done).await,
            None => done(Err(StoreError::Unavailable(format!("{} was loaded where its group is not served", self.id)))),
        }
    }

    /// Remembers the outcome of `request_id` in `writes` (and forgets what has expired), so a
    /// retry of the same request is answered, not applied again.
    fn remember(&mut self, request_id: &str, digest: [u8; 32], now: Timestamp, outcome: Result<E::Reply, E::Rejection>, writes: &mut WriteSet) {
        let applied = Applied { at: now, digest, outcome };
        writes.puts.push((keys::request_key(&self.id, request_id), codec::encode(&applied)));
        self.requests.remember(request_id.to_string(), applied);
        let keep_ms = i64::try_from(self.env.request_memory.as_millis()).unwrap_or(i64::MAX);
        for gone in self.requests.expire(now, keep_ms, self.env.request_memory_max) {
            writes.deletes.push(keys::request_key(&self.id, &gone));
        }
    }

    /// Refuses the message when the shard moved away (and stops: another node serves it now).
    fn check_owner<R: Reply>(&self, ctx: &mut Context<Self, R>) -> Result<(), EntityFailure> {
        if self.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.reload(ctx, "a write of the entity did not commit"));
        }
        self.env.owns(self.id.shard()).map_err(|hint| {
            tracing::info!(entity = %self.id, owner = %hint.owner, epoch = hint.epoch, "shard moved away; the entity stops here");
            ctx.stop();
            EntityFailure::NotOwner(hint)
        })?;
        if self.term.is_none() || self.serving_term() != self.term {
            // Leadership went and came back (or the entity was loaded as it moved): another
            // leader may have written in between.
            return Err(self.reload(ctx, "the group's leadership term changed since it was loaded"));
        }
        Ok(())
    }

    /// Stops the entity because its memory may hold what storage does not (`why`): out of the
    /// registry first, so what comes next activates it again from storage.
    fn reload<R: Reply>(&self, ctx: &mut Context<Self, R>, why: &str) -> EntityFailure {
        tracing::info!(entity = %self.id, reason = why, "the entity stops and is loaded again from storage");
        (self.env.on_passivate)(&self.id, ctx.actor_ref().id());
        ctx.stop();
        EntityFailure::Unavailable(format!("{}: {why}; loading it again", self.id))
    }

    /// The raft term in which this node serves the entity's group (None: it does not now).
    fn serving_term(&self) -> Option<u64> {
        self.env
            .journal
            .serving_term(crate::domain::ids::group_of(self.id.shard(), self.env.store.groups()))
    }

    /// Runs `f` once everything up to the current seq is durable. If a write before it fails
    /// instead, `f` is dropped at once (its caller hears the entity went away, and asks again
    /// of the activation loaded from storage), not kept until the entity stops.
    fn when_durable(&self, f: impl FnOnce() + Send + 'static) {
        let target = self.seq;
        let mut rx = self.durable.subscribe();
        if *rx.borrow() >= target {
            f();
            return;
        }
        let poisoned = self.poisoned.clone();
        let failed = move || poisoned.load(std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            if rx.wait_for(|d| *d >= target || failed()).await.is_ok() && *rx.borrow() >= target {
                f();
            }
        });
    }
}

impl<E: Entity> EntityActor<E> {
    /// Decides a command (or finds it decided before, under its request id), applies its
    /// events to memory and builds their write — without sending it.
    fn decide_command(&mut self, cmd: E::Command, meta: &RequestMeta) -> Decided<E::Reply, E::Rejection> {
        let digest = codec::digest(&E::request_form(&cmd));
        match self.requests.seen(&meta.request_id, &digest) {
            Seen::Fresh => {}
            Seen::Conflict => {
                // One request id, two commands: a driver bug. Refused, loudly, and nothing applied.
                self.env.metrics.request_id_conflicts.inc();
                tracing::error!(entity = %self.id, request_id = %meta.request_id, "a request id came again with another command; refused");
                return Decided::Failed(EntityFailure::NotApplied(format!(
                    "request id {} was used for another command",
                    meta.request_id
                )));
            }
            Seen::Again(outcome) => {
                self.env.metrics.request_replays.inc();
                // Answered once what answered it first is durable: an empty commit completes
                // after every commit sent before it (a refusal with only an audit record moves
                // no seq).
                return Decided::Write(outcome, WriteSet::default());
            }
        }
        let now = (self.env.now)();
        let (decided, effects) = {
            let mut dctx = Ctx::new(now, &mut self.rng);
            let decided = self.state.decide(cmd, &mut dctx);
            (decided, dctx.take_effects())
        };
        let audit = self.audit_records(effects, meta, now);
        let (events, outcome) = match decided {
            Err(rejection) if audit.is_empty() => return Decided::Settled(Err(rejection)),
            Ok(Decision { events, reply }) if events.is_empty() && audit.is_empty() => return Decided::Settled(Ok(reply)),
            Err(rejection) => (Vec::new(), Err(rejection)),
            Ok(Decision { events, reply }) => (events, Ok(reply)),
        };
        let mut writes = self.persist_events(events, meta, now);
        writes.audit = audit;
        self.remember(&meta.request_id, digest, now, outcome.clone(), &mut writes);
        Decided::Write(outcome, writes)
    }
}

impl<E: Entity> Message<Execute<E>> for EntityActor<E> {
    type Reply = DelegatedReply<Result<E::Reply, ExecError<E::Rejection>>>;

    async fn handle(&mut self, msg: Execute<E>, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.last_activity = Instant::now();
        let owner = self.check_owner(ctx);
        let (delegated, sender) = ctx.reply_sender();
        let send = move |v: Result<E::Reply, ExecError<E::Rejection>>| {
            if let Some(tx) = sender {
                tx.send(v);
            }
        };
        if let Err(f) = owner {
            send(Err(ExecError::Failed(f)));
            return delegated;
        }
        let unknown = |e: StoreError| ExecError::Failed(failure_of_commit(&e));
        match self.decide_command(msg.cmd, &msg.meta) {
            Decided::Failed(f) => send(Err(ExecError::Failed(f))),
            Decided::Settled(outcome) => self.when_durable(move || send(outcome.map_err(ExecError::Rejected))),
            Decided::Write(outcome, writes) => {
                self.commit(writes, move |r| send(r.map_err(unknown).and_then(|_| outcome.map_err(ExecError::Rejected))))
                    .await
            }
        }
        delegated
    }
}

impl<E: Entity> Message<ExecuteEarly<E>> for EntityActor<E> {
    type Reply = DelegatedReply<EarlyAnswer<E>>;

    async fn handle(&mut self, msg: ExecuteEarly<E>, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.last_activity = Instant::now();
        let owner = self.check_owner(ctx);
        let (delegated, sender) = ctx.reply_sender();
        let send = move |v: EarlyAnswer<E>| {
            if let Some(tx) = sender {
                tx.send(v);
            }
        };
        if let Err(f) = owner {
            send(Err(f));
            return delegated;
        }
        if let Some(term) = msg.fence.filter(|t| self.term != Some(*t)) {
            // Leadership moved since the read the command was decided on: refused before it
            // touches memory (the writer checks again at the proposal).
            send(Err(EntityFailure::Unavailable(format!(
                "{}: not served here in term {term}, the term of the read this command was decided on",
                self.id
            ))));
            return delegated;
        }
        let (durable, ticket) = tokio::sync::oneshot::channel();
        let ticket = Durable { ticket, term: self.term };
        match self.decide_command(msg.cmd, &msg.meta) {
            Decided::Failed(f) => send(Err(f)),
            Decided::Settled(outcome) => {
                self.when_durable(move || {
                    let _ = durable.send(Ok(()));
                });
                send(Ok((outcome, ticket)));
            }
            Decided::Write(outcome, writes) => {
                // Sent to the group commit before the answer: whatever the caller writes to
                // the group next is behind it.
                self.commit(writes, move |r| {
                    let _ = durable.send(r.map_err(|e| failure_of_commit(&e)));
                })
                .await;
                send(Ok((outcome, ticket)));
            }
        }
        delegated
    }
}

/// What a failed commit means to the caller: not committed while leadership moves (the router
/// retries it), or unknown (retry with the same request id).
fn failure_of_commit(e: &StoreError) -> EntityFailure {
    match e {
        StoreError::Unavailable(why) => EntityFailure::Unavailable(why.clone()),
        other => EntityFailure::OutcomeUnknown(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_raft_refused_is_unavailable_and_a_failed_disk_leaves_the_outcome_unknown() {
        // Raft dropped the proposal (a leadership transfer under way): the router tries again.
        let moving = StoreError::Unavailable("shard group 3 refused the proposal (leadership moving)".into());
        assert_eq!(
            failure_of_commit(&moving),
            EntityFailure::Unavailable("shard group 3 refused the proposal (leadership moving)".into())
        );
        // The store failed: the caller decides, retrying under the same request id.
        assert!(matches!(failure_of_commit(&StoreError::Failed), EntityFailure::OutcomeUnknown(_)));
        assert!(matches!(
            failure_of_commit(&StoreError::Io("disk full".into())),
            EntityFailure::OutcomeUnknown(_)
        ));
    }
}
