//! The audit journal: the single writer of the node's sled database, doing group commit.
//!
//! It is an actor with its own OS thread and a bounded mailbox (a tokio channel) rather than a
//! kameo actor, for two reasons: group commit must take *everything* waiting in the mailbox at
//! once (kameo hands a handler one message at a time), and `flush` blocks on the disk, which
//! must not happen on the async runtime.
//!
//! Loop: wait for one commit, take every other waiting commit (up to `max_batch`), write them
//! all in one atomic sled batch (sealing their audit records onto the hash chain in order),
//! flush once, then run each commit's callback — so no client is answered before its events and
//! audit records are on disk. Commits arriving during a flush form the next batch. A failed
//! write or flush fails the node closed: every later commit is refused.

use crate::storage::audit_log::{ChainHead, VerifyReport};
use crate::storage::store::WriteSet;
use crate::storage::{Store, StoreError};
use crate::telemetry::Metrics;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

pub type CommitCallback = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Persist these writes and audit records; run `done` once they are durable (or failed).
pub struct Commit {
    pub writes: WriteSet,
    pub done: CommitCallback,
}

/// The mailbox bound: senders wait for room (back-pressure on every entity).
pub const JOURNAL_MAILBOX_CAPACITY: usize = 8192;

struct Shared {
    failed: AtomicBool,
    heads: Mutex<BTreeMap<u32, ChainHead>>,
}

/// A handle to the journal; cheap to clone. The writer thread ends when every handle is gone.
#[derive(Clone)]
pub struct AuditJournal {
    tx: mpsc::Sender<Commit>,
    shared: Arc<Shared>,
    store: Store,
}

impl AuditJournal {
    /// Starts the writer thread over `store`, continuing the chain recorded there.
    pub fn start(store: Store, max_batch: usize, metrics: Arc<Metrics>) -> Result<AuditJournal, StoreError> {
        let chain = store.chain_heads()?;
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            heads: Mutex::new(chain.clone()),
        });
        let (tx, rx) = mpsc::channel(JOURNAL_MAILBOX_CAPACITY);
        let writer = Writer {
            store: store.clone(),
            chain,
            rx,
            max_batch: max_batch.max(1),
            metrics,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Io(format!("cannot start the journal thread: {e}")))?;
        Ok(AuditJournal { tx, shared, store })
    }

    /// Enqueues a commit, waiting for room in the mailbox.
    pub async fn commit(&self, writes: WriteSet, done: CommitCallback) {
        if self.shared.failed.load(Ordering::SeqCst) {
            done(Err(StoreError::Failed));
            return;
        }
        if let Err(mpsc::error::SendError(c)) = self.tx.send(Commit { writes, done }).await {
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

struct Writer {
    store: Store,
    chain: BTreeMap<u32, ChainHead>,
    rx: mpsc::Receiver<Commit>,
    max_batch: usize,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
}

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<Commit> = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.metrics.journal_mailbox_depth.set(self.rx.len() as i64);
            self.cycle(&mut batch);
        }
    }

    fn cycle(&mut self, batch: &mut Vec<Commit>) {
        let started = Instant::now();
        let (mut sets, callbacks): (Vec<WriteSet>, Vec<CommitCallback>) = batch.drain(..).map(|c| (c.writes, c.done)).unzip();
        self.metrics.commit_batch_size.observe(sets.len() as f64);
        self.metrics
            .commit_batch_records
            .observe(sets.iter().map(WriteSet::record_count).sum::<usize>() as f64);
        let result = if self.shared.failed.load(Ordering::SeqCst) {
            Err(StoreError::Failed)
        } else {
            let mut chain = self.chain.clone();
            self.store.write_cycle(&mut sets, &mut chain).and_then(|_| self.store.flush()).map(|_| chain)
        };
        self.metrics.flush_latency.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(chain) => {
                *self.shared.heads.lock().expect("journal head lock") = chain.clone();
                self.chain = chain;
                for cb in callbacks {
                    cb(Ok(()));
                }
            }
            Err(e) => {
                if !matches!(e, StoreError::Failed) {
                    tracing::error!(error = %e, "group commit failed; refusing further writes (fail closed)");
                }
                self.shared.failed.store(true, Ordering::SeqCst);
                for cb in callbacks {
                    cb(Err(StoreError::Failed));
                }
            }
        }
    }
}
