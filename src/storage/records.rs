//! Typed shard records: the schedules, queues and ledgers that are not entity state but belong
//! to a shard all the same (DESIGN.md §3b). Readers are `Store` methods; writers build a
//! `WriteSet` that goes through the journal's group commit (or, offline, `apply_offline`), so
//! every one of them is atomic with what else that commit carries, inside a backup's consistent
//! view, and moves with its shard.

use crate::domain::ids::{EntityId, EntityKind};
use crate::storage::keys::ShardRecord;
use crate::storage::scope::Groups;
use crate::storage::store::{CatalogEntry, ErasedMarker, PendingErasure, RegulatoryRecord, Store, StoreError, WriteSet};

/// The shard of everything kept about a user (their account's).
pub fn user_shard(user_id: &str) -> u16 {
    EntityId::new(EntityKind::Account, user_id).shard()
}

pub fn schedule_erasure(user_id: &str, pending: &PendingErasure) -> WriteSet {
    let mut w = WriteSet::default();
    w.put_record(user_shard(user_id), ShardRecord::Erasure, user_id, pending);
    w
}

/// The end of an erasure: its schedule goes, and the shard keeps that it was carried out
/// (`ShardRecord::Erased`), in the same write.
pub fn finish_erasure(user_id: &str, marker: &ErasedMarker) -> WriteSet {
    let mut w = WriteSet::default();
    w.delete_record(user_shard(user_id), ShardRecord::Erasure, user_id);
    w.put_record(user_shard(user_id), ShardRecord::Erased, user_id, marker);
    w
}

/// Puts advice of `user_id` on the compliance review queue (`Some`) or takes it off.
pub fn set_review(advice_id: &str, user_id: &str, queued: bool) -> WriteSet {
    let mut w = WriteSet::default();
    if queued {
        w.put_record(user_shard(user_id), ShardRecord::Review, advice_id, &user_id.to_string());
    } else {
        w.delete_record(user_shard(user_id), ShardRecord::Review, advice_id);
    }
    w
}

pub fn put_regulatory(user_id: &str, record: &RegulatoryRecord) -> WriteSet {
    let mut w = WriteSet::default();
    w.put_record(user_shard(user_id), ShardRecord::Regulatory, user_id, record);
    w
}

pub fn remove_regulatory(user_id: &str) -> WriteSet {
    let mut w = WriteSet::default();
    w.delete_record(user_shard(user_id), ShardRecord::Regulatory, user_id);
    w
}

/// The shard whose group keeps the catalog of instruments listed at run time: the jobs shard,
/// whose group's leader drives the price feed (`keys::JOBS_SHARD`). In a cluster of more nodes
/// than replicas, a catalog spread over the instruments' own shards reached only the nodes
/// holding each one's group: the feed's node may not tick an instrument, and other nodes not
/// list it. (Records a folder keeps in other shards are read as before: `Store::catalog`
/// reads every shard.)
pub fn catalog_shard() -> u16 {
    crate::storage::keys::JOBS_SHARD
}

pub fn put_catalog(symbol: &str, entry: &CatalogEntry) -> WriteSet {
    let mut w = WriteSet::default();
    w.put_record(catalog_shard(), ShardRecord::Catalog, symbol, entry);
    w
}

/// The shard that keeps a group's job progress: its first (shard g is in group g).
pub fn group_shard(group: u32) -> u16 {
    u16::try_from(group)
        .ok()
        .filter(|s| *s < crate::domain::ids::SHARD_COUNT)
        .expect("a group number is below the shard count")
}

/// A job's progress for one shard group (e.g. the last day closed there), kept in that group
/// so that whichever replica leads it next carries on from there.
pub fn put_group_job(group: u32, key: &str, value: &str) -> WriteSet {
    let mut w = WriteSet::default();
    w.put_record(group_shard(group), ShardRecord::Job, key, &value.to_string());
    w
}

/// A reconciliation discrepancy alerted once, marked in `shard` (the one it is about).
pub fn alerted(shard: u16, key: &str) -> WriteSet {
    let mut w = WriteSet::default();
    w.put_record(shard, ShardRecord::Alerted, &record_id(key), &());
    w
}

/// A record id from any key: itself when short, else its digest (ids are at most 256 bytes).
fn record_id(key: &str) -> String {
    if !key.is_empty() && key.len() <= 200 {
        key.to_string()
    } else {
        use sha2::{Digest, Sha256};
        format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

impl Store {
    /// Every scheduled erasure; a corrupt entry is an error naming it.
    pub fn erasures(&self) -> Result<Vec<(String, PendingErasure)>, StoreError> {
        self.records(ShardRecord::Erasure)
    }

    /// The scheduled erasures of the covered groups.
    pub fn erasures_in(&self, scope: &Groups) -> Result<Vec<(String, PendingErasure)>, StoreError> {
        self.records_in(ShardRecord::Erasure, scope)
    }

    /// The review queue: (advice id, user id), in advice-id order.
    pub fn review_queue(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut q: Vec<(String, String)> = self.records(ShardRecord::Review)?;
        q.sort();
        Ok(q)
    }

    /// Instruments listed at run time, in symbol order.
    pub fn catalog(&self) -> Result<Vec<(String, CatalogEntry)>, StoreError> {
        let mut c: Vec<(String, CatalogEntry)> = self.records(ShardRecord::Catalog)?;
        c.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(c)
    }

    pub fn regulatory(&self, user_id: &str) -> Result<Option<RegulatoryRecord>, StoreError> {
        self.record(user_shard(user_id), ShardRecord::Regulatory, user_id)
    }

    /// The regulatory records (user id, record) of the covered groups.
    pub fn regulatory_records_in(&self, scope: &Groups) -> Result<Vec<(String, RegulatoryRecord)>, StoreError> {
        self.records_in(ShardRecord::Regulatory, scope)
    }

    /// A job's progress for one shard group.
    pub fn group_job(&self, group: u32, key: &str) -> Result<Option<String>, StoreError> {
        self.record(group_shard(group), ShardRecord::Job, key)
    }

    pub fn is_alerted(&self, shard: u16, key: &str) -> Result<bool, StoreError> {
        Ok(self.record::<()>(shard, ShardRecord::Alerted, &record_id(key))?.is_some())
    }
}
