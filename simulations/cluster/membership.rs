//! The cluster's membership in the simulation, as production runs it (`cluster::coordinator`
//! and the writer's `placement`), on simulated IO: the metadata is one more raft group whose
//! entries are `MetaCommand`s applied by every replica (`MetaState::apply`); the metadata
//! group's leader runs the planner (`cluster::planner::plan`) every 500 ms on what each group's
//! leader says of its configuration (when it can hear it) and proposes what it decides; every
//! group's leader carries its placement out one raft-rs membership step at a time; nodes join
//! (`MetaCommand::Join`, then their process starts), are decommissioned (`planner::decommission`:
//! draining, emptied by the planner, removed — then the process exits for good), and a node
//! unheard of for `DEAD_AFTER_TICKS` has its replicas rebuilt elsewhere.
//!
//! Checked: replicas of the metadata group hold the same metadata at the same index.

use super::{ClusterSim, Failure};
use moneta::cluster::directory::LedGroup;
use moneta::cluster::meta::{MemberRecord, MetaCommand, MetaState, NodeState};
use moneta::cluster::planner::{self, Undecommissionable};
use moneta::cluster::raft::{GroupId, RaftId};
use moneta::storage::codec;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// How often the metadata leader plans (production: 500 ms).
pub(super) const PLAN_EVERY_TICKS: u64 = 50;
/// A member unheard of this long is dead: its replicas are rebuilt on other nodes
/// (production: `[cluster] dead_after`, 5 minutes; the elastic test uses 15 s).
pub(super) const DEAD_AFTER_TICKS: u64 = 1_500;
/// Joins stop at this many members (not counting removed ones).
pub(super) const MEMBERS_MAX: usize = 7;
/// The replication factor of the simulated cluster.
pub(super) const REPLICATION_FACTOR: usize = 3;

/// A node's replica of the metadata group: the state its applied commands made.
#[derive(Clone)]
pub(super) struct MetaReplica {
    pub(super) state: MetaState,
    consumed: usize,
    last_index: u64,
}

/// The metadata of the cluster as its first `nodes` nodes formed it: every group, and the
/// metadata group, on the first five of them (the planner then brings each group to the
/// replication factor). No more than five: the metadata refuses a placement of more than
/// `max(META_VOTERS_MAX, R)` replicas, so a larger one could never shrink one step at a time.
pub(super) fn formed(nodes: u64, groups: u32) -> MetaState {
    let ids: Vec<RaftId> = (1..=nodes).collect();
    let first: Vec<RaftId> = ids
        .iter()
        .copied()
        .take(moneta::cluster::meta::META_VOTERS_MAX.max(REPLICATION_FACTOR))
        .collect();
    let mut placement: Vec<Vec<RaftId>> = (0..groups).map(|_| first.clone()).collect();
    placement.push(ids.iter().copied().take(moneta::cluster::meta::META_VOTERS_MAX).collect());
    MetaState {
        version: 0,
        cluster_id: "sim".into(),
        groups,
        replication_factor: REPLICATION_FACTOR,
        master_fingerprint: "sim".into(),
        members: ids.iter().map(|&id| (node_name(id), record(id, NodeState::Active))).collect(),
        placement,
        founders: ids.clone(),
        next_raft_id: nodes + 1,
    }
}

fn node_name(id: RaftId) -> String {
    format!("n{id}")
}

fn record(id: RaftId, state: NodeState) -> MemberRecord {
    MemberRecord {
        raft_id: id,
        peer_id: format!("peer-{id}"),
        address: format!("sim://{id}"),
        state,
        keys: Vec::new(),
    }
}

impl ClusterSim {
    pub(super) fn meta_group(&self) -> GroupId {
        self.s.groups
    }

    /// The newest metadata any replica holds (what the cluster has decided so far).
    pub(super) fn newest_meta(&self) -> &MetaState {
        self.metas.values().map(|m| &m.state).max_by_key(|m| m.version).unwrap_or(&self.formed)
    }

