//! The placement planner (DESIGN.md §8), sans-IO: from the metadata (members and their states,
//! where every group is placed) and what each group's leader says of its raft configuration,
//! decide the next placements and node states. It runs on the metadata group's leader, which
//! proposes its commands; each group's leader then carries a new placement out with raft-rs
//! membership changes (`reconfigure`). The simulator drives the same function.
//!
//! Rules (each one a test below):
//! - a group changes by at most one replica per pass (one added, one removed), so a placement
//!   always keeps all but one of its current replicas — never a plan that loses a majority;
//! - a group whose configuration differs from its placement (a move in flight) is not touched;
//!   moves in flight are bounded cluster-wide and per node;
//! - replicas go to active or joining nodes that are not dead, `replication_factor` of them
//!   (fewer while there are fewer nodes), and move from the most to the least loaded node until
//!   every node holds within one of the mean; leaders (a placement's first replica) likewise;
//! - the metadata group lives on the first `META_VOTERS_MAX` eligible nodes;
//! - a joining node becomes active once no move involving it is in flight; a draining node is
//!   removed once no placement and no group configuration names it (every group heard of).

use super::directory::LedGroup;
use super::meta::{MetaCommand, MetaState, NodeState, META_VOTERS_MAX};
use super::raft::{GroupId, RaftId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Groups whose membership is changing at once, cluster-wide.
    pub moves_in_flight: usize,
    /// Moves in flight that add or remove a replica on one node.
    pub moves_per_node: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            moves_in_flight: 4,
            moves_per_node: 2,
        }
    }
}

/// A group whose configuration is not yet its placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Move {
    pub group: GroupId,
    pub adding: Vec<RaftId>,
    pub removing: Vec<RaftId>,
}

/// Moves in flight: groups whose configuration (as their leader said) differs from their
/// placement. A group no leader spoke of lately is not known to be moving.
pub fn moves_in_flight(meta: &MetaState, actual: &BTreeMap<GroupId, LedGroup>) -> Vec<Move> {
    moves_between(&meta.placement, actual)
}

/// Moves in flight between a placement (per group) and the groups' configurations.
pub fn moves_between(placement: &[Vec<RaftId>], actual: &BTreeMap<GroupId, LedGroup>) -> Vec<Move> {
    let mut moves = Vec::new();
    for (g, placed) in placement.iter().enumerate() {
        let g = g as GroupId;
        let Some(a) = actual.get(&g) else { continue };
        let placed: BTreeSet<RaftId> = placed.iter().copied().collect();
        let voters: BTreeSet<RaftId> = a.voters.iter().copied().collect();
        if placed == voters && a.learners.is_empty() && !a.changing {
            continue;
        }
        moves.push(Move {
            group: g,
            adding: placed.difference(&voters).copied().collect(),
            removing: voters
                .difference(&placed)
                .chain(a.learners.iter().filter(|l| !placed.contains(l)))
                .copied()
                .collect(),
        });
    }
    moves
}

/// Why a node may not be decommissioned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undecommissionable {
    /// No such member, or one already removed.
    UnknownNode,
    /// It would leave `left` active or joining nodes; the replication factor needs `needed`.
    TooSmall { left: usize, needed: usize },
}

/// The command that starts decommissioning `node_id` (state `draining`: the planner empties
/// it, then marks it `removed`); None when it is draining already. Refused for an unknown or
/// removed node, and when fewer active or joining nodes than the replication factor would be
/// left.
pub fn decommission(meta: &MetaState, node_id: &str) -> Result<Option<MetaCommand>, Undecommissionable> {
    match meta.state_of(node_id) {
        None | Some(NodeState::Removed) => Err(Undecommissionable::UnknownNode),
        Some(NodeState::Draining) => Ok(None),
        Some(_) => {
            if let Some((left, needed)) = meta.too_small_without(node_id) {
                return Err(Undecommissionable::TooSmall { left, needed });
            }
            Ok(Some(MetaCommand::SetState {
                node_id: node_id.to_string(),
                state: NodeState::Draining,
            }))
        }
    }
}

