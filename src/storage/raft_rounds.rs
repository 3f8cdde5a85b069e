//! The raft log entries a round appends, every group's, in one record.
//!
//! sled 0.34 copies the leaf it changes for every key it writes, so a key costs about the same
//! whatever its size. Kept by index, the log cost two keys per entry: its insert, and its
//! removal when the group's log is compacted. A round on one node appends an entry to most of
//! the groups it touches, so that was about a quarter of the keys it wrote. Here a round's
//! entries are one record (`round_key(seq)`, seq counting rounds that appended), written in
//! the same batch as the state they are applied to. A record is deleted once every group's
//! entries in it are compacted: about one removal per round instead of one per entry.
//!
//! Reading the records back in order rebuilds each group's log the way raft appends it: a
//! group's run of entries in a record replaces what the group had from its first index on.
//!
//! Entries may outlive their compaction inside a record still holding other groups' live
//! entries. Where a log's entries must be *gone* — a snapshot installed over it, the replica
//! dropped, entries that carried a destroyed data key — the records holding them are rewritten
//! without them in the same batch (`purge`), as the per-index keys were deleted before.
//!
//! Value: `version u8 (1)`, then per group in ascending order `group u32 BE ‖ count u32 BE`
//! and `count` times `length u32 BE ‖ entry (protobuf)`, the entries of a run contiguous;
//! then the CRC-32 of everything before it (u32 BE). Anything else is an error naming the
//! record.

use crate::storage::keys::{self, RAFT_PURGES, RAFT_ROUND};
use crate::storage::raft_states::STATES_GROUP;
use crate::storage::StoreError;
use raft::prelude::Entry;
use std::collections::{BTreeMap, VecDeque};

const VERSION: u8 = 1;

/// One group's entries in a record, contiguous.
pub type Run = (u32, Vec<Entry>);

/// The key of the round record `seq`: under the raft prefix (node-local, never in a backup),
/// at the group number of the states record.
pub fn round_key(seq: u64) -> Vec<u8> {
    let mut k = keys::raft_key(STATES_GROUP, RAFT_ROUND);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The record number in a round record's key (None: not one).
pub fn round_seq(key: &[u8]) -> Option<u64> {
    let prefix = keys::raft_key(STATES_GROUP, RAFT_ROUND);
    let rest = key.strip_prefix(prefix.as_slice())?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// Where one group's entries sit in one record: lowest and highest index stored, and whether
/// any of them is not yet compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    lo: u64,
    hi: u64,
    live: bool,
}

/// What a rewrite keeps of one group's run: the entries strictly between the two indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Keep {
    after: u64,
    before: u64,
}

impl Default for Keep {
    fn default() -> Keep {
        Keep { after: 0, before: u64::MAX }
    }
}

/// What the writer holds of the records: which group's entries each one stores, the records
/// holding each group's live entries, and the round being built.
#[derive(Debug, Default)]
pub struct RaftRounds {
    next: u64,
    records: BTreeMap<u64, BTreeMap<u32, Span>>,
    /// Per group, the records with its live entries, oldest first (their live entries in
    /// ascending order, none shared).
    held: BTreeMap<u32, VecDeque<u64>>,
    /// The round being built: each group's entries.
    pending: BTreeMap<u32, Vec<Entry>>,
    /// Records to write again without some groups' entries up to an index.
    cuts: BTreeMap<u64, BTreeMap<u32, Keep>>,
    /// Records to delete with the next round (found with nothing live at load).
    dead: Vec<u64>,
    /// Per group, the index its log is compacted through, as staged.
    points: BTreeMap<u32, u64>,
    /// Per group, entries to purge once the log is compacted past them.
    deferred: BTreeMap<u32, u64>,
    /// `deferred` changed since its record (`purges_key`) was last staged.
    purges_moved: bool,
}

