//! How a group's leader carries out a new placement, sans-IO: one raft-rs membership change
//! at a time — add the new replica as a learner, let it catch up (raft-rs sends it a snapshot
//! and the log), promote it to voter, then remove the replica it replaces; a leader that is
//! itself to go hands leadership over first. The rules of issue 12:
//! - never remove a replica before its replacement is a voter;
//! - never drop below a majority of the group (voters never fewer than the placement wants);
//! - never promote, or hand leadership to, a replica that still needs a snapshot or the log.

use super::raft::RaftId;

/// The next membership step of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfStep {
    AddLearner(RaftId),
    Promote(RaftId),
    RemoveLearner(RaftId),
    RemoveVoter(RaftId),
    /// This leader is to leave the group: hand leadership to this voter first.
    TransferLeader(RaftId),
}

/// What the leader knows of its group.
#[derive(Clone, Debug, Default)]
pub struct GroupConf {
    pub me: RaftId,
    pub voters: Vec<RaftId>,
    pub learners: Vec<RaftId>,
    /// A membership change is proposed and not yet applied (raft-rs allows one at a time).
    pub pending: bool,
    pub last_index: u64,
    /// Replicas removed in the leader's current term (`Replica::returning`): one is added back
    /// only by a leader of a later term, so leadership is handed over first.
    pub returning: Vec<RaftId>,
}

/// How far a replica is, as the leader's progress tracker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub matched: u64,
    /// Streaming the log (not probing, not waiting for a snapshot).
    pub replicating: bool,
}

/// A learner this many entries behind the leader's last index is caught up enough to vote.
pub const CATCH_UP_SLACK: u64 = 16;

