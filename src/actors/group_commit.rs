//! The writer thread: drives every shard-group replica of this node (`cluster::raft::MultiRaft`)
//! over sled, one round at a time (TiKV's write batch).
//!
//! Each turn of the loop: take every waiting input (up to `max_batch` commits); propose each
//! group's write sets as one raft entry; run one round — the round's log writes and the state
//! machine's writes for the entries it applies (entity state, audit records sealed onto their
//! group's chain) go into one sled batch, flushed when the round appended entries or changed a
//! vote; then release the callbacks of the entries applied. Commits arriving meanwhile form
//! the next turn. A commit is answered only once its entry is committed and applied.

use super::journal::{CommitCallback, Input, JournalSettings, Shared};
use crate::cluster::meta::MetaState;
use crate::cluster::raft::{Event, MultiRaft, Outcome, ProposalId, ProposeError, RaftId};
use crate::storage::audit_log::ChainHead;
use crate::storage::durable_mark;
use crate::storage::raft_rounds::RaftRounds;
use crate::storage::raft_states::RaftStates;
use crate::storage::store::WriteSet;
use crate::storage::{codec, Store, StoreError};
use crate::telemetry::{Metrics, RaftStats};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

mod erasures;
mod events;
mod placement;

/// The raft id of a node that forms a cluster of one.
pub const SINGLE_NODE_RAFT_ID: RaftId = 1;
/// The largest entry one group's write sets are packed into before a second entry is started.
const MAX_ENTRY_BYTES: usize = 4 << 20;
/// Entries kept behind the applied index (for followers that lag a little) before compaction.
const LOG_KEEP: u64 = 64;
/// A log longer than this is compacted.
const LOG_COMPACT_AT: usize = 512;
/// Rounds run at start to replay what was committed but not applied, and elect.
const SETTLE_ROUNDS_MAX: usize = 64;

pub(crate) struct Writer {
    store: Store,
    raft: MultiRaft,
    peers: Option<super::journal::PeerSink>,
    chains: BTreeMap<u32, ChainHead>,
    /// Every replica's hard state and applied index, written as one record per round.
    states: RaftStates,
    /// Every group's raft log entries of a round, written as one record per round.
    rounds: RaftRounds,
    rx: mpsc::Receiver<Input>,
    max_batch: usize,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    /// Proposals in flight: their group, when they were proposed, whom to answer.
    pending: BTreeMap<ProposalId, (u32, Instant, Vec<CommitCallback>)>,
    next_id: ProposalId,
    /// Callbacks that wait for every proposal up to an id to be resolved (barriers).
    barriers: Vec<(ProposalId, CommitCallback)>,
    /// Per group led here: the term, and the commit index when it first could serve in it.
    serve_from: BTreeMap<u32, (u64, u64)>,
    /// Read barriers in flight: their group, the tick they were asked at, whom to answer.
    reads: BTreeMap<ProposalId, (u32, u64, Vec<CommitCallback>)>,
    /// The metadata group's state as applied here (None: no replica of it on this node).
    meta: Option<MetaState>,
    meta_group: u32,
    /// Ticks seen (the clock of read barriers' deadlines).
    ticks: u64,
    /// A read barrier unanswered for this many ticks fails (its leader went away).
    read_ticks_max: u64,
    /// The membership and placements as they change (the metadata group's), and what leaders
    /// say of their groups.
    directory: Arc<crate::cluster::directory::Directory>,
    /// `[gdpr] erasure_list` (None: erasures are not listed here).
    erasure_list: Option<std::path::PathBuf>,
    /// The data folder's high-water mark as last recorded, and when it was last tried
    /// (`storage::durable_mark`).
    mark: (u64, Option<Instant>),
}

/// Stands, in the refused raft messages metric, for every group number this node does not
/// know (no shard group nor the metadata group has it).
pub const UNKNOWN_GROUP: u32 = u32::MAX;

