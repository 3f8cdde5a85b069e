//! The raft logs of this node's shard-group replicas in sled, beside the state they apply to:
//! one write batch carries a round's log writes and the state machine's writes together, so a
//! crash keeps both or neither (DESIGN.md §8: "the log is the group commit").

use crate::cluster::raft::{DiskError, GroupWrite, PersistedGroup, RaftDisk};
use crate::storage::keys::{
    self, RAFT_APPLIED, RAFT_CONF_STATE, RAFT_ENTRY, RAFT_HARD_STATE, RAFT_PREFIX, RAFT_SNAPSHOT_POINT, RAFT_STATES, RAFT_TOMBSTONE_PREFIX,
};
use crate::storage::raft_states::{self, RaftStates, STATES_GROUP};
use crate::storage::{Store, StoreError};
use std::collections::BTreeMap;

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        location: format!("raft log key {}", hex::encode(key)),
        reason: reason.to_string(),
    }
}

fn u64_pair(v: &[u8]) -> Option<(u64, u64)> {
    Some((
        u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
        u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
    ))
}

impl Store {
    /// Every group this node holds a replica of, as persisted. A record that does not decode
    /// is an error naming it (the node refuses to start rather than guess).
    pub fn raft_groups(&self) -> Result<BTreeMap<u32, PersistedGroup>, StoreError> {
        let mut out: BTreeMap<u32, PersistedGroup> = BTreeMap::new();
        let mut states = None;
        for item in self.tree().scan_prefix(RAFT_PREFIX) {
            let (k, v) = item?;
            let rest = &k[RAFT_PREFIX.len()..];
            if rest.len() < 5 {
                return Err(corrupt(&k, "short key"));
            }
            let group = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
            if group == STATES_GROUP {
                if rest[4] != RAFT_STATES || rest.len() != 5 {
                    return Err(corrupt(&k, "unknown raft record"));
                }
                states = Some(raft_states::decode(&v)?);
                continue;
            }
            let p = out.entry(group).or_default();
            match (rest[4], rest.len()) {
                (RAFT_HARD_STATE, 5) => p.hard_state = protobuf::Message::parse_from_bytes(&v).map_err(|e| corrupt(&k, e))?,
                (RAFT_CONF_STATE, 5) => p.conf_state = protobuf::Message::parse_from_bytes(&v).map_err(|e| corrupt(&k, e))?,
                (RAFT_SNAPSHOT_POINT, 5) => (p.snapshot_index, p.snapshot_term) = u64_pair(&v).ok_or_else(|| corrupt(&k, "not (index, term)"))?,
                (RAFT_APPLIED, 5) => p.applied = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt(&k, "not an index"))?),
                (RAFT_ENTRY, 13) => {
                    let e: raft::prelude::Entry = protobuf::Message::parse_from_bytes(&v).map_err(|e| corrupt(&k, e))?;
                    let index = u64::from_be_bytes(rest[5..].try_into().expect("8 bytes"));
                    if e.index != index {
                        return Err(corrupt(&k, format!("holds entry {} under index {index}", e.index)));
                    }
                    p.entries.push(e);
                }
                _ => return Err(corrupt(&k, "unknown raft record")),
            }
        }
        // The one record holds the pair of every group since it was first written (and the
        // per-group keys of an earlier layout were deleted in that batch).
        for (g, s) in states.unwrap_or_default() {
            let p = out.entry(g).or_default();
            p.hard_state = s.hard_state;
            p.applied = s.applied;
        }
        Ok(out)
    }

    /// Adds one group's round to `batch`: replaced suffixes and compacted prefixes deleted. Its
    /// hard state and applied index go to `states`, which the caller stages once the round's
    /// groups are all added.
    pub fn stage_raft(&self, batch: &mut sled::Batch, w: &GroupWrite, states: &mut RaftStates) -> Result<(), StoreError> {
        states.note(w);
        let g = w.group;
        let encode = |m: &dyn protobuf::Message| m.write_to_bytes().map_err(|e| StoreError::Io(format!("raft record of group {g}: {e}")));
        if let Some(s) = &w.snapshot {
            let meta = s.get_metadata();
            for item in self.tree().scan_prefix(keys::raft_key(g, RAFT_ENTRY)).keys() {
                batch.remove(item?);
            }
            let mut point = meta.index.to_be_bytes().to_vec();
            point.extend_from_slice(&meta.term.to_be_bytes());
            batch.insert(keys::raft_key(g, RAFT_SNAPSHOT_POINT), point);
            batch.insert(keys::raft_key(g, RAFT_CONF_STATE), encode(meta.get_conf_state())?);
        }
        if let Some(first) = w.entries.first() {
            let last_new = w.entries.last().expect("non-empty").index;
            // Entries after the new ones belong to a replaced suffix.
            if w.replaces {
                for item in self
                    .tree()
                    .range(keys::raft_entry_key(g, last_new + 1)..keys::raft_key(g, RAFT_ENTRY + 1))
                    .keys()
                {
                    batch.remove(item?);
                }
            }
            debug_assert!(first.index <= last_new);
            for e in &w.entries {
                batch.insert(keys::raft_entry_key(g, e.index), encode(e)?);
            }
        }
        if let Some(cs) = &w.conf_state {
            batch.insert(keys::raft_key(g, RAFT_CONF_STATE), encode(cs)?);
        }
        if let Some((index, term)) = w.compacted {
            for item in self.tree().range(keys::raft_entry_key(g, 0)..=keys::raft_entry_key(g, index)).keys() {
                batch.remove(item?);
            }
            let mut point = index.to_be_bytes().to_vec();
            point.extend_from_slice(&term.to_be_bytes());
            batch.insert(keys::raft_key(g, RAFT_SNAPSHOT_POINT), point);
        }
        Ok(())
    }
}

