//! What an operator sees of the cluster (`GET /v1/cluster`, `moneta cluster status`): members
//! with their state and reachability, and every group's leader, replicas, term and indexes as
//! this node's replica knows them.

use super::directory::LedGroup;
use super::membership::Membership;
use super::meta::MetaState;
use super::raft::{GroupId, GroupStatus, RaftId};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub node_id: String,
    pub address: String,
    /// joining, active, draining or removed (from the metadata group).
    pub state: &'static str,
    pub reachable: bool,
    pub groups_led: usize,
    pub replicas: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupView {
    pub group: u32,
    pub leader: Option<String>,
    pub replicas: Vec<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterView {
    pub cluster_id: String,
    pub nodes: Vec<NodeView>,
    pub groups: Vec<GroupView>,
    /// The metadata group (membership, placement, verification keys): its leader, replicas,
    /// term and indexes as this node knows them, and how many changes it has applied.
    pub metadata: MetadataView,
    /// Replica moves in progress: groups whose configuration is not yet their placement.
    pub moves: Vec<MoveView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MoveView {
    pub group: u32,
    /// Nodes the group is gaining a replica on (a learner catching up, or to be added).
    pub adding: Vec<String>,
    /// Nodes the group is losing its replica on (once the new ones vote).
    pub removing: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetadataView {
    #[serde(flatten)]
    pub group: GroupView,
    /// Metadata changes applied by this node's replica (None: no replica here).
    pub version: Option<u64>,
}

/// Builds the view from the membership, the metadata (when this node holds a replica of it),
/// this node's replicas and whom it heard from lately.
pub fn view(
    membership: &Membership,
    meta: Option<&MetaState>,
    me: RaftId,
    statuses: &[GroupStatus],
    led: &BTreeMap<GroupId, (RaftId, LedGroup)>,
    reachable: impl Fn(RaftId) -> bool,
) -> ClusterView {
    let name = |id: RaftId| membership.member(id).map_or_else(|| format!("raft:{id}"), |m| m.node_id.clone());
    // A group as this node's replica knows it, else as its leader said lately, else where it
    // is placed.
    let group_view = |g: u32, placed: Vec<RaftId>| match (statuses.iter().find(|s| s.group == g), led.get(&g)) {
        (Some(s), _) => GroupView {
            group: g,
            leader: s.leader.map(name),
            replicas: s.voters.iter().map(|&v| name(v)).collect(),
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
        },
        (None, Some((leader, l))) => GroupView {
            group: g,
            leader: Some(name(*leader)),
            replicas: l.voters.iter().map(|&v| name(v)).collect(),
            term: l.term,
            commit_index: l.commit_index,
            applied_index: 0,
        },
        (None, None) => GroupView {
            group: g,
            leader: None,
            replicas: placed.into_iter().map(name).collect(),
            term: 0,
            commit_index: 0,
            applied_index: 0,
        },
    };
    let metadata = MetadataView {
        group: group_view(membership.groups, membership.meta_replicas()),
        version: meta.map(|m| m.version),
    };
    let actual: BTreeMap<GroupId, LedGroup> = led.iter().map(|(g, (_, l))| (*g, l.clone())).collect();
    let placement: Vec<Vec<RaftId>> = (0..=membership.groups).map(|g| membership.replicas_of(g)).collect();
    let moves = super::planner::moves_between(&placement, &actual)
        .into_iter()
        .map(|m| MoveView {
            group: m.group,
            adding: m.adding.into_iter().map(name).collect(),
            removing: m.removing.into_iter().map(name).collect(),
        })
        .collect();
    let state_of = |node_id: &str| meta.and_then(|m| m.members.get(node_id)).map_or("active", |r| r.state.as_str());
    let groups: Vec<GroupView> = (0..membership.groups).map(|g| group_view(g, membership.placement(g))).collect();
    let nodes = membership
        .members
        .iter()
        .map(|m| NodeView {
            node_id: m.node_id.clone(),
            address: m.address.clone(),
            state: state_of(&m.node_id),
            reachable: m.raft_id == me || reachable(m.raft_id),
            groups_led: groups.iter().filter(|g| g.leader.as_deref() == Some(m.node_id.as_str())).count(),
            replicas: groups.iter().filter(|g| g.replicas.contains(&m.node_id)).count(),
        })
        // A node decommissioned (or dropped) is no member any more, but the metadata keeps its
        // record: it is listed as `removed` (holding and leading nothing), so an operator who
        // decommissioned it sees it done rather than see it vanish.
        .chain(
            meta.into_iter()
                .flat_map(|m| m.members.iter())
                .filter(|(id, r)| r.state == super::meta::NodeState::Removed && membership.by_node_id(id).is_none())
                .map(|(id, r)| NodeView {
                    node_id: id.clone(),
                    address: r.address.clone(),
                    state: r.state.as_str(),
                    reachable: false,
                    groups_led: 0,
                    replicas: 0,
                }),
        )
        .collect();
    ClusterView {
        cluster_id: membership.cluster_id.clone(),
        nodes,
        groups,
        metadata,
        moves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::meta::{MemberRecord, NodeState};

    fn record(raft_id: RaftId, state: NodeState) -> MemberRecord {
        MemberRecord {
            raft_id,
            peer_id: String::new(),
            address: format!("127.0.0.1:{}", 7000 + raft_id),
            state,
            keys: Vec::new(),
        }
    }

    #[test]
    fn a_decommissioned_node_is_listed_as_removed_holding_and_leading_nothing() {
        let membership = Membership::single("n1", 4, "fp");
        let mut meta = MetaState::default();
        meta.members.insert("n1".into(), record(1, NodeState::Active));
        meta.members.insert("n2".into(), record(2, NodeState::Removed));
        let v = view(&membership, Some(&meta), 1, &[], &BTreeMap::new(), |_| true);
        let ids: Vec<(&str, &str)> = v.nodes.iter().map(|n| (n.node_id.as_str(), n.state)).collect();
        assert_eq!(ids, [("n1", "active"), ("n2", "removed")]);
        let n2 = &v.nodes[1];
        assert!(!n2.reachable && n2.replicas == 0 && n2.groups_led == 0, "{n2:?}");
        assert_eq!(n2.address, "127.0.0.1:7002");
        // Without the metadata (no replica of it here) only the members are known.
        let v = view(&membership, None, 1, &[], &BTreeMap::new(), |_| true);
        assert_eq!(v.nodes.len(), 1);
    }
}