/// The label a refused raft message is counted under: its group when the cluster has it (a
/// shard group or the metadata group, numbered `groups`; every replica hosted here is one),
/// else `UNKNOWN_GROUP` — the number comes from the peer, and a label per number would let
/// it grow the metric's series without bound.
fn refused_label(group: u32, meta_group: u32) -> crate::telemetry::GroupLabels {
    RaftStats::group(if group <= meta_group { group } else { UNKNOWN_GROUP })
}

/// A round written to the store, before its flush.
struct Written {
    round: crate::cluster::raft::Round,
    started: Instant,
    /// Entries of the round that destroyed a data key: the log is compacted past them once
    /// the round is persisted.
    shredded: Vec<(u32, u64)>,
}

impl Writer {
    /// Opens the group replicas of `store` (bootstrapping a cluster of one on a new folder) and
    /// settles them: replayed, elected, applied.
    pub(crate) fn open(
        store: Store,
        settings: &JournalSettings,
        rx: mpsc::Receiver<Input>,
        metrics: Arc<Metrics>,
        shared: Arc<Shared>,
    ) -> Result<Writer, StoreError> {
        let id = settings.raft_id;
        let mut raft = MultiRaft::new(id, settings.raft.clone(), crate::cluster::raft::logger::logger(id));
        store.migrate_raft_entries()?;
        store.migrate_audit_heads()?;
        let (persisted, mut rounds) = store.raft_image()?;
        let groups = store.groups();
        let layout = |e: String| StoreError::Layout(e);
        let directory = settings
            .directory
            .clone()
            .unwrap_or_else(|| crate::cluster::directory::Directory::new(crate::cluster::membership::Membership::single("node", groups, "")));
        let membership = directory.get();
        let meta_group = store.meta_group();
        let meta_voters = membership.meta_replicas();
        let mut states = RaftStates::from_persisted(&persisted, store.written_seq()?);
        if persisted.is_empty() && membership.is_founder(id) {
            // A new folder: this node's replicas of a new cluster, with the placement's voters;
            // the metadata group's founding voters start from the formation's metadata. (A node
            // that joined later is given its replicas by the groups' leaders.)
            let mut batch = sled::Batch::default();
            for g in membership.groups_of(id) {
                let write = raft.bootstrap_group(g, &membership.placement(g)).map_err(layout)?;
                store.stage_raft(&mut batch, &write, &mut states, &mut rounds)?;
            }
            if meta_voters.contains(&id) {
                let write = raft.bootstrap_group(meta_group, &meta_voters).map_err(layout)?;
                store.stage_raft(&mut batch, &write, &mut states, &mut rounds)?;
                batch.insert(&crate::storage::keys::META_STATE_KEY[..], codec::encode(&MetaState::formed(&membership)));
            }
            store.stage_rounds(&mut batch, &mut rounds)?;
            states.stage(&mut batch);
            store.tree().apply_batch(batch)?;
            store.flush()?;
        } else {
            for (g, p) in &persisted {
                if *g > meta_group {
                    return Err(layout(format!(
                        "the data folder has a raft log for group {g}, beyond the {groups} shard groups and the metadata group"
                    )));
                }
                raft.open_group(*g, p).map_err(layout)?;
            }
        }
        for (g, (term, vote)) in store.raft_tombstones()? {
            raft.restore_tombstone(g, term, vote);
        }
        let mine: Vec<u32> = raft.groups().collect();
        for g in mine {
            // A group whose only voter is this node elects itself at once.
            if raft.status(g).is_some_and(|s| s.voters == [id]) {
                raft.campaign(g);
            }
            raft.set_preferred_leader(g, membership.preferred_leader(g));
        }
        for (g, index) in rounds.owed() {
            // A purge owed when the node stopped: the log is compacted past it now (the
            // compaction it waited for may not have reached the disk).
            tracing::info!(
                group = g,
                index,
                "a purge of destroyed data keys' entries is owed: compacting the group's log past it"
            );
            raft.compact(g, index + 1);
        }
        let meta = store.meta_state()?;
        shared.meta.send_replace(meta.clone());
        let chains = store.chain_heads()?;
        *shared.heads.lock().expect("heads lock") = chains.clone();
        let mut w = Writer {
            store,
            raft,
            peers: settings.peers.clone(),
            chains,
            states,
            rounds,
            rx,
            max_batch: settings.max_batch.max(1),
            metrics,
            shared,
            pending: BTreeMap::new(),
            next_id: 1,
            barriers: Vec::new(),
            serve_from: BTreeMap::new(),
            reads: BTreeMap::new(),
            meta,
            meta_group,
            ticks: 0,
            read_ticks_max: 4 * settings.raft.election_tick as u64,
            directory,
            erasure_list: settings.erasure_list.clone(),
            mark: (0, None),
        };
        for _ in 0..SETTLE_ROUNDS_MAX {
            if !w.raft.has_ready() {
                break;
            }
            w.round()?;
        }
        w.publish_status();
        Ok(w)
    }

