//! Where raft logs persist: a trait with a sled implementation (production) and an in-memory
//! one (tests and the simulator) that keeps unflushed writes apart, so a crash can lose them.

use super::log::PersistedGroup;
use super::GroupId;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error("raft storage I/O error: {0}")]
    Io(String),
    #[error("corrupt raft record at {location}: {reason}")]
    Corrupt { location: String, reason: String },
}

/// What one round changes of one group's persisted raft state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupWrite {
    pub group: GroupId,
    /// A snapshot from the leader: the log restarts after it (the state machine installs its
    /// data in the same batch).
    pub snapshot: Option<Snapshot>,
    /// Entries to append; every persisted entry at or after the first one's index is replaced.
    pub entries: Vec<Entry>,
    /// Persisted entries at or after the first new one exist (a follower's log meeting a
    /// conflict): a store that keeps entries by index must remove them. False when the new
    /// entries follow the last one (a leader's appends, nearly every follower's).
    pub replaces: bool,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
    /// The state machine applied everything up to here (in the same batch).
    pub applied: Option<u64>,
    /// Entries up to and including (index, term) are folded into the state: drop them.
    pub compacted: Option<(u64, u64)>,
}

impl GroupWrite {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
            && self.applied.is_none()
            && self.compacted.is_none()
    }

    /// Applies this write to a persisted image (the in-memory disk; also the reference the
    /// sled implementation is tested against).
    pub fn apply_to(&self, p: &mut PersistedGroup) {
        if let Some(s) = &self.snapshot {
            let meta = s.get_metadata();
            p.snapshot_index = meta.index;
            p.snapshot_term = meta.term;
            p.conf_state = meta.get_conf_state().clone();
            p.entries.clear();
            // The hard state comes with the snapshot's round (raft-rs sets it in the same Ready).
            p.applied = p.applied.max(meta.index);
        }
        if let Some(first) = self.entries.first() {
            // Entries are kept in index order: cut at the first replaced one (not a scan).
            let keep = p.entries.partition_point(|e| e.index < first.index);
            // The write says whether it replaces persisted entries, and says it right (a store
            // that keeps entries by key relies on it; the simulator checks every round here).
            assert_eq!(
                self.replaces,
                keep < p.entries.len(),
                "group {}: a write of entries from {} says replaces={} over a log ending at {:?}",
                self.group,
                first.index,
                self.replaces,
                p.entries.last().map(|e| e.index)
            );
            p.entries.truncate(keep);
            p.entries.extend(self.entries.iter().cloned());
        }
        if let Some(hs) = &self.hard_state {
            p.hard_state = hs.clone();
        }
        if let Some(cs) = &self.conf_state {
            p.conf_state = cs.clone();
        }
        if let Some(a) = self.applied {
            p.applied = p.applied.max(a);
        }
        if let Some((index, term)) = self.compacted {
            if index > p.snapshot_index {
                let folded = p.entries.partition_point(|e| e.index <= index);
                p.entries.drain(..folded);
                p.snapshot_index = index;
                p.snapshot_term = term;
            }
        }
    }
}

/// The raft logs of every group on one node.
pub trait RaftDisk {
    /// Every group this node holds a replica of, as last made durable.
    fn load(&self) -> Result<BTreeMap<GroupId, PersistedGroup>, DiskError>;
    /// Writes one round atomically (all of it survives a crash, or none of it).
    fn write(&mut self, writes: &[GroupWrite]) -> Result<(), DiskError>;
    /// Makes every write so far durable.
    fn sync(&mut self) -> Result<(), DiskError>;
}

/// An in-memory disk: written rounds stay volatile until `sync`; `crash` keeps a prefix of them
/// (as a log-structured store does) and drops the rest.
#[derive(Clone, Debug, Default)]
pub struct MemoryDisk {
    durable: BTreeMap<GroupId, PersistedGroup>,
    volatile: Vec<Vec<GroupWrite>>,
    pub syncs: u64,
    /// Dropped replicas' term and vote (`Store::raft_tombstones`).
    tombstones: BTreeMap<GroupId, (u64, u64)>,
    /// Injected faults (the simulator): the next write fails (nothing of it is kept), the
    /// next load fails.
    pub fail_next_write: bool,
    pub fail_next_load: std::cell::Cell<bool>,
    /// The CRC-32 of each durable entry as written (a log-structured store keeps one per
    /// record): an entry whose bytes no longer match is reported at load, never applied.
    sums: BTreeMap<(GroupId, u64), u32>,
}