    /// What node `n` knows of the metadata: its own replica's, else the newest held by a
    /// member it reaches (production: `coordinator::follow_metadata`). A replica the metadata
    /// group's leader says is not in the group (removed while cut off, and never told) is
    /// not trusted: its metadata stops where it was removed.
    pub(super) fn view(&self, n: RaftId) -> Option<&MetaState> {
        let g = self.meta_group();
        let outside = self
            .raft
            .led(g)
            .is_some_and(|(l, led)| l != n && self.raft.connected(n, l) && !led.voters.contains(&n) && !led.learners.contains(&n));
        if self.raft.groups_of(n).contains(&g) && !outside {
            return self.metas.get(&n).map(|m| &m.state);
        }
        self.metas
            .iter()
            .filter(|(&m, _)| self.raft.groups_of(m).contains(&g) && self.raft.connected(n, m) && self.raft.paused_until(m).is_none())
            .map(|(_, m)| &m.state)
            .max_by_key(|m| m.version)
    }

    /// Once a tick, after raft: the metadata replicas apply their new entries; every node
    /// follows its view of the placement (replicas created, stepped, dropped); the metadata
    /// leader plans; admitted nodes start and removed ones exit.
    pub(super) fn membership(&mut self) -> Result<(), Failure> {
        self.sync_meta()?;
        let g_meta = self.meta_group();
        let running: Vec<RaftId> = self.raft.nodes.iter().filter(|(_, n)| n.raft.is_some()).map(|(&id, _)| id).collect();
        for &n in &running {
            let Some(view) = self.view(n) else { continue };
            let placed: BTreeSet<GroupId> = (0..=g_meta)
                .filter(|&g| view.placement.get(g as usize).is_some_and(|p| p.contains(&n)))
                .collect();
            let targets: Vec<(GroupId, Vec<RaftId>)> = self
                .raft
                .groups_of(n)
                .into_iter()
                .filter_map(|g| view.placement.get(g as usize).map(|p| (g, p.clone())))
                .collect();
            self.raft.placed.insert(n, placed);
            if self.raft.paused_until(n).is_some() {
                continue;
            }
            for (g, target) in targets {
                if let Some(step) = self.raft.reconfigure(n, g, &target) {
                    self.note("conf_step", Some(n), Some(g), None, format!("{step:?} towards {target:?}"));
                    continue;
                }
                // Not placed here: once the group's leader (heard from here) says its
                // configuration has no replica here, this replica is dropped.
                if let Some((leader, led)) = self.raft.led(g) {
                    let gone = self.raft.nodes[&n].raft.as_ref().is_some_and(|r| r.told_out(g, &target, leader, &led));
                    if gone && self.raft.connected(n, leader) {
                        if let Err(e) = self.raft.drop_group(n, g) {
                            return self.fail(e);
                        }
                    }
                }
            }
        }
        // Heard from: a running node that reaches the metadata leader.
        if let Some(l) = self.raft.leader(g_meta) {
            for &n in &running {
                if self.raft.paused_until(n).is_none() && self.raft.connected(n, l) {
                    self.heard.insert(n, self.tick);
                }
            }
        }
        if self.tick.is_multiple_of(PLAN_EVERY_TICKS) {
            self.plan()?;
            self.replace_unreadable();
        }
        self.follow_members();
        Ok(())
    }

    /// After the replicas have executed this tick's entries: the entities of dropped replicas
    /// go, and a running node's entities follow its replicas.
    pub(super) fn replicas_follow(&mut self) {
        let g_meta = self.meta_group();
        let running: Vec<RaftId> = self.raft.nodes.iter().filter(|(_, n)| n.raft.is_some()).map(|(&id, _)| id).collect();
        for (n, g) in std::mem::take(&mut self.raft.dropped) {
            self.replicas.remove(&(n, g));
            self.raft.forget_dropped(n, g);
            if g == g_meta {
                self.metas.remove(&n);
            }
            self.report.dropped += 1;
            self.note("replica_dropped", Some(n), Some(g), None, "no longer in the group's configuration".into());
        }
        // A running node's entities follow its replicas: a new replica starts empty (its
        // snapshot then rebuilds it), a replica gone from its disk (dropped, or never written
        // before a crash) goes.
        for &n in &running {
            let groups: BTreeSet<GroupId> = self.raft.groups_of(n).into_iter().filter(|&g| g < g_meta).collect();
            self.replicas.retain(|&(m, g), _| m != n || groups.contains(&g));
            for g in groups {
                if !self.replicas.contains_key(&(n, g)) {
                    let r = self.fresh_replica(g);
                    self.replicas.insert((n, g), r);
                }
            }
        }
    }