impl RaftRounds {
    /// The tracker as the records were loaded, each group's compaction point applied.
    pub(crate) fn loaded(records: &[(u64, Vec<Run>)], snapshot_points: &BTreeMap<u32, u64>) -> RaftRounds {
        let mut r = RaftRounds::default();
        let mut ignored = sled::Batch::default();
        for (seq, runs) in records {
            r.next = r.next.max(seq + 1);
            for (g, es) in runs {
                r.replace_from(&mut ignored, *g, es[0].index);
            }
            r.track(
                *seq,
                runs.iter()
                    .map(|(g, es)| (*g, es.first().expect("runs are non-empty").index, es.last().expect("non-empty").index)),
            );
        }
        // Records with none of the log's entries should have gone when they lost the last;
        // any found are deleted with the next round.
        for (g, point) in snapshot_points {
            r.release(&mut ignored, *g, *point);
        }
        r.dead = records.iter().map(|(seq, _)| *seq).filter(|seq| !r.records.contains_key(seq)).collect();
        r
    }

    fn track(&mut self, seq: u64, runs: impl Iterator<Item = (u32, u64, u64)>) {
        let spans: BTreeMap<u32, Span> = runs.map(|(g, lo, hi)| (g, Span { lo, hi, live: true })).collect();
        for g in spans.keys() {
            self.held.entry(*g).or_default().push_back(seq);
        }
        self.records.insert(seq, spans);
    }

    /// A round appends `entries` to `group`'s log, replacing its entries from the first one's
    /// index on: a record left with none of the log's entries is deleted in `batch`.
    pub fn append(&mut self, batch: &mut sled::Batch, group: u32, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        self.replace_from(batch, group, first.index);
        let run = self.pending.entry(group).or_default();
        let keep = run.partition_point(|e| e.index < first.index);
        run.truncate(keep);
        run.extend(entries.iter().cloned());
    }

    /// `group`'s stored entries from `index` on are no longer its log's (a follower's log
    /// meeting a conflict, rare): the records holding them are written again without them, so
    /// no record ever holds an entry the log replaced.
    fn replace_from(&mut self, batch: &mut sled::Batch, group: u32, index: u64) {
        if let Some(held) = self.held.get_mut(&group) {
            while let Some(&seq) = held.back() {
                let spans = self.records.get_mut(&seq).expect("a held record is tracked");
                let span = spans.get_mut(&group).expect("a held record holds the group");
                if span.hi < index {
                    break;
                }
                let keep = self.cuts.entry(seq).or_default().entry(group).or_default();
                keep.before = keep.before.min(index);
                if span.lo < index {
                    span.hi = index - 1;
                    if span.hi > self.points.get(&group).copied().unwrap_or(0) {
                        break;
                    }
                    // What it keeps is compacted already.
                    span.live = false;
                } else {
                    spans.remove(&group);
                }
                let dead = spans.values().all(|s| !s.live);
                held.pop_back();
                if dead {
                    bury(&mut self.records, &mut self.cuts, batch, seq);
                }
            }
            if held.is_empty() {
                self.held.remove(&group);
            }
        }
    }

    /// `group`'s log is compacted up to `index`: a record whose live entries are now all
    /// compacted is deleted in `batch`.
    pub fn release(&mut self, batch: &mut sled::Batch, group: u32, index: u64) {
        let point = self.points.entry(group).or_insert(0);
        *point = (*point).max(index);
        if let Some(&d) = self.deferred.get(&group) {
            self.cut(group, d.min(index));
            if d <= index {
                self.deferred.remove(&group);
                self.purges_moved = true;
            }
        }
        let Some(held) = self.held.get_mut(&group) else { return };
        while let Some(&seq) = held.front() {
            let spans = self.records.get_mut(&seq).expect("a held record is tracked");
            let span = spans.get_mut(&group).expect("a held record holds the group");
            if span.hi > index {
                break;
            }
            span.live = false;
            let dead = spans.values().all(|s| !s.live);
            held.pop_front();
            if dead {
                bury(&mut self.records, &mut self.cuts, batch, seq);
            }
        }
        if held.is_empty() {
            self.held.remove(&group);
        }
    }

