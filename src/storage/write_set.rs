//! A write set: what one command persists, all of one shard group (one raft log entry).

use crate::domain::audit::AuditRecord;
use crate::domain::ids::group_of;
use crate::storage::keys::ShardRecord;
use crate::storage::{codec, keys};
use serde::{Deserialize, Serialize};

/// What one command persists: entity writes and audit records (sequence numbers assigned when
/// sealed, in log order), all of one shard — so of one shard group, one raft log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteSet {
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub deletes: Vec<Vec<u8>>,
    pub audit: Vec<AuditRecord>,
    /// The shard it belongs to when it has no keys to tell (audit records alone).
    pub shard: Option<u16>,
    /// Entries of the group's audit chain to redact once this set's records are sealed (the
    /// retention job; its `retention.redact` record lists them).
    pub redact: Vec<u64>,
    /// Changes to the cluster's metadata: a set that carries them belongs to the metadata
    /// group (and holds no keys of a shard).
    pub meta: Vec<crate::cluster::meta::MetaCommand>,
}

impl WriteSet {
    /// The shard this set is written in: its explicit shard, else its first key's, else the
    /// jobs shard (node-wide audit records).
    pub fn shard(&self) -> u16 {
        self.shard
            .or_else(|| self.puts.iter().map(|(k, _)| k).chain(self.deletes.iter()).find_map(|k| keys::shard_of_key(k)))
            .unwrap_or(keys::JOBS_SHARD)
    }

    /// True when every key lies in shards of one group (a set must never span two raft logs).
    pub fn within_group(&self, groups: u32) -> bool {
        let g = group_of(self.shard(), groups);
        self.puts
            .iter()
            .map(|(k, _)| k)
            .chain(self.deletes.iter())
            .all(|k| keys::shard_of_key(k).is_some_and(|s| group_of(s, groups) == g))
    }

    /// Why this set cannot be one entry of one raft log (None: it can): a key outside its
    /// group's shards (another group's, or a node-wide record), a shard number no shard has,
    /// or metadata changes beside keys of a shard. Checked where a peer hands a set in and
    /// where one is applied, so a misplaced set is never written anywhere.
    pub fn misplaced(&self, groups: u32) -> Option<&'static str> {
        if self.shard.is_some_and(|s| s >= crate::domain::ids::SHARD_COUNT) {
            Some("it names a shard that does not exist")
        } else if !self.meta.is_empty() && (!self.puts.is_empty() || !self.deletes.is_empty()) {
            Some("it changes the cluster's metadata and writes keys of a shard")
        } else if !self.within_group(groups) {
            Some("its keys lie outside its shard group (another group's, or node-wide records)")
        } else {
            None
        }
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty() && self.audit.is_empty() && self.redact.is_empty() && self.meta.is_empty()
    }

    /// A set of metadata changes (and their audit records), for the metadata group.
    pub fn meta(commands: Vec<crate::cluster::meta::MetaCommand>) -> WriteSet {
        WriteSet {
            meta: commands,
            ..Default::default()
        }
    }

    /// A put of shard record `id` (encoded by the codec).
    pub fn put_record<T: Serialize>(&mut self, shard: u16, record: ShardRecord, id: &str, value: &T) -> &mut WriteSet {
        self.puts.push((keys::shard_record_key(shard, record, id), codec::encode(value)));
        self
    }

    pub fn delete_record(&mut self, shard: u16, record: ShardRecord, id: &str) -> &mut WriteSet {
        self.deletes.push(keys::shard_record_key(shard, record, id));
        self
    }

    pub fn record_count(&self) -> usize {
        self.puts.len() + self.deletes.len() + self.audit.len() + self.meta.len()
    }
}