    /// Each metadata replica applies the entries its node applied since the last tick (from
    /// the formed state again after a crash or a snapshot), checked against the others.
    fn sync_meta(&mut self) -> Result<(), Failure> {
        let g = self.meta_group();
        let nodes: Vec<RaftId> = self.raft.nodes.keys().copied().collect();
        for n in nodes {
            let applied = self.raft.applied_entries(n, g);
            if applied.is_empty() && !self.raft.groups_of(n).contains(&g) {
                continue;
            }
            let mut r = self.metas.remove(&n).unwrap_or_else(|| MetaReplica {
                state: self.formed.clone(),
                consumed: 0,
                last_index: 0,
            });
            if r.consumed > applied.len() || (r.consumed > 0 && applied[r.consumed - 1].0 != r.last_index) {
                r = MetaReplica {
                    state: self.formed.clone(),
                    consumed: 0,
                    last_index: 0,
                };
            }
            let new: Vec<(u64, Vec<u8>)> = applied[r.consumed..].to_vec();
            for (index, data) in &new {
                let Ok(commands) = codec::decode::<Vec<MetaCommand>>(data) else {
                    return self.fail(format!("group {g} index {index}: a metadata entry that does not decode"));
                };
                for c in &commands {
                    // A command that no longer fits is refused and changes nothing, on every
                    // replica alike.
                    if r.state.apply(c).is_err() {
                        self.report.meta_refused += 1;
                    }
                }
                let digest: [u8; 32] = Sha256::digest(codec::encode(&r.state)).into();
                match self.states.get(&(g, *index)) {
                    Some(d) if *d != digest => return self.fail(format!("group {g}: node {n}'s metadata differs from another replica's after index {index}")),
                    Some(_) => {}
                    None => {
                        self.states.insert((g, *index), digest);
                    }
                }
                r.last_index = *index;
            }
            r.consumed = applied.len();
            self.metas.insert(n, r);
        }
        Ok(())
    }

    /// The metadata leader's planning pass (production: `coordinator::run_planner`).
    fn plan(&mut self) -> Result<(), Failure> {
        let g_meta = self.meta_group();
        let Some(l) = self.raft.leader(g_meta).filter(|&l| self.raft.paused_until(l).is_none()) else {
            self.leading_since = None;
            return Ok(());
        };
        let since = match self.leading_since {
            Some((who, t)) if who == l => t,
            _ => {
                self.leading_since = Some((l, self.tick));
                self.tick
            }
        };
        let Some(meta) = self.metas.get(&l).map(|m| m.state.clone()) else {
            return Ok(());
        };
        let actual = self.actual_from(l);
        let dead: BTreeSet<RaftId> = meta
            .members
            .values()
            .filter(|r| r.raft_id != l && r.state != NodeState::Removed)
            .filter(|r| self.tick - self.heard.get(&r.raft_id).copied().unwrap_or(0).max(since) > DEAD_AFTER_TICKS)
            .map(|r| r.raft_id)
            .collect();
        let commands = planner::plan(&meta, &actual, &dead, planner::Limits::default());
        if commands.is_empty() {
            return Ok(());
        }
        for c in &commands {
            match c {
                MetaCommand::Place { group, replicas } => {
                    self.report.placements += 1;
                    let from = meta.placement.get(*group as usize).cloned().unwrap_or_default();
                    self.note("place", Some(l), Some(*group), None, format!("{from:?} → {replicas:?} (dead: {dead:?})"));
                }
                other => self.note("node_state", Some(l), None, None, format!("{other:?}")),
            }
        }
        self.propose_meta(l, &commands);
        Ok(())
    }

    /// What the metadata leader `l` hears of every group: its leader's word, when that leader
    /// reaches it (production: the leaders' gossip).
    pub(super) fn actual_from(&self, l: RaftId) -> BTreeMap<GroupId, LedGroup> {
        (0..=self.meta_group())
            .filter_map(|g| self.raft.led(g))
            .filter(|(leader, _)| self.raft.connected(l, *leader))
            .map(|(_, led)| (led.group, led))
            .collect()
    }

    fn propose_meta(&mut self, at: RaftId, commands: &[MetaCommand]) -> bool {
        let g = self.meta_group();
        self.raft.propose_at(at, g, codec::encode(&commands.to_vec())).is_some()
    }

