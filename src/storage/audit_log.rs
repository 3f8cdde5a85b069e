//! The audit journal on disk and its offline verification.
//!
//! One chain per shard group. Key `AUDIT_PREFIX ‖ group ‖ seq` (u64 BE) → record bytes ‖ head
//! after this record (32 bytes). Key `AUDIT_HEAD_PREFIX ‖ group` → (number of entries, head),
//! written in the same atomic batch, so a truncated tail is detected too. Verification recomputes every leaf and head from the record
//! bytes and names the first entry that does not match.
//!
//! Retention: an entry whose retention period has ended (security events) is *redacted* — its
//! record bytes are replaced by `0x00 ‖ leaf hash`, so the chain still verifies while the content
//! is gone. A redaction is valid only when a `retention.redact` record (appended to the chain
//! first, never itself redacted) lists the entry; verification names any entry redacted without
//! one.

use crate::domain::audit::{leaf_hash, next_head, AuditRecord, Hash, GENESIS_HEAD};
use crate::storage::codec;
use serde::{Deserialize, Serialize};

/// Where the chain stands: how many entries it has and the head over all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub entries: u64,
    pub head: Hash,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            entries: 0,
            head: GENESIS_HEAD,
        }
    }
}

impl ChainHead {
    /// Seals `record` (whose `seq` must be `entries`) onto the chain; returns the stored value.
    pub fn append(&mut self, record: &AuditRecord) -> Vec<u8> {
        assert_eq!(record.seq, self.entries, "audit records are appended in sequence");
        let bytes = codec::encode(record);
        let head = next_head(&self.head, &leaf_hash(&bytes));
        self.entries += 1;
        self.head = head;
        let mut value = bytes;
        value.extend_from_slice(&head);
        value
    }
}

/// The action of the records that authorise redactions; `details["seqs"]` lists them as ranges.
pub const REDACT_ACTION: &str = "retention.redact";

/// The stored value of a redacted entry: `0x00 ‖ leaf ‖ head` (record bytes never start with 0x00:
/// the codec's version byte is 1).
pub fn redacted_value(value: &[u8]) -> Option<Vec<u8>> {
    let (bytes, head) = split_value(value)?;
    if is_redacted(bytes) {
        return None;
    }
    let mut v = vec![0x00];
    v.extend_from_slice(&leaf_hash(bytes));
    v.extend_from_slice(&head);
    Some(v)
}

pub fn is_redacted(bytes: &[u8]) -> bool {
    bytes.len() == 33 && bytes[0] == 0x00
}

/// `[1,2,3,7]` → `"1-3,7"`.
pub fn ranges(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        while i + 1 < seqs.len() && seqs[i + 1] == seqs[i] + 1 {
            i += 1;
        }
        out.push(if seqs[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", seqs[i])
        });
        i += 1;
    }
    out.join(",")
}

fn parse_ranges(s: &str, into: &mut std::collections::BTreeSet<u64>) {
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
            if b >= a && b - a < 100_000_000 {
                into.extend(a..=b);
            }
        }
    }
}

/// Splits a stored value into (record bytes, stored head).
pub fn split_value(value: &[u8]) -> Option<(&[u8], Hash)> {
    if value.len() <= 32 {
        return None;
    }
    let (bytes, head) = value.split_at(value.len() - 32);
    Some((bytes, head.try_into().ok()?))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: u64,
    /// One group: its head. Several: a SHA-256 over every group's (group, entries, head).
    pub head_hash: String,
    /// The first entry that fails (in `bad_group`'s chain), and why.
    pub first_bad_entry: Option<u64>,
    pub bad_group: Option<u32>,
    pub problem: Option<String>,
    pub groups: Vec<GroupChain>,
}

/// Where one group's chain stands: replicas at the same entry count must show the same head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupChain {
    pub group: u32,
    pub entries: u64,
    pub head_hash: String,
}

impl VerifyReport {
    pub fn failed(group: u32, problem: String) -> VerifyReport {
        VerifyReport {
            ok: false,
            entries: 0,
            head_hash: String::new(),
            first_bad_entry: Some(0),
            bad_group: Some(group),
            problem: Some(problem),
            groups: Vec::new(),
        }
    }

