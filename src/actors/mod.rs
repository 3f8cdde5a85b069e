//! Kameo actors hosting the domain: one generic entity actor per account, portfolio, instrument
//! and email-index entry, their supervisor, and the audit journal that group-commits everything.
//! This layer translates between messages and the sans-IO core; it does not decide.

pub mod entity;
pub mod fanout;
pub mod feed;
pub mod inbox;
pub mod journal;
pub mod supervisor;

/// The locks `inbox` is built on (loom's in `tests/loom_inbox.rs`).
mod sync {
    pub use std::sync::Mutex;
}

use crate::domain::time::Timestamp;

/// Who asked and under which request id; travels with every command into the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMeta {
    pub request_id: String,
    /// A user id, a staff id, or `system`.
    pub actor: String,
}

impl RequestMeta {
    pub fn system(request_id: impl Into<String>) -> RequestMeta {
        RequestMeta {
            request_id: request_id.into(),
            actor: "system".into(),
        }
    }
}

/// The wall clock of production; the simulator has its own.
pub fn wall_clock_now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(d.as_millis() as i64)
}