    pub(crate) fn run(mut self) {
        let mut inputs = Vec::new();
        loop {
            if self.shared.failed.load(Ordering::SeqCst) {
                // Failed closed: raft is not touched again; every commit is refused.
                match self.rx.blocking_recv() {
                    Some(Input::Commit(c)) => (c.done)(Err(StoreError::Failed)),
                    Some(Input::Read { done, .. }) => done(Err(StoreError::Failed)),
                    Some(_) => {}
                    None => break,
                }
                continue;
            }
            if !self.raft.has_ready() {
                match self.rx.blocking_recv() {
                    Some(i) => inputs.push(i),
                    None => break,
                }
            }
            while inputs.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(i) => inputs.push(i),
                    Err(_) => break,
                }
            }
            self.metrics.journal_mailbox_depth.set(self.rx.len() as i64);
            self.take(&mut inputs);
            if self.raft.has_ready() {
                if let Err(e) = self.round() {
                    self.fail(e);
                }
            }
            self.release_barriers();
        }
    }

    /// After a flush returned: records the data folder's high-water mark, the raft states
    /// record's write count of the flushed batches (at most once a `durable_mark::EVERY`;
    /// a stop records it exactly, `AuditJournal::flush_and_mark`). A mark that cannot be
    /// written is a warning: it only ever trails.
    fn note_flushed(&mut self) {
        let seq = self.states.seq();
        if seq <= self.mark.0 || self.mark.1.is_some_and(|at| at.elapsed() < durable_mark::EVERY) {
            return;
        }
        self.mark.1 = Some(Instant::now());
        match durable_mark::write(self.store.path(), seq) {
            Ok(()) => self.mark.0 = seq,
            Err(e) => tracing::warn!(error = %e, "the data folder's high-water mark could not be written"),
        }
    }

    /// Proposes the commits of this turn, one entry per group; registers barriers.
    fn take(&mut self, inputs: &mut Vec<Input>) {
        if self.shared.paused.load(Ordering::Relaxed) {
            self.shared.paused.store(false, Ordering::SeqCst);
            let pause = self.shared.pause.lock().expect("pause lock").take();
            if let Some(rx) = pause {
                let _ = rx.recv();
            }
        }
        let mut by_group: BTreeMap<u32, Vec<(WriteSet, CommitCallback, Option<u64>)>> = BTreeMap::new();
        let mut barriers = Vec::new();
        let mut reads: BTreeMap<u32, Vec<CommitCallback>> = BTreeMap::new();
        let mut sets = 0usize;
        for input in inputs.drain(..) {
            match input {
                Input::Tick => {
                    if let Some(g) = self.shared.campaign.swap(0, Ordering::SeqCst).checked_sub(1) {
                        self.raft.debug_new_term(g);
                    }
                    self.raft.tick();
                    self.ticks += 1;
                    self.expire_reads();
                    self.reconfigure();
                }
                Input::Read { group, done } => reads.entry(group).or_default().push(done),
                Input::Unreachable(peer) => self.raft.report_unreachable(peer),
                Input::Raft { from, messages } => {
                    for (g, m) in messages {
                        if let Err(refused) = self.step(from, g, m) {
                            self.shared.refused.fetch_add(1, Ordering::Relaxed);
                            self.metrics.raft.messages_refused.get_or_create(&refused_label(g, self.meta_group)).inc();
                            tracing::debug!(from, group = g, ?refused, "a raft message was refused");
                        }
                    }
                }
                Input::Commit(c) if self.shared.failed.load(Ordering::SeqCst) => (c.done)(Err(StoreError::Failed)),
                Input::Commit(c) if c.writes.is_empty() => barriers.push(c.done),
                Input::Commit(c) if self.shared.refuse.load(Ordering::Relaxed) > 0 => {
                    self.shared.refuse.fetch_sub(1, Ordering::SeqCst);
                    (c.done)(Err(StoreError::Unavailable("the proposal was refused (test hook)".into())));
                }
                Input::Commit(c) => {
                    // Never proposed: applying it would fail every replica of the group, and
                    // again on every replay of the log.
                    if let Some(why) = c.writes.misplaced(self.store.groups()) {
                        tracing::error!(why, "a write set was refused before it was proposed");
                        (c.done)(Err(StoreError::Layout(format!("a write set was refused: {why}"))));
                        continue;
                    }
                    sets += 1;
                    let g = self.store.group_of_set(&c.writes);
                    by_group.entry(g).or_default().push((c.writes, c.done, c.fence));
                }
            }
        }
        if sets > 0 {
            self.metrics.commit_batch_size.observe(sets as f64);
        }
        for (g, items) in by_group {
            let mut chunk: Vec<WriteSet> = Vec::new();
            let mut callbacks = Vec::new();
            let mut bytes = 0;
            let mut records = 0;
            // Checked here, where nothing else runs before the proposal: no message can move
            // the term between the check and the propose.
            let fenced = items.iter().any(|(_, _, f)| f.is_some());
            let term = if fenced && self.raft.is_leader(g) {
                self.raft.status(g).map(|s| s.term)
            } else {
                None
            };
            for (set, done, fence) in items {
                if let Some(t) = fence.filter(|t| term != Some(*t)) {
                    self.metrics.raft.fenced_refusals.inc();
                    done(Err(StoreError::Unavailable(format!(
                        "shard group {g}: no longer led here in term {t}, the term of the read this write was decided on"
                    ))));
                    continue;
                }
                bytes += set.puts.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() + set.audit.len() * 256;
                records += set.record_count();
                chunk.push(set);
                callbacks.push(done);
                if bytes >= MAX_ENTRY_BYTES {
                    self.propose(g, std::mem::take(&mut chunk), std::mem::take(&mut callbacks));
                    bytes = 0;
                }
            }
            if !chunk.is_empty() {
                self.propose(g, chunk, callbacks);
            }
            self.metrics.commit_batch_records.observe(records as f64);
        }
        let watermark = self.next_id - 1;
        self.barriers.extend(barriers.into_iter().map(|b| (watermark, b)));
        // One ReadIndex per group per turn, shared by every read barrier of the turn.
        for (g, callbacks) in reads {
            let id = self.next_id;
            self.next_id += 1;
            match self.raft.read(g, id) {
                Ok(()) => {
                    self.reads.insert(id, (g, self.ticks, callbacks));
                }
                Err(_) => {
                    for cb in callbacks {
                        cb(Err(StoreError::Unavailable(format!("shard group {g} has no leader known here"))));
                    }
                }
            }
        }
    }

    /// Fails the read barriers nobody answered in time (asked of a leader that went away).
    fn expire_reads(&mut self) {
        let cutoff = self.ticks.saturating_sub(self.read_ticks_max);
        let late: Vec<ProposalId> = self.reads.iter().filter(|(_, (_, at, _))| *at < cutoff).map(|(id, _)| *id).collect();
        for id in late {
            if let Some((g, _, callbacks)) = self.reads.remove(&id) {
                self.raft.forget_read(g, id);
                for cb in callbacks {
                    cb(Err(StoreError::Unavailable(format!("shard group {g}: no answer to a read barrier"))));
                }
            }
        }
    }

    fn propose(&mut self, group: u32, sets: Vec<WriteSet>, callbacks: Vec<CommitCallback>) {
        let id = self.next_id;
        self.next_id += 1;
        match self.raft.propose(group, id, codec::encode(&sets)) {
            Ok(()) => {
                self.metrics.raft.proposals.get_or_create(&RaftStats::group(group)).inc();
                self.pending.insert(id, (group, Instant::now(), callbacks));
            }
            Err(e) => {
                let why = match e {
                    ProposeError::NotLeader(_) => format!("shard group {group} has no leader on this node"),
                    ProposeError::Dropped => format!("shard group {group} refused the proposal (leadership moving)"),
                };
                for cb in callbacks {
                    cb(Err(StoreError::Unavailable(why.clone())));
                }
            }
        }
    }

    /// One round: written and applied in one batch, what its applied entries completed
    /// answered, then flushed when it appended entries or changed a vote, and persisted.
    fn round(&mut self) -> Result<(), StoreError> {
        let written = self.write_round()?;
        // Written to sled (not flushed): a flush from here on holds it.
        self.shared.staged_seq.store(self.states.seq(), Ordering::SeqCst);
        if written.round.sync {
            self.store.flush()?;
            self.note_flushed();
        }
        self.finish_round(written)
    }

    /// Persists and applies one round in one batch (not flushed yet); answers what its applied
    /// entries completed — their log was durable on a majority before they committed — and
    /// sends the messages that may leave before the round is durable (a leader's appends go
    /// to the followers while its own flush runs).
    fn write_round(&mut self) -> Result<Written, StoreError> {
        let started = Instant::now();
        let mut round = self.raft.ready().map_err(StoreError::Layout)?;
        let mut batch = sled::Batch::default();
        let mut cycle = crate::storage::store::Cycle::new(self.chains.clone());
        // The round's copy of the metadata, made when an entry of the metadata group needs it.
        let mut meta: Option<Option<MetaState>> = None;
        let mut meta_moved = false;
        for w in &round.writes {
            self.store.stage_raft(&mut batch, w, &mut self.states, &mut self.rounds)?;
            if let Some(s) = w.snapshot.as_ref().filter(|s| !s.data.is_empty()) {
                // A leader's snapshot replaces this replica's state of the group.
                let head = self.store.stage_install(&mut batch, w.group, &s.data, &mut cycle)?;
                cycle.chains.insert(w.group, head.unwrap_or_default());
                self.list_installed_erasures(&s.data);
                if w.group == self.meta_group {
                    meta = Some(crate::storage::raft_log::meta_in_snapshot(&s.data)?);
                    meta_moved = true;
                }
            }
        }
        // Entries that destroyed a personal-data key (crypto-shredding): the log is compacted
        // past them once applied, so no replica's log keeps the key they replaced.
        let mut shredded: Vec<(u32, u64)> = Vec::new();
        for c in &round.apply {
            let mut sets: Vec<WriteSet> = codec::decode(&c.data).map_err(|e| {
                self.metrics.corrupt_records.inc();
                StoreError::Corrupt {
                    location: format!("raft entry {} of group {}", c.index, c.group),
                    reason: e.to_string(),
                }
            })?;
            for set in sets.iter_mut() {
                if set.deletes.iter().any(|k| crate::storage::keys::is_data_key_record(k)) {
                    shredded.push((c.group, c.index));
                    self.list_erasures(set);
                }
                if !set.meta.is_empty() {
                    let round_meta = meta.get_or_insert_with(|| self.meta.clone());
                    meta_moved |= self.apply_meta(c.group, c.index, round_meta, &set.meta);
                }
                if let Err(e) = self.store.stage(&mut batch, set, &mut cycle) {
                    if matches!(e, StoreError::Corrupt { .. }) {
                        self.metrics.corrupt_records.inc();
                        tracing::error!(group = c.group, index = c.index, %e, "a raft entry holds a write set that cannot be applied");
                    }
                    return Err(e);
                }
            }
        }
        // The entries up to a destroying one go from the round records once the log is
        // compacted past them (after this round); owed from this batch on, so a crash in
        // between cannot forget them (`RaftRounds::purge`).
        for &(g, index) in &shredded {
            self.rounds.purge(g, index);
        }
        self.store.stage_rounds(&mut batch, &mut self.rounds)?;
        self.states.stage(&mut batch);
        if cycle.heads_moved {
            self.store.stage_heads(&mut batch, &cycle.chains);
        }
        let meta = meta.filter(|_| meta_moved);
        if let Some(Some(m)) = &meta {
            batch.insert(&crate::storage::keys::META_STATE_KEY[..], codec::encode(m));
        }
        self.store.tree().apply_batch(batch)?;
        if let Some(m) = meta {
            self.meta = m;
            self.shared.meta.send_replace(self.meta.clone());
        }
        self.chains = cycle.chains;
        *self.shared.heads.lock().expect("heads lock") = self.chains.clone();
        if !round.apply.is_empty() {
            // The commits this round applied are answered now, not after its flush: their
            // entries were durable before they committed. Status first (see below).
            self.raft.applied(&mut round);
            self.publish_status();
            for e in self.raft.take_events() {
                self.on_event(e);
            }
        }
        self.send_outbox();
        Ok(Written { round, started, shredded })
    }

    /// A round is flushed: raft learns it is persisted (what it appended may commit), then
    /// what it completed is released.
    fn finish_round(&mut self, written: Written) -> Result<(), StoreError> {
        let Written { round, started, shredded } = written;
        if round.sync {
            self.metrics.flush_latency.observe(started.elapsed().as_secs_f64());
        }
        let compact = round.sync;
        self.raft.persisted(round);
        for (g, index) in shredded {
            tracing::info!(group = g, index, "a data key was destroyed: compacting the group's log past it");
            self.raft.compact(g, index + 1);
        }
        // Before any callback runs: whoever is answered reads an applied index that includes
        // its own write (peers wait for their replica to reach it).
        self.publish_status_and(true);
        for e in self.raft.take_events() {
            self.on_event(e);
        }
        self.send_outbox();
        if compact {
            self.compact();
        }
        Ok(())
    }

    /// Messages to other replicas (a cluster of one has none).
    fn send_outbox(&mut self) {
        for (to, messages) in self.raft.take_outbox() {
            for (g, m) in &messages {
                if m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                    // Sent optimistically; a lost one makes raft probe and send again.
                    self.raft.report_snapshot(*g, to, true);
                }
            }
            if let Some(p) = &self.peers {
                (p.0)(to, messages);
            }
        }
    }

    /// Storage failed: the node fails closed. Every waiting and later commit is refused.
    fn fail(&mut self, e: StoreError) {
        if !matches!(e, StoreError::Failed) {
            tracing::error!(error = %e, "group commit failed; refusing further writes (fail closed)");
        }
        self.shared.failed.store(true, Ordering::SeqCst);
        for (_, (_, _, callbacks)) in std::mem::take(&mut self.pending) {
            for cb in callbacks {
                cb(Err(StoreError::Failed));
            }
        }
        for (_, cb) in std::mem::take(&mut self.barriers) {
            cb(Err(StoreError::Failed));
        }
        for (_, (_, _, callbacks)) in std::mem::take(&mut self.reads) {
            for cb in callbacks {
                cb(Err(StoreError::Failed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_message_of_a_group_the_cluster_has_not_is_counted_under_one_label() {
        assert_eq!(refused_label(3, 4), RaftStats::group(3));
        assert_eq!(refused_label(4, 4), RaftStats::group(4), "the metadata group is known");
        for g in [5, 1024, 4_000_000_000, u32::MAX - 1] {
            assert_eq!(refused_label(g, 4), RaftStats::group(UNKNOWN_GROUP), "group {g}");
        }
    }
}
