//! The router: entity id → shard → (today) a local entity actor, activated on demand.
//!
//! Its surface is the entity envelope: `execute(id, command, meta)` and `query(id, query)`,
//! where commands, replies, rejections and queries are serialisable values — nothing of it
//! hands out a local actor, so the cluster can put a network between caller and entity.
//!
//! Every send checks the shard map first (a cached actor of a shard that moved is not used),
//! and the actor checks again. Sends that find an actor stopping (passivated, or restarting
//! after a panic) come back with their message unhandled (`ActorNotRunning` /
//! `ActorRestarting`) and are retried on a fresh activation, a bounded number of times.

pub use crate::actors::entity::EntityFailure as RouteFailure;
use crate::actors::entity::{DebugPanic, Durable, EntityActor, EntityArgs, EntityEnv, ExecError, Execute, ExecuteEarly, Inspect, ReadJournal, RunQuery};
use crate::actors::journal::AuditJournal;
use crate::actors::supervisor::EntitySupervisor;
use crate::actors::RequestMeta;
use crate::cluster::shard_map::ShardMap;
use crate::config::Config;
use crate::domain::account::Account;
use crate::domain::audit::{AuditDraft, AuditRecord};
use crate::domain::email_index::EmailIndex;
use crate::domain::entity::{Entity, Query};
use crate::domain::envelope::{Answer, Call, CallOf, Envelope, Enveloped, Outcome, OutcomeOf};
use crate::domain::ids::{EntityId, MAX_ID_LEN};
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::Portfolio;
use crate::domain::time::Timestamp;
use crate::storage::store::{JournalEntry, WriteSet};
use crate::storage::{codec, Store};
use crate::telemetry::Metrics;
use kameo::error::SendError;
use kameo::mailbox;
use kameo::prelude::*;
use kameo::supervision::RestartPolicy;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How recently a member must have been heard from to count as reachable (its gossip comes
/// every 300 ms).
const HEARD_WITHIN: Duration = Duration::from_secs(2);

/// How often a send is retried when it meets a stopping or restarting actor.
const SEND_ATTEMPTS_MAX: usize = 4;

/// Why a command did not succeed: the domain refused it, or it failed on the way (not applied,
/// outcome unknown, or not the owner — see [`RouteFailure`]).
#[derive(Debug)]
pub enum RouteError<R> {
    /// The domain refused the command.
    Rejected(R),
    Failed(RouteFailure),
}

impl<R: std::fmt::Debug> std::fmt::Display for RouteError<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::Rejected(r) => write!(f, "rejected: {r:?}"),
            RouteError::Failed(e) => e.fmt(f),
        }
    }
}

/// A failure that says leadership is moving (the write was not committed): worth another try
/// at wherever the group's leader is next.
fn moving(f: &RouteFailure) -> bool {
    matches!(f, RouteFailure::Unavailable(_))
}

/// An entity whose actor stopped under each of the attempts to hand it a message (its term
/// ended: leadership is moving). Nothing was applied — the message never reached an actor —
/// so the router follows leadership and tries again within the request timeout.
fn kept_stopping<E: Entity>(id: &str) -> RouteFailure {
    RouteFailure::Unavailable(format!("{} {id} kept stopping", E::KIND.name()))
}

/// The longest request id a command may carry (it is part of a storage key).
pub const REQUEST_ID_MAX_BYTES: usize = 128;

pub struct Registry<E: Entity> {
    actors: Mutex<HashMap<String, ActorRef<EntityActor<E>>>>,
}

impl<E: Entity> Default for Registry<E> {
    fn default() -> Self {
        Registry {
            actors: Mutex::new(HashMap::new()),
        }
    }
}

