//! The audit journal: the handle every entity, job and route writes through. Behind it, one
//! thread drives this node's shard-group replicas (`group_commit::Writer`): each write set is
//! proposed to its group's raft log, and its callback runs once the entry is committed (flushed
//! on a majority of the group's replicas) and applied here — audit records sealed onto the
//! group's chain at apply time, in log order.
//!
//! It is an actor with its own OS thread and a bounded mailbox (a tokio channel) rather than a
//! kameo actor, for two reasons: group commit must take *everything* waiting in the mailbox at
//! once (kameo hands a handler one message at a time), and `flush` blocks on the disk, which
//! must not happen on the async runtime. A failed write or flush fails the node closed: every
//! later commit is refused.

use crate::cluster::raft::RaftId;
use crate::storage::audit_log::{ChainHead, VerifyReport};
use crate::storage::store::WriteSet;
use crate::storage::{Store, StoreError};
use crate::telemetry::Metrics;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

pub type CommitCallback = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Persist these writes and audit records; run `done` once they are durable (or failed).
pub struct Commit {
    pub writes: WriteSet,
    pub done: CommitCallback,
    /// Proposed only if this node leads the write's group in this term (refused as
    /// unavailable otherwise): a decision made on a read served here without a read barrier
    /// (`AuditJournal::commit_fenced`).
    pub fence: Option<u64>,
}

/// The mailbox bound: senders wait for room (back-pressure on every entity).
pub const JOURNAL_MAILBOX_CAPACITY: usize = 8192;

/// What the writer thread is sent.
pub(crate) enum Input {
    Commit(Commit),
    /// One tick of raft's logical clock (from the ticker thread).
    Tick,
    /// Raft messages from a member (authenticated by the transport).
    Raft {
        from: RaftId,
        messages: Vec<(u32, raft::prelude::Message)>,
    },
    /// The transport could not reach a member.
    Unreachable(RaftId),
    /// A read barrier of a group (ReadIndex): `Ok` once this node's replica applied the index
    /// its leader confirmed.
    Read {
        group: u32,
        done: CommitCallback,
    },
}

pub(crate) struct Shared {
    pub(crate) failed: AtomicBool,
    /// The raft states record's write count of the last batch the writer wrote to sled
    /// (`storage::durable_mark`; 0: none yet).
    pub(crate) staged_seq: std::sync::atomic::AtomicU64,
    /// Test hook: this many coming commits are refused as raft refuses a proposal it drops
    /// (`AuditJournal::debug_refuse_commits`).
    pub(crate) refuse: std::sync::atomic::AtomicU32,
    /// Test hook: the writer campaigns in this group (+1; 0: none) at its next tick
    /// (`AuditJournal::debug_new_term`).
    pub(crate) campaign: std::sync::atomic::AtomicU32,
    /// Test hook: the writer waits at the start of its next turn until this hears or hangs up
    /// (`AuditJournal::debug_pause_writer`); `paused` says one is set (a load per turn).
    pub(crate) pause: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    pub(crate) paused: AtomicBool,
    pub(crate) heads: Mutex<BTreeMap<u32, ChainHead>>,
    /// Per group: leadership words and raft status, as of the last round.
    pub(crate) board: crate::cluster::raft::Board<crate::cluster::raft::GroupStatus>,
    /// Per group: the index this node's replica has applied (waited on by `wait_applied`).
    pub(crate) applied: Vec<tokio::sync::watch::Sender<u64>>,
    pub(crate) roles: tokio::sync::broadcast::Sender<crate::cluster::raft::RoleChange>,
    /// Peer raft messages refused (unknown group, wrong address, refused by raft), or dropped
    /// because the writer's mailbox was full.
    pub(crate) refused: std::sync::atomic::AtomicU64,
    /// Sends a write set to the member leading its group (set once a cluster is joined).
    pub(crate) forwarder: std::sync::OnceLock<WriteForwarder>,
    pub(crate) raft_id: RaftId,
    /// When each member was last heard from (raft traffic), for reachability.
    pub(crate) heard: Mutex<BTreeMap<RaftId, std::time::Instant>>,
    /// The metadata group's state as this node's replica applied it (None: no replica here).
    pub(crate) meta: tokio::sync::watch::Sender<Option<crate::cluster::meta::MetaState>>,
    /// The membership, and the leaders members say they are of groups with no replica here.
    pub(crate) directory: Option<Arc<crate::cluster::directory::Directory>>,
}

