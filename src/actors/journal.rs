//! The audit journal actor: the single writer of the node's sled database, doing group commit.
//!
//! Entities send a [`Commit`] (their journal entries, snapshots and audit records) with a
//! callback. The journal collects commits while a write+flush cycle is under way, then writes
//! the whole collection in one sled transaction and one `flush` on the blocking pool; only then
//! are the callbacks run, so no client is answered before its events and audit records are on
//! disk. One cycle at a time keeps the audit chain in order. A failed write or flush fails the
//! node closed: every later commit is refused.

use crate::storage::audit_log::ChainHead;
use crate::storage::audit_log::VerifyReport;
use crate::storage::store::WriteSet;
use crate::storage::{Store, StoreError};
use crate::telemetry::Metrics;
use kameo::prelude::*;
use std::sync::Arc;
use std::time::Instant;

pub type CommitCallback = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Persist these writes and audit records; run `done` once they are durable (or failed).
pub struct Commit {
    pub writes: WriteSet,
    pub done: CommitCallback,
}

/// Answers once everything sent before it is durable.
pub struct Barrier;

/// The chain head as of the last durable cycle.
pub struct Head;

/// Verifies the whole chain (on the blocking pool).
pub struct Verify;

struct CycleDone {
    result: Result<(), StoreError>,
    chain: ChainHead,
    callbacks: Vec<CommitCallback>,
    started: Instant,
}

pub struct AuditJournal {
    store: Store,
    chain: ChainHead,
    pending: Vec<(WriteSet, CommitCallback)>,
    in_flight: bool,
    failed: bool,
    max_batch: usize,
    metrics: Arc<Metrics>,
}

pub struct JournalArgs {
    pub store: Store,
    pub max_batch: usize,
    pub metrics: Arc<Metrics>,
}

impl Actor for AuditJournal {
    type Args = JournalArgs;
    type Error = StoreError;

    async fn on_start(args: JournalArgs, _: ActorRef<Self>) -> Result<Self, StoreError> {
        let chain = args.store.chain_head()?.unwrap_or_default();
        Ok(AuditJournal { store: args.store, chain, pending: Vec::new(), in_flight: false, failed: false, max_batch: args.max_batch, metrics: args.metrics })
    }
}

impl AuditJournal {
    fn enqueue(&mut self, writes: WriteSet, done: CommitCallback, me: &ActorRef<Self>) {
        if self.failed {
            done(Err(StoreError::Failed));
            return;
        }
        self.pending.push((writes, done));
        self.metrics.journal_mailbox_depth.set(mailbox_depth(me));
        if !self.in_flight {
            self.start_cycle(me);
        }
    }

    fn start_cycle(&mut self, me: &ActorRef<Self>) {
        let take = self.pending.len().min(self.max_batch);
        if take == 0 {
            return;
        }
        let batch: Vec<_> = self.pending.drain(..take).collect();
        let (mut sets, callbacks): (Vec<WriteSet>, Vec<CommitCallback>) = batch.into_iter().unzip();
        self.metrics.commit_batch_size.observe(sets.len() as f64);
        self.metrics.commit_batch_records.observe(sets.iter().map(WriteSet::record_count).sum::<usize>() as f64);
        self.in_flight = true;
        let store = self.store.clone();
        let mut chain = self.chain;
        let me = me.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let joined = tokio::task::spawn_blocking(move || {
                let r = store.write_cycle(&mut sets, &mut chain).and_then(|_| store.flush().map(|_| ()));
                (r, chain)
            })
            .await;
            let (result, chain) = joined.unwrap_or_else(|e| (Err(StoreError::Io(format!("write task failed: {e}"))), ChainHead::default()));
            // The journal only stops when the node shuts down, after its last cycle.
            let _ = me.tell(CycleDone { result, chain, callbacks, started }).await;
        });
    }
}

fn mailbox_depth<A: Actor>(r: &ActorRef<A>) -> i64 {
    let sender = r.mailbox_sender();
    match (sender.capacity(), sender.max_capacity()) {
        (Some(free), Some(max)) => (max - free) as i64,
        _ => 0,
    }
}

impl Message<Commit> for AuditJournal {
    type Reply = ();
    async fn handle(&mut self, msg: Commit, ctx: &mut Context<Self, ()>) {
        self.enqueue(msg.writes, msg.done, ctx.actor_ref());
    }
}

impl Message<Barrier> for AuditJournal {
    type Reply = DelegatedReply<Result<(), StoreError>>;
    async fn handle(&mut self, _: Barrier, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let (delegated, sender) = ctx.reply_sender();
        let done: CommitCallback = Box::new(move |r| {
            if let Some(tx) = sender {
                tx.send(r);
            }
        });
        let me = ctx.actor_ref().clone();
        self.enqueue(WriteSet::default(), done, &me);
        delegated
    }
}

impl Message<Head> for AuditJournal {
    type Reply = Result<ChainHead, StoreError>;
    async fn handle(&mut self, _: Head, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        Ok(self.chain)
    }
}

impl Message<Verify> for AuditJournal {
    type Reply = DelegatedReply<Result<VerifyReport, StoreError>>;
    async fn handle(&mut self, _: Verify, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let (delegated, sender) = ctx.reply_sender();
        let store = self.store.clone();
        tokio::spawn(async move {
            let r = tokio::task::spawn_blocking(move || store.verify_audit()).await.map_err(|e| StoreError::Io(e.to_string()));
            if let Some(tx) = sender {
                tx.send(r);
            }
        });
        delegated
    }
}

impl Message<CycleDone> for AuditJournal {
    type Reply = ();
    async fn handle(&mut self, msg: CycleDone, ctx: &mut Context<Self, ()>) {
        self.in_flight = false;
        self.metrics.flush_latency.observe(msg.started.elapsed().as_secs_f64());
        match msg.result {
            Ok(()) => {
                self.chain = msg.chain;
                for cb in msg.callbacks {
                    cb(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; refusing further writes (fail closed)");
                self.failed = true;
                for cb in msg.callbacks {
                    cb(Err(StoreError::Failed));
                }
                for (_, cb) in self.pending.drain(..) {
                    cb(Err(StoreError::Failed));
                }
            }
        }
        if !self.pending.is_empty() {
            let me = ctx.actor_ref().clone();
            self.start_cycle(&me);
        }
    }
}
