//! Every raft group's hard state (term, vote, commit) and applied index in one record.
//!
//! A round touches several groups, and each group's hard state and applied index change in
//! nearly every round that touches it. Kept per group, that was two sled keys per group per
//! round, a fifth of everything a round wrote on one node. Here the writer keeps every
//! group's pair in memory and a round that changes any rewrites the one record, in the same
//! batch as the log and the state it describes, so a crash keeps all of it or none.
//!
//! Layout of the value (fixed, checked on read): `count u32 BE`, then per group in ascending
//! order `group u32 BE ‖ term u64 BE ‖ vote u64 BE ‖ commit u64 BE ‖ applied u64 BE`, then
//! `seq u64 BE`: how many times the record was written, the number the data folder's
//! high-water mark outside sled is checked against (`storage::durable_mark`). A record of an
//! earlier build has no `seq` (read as 0).
//! Folders written before this record kept the pair under each group's `RAFT_HARD_STATE` and
//! `RAFT_APPLIED` keys: they are read as before, and the first round that writes this record
//! deletes them in the same batch.

use crate::cluster::raft::{GroupWrite, PersistedGroup};
use crate::storage::keys::{self, RAFT_APPLIED, RAFT_HARD_STATE};
use crate::storage::StoreError;
use raft::prelude::HardState;
use std::collections::BTreeMap;

/// The record's key: under the raft prefix (node-local, never in a backup), at a group number
/// no group has.
pub fn states_key() -> Vec<u8> {
    keys::raft_key(STATES_GROUP, keys::RAFT_STATES)
}

/// The group number the record's key carries (groups are at most the shard count plus one).
pub const STATES_GROUP: u32 = u32::MAX;

const ENTRY_BYTES: usize = 4 + 4 * 8;

/// One group's pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupState {
    pub hard_state: HardState,
    pub applied: u64,
}

/// What the writer holds of the record: every group's pair, and whether a round changed it.
#[derive(Debug, Default)]
pub struct RaftStates {
    groups: BTreeMap<u32, GroupState>,
    /// The record's write count, as last staged.
    seq: u64,
    dirty: bool,
    /// The per-group keys of the earlier layout are deleted (once, with the first record).
    migrated: bool,
}

impl RaftStates {
    /// The pairs of the groups as loaded (`Store::raft_groups`), and the record's write count
    /// as loaded (`Store::written_seq`).
    pub fn from_persisted(persisted: &BTreeMap<u32, PersistedGroup>, seq: u64) -> RaftStates {
        RaftStates {
            groups: persisted
                .iter()
                .map(|(g, p)| {
                    (
                        *g,
                        GroupState {
                            hard_state: p.hard_state.clone(),
                            applied: p.applied,
                        },
                    )
                })
                .collect(),
            seq,
            dirty: false,
            migrated: false,
        }
    }

    /// Takes one group's write of a round (as `GroupWrite::apply_to` does the reference disk).
    pub fn note(&mut self, w: &GroupWrite) {
        let s = self.groups.entry(w.group).or_default();
        let before = s.clone();
        if let Some(snap) = &w.snapshot {
            s.applied = s.applied.max(snap.get_metadata().index);
        }
        if let Some(hs) = &w.hard_state {
            s.hard_state = hs.clone();
        }
        if let Some(a) = w.applied {
            s.applied = s.applied.max(a);
        }
        self.dirty |= *s != before;
    }

    /// The group's replica is dropped here (its other records go in the same batch).
    pub fn remove(&mut self, group: u32) {
        self.dirty |= self.groups.remove(&group).is_some();
    }

    /// Adds the record to `batch` when a write changed it since the last time.
    pub fn stage(&mut self, batch: &mut sled::Batch) {
        if !self.dirty {
            return;
        }
        if !self.migrated {
            for g in self.groups.keys() {
                batch.remove(keys::raft_key(*g, RAFT_HARD_STATE));
                batch.remove(keys::raft_key(*g, RAFT_APPLIED));
            }
            self.migrated = true;
        }
        self.seq += 1;
        batch.insert(states_key(), encode(&self.groups, self.seq));
        self.dirty = false;
    }

    /// The record's write count as last staged: once the batch that staged it is flushed,
    /// the data folder holds at least this many writes of it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    #[cfg(test)]
    pub(crate) fn get(&self, group: u32) -> Option<&GroupState> {
        self.groups.get(&group)
    }
}