/// The next commands: placements that start moves (within the limits) and node states.
pub fn plan(meta: &MetaState, actual: &BTreeMap<GroupId, LedGroup>, dead: &BTreeSet<RaftId>, limits: Limits) -> Vec<MetaCommand> {
    let groups = meta.groups;
    let meta_group = groups;
    let eligible: Vec<RaftId> = {
        let mut e: Vec<RaftId> = meta
            .members
            .values()
            .filter(|r| matches!(r.state, NodeState::Active | NodeState::Joining) && !dead.contains(&r.raft_id))
            .map(|r| r.raft_id)
            .collect();
        e.sort_unstable();
        e
    };
    let mut placement = meta.placement.clone();
    let mut commands = Vec::new();
    // Moves in flight, and the nodes they touch.
    let flying = moves_in_flight(meta, actual);
    let mut busy: BTreeSet<GroupId> = flying.iter().map(|m| m.group).collect();
    // A group no leader spoke of is left alone (its configuration is unknown).
    for g in 0..=meta_group {
        if !actual.contains_key(&g) {
            busy.insert(g);
        }
    }
    // A move that adds a dead node never finishes (found by the simulator: a node that died
    // while being added held its groups' moves for good): such a group may be placed again.
    for m in flying.iter().filter(|m| m.adding.iter().any(|n| dead.contains(n))) {
        busy.remove(&m.group);
    }
    let mut per_node: BTreeMap<RaftId, usize> = BTreeMap::new();
    for m in &flying {
        for n in m.adding.iter().chain(&m.removing) {
            *per_node.entry(*n).or_default() += 1;
        }
    }
    // Nor does such a move take a place among the moves in flight (found by the simulator: four
    // moves adding one dead node held the whole budget, so none of their groups was placed again).
    let live_moves = flying.iter().filter(|m| !m.adding.iter().any(|n| dead.contains(n))).count();
    let mut budget = limits.moves_in_flight.saturating_sub(live_moves);
    // Nodes that count towards a group's replicas: a dead one still does (its replicas are
    // rebuilt elsewhere, not dropped).
    let counted: BTreeSet<RaftId> = meta
        .members
        .values()
        .filter(|r| matches!(r.state, NodeState::Active | NodeState::Joining))
        .map(|r| r.raft_id)
        .collect();
    if !eligible.is_empty() {
        let r = meta.replication_factor.clamp(1, counted.len().max(1));
        let mut load: BTreeMap<RaftId, usize> = eligible.iter().map(|&n| (n, 0)).collect();
        for p in placement.iter().take(groups as usize) {
            for n in p {
                if let Some(l) = load.get_mut(n) {
                    *l += 1;
                }
            }
        }
        let free = |per_node: &BTreeMap<RaftId, usize>, n: RaftId| per_node.get(&n).copied().unwrap_or(0) < limits.moves_per_node;
        let mut changed: BTreeSet<GroupId> = BTreeSet::new();
        for g in 0..groups {
            if budget == 0 {
                break;
            }
            if busy.contains(&g) {
                continue;
            }
            let cur = placement[g as usize].clone();
            let least_loaded = |load: &BTreeMap<RaftId, usize>, per_node: &BTreeMap<RaftId, usize>| {
                eligible
                    .iter()
                    .filter(|n| !cur.contains(n) && free(per_node, **n))
                    .min_by_key(|n| (load[*n], **n))
                    .copied()
            };
            let mut remove = None;
            let mut add = None;
            if let Some(x) = cur.iter().find(|n| !load.contains_key(n)).copied() {
                // A replica on a node that is dead or leaving: rebuilt elsewhere first. One on
                // a leaving node may also just go when the group has more than it needs.
                add = least_loaded(&load, &per_node);
                let leaving = !counted.contains(&x);
                // A dead node does no work for a move: its moves are not limited per node.
                if (!dead.contains(&x) && !free(&per_node, x)) || (add.is_none() && !(leaving && cur.len() > r)) {
                    continue;
                }
                remove = Some(x);
            } else if cur.len() > r {
                remove = cur.iter().filter(|n| free(&per_node, **n)).max_by_key(|n| (load[*n], **n)).copied();
            } else if cur.len() < r {
                add = least_loaded(&load, &per_node);
            }
            if remove.is_none() && add.is_none() {
                let hi = cur.iter().filter(|n| free(&per_node, **n)).max_by_key(|n| (load[*n], **n)).copied();
                let lo = least_loaded(&load, &per_node);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    if load[&hi] > load[&lo] + 1 {
                        remove = Some(hi);
                        add = Some(lo);
                    }
                }
            }
            if remove.is_none() && add.is_none() {
                continue;
            }
            if let Some(x) = remove {
                if let Some(l) = load.get_mut(&x) {
                    *l -= 1;
                }
                *per_node.entry(x).or_default() += 1;
            }
            if let Some(x) = add {
                *load.get_mut(&x).expect("an added replica is on an eligible node") += 1;
                *per_node.entry(x).or_default() += 1;
            }
            let next = replace(&cur, remove, add);
            assert!(next.len() + 1 >= cur.len(), "a pass removes at most one replica of a group");
            placement[g as usize] = next;
            changed.insert(g);
            budget -= 1;
        }
        // Leaders: a placement's first replica; counts within one of each other.
        let mut leads: BTreeMap<RaftId, usize> = eligible.iter().map(|&n| (n, 0)).collect();
        for p in placement.iter().take(groups as usize) {
            if let Some(l) = p.first().and_then(|f| leads.get_mut(f)) {
                *l += 1;
            }
        }
        for (g, p) in placement.iter_mut().enumerate().take(groups as usize) {
            if busy.contains(&(g as GroupId)) {
                continue;
            }
            let Some(&first) = p.first() else { continue };
            let first_leads = leads.get(&first).copied().unwrap_or(usize::MAX);
            let best = p.iter().filter(|n| leads.contains_key(n)).min_by_key(|n| (leads[*n], **n)).copied();
            if let Some(best) = best {
                if best != first && leads[&best] + 1 < first_leads {
                    if let Some(l) = leads.get_mut(&first) {
                        *l -= 1;
                    }
                    *leads.get_mut(&best).expect("an eligible node") += 1;
                    let mut next = vec![best];
                    next.extend(p.iter().copied().filter(|&n| n != best));
                    *p = next;
                    changed.insert(g as GroupId);
                }
            }
        }
        // The metadata group: the first eligible nodes, up to META_VOTERS_MAX, one change a pass.
        let mg = meta_group as usize;
        if budget > 0 && !busy.contains(&meta_group) {
            let want = META_VOTERS_MAX.min(eligible.len());
            let cur = placement[mg].clone();
            // A dead node goes first: one that died while being added holds the group's moves
            // until it leaves the placement (found by the simulator, seed 5305: a draining node
            // was taken out each pass instead, the dead learner never, and the metadata group
            // never settled).
            let remove = cur
                .iter()
                .find(|n| dead.contains(n))
                .or_else(|| cur.iter().find(|n| !eligible.contains(n)))
                .copied()
                .or_else(|| (cur.len() > want).then(|| cur.iter().max().copied()).flatten());
            let after = cur.len() - usize::from(remove.is_some());
            let add = (after < want).then(|| eligible.iter().find(|n| !cur.contains(n)).copied()).flatten();
            if (remove.is_some() && (add.is_some() || cur.len() > want)) || add.is_some() {
                placement[mg] = replace(&cur, remove, add);
                changed.insert(meta_group);
            }
        }
        for g in changed {
            commands.push(MetaCommand::Place {
                group: g,
                replicas: placement[g as usize].clone(),
            });
        }
    }
    // Node states.
    let moving: BTreeSet<RaftId> = {
        let after: Vec<Move> = moves_in_flight(
            &MetaState {
                placement: placement.clone(),
                ..meta.clone()
            },
            actual,
        );
        after.iter().flat_map(|m| m.adding.iter().chain(&m.removing).copied()).collect()
    };
    // A group no leader spoke of may still have a replica anywhere: nothing is known to be
    // empty until every group was heard of (found by the simulator: a draining node removed
    // while one of its groups was electing left that group without a majority for good).
    let all_heard = (0..=meta_group).all(|g| actual.contains_key(&g));
    // Nor is a node out of every configuration before each group's last change is committed
    // by all its voters (`LedGroup::settled`): a voter still on the older configuration may
    // need the removed replica's vote (`MultiRaft::told_out` keeps the replica until then), and
    // a node marked removed exits.
    let all_settled = actual.values().all(|a| a.settled);
    for (node_id, r) in &meta.members {
        let named = !all_heard
            || placement.iter().any(|p| p.contains(&r.raft_id))
            || actual.values().any(|a| a.voters.contains(&r.raft_id) || a.learners.contains(&r.raft_id));
        match r.state {
            NodeState::Joining if !moving.contains(&r.raft_id) && !dead.contains(&r.raft_id) && (named || budget > 0) => {
                commands.push(MetaCommand::SetState {
                    node_id: node_id.clone(),
                    state: NodeState::Active,
                });
            }
            NodeState::Draining if !named && all_settled => commands.push(MetaCommand::SetState {
                node_id: node_id.clone(),
                state: NodeState::Removed,
            }),
            _ => {}
        }
    }
    commands
}

/// `cur` with `remove` replaced by `add` in its place (or `add` appended, or `remove` dropped).
fn replace(cur: &[RaftId], remove: Option<RaftId>, add: Option<RaftId>) -> Vec<RaftId> {
    let mut next: Vec<RaftId> = Vec::with_capacity(cur.len() + 1);
    let mut added = false;
    for &n in cur {
        if Some(n) == remove {
            if let Some(a) = add {
                next.push(a);
                added = true;
            }
        } else {
            next.push(n);
        }
    }
    if let (Some(a), false) = (add, added) {
        next.push(a);
    }
    next
}

#[cfg(test)]
#[path = "planner_tests.rs"]
mod tests;
