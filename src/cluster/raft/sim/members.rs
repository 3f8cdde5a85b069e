//! Nodes joining and leaving the simulated cluster and replicas moving between them, with the
//! production writer's rules (`actors::group_commit::placement`): a replica is created when
//! its group's leader first speaks to a node the placement names; a group's leader carries its
//! placement out one raft-rs membership step at a time (`MultiRaft::next_conf_step`, the sans-IO
//! `cluster::reconfigure`); a replica whose group's configuration no longer has it is dropped
//! with its records.

use super::{Applied, SimNode, SimRaftCluster};
use crate::cluster::directory::LedGroup;
use crate::cluster::raft::disk::MemoryDisk;
use crate::cluster::raft::node::MultiRaft;
use crate::cluster::raft::{GroupId, RaftId};
use crate::cluster::reconfigure::ConfStep;

impl SimRaftCluster {
    /// A new node's process starts: no replica yet, an empty disk.
    pub fn add_node(&mut self, id: RaftId) {
        assert!(id != 0 && !self.nodes.contains_key(&id), "node {id} exists already");
        let raft = MultiRaft::new(id, self.settings.clone(), crate::cluster::raft::logger::logger(id));
        self.nodes.insert(
            id,
            SimNode {
                raft: Some(raft),
                disk: MemoryDisk::default(),
                applied: Applied::new(),
                state_durable: Applied::new(),
                state_volatile: Vec::new(),
            },
        );
    }

    /// A node leaves for good (removed from the cluster: its process exits and never comes
    /// back with its data). What was sent to it is lost.
    pub fn remove_node(&mut self, id: RaftId) {
        if self.nodes.get(&id).is_some_and(|n| n.raft.is_some()) {
            self.crash(id, 0);
        }
        self.nodes.remove(&id);
        self.unreadable.remove(&id);
        self.retired.retain(|&(n, _), _| n != id);
        self.paused.remove(&id);
        self.placed.remove(&id);
        self.cut.retain(|&(a, b)| a != id && b != id);
        self.clogged.retain(|&(a, b), _| a != id && b != id);
    }

    /// Drops `node`'s replica of `group`: its raft state, its state machine and their records
    /// on the node's disk, in one flushed write. Proposals and reads it tracked fail.
    pub fn drop_group(&mut self, node: RaftId, group: GroupId) -> Result<(), String> {
        let Some(n) = self.nodes.get_mut(&node) else { return Ok(()) };
        let Some(raft) = n.raft.as_mut() else { return Ok(()) };
        if !raft.remove_group(group) {
            return Ok(());
        }
        let events = raft.take_events();
        let tombstone = raft.tombstone(group).expect("a dropped replica leaves its tombstone");
        n.disk.drop_group(group, tombstone);
        // The flush that deletes the group makes the rounds before it durable too.
        let rounds: Vec<_> = n.state_volatile.drain(..).collect();
        for ops in &rounds {
            SimNode::fold(&mut n.state_durable, ops);
        }
        n.state_durable.remove(&group);
        // Kept for the driver until it has seen it: the round that dropped the replica may
        // have applied entries too.
        let applied = n.applied.remove(&group).unwrap_or_default();
        self.retired.insert((node, group), applied);
        self.dropped.push((node, group));
        for e in events {
            self.on_event(node, e)?;
        }
        Ok(())
    }

    /// As the production writer does once a tick for every group it holds: tells the group
    /// where its leader belongs, and, at the group's leader, takes the next membership step
    /// towards `target` (the placement). Returns the step taken.
    pub fn reconfigure(&mut self, node: RaftId, group: GroupId, target: &[RaftId]) -> Option<ConfStep> {
        if target.is_empty() {
            return None;
        }
        let raft = self.nodes.get_mut(&node)?.raft.as_mut()?;
        raft.set_preferred_leader(group, target.first().copied());
        let step = raft.next_conf_step(group, target)?;
        let id = self.next_id;
        raft.take_conf_step(group, id, step).ok()?;
        self.next_id += 1;
        if !matches!(step, ConfStep::TransferLeader(_)) {
            self.conf_pending.insert(id, node);
        }
        self.conf_steps += 1;
        Some(step)
    }

    /// What `group`'s serving leader would tell the others of it (its gossip): the leader and
    /// its configuration.
    pub fn led(&self, group: GroupId) -> Option<(RaftId, LedGroup)> {
        let leader = self.leader(group)?;
        let s = self.nodes[&leader].raft.as_ref()?.status(group)?;
        Some((
            leader,
            LedGroup {
                group,
                term: s.term,
                voters: s.voters,
                learners: s.learners,
                commit_index: s.commit_index,
                changing: s.pending_conf,
                settled: s.conf_settled,
            },
        ))
    }

    /// The driver has seen what the dropped replica `(node, group)` had applied.
    pub fn forget_dropped(&mut self, node: RaftId, group: GroupId) {
        self.retired.remove(&(node, group));
    }

    /// The groups `node` holds a replica of (running nodes only).
    pub fn groups_of(&self, node: RaftId) -> Vec<GroupId> {
        self.nodes
            .get(&node)
            .and_then(|n| n.raft.as_ref())
            .map(|r| r.groups().collect())
            .unwrap_or_default()
    }
}