/// Proposes a write set at another member (the leader of its group): `Ok` once it is
/// committed and applied there; `Unavailable` when that member does not lead the group now.
pub type WriteForwarder = Arc<dyn Fn(RaftId, WriteSet) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>> + Send + Sync>;

/// How long a write waits for its group to have a leader it can reach.
const FORWARD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub use crate::cluster::raft::Leadership;

/// Sends a batch of raft messages to a member (never blocks; what it cannot send is lost, and
/// raft sends it again).
#[derive(Clone)]
pub struct PeerSink(pub Arc<SendRaft>);

/// Sends one peer's batch of raft messages, by group.
pub type SendRaft = dyn Fn(RaftId, Vec<(u32, raft::prelude::Message)>) + Send + Sync;

impl std::fmt::Debug for PeerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSink")
    }
}

/// How the journal drives raft (from `[cluster]`).
#[derive(Clone, Debug)]
pub struct JournalSettings {
    pub max_batch: usize,
    pub tick_interval: std::time::Duration,
    pub raft: crate::cluster::raft::RaftSettings,
    /// This node's raft id and the cluster it belongs to, as it changes (a cluster of one by
    /// default).
    pub raft_id: RaftId,
    pub directory: Option<Arc<crate::cluster::directory::Directory>>,
    pub peers: Option<PeerSink>,
    /// `[gdpr] erasure_list`: every erasure this node's replicas apply is listed there (None:
    /// not listed by the journal — tools and tests).
    pub erasure_list: Option<std::path::PathBuf>,
}

impl JournalSettings {
    pub fn with_batch(max_batch: usize) -> JournalSettings {
        JournalSettings {
            max_batch,
            tick_interval: std::time::Duration::from_millis(100),
            raft: crate::cluster::raft::RaftSettings::default(),
            raft_id: super::group_commit::SINGLE_NODE_RAFT_ID,
            directory: None,
            peers: None,
            erasure_list: None,
        }
    }
}

/// A handle to the journal; cheap to clone. The writer thread ends when every handle is gone.
#[derive(Clone)]
pub struct AuditJournal {
    tx: mpsc::Sender<Input>,
    shared: Arc<Shared>,
    store: Store,
}

impl AuditJournal {
    /// Flushes the store, then records the data folder's high-water mark at what the writer
    /// had written before the flush began: a node that stops (or a tool done with a folder)
    /// leaves the exact mark (`storage::durable_mark`).
    pub fn flush_and_mark(&self) -> Result<(), StoreError> {
        let staged = self.shared.staged_seq.load(Ordering::SeqCst);
        self.store.flush()?;
        if staged > 0 {
            if let Err(e) = crate::storage::durable_mark::write(self.store.path(), staged) {
                tracing::warn!(error = %e, "the data folder's high-water mark could not be written");
            }
        }
        Ok(())
    }

    /// Starts the writer thread over `store` with default raft settings.
    pub fn start(store: Store, max_batch: usize, metrics: Arc<Metrics>) -> Result<AuditJournal, StoreError> {
        AuditJournal::start_with(store, JournalSettings::with_batch(max_batch), metrics)
    }

