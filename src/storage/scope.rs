//! Which shard groups a reader covers, and the store's readers that enumerate: entity ids,
//! shard records, audit entries due for redaction.
//!
//! A job runs for the groups this node leads (`Groups::Only`), so that every group's job runs
//! at exactly one node — its leader's — and moves with leadership; an operator's on-demand run
//! and the offline tools read every group held here (`Groups::All`).

use crate::domain::audit::AuditRecord;
use crate::domain::ids::{group_of, EntityKind, SHARD_COUNT};
use crate::domain::time::Timestamp;
use crate::storage::keys::{self, ShardRecord};
use crate::storage::store::{decode_audit, Store, StoreError};
use crate::storage::{audit_log, codec};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;

/// The shard groups a reader or a job covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Groups {
    /// Every group this node holds a replica of.
    All,
    /// These groups only (e.g. the ones this node leads now).
    Only(BTreeSet<u32>),
}

impl Groups {
    pub fn only(groups: impl IntoIterator<Item = u32>) -> Groups {
        Groups::Only(groups.into_iter().collect())
    }

    /// True when `group` is covered.
    pub fn covers(&self, group: u32) -> bool {
        match self {
            Groups::All => true,
            Groups::Only(set) => set.contains(&group),
        }
    }

    /// True when `shard` (of a cluster of `groups` groups) is covered.
    pub fn covers_shard(&self, shard: u16, groups: u32) -> bool {
        self.covers(group_of(shard, groups))
    }

    /// The covered shards, in order.
    pub fn shards(&self, groups: u32) -> impl Iterator<Item = u16> + '_ {
        (0..SHARD_COUNT).filter(move |s| self.covers_shard(*s, groups))
    }

    /// True when nothing is covered.
    pub fn is_empty(&self) -> bool {
        matches!(self, Groups::Only(set) if set.is_empty())
    }
}

impl Store {
    /// Every record of a type, across the shards this node holds, as (id, raw value) in shard
    /// then id order.
    pub fn raw_records(&self, record: ShardRecord) -> Result<Vec<(String, sled::IVec)>, StoreError> {
        self.raw_records_in(record, &Groups::All)
    }

    /// Every record of a type in the covered groups' shards, as (id, raw value) in shard then id
    /// order. A key whose id is not UTF-8 is an error naming it.
    pub fn raw_records_in(&self, record: ShardRecord, scope: &Groups) -> Result<Vec<(String, sled::IVec)>, StoreError> {
        let mut out = Vec::new();
        for shard in scope.shards(self.groups()) {
            let prefix = keys::shard_record_prefix(shard, record);
            for item in self.tree().scan_prefix(&prefix) {
                let (k, v) = item?;
                let id = std::str::from_utf8(&k[prefix.len()..]).map_err(|_| StoreError::Corrupt {
                    location: format!("{record:?} record key {}", hex::encode(&k)),
                    reason: "id is not UTF-8".into(),
                })?;
                out.push((id.to_string(), v));
            }
        }
        Ok(out)
    }

    /// Every record of a type, decoded; a corrupt one is an error naming it, never skipped.
    pub fn records<T: DeserializeOwned>(&self, record: ShardRecord) -> Result<Vec<(String, T)>, StoreError> {
        self.records_in(record, &Groups::All)
    }

    /// Every record of a type in the covered groups, decoded; a corrupt one is an error naming
    /// it, never skipped.
    pub fn records_in<T: DeserializeOwned>(&self, record: ShardRecord, scope: &Groups) -> Result<Vec<(String, T)>, StoreError> {
        self.raw_records_in(record, scope)?
            .into_iter()
            .map(|(id, v)| {
                let value = codec::decode(&v).map_err(|e| StoreError::Corrupt {
                    location: format!("{record:?} record {id}"),
                    reason: e.to_string(),
                })?;
                Ok((id, value))
            })
            .collect()
    }

