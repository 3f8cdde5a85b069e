//! Persistence on sled: entity journals and snapshots (keys begin with the shard number so a
//! shard is one ordered range), the hash-chained audit journal, and node metadata.

pub mod audit_heads;
pub mod audit_log;
pub mod backup;
pub mod codec;
pub mod durable_mark;
pub mod erasure_list;
pub mod files;
pub mod key_check;
pub mod keys;
pub mod raft_log;
pub mod raft_rounds;
pub mod raft_states;
pub mod records;
pub mod scope;
pub mod store;
pub mod vault;
pub mod write_set;

pub use store::{Store, StoreError};