    /// One report over every group's: ok when all are, naming the first that is not.
    pub fn combine(reports: Vec<(u32, VerifyReport)>) -> VerifyReport {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        let mut out = VerifyReport {
            ok: true,
            entries: 0,
            head_hash: hex::encode(GENESIS_HEAD),
            first_bad_entry: None,
            bad_group: None,
            problem: None,
            groups: Vec::new(),
        };
        for (g, r) in &reports {
            out.entries += r.entries;
            digest.update(g.to_be_bytes());
            digest.update(r.entries.to_be_bytes());
            digest.update(r.head_hash.as_bytes());
            out.groups.push(GroupChain {
                group: *g,
                entries: r.entries,
                head_hash: r.head_hash.clone(),
            });
            if !r.ok && out.ok {
                out.ok = false;
                out.first_bad_entry = r.first_bad_entry;
                out.bad_group = Some(*g);
                out.problem = r.problem.as_ref().map(|p| format!("group {g}: {p}"));
            }
        }
        match reports.as_slice() {
            [] => {}
            [(_, only)] => out.head_hash = only.head_hash.clone(),
            _ => out.head_hash = hex::encode(digest.finalize()),
        }
        out
    }
}

/// Verifies the chain from (seq, value) pairs in key order against the recorded head.
pub fn verify<I>(entries: I, recorded: Option<ChainHead>) -> VerifyReport
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), String>>,
{
    let mut chain = ChainHead::default();
    let mut redacted = Vec::new();
    let mut authorised = std::collections::BTreeSet::new();
    let fail = |chain: &ChainHead, at: u64, why: String| VerifyReport {
        ok: false,
        entries: chain.entries,
        head_hash: hex::encode(chain.head),
        first_bad_entry: Some(at),
        bad_group: None,
        problem: Some(why),
        groups: Vec::new(),
    };
    for item in entries {
        let expected = chain.entries;
        let (seq, value) = match item {
            Ok(v) => v,
            Err(e) => return fail(&chain, expected, format!("unreadable: {e}")),
        };
        if seq != expected {
            return fail(&chain, expected, format!("entry {expected} is missing (next stored entry is {seq})"));
        }
        let Some((bytes, stored_head)) = split_value(&value) else {
            return fail(&chain, seq, "value too short to hold a record and its head".into());
        };
        let leaf = if is_redacted(bytes) {
            redacted.push(seq);
            bytes[1..].try_into().expect("32 bytes")
        } else {
            let record: AuditRecord = match codec::decode(bytes) {
                Ok(r) => r,
                Err(e) => return fail(&chain, seq, format!("record does not decode: {e}")),
            };
            if record.seq != seq {
                return fail(&chain, seq, format!("record says it is entry {} (moved or reordered)", record.seq));
            }
            if record.action == REDACT_ACTION {
                if let Some(list) = record.details.get("seqs") {
                    parse_ranges(list, &mut authorised);
                }
            }
            leaf_hash(bytes)
        };
        let head = next_head(&chain.head, &leaf);
        if head != stored_head {
            return fail(&chain, seq, "hash mismatch: the record was edited, inserted or reordered".into());
        }
        chain.entries += 1;
        chain.head = head;
    }
    if let Some(seq) = redacted.iter().find(|s| !authorised.contains(s)) {
        return fail(&chain, *seq, "the entry was redacted without a retention record listing it".into());
    }
    match recorded {
        Some(r) if r.entries > chain.entries => fail(
            &chain,
            chain.entries,
            format!("entries {}..{} are missing (the chain was truncated)", chain.entries, r.entries),
        ),
        Some(r) if r.entries < chain.entries => fail(&chain, r.entries, format!("entries from {} were appended outside the journal", r.entries)),
        Some(r) if r.head != chain.head => fail(
            &chain,
            chain.entries.saturating_sub(1),
            "the chain head does not match the recorded head".into(),
        ),
        None if chain.entries > 0 => fail(&chain, 0, "the recorded chain head is missing".into()),
        _ => VerifyReport {
            ok: true,
            entries: chain.entries,
            head_hash: hex::encode(chain.head),
            first_bad_entry: None,
            bad_group: None,
            problem: None,
            groups: Vec::new(),
        },
    }
}
