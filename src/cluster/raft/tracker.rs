//! Proposal and read tracking for one group on this node.
//!
//! raft-rs accepts a proposal and may then drop it silently when leadership changes (NOTES.md:
//! 295 proposed, 292 applied in a probe). So each proposal is remembered with the (term, index)
//! it was appended at: when an entry at that index is applied with the same term, it committed;
//! with another term, it was overwritten and certainly not applied; when this node stops being
//! the leader first, its outcome is unknown and the caller retries under its request id (apply
//! de-duplicates).

use std::collections::BTreeMap;

/// The caller's handle on a proposal or a read (unique per node while pending).
pub type ProposalId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed and applied on this node.
    Applied,
    /// Another entry took its place: it was not applied.
    NotApplied,
    /// This node stopped leading before its fate was known; it may still commit.
    Unknown,
}

#[derive(Debug, Default)]
pub struct Tracker {
    /// index → (term, proposal)
    proposals: BTreeMap<u64, (u64, ProposalId)>,
    /// Reads asked of raft (ReadIndex), by their context.
    reads_asked: BTreeMap<ProposalId, ()>,
    /// Reads raft confirmed at an index, waiting for it to be applied: (index, id).
    reads_confirmed: Vec<(u64, ProposalId)>,
}

impl Tracker {
    pub fn pending(&self) -> usize {
        self.proposals.len() + self.reads_asked.len() + self.reads_confirmed.len()
    }

    pub fn proposed(&mut self, index: u64, term: u64, id: ProposalId) {
        if let Some((t, old)) = self.proposals.insert(index, (term, id)) {
            // raft-rs never hands out one index twice in one term while leading.
            assert!(t != term, "proposal {old} and {id} both at index {index} term {term}");
        }
    }

    /// An entry was applied: resolves every proposal at or below its index.
    pub fn applied(&mut self, index: u64, term: u64, out: &mut Vec<(ProposalId, Outcome)>) {
        while let Some((&i, &(t, id))) = self.proposals.first_key_value() {
            if i > index {
                break;
            }
            self.proposals.remove(&i);
            let outcome = if i == index && t == term { Outcome::Applied } else { Outcome::NotApplied };
            out.push((id, outcome));
        }
    }

    /// The planted bug `AckBeforeCommit`: proposals up to `index` (durable on this leader only)
    /// are reported applied before a majority holds them.
    pub fn acknowledge_early(&mut self, index: u64, out: &mut Vec<(ProposalId, Outcome)>) {
        while let Some((&i, &(_, id))) = self.proposals.first_key_value() {
            if i > index {
                break;
            }
            self.proposals.remove(&i);
            out.push((id, Outcome::Applied));
        }
    }

    pub fn read_asked(&mut self, id: ProposalId) {
        self.reads_asked.insert(id, ());
    }

    /// raft confirmed leadership for the read `id` at `index` (ReadIndex).
    pub fn read_confirmed(&mut self, id: ProposalId, index: u64) -> bool {
        if self.reads_asked.remove(&id).is_some() {
            self.reads_confirmed.push((index, id));
            true
        } else {
            false
        }
    }

    /// Reads whose index has been applied may be served now.
    pub fn reads_ready(&mut self, applied: u64, out: &mut Vec<ProposalId>) {
        self.reads_confirmed.retain(|&(i, id)| {
            if i <= applied {
                out.push(id);
                false
            } else {
                true
            }
        });
    }

    /// A follower's leader changed: its reads asked of the old leader fail (they may never be
    /// answered).
    pub fn fail_reads(&mut self, reads: &mut Vec<ProposalId>) {
        reads.extend(std::mem::take(&mut self.reads_asked).into_keys());
        reads.extend(std::mem::take(&mut self.reads_confirmed).into_iter().map(|(_, id)| id));
    }

    /// The driver gave up on a read (no answer in time): it is not tracked any more.
    pub fn forget_read(&mut self, id: ProposalId) {
        self.reads_asked.remove(&id);
        self.reads_confirmed.retain(|&(_, r)| r != id);
    }

    /// Leadership moved: every pending proposal's fate is unknown here, every read fails.
    pub fn step_down(&mut self, proposals: &mut Vec<(ProposalId, Outcome)>, reads: &mut Vec<ProposalId>) {
        proposals.extend(std::mem::take(&mut self.proposals).into_values().map(|(_, id)| (id, Outcome::Unknown)));
        reads.extend(std::mem::take(&mut self.reads_asked).into_keys());
        reads.extend(std::mem::take(&mut self.reads_confirmed).into_iter().map(|(_, id)| id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_of_another_term_at_the_index_fails_the_proposal() {
        let mut t = Tracker::default();
        t.proposed(5, 2, 50);
        t.proposed(6, 2, 60);
        let mut out = Vec::new();
        t.applied(5, 3, &mut out);
        assert_eq!(out, vec![(50, Outcome::NotApplied)]);
        out.clear();
        t.applied(6, 2, &mut out);
        assert_eq!(out, vec![(60, Outcome::Applied)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn stepping_down_leaves_every_pending_proposal_unknown_and_fails_reads() {
        let mut t = Tracker::default();
        t.proposed(7, 1, 1);
        t.read_asked(9);
        t.read_asked(10);
        assert!(t.read_confirmed(10, 7));
        let (mut p, mut r) = (Vec::new(), Vec::new());
        t.step_down(&mut p, &mut r);
        assert_eq!(p, vec![(1, Outcome::Unknown)]);
        r.sort();
        assert_eq!(r, vec![9, 10]);
    }

    #[test]
    fn a_read_waits_for_its_index_to_be_applied() {
        let mut t = Tracker::default();
        t.read_asked(3);
        t.read_confirmed(3, 12);
        let mut out = Vec::new();
        t.reads_ready(11, &mut out);
        assert!(out.is_empty());
        t.reads_ready(12, &mut out);
        assert_eq!(out, vec![3]);
    }
}