impl Store {
    /// Key ranges of everything a group's state machine holds: its shards and its audit chain.
    fn group_ranges(&self, group: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = (0..crate::domain::ids::SHARD_COUNT)
            .filter(|&s| crate::domain::ids::group_of(s, self.groups()) == group)
            .map(keys::shard_range)
            .collect();
        if group == self.meta_group() {
            // The metadata group: its state (and, below, its audit chain).
            let mut end = keys::META_STATE_KEY.to_vec();
            end.push(0);
            out.push((keys::META_STATE_KEY.to_vec(), end));
        }
        let mut end = keys::audit_prefix(group);
        end.push(0xff);
        end.extend_from_slice(&[0xff; 8]);
        out.push((keys::audit_prefix(group), end));
        let head = keys::audit_head_key(group);
        let mut head_end = head.clone();
        head_end.push(0);
        out.push((head, head_end));
        out
    }

    /// The term and vote of every replica this node dropped (the last one per group).
    pub fn raft_tombstones(&self) -> Result<BTreeMap<u32, (u64, u64)>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.tree().scan_prefix(RAFT_TOMBSTONE_PREFIX) {
            let (k, v) = item?;
            let group = k[RAFT_TOMBSTONE_PREFIX.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt(&k, "not a group"))?;
            out.insert(group, u64_pair(&v).filter(|_| v.len() == 16).ok_or_else(|| corrupt(&k, "not (term, vote)"))?);
        }
        Ok(out)
    }

    /// Deletes, in `batch`, everything this node holds of a group: its state (every key of its
    /// shards, the metadata for the metadata group), its audit chain and its raft log; keeps
    /// the replica's term and vote (`tombstone`) for a replica created again.
    pub fn stage_drop_group(&self, batch: &mut sled::Batch, group: u32, tombstone: (u64, u64)) -> Result<(), StoreError> {
        let mut k = RAFT_TOMBSTONE_PREFIX.to_vec();
        k.extend_from_slice(&group.to_be_bytes());
        let mut v = tombstone.0.to_be_bytes().to_vec();
        v.extend_from_slice(&tombstone.1.to_be_bytes());
        batch.insert(k, v);
        for (start, end) in self.group_ranges(group) {
            for k in self.tree().range(start..end).keys() {
                batch.remove(k?);
            }
        }
        let mut prefix = RAFT_PREFIX.to_vec();
        prefix.extend_from_slice(&group.to_be_bytes());
        for k in self.tree().scan_prefix(prefix).keys() {
            batch.remove(k?);
        }
        Ok(())
    }

    /// A snapshot of a group's applied state (every key of its shards and its audit chain),
    /// taken between rounds so it stands exactly at the group's applied index.
    pub fn group_snapshot(&self, group: u32) -> Result<Vec<u8>, StoreError> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (start, end) in self.group_ranges(group) {
            for item in self.tree().range(start..end) {
                let (k, v) = item?;
                pairs.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(crate::storage::codec::encode(&pairs))
    }

    /// Replaces a group's state with a snapshot's, in `batch`. A snapshot that does not decode
    /// or holds keys outside the group is refused (counted by the caller), never half applied.
    /// Returns the group's audit chain head as the snapshot has it. `cycle` learns the group's
    /// state is replaced, and which write-once keys the snapshot holds.
    pub fn stage_install(
        &self,
        batch: &mut sled::Batch,
        group: u32,
        data: &[u8],
        cycle: &mut crate::storage::store::Cycle,
    ) -> Result<Option<crate::storage::audit_log::ChainHead>, StoreError> {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = crate::storage::codec::decode(data).map_err(|e| StoreError::Corrupt {
            location: format!("snapshot of group {group}"),
            reason: e.to_string(),
        })?;
        let ranges = self.group_ranges(group);
        let inside = |k: &[u8]| ranges.iter().any(|(s, e)| k >= s.as_slice() && k < e.as_slice());
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !inside(k)) {
            return Err(StoreError::Corrupt {
                location: format!("snapshot of group {group}"),
                reason: format!("key {} is not the group's", hex::encode(k)),
            });
        }
        for (start, end) in &ranges {
            for k in self.tree().range(start.clone()..end.clone()).keys() {
                batch.remove(k?);
            }
        }
        let head_key = keys::audit_head_key(group);
        let mut head = None;
        cycle.installed.insert(group);
        cycle
            .written_once
            .extend(pairs.iter().filter(|(k, _)| keys::is_write_once(k)).map(|(k, _)| k.clone()));
        for (k, v) in pairs {
            if k == head_key {
                head = Some(crate::storage::codec::decode(&v).map_err(|e| StoreError::Corrupt {
                    location: format!("snapshot of group {group}: audit head"),
                    reason: e.to_string(),
                })?);
            }
            batch.insert(k, v);
        }
        Ok(head)
    }
}

