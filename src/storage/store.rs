//! The sled database of one node and the operations the actors need: load an entity (snapshot +
//! journal tail), write one group-commit cycle atomically, flush, and verify the audit chain.

use crate::domain::audit::AuditRecord;
use crate::domain::entity::{Applied, Entity, RequestLog};
use crate::domain::ids::EntityId;
use crate::domain::ids::{group_of, DEFAULT_GROUPS};
use crate::domain::time::Timestamp;
use crate::storage::audit_log::{self, ChainHead, VerifyReport};
use crate::storage::keys::ShardRecord;
use crate::storage::{codec, keys};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use super::erasure_list::{append_erasure_list, read_erasure_list};
pub use super::write_set::WriteSet;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the data folder {0} is in use by another process (is a node running on it?)")]
    Locked(PathBuf),
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("corrupt record at {location}: {reason}")]
    Corrupt { location: String, reason: String },
    #[error("storage failed earlier; writes are refused until the node restarts")]
    Failed,
    #[error("{0}")]
    Layout(String),
    /// The write could not be committed here now (no leader of its group on this node, or
    /// leadership moved before it was known to commit); retrying under the same request id
    /// is safe.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// A carried-out erasure, as its shard keeps it for good (`ShardRecord::Erased`): the email
/// index entry it freed (a keyed hash, not the email) and when. The erasure list outside the
/// data folder holds the same line; a replica that installs a snapshot lists it from here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedMarker {
    pub email_hash: String,
    pub erased_at: Timestamp,
}

/// A scheduled erasure: when, and the email index entry to free (a keyed hash, not the email).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingErasure {
    pub due_at: Timestamp,
    pub email_hash: String,
    /// Replayed from the erasure list after a restore: carried out whatever the account says.
    pub replay: bool,
}

/// What regulation requires to be kept about an erased person (identity for trade and
/// advice records), sealed under a retention key of its own — not the person's data key, which
/// erasure destroys — until `expires_at`, when the retention job destroys that key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegulatoryRecord {
    pub expires_at: Timestamp,
    /// The vault key id that sealed it (`retention:<user id>`).
    pub key_id: String,
    pub sealed: Vec<u8>,
}

/// An instrument listed at run time (`POST /v1/admin/instruments`) and how the simulated feed
/// moves it; the listing itself is the instrument entity's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub drift: f64,
    pub volatility: f64,
}

/// One entry of an entity's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry<Ev> {
    pub seq: u64,
    pub at: Timestamp,
    pub request_id: String,
    pub event: Ev,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot<S> {
    pub seq: u64,
    pub state: S,
}

/// An entity as recovered from disk.
#[derive(Clone, Debug)]
pub struct Loaded<E: Entity> {
    pub state: E,
    /// The requests it remembers having applied (exactly once across retries).
    pub requests: RequestLog<E::Reply, E::Rejection>,
    /// The sequence number of the last applied event (0 when none).
    pub seq: u64,
    /// Events applied since the snapshot (decides when the next snapshot is due).
    pub since_snapshot: u64,
    /// Encoded bytes of those events, and of the snapshot they follow.
    pub tail_bytes: u64,
    pub snapshot_bytes: u64,
}

/// What staging carries from one write set of a cycle to the next: each group's audit chain
/// head as the cycle leaves it, the write-once keys the cycle already put (or a snapshot it
/// installed holds), and the groups whose state a snapshot replaced in it (the tree, not yet
/// written, does not tell what they hold).
#[derive(Debug, Default)]
pub struct Cycle {
    pub chains: BTreeMap<u32, ChainHead>,
    pub(crate) written_once: std::collections::HashSet<Vec<u8>>,
    pub(crate) installed: std::collections::BTreeSet<u32>,
    /// A chain head moved: the record of every group's heads is staged with the cycle.
    pub heads_moved: bool,
}

impl Cycle {
    pub fn new(chains: BTreeMap<u32, ChainHead>) -> Cycle {
        Cycle { chains, ..Default::default() }
    }
}

