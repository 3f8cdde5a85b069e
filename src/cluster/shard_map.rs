//! Shard ownership lives in the sans-IO core (`domain::shard_map`): the actors check it on
//! every message and the router on every send, so it sits below both.

pub use crate::domain::shard_map::{OwnerHint, ShardMap};
