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

/// The reviewer's decision that resolved a screening hit (`screening.check`), among
/// `decisions` (`screening.resolve` records, oldest first): the latest one taken after the hit
/// on the same person and list entry. None: nobody has decided it.
pub fn resolution_of<'a>(hit: &AuditRecord, decisions: &'a [AuditRecord]) -> Option<&'a AuditRecord> {
    decisions.iter().rev().find(|r| {
        r.action == "screening.resolve"
            && r.outcome == Outcome::Ok
            && r.at >= hit.at
            && r.entity == hit.entity
            && r.details.get("entry") == hit.details.get("entry")
    })
}

/// Which audit records a read of every shard group's trail asks each member for (a member
/// answers with the records its replicas hold): what a GDPR export, the compliance daily report
/// and the KYC review list need at a node that holds no replica of some groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditQuery {
    /// The records concerning a user ([`AuditRecord::concerns`]).
    Concerning(String),
    /// The records of one UTC day (days since the epoch), and the statements dated that day
    /// whenever they were written (a close can run after midnight).
    Day(i64),
    /// The records of one action, or of every action under a prefix that ends in a dot
    /// (`security.`).
    Action(String),
    /// The records of one action whose `status` detail is (`equal`) or is not a value
    /// (screening results that were not clear, KYC submissions that went to review).
    ActionWithStatus { action: String, status: String, equal: bool },
}

/// The longest text an [`AuditQuery`] carries (a peer's query is untrusted input).
pub const AUDIT_QUERY_TEXT_MAX: usize = 128;

impl AuditQuery {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        match self {
            AuditQuery::Concerning(user_id) => r.concerns(user_id),
            AuditQuery::Day(day) => {
                let start = day.saturating_mul(crate::domain::time::MS_PER_DAY);
                let end = start.saturating_add(crate::domain::time::MS_PER_DAY);
                (r.at.millis() >= start && r.at.millis() < end)
                    || (r.action == "statement.issued"
                        && r.details
                            .get("date")
                            .is_some_and(|d| *d == crate::domain::time::Date::from_timestamp(Timestamp(start)).to_string()))
            }
            AuditQuery::Action(action) if action.ends_with('.') => r.action.starts_with(action.as_str()),
            AuditQuery::Action(action) => r.action == *action,
            AuditQuery::ActionWithStatus { action, status, equal } => r.action == *action && r.details.get("status").is_some_and(|s| (s == status) == *equal),
        }
    }

    /// Bounded, and naming something: checked where a peer's query comes in.
    pub fn is_well_formed(&self) -> bool {
        match self {
            AuditQuery::Concerning(t) | AuditQuery::Action(t) => !t.is_empty() && t.len() <= AUDIT_QUERY_TEXT_MAX,
            AuditQuery::ActionWithStatus { action, status, .. } => {
                !action.is_empty() && action.len() <= AUDIT_QUERY_TEXT_MAX && status.len() <= AUDIT_QUERY_TEXT_MAX
            }
            // From 1970 to the year 9999.
            AuditQuery::Day(day) => (0..2_932_897).contains(day),
        }
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

    /// A record of group 0 with the fields a test sets.
    fn record_of(at: i64, actor: &str, action: &str, entity: &str, details: &[(&str, &str)], outcome: Outcome) -> AuditRecord {
        AuditRecord {
            seq: 0,
            group: 0,
            at: Timestamp(at),
            actor: actor.into(),
            action: action.into(),
            entity: entity.into(),
            request_id: "req".into(),
            outcome,
            details: details.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn an_audit_query_picks_what_its_reader_needs_and_a_peers_query_is_bounded() {
        let day = 20_000; // 2024-10-04
        let record = |at: i64, action: &str, details: &[(&str, &str)]| record_of(at, "usr_a", action, "account/usr_b", details, Outcome::Ok);
        let start = day * crate::domain::time::MS_PER_DAY;
        let on_the_day = AuditQuery::Day(day);
        assert!(on_the_day.matches(&record(start, "order.filled", &[])));
        assert!(!on_the_day.matches(&record(start - 1, "order.filled", &[])));
        assert!(!on_the_day.matches(&record(start + crate::domain::time::MS_PER_DAY, "order.filled", &[])));
        // A statement of the day written after midnight is the day's.
        let late = record(start + crate::domain::time::MS_PER_DAY + 5, "statement.issued", &[("date", "2024-10-04")]);
        assert!(on_the_day.matches(&late));
        assert!(!AuditQuery::Day(day + 2).matches(&late));
        assert!(AuditQuery::Concerning("usr_b".into()).matches(&record(start, "kyc.submit", &[])));
        assert!(!AuditQuery::Concerning("usr_c".into()).matches(&record(start, "kyc.submit", &[])));
        assert!(AuditQuery::Action("security.".into()).matches(&record(start, "security.login_failed", &[])));
        assert!(!AuditQuery::Action("security".into()).matches(&record(start, "security.login_failed", &[])));
        let hits = AuditQuery::ActionWithStatus {
            action: "screening.check".into(),
            status: "clear".into(),
            equal: false,
        };
        assert!(hits.matches(&record(start, "screening.check", &[("status", "match")])));
        assert!(!hits.matches(&record(start, "screening.check", &[("status", "clear")])));
        assert!(!hits.matches(&record(start, "screening.check", &[])));
        let review = AuditQuery::ActionWithStatus {
            action: "kyc.submit".into(),
            status: "review".into(),
            equal: true,
        };
        assert!(review.matches(&record(start, "kyc.submit", &[("status", "review")])));
        assert!(!review.matches(&record(start, "kyc.submit", &[("status", "verified")])));
        // A peer's query names something, within bounds.
        assert!(!AuditQuery::Action(String::new()).is_well_formed());
        assert!(!AuditQuery::Concerning("x".repeat(AUDIT_QUERY_TEXT_MAX + 1)).is_well_formed());
        assert!(!AuditQuery::Day(-1).is_well_formed());
        assert!(on_the_day.is_well_formed() && hits.is_well_formed());
    }

    #[test]
    fn a_screening_hit_is_resolved_by_the_latest_decision_on_its_person_and_entry_after_it() {
        let record = |at: i64, action: &str, entity: &str, details: &[(&str, &str)], outcome: Outcome| record_of(at, "stf_a", action, entity, details, outcome);
        let hit = record(
            100,
            "screening.check",
            "account/usr_b",
            &[("entry", "9001"), ("status", "potential_match")],
            Outcome::Ok,
        );
        let decide = |at: i64, entity: &str, entry: &str, decision: &str, outcome: Outcome| {
            record(at, "screening.resolve", entity, &[("entry", entry), ("decision", decision)], outcome)
        };
        let decisions = [
            decide(50, "account/usr_b", "9001", "match", Outcome::Ok),  // before the hit
            decide(110, "account/usr_c", "9001", "clear", Outcome::Ok), // another person
            decide(120, "account/usr_b", "9002", "clear", Outcome::Ok), // another entry
            decide(130, "account/usr_b", "9001", "clear", Outcome::Refused("nothing_to_resolve".into())),
        ];
        assert!(resolution_of(&hit, &decisions).is_none());
        let mut decisions = decisions.to_vec();
        decisions.push(decide(140, "account/usr_b", "9001", "clear", Outcome::Ok));
        decisions.push(decide(150, "account/usr_b", "9001", "match", Outcome::Ok));
        assert_eq!(resolution_of(&hit, &decisions).map(|r| r.details["decision"].as_str()), Some("match"));
    }
}