    /// Every stored entry of `group` up to `index` is to be gone from the disk (entries that
    /// carried a destroyed data key): the records holding any are written again without them
    /// in the batch that persists the log's compaction past them (at once when it is).
    /// Called in the batch that applies the destruction: what is deferred is recorded in it
    /// (`purges_key`), so a crash before the compaction cannot forget the purge.
    pub fn purge(&mut self, group: u32, index: u64) {
        let point = self.points.get(&group).copied().unwrap_or(0);
        if index > point {
            let d = self.deferred.entry(group).or_insert(0);
            if *d < index {
                *d = index;
                self.purges_moved = true;
            }
        }
        self.cut(group, index.min(point));
    }

    /// The purges owed, as recorded: each group and the index through which its entries go
    /// once its log is compacted past it. A writer opening compacts those logs at once.
    pub fn owed(&self) -> Vec<(u32, u64)> {
        self.deferred.iter().map(|(g, i)| (*g, *i)).collect()
    }

    /// The purges recorded before a restart (`purges_key`), owed again.
    pub(crate) fn restore_purges(&mut self, owed: &[(u32, u64)]) {
        for &(g, index) in owed {
            self.purge(g, index);
        }
        // Rewritten only if one was done already (its log compacted past it before the stop).
        self.purges_moved = self.owed() != owed;
    }

    /// `group`'s log restarts after `point` (a snapshot installed, or the replica dropped):
    /// every entry of it stored so far goes, in the batch of the next `stage`.
    pub fn reset(&mut self, group: u32, point: u64) {
        self.pending.remove(&group);
        self.cut(group, u64::MAX);
        self.points.insert(group, point);
        if self.deferred.get(&group).is_some_and(|d| *d <= point) {
            self.deferred.remove(&group);
            self.purges_moved = true;
        }
    }

    /// The group is gone from this node.
    pub fn forget(&mut self, group: u32) {
        self.reset(group, 0);
        self.points.remove(&group);
        if self.deferred.remove(&group).is_some() {
            self.purges_moved = true;
        }
    }

    /// Takes `group`'s stored entries up to `index` out of the records (rewritten or deleted
    /// at the next `stage`).
    fn cut(&mut self, group: u32, index: u64) {
        let mut emptied = Vec::new();
        for (seq, spans) in self.records.iter_mut() {
            let Some(span) = spans.get_mut(&group) else { continue };
            if span.lo > index {
                continue;
            }
            let keep = self.cuts.entry(*seq).or_default().entry(group).or_default();
            keep.after = keep.after.max(index);
            if span.hi <= index {
                spans.remove(&group);
                if spans.values().all(|s| !s.live) {
                    emptied.push(*seq);
                }
            } else {
                span.lo = index + 1;
            }
        }
        if let Some(held) = self.held.get_mut(&group) {
            let records = &self.records;
            held.retain(|seq| records.get(seq).and_then(|s| s.get(&group)).is_some_and(|s| s.live));
            if held.is_empty() {
                self.held.remove(&group);
            }
        }
        for seq in emptied {
            // Nothing of it is needed: its cut deletes it rather than writing it again.
            self.records.remove(&seq);
        }
    }