impl<E: Entity> Registry<E> {
    fn get(&self, id: &str) -> Option<ActorRef<EntityActor<E>>> {
        self.actors.lock().expect("registry lock").get(id).filter(|a| a.is_alive()).cloned()
    }
    fn forget(&self, id: &str, actor: ActorId) {
        let mut map = self.actors.lock().expect("registry lock");
        if map.get(id).is_some_and(|a| a.id() == actor) {
            map.remove(id);
        }
    }
    fn len(&self) -> usize {
        self.actors.lock().expect("registry lock").len()
    }
    /// Stops and forgets the actors of shards `owned` says are no longer here.
    fn evict(&self, owned: impl Fn(u16) -> bool) -> usize {
        let mut map = self.actors.lock().expect("registry lock");
        let moved: Vec<String> = map.keys().filter(|id| !owned(EntityId::new(E::KIND, id.as_str()).shard())).cloned().collect();
        for id in &moved {
            if let Some(actor) = map.remove(id) {
                tokio::spawn(async move {
                    let _ = actor.stop_gracefully().await;
                });
            }
        }
        moved.len()
    }
}

/// How calls reach the leader of a group on another node.
pub struct Remote {
    pub transport: crate::cluster::transport::Transport,
    pub directory: Arc<crate::cluster::directory::Directory>,
    pub me: crate::cluster::raft::RaftId,
}

