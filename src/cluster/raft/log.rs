//! One group's raft log as raft-rs reads it: the in-memory image of what this node persisted
//! (hard state, configuration, the compacted prefix's snapshot metadata, the entries after it),
//! plus a snapshot of the applied state the driver prepared for followers that fell behind.
//!
//! The driver persists every change through the round's writes before raft-rs is told it is
//! stable (`MultiRaft::persisted`), so this image never runs ahead of the disk for long, and a
//! restart rebuilds it from `PersistedGroup`.

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use std::cell::Cell;

/// What a node keeps of one group on disk, and loads at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistedGroup {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Index and term of the last entry folded into the state (compacted away).
    pub snapshot_index: u64,
    pub snapshot_term: u64,
    /// Entries after `snapshot_index`, contiguous.
    pub entries: Vec<Entry>,
    /// The last entry the state machine applied (durable with the state).
    pub applied: u64,
}

#[derive(Debug, Default)]
pub struct GroupLog {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: SnapshotMetadata,
    entries: Vec<Entry>,
    /// A snapshot of the applied state, ready to send.
    prepared: Option<Snapshot>,
    /// The lowest index raft asked a snapshot for while none was prepared (0: none asked).
    wanted: Cell<u64>,
}

impl GroupLog {
    /// Rebuilds the image of a persisted group; refuses one whose entries are not contiguous.
    pub fn restore(p: &PersistedGroup) -> Result<GroupLog, String> {
        let mut expected = p.snapshot_index + 1;
        for e in &p.entries {
            if e.index != expected {
                return Err(format!("raft log entry {} found where {} was expected", e.index, expected));
            }
            expected += 1;
        }
        if p.hard_state.commit > expected - 1 {
            return Err(format!("commit index {} beyond the last entry {}", p.hard_state.commit, expected - 1));
        }
        if p.applied > p.hard_state.commit.max(p.snapshot_index) {
            return Err(format!("applied index {} beyond the commit index {}", p.applied, p.hard_state.commit));
        }
        let mut meta = SnapshotMetadata::default();
        meta.index = p.snapshot_index;
        meta.term = p.snapshot_term;
        meta.set_conf_state(p.conf_state.clone());
        Ok(GroupLog {
            hard_state: p.hard_state.clone(),
            conf_state: p.conf_state.clone(),
            snapshot_meta: meta,
            entries: p.entries.clone(),
            prepared: None,
            wanted: Cell::new(0),
        })
    }

    /// A new replica that is one of the group's first voters: the configuration comes from a
    /// snapshot at index 1 (as raft-rs's own multi-node example bootstraps).
    pub fn bootstrap(voters: &[u64]) -> GroupLog {
        let mut log = GroupLog::default();
        let mut cs = ConfState::default();
        cs.voters = voters.to_vec();
        log.snapshot_meta.index = 1;
        log.snapshot_meta.term = 1;
        log.snapshot_meta.set_conf_state(cs.clone());
        log.conf_state = cs;
        log.hard_state.term = 1;
        log.hard_state.commit = 1;
        log
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn snapshot_meta(&self) -> &SnapshotMetadata {
        &self.snapshot_meta
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_meta.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_meta.index + self.entries.len() as u64
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Appends entries, replacing any conflicting suffix (raft-rs hands them contiguous and
    /// never before the first index).
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index >= self.first_index(),
            "raft appends entry {} below the first index {}",
            first.index,
            self.first_index()
        );
        assert!(
            first.index <= self.last_index() + 1,
            "raft appends entry {} after a gap (last {})",
            first.index,
            self.last_index()
        );
        let keep = (first.index - self.first_index()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
    }

    /// Installs a snapshot from the leader: the log restarts after it.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        let meta = snapshot.get_metadata();
        self.snapshot_meta = meta.clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.conf_state = meta.get_conf_state().clone();
        if self.prepared.as_ref().is_some_and(|p| p.get_metadata().index < meta.index) {
            self.prepared = None;
        }
    }

    /// Drops entries before `index` (they are in the applied state; all of them when `index` is
    /// `last_index + 1`). Returns the index and term of the new compacted prefix, or None when
    /// nothing moved.
    pub fn compact(&mut self, index: u64) -> Option<(u64, u64)> {
        if index <= self.first_index() || index > self.last_index() + 1 {
            return None;
        }
        let drop = (index - self.first_index()) as usize;
        let last_dropped = &self.entries[drop - 1];
        self.snapshot_meta.index = last_dropped.index;
        self.snapshot_meta.term = last_dropped.term;
        self.entries.drain(..drop);
        // A snapshot prepared before this point is of no use to a follower any more (and must
        // not carry state an erasure removed since).
        if self.prepared.as_ref().is_some_and(|p| p.get_metadata().index < self.snapshot_meta.index) {
            self.prepared = None;
        }
        Some((self.snapshot_meta.index, self.snapshot_meta.term))
    }

    /// The snapshot the driver built for followers that need one.
    pub fn offer_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        if self.prepared.as_ref().is_none_or(|p| p.get_metadata().index < index) {
            self.prepared = Some(snapshot);
        }
        if index >= self.wanted.get() {
            self.wanted.set(0);
        }
    }