    /// Adds the round's record (when it appended anything) and the rewrites and deletions
    /// owed to `batch`. `read` gives a stored record's bytes (for a rewrite).
    pub fn stage(&mut self, batch: &mut sled::Batch, read: impl Fn(&[u8]) -> Result<Option<sled::IVec>, StoreError>) -> Result<(), StoreError> {
        for seq in self.dead.drain(..) {
            batch.remove(round_key(seq));
        }
        if std::mem::take(&mut self.purges_moved) {
            if self.deferred.is_empty() {
                batch.remove(purges_key());
            } else {
                batch.insert(purges_key(), encode_purges(&self.owed()));
            }
        }
        for (seq, cut) in std::mem::take(&mut self.cuts) {
            let key = round_key(seq);
            if !self.records.contains_key(&seq) {
                batch.remove(key);
                continue;
            }
            let Some(v) = read(&key)? else {
                return Err(corrupt(seq, "a record the log still uses is missing".into()));
            };
            let mut runs = decode(seq, &v)?;
            for (g, es) in runs.iter_mut() {
                if let Some(keep) = cut.get(g) {
                    es.retain(|e| e.index > keep.after && e.index < keep.before);
                }
            }
            runs.retain(|(_, es)| !es.is_empty());
            if runs.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, encode(&runs));
            }
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let runs: Vec<(u32, Vec<Entry>)> = std::mem::take(&mut self.pending).into_iter().filter(|(_, es)| !es.is_empty()).collect();
        let seq = self.next;
        self.next += 1;
        batch.insert(round_key(seq), encode(&runs));
        self.track(seq, runs.iter().map(|(g, es)| (*g, es[0].index, es[es.len() - 1].index)));
        Ok(())
    }

    /// Records tracked (for tests and the gauge of what the log keeps).
    pub fn records(&self) -> usize {
        self.records.len()
    }
}

/// A record none of whose entries the logs need any more: forgotten, and deleted in `batch`.
fn bury(records: &mut BTreeMap<u64, BTreeMap<u32, Span>>, cuts: &mut BTreeMap<u64, BTreeMap<u32, Keep>>, batch: &mut sled::Batch, seq: u64) {
    records.remove(&seq);
    cuts.remove(&seq);
    batch.remove(round_key(seq));
}

/// The key of the purges owed: under the raft prefix, at the group number of the states record.
pub fn purges_key() -> Vec<u8> {
    keys::raft_key(STATES_GROUP, RAFT_PURGES)
}

/// The purges record: `version u8 (1)`, then per group ascending `group u32 BE ‖ index u64 BE`,
/// then the CRC-32 of everything before it (u32 BE).
pub fn encode_purges(owed: &[(u32, u64)]) -> Vec<u8> {
    let mut v = vec![VERSION];
    for (g, index) in owed {
        v.extend_from_slice(&g.to_be_bytes());
        v.extend_from_slice(&index.to_be_bytes());
    }
    let sum = crc32fast::hash(&v);
    v.extend_from_slice(&sum.to_be_bytes());
    v
}