    /// Opens this node's group replicas (a new folder becomes a cluster of one: every group
    /// with this node as its only voter), replays what was committed but not applied, and
    /// starts the writer and ticker threads.
    pub fn start_with(store: Store, settings: JournalSettings, metrics: Arc<Metrics>) -> Result<AuditJournal, StoreError> {
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            staged_seq: std::sync::atomic::AtomicU64::new(0),
            refuse: std::sync::atomic::AtomicU32::new(0),
            campaign: std::sync::atomic::AtomicU32::new(0),
            pause: Mutex::new(None),
            paused: AtomicBool::new(false),
            heads: Mutex::new(BTreeMap::new()),
            // The shard groups and, after them, the metadata group.
            board: crate::cluster::raft::Board::new(store.groups() + 1),
            applied: (0..=store.groups()).map(|_| tokio::sync::watch::channel(0).0).collect(),
            roles: tokio::sync::broadcast::channel(1024).0,
            refused: std::sync::atomic::AtomicU64::new(0),
            forwarder: std::sync::OnceLock::new(),
            raft_id: settings.raft_id,
            heard: Mutex::new(BTreeMap::new()),
            meta: tokio::sync::watch::channel(None).0,
            directory: settings.directory.clone(),
        });
        let (tx, rx) = mpsc::channel(JOURNAL_MAILBOX_CAPACITY);
        let writer = super::group_commit::Writer::open(store.clone(), &settings, rx, metrics, shared.clone())?;
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Io(format!("cannot start the journal thread: {e}")))?;
        let ticks = tx.downgrade();
        let interval = settings.tick_interval;
        std::thread::Builder::new()
            .name("raft-ticker".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(tx) = ticks.upgrade() else { break };
                // A full mailbox skips a tick: the writer is busy, raft loses nothing by it.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Input::Tick) {
                    break;
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start the raft ticker: {e}")))?;
        Ok(AuditJournal { tx, shared, store })
    }

    /// The raft status of every group replica on this node, as of the last round.
    pub fn group_status(&self) -> Vec<crate::cluster::raft::GroupStatus> {
        self.shared.board.status()
    }

    /// One group's status here (None: no replica on this node).
    pub fn status_of(&self, group: u32) -> Option<crate::cluster::raft::GroupStatus> {
        self.shared.board.status_where(|s| s.group == group)
    }

    /// Test hook: the next `n` commits with writes are refused as raft refuses a proposal it
    /// drops while leadership moves (`Unavailable`), nothing of them written.
    #[doc(hidden)]
    pub fn debug_refuse_commits(&self, n: u32) {
        self.shared.refuse.store(n, Ordering::SeqCst);
    }

    /// Test hook: this node campaigns in `group` at the writer's next tick — a new term, which
    /// a sole voter wins at once (leadership gone and back, as another leader would make it).
    #[doc(hidden)]
    pub fn debug_new_term(&self, group: u32) {
        self.shared.campaign.store(group + 1, Ordering::SeqCst);
    }

    /// Test hook: the writer stops at the start of its next turn, with what it took, until the
    /// returned sender sends or is dropped.
    #[doc(hidden)]
    pub fn debug_pause_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.shared.pause.lock().expect("pause lock") = Some(rx);
        self.shared.paused.store(true, Ordering::SeqCst);
        tx
    }

    /// The raft term in which this node serves `group` (leads it, an entry of its term
    /// committed and applied here); None when it does not now. What a read with no barrier is
    /// fenced to (`commit_fenced`).
    pub fn serving_term(&self, group: u32) -> Option<u64> {
        let s = self.status_of(group)?;
        (s.serving && self.leadership(group).served).then_some(s.term)
    }

    /// Who leads `group`, as of the last round (lock-free: read on every entity message).
    pub fn leadership(&self, group: u32) -> Leadership {
        self.shared.board.leadership(group)
    }

    /// The shard groups this node holds a replica of, as of the last round.
    pub fn replica_groups(&self) -> Vec<u32> {
        (0..self.store().groups()).filter(|&g| self.leadership(g).replica).collect()
    }

    /// Leadership changes of this node's replicas, as they happen.
    pub fn roles(&self) -> tokio::sync::broadcast::Receiver<crate::cluster::raft::RoleChange> {
        self.shared.roles.subscribe()
    }

    /// Notes that a member was heard from (its gossip), for reachability and liveness.
    pub fn heard(&self, from: RaftId) {
        self.shared.heard.lock().expect("heard lock").insert(from, std::time::Instant::now());
    }

    /// When each member was last heard from.
    pub fn last_heard(&self) -> BTreeMap<RaftId, std::time::Instant> {
        self.shared.heard.lock().expect("heard lock").clone()
    }

    /// Hands raft messages from a member to the writer (dropped when its mailbox is full:
    /// raft sends again).
    pub fn deliver(&self, from: RaftId, messages: Vec<(u32, raft::prelude::Message)>) {
        self.shared.heard.lock().expect("heard lock").insert(from, std::time::Instant::now());
        let n = messages.len() as u64;
        if self.tx.try_send(Input::Raft { from, messages }).is_err() {
            // The writer's mailbox is full (or the writer stopped): the messages are lost, and
            // raft sends them again — counted with the refused ones, not dropped unseen.
            self.shared.refused.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(from, messages = n, "raft messages dropped: the writer's mailbox is full");
        }
    }

    /// Waits (at most `within`) until this node's replica of `group` applied `index` — a no-op
    /// when it has no replica of the group.
    pub async fn wait_applied(&self, group: u32, index: u64, within: std::time::Duration) {
        if !self.leadership(group).replica {
            return;
        }
        let Some(applied) = self.shared.applied.get(group as usize) else {
            return;
        };
        let mut rx = applied.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|a| *a >= index)).await;
    }

    /// A read barrier (raft's ReadIndex) of `group`: `Ok` once the group's leader confirmed it
    /// still leads, at an index this node's replica has applied. At the leader, what its
    /// entities answer after it is linearizable (a deposed leader cannot pass it); at a
    /// follower, it says the replica caught up with the leader. `Unavailable` when there is no
    /// leader, leadership moved meanwhile, or no answer came in time. A served sole voter
    /// (`Leadership::reads_here`) passes at once: every write it answered is applied here.
    pub async fn read_index(&self, group: u32) -> Result<(), StoreError> {
        if self.leadership(group).reads_here() {
            // The only voter, serving: nobody else can have committed anything.
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let done: CommitCallback = Box::new(move |r| {
            let _ = tx.send(r);
        });
        if self.tx.send(Input::Read { group, done }).await.is_err() {
            return Err(StoreError::Io("the audit journal has stopped".into()));
        }
        rx.await.unwrap_or(Err(StoreError::Io("the audit journal has stopped".into())))
    }

    /// Every group this node holds a replica of has a leader and this replica applied what that
    /// leader had committed when asked (a read barrier per group, all at once).
    pub async fn caught_up(&self) -> bool {
        let groups: Vec<u32> = self.group_status().iter().map(|s| s.group).collect();
        let barriers = groups.into_iter().map(|g| self.read_index(g));
        futures_util::future::join_all(barriers).await.iter().all(Result::is_ok)
    }

    /// Heard from `member` within `within` (raft heartbeats flow every few ticks).
    pub fn heard_from(&self, member: RaftId, within: std::time::Duration) -> bool {
        self.shared
            .heard
            .lock()
            .expect("heard lock")
            .get(&member)
            .is_some_and(|t| t.elapsed() <= within)
    }

    /// The metadata group's state as this node's replica applied it (None: no replica here).
    pub fn meta(&self) -> Option<crate::cluster::meta::MetaState> {
        self.shared.meta.borrow().clone()
    }

    /// Wakes whenever this node's replica of the metadata group applied a change.
    pub fn meta_changes(&self) -> tokio::sync::watch::Receiver<Option<crate::cluster::meta::MetaState>> {
        self.shared.meta.subscribe()
    }

    /// Proposes changes to the cluster's metadata (at the metadata group's leader, here or
    /// forwarded); `Ok` once committed and applied there. A command the state refuses is
    /// applied as a no-op (and counted), never half.
    pub async fn propose_meta(&self, commands: Vec<crate::cluster::meta::MetaCommand>) -> Result<(), StoreError> {
        self.write(WriteSet::meta(commands)).await
    }

    /// This node's raft id.
    pub fn raft_id(&self) -> RaftId {
        self.shared.raft_id
    }

    pub fn unreachable(&self, peer: RaftId) {
        let _ = self.tx.try_send(Input::Unreachable(peer));
    }

    /// Peer raft messages refused so far.
    pub fn refused_messages(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Lets writes of groups led elsewhere reach their leader.
    pub fn set_forwarder(&self, f: WriteForwarder) {
        let _ = self.shared.forwarder.set(f);
    }

    /// Enqueues a commit, waiting for room in the mailbox. A write set of a group this node
    /// does not lead (in a cluster) goes to the member that does.
    pub async fn commit(&self, writes: WriteSet, done: CommitCallback) {
        if self.shared.failed.load(Ordering::SeqCst) {
            done(Err(StoreError::Failed));
            return;
        }
        if !writes.is_empty() && self.shared.forwarder.get().is_some() {
            let group = self.store.group_of_set(&writes);
            if !self.leadership(group).served {
                let me = self.clone();
                tokio::spawn(async move { done(me.forward(group, writes).await) });
                return;
            }
        }
        self.enqueue(writes, done).await;
    }

    /// Enqueues a commit that is proposed only if this node still leads the write's group in
    /// `term` when the writer proposes it; otherwise `done` hears `Unavailable`. Never
    /// forwarded. What it carries was decided on a read served here with no read barrier
    /// (`Router::fence`): a term has one leader, so a commit proposed in the read's term by its
    /// leader proves this node led the group from the read to the proposal, and a deposed
    /// leader's proposal never commits. An empty one proposes nothing and is the barrier it
    /// always is (an entity's replay of an outcome already committed).
    pub async fn commit_fenced(&self, writes: WriteSet, term: u64, done: CommitCallback) {
        if self.shared.failed.load(Ordering::SeqCst) {
            done(Err(StoreError::Failed));
            return;
        }
        self.send_commit(Commit {
            writes,
            done,
            fence: Some(term),
        })
        .await;
    }

    /// Sends a write set to its group's leader, following leadership until `FORWARD_WAIT`.
    async fn forward(&self, group: u32, writes: WriteSet) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            let l = self.leadership(group);
            if l.served {
                return self.write_here(writes).await;
            }
            // A group with no replica here: the leader its members spoke of lately.
            let leader = if l.replica {
                l.leader
            } else {
                self.shared.directory.as_ref().and_then(|d| d.leader_of(group))
            };
            if let (Some(leader), Some(f)) = (leader, self.shared.forwarder.get()) {
                if leader != self.shared.raft_id {
                    match f(leader, writes.clone()).await {
                        Err(StoreError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                            tracing::debug!(group, leader, %why, "a forwarded write was refused; following leadership");
                        }
                        other => return other,
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!("shard group {group} has no leader to take the write")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Writes here, never forwarding (a peer's forwarded write, or this node leads the group).
    pub async fn write_here(&self, writes: WriteSet) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            writes,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .await;
        rx.await.unwrap_or(Err(StoreError::Io("the audit journal has stopped".into())))
    }

    async fn enqueue(&self, writes: WriteSet, done: CommitCallback) {
        self.send_commit(Commit { writes, done, fence: None }).await;
    }

    async fn send_commit(&self, c: Commit) {
        if let Err(mpsc::error::SendError(Input::Commit(c))) = self.tx.send(Input::Commit(c)).await {
            (c.done)(Err(StoreError::Io("the audit journal has stopped".into())));
        }
    }

    /// Writes `writes` in the next group commit; answers once they are durable.
    pub async fn write(&self, writes: WriteSet) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commit(
            writes,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .await;
        rx.await.unwrap_or(Err(StoreError::Io("the audit journal has stopped".into())))
    }

    /// `write`, fenced to `term` (`commit_fenced`): never forwarded, proposed only while this
    /// node leads the write's group in that term.
    pub async fn write_fenced(&self, writes: WriteSet, term: u64) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commit_fenced(
            writes,
            term,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .await;
        rx.await.unwrap_or(Err(StoreError::Io("the audit journal has stopped".into())))
    }

    /// Answers once everything enqueued before it is durable.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commit(
            WriteSet::default(),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .await;
        rx.await.unwrap_or(Err(StoreError::Io("the audit journal has stopped".into())))
    }

    /// Runs `f` on the writer thread once everything enqueued before is durable, while no
    /// other write can happen: a consistent point-in-time view of the store (backups). Writes
    /// wait meanwhile, so `f` should be quick.
    pub async fn exclusive<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> T + Send + 'static) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let store = self.store.clone();
        self.commit(
            WriteSet::default(),
            Box::new(move |r| {
                let _ = tx.send(r.map(|_| f(&store)));
            }),
        )
        .await;
        rx.await.unwrap_or(Err(StoreError::Io("the audit journal has stopped".into())))
    }

    /// Every group's chain head as of the last durable cycle.
    pub fn heads(&self) -> BTreeMap<u32, ChainHead> {
        self.shared.heads.lock().expect("journal head lock").clone()
    }

    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    pub fn mailbox_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Verifies the whole chain on the blocking pool, beside the writer. sled has no snapshot
    /// to read from, so a group commit landing between reading the recorded head and scanning
    /// the entries looks like entries appended outside the journal: when the chain moved while
    /// a verification failed, it is run again (a bounded number of times).
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        const ATTEMPTS_MAX: usize = 5;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let before = self.heads();
            let store = self.store.clone();
            let report = tokio::task::spawn_blocking(move || store.verify_audit())
                .await
                .map_err(|e| StoreError::Io(e.to_string()))?;
            if report.ok || attempt == ATTEMPTS_MAX {
                return Ok(report);
            }
            // Let the cycle that may have been in flight finish, then see whether it moved the chain.
            if self.barrier().await.is_err() || self.heads() == before {
                return Ok(report);
            }
        }
    }
}
