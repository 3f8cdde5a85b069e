//! The audit journal on disk and its offline verification.
//!
//! Key `AUDIT_PREFIX ‖ seq` (u64 BE) → record bytes ‖ head after this record (32 bytes).
//! Key `AUDIT_HEAD_KEY` → (number of entries, head), written in the same atomic batch, so a
//! truncated tail is detected too. Verification recomputes every leaf and head from the record
//! bytes and names the first entry that does not match.

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
    pub head_hash: String,
    /// The first entry that fails, and why.
    pub first_bad_entry: Option<u64>,
    pub problem: Option<String>,
}

/// Verifies the chain from (seq, value) pairs in key order against the recorded head.
pub fn verify<I>(entries: I, recorded: Option<ChainHead>) -> VerifyReport
where
    I: IntoIterator<Item = Result<(u64, Vec<u8>), String>>,
{
    let mut chain = ChainHead::default();
    let fail = |chain: &ChainHead, at: u64, why: String| VerifyReport {
        ok: false,
        entries: chain.entries,
        head_hash: hex::encode(chain.head),
        first_bad_entry: Some(at),
        problem: Some(why),
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
        let record: AuditRecord = match codec::decode(bytes) {
            Ok(r) => r,
            Err(e) => return fail(&chain, seq, format!("record does not decode: {e}")),
        };
        if record.seq != seq {
            return fail(&chain, seq, format!("record says it is entry {} (moved or reordered)", record.seq));
        }
        let head = next_head(&chain.head, &leaf_hash(bytes));
        if head != stored_head {
            return fail(&chain, seq, "hash mismatch: the record was edited, inserted or reordered".into());
        }
        chain.entries += 1;
        chain.head = head;
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
            problem: None,
        },
    }
}