/// One sled tree holds everything: entity state under shard-prefixed keys and the node's audit
/// chain under the reserved prefix `0xFFFF` (see `keys`), so one `apply_batch` makes a whole
/// group commit atomic across both — cheaper than a multi-tree transaction.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
    /// Shard groups of the cluster this folder belongs to (fixed at creation).
    groups: u32,
}

/// How long an open waits for a lock that a database this process just dropped may still hold:
/// sled's background threads let go of the lock file shortly after the last handle is dropped.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Opens sled's files, containing a panic: sled 0.34 panics on some damaged files (a blob
/// or a page of `db` that does not decode: "tried to serialize Uninitialized") where it
/// should return an error. That panic is a damaged folder, reported as such, not a crash; its
/// message is not printed (the error carries it).
fn open_sled(dir: &Path) -> Result<sled::Result<sled::Db>, String> {
    type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync + 'static>;
    static SWAPPING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SWAPPING.lock().unwrap_or_else(|p| p.into_inner());
    let previous: std::sync::Arc<Hook> = std::sync::Arc::new(std::panic::take_hook());
    let opener = std::thread::current().id();
    let others = previous.clone();
    // Panics of other threads meanwhile are reported as before.
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != opener {
            others(info)
        }
    }));
    let config = sled::Config::new().path(dir.join("db")).mode(sled::Mode::HighThroughput);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    // Ours goes (and the clone of the previous hook with it): the previous one is put back
    // as it was.
    drop(std::panic::take_hook());
    match std::sync::Arc::try_unwrap(previous) {
        Ok(hook) => std::panic::set_hook(hook),
        Err(shared) => std::panic::set_hook(Box::new(move |info| shared(info))),
    }
    opened.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// Opens the sled database of `dir`. A lock held by another process is [`StoreError::Locked`];
/// one held for a moment by this process's own just-dropped handle is waited out (bounded).
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = open_sled(dir).map_err(|why| StoreError::Corrupt {
            location: format!("the data folder {}", dir.join("db").display()),
            reason: format!(
                "its files do not read ({why}): restore the node from a backup, or, in a cluster, start it on an empty folder to rebuild from the others"
            ),
        })?;
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") => {
                if started.elapsed() >= LOCK_RELEASE_WAIT {
                    return Err(StoreError::Locked(dir.to_path_buf()));
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(StoreError::Io(format!("cannot open {}: {e}", dir.display()))),
        }
    }
}

