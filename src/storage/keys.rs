//! Key layout of the `entities` tree (DESIGN.md §3b):
//! `shard u16 BE ‖ kind u8 ‖ id length u8 ‖ id ‖ record type u8 ‖ [seq u64 BE]`.
//! Everything of one shard is one ordered range; everything of one entity is a sub-range.

use crate::domain::ids::{EntityId, EntityKind};

/// Node-wide records live under the reserved shard number 0xFFFF (real shards are < 1024), in
/// the same tree as entity state so that one group commit writes both in one atomic batch.
pub const NODE_PREFIX: [u8; 2] = [0xff, 0xff];
/// `NODE_PREFIX ‖ 0x01 ‖ group u32 BE ‖ seq u64 BE` → audit record bytes ‖ chain head after it.
/// Each shard group has its own chain, sealed in log order at apply time, so every replica of
/// a group holds the same chain.
pub const AUDIT_PREFIX: [u8; 3] = [0xff, 0xff, 0x01];
/// `NODE_PREFIX ‖ 0x02` → (entries, head) of every group's audit chain on this node, one record
/// (`AUDIT_HEADS_KEY`); `NODE_PREFIX ‖ 0x02 ‖ group u32 BE` → one group's, in folders written
/// before it.
pub const AUDIT_HEAD_PREFIX: [u8; 3] = [0xff, 0xff, 0x02];
/// Every group's audit chain head in one record, written in the batch of the round that moves
/// any of them (one key per round instead of one per group touched).
pub const AUDIT_HEADS_KEY: [u8; 3] = AUDIT_HEAD_PREFIX;
/// `NODE_PREFIX ‖ 0x09` → the storage layout version (u32 BE) the folder was written in.
pub const LAYOUT_KEY: [u8; 3] = [0xff, 0xff, 0x09];
/// `NODE_PREFIX ‖ 0x0a` → the number of shard groups (u32 BE), fixed when the cluster is created.
pub const GROUPS_KEY: [u8; 3] = [0xff, 0xff, 0x0a];
/// Raft logs of the shard groups this node holds a replica of:
/// `RAFT_PREFIX ‖ group u32 BE ‖ tag u8 ‖ [index u64 BE]`. Node-local (every replica keeps its
/// own), never part of a backup.
pub const RAFT_PREFIX: [u8; 2] = [0xff, 0xfe];
pub const RAFT_HARD_STATE: u8 = 0x01;
pub const RAFT_CONF_STATE: u8 = 0x02;
/// (index, term) of the last entry folded into the state.
pub const RAFT_SNAPSHOT_POINT: u8 = 0x03;
/// The last index the state machine applied (written with the state it applied).
pub const RAFT_APPLIED: u8 = 0x04;
/// Every group's hard state and applied index in one record (`raft_states`), under the group
/// number `u32::MAX`; the two keys above are those of folders written before it.
pub const RAFT_STATES: u8 = 0x05;
/// A round's raft log entries, every group's, in one record (`raft_rounds`), under the group
/// number `u32::MAX` and the record's number; `RAFT_ENTRY` keys are those of folders written
/// before it.
pub const RAFT_ROUND: u8 = 0x06;
/// The purges owed (`raft_rounds`): per group, the index through which its stored entries
/// must be gone once its log is compacted past it (entries that carried a destroyed data key),
/// under the group number `u32::MAX`. Written in the batch that applies the destruction, so
/// a crash before the purge cannot forget it.
pub const RAFT_PURGES: u8 = 0x07;
pub const RAFT_ENTRY: u8 = 0x10;

pub fn raft_key(group: u32, tag: u8) -> Vec<u8> {
    let mut k = RAFT_PREFIX.to_vec();
    k.extend_from_slice(&group.to_be_bytes());
    k.push(tag);
    k
}

