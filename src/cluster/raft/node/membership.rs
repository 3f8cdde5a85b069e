//! A node's raft groups changing their members: the next membership step towards a
//! placement, a replica told it is out, a dropped replica's tombstone (its term and vote).

use super::*;

impl MultiRaft {
    /// The next membership step of a group this node leads and serves, towards `target`
    /// (`cluster::reconfigure`); None when it leads nothing there or has nothing to do.
    pub fn next_conf_step(&self, group: GroupId, target: &[RaftId]) -> Option<crate::cluster::reconfigure::ConfStep> {
        let r = self.groups.get(&group).filter(|r| r.is_serving())?;
        let conf = crate::cluster::reconfigure::GroupConf {
            me: self.id,
            voters: r.voters(),
            learners: r.learners(),
            pending: r.raw.raft.has_pending_conf(),
            last_index: r.last_index(),
            returning: r.returning(),
        };
        let progress = |id: RaftId| {
            r.raw.raft.prs().get(id).map(|p| crate::cluster::reconfigure::Progress {
                matched: p.matched,
                // Heard from since the last quorum check, too: a replica that died stays
                // "replicating", its match index the last index while nothing is appended —
                // and a hand-over to it, taken again every tick, kept an idle group from ever
                // moving off a node being drained.
                replicating: p.state == raft::ProgressState::Replicate && p.recent_active,
            })
        };
        crate::cluster::reconfigure::next_step(&conf, target, progress)
    }

    /// Carries out one membership step: a configuration change through the log (tracked as
    /// proposal `id`), or a leadership transfer.
    pub fn take_conf_step(&mut self, group: GroupId, id: ProposalId, step: crate::cluster::reconfigure::ConfStep) -> Result<(), ProposeError> {
        use crate::cluster::reconfigure::ConfStep;
        use raft::prelude::ConfChangeType;
        let (node, ty) = match step {
            ConfStep::TransferLeader(to) => {
                self.transfer_leader(group, to);
                return Ok(());
            }
            ConfStep::AddLearner(n) => (n, ConfChangeType::AddLearnerNode),
            ConfStep::Promote(n) => (n, ConfChangeType::AddNode),
            ConfStep::RemoveLearner(n) | ConfStep::RemoveVoter(n) => (n, ConfChangeType::RemoveNode),
        };
        let mut single = raft::prelude::ConfChangeSingle::default();
        single.set_change_type(ty);
        single.node_id = node;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        self.propose_conf_change(group, id, cc)
    }

    /// The term and vote of this node's last dropped replica of `group` (to persist).
    pub fn tombstone(&self, group: GroupId) -> Option<(u64, RaftId)> {
        self.tombstones.get(&group).copied()
    }

    /// A dropped replica's term and vote, as persisted (at start).
    pub fn restore_tombstone(&mut self, group: GroupId, term: u64, vote: RaftId) {
        self.tombstones.insert(group, (term, vote));
    }

    /// Drops this node's replica of a group (it was removed from the group's configuration):
    /// proposals and reads it tracked fail. The caller deletes the group's records.
    pub fn remove_group(&mut self, group: GroupId) -> bool {
        let Some(mut r) = self.groups.remove(&group) else { return false };
        let hs = r.raw.raft.hard_state();
        self.tombstones.insert(group, (hs.term, hs.vote));
        let (mut failed, mut reads) = (Vec::new(), Vec::new());
        r.tracker.step_down(&mut failed, &mut reads);
        self.events.extend(failed.into_iter().map(|(id, o)| Event::Proposal(id, o)));
        self.events.extend(reads.into_iter().map(|id| Event::Read(id, false)));
        self.compactions.remove(&group);
        for batch in self.outbox.values_mut() {
            batch.retain(|(g, _)| *g != group);
        }
        true
    }

    /// Whether this node's replica of `group` is to be dropped because its leader says so: it
    /// is not placed here (`target`), this node does not lead the group, and `leader` (another
    /// node, at a term no older than this replica's) says its configuration — an applied, so
    /// committed, one — has no replica here, and that every voter has committed that change
    /// (`LedGroup::settled`: a voter still holding it uncommitted would campaign under the old
    /// configuration and may need this replica's vote — found by the simulator: a leader lost
    /// for good right after such a removal left its group without a leader). This is the one
    /// way a replica goes, also one that applied its own removal: as a follower it may be
    /// catching up through a removal a later entry undoes (found by the simulator: such a
    /// replica, dropped at once, was promoted to voter with nothing here to vote, for good); as
    /// a leader it steps down (`persisted`).
    pub fn told_out(&self, group: GroupId, target: &[RaftId], leader: RaftId, led: &crate::cluster::directory::LedGroup) -> bool {
        let Some(r) = self.groups.get(&group) else { return false };
        let me = self.id;
        !target.contains(&me)
            && !r.is_leader()
            && leader != me
            && led.term >= r.term()
            && led.settled
            && !led.voters.contains(&me)
            && !led.learners.contains(&me)
    }

    /// Whether this node's replica is in the group's configuration (as a voter or a learner).
    pub fn is_member_of(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|r| r.voters().contains(&self.id) || r.learners().contains(&self.id))
    }
}