/// Runs a user's step here (the workflows' side, set when the node's services exist).
pub type StepHandler = Arc<
    dyn Fn(
            crate::domain::steps::UserStep,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::domain::steps::StepAnswer, RouteFailure>> + Send>>
        + Send
        + Sync,
>;

pub struct Inner {
    shards: Arc<std::sync::RwLock<ShardMap>>,
    remote: std::sync::OnceLock<Remote>,
    steps: std::sync::OnceLock<StepHandler>,
    /// The longest a call waits for its group to have a leader.
    request_timeout: Duration,
    env: Arc<EntityEnv>,
    supervisor: ActorRef<EntitySupervisor>,
    journal: AuditJournal,
    mailbox_capacity: usize,
    restart_limit: u32,
    restart_window: Duration,
    accounts: Registry<Account>,
    portfolios: Registry<Portfolio>,
    instruments: Registry<Instrument>,
    email_index: Registry<EmailIndex>,
}

/// One try at a group's leader: finished (the caller hears it), or to be tried again.
enum Attempt<T> {
    Done(Result<T, RouteFailure>),
    Again(RouteFailure),
}

/// Entities the router knows how to place.
pub trait Routable: Entity + Enveloped {
    fn registry(inner: &Inner) -> &Registry<Self>;
}

macro_rules! routable {
    ($t:ty, $field:ident) => {
        impl Routable for $t {
            fn registry(inner: &Inner) -> &Registry<Self> {
                &inner.$field
            }
        }
    };
}
routable!(Account, accounts);
routable!(Portfolio, portfolios);
routable!(Instrument, instruments);
routable!(EmailIndex, email_index);

#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

pub struct RouterSettings {
    pub node_id: String,
    pub snapshot_every: u64,
    pub max_batch: usize,
    pub idle_timeout: Duration,
    pub mailbox_capacity: usize,
    pub restart_limit: u32,
    pub restart_window: Duration,
    pub request_memory: Duration,
    pub request_memory_max: usize,
    pub now: fn() -> Timestamp,
    /// How the journal drives raft (`[cluster]`).
    pub tick_interval: std::time::Duration,
    pub raft: crate::cluster::raft::RaftSettings,
    /// The longest a call waits for its group to have a leader before it fails (503).
    pub request_timeout: Duration,
    /// The cluster this node formed or joined, its raft id in it and how raft messages reach
    /// the other members (None: a cluster of one).
    /// SHA-256 of the master key (the cluster's, recorded in its metadata).
    pub master_fingerprint: String,
    /// `[cluster] replication_factor`: what a cluster of one grows to when nodes join it.
    pub replication_factor: usize,
    /// `[gdpr] erasure_list`, for the journal to list the erasures this node's replicas apply
    /// (None: not listed — `from_config` leaves it to the node, so tools and tests write no file).
    pub erasure_list: Option<std::path::PathBuf>,
    pub cluster: Option<(
        crate::cluster::raft::RaftId,
        Arc<crate::cluster::directory::Directory>,
        crate::actors::journal::PeerSink,
    )>,
}

impl RouterSettings {
    pub fn from_config(c: &Config) -> RouterSettings {
        RouterSettings {
            node_id: c.node.id.clone(),
            snapshot_every: c.storage.snapshot_every,
            max_batch: c.storage.max_batch,
            idle_timeout: c.entities.idle_timeout,
            mailbox_capacity: c.entities.mailbox_capacity,
            restart_limit: c.entities.restart_limit,
            restart_window: c.entities.restart_window,
            request_memory: c.entities.request_memory,
            request_memory_max: c.entities.request_memory_max,
            now: crate::actors::wall_clock_now,
            tick_interval: c.cluster.tick_interval,
            raft: crate::cluster::raft::RaftSettings {
                election_tick: c.cluster.election_tick,
                heartbeat_tick: c.cluster.heartbeat_tick,
                seed: crate::cluster::raft::splitmix64(c.node.id.bytes().fold(0u64, |h, b| h.rotate_left(8) ^ u64::from(b))),
                ..Default::default()
            },
            cluster: None,
            erasure_list: None,
            master_fingerprint: String::new(),
            replication_factor: c.cluster.replication_factor,
            request_timeout: c.gateway.request_timeout,
        }
    }
}

impl Router {
    /// Starts the audit journal and the entity supervisor over an open store.
    pub async fn start(store: Store, metrics: Arc<Metrics>, s: RouterSettings) -> Result<Router, crate::storage::StoreError> {
        let mut settings = crate::actors::journal::JournalSettings::with_batch(s.max_batch);
        settings.tick_interval = s.tick_interval;
        settings.raft = s.raft.clone();
        settings.erasure_list = s.erasure_list.clone();
        if let Some((raft_id, directory, peers)) = s.cluster.clone() {
            settings.raft_id = raft_id;
            settings.directory = Some(directory);
            settings.peers = Some(peers);
        } else {
            // A cluster of one, named as configured (it may later listen for peers and grow).
            let mut single = crate::cluster::membership::Membership::single(&s.node_id, store.groups(), &s.master_fingerprint);
            single.replication_factor = s.replication_factor.max(1);
            settings.directory = Some(crate::cluster::directory::Directory::new(single));
        }
        let journal = AuditJournal::start_with(store.clone(), settings, metrics.clone())?;
        let mut roles = journal.roles();
        let supervisor = EntitySupervisor::spawn(());
        let shards = Arc::new(std::sync::RwLock::new(ShardMap::single(&s.node_id)));
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            let env = Arc::new(EntityEnv {
                store,
                journal: journal.clone(),
                metrics,
                snapshot_every: s.snapshot_every,
                idle_timeout: s.idle_timeout,
                now: s.now,
                on_passivate: Arc::new(move |id: &EntityId, actor: ActorId| {
                    if let Some(inner) = weak.upgrade() {
                        inner.forget(id, actor);
                    }
                }),
                node_id: s.node_id.clone(),
                shards: shards.clone(),
                request_memory: s.request_memory,
                request_memory_max: s.request_memory_max,
            });
            Inner {
                shards,
                remote: std::sync::OnceLock::new(),
                steps: std::sync::OnceLock::new(),
                request_timeout: s.request_timeout,
                env,
                supervisor,
                journal: journal.clone(),
                mailbox_capacity: s.mailbox_capacity,
                restart_limit: s.restart_limit,
                restart_window: s.restart_window,
                accounts: Registry::default(),
                portfolios: Registry::default(),
                instruments: Registry::default(),
                email_index: Registry::default(),
            }
        });
        // A group this node stops leading: its entity actors stop before anything else of it
        // is served here (they check leadership on every message too).
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                match roles.recv().await {
                    Ok(rc) if !rc.leading => {
                        let Some(inner) = weak.upgrade() else { break };
                        let groups = inner.env.store.groups();
                        let here = |shard: u16| crate::domain::ids::group_of(shard, groups) != rc.group;
                        let stopped = inner.accounts.evict(here) + inner.portfolios.evict(here) + inner.instruments.evict(here) + inner.email_index.evict(here);
                        if stopped > 0 {
                            tracing::info!(group = rc.group, stopped, "leadership of the group moved; its entity actors here stopped");
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        // Changes were missed: which groups moved is unknown, so every entity
                        // stops and loads again from storage where it is served (each also
                        // refuses a message once its group's term is not the one it loaded in).
                        let Some(inner) = weak.upgrade() else { break };
                        let stopped = inner.accounts.evict(|_| false)
                            + inner.portfolios.evict(|_| false)
                            + inner.instruments.evict(|_| false)
                            + inner.email_index.evict(|_| false);
                        tracing::warn!(missed, stopped, "leadership changes were missed; every entity actor here stopped");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Router { inner })
    }

    /// Replaces the shard map (the cluster protocol's decision; today only tests call it). A map
    /// older than the one in force is refused: ownership never goes back in time.
    pub fn set_shard_map(&self, map: ShardMap) -> Result<(), String> {
        let mut current = self.inner.shards.write().expect("shard map lock");
        if map.epoch() <= current.epoch() {
            return Err(format!("shard map epoch {} is not newer than {}", map.epoch(), current.epoch()));
        }
        *current = map;
        drop(current);
        // The actors of shards that moved away stop now (each also refuses any message that
        // reaches it meanwhile): another node serves them, and this copy's state goes stale.
        let i = &self.inner;
        let owned = |shard: u16| i.env.owns(shard).is_ok();
        let stopped = i.accounts.evict(owned) + i.portfolios.evict(owned) + i.instruments.evict(owned) + i.email_index.evict(owned);
        if stopped > 0 {
            tracing::info!(stopped, "entity actors of shards that moved away were stopped");
        }
        Ok(())
    }

    /// The shard map in force.
    pub fn shard_map(&self) -> ShardMap {
        self.inner.shards.read().expect("shard map lock").clone()
    }

    pub fn journal(&self) -> &AuditJournal {
        &self.inner.journal
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.env.metrics
    }

    pub fn store(&self) -> &Store {
        &self.inner.env.store
    }

    /// Entity actors currently active on this node.
    pub fn active_entities(&self) -> usize {
        let i = &self.inner;
        i.accounts.len() + i.portfolios.len() + i.instruments.len() + i.email_index.len()
    }

    /// The actor of an entity on this node, activating it from storage when needed. The shard
    /// map is checked first, also for an actor already running.
    async fn activate<E: Routable>(&self, id: &str) -> Result<ActorRef<EntityActor<E>>, RouteFailure> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(RouteFailure::NotApplied("entity id length out of range".into()));
        }
        let entity = EntityId::new(E::KIND, id);
        self.inner.env.owns(entity.shard()).map_err(RouteFailure::NotOwner)?;
        let registry = E::registry(&self.inner);
        if let Some(a) = registry.get(id) {
            return Ok(a);
        }
        let args = EntityArgs {
            id: entity,
            env: self.inner.env.clone(),
        };
        let actor = EntityActor::<E>::supervise(&self.inner.supervisor, args)
            .restart_policy(RestartPolicy::Transient)
            .restart_limit(self.inner.restart_limit, self.inner.restart_window)
            .spawn_with_mailbox(mailbox::bounded(self.inner.mailbox_capacity))
            .await;
        match actor.wait_for_startup_result().await {
            Ok(()) => {}
            Err(kameo::error::HookError::Error(e @ crate::storage::store::StoreError::Corrupt { .. })) => {
                return Err(RouteFailure::Corrupt(format!("{} {id}: {e}", E::KIND.name())));
            }
            // Leadership moving while it loaded (its barrier was not committed here): the
            // router follows leadership and tries again within the request timeout.
            Err(kameo::error::HookError::Error(crate::storage::store::StoreError::Unavailable(why))) => {
                return Err(RouteFailure::Unavailable(format!("{} {id} cannot be activated now: {why}", E::KIND.name())));
            }
            Err(e) => return Err(RouteFailure::NotApplied(format!("{} {id} cannot be activated: {e}", E::KIND.name()))),
        }
        let mut map = registry.actors.lock().expect("registry lock");
        match map.get(id) {
            Some(existing) if existing.is_alive() => {
                // Lost an activation race: keep the first, stop ours before it sees a message.
                let ours = actor.clone();
                tokio::spawn(async move {
                    let _ = ours.stop_gracefully().await;
                });
                Ok(existing.clone())
            }
            _ => {
                map.insert(id.to_string(), actor.clone());
                Ok(actor)
            }
        }
    }

    fn observe_depth<E: Entity>(&self, actor: &ActorRef<EntityActor<E>>) {
        let s = actor.mailbox_sender();
        if let (Some(free), Some(max)) = (s.capacity(), s.max_capacity()) {
            self.inner
                .env
                .metrics
                .entity_mailbox_depth
                .get_or_create(&Metrics::kind(E::KIND.name()))
                .observe((max - free) as f64);
        }
    }

    /// Connects the router to the other members: calls for groups led elsewhere are forwarded.
    pub fn set_remote(&self, remote: Remote) {
        let _ = self.inner.remote.set(remote);
    }

    fn forwarded(&self, kind: &'static str) {
        self.metrics().raft.forwarded.get_or_create(&crate::telemetry::KindLabels { kind }).inc();
    }

    /// Sets what runs a user's step on this node (once).
    pub fn set_steps(&self, handler: StepHandler) {
        let _ = self.inner.steps.set(handler);
    }

    /// Runs a user's step (an order, accepting advice) at the leader of the user's group: here,
    /// or forwarded there in one hop, following leadership as it moves. A step whose outcome is
    /// unknown (the leader went away) runs again under the same request ids and idempotency
    /// keys — its entity commands apply once. Bounded by the request timeout.
    pub async fn step(&self, step: crate::domain::steps::UserStep) -> Result<crate::domain::steps::StepAnswer, RouteFailure> {
        let group = self.group_of(step.user_id());
        self.follow_leader(group, |to| {
            let step = step.clone();
            async move {
                let Some(leader) = to else {
                    return match self.step_here(step).await {
                        Err(f) if moving(&f) => Attempt::Again(f),
                        other => Attempt::Done(other),
                    };
                };
                let remote = self.remote();
                self.forwarded("step");
                match crate::cluster::peer::forward_step(&remote.transport, &remote.directory.get(), &self.inner.journal, leader, step).await {
                    Ok(answer) => Attempt::Done(answer),
                    Err(why) => Attempt::Again(RouteFailure::OutcomeUnknown(why)),
                }
            }
        })
        .await
    }

    /// Runs a step on this node (a peer's forwarded step: the peer checked leadership first).
    pub async fn step_here(&self, step: crate::domain::steps::UserStep) -> Result<crate::domain::steps::StepAnswer, RouteFailure> {
        match self.inner.steps.get() {
            Some(run) => run(step).await,
            None => Err(RouteFailure::NotApplied("this node does not run users' steps yet".into())),
        }
    }

    fn group_of(&self, id: &str) -> u32 {
        crate::domain::ids::group_of(crate::domain::ids::shard_of(id), self.inner.env.store.groups())
    }

    /// Where a call for `group` goes now: here, to another member, or (no leader yet) nowhere.
    async fn destination(&self, group: u32, deadline: tokio::time::Instant) -> Result<Option<crate::cluster::raft::RaftId>, RouteFailure> {
        use crate::cluster::routing::{route, Route};
        loop {
            let here = self.inner.journal.leadership(group);
            // A group with no replica here: the leader its members spoke of lately.
            let (me, heard) = match self.inner.remote.get() {
                Some(remote) => (remote.me, remote.directory.leader_of(group)),
                None => (0, None),
            };
            match route(me, here, heard) {
                Route::Here => return Ok(None),
                Route::To(leader) if self.inner.remote.get().is_some() => return Ok(Some(leader)),
                Route::To(_) | Route::Nowhere => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RouteFailure::NotApplied(format!("shard group {group} has no leader that serves")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a call to the leader of its group, here or on another node, following leadership
    /// as it moves; a forward whose outcome is unknown is sent again under the same request id
    /// (the entity answers it once). Bounded by the request timeout.
    async fn route<E: Routable>(&self, id: &str, call: CallOf<E>) -> Result<OutcomeOf<E>, RouteFailure> {
        let group = self.group_of(id);
        self.follow_leader(group, |to| {
            let call = call.clone();
            async move {
                let Some(leader) = to else {
                    return match self.call_local::<E>(id, call).await {
                        // Leadership moved meanwhile, or is moving (raft refused the write):
                        // look again (a command goes again under its request id). Refused
                        // otherwise while still leading: the caller hears it.
                        Err(f) if moving(&f) || !self.inner.journal.leadership(group).served => Attempt::Again(f),
                        other => Attempt::Done(other),
                    };
                };
                let remote = self.remote();
                self.forwarded("call");
                let envelope = E::envelope(id.to_string(), call);
                match crate::cluster::peer::forward(&remote.transport, &remote.directory.get(), &self.inner.journal, leader, envelope).await {
                    Ok(answer) => Attempt::Done(E::outcome(answer).ok_or_else(|| RouteFailure::NotApplied("a peer answered another kind".into()))),
                    Err(f @ (RouteFailure::NotApplied(_) | RouteFailure::Corrupt(_))) => Attempt::Done(Err(f)),
                    Err(f) => Attempt::Again(f),
                }
            }
        })
        .await
    }

    /// Tries `attempt` at the leader of `group` — here (`None`) or at another member — until it
    /// is done, following leadership as it moves; bounded by the request timeout (the last
    /// failure is the answer then).
    async fn follow_leader<T, F, Fut>(&self, group: u32, mut attempt: F) -> Result<T, RouteFailure>
    where
        F: FnMut(Option<crate::cluster::raft::RaftId>) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        loop {
            let to = self.destination(group, deadline).await?;
            let failure = match attempt(to).await {
                Attempt::Done(r) => return r,
                Attempt::Again(f) => f,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(failure);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The other members (there is a destination elsewhere only once they are known).
    fn remote(&self) -> &Remote {
        self.inner.remote.get().expect("a destination elsewhere needs a remote")
    }

    async fn call_local<E: Routable>(&self, id: &str, call: CallOf<E>) -> Result<OutcomeOf<E>, RouteFailure> {
        Ok(match call {
            Call::Execute { cmd, meta } => match self.execute_local::<E>(id, cmd, meta).await {
                Ok(reply) => Outcome::Done(reply),
                Err(RouteError::Rejected(r)) => Outcome::Rejected(r),
                Err(RouteError::Failed(f)) => return Err(f),
            },
            Call::Query(q) => Outcome::View(self.view::<E>(id, q).await?),
        })
    }

    /// Waits until everything committed so far is durable (used at shutdown).
    pub async fn drain(&self) -> Result<(), String> {
        self.inner.journal.barrier().await.map_err(|e| e.to_string())
    }
}

impl Inner {
    fn forget(&self, id: &EntityId, actor: ActorId) {
        use crate::domain::ids::EntityKind;
        match id.kind {
            EntityKind::Account => self.accounts.forget(&id.id, actor),
            EntityKind::Portfolio => self.portfolios.forget(&id.id, actor),
            EntityKind::Instrument => self.instruments.forget(&id.id, actor),
            EntityKind::EmailIndex => self.email_index.forget(&id.id, actor),
        }
    }
}

mod audit;
mod cluster_state;
mod commands;
mod reads;