impl Store {
    /// Opens a data folder; a new one is created with the default number of shard groups.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_groups(dir, None)
    }

    /// Opens a data folder; a new one is created with `groups` shard groups (default 32), an
    /// existing one must have been created with that many (when given).
    pub fn open_with_groups(dir: &Path, groups: Option<u32>) -> Result<Store, StoreError> {
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::Io(format!("{} is a file, not a folder (key `node.data_dir`)", dir.display())));
        }
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let db = open_db(dir)?;
        let mut store = Store {
            tree: db.open_tree("state")?,
            db,
            path: dir.to_path_buf(),
            groups: DEFAULT_GROUPS,
        };
        store.check_layout()?;
        store.groups = store.check_groups(groups)?;
        crate::storage::durable_mark::check(dir, store.written_seq()?)?;
        Ok(store)
    }

    /// The folder's number of shard groups: recorded at creation, never changed.
    fn check_groups(&self, wanted: Option<u32>) -> Result<u32, StoreError> {
        if let Some(g) = wanted {
            if g == 0 || g > u32::from(crate::domain::ids::SHARD_COUNT) {
                return Err(StoreError::Layout(format!(
                    "[cluster] groups must be 1 to {}, not {g}",
                    crate::domain::ids::SHARD_COUNT
                )));
            }
        }
        match self.tree.get(keys::GROUPS_KEY)? {
            Some(v) => {
                let stored = u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    location: "meta groups".into(),
                    reason: "not a u32".into(),
                })?);
                match wanted {
                    Some(g) if g != stored => Err(StoreError::Layout(format!(
                        "the data folder {} belongs to a cluster of {stored} shard groups; [cluster] groups = {g} cannot change after the cluster is created",
                        self.path.display()
                    ))),
                    _ => Ok(stored),
                }
            }
            None => {
                let g = wanted.unwrap_or(DEFAULT_GROUPS);
                self.tree.insert(keys::GROUPS_KEY, &g.to_be_bytes())?;
                self.flush()?;
                Ok(g)
            }
        }
    }

    /// The number of shard groups.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// The group a write set belongs to.
    pub fn group_of_set(&self, set: &WriteSet) -> u32 {
        if set.meta.is_empty() {
            group_of(set.shard(), self.groups)
        } else {
            self.meta_group()
        }
    }

    /// The raft group id of the metadata group: the one after the shard groups.
    pub fn meta_group(&self) -> u32 {
        self.groups
    }

    /// The metadata group's state as this node's replica applied it (None: no replica here).
    pub fn meta_state(&self) -> Result<Option<crate::cluster::meta::MetaState>, StoreError> {
        match self.tree.get(keys::META_STATE_KEY)? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some).map_err(|e| StoreError::Corrupt {
                location: "the metadata group's state".into(),
                reason: e.to_string(),
            }),
        }
    }

    /// A data folder is of this layout (every record under its shard, one tree), or new. One of
    /// an earlier layout would load with its schedules, ledgers and data keys out of sight, so
    /// it is refused, naming what to do.
    fn check_layout(&self) -> Result<(), StoreError> {
        let current = keys::LAYOUT_VERSION.to_be_bytes();
        match self.tree.get(keys::LAYOUT_KEY)? {
            Some(v) if v.as_ref() == current => Ok(()),
            Some(v) => Err(StoreError::Layout(format!(
                "the data folder {} has storage layout {}, this version reads layout {}",
                self.path.display(),
                hex::encode(&v),
                keys::LAYOUT_VERSION
            ))),
            None if self.tree.is_empty() && self.tree_names().is_empty() => {
                self.tree.insert(keys::LAYOUT_KEY, &current)?;
                self.flush()?;
                Ok(())
            }
            None => Err(StoreError::Layout(format!(
                "the data folder {} was written by an earlier version (before shard records); \
                 start this version on an empty folder (see the README)",
                self.path.display()
            ))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tree itself (tests tamper with it; tools scan it).
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Recovers an entity: the latest snapshot, then every journal entry after it, in order.
    pub fn load<E: Entity>(&self, id: &EntityId) -> Result<Loaded<E>, StoreError> {
        let corrupt = |location: String, reason: String| StoreError::Corrupt { location, reason };
        let (mut state, mut seq, snapshot_bytes) = match self.tree.get(keys::snapshot_key(id))? {
            Some(bytes) => {
                let snap: Snapshot<E> = codec::decode(&bytes).map_err(|e| corrupt(format!("{id} snapshot"), e.to_string()))?;
                (snap.state, snap.seq, bytes.len() as u64)
            }
            None => (E::empty(&id.id), 0, 0),
        };
        let mut since_snapshot = 0;
        let mut tail_bytes = 0;
        let start = keys::journal_key(id, seq + 1);
        let prefix = keys::journal_prefix(id);
        for item in self.tree.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let entry: JournalEntry<E::Event> = codec::decode(&v).map_err(|e| corrupt(format!("{id} journal"), e.to_string()))?;
            if entry.seq != seq + 1 || k.as_ref() != keys::journal_key(id, entry.seq).as_slice() {
                return Err(corrupt(
                    format!("{id} journal entry {}", seq + 1),
                    format!("found entry {} instead (gap or misplaced record)", entry.seq),
                ));
            }
            state.apply(&entry.event);
            seq = entry.seq;
            since_snapshot += 1;
            tail_bytes += v.len() as u64;
        }
        state.check_invariants();
        let mut records = Vec::new();
        let prefix = keys::request_prefix(id);
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let request_id = std::str::from_utf8(&k[prefix.len()..]).map_err(|e| corrupt(format!("{id} request record"), e.to_string()))?;
            let applied: Applied<E::Reply, E::Rejection> = codec::decode(&v).map_err(|e| corrupt(format!("{id} request {request_id}"), e.to_string()))?;
            records.push((request_id.to_string(), applied));
        }
        let requests = RequestLog::restore(records);
        Ok(Loaded {
            requests,
            state,
            seq,
            since_snapshot,
            tail_bytes,
            snapshot_bytes,
        })
    }

    /// Reads one entity's journal up to `upto` (inclusive), oldest first.
    pub fn journal<E: Entity>(&self, id: &EntityId, upto: u64) -> Result<Vec<JournalEntry<E::Event>>, StoreError> {
        self.tree
            .range(keys::journal_key(id, 0)..=keys::journal_key(id, upto))
            .map(|item| {
                let (_, v) = item?;
                codec::decode(&v).map_err(|e| StoreError::Corrupt {
                    location: format!("{id} journal"),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Adds one write set to `batch`, sealing its audit records onto its group's chain (in
    /// order) and redacting what it lists. Every replica of a group applies the same sets in
    /// the same order, so every replica computes the same chain.
    pub fn stage(&self, batch: &mut sled::Batch, set: &mut WriteSet, cycle: &mut Cycle) -> Result<(), StoreError> {
        let group = self.group_of_set(set);
        // A set in the log that no leader should have proposed (a bug, or a peer's bad set):
        // refused before anything of it is staged, so the batch is never applied.
        if let Some(why) = set.misplaced(self.groups) {
            return Err(StoreError::Corrupt {
                location: format!("a write set of shard group {group}"),
                reason: why.to_string(),
            });
        }
        for (k, v) in &set.puts {
            if keys::is_write_once(k) {
                // The first put stands: one earlier in this cycle, or one already applied.
                let applied = !cycle.installed.contains(&group) && self.tree.get(k)?.is_some();
                if applied || cycle.written_once.contains(k) {
                    continue;
                }
                cycle.written_once.insert(k.clone());
            }
            batch.insert(k.as_slice(), v.as_slice());
        }
        let chains = &mut cycle.chains;
        for k in &set.deletes {
            batch.remove(k.as_slice());
        }
        if set.audit.is_empty() && set.redact.is_empty() {
            return Ok(());
        }
        let chain = match chains.get(&group) {
            Some(c) => c,
            None => {
                let c = self.chain_head(group)?.unwrap_or_default();
                chains.entry(group).or_insert(c)
            }
        };
        let mut next = *chain;
        for record in set.audit.iter_mut() {
            record.seq = next.entries;
            record.group = group;
            let value = next.append(record);
            batch.insert(keys::audit_key(group, record.seq), value);
        }
        for &seq in &set.redact {
            if seq >= next.entries {
                continue;
            }
            if let Some(v) = self.tree.get(keys::audit_key(group, seq))? {
                if let Some(redacted) = audit_log::redacted_value(&v) {
                    batch.insert(keys::audit_key(group, seq), redacted);
                }
            }
        }
        chains.insert(group, next);
        cycle.heads_moved = true;
        Ok(())
    }

    /// Writes one group-commit cycle in a single atomic batch: all of it or none of it survives
    /// a crash. Audit records get their sequence numbers and chain hashes here, in order.
    pub fn write_cycle(&self, sets: &mut [WriteSet], chains: &mut BTreeMap<u32, ChainHead>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        self.migrate_audit_heads()?;
        let mut next = Cycle::new(chains.clone());
        for set in sets.iter_mut() {
            self.stage(&mut batch, set, &mut next)?;
        }
        if next.heads_moved {
            self.stage_heads(&mut batch, &next.chains);
        }
        self.tree.apply_batch(batch)?;
        *chains = next.chains;
        Ok(())
    }

    /// One shard record, decoded; a corrupt one is an error naming it.
    pub fn record<T: DeserializeOwned>(&self, shard: u16, record: ShardRecord, id: &str) -> Result<Option<T>, StoreError> {
        match self.tree.get(keys::shard_record_key(shard, record, id))? {
            None => Ok(None),
            Some(v) => codec::decode(&v).map(Some).map_err(|e| StoreError::Corrupt {
                location: format!("{record:?} record {id} of shard {shard}"),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes a set outside the journal, for offline tools only (the node stopped): no audit
    /// records, one atomic batch, flushed.
    pub fn apply_offline(&self, writes: &WriteSet) -> Result<(), StoreError> {
        assert!(writes.audit.is_empty(), "audit records are sealed by the journal only");
        let mut batch = sled::Batch::default();
        for (k, v) in &writes.puts {
            batch.insert(k.as_slice(), v.as_slice());
        }
        for k in &writes.deletes {
            batch.remove(k.as_slice());
        }
        self.tree.apply_batch(batch)?;
        self.flush()?;
        Ok(())
    }

    /// The trees that hold anything, by name (besides sled's own default tree).
    pub fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .filter(|n| n != "__sled__default")
            .filter(|n| self.db.open_tree(n).is_ok_and(|t| !t.is_empty()))
            .collect()
    }

    /// Another tree of the same database (e.g. the vault's wrapped data keys).
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    /// Verifies every group's audit chain against its recorded head. The report names the
    /// first group (and entry) that fails.
    pub fn verify_audit(&self) -> VerifyReport {
        let heads = match self.chain_heads() {
            Ok(h) => h,
            Err(e) => return VerifyReport::failed(0, e.to_string()),
        };
        let mut groups: std::collections::BTreeSet<u32> = heads.keys().copied().collect();
        // Entries without a head (a deleted head) must be found too.
        let mut key = keys::AUDIT_PREFIX.to_vec();
        while let Ok(Some((k, _))) = self.tree.get_gt(&key) {
            let Some((g, _)) = keys::audit_seq(&k) else { break };
            groups.insert(g);
            key = keys::audit_prefix(g.saturating_add(1));
            if g == u32::MAX {
                break;
            }
        }
        let mut reports = Vec::new();
        for g in groups {
            let entries = self.tree.scan_prefix(keys::audit_prefix(g)).map(|item| {
                let (k, v) = item.map_err(|e| e.to_string())?;
                let (_, seq) = keys::audit_seq(&k).ok_or_else(|| format!("malformed key {}", hex::encode(&k)))?;
                Ok((seq, v.to_vec()))
            });
            let report = audit_log::verify(entries, heads.get(&g).copied());
            // A chain with nothing in it and nothing recorded past its start (the metadata
            // group's, say, whose head a joined node keeps from a snapshot) is left out: nodes
            // holding the same records then show the same overall head.
            if report.ok && report.entries == 0 {
                continue;
            }
            reports.push((g, report));
        }
        VerifyReport::combine(reports)
    }

    /// Reads audit records, group by group in chain order (exports and tests); redacted entries
    /// are left out.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.tree.scan_prefix(keys::AUDIT_PREFIX).filter_map(|i| decode_audit(i).transpose()).collect()
    }

    /// Audit records newest first (by time, across groups) that `keep` selects, at most `limit`
    /// of them. A corrupt record is an error, never skipped.
    pub fn audit_records_rev(&self, limit: usize, keep: impl Fn(&AuditRecord) -> bool) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        for g in self.chain_heads()?.into_keys() {
            let mut taken = 0;
            for item in self.tree.scan_prefix(keys::audit_prefix(g)).rev() {
                let Some(r) = decode_audit(item)? else { continue };
                if keep(&r) {
                    out.push(r);
                    taken += 1;
                    if taken >= limit {
                        break;
                    }
                }
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse((r.at, r.group, r.seq)));
        out.truncate(limit);
        Ok(out)
    }
}

/// A stored audit entry: its record, or `None` when retention redacted it.
pub(super) fn decode_audit(item: Result<(sled::IVec, sled::IVec), sled::Error>) -> Result<Option<AuditRecord>, StoreError> {
    let (k, v) = item?;
    let (bytes, _) = audit_log::split_value(&v).ok_or_else(|| StoreError::Corrupt {
        location: format!("audit {}", hex::encode(&k)),
        reason: "short value".into(),
    })?;
    if audit_log::is_redacted(bytes) {
        return Ok(None);
    }
    codec::decode(bytes).map(Some).map_err(|e| StoreError::Corrupt {
        location: format!("audit {}", hex::encode(&k)),
        reason: e.to_string(),
    })
}