/// The checksum of one raft entry's stored form.
fn entry_sum(e: &raft::prelude::Entry) -> u32 {
    crc32fast::hash(&protobuf::Message::write_to_bytes(e).expect("raft entries encode"))
}

impl MemoryDisk {
    /// A crash: the first `keep` unsynced rounds reached the disk, the others are lost.
    pub fn crash(&mut self, keep: usize) {
        let rounds: Vec<_> = self.volatile.drain(..).collect();
        for round in rounds.into_iter().take(keep) {
            self.make_durable(&round);
        }
    }

    /// Folds a written round into the durable image, with its entries' checksums.
    fn make_durable(&mut self, round: &[GroupWrite]) {
        Self::fold(&mut self.durable, round);
        for w in round {
            for e in &w.entries {
                self.sums.insert((w.group, e.index), entry_sum(e));
            }
        }
    }

    /// Damages one durable entry at rest (a bit flipped on the medium), without its checksum:
    /// the next load reports it. Returns which, or None when there is no entry with data.
    pub fn corrupt(&mut self, pick: u64) -> Option<(GroupId, u64)> {
        let candidates: Vec<(GroupId, usize)> = self
            .durable
            .iter()
            .flat_map(|(&g, p)| p.entries.iter().enumerate().filter(|(_, e)| !e.data.is_empty()).map(move |(i, _)| (g, i)))
            .collect();
        let &(g, i) = candidates.get((pick % candidates.len().max(1) as u64) as usize)?;
        let e = &mut self.durable.get_mut(&g).expect("a group with entries").entries[i];
        let mut data = e.data.to_vec();
        let at = (pick as usize / 7) % data.len();
        data[at] ^= 0x10;
        e.data = data.into();
        Some((g, e.index))
    }

    /// Deletes a group's records in one flushed batch (a replica removed from its group),
    /// keeping its term and vote.
    pub fn drop_group(&mut self, group: GroupId, tombstone: (u64, u64)) {
        let _ = self.sync();
        self.durable.remove(&group);
        self.sums.retain(|&(g, _), _| g != group);
        self.tombstones.insert(group, tombstone);
    }

    pub fn tombstones(&self) -> &BTreeMap<GroupId, (u64, u64)> {
        &self.tombstones
    }

    pub fn unsynced_rounds(&self) -> usize {
        self.volatile.len()
    }

    fn fold(into: &mut BTreeMap<GroupId, PersistedGroup>, round: &[GroupWrite]) {
        for w in round {
            w.apply_to(into.entry(w.group).or_default());
        }
    }
}

impl RaftDisk for MemoryDisk {
    fn load(&self) -> Result<BTreeMap<GroupId, PersistedGroup>, DiskError> {
        if self.fail_next_load.replace(false) {
            return Err(DiskError::Io("injected read error".into()));
        }
        for (&g, p) in &self.durable {
            for e in &p.entries {
                if self.sums.get(&(g, e.index)) != Some(&entry_sum(e)) {
                    return Err(DiskError::Corrupt {
                        location: format!("group {g} entry {}", e.index),
                        reason: "its checksum does not match its bytes".into(),
                    });
                }
            }
        }
        let mut image = self.durable.clone();
        for round in &self.volatile {
            Self::fold(&mut image, round);
        }
        Ok(image)
    }

    fn write(&mut self, writes: &[GroupWrite]) -> Result<(), DiskError> {
        if std::mem::take(&mut self.fail_next_write) {
            return Err(DiskError::Io("injected write error".into()));
        }
        // Every round counts, empty or not: a crash keeps a prefix of rounds, and the state
        // machine's writes of the same rounds are kept alongside.
        self.volatile.push(writes.to_vec());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), DiskError> {
        self.syncs += 1;
        let rounds: Vec<_> = self.volatile.drain(..).collect();
        for round in rounds {
            self.make_durable(&round);
        }
        Ok(())
    }
}
