//! Kameo actors hosting the domain: one generic entity actor per account, portfolio, instrument
//! and email-index entry, their supervisor, and the audit journal that group-commits everything.
//! This layer translates between messages and the sans-IO core; it does not decide.

pub mod entity;
pub mod fanout;
pub mod group_commit;
pub mod inbox;
pub mod journal;
pub mod locks;
pub mod supervisor;

/// The locks `inbox` is built on (loom's in `tests/loom_inbox.rs`).
mod sync {
    pub use std::sync::Mutex;
}

use crate::domain::time::Timestamp;

pub use crate::domain::envelope::RequestMeta;

/// The longest label a system request id carries (the id is part of a storage key).
const SYSTEM_LABEL_MAX: usize = 48;

impl RequestMeta {
    /// A new request of `actor` under a fresh request id.
    pub fn new(actor: impl Into<String>) -> RequestMeta {
        RequestMeta {
            request_id: new_request_id(),
            actor: actor.into(),
        }
    }

    /// A new request of the node itself (a job, the feed), labelled for logs and the audit
    /// trail, under a fresh request id: never the same id after a restart.
    pub fn system(label: impl AsRef<str>) -> RequestMeta {
        let label: String = label.as_ref().chars().take(SYSTEM_LABEL_MAX).collect();
        RequestMeta {
            request_id: format!("{label}/{}", new_request_id()),
            actor: "system".into(),
        }
    }
}

/// A request id made by this node: 128 random bits, so it is never reused, across restarts
/// and nodes alike.
pub fn new_request_id() -> String {
    random_id("req")
}

/// A fresh id of 128 random bits from the OS: `prefix_` + 32 hex digits.
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    format!("{prefix}_{}", hex::encode(b))
}

/// The wall clock of production; the simulator has its own.
pub fn wall_clock_now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(d.as_millis() as i64)
}