fn encode(groups: &BTreeMap<u32, GroupState>, seq: u64) -> Vec<u8> {
    let count = u32::try_from(groups.len()).expect("groups fit in u32");
    let mut v = Vec::with_capacity(4 + groups.len() * ENTRY_BYTES + 8);
    v.extend_from_slice(&count.to_be_bytes());
    for (g, s) in groups {
        v.extend_from_slice(&g.to_be_bytes());
        for n in [s.hard_state.term, s.hard_state.vote, s.hard_state.commit, s.applied] {
            v.extend_from_slice(&n.to_be_bytes());
        }
    }
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

/// Reads the record: every group's pair and the record's write count (0 for a record of an
/// earlier build, which had none). One of the wrong length, with groups out of order or on the
/// record's own group number, is corrupt.
pub fn decode(v: &[u8]) -> Result<(BTreeMap<u32, GroupState>, u64), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        location: "the raft groups' hard states".into(),
        reason,
    };
    let count = v
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| corrupt("shorter than its count".into()))?;
    let groups_end = count.checked_mul(ENTRY_BYTES).and_then(|n| n.checked_add(4));
    let u64_at = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let seq = match groups_end {
        Some(end) if end == v.len() => 0,
        Some(end) if end.checked_add(8) == Some(v.len()) => u64_at(v, end),
        _ => return Err(corrupt(format!("{} bytes cannot hold {count} groups", v.len()))),
    };
    let groups_end = groups_end.expect("checked above");
    let mut out = BTreeMap::new();
    let mut last: Option<u32> = None;
    for b in v[4..groups_end].chunks_exact(ENTRY_BYTES) {
        let g = u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        if g == STATES_GROUP || last.is_some_and(|l| g <= l) {
            return Err(corrupt(format!("group {g} out of order")));
        }
        last = Some(g);
        let hard_state = HardState {
            term: u64_at(b, 4),
            vote: u64_at(b, 12),
            commit: u64_at(b, 20),
            ..Default::default()
        };
        let applied = u64_at(b, 28);
        out.insert(g, GroupState { hard_state, applied });
    }
    Ok((out, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn a_record_round_trips_and_a_damaged_one_is_corrupt() {
        let mut states = RaftStates::default();
        for g in [3u32, 0, 32] {
            states.note(&GroupWrite {
                group: g,
                hard_state: Some(hs(u64::from(g) + 1, 2, 40)),
                applied: Some(39),
                ..Default::default()
            });
        }
        let mut batch = sled::Batch::default();
        states.stage(&mut batch);
        assert_eq!(states.seq(), 1, "each staged record counts one write");
        let bytes = encode(&states.groups, 41);
        assert_eq!(decode(&bytes).unwrap(), (states.groups.clone(), 41));
        assert_eq!(decode(&bytes).unwrap().0[&32].hard_state, hs(33, 2, 40));
        // A record of an earlier build, without the write count, reads as count 0.
        assert_eq!(decode(&bytes[..bytes.len() - 8]).unwrap(), (states.groups.clone(), 0));
        for cut in [0, 3, 4 + ENTRY_BYTES, bytes.len() - 1, bytes.len() - 9] {
            assert!(matches!(decode(&bytes[..cut]), Err(StoreError::Corrupt { .. })), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        // Groups out of order: the second entry's group set to the first's.
        let mut swapped = bytes.clone();
        swapped[4 + ENTRY_BYTES..4 + ENTRY_BYTES + 4].copy_from_slice(&0u32.to_be_bytes());
        assert!(decode(&swapped).is_err());
    }

    #[test]
    fn only_a_change_is_staged_and_the_applied_index_never_moves_back() {
        let mut states = RaftStates::default();
        let w = GroupWrite {
            group: 1,
            hard_state: Some(hs(1, 1, 5)),
            applied: Some(5),
            ..Default::default()
        };
        states.note(&w);
        let mut batch = sled::Batch::default();
        states.stage(&mut batch);
        assert!(!states.dirty);
        states.note(&w);
        assert!(!states.dirty, "the same pair again changes nothing");
        states.note(&GroupWrite {
            group: 1,
            applied: Some(3),
            ..Default::default()
        });
        assert_eq!(states.get(1).unwrap().applied, 5);
        assert!(!states.dirty);
        states.remove(1);
        assert!(states.dirty && states.get(1).is_none());
    }
}