pub fn raft_entry_key(group: u32, index: u64) -> Vec<u8> {
    let mut k = raft_key(group, RAFT_ENTRY);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// True for keys that are node-local bookkeeping (audit chains, raft logs, layout), not shard state.
pub fn is_reserved(key: &[u8]) -> bool {
    shard_of_key(key).is_none()
}

/// `NODE_PREFIX ‖ 0x0b` → the cluster this node formed or joined (`cluster::membership`).
pub const MEMBERSHIP_KEY: [u8; 3] = [0xff, 0xff, 0x0b];
/// `NODE_PREFIX ‖ 0x0c` → the metadata group's state (`cluster::meta::MetaState`), on the
/// nodes that hold a replica of it.
pub const META_STATE_KEY: [u8; 3] = [0xff, 0xff, 0x0c];
/// `NODE_PREFIX ‖ 0x0e` → digests of the keys the folder's data is written under
/// (`storage::key_check`): a start with another master or email-index key is refused.
pub const KEY_CHECK_KEY: [u8; 3] = [0xff, 0xff, 0x0e];
/// `NODE_PREFIX ‖ 0x0d ‖ group u32 BE` → (term u64 BE, vote u64 BE) of this node's last dropped
/// replica of the group: a replica created again starts from them (it never votes twice in a
/// term).
pub const RAFT_TOMBSTONE_PREFIX: [u8; 3] = [0xff, 0xff, 0x0d];
/// 3: shards by id alone, an audit chain per shard group, raft logs. 4: a metadata group.
/// 5: the metadata group placed like the shard groups, founders recorded (elastic membership).
pub const LAYOUT_VERSION: u32 = 5;
/// Records a shard owns beside its entities — schedules, queues, ledgers, job progress:
/// `shard u16 BE ‖ 0x00 ‖ record type u8 ‖ id`. Kind byte 0 is no entity kind, so a shard's
/// records sort before its entities, are written by the same group commit, and move with the
/// shard (its range is everything of the shard).
pub const SHARD_RECORD: u8 = 0x00;

/// What a shard record holds. The byte is part of the key: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardRecord {
    /// A scheduled GDPR erasure (id: user id) → `PendingErasure`.
    Erasure = 1,
    /// Advice held for human review (id: advice id) → the user id.
    Review = 2,
    /// The sealed regulatory identity of an erased person (id: user id) → `RegulatoryRecord`.
    Regulatory = 3,
    /// An instrument listed at run time (id: symbol) → `CatalogEntry`.
    Catalog = 4,
    /// The simulated broker's confirmation of an order (id: order id) → JSON confirmation.
    /// Written once: a later put of the same key is dropped where write sets are applied, so
    /// the first execution of an order stands (`is_write_once`).
    Confirmation = 5,
    /// A reconciliation discrepancy already alerted (id: its key) → nothing.
    Alerted = 6,
    /// Progress of a periodic job (id: the job's key) → its state.
    Job = 7,
    /// A personal-data key wrapped by the master key (id: `usr_…` or `retention:usr_…`).
    DataKey = 8,
    /// A person whose erasure was carried out (id: user id) → `ErasedMarker`. Kept for good
    /// (a user id and the email index's keyed hash, no personal data): a replica brought up to
    /// date by a snapshot taken after the erasure lists the person from it.
    Erased = 9,
}

/// The fixed shard whose group's leader drives the cluster's one price feed, and whose chain
/// holds node-wide audit records with no subject of their own.
pub const JOBS_SHARD: u16 = 0;

pub fn shard_record_prefix(shard: u16, record: ShardRecord) -> Vec<u8> {
    assert!(shard < crate::domain::ids::SHARD_COUNT, "a shard record names a real shard");
    let mut k = shard.to_be_bytes().to_vec();
    k.push(SHARD_RECORD);
    k.push(record as u8);
    k
}

pub fn shard_record_key(shard: u16, record: ShardRecord, id: &str) -> Vec<u8> {
    assert!(!id.is_empty() && id.len() <= 256, "a shard record id is 1–256 bytes");
    let mut k = shard_record_prefix(shard, record);
    k.extend_from_slice(id.as_bytes());
    k
}

/// True for a key of a shard record (not an entity's).
pub fn is_shard_record(key: &[u8]) -> bool {
    key.len() > 4 && key[0..2] != NODE_PREFIX && key[2] == SHARD_RECORD
}

/// True for the key of a record that is written once: a put over one that exists (or that an
/// earlier set of the same cycle put) is dropped at apply, on every replica alike (they apply
/// the same log in the same order). The broker's ledger keeps the first confirmation of an
/// order this way without reading it first: a read on the request path would wait behind the
/// writer's batch (sled's reads and `apply_batch` share one lock).
pub fn is_write_once(key: &[u8]) -> bool {
    is_shard_record(key) && key[3] == ShardRecord::Confirmation as u8
}

/// True for the key of a wrapped personal-data key (its deletion is a crypto-shredding).
pub fn is_data_key_record(key: &[u8]) -> bool {
    is_shard_record(key) && key[3] == ShardRecord::DataKey as u8
}

pub fn audit_prefix(group: u32) -> Vec<u8> {
    let mut k = AUDIT_PREFIX.to_vec();
    k.extend_from_slice(&group.to_be_bytes());
    k
}