    /// Members the metadata admitted start their process; removed ones exit for good.
    fn follow_members(&mut self) {
        let members: Vec<(RaftId, NodeState)> = self.newest_meta().members.values().map(|r| (r.raft_id, r.state)).collect();
        for (id, state) in members {
            let exists = self.raft.nodes.contains_key(&id);
            if state == NodeState::Removed && exists {
                self.raft.remove_node(id);
                self.replicas.retain(|&(n, _), _| n != id);
                self.metas.remove(&id);
                self.departed.insert(id);
                self.report.removed += 1;
                if self.corrupted.remove(&id) {
                    self.report.replaced += 1;
                }
                self.note("removed", Some(id), None, None, "removed from the cluster: the process exits".into());
            } else if state != NodeState::Removed && !exists && !self.departed.contains(&id) {
                self.raft.add_node(id);
                self.report.joins += 1;
                self.note(
                    "joined",
                    Some(id),
                    None,
                    None,
                    "admitted (joining): its process starts with an empty disk".into(),
                );
            }
        }
    }

    /// The operators' runbook for a node that cannot start from its disk (a corrupt record):
    /// decommission it (its replicas are rebuilt from the others), first adding a node when
    /// too few would be left; retried every planning pass until the metadata takes it.
    fn replace_unreadable(&mut self) {
        let g_meta = self.meta_group();
        let Some(l) = self.raft.leader(g_meta) else { return };
        let Some(meta) = self.metas.get(&l).map(|m| m.state.clone()) else { return };
        let ids: Vec<RaftId> = self.raft.unreadable.iter().copied().collect();
        for id in ids {
            let Some((node_id, _)) = meta.by_raft_id(id) else { continue };
            match planner::decommission(&meta, node_id) {
                Ok(Some(cmd)) => {
                    let sent = self.propose_meta(l, &[cmd]);
                    self.note(
                        "decommission",
                        Some(l),
                        None,
                        None,
                        format!("{node_id}: its disk is unreadable (proposed: {sent})"),
                    );
                }
                Err(Undecommissionable::TooSmall { .. }) => {
                    // One replacement at a time: none while a node is still joining (unless
                    // that node is one of the unreadable ones: it will never finish).
                    let joining = |r: &MemberRecord| r.state == NodeState::Joining && !self.raft.unreadable.contains(&r.raft_id);
                    if !meta.members.values().any(joining) {
                        self.asked_to_join += 1;
                        let replacement = format!("r{}", self.asked_to_join);
                        let join = MetaCommand::Join {
                            peer_id: format!("peer-{replacement}"),
                            address: format!("sim://{replacement}"),
                            node_id: replacement.clone(),
                        };
                        let sent = self.propose_meta(l, &[join]);
                        self.note(
                            "join_asked",
                            Some(l),
                            Some(g_meta),
                            None,
                            format!("{replacement} to replace {node_id} (proposed: {sent})"),
                        );
                    }
                }
                Ok(None) | Err(Undecommissionable::UnknownNode) => {}
            }
        }
    }

    /// Operators at work (drawn per tick): a new node asks to join, or a member is
    /// decommissioned (refused when too few nodes would be left).
    pub(super) fn operators(&mut self) {
        let (join, decommission) = (self.rng.random_bool(self.s.faults.join), self.rng.random_bool(self.s.faults.decommission));
        if !join && !decommission {
            return;
        }
        let g_meta = self.meta_group();
        let Some(l) = self.raft.leader(g_meta) else { return };
        let Some(meta) = self.metas.get(&l).map(|m| m.state.clone()) else { return };
        let members = meta.members.values().filter(|r| r.state != NodeState::Removed).count();
        if members < MEMBERS_MAX && join {
            self.asked_to_join += 1;
            let k = self.asked_to_join;
            let join = MetaCommand::Join {
                node_id: format!("j{k}"),
                peer_id: format!("peer-j{k}"),
                address: format!("sim://j{k}"),
            };
            let sent = self.propose_meta(l, &[join]);
            self.note("join_asked", Some(l), Some(g_meta), None, format!("node j{k} asks to join (proposed: {sent})"));
        }
        if decommission {
            let candidates: Vec<String> = meta
                .members
                .iter()
                .filter(|(_, r)| r.state == NodeState::Active)
                .map(|(id, _)| id.clone())
                .collect();
            if candidates.is_empty() {
                return;
            }
            let node = candidates[self.rng.random_range(0..candidates.len())].clone();
            match planner::decommission(&meta, &node) {
                Ok(Some(cmd)) => {
                    let sent = self.propose_meta(l, &[cmd]);
                    self.report.decommissions += 1;
                    self.note("decommission", Some(l), None, None, format!("{node} to drain (proposed: {sent})"));
                }
                Ok(None) => {}
                Err(Undecommissionable::TooSmall { left, needed }) => {
                    self.note(
                        "decommission_refused",
                        Some(l),
                        None,
                        None,
                        format!("{node}: {left} nodes would be left, {needed} needed"),
                    );
                }
                Err(Undecommissionable::UnknownNode) => {}
            }
        }
    }