/// Reads the purges record; one cut short, failing its checksum or naming a group twice is
/// corrupt.
pub fn decode_purges(v: &[u8]) -> Result<Vec<(u32, u64)>, StoreError> {
    let bad = |reason: &str| StoreError::Corrupt {
        location: "raft purges record".into(),
        reason: reason.to_string(),
    };
    if v.len() < 5 || !(v.len() - 5).is_multiple_of(12) {
        return Err(bad(&format!("{} bytes is not a version, (group, index) pairs and a checksum", v.len())));
    }
    let (body, sum) = v.split_at(v.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes(sum.try_into().expect("4 bytes")) {
        return Err(bad("its checksum does not match its bytes"));
    }
    if body[0] != VERSION {
        return Err(bad(&format!("unknown version {}", body[0])));
    }
    let mut out: Vec<(u32, u64)> = Vec::new();
    for pair in body[1..].chunks_exact(12) {
        let g = u32::from_be_bytes(pair[..4].try_into().expect("4 bytes"));
        let index = u64::from_be_bytes(pair[4..].try_into().expect("8 bytes"));
        if g == STATES_GROUP || out.last().is_some_and(|(l, _)| *l >= g) {
            return Err(bad(&format!("group {g} out of order")));
        }
        out.push((g, index));
    }
    Ok(out)
}

fn corrupt(seq: u64, reason: String) -> StoreError {
    StoreError::Corrupt {
        location: format!("raft round record {seq}"),
        reason,
    }
}

/// The record's bytes for `runs` (groups ascending, each run non-empty and contiguous).
pub fn encode(runs: &[Run]) -> Vec<u8> {
    let mut v = vec![VERSION];
    for (g, es) in runs {
        debug_assert!(!es.is_empty() && es.windows(2).all(|w| w[1].index == w[0].index + 1));
        v.extend_from_slice(&g.to_be_bytes());
        v.extend_from_slice(&u32::try_from(es.len()).expect("a run fits u32").to_be_bytes());
        for e in es {
            let bytes = protobuf::Message::write_to_bytes(e).expect("raft entries encode");
            v.extend_from_slice(&u32::try_from(bytes.len()).expect("an entry fits u32").to_be_bytes());
            v.extend_from_slice(&bytes);
        }
    }
    let sum = crc32fast::hash(&v);
    v.extend_from_slice(&sum.to_be_bytes());
    v
}

/// Reads a record: its runs, groups ascending. A record that is cut short, fails its checksum,
/// names a group twice or out of order, or holds a run that is not contiguous is corrupt.
pub fn decode(seq: u64, v: &[u8]) -> Result<Vec<Run>, StoreError> {
    let bad = |reason: &str| corrupt(seq, reason.to_string());
    if v.len() < 5 {
        return Err(bad("shorter than a version and a checksum"));
    }
    let (body, sum) = v.split_at(v.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes(sum.try_into().expect("4 bytes")) {
        return Err(bad("its checksum does not match its bytes"));
    }
    if body[0] != VERSION {
        return Err(bad(&format!("unknown version {}", body[0])));
    }
    let mut cur = Cursor(&body[1..]);
    let mut runs: Vec<(u32, Vec<Entry>)> = Vec::new();
    while !cur.0.is_empty() {
        let g = cur.u32().ok_or_else(|| bad("cut short"))?;
        let count = cur.u32().ok_or_else(|| bad("cut short"))? as usize;
        if g == STATES_GROUP || runs.last().is_some_and(|(l, _)| *l >= g) {
            return Err(bad(&format!("group {g} out of order")));
        }
        if count == 0 || count > body.len() {
            return Err(bad(&format!("a run of {count} entries")));
        }
        let mut es: Vec<Entry> = Vec::with_capacity(count);
        for _ in 0..count {
            let len = cur.u32().ok_or_else(|| bad("cut short"))? as usize;
            let bytes = cur.take(len).ok_or_else(|| bad("cut short"))?;
            let e: Entry = protobuf::Message::parse_from_bytes(bytes).map_err(|e| bad(&format!("group {g}: {e}")))?;
            if es.last().is_some_and(|l| e.index != l.index + 1) {
                return Err(bad(&format!("group {g}: entry {} does not follow {}", e.index, es[es.len() - 1].index)));
            }
            es.push(e);
        }
        runs.push((g, es));
    }
    Ok(runs)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(g: u32, from: u64, n: u64) -> Vec<Entry> {
        (from..from + n)
            .map(|i| Entry {
                index: i,
                term: 1,
                data: format!("{g}/{i}").into_bytes().into(),
                ..Default::default()
            })
            .collect()
    }

    fn writes(batch: &sled::Batch) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        // sled's batch does not show its writes; apply it to a throwaway tree.
        let db = sled::Config::new().temporary(true).open().unwrap();
        for k in 0..64u64 {
            db.insert(round_key(k), b"x".to_vec()).unwrap();
        }
        db.apply_batch(batch.clone()).unwrap();
        (0..64u64)
            .map(|k| (round_key(k), db.get(round_key(k)).unwrap().filter(|v| v.as_ref() != b"x").map(|v| v.to_vec())))
            .filter(|(k, v)| v.is_some() || db.get(k).unwrap().is_none())
            .collect()
    }

    #[test]
    fn a_record_round_trips_and_a_damaged_one_is_corrupt() {
        let runs = vec![(0u32, entries(0, 5, 2)), (7, entries(7, 1, 1))];
        let bytes = encode(&runs);
        assert_eq!(decode(3, &bytes).unwrap(), runs);
        for cut in [0, 4, 5, bytes.len() - 1] {
            assert!(matches!(decode(3, &bytes[..cut]), Err(StoreError::Corrupt { .. })), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[12] ^= 0x10;
        let e = decode(3, &flipped).unwrap_err().to_string();
        assert!(e.contains("round record 3") && e.contains("checksum"), "{e}");
        // Well-formed bytes that break the layout: groups out of order, a gap in a run.
        for bad in [
            vec![(7u32, entries(7, 1, 1)), (0, entries(0, 5, 2))],
            vec![(0u32, vec![entries(0, 5, 1)[0].clone(), entries(0, 7, 1)[0].clone()])],
        ] {
            let mut v = vec![VERSION];
            for (g, es) in &bad {
                v.extend_from_slice(&g.to_be_bytes());
                v.extend_from_slice(&(es.len() as u32).to_be_bytes());
                for e in es {
                    let b = protobuf::Message::write_to_bytes(e).unwrap();
                    v.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    v.extend_from_slice(&b);
                }
            }
            let sum = crc32fast::hash(&v);
            v.extend_from_slice(&sum.to_be_bytes());
            assert!(decode(1, &v).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_record_goes_once_every_group_in_it_is_compacted_and_a_purge_rewrites_it() {
        let mut r = RaftRounds::default();
        let none = |_: &[u8]| -> Result<Option<sled::IVec>, StoreError> { Ok(None) };
        // Round 0: groups 1 and 2; round 1: group 1 only.
        r.append(&mut sled::Batch::default(), 1, &entries(1, 1, 2));
        r.append(&mut sled::Batch::default(), 2, &entries(2, 1, 1));
        let mut b = sled::Batch::default();
        r.stage(&mut b, none).unwrap();
        let first = encode(&[(1, entries(1, 1, 2)), (2, entries(2, 1, 1))]);
        assert_eq!(writes(&b)[&round_key(0)], Some(first.clone()));
        r.append(&mut sled::Batch::default(), 1, &entries(1, 3, 1));
        r.stage(&mut sled::Batch::default(), none).unwrap();
        assert_eq!(r.records(), 2);
        // A purge past the compaction point waits for it: nothing is cut before.
        r.purge(1, 3);
        let mut b = sled::Batch::default();
        r.stage(&mut b, none).unwrap();
        assert!(writes(&b).is_empty());
        // Group 1 compacted through 3: record 0 still holds group 2's live entry, record 1 goes.
        // The entries carried a destroyed key: in the batch of the compaction, record 0 is
        // written again with group 2's entry only.
        let mut b = sled::Batch::default();
        r.release(&mut b, 1, 3);
        let stored = first.clone();
        r.stage(&mut b, move |_| Ok(Some(stored.clone().into()))).unwrap();
        assert_eq!(writes(&b).get(&round_key(1)), Some(&None));
        assert_eq!(writes(&b)[&round_key(0)], Some(encode(&[(2, entries(2, 1, 1))])));
        assert_eq!(r.records(), 1);
        // Without a purge, a compaction deletes only what is wholly compacted: group 4's
        // entry keeps record 2, which is not written again.
        r.append(&mut sled::Batch::default(), 3, &entries(3, 1, 1));
        r.append(&mut sled::Batch::default(), 4, &entries(4, 1, 1));
        r.stage(&mut sled::Batch::default(), none).unwrap();
        let mut b = sled::Batch::default();
        r.release(&mut b, 3, 1);
        r.stage(&mut b, none).unwrap();
        assert!(writes(&b).is_empty());
        assert_eq!(r.records(), 2);
        r.release(&mut b, 4, 1);
        assert_eq!(writes(&b).get(&round_key(2)), Some(&None));
        // Group 2's log reset (a snapshot installed): nothing live is left; the record goes.
        r.reset(2, 9);
        let mut b = sled::Batch::default();
        r.stage(&mut b, none).unwrap();
        assert_eq!(writes(&b).get(&round_key(0)), Some(&None));
        assert_eq!(r.records(), 0);
    }
}
