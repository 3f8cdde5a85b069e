//! Where entities live. Today every shard is local: the router activates entity actors on this
//! node. Code outside this module asks the router for an entity and never learns which node it
//! is on, so the cluster work changes the transport behind `Router`, not its callers.

pub mod coordinator;
pub mod directory;
pub mod history;
pub mod lanes;
pub mod membership;
pub mod memory_host;
pub mod meta;
pub mod peer;
pub mod planner;
pub mod raft;
pub mod reconfigure;
pub mod router;
pub mod routing;
pub mod secret;
pub mod shard_map;
pub mod snapshots;
pub mod status;
pub mod transport;

pub use router::{RouteError, RouteFailure, Router};
