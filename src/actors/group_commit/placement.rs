//! The writer's part in moving replicas (issue: elastic membership): a replica is created
//! when a group's leader first speaks to this node and the placement names it here; as a
//! group's leader, the writer carries the placement out one raft membership change at a time
//! (`cluster::reconfigure`); a replica removed from its group's configuration is dropped, its
//! records deleted.

use super::Writer;
use crate::cluster::raft::{GroupId, Leadership, RaftId, Refused};
use crate::cluster::reconfigure::ConfStep;
use crate::storage::StoreError;
use crate::telemetry::KindLabels;
use std::time::Instant;

impl Writer {
    /// Steps a peer's raft message; a message for a group this node holds no replica of opens
    /// an empty one when the placement names this node there and the message may open one
    /// (`opens_replica`: its leader then sends it a snapshot and the log), and is refused
    /// otherwise.
    pub(super) fn step(&mut self, from: RaftId, group: GroupId, m: raft::prelude::Message) -> Result<(), Refused> {
        if m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot && !m.get_snapshot().data.is_empty() {
            // Checked before raft takes it: a snapshot the store cannot install, found only
            // when its round is written, failed the whole writer (every group of the node),
            // and again each time its leader sent it.
            if let Err(e) = self.store.check_snapshot(group, &m.get_snapshot().data, group == self.meta_group) {
                self.metrics.corrupt_records.inc();
                tracing::warn!(group, from, error = %e, "a snapshot from a peer cannot be installed; refused");
                return Err(Refused::Raft(format!("a snapshot that cannot be installed: {e}")));
            }
        }
        if self.raft.has_group(group) {
            // The common case, without a copy of the message (an append carries entries).
            return self.raft.step(from, group, m);
        }
        match self.raft.step(from, group, m.clone()) {
            Err(Refused::UnknownGroup(g))
                if g <= self.meta_group && crate::cluster::raft::node::opens_replica(&m) && self.directory.get().replicas_of(g).contains(&self.raft.id()) =>
            {
                self.raft.create_empty_group(g).map_err(Refused::Raft)?;
                tracing::info!(
                    group = g,
                    from,
                    "a replica of the group is being created here (its leader will send a snapshot)"
                );
                self.raft.step(from, group, m)
            }
            other => other,
        }
    }

    /// Once a tick: where each group's leader belongs, the next membership step of each group
    /// this node leads, and the replicas its leader says are no longer in the group.
    pub(super) fn reconfigure(&mut self) {
        let m = self.directory.get();
        let groups: Vec<GroupId> = self.raft.groups().collect();
        // What the leaders say, read once a tick (a copy of every group's word).
        let mut led_groups = None;
        let mut drop = Vec::new();
        for g in groups {
            let target = m.replicas_of(g);
            if target.is_empty() {
                continue;
            }
            self.raft.set_preferred_leader(g, target.first().copied());
            if let Some(step) = self.raft.next_conf_step(g, &target) {
                let id = self.next_id;
                self.next_id += 1;
                let kind = match step {
                    ConfStep::AddLearner(_) => "add_learner",
                    ConfStep::Promote(_) => "promote",
                    ConfStep::RemoveLearner(_) => "remove_learner",
                    ConfStep::RemoveVoter(_) => "remove_voter",
                    ConfStep::TransferLeader(_) => "transfer_leader",
                };
                match self.raft.take_conf_step(g, id, step) {
                    Ok(()) => {
                        tracing::info!(group = g, ?step, "membership step of the group");
                        self.metrics.raft.conf_steps.get_or_create(&KindLabels { kind }).inc();
                        if !matches!(step, ConfStep::TransferLeader(_)) {
                            self.pending.insert(id, (g, Instant::now(), Vec::new()));
                        }
                    }
                    Err(e) => tracing::debug!(group = g, ?step, ?e, "membership step not taken"),
                }
                continue;
            }
            if let Some((leader, led)) = led_groups.get_or_insert_with(|| self.directory.led_groups()).get(&g) {
                if self.raft.told_out(g, &target, *leader, led) {
                    drop.push(g);
                }
            }
        }
        for g in drop {
            if let Err(e) = self.drop_group(g) {
                self.fail(e);
                return;
            }
        }
    }

    /// Drops this node's replica of `group` and deletes the group's records here (its state,
    /// audit chain and raft log) in one flushed batch.
    pub(super) fn drop_group(&mut self, group: GroupId) -> Result<(), StoreError> {
        if !self.raft.remove_group(group) {
            return Ok(());
        }
        let tombstone = self.raft.tombstone(group).expect("a dropped replica leaves its tombstone");
        let mut batch = sled::Batch::default();
        self.store.stage_drop_group(&mut batch, group, tombstone, &mut self.rounds)?;
        self.states.remove(group);
        self.states.stage(&mut batch);
        let mut chains = self.chains.clone();
        if chains.remove(&group).is_some() {
            self.store.stage_heads(&mut batch, &chains);
        }
        self.store.tree().apply_batch(batch)?;
        self.store.flush()?;
        self.chains = chains;
        *self.shared.heads.lock().expect("heads lock") = self.chains.clone();
        if group == self.meta_group {
            self.meta = None;
            self.shared.meta.send_replace(None);
        }
        self.serve_from.remove(&group);
        self.metrics.raft.replicas_dropped.inc();
        tracing::info!(group, "this node was removed from the group: its replica and records here are dropped");
        self.publish_status();
        for e in self.raft.take_events() {
            self.on_event(e);
        }
        Ok(())
    }
}

/// The word of a group this node holds no replica of.
pub(super) const NO_REPLICA: Leadership = Leadership {
    leader: None,
    served: false,
    replica: false,
    sole: false,
};