/// The next step towards `target` (the placement), or None when there is nothing to do now.
pub fn next_step(conf: &GroupConf, target: &[RaftId], progress: impl Fn(RaftId) -> Option<Progress>) -> Option<ConfStep> {
    if conf.pending || target.is_empty() {
        return None;
    }
    let caught_up = |id: RaftId| progress(id).is_some_and(|p| p.replicating && p.matched + CATCH_UP_SLACK >= conf.last_index);
    if let Some(&l) = conf.learners.iter().find(|l| !target.contains(l)) {
        return Some(ConfStep::RemoveLearner(l));
    }
    if let Some(&n) = target.iter().find(|n| !conf.voters.contains(n) && !conf.learners.contains(n)) {
        if !conf.returning.contains(&n) {
            return Some(ConfStep::AddLearner(n));
        }
        // Added back only in a later term: hand leadership to a voter holding the whole log
        // (the placement's first, if it can). A term changes with every election.
        let holds_log = |t: &RaftId| *t != conf.me && progress(*t).is_some_and(|p| p.replicating && p.matched >= conf.last_index);
        let mut voters = target.iter().filter(|t| conf.voters.contains(t)).chain(conf.voters.iter());
        return voters.find(|t| holds_log(t)).copied().map(ConfStep::TransferLeader);
    }
    if let Some(&l) = conf.learners.iter().find(|l| caught_up(**l)) {
        return Some(ConfStep::Promote(l));
    }
    if !conf.learners.is_empty() || !target.iter().all(|n| conf.voters.contains(n)) {
        // Replacements are still catching up: nothing leaves before they vote.
        return None;
    }
    let leaving: Vec<RaftId> = conf.voters.iter().copied().filter(|v| !target.contains(v)).collect();
    let &out = leaving.iter().find(|&&v| v != conf.me).or(leaving.first())?;
    assert!(
        conf.voters.len() > target.len(),
        "a voter leaves only while the group has more than its placement"
    );
    if out == conf.me {
        // Hand over to the placement's first replica that holds the whole log.
        return target
            .iter()
            .copied()
            .find(|&t| t != conf.me && progress(t).is_some_and(|p| p.replicating && p.matched >= conf.last_index))
            .map(ConfStep::TransferLeader);
    }
    Some(ConfStep::RemoveVoter(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[RaftId], learners: &[RaftId]) -> GroupConf {
        GroupConf {
            me: 1,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            pending: false,
            last_index: 100,
            returning: vec![],
        }
    }

    #[test]
    fn a_replica_removed_in_this_term_is_added_back_only_after_leadership_is_handed_over() {
        let mut c = conf(&[1, 2, 3], &[]);
        c.returning = vec![4];
        let target = [1, 2, 4];
        // Node 3 holds the whole log, node 2 does not: leadership goes to node 3.
        let progress = |id: RaftId| if id == 2 { at(90) } else { at(100) };
        assert_eq!(next_step(&c, &target, progress), Some(ConfStep::TransferLeader(3)));
        // The placement's first voter holding the log is preferred.
        assert_eq!(next_step(&c, &[2, 1, 4], |_| at(100)), Some(ConfStep::TransferLeader(2)));
        // No voter to hand over to: nothing now.
        assert_eq!(next_step(&conf(&[1], &[]), &[1, 4], |_| at(100)), Some(ConfStep::AddLearner(4)));
        let mut alone = conf(&[1], &[]);
        alone.returning = vec![4];
        assert_eq!(next_step(&alone, &[1, 4], |_| at(100)), None);
        // Another node is added as usual.
        assert_eq!(next_step(&c, &[1, 2, 5], |_| at(100)), Some(ConfStep::AddLearner(5)));
    }

    fn at(matched: u64) -> Option<Progress> {
        Some(Progress { matched, replicating: true })
    }

    #[test]
    fn a_move_adds_a_learner_promotes_it_when_caught_up_then_removes_the_old_replica() {
        let target = [1, 2, 4];
        let c = conf(&[1, 2, 3], &[]);
        assert_eq!(next_step(&c, &target, |_| at(100)), Some(ConfStep::AddLearner(4)));
        let c = conf(&[1, 2, 3], &[4]);
        // Still catching up (or waiting for its snapshot): nothing leaves, nothing is promoted.
        assert_eq!(next_step(&c, &target, |id| if id == 4 { at(10) } else { at(100) }), None);
        assert_eq!(
            next_step(&c, &target, |id| if id == 4 {
                Some(Progress {
                    matched: 100,
                    replicating: false,
                })
            } else {
                at(100)
            }),
            None
        );
        assert_eq!(next_step(&c, &target, |_| at(95)), Some(ConfStep::Promote(4)));
        let c = conf(&[1, 2, 3, 4], &[]);
        assert_eq!(next_step(&c, &target, |_| at(100)), Some(ConfStep::RemoveVoter(3)));
        let c = conf(&[1, 2, 4], &[]);
        assert_eq!(next_step(&c, &target, |_| at(100)), None);
    }

    #[test]
    fn one_change_at_a_time() {
        let mut c = conf(&[1, 2, 3], &[]);
        c.pending = true;
        assert_eq!(next_step(&c, &[1, 2, 4], |_| at(100)), None);
    }

    #[test]
    fn a_leader_that_is_to_go_hands_over_to_a_caught_up_replica_first() {
        let c = conf(&[1, 2, 3, 4], &[]);
        let target = [4, 2, 3];
        assert_eq!(
            next_step(&c, &target, |id| if id == 4 { at(90) } else { at(100) }),
            Some(ConfStep::TransferLeader(2))
        );
        assert_eq!(next_step(&c, &target, |id| if id == 1 { at(100) } else { at(50) }), None);
    }

    #[test]
    fn a_learner_no_longer_placed_is_dropped_and_voters_never_fall_below_the_placement() {
        let c = conf(&[1, 2, 3], &[5]);
        assert_eq!(next_step(&c, &[1, 2, 3], |_| at(100)), Some(ConfStep::RemoveLearner(5)));
        // Growing from one replica to three: add, promote, add, promote; nothing is removed.
        let mut c = conf(&[1], &[]);
        let target = [1, 2, 3];
        let mut steps = Vec::new();
        for _ in 0..10 {
            let Some(step) = next_step(&c, &target, |_| at(100)) else { break };
            steps.push(step);
            match step {
                ConfStep::AddLearner(n) => c.learners.push(n),
                ConfStep::Promote(n) => {
                    c.learners.retain(|&l| l != n);
                    c.voters.push(n);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            steps,
            vec![ConfStep::AddLearner(2), ConfStep::AddLearner(3), ConfStep::Promote(2), ConfStep::Promote(3)]
        );
    }
}
