//! Audit records and the SHA-256 hash chain over them.
//!
//! `leaf_n = H(0x00 ‖ record bytes)`, `head_n = H(0x02 ‖ head_{n-1} ‖ leaf_n)`, with `head_{-1}`
//! 32 zero bytes. Records carry pseudonymous ids only (user ids, order ids, symbols, amounts),
//! never names, emails, dates of birth or document numbers.

use crate::domain::time::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub type Hash = [u8; 32];
pub const GENESIS_HEAD: Hash = [0u8; 32];

/// What a state machine knows about an auditable fact; the driver adds who, when and which request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDraft {
    pub action: String,
    pub outcome: Outcome,
    /// Non-personal details (amounts, symbols, ids), ordered for a stable encoding.
    pub details: BTreeMap<String, String>,
}

impl AuditDraft {
    pub fn ok(action: &str) -> AuditDraft {
        AuditDraft {
            action: action.to_string(),
            outcome: Outcome::Ok,
            details: BTreeMap::new(),
        }
    }
    pub fn refused(action: &str, code: &str) -> AuditDraft {
        AuditDraft {
            action: action.to_string(),
            outcome: Outcome::Refused(code.to_string()),
            details: BTreeMap::new(),
        }
    }
    pub fn detail(mut self, key: &str, value: impl ToString) -> AuditDraft {
        self.details.insert(key.to_string(), value.to_string());
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    Refused(String),
}

impl Outcome {
    pub fn as_text(&self) -> String {
        match self {
            Outcome::Ok => "ok".to_string(),
            Outcome::Refused(code) => format!("refused:{code}"),
        }
    }
}

/// One entry of the audit journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in its group's chain, from 0, without gaps (set when sealed).
    pub seq: u64,
    /// The shard group whose chain holds it (set when sealed).
    pub group: u32,
    pub at: Timestamp,
    /// Who caused it: a user id, a staff id, or `system`.
    pub actor: String,
    pub action: String,
    /// The entity it concerns (`portfolio/usr_…`), or a node-wide subject.
    pub entity: String,
    pub request_id: String,
    pub outcome: Outcome,
    pub details: BTreeMap<String, String>,
}

impl AuditRecord {
    /// It concerns user `user_id`: they caused it, it is about their account or portfolio, or
    /// it names them (what a GDPR export gives them of the audit trail).
    pub fn concerns(&self, user_id: &str) -> bool {
        self.actor == user_id
            || self.entity.strip_prefix("account/") == Some(user_id)
            || self.entity.strip_prefix("portfolio/") == Some(user_id)
            || self.details.get("user_id").map(String::as_str) == Some(user_id)
    }
}

pub fn leaf_hash(record_bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(record_bytes);
    h.finalize().into()
}

pub fn next_head(prev_head: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x02]);
    h.update(prev_head);
    h.update(leaf);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_order_and_content() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let ab = next_head(&next_head(&GENESIS_HEAD, &a), &b);
        let ba = next_head(&next_head(&GENESIS_HEAD, &b), &a);
        assert_ne!(ab, ba);
        assert_ne!(leaf_hash(b"a"), leaf_hash(b"a "));
        // Domain separation: a leaf is never equal to a head over the same bytes.
        assert_ne!(a, next_head(&GENESIS_HEAD, &a));
    }
}