/// The sled store as a raft disk on its own (tools and tests; the node stages log and state
/// writes into one batch itself).
impl RaftDisk for Store {
    fn load(&self) -> Result<BTreeMap<u32, PersistedGroup>, DiskError> {
        self.raft_groups().map_err(|e| match e {
            StoreError::Corrupt { location, reason } => DiskError::Corrupt { location, reason },
            other => DiskError::Io(other.to_string()),
        })
    }

    fn write(&mut self, writes: &[GroupWrite]) -> Result<(), DiskError> {
        let mut batch = sled::Batch::default();
        let io = |e: StoreError| DiskError::Io(e.to_string());
        let mut states = RaftStates::from_persisted(&self.raft_groups().map_err(io)?);
        for w in writes {
            self.stage_raft(&mut batch, w, &mut states).map_err(io)?;
        }
        states.stage(&mut batch);
        self.tree().apply_batch(batch).map_err(|e| DiskError::Io(e.to_string()))
    }

    fn sync(&mut self) -> Result<(), DiskError> {
        self.flush().map(|_| ()).map_err(|e| DiskError::Io(e.to_string()))
    }
}

/// The metadata state a snapshot of the metadata group carries (None: it has none).
pub fn meta_in_snapshot(data: &[u8]) -> Result<Option<crate::cluster::meta::MetaState>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        location: "snapshot of the metadata group".into(),
        reason,
    };
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = crate::storage::codec::decode(data).map_err(|e| corrupt(e.to_string()))?;
    match pairs.iter().find(|(k, _)| k.as_slice() == keys::META_STATE_KEY) {
        None => Ok(None),
        Some((_, v)) => crate::storage::codec::decode(v).map(Some).map_err(|e| corrupt(e.to_string())),
    }
}
