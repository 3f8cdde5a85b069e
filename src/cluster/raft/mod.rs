//! The multi-group raft driver, sans-IO (DESIGN.md §2, §8).
//!
//! Consensus, replication, elections and snapshots are raft-rs's (`RawNode`); this module is the
//! part around it that every node needs and that must be the same in production and in the
//! simulator: many groups on one node, messages batched per peer, one persistence round for all
//! groups (TiKV's write batch), proposal and read tracking, leadership events, placement hints.
//!
//! It does no IO and reads no clock: time enters as `tick()`, messages as `step()`, and each
//! round hands back what to persist (`Round`), what to send (`take_outbox`) and what happened
//! (`take_events`). The caller persists a round — atomically, flushed when `Round::sync` says
//! so — together with the state machine's writes for `Round::apply`, then calls `persisted`.

// raft-rs's protobuf types are built field by field (as its own examples do).
#![allow(clippy::field_reassign_with_default)]

pub mod board;
pub mod disk;
pub mod group;
pub mod log;
pub mod logger;
pub mod node;
#[doc(hidden)]
pub mod sim;
pub mod tracker;

pub use board::{Board, Leadership};
pub use disk::{DiskError, GroupWrite, MemoryDisk, RaftDisk};
pub use group::ProposeError;
pub use log::{GroupLog, PersistedGroup};
pub use node::{Committed, Event, GroupStatus, MultiRaft, Refused, RoleChange, Round};
pub use tracker::{Outcome, ProposalId};

/// What the board is built of (loom's stand-ins in `tests/loom_driver.rs`).
mod sync {
    pub use std::sync::atomic::{AtomicU64, Ordering};
    pub use std::sync::Mutex;
}

/// A node's id inside raft (never 0; raft-rs reserves it).
pub type RaftId = u64;
/// A shard group (shard s is in group s mod G).
pub type GroupId = u32;

/// The raft settings of a node (`[cluster]` config), the same for every group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftSettings {
    /// Ticks without a leader's word before an election, plus a seeded jitter below this
    /// value drawn each time the timer restarts.
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    pub max_committed_size_per_ready: u64,
    /// Seeds the per-(node, group) election offsets (a run replays from it).
    pub seed: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_committed_size_per_ready: 16 << 20,
            seed: 0,
        }
    }
}

impl RaftSettings {
    /// The seed of one replica's election jitter, from (seed, node, group).
    pub fn jitter_seed(&self, node: RaftId, group: GroupId) -> u64 {
        splitmix64(self.seed ^ splitmix64(node ^ (u64::from(group) << 40)))
    }
}

/// SplitMix64: a fixed, well-mixed hash of one word (no dependency on a hasher's seed).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