    /// Raft asked for a snapshot it could not have yet: the lowest index it needs.
    pub fn take_wanted(&self) -> Option<u64> {
        match self.wanted.replace(0) {
            0 => None,
            i => Some(i),
        }
    }

    pub fn term_of(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_meta.index {
            return Ok(self.snapshot_meta.term);
        }
        if idx < self.snapshot_meta.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first_index()) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    /// Entries in `[low, high)`, for the driver's own use (tests, snapshots of the log).
    pub fn slice(&self, low: u64, high: u64) -> Vec<Entry> {
        let lo = low.max(self.first_index());
        let hi = high.min(self.last_index() + 1);
        if lo >= hi {
            return Vec::new();
        }
        let off = self.first_index();
        self.entries[(lo - off) as usize..(hi - off) as usize].to_vec()
    }
}

impl raft::Storage for GroupLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(&self, low: u64, high: u64, max_size: impl Into<Option<u64>>, _context: GetEntriesContext) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let off = self.first_index();
        let mut ents = self.entries[(low - off) as usize..(high - off) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(GroupLog::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(GroupLog::last_index(self))
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match &self.prepared {
            // Only a snapshot of the configuration in force: one prepared before a replica was
            // added does not name it, and that replica would refuse it forever.
            Some(s)
                if s.get_metadata().index >= request_index
                    && s.get_metadata().index >= self.snapshot_meta.index
                    && s.get_metadata().get_conf_state() == &self.conf_state =>
            {
                Ok(s.clone())
            }
            _ => {
                let need = request_index.max(self.snapshot_meta.index).max(1);
                let w = self.wanted.get();
                self.wanted.set(if w == 0 { need } else { w.min(need) });
                Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    #[test]
    fn append_replaces_a_conflicting_suffix_and_compaction_keeps_the_boundary_term() {
        let mut log = GroupLog::bootstrap(&[1, 2, 3]);
        log.append(&[entry(2, 1), entry(3, 1), entry(4, 1)]);
        log.append(&[entry(3, 2)]);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3).unwrap(), 2);
        assert_eq!(log.compact(3), Some((2, 1)));
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2).unwrap(), 1);
        assert!(matches!(log.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(matches!(
            log.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
    }

    #[test]
    fn a_snapshot_not_yet_prepared_is_asked_for_then_served() {
        let log0 = GroupLog::bootstrap(&[1]);
        let mut log = log0;
        assert!(log.snapshot(5, 2).is_err());
        assert_eq!(log.take_wanted(), Some(5));
        assert_eq!(log.take_wanted(), None);
        let mut s = Snapshot::default();
        s.mut_metadata().index = 7;
        s.mut_metadata().set_conf_state(log.conf_state().clone());
        log.offer_snapshot(s);
        assert_eq!(log.snapshot(5, 2).unwrap().get_metadata().index, 7);
        // A replica added since: the snapshot prepared before does not name it, so it is not
        // sent (that replica would refuse it); a new one is asked for.
        let mut cs = log.conf_state().clone();
        cs.learners.push(2);
        log.set_conf_state(cs);
        assert!(log.snapshot(5, 2).is_err());
        assert_eq!(log.take_wanted(), Some(5));
    }

    #[test]
    fn restore_refuses_a_log_with_a_gap() {
        let p = PersistedGroup {
            snapshot_index: 1,
            snapshot_term: 1,
            entries: vec![entry(2, 1), entry(4, 1)],
            ..Default::default()
        };
        assert!(GroupLog::restore(&p).unwrap_err().contains("expected"));
    }
}
