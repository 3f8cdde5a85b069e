//! The raft logs of this node's shard-group replicas in sled, beside the state they apply to:
//! one write batch carries a round's log writes and the state machine's writes together, so a
//! crash keeps both or neither (DESIGN.md §8: "the log is the group commit").

use crate::cluster::raft::{DiskError, GroupWrite, PersistedGroup, RaftDisk};
use crate::storage::keys::{
    self, RAFT_APPLIED, RAFT_CONF_STATE, RAFT_ENTRY, RAFT_HARD_STATE, RAFT_PREFIX, RAFT_PURGES, RAFT_ROUND, RAFT_SNAPSHOT_POINT, RAFT_STATES,
    RAFT_TOMBSTONE_PREFIX,
};
use crate::storage::raft_rounds::{self, RaftRounds};
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
        Ok(self.raft_image()?.0)
    }

    /// How many times the raft states record was written (0 with none, or one of an earlier
    /// build): what the data folder's high-water mark is checked against.
    pub fn written_seq(&self) -> Result<u64, StoreError> {
        match self.tree().get(raft_states::states_key())? {
            Some(v) => Ok(raft_states::decode(&v)?.1),
            None => Ok(0),
        }
    }

    /// Every group as persisted, and what the writer keeps of the round records.
    pub fn raft_image(&self) -> Result<(BTreeMap<u32, PersistedGroup>, RaftRounds), StoreError> {
        let mut out: BTreeMap<u32, PersistedGroup> = BTreeMap::new();
        let mut states = None;
        let mut rounds: Vec<(u64, Vec<raft_rounds::Run>)> = Vec::new();
        let mut owed = Vec::new();
        for item in self.tree().scan_prefix(RAFT_PREFIX) {
            let (k, v) = item?;
            let rest = &k[RAFT_PREFIX.len()..];
            if rest.len() < 5 {
                return Err(corrupt(&k, "short key"));
            }
            let group = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
            if group == STATES_GROUP {
                match (rest[4], rest.len()) {
                    (RAFT_STATES, 5) => states = Some(raft_states::decode(&v)?.0),
                    (RAFT_PURGES, 5) => owed = raft_rounds::decode_purges(&v)?,
                    (RAFT_ROUND, 13) => {
                        let seq = u64::from_be_bytes(rest[5..].try_into().expect("8 bytes"));
                        rounds.push((seq, raft_rounds::decode(seq, &v)?));
                    }
                    _ => return Err(corrupt(&k, "unknown raft record")),
                }
                continue;
            }
            let p = out.entry(group).or_default();
            match (rest[4], rest.len()) {
                (RAFT_HARD_STATE, 5) => p.hard_state = protobuf::Message::parse_from_bytes(&v).map_err(|e| corrupt(&k, e))?,
                (RAFT_CONF_STATE, 5) => p.conf_state = protobuf::Message::parse_from_bytes(&v).map_err(|e| corrupt(&k, e))?,
                (RAFT_SNAPSHOT_POINT, 5) => (p.snapshot_index, p.snapshot_term) = u64_pair(&v).ok_or_else(|| corrupt(&k, "not (index, term)"))?,
                (RAFT_APPLIED, 5) => p.applied = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt(&k, "not an index"))?),
                (RAFT_ENTRY, 13) => {
                    // A folder written before round records (`migrate_raft_entries` moves them).
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
        // The round records in the order they were written: each run replaces what its group
        // had from its first index on, as raft appended it.
        for (_, runs) in &rounds {
            for (g, entries) in runs {
                let p = out.entry(*g).or_default();
                let keep = p.entries.partition_point(|e| e.index < entries[0].index);
                p.entries.truncate(keep);
                p.entries.extend(entries.iter().cloned());
            }
        }
        // Entries a record still stores past its group's compaction are not part of the log.
        for p in out.values_mut() {
            let folded = p.entries.partition_point(|e| e.index <= p.snapshot_index);
            p.entries.drain(..folded);
        }
        let points = out.iter().map(|(g, p)| (*g, p.snapshot_index)).collect();
        let mut tracker = RaftRounds::loaded(&rounds, &points);
        tracker.restore_purges(&owed);
        Ok((out, tracker))
    }

    /// Moves the raft log entries of a folder written before round records (one key per entry)
    /// into one round record, in one flushed batch. Returns how many entries moved.
    pub fn migrate_raft_entries(&self) -> Result<usize, StoreError> {
        let mut legacy = Vec::new();
        for item in self.tree().scan_prefix(RAFT_PREFIX).keys() {
            let k = item?;
            let rest = &k[RAFT_PREFIX.len()..];
            if rest.len() == 13 && rest[4] == RAFT_ENTRY && rest[..4] != STATES_GROUP.to_be_bytes() {
                legacy.push(k);
            }
        }
        if legacy.is_empty() {
            return Ok(0);
        }
        let (groups, mut rounds) = self.raft_image()?;
        let mut batch = sled::Batch::default();
        for k in &legacy {
            batch.remove(k.clone());
        }
        for (g, p) in &groups {
            rounds.append(&mut batch, *g, &p.entries);
        }
        self.stage_rounds(&mut batch, &mut rounds)?;
        self.tree().apply_batch(batch)?;
        self.flush()?;
        tracing::info!(entries = legacy.len(), "raft log entries moved into one round record");
        Ok(legacy.len())
    }

    /// Adds one group's round to `batch`: its entries to the round's record, a compaction to
    /// the records it frees, its snapshot point and configuration. Its hard state and applied
    /// index go to `states`, which the caller stages once the round's groups are all added,
    /// as it stages `rounds` (`stage_rounds`).
    pub fn stage_raft(&self, batch: &mut sled::Batch, w: &GroupWrite, states: &mut RaftStates, rounds: &mut RaftRounds) -> Result<(), StoreError> {
        states.note(w);
        let g = w.group;
        let encode = |m: &dyn protobuf::Message| m.write_to_bytes().map_err(|e| StoreError::Io(format!("raft record of group {g}: {e}")));
        if let Some(s) = &w.snapshot {
            let meta = s.get_metadata();
            rounds.reset(g, meta.index);
            let mut point = meta.index.to_be_bytes().to_vec();
            point.extend_from_slice(&meta.term.to_be_bytes());
            batch.insert(keys::raft_key(g, RAFT_SNAPSHOT_POINT), point);
            batch.insert(keys::raft_key(g, RAFT_CONF_STATE), encode(meta.get_conf_state())?);
        }
        rounds.append(batch, g, &w.entries);
        if let Some(cs) = &w.conf_state {
            batch.insert(keys::raft_key(g, RAFT_CONF_STATE), encode(cs)?);
        }
        // A compaction the node recorded before a snapshot arrived in the same round is
        // behind the snapshot's point, which stands (as `GroupWrite::apply_to` folds them): the
        // older point written over it would make the reloaded log start before its entries.
        let snapshot_index = w.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        if let Some((index, term)) = w.compacted.filter(|&(index, _)| index > snapshot_index) {
            rounds.release(batch, g, index);
            let mut point = index.to_be_bytes().to_vec();
            point.extend_from_slice(&term.to_be_bytes());
            batch.insert(keys::raft_key(g, RAFT_SNAPSHOT_POINT), point);
        }
        Ok(())
    }

    /// Adds the round's record of entries, and the records rewritten or freed, to `batch`.
    pub fn stage_rounds(&self, batch: &mut sled::Batch, rounds: &mut RaftRounds) -> Result<(), StoreError> {
        rounds.stage(batch, |k| Ok(self.tree().get(k)?))
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
    pub fn stage_drop_group(&self, batch: &mut sled::Batch, group: u32, tombstone: (u64, u64), rounds: &mut RaftRounds) -> Result<(), StoreError> {
        rounds.forget(group);
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
        self.stage_rounds(batch, rounds)
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
        // The chain head lives in the one record of every group's heads here; a snapshot
        // carries it under the group's own head key, as it always has.
        let head_key = keys::audit_head_key(group);
        if !pairs.iter().any(|(k, _)| *k == head_key) {
            if let Some(head) = self.chain_head(group)? {
                pairs.push((head_key, crate::storage::codec::encode(&head)));
            }
        }
        Ok(crate::storage::codec::encode(&pairs))
    }

    /// A snapshot's pairs, each key the group's (else the snapshot is corrupt).
    fn snapshot_pairs(&self, group: u32, data: &[u8]) -> Result<Pairs, StoreError> {
        let pairs: Pairs = crate::storage::codec::decode(data).map_err(|e| StoreError::Corrupt {
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
        Ok(pairs)
    }

    /// Whether a snapshot a peer sent can be installed: what `stage_install` (and, for the
    /// metadata group, `meta_in_snapshot`) would refuse, found before raft takes the snapshot.
    /// Refused there, it would fail the writer's round — every group of the node — and again
    /// each time the leader sent it.
    pub fn check_snapshot(&self, group: u32, data: &[u8], metadata_group: bool) -> Result<(), StoreError> {
        let pairs = self.snapshot_pairs(group, data)?;
        let head_key = keys::audit_head_key(group);
        if let Some((_, v)) = pairs.iter().find(|(k, _)| *k == head_key) {
            crate::storage::codec::decode::<crate::storage::audit_log::ChainHead>(v).map_err(|e| StoreError::Corrupt {
                location: format!("snapshot of group {group}: audit head"),
                reason: e.to_string(),
            })?;
        }
        if metadata_group {
            meta_in_snapshot(data)?;
        }
        Ok(())
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
        let pairs = self.snapshot_pairs(group, data)?;
        let ranges = self.group_ranges(group);
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
                // Kept in the record of every group's heads (the caller's cycle stages it).
                head = Some(crate::storage::codec::decode(&v).map_err(|e| StoreError::Corrupt {
                    location: format!("snapshot of group {group}: audit head"),
                    reason: e.to_string(),
                })?);
                continue;
            }
            batch.insert(k, v);
        }
        cycle.heads_moved = true;
        Ok(head)
    }
}

/// A snapshot's state: every key of the group and its value.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

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
        self.migrate_raft_entries().map_err(io)?;
        let (groups, mut rounds) = self.raft_image().map_err(io)?;
        let mut states = RaftStates::from_persisted(&groups, self.written_seq().map_err(io)?);
        for w in writes {
            self.stage_raft(&mut batch, w, &mut states, &mut rounds).map_err(io)?;
        }
        self.stage_rounds(&mut batch, &mut rounds).map_err(io)?;
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