pub fn audit_key(group: u32, seq: u64) -> Vec<u8> {
    let mut k = audit_prefix(group);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// (group, seq) of an audit key.
pub fn audit_seq(key: &[u8]) -> Option<(u32, u64)> {
    let rest = key.strip_prefix(&AUDIT_PREFIX[..])?;
    if rest.len() != 12 {
        return None;
    }
    Some((u32::from_be_bytes(rest[..4].try_into().ok()?), u64::from_be_bytes(rest[4..].try_into().ok()?)))
}

pub fn audit_head_key(group: u32) -> Vec<u8> {
    let mut k = AUDIT_HEAD_PREFIX.to_vec();
    k.extend_from_slice(&group.to_be_bytes());
    k
}

/// The shard a key of entity state or a shard record belongs to (None for node-wide keys).
pub fn shard_of_key(key: &[u8]) -> Option<u16> {
    let shard = u16::from_be_bytes([*key.first()?, *key.get(1)?]);
    (shard < crate::domain::ids::SHARD_COUNT).then_some(shard)
}

pub const RECORD_JOURNAL: u8 = 0x01;
pub const RECORD_SNAPSHOT: u8 = 0x02;
/// `… ‖ 0x03 ‖ request id` → what the entity answered that request (exactly once, §3b).
pub const RECORD_REQUEST: u8 = 0x03;

pub fn entity_prefix(id: &EntityId) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + id.id.len() + 9);
    k.extend_from_slice(&id.shard().to_be_bytes());
    k.push(id.kind.as_byte());
    k.push(u8::try_from(id.id.len()).expect("entity ids are at most 128 bytes"));
    k.extend_from_slice(id.id.as_bytes());
    k
}

pub fn journal_prefix(id: &EntityId) -> Vec<u8> {
    let mut k = entity_prefix(id);
    k.push(RECORD_JOURNAL);
    k
}

pub fn journal_key(id: &EntityId, seq: u64) -> Vec<u8> {
    let mut k = journal_prefix(id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn snapshot_key(id: &EntityId) -> Vec<u8> {
    let mut k = entity_prefix(id);
    k.push(RECORD_SNAPSHOT);
    k
}

pub fn request_prefix(id: &EntityId) -> Vec<u8> {
    let mut k = entity_prefix(id);
    k.push(RECORD_REQUEST);
    k
}

pub fn request_key(id: &EntityId, request_id: &str) -> Vec<u8> {
    let mut k = request_prefix(id);
    k.extend_from_slice(request_id.as_bytes());
    k
}

pub fn shard_range(shard: u16) -> (Vec<u8>, Vec<u8>) {
    let start = shard.to_be_bytes().to_vec();
    let end = match shard.checked_add(1) {
        Some(n) => n.to_be_bytes().to_vec(),
        None => vec![0xff, 0xff, 0xff],
    };
    (start, end)
}

/// Parses an entities-tree key back into (entity, record type, seq).
pub fn parse_key(key: &[u8]) -> Option<(EntityId, u8, Option<u64>)> {
    let shard = u16::from_be_bytes([*key.first()?, *key.get(1)?]);
    let kind = EntityKind::from_byte(*key.get(2)?)?;
    let len = *key.get(3)? as usize;
    let id = std::str::from_utf8(key.get(4..4 + len)?).ok()?.to_string();
    if id.is_empty() {
        return None;
    }
    let entity = EntityId { kind, id };
    if entity.shard() != shard {
        return None;
    }
    let record = *key.get(4 + len)?;
    let rest = &key[5 + len..];
    let seq = match (record, rest.len()) {
        (RECORD_JOURNAL, 8) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        (RECORD_SNAPSHOT, 0) => None,
        (RECORD_REQUEST, 1..) if std::str::from_utf8(rest).is_ok() => None,
        _ => return None,
    };
    Some((entity, record, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_shard_entity_seq_and_parse_back() {
        let a = EntityId::new(EntityKind::Portfolio, "usr_a");
        let k1 = journal_key(&a, 1);
        let k2 = journal_key(&a, 256);
        assert!(k1 < k2, "journal entries sort by sequence");
        assert!(k1.starts_with(&a.shard().to_be_bytes()));
        assert_eq!(parse_key(&k2), Some((a.clone(), RECORD_JOURNAL, Some(256))));
        assert_eq!(parse_key(&snapshot_key(&a)), Some((a.clone(), RECORD_SNAPSHOT, None)));
        let (lo, hi) = shard_range(a.shard());
        assert!(k1.as_slice() >= lo.as_slice() && k1.as_slice() < hi.as_slice());
        assert_eq!(parse_key(&k1[..k1.len() - 1]), None);
        let r = request_key(&a, "req_1");
        assert!(r.starts_with(&request_prefix(&a)) && r.starts_with(&entity_prefix(&a)));
        assert_eq!(parse_key(&r), Some((a.clone(), RECORD_REQUEST, None)));
        assert_eq!(parse_key(&request_prefix(&a)), None, "a request record names its request");
    }
}