    /// Membership has settled: nothing joining or draining, every group's configuration is
    /// its placement, and the planner has nothing left to do.
    pub(super) fn membership_settled(&self) -> bool {
        let g_meta = self.meta_group();
        let Some(l) = self.raft.leader(g_meta) else { return false };
        let Some(meta) = self.metas.get(&l).map(|m| &m.state) else { return false };
        if meta.members.values().any(|r| matches!(r.state, NodeState::Joining | NodeState::Draining)) {
            return false;
        }
        let actual = self.actual_from(l);
        actual.len() == g_meta as usize + 1
            && planner::moves_in_flight(meta, &actual).is_empty()
            && planner::plan(meta, &actual, &BTreeSet::new(), planner::Limits::default()).is_empty()
    }

    /// Why membership has not settled (for the liveness failure's message).
    /// Every running replica's own view of `group` (what decides an election).
    fn views(&self, group: GroupId) -> String {
        let views: Vec<String> = self
            .raft
            .nodes
            .iter()
            .filter_map(|(n, x)| x.raft.as_ref().and_then(|r| r.status(group)).map(|s| (n, s)))
            .map(|(n, s)| {
                format!(
                    "{n}: term {} voters {:?} learners {:?} commit {} applied {} last {}",
                    s.term, s.voters, s.learners, s.commit_index, s.applied_index, s.last_index
                )
            })
            .collect();
        views.join("; ")
    }

    pub(super) fn unsettled(&self) -> String {
        let g_meta = self.meta_group();
        let Some(l) = self.raft.leader(g_meta) else {
            return format!("the metadata group has no leader; its replicas {{{}}}", self.views(g_meta));
        };
        let Some(meta) = self.metas.get(&l).map(|m| &m.state) else {
            return format!("metadata leader {l} holds no metadata");
        };
        let states: Vec<String> = meta
            .members
            .iter()
            .map(|(id, r)| format!("{id}(raft {}) {}", r.raft_id, r.state.as_str()))
            .collect();
        let actual = self.actual_from(l);
        let unheard: Vec<GroupId> = (0..=g_meta).filter(|g| !actual.contains_key(g)).collect();
        let moves = planner::moves_in_flight(meta, &actual);
        let plan = planner::plan(meta, &actual, &BTreeSet::new(), planner::Limits::default());
        let groups: Vec<String> = (0..=g_meta)
            .map(|g| {
                let at: Vec<String> = self
                    .members_of(g)
                    .into_iter()
                    .map(|n| {
                        let applied = self
                            .raft
                            .nodes
                            .get(&n)
                            .and_then(|x| x.raft.as_ref())
                            .and_then(|r| r.status(g))
                            .map(|s| s.applied_index);
                        let host = self.replicas.get(&(n, g)).map(|r| r.last_index);
                        format!("{n}: applied {applied:?} host {host:?}")
                    })
                    .collect();
                format!("group {g} leader {:?} [{}] replicas {{{}}}", self.raft.leader(g), at.join(", "), self.views(g))
            })
            .collect();
        format!(
            "members [{}]; groups unheard of {unheard:?}; moves in flight {moves:?}; the planner would still do {plan:?}; {}",
            states.join(", "),
            groups.join("; ")
        )
    }

    /// The replicas of `g` in its leader's configuration (all of them once settled).
    pub(super) fn members_of(&self, g: GroupId) -> Vec<RaftId> {
        self.raft.led(g).map(|(_, led)| led.voters).unwrap_or_default()
    }
}