    /// Ids of every stored entity of a kind (from their snapshot or first journal key).
    pub fn entity_ids(&self, kind: EntityKind) -> Result<Vec<String>, StoreError> {
        self.entity_ids_in(kind, &Groups::All)
    }

    /// Ids of the stored entities of a kind in the covered groups, in id order. A key that is
    /// neither a shard record nor an entity's is an error naming it.
    pub fn entity_ids_in(&self, kind: EntityKind, scope: &Groups) -> Result<Vec<String>, StoreError> {
        let mut ids = BTreeSet::new();
        for shard in scope.shards(self.groups()) {
            for item in self.tree().scan_prefix(shard.to_be_bytes()).keys() {
                let k = item?;
                if keys::is_shard_record(&k) {
                    continue;
                }
                match keys::parse_key(&k) {
                    Some((_, keys::RECORD_REQUEST, _)) => {}
                    Some((id, _, _)) if id.kind == kind => {
                        ids.insert(id.id);
                    }
                    Some(_) => {}
                    None => {
                        return Err(StoreError::Corrupt {
                            location: format!("key {}", hex::encode(&k)),
                            reason: "not an entity key".into(),
                        })
                    }
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Entries (group, seq) of audit records older than `before` that `select` picks and that
    /// are not redacted yet, in the covered groups' chains.
    pub fn audit_due_for_redaction(&self, before: Timestamp, scope: &Groups, select: impl Fn(&AuditRecord) -> bool) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut out = Vec::new();
        for g in self.chain_heads()?.into_keys().filter(|g| scope.covers(*g)) {
            for item in self.tree().scan_prefix(keys::audit_prefix(g)) {
                if let Some(r) = decode_audit(item)? {
                    if r.at >= before {
                        // A group's records are sealed in log order, stamped by its leader's clock.
                        break;
                    }
                    if select(&r) && r.action != audit_log::REDACT_ACTION {
                        out.push((g, r.seq));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_covers_the_shards_of_its_groups_only() {
        let only = Groups::only([1, 3]);
        let shards: Vec<u16> = only.shards(4).collect();
        assert_eq!(shards.len(), 512, "two of four groups hold half the shards");
        assert!(shards.iter().all(|s| s % 4 == 1 || s % 4 == 3));
        assert_eq!(Groups::All.shards(4).count(), usize::from(SHARD_COUNT));
        assert!(Groups::only([]).is_empty() && !Groups::All.is_empty() && !only.is_empty());
    }

    #[test]
    fn readers_see_only_the_covered_groups() {
        use crate::domain::ids::EntityId;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let groups = store.groups();
        let users: Vec<String> = (0..40).map(|i| format!("usr_{i}")).collect();
        let mut w = crate::storage::store::WriteSet::default();
        for u in &users {
            let pending = crate::storage::store::PendingErasure {
                due_at: Timestamp(1),
                email_hash: format!("h{u}"),
                replay: false,
            };
            w.put_record(crate::storage::records::user_shard(u), ShardRecord::Erasure, u, &pending);
            let id = EntityId::new(EntityKind::Account, u);
            w.puts.push((keys::snapshot_key(&id), b"x".to_vec()));
        }
        store.apply_offline(&w).unwrap();
        let group = |u: &String| group_of(crate::storage::records::user_shard(u), groups);
        let first = group(&users[0]);
        let scope = Groups::only([first]);
        let mut expected: Vec<String> = users.iter().filter(|u| group(u) == first).cloned().collect();
        expected.sort();
        assert!(!expected.is_empty() && expected.len() < users.len());
        assert_eq!(store.entity_ids_in(EntityKind::Account, &scope).unwrap(), expected);
        let mut erasures: Vec<String> = store.erasures_in(&scope).unwrap().into_iter().map(|(id, _)| id).collect();
        erasures.sort();
        assert_eq!(erasures, expected);
        assert_eq!(store.entity_ids(EntityKind::Account).unwrap().len(), users.len());
        assert!(store.entity_ids_in(EntityKind::Account, &Groups::only([])).unwrap().is_empty());
    }
}
