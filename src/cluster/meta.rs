//! The metadata group's state machine (DESIGN.md §8), sans-IO: membership (node id, raft id,
//! peer id, address, state), the placement of every shard group's replicas, and each node's
//! token-verification keys. It is one more raft group (on up to `META_VOTERS_MAX` nodes);
//! every replica applies the same commands in log order, so every replica holds the same
//! state. A command that does not fit the state is refused and changes nothing (counted and
//! logged by the caller) — a bad or replayed command never half-applies.

use super::membership::Membership;
use super::raft::{GroupId, RaftId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The metadata group lives on at most this many nodes (the first by raft id).
pub const META_VOTERS_MAX: usize = 5;
/// Limits on what one command may carry (a peer's command is untrusted input).
pub const MEMBERS_MAX: usize = 1024;
pub const KEYS_PER_NODE_MAX: usize = 16;
const TEXT_MAX: usize = 512;

/// Where a node is in its life in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Admitted; being given replicas.
    Joining,
    /// Serving its share.
    Active,
    /// Being emptied of replicas and leaderships before it leaves.
    Draining,
    /// Gone: holds nothing; its id may not come back with its old data.
    Removed,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
        }
    }

    /// The moves a node's state may make.
    fn may_become(self, next: NodeState) -> bool {
        use NodeState::*;
        matches!(
            (self, next),
            (Joining, Active) | (Joining, Draining) | (Joining, Removed) | (Active, Draining) | (Draining, Active) | (Draining, Removed)
        )
    }
}

/// A public key that verifies the access tokens a node issues (Ed25519, as in its JWKS).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VerificationKey {
    pub kid: String,
    /// The public key, base64url (the JWK's `x`).
    pub x: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub raft_id: RaftId,
    pub peer_id: String,
    pub address: String,
    pub state: NodeState,
    pub keys: Vec<VerificationKey>,
}

/// The replicated metadata of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetaState {
    /// Commands applied so far (each applied command moves it by one).
    pub version: u64,
    pub cluster_id: String,
    pub groups: u32,
    pub replication_factor: usize,
    pub master_fingerprint: String,
    /// Members by node id.
    pub members: BTreeMap<String, MemberRecord>,
    /// Per shard group (index `g`), then the metadata group (index `groups`): its replicas,
    /// the first where its leader belongs.
    pub placement: Vec<Vec<RaftId>>,
    /// The nodes that formed the cluster.
    pub founders: Vec<RaftId>,
    /// The raft id the next node to join gets (ids are never reused).
    pub next_raft_id: RaftId,
}

/// A change to the metadata, proposed to the metadata group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A node publishes the keys that verify the tokens it issues (replacing its earlier list).
    PublishKeys { node_id: String, keys: Vec<VerificationKey> },
    /// A new node is admitted (state `joining`, the next raft id).
    Join { node_id: String, peer_id: String, address: String },
    /// A member's peer identity (once: a cluster of one that starts listening for peers) and
    /// address (whenever it changes).
    Address { node_id: String, peer_id: String, address: String },
    /// A node's state moves (e.g. `active` once it holds its share, `draining` to leave).
    SetState { node_id: String, state: NodeState },
    /// A shard group's replicas change (the planner's decision, carried out by raft-rs's
    /// membership changes of the group).
    Place { group: GroupId, replicas: Vec<RaftId> },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaRefusal {
    #[error("no member `{0}`")]
    UnknownNode(String),
    #[error("node id `{0}` is taken by a member")]
    NodeIdTaken(String),
    #[error("peer id `{0}` is taken by a member")]
    PeerIdTaken(String),
    #[error("node `{node_id}` cannot go from {from} to {to}")]
    BadTransition { node_id: String, from: &'static str, to: &'static str },
    #[error("shard group {0} does not exist")]
    UnknownGroup(GroupId),
    #[error("placement of group {group} is invalid: {why}")]
    BadPlacement { group: GroupId, why: String },
    #[error("{0}")]
    Limit(String),
    #[error("decommissioning `{node_id}` would leave {left} active or joining nodes; the replication factor needs {needed}")]
    TooSmall { node_id: String, left: usize, needed: usize },
}

impl MetaState {
    /// Without `node_id`, the active or joining nodes left, when fewer than the replication
    /// factor needs: `(left, needed)`. (The rule a decommission must pass.)
    pub fn too_small_without(&self, node_id: &str) -> Option<(usize, usize)> {
        let left = self
            .members
            .iter()
            .filter(|(id, r)| id.as_str() != node_id && matches!(r.state, NodeState::Active | NodeState::Joining))
            .count();
        (left < self.replication_factor).then_some((left, self.replication_factor))
    }

    /// The metadata of a cluster as its founding nodes formed it: every member active, the
    /// formation's placement.
    pub fn formed(m: &Membership) -> MetaState {
        MetaState {
            version: 0,
            cluster_id: m.cluster_id.clone(),
            groups: m.groups,
            replication_factor: m.replication_factor,
            master_fingerprint: m.master_fingerprint.clone(),
            members: m
                .members
                .iter()
                .map(|x| {
                    let record = MemberRecord {
                        raft_id: x.raft_id,
                        peer_id: x.peer_id.clone(),
                        address: x.address.clone(),
                        state: NodeState::Active,
                        keys: Vec::new(),
                    };
                    (x.node_id.clone(), record)
                })
                .collect(),
            placement: (0..=m.groups).map(|g| m.replicas_of(g)).collect(),
            founders: m.members.iter().map(|x| x.raft_id).collect(),
            next_raft_id: m.members.iter().map(|x| x.raft_id).max().unwrap_or(0) + 1,
        }
    }

    /// The voters of the metadata group of a newly formed cluster: its first members by raft id.
    pub fn voters(m: &Membership) -> Vec<RaftId> {
        let mut ids: Vec<RaftId> = m.members.iter().map(|x| x.raft_id).collect();
        ids.sort_unstable();
        ids.truncate(META_VOTERS_MAX);
        ids
    }

    /// The members (all but the removed) and placement as a `Membership`: what routing and
    /// the peer protocol read.
    pub fn membership(&self) -> Membership {
        let mut members: Vec<super::membership::Member> = self
            .members
            .iter()
            .filter(|(_, r)| r.state != NodeState::Removed)
            .map(|(id, r)| super::membership::Member {
                node_id: id.clone(),
                raft_id: r.raft_id,
                peer_id: r.peer_id.clone(),
                address: r.address.clone(),
            })
            .collect();
        members.sort_by_key(|m| m.raft_id);
        Membership {
            cluster_id: self.cluster_id.clone(),
            members,
            groups: self.groups,
            replication_factor: self.replication_factor,
            master_fingerprint: self.master_fingerprint.clone(),
            placed: self.placement.clone(),
            founders: self.founders.clone(),
        }
    }

    pub fn state_of(&self, node_id: &str) -> Option<NodeState> {
        self.members.get(node_id).map(|r| r.state)
    }

    pub fn by_raft_id(&self, raft_id: RaftId) -> Option<(&String, &MemberRecord)> {
        self.members.iter().find(|(_, r)| r.raft_id == raft_id)
    }

    /// Every member's verification keys, deduplicated by key id (nodes of one cluster may
    /// share a signing key).
    pub fn verification_keys(&self) -> Vec<VerificationKey> {
        let mut by_kid: BTreeMap<&str, &VerificationKey> = BTreeMap::new();
        for r in self.members.values().filter(|r| r.state != NodeState::Removed) {
            for k in &r.keys {
                by_kid.entry(k.kid.as_str()).or_insert(k);
            }
        }
        by_kid.into_values().cloned().collect()
    }

    /// Applies one command; a refused one changes nothing.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<(), MetaRefusal> {
        match cmd {
            MetaCommand::PublishKeys { node_id, keys } => {
                if keys.len() > KEYS_PER_NODE_MAX {
                    return Err(MetaRefusal::Limit(format!("at most {KEYS_PER_NODE_MAX} keys per node")));
                }
                if keys.iter().any(|k| !fits(&k.kid) || !fits(&k.x)) {
                    return Err(MetaRefusal::Limit(format!("a key id or key is empty or over {TEXT_MAX} bytes")));
                }
                let record = self.members.get_mut(node_id).ok_or_else(|| MetaRefusal::UnknownNode(node_id.clone()))?;
                let mut keys = keys.clone();
                keys.sort();
                keys.dedup();
                record.keys = keys;
            }
            MetaCommand::Join { node_id, peer_id, address } => {
                if ![node_id, peer_id, address].iter().all(|s| fits(s)) {
                    return Err(MetaRefusal::Limit(format!("node id, peer id and address are 1–{TEXT_MAX} bytes")));
                }
                if self.members.len() >= MEMBERS_MAX {
                    return Err(MetaRefusal::Limit(format!("at most {MEMBERS_MAX} members")));
                }
                if self.members.get(node_id).is_some_and(|r| r.state != NodeState::Removed) {
                    return Err(MetaRefusal::NodeIdTaken(node_id.clone()));
                }
                // A removed node's id comes back only as a new node (a wiped folder: a new peer id).
                if self.members.values().any(|r| r.peer_id == *peer_id) {
                    return Err(MetaRefusal::PeerIdTaken(peer_id.clone()));
                }
                let record = MemberRecord {
                    raft_id: self.next_raft_id,
                    peer_id: peer_id.clone(),
                    address: address.clone(),
                    state: NodeState::Joining,
                    keys: Vec::new(),
                };
                self.next_raft_id += 1;
                self.members.insert(node_id.clone(), record);
            }
            MetaCommand::Address { node_id, peer_id, address } => {
                if ![peer_id, address].iter().all(|s| fits(s)) {
                    return Err(MetaRefusal::Limit(format!("peer id and address are 1–{TEXT_MAX} bytes")));
                }
                if self.members.iter().any(|(id, r)| id != node_id && r.peer_id == *peer_id) {
                    return Err(MetaRefusal::PeerIdTaken(peer_id.clone()));
                }
                let record = self.members.get_mut(node_id).ok_or_else(|| MetaRefusal::UnknownNode(node_id.clone()))?;
                if !record.peer_id.is_empty() && record.peer_id != *peer_id {
                    // A member's identity never changes: a node with a new key is a new node.
                    return Err(MetaRefusal::PeerIdTaken(peer_id.clone()));
                }
                record.peer_id = peer_id.clone();
                record.address = address.clone();
            }
            MetaCommand::SetState { node_id, state } => {
                let current = self.members.get(node_id).ok_or_else(|| MetaRefusal::UnknownNode(node_id.clone()))?.state;
                if current == *state {
                    // Already there: a retried command is a no-op, not an error.
                    self.version += 1;
                    return Ok(());
                }
                if !current.may_become(*state) {
                    return Err(MetaRefusal::BadTransition {
                        node_id: node_id.clone(),
                        from: current.as_str(),
                        to: state.as_str(),
                    });
                }
                // Checked again where it takes effect: two decommissions each allowed on its
                // own, proposed together, would leave too few (found by the simulator).
                if *state == NodeState::Draining {
                    if let Some((left, needed)) = self.too_small_without(node_id) {
                        return Err(MetaRefusal::TooSmall {
                            node_id: node_id.clone(),
                            left,
                            needed,
                        });
                    }
                }
                let record = self.members.get_mut(node_id).expect("checked above");
                record.state = *state;
            }
            MetaCommand::Place { group, replicas } => {
                let slot = self.placement.get(*group as usize).ok_or(MetaRefusal::UnknownGroup(*group))?;
                let bad = |why: &str| MetaRefusal::BadPlacement {
                    group: *group,
                    why: why.to_string(),
                };
                if replicas.is_empty() || replicas.len() > META_VOTERS_MAX.max(self.replication_factor) {
                    return Err(bad("a group has 1 to R replicas"));
                }
                let mut distinct = replicas.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if distinct.len() != replicas.len() {
                    return Err(bad("two replicas on one node"));
                }
                for id in replicas {
                    match self.by_raft_id(*id) {
                        Some((_, r)) if r.state != NodeState::Removed => {}
                        _ => return Err(bad(&format!("raft id {id} is not a member"))),
                    }
                }
                // The group's leader moves its replicas one raft membership change at a time
                // and removes an old replica only once its replacement is a voter, so the data
                // always has a source; a placement may name nodes only.
                let _ = slot;
                self.placement[*group as usize] = replicas.clone();
            }
        }
        self.version += 1;
        Ok(())
    }
}

fn fits(s: &str) -> bool {
    !s.is_empty() && s.len() <= TEXT_MAX
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::Hello;

    fn formed(n: usize) -> MetaState {
        let hellos: Vec<Hello> = (1..=n)
            .map(|i| Hello {
                node_id: format!("n{i}"),
                peer_id: format!("peer-{i}"),
                address: format!("127.0.0.1:70{i:02}"),
                master_fingerprint: "fp".into(),
                groups: 8,
                replication_factor: 3,
                formed: None,
            })
            .collect();
        MetaState::formed(&Membership::form(&hellos, 8, 3).unwrap())
    }

    #[test]
    fn two_decommissions_proposed_together_never_leave_too_few_nodes() {
        let mut s = formed(4);
        // Each is allowed on its own (three would be left)...
        let a = crate::cluster::planner::decommission(&s, "n1").unwrap().unwrap();
        let b = crate::cluster::planner::decommission(&s, "n2").unwrap().unwrap();
        s.apply(&a).unwrap();
        // ...but not both: the second is refused where it takes effect, and changes nothing.
        let before = s.clone();
        assert_eq!(
            s.apply(&b),
            Err(MetaRefusal::TooSmall {
                node_id: "n2".into(),
                left: 2,
                needed: 3
            })
        );
        assert_eq!(s, before);
        assert_eq!(s.members["n2"].state, NodeState::Active);
    }

    fn key(kid: &str) -> VerificationKey {
        VerificationKey {
            kid: kid.into(),
            x: format!("x-{kid}"),
        }
    }

    #[test]
    fn a_formed_cluster_is_active_with_its_placement_and_at_most_five_voters() {
        let s = formed(3);
        assert_eq!(s.members.len(), 3);
        assert!(s.members.values().all(|r| r.state == NodeState::Active));
        assert_eq!(s.placement.len(), 9, "eight shard groups and the metadata group");
        assert!(s.placement.iter().all(|p| p.len() == 3));
        assert_eq!(s.next_raft_id, 4);
        let hellos: Vec<Hello> = (1..=7)
            .map(|i| Hello {
                node_id: format!("n{i}"),
                peer_id: format!("p{i}"),
                address: "a".into(),
                master_fingerprint: "fp".into(),
                groups: 8,
                replication_factor: 3,
                formed: None,
            })
            .collect();
        assert_eq!(MetaState::voters(&Membership::form(&hellos, 8, 3).unwrap()), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn keys_are_published_per_node_and_listed_once_per_key_id() {
        let mut s = formed(3);
        s.apply(&MetaCommand::PublishKeys {
            node_id: "n1".into(),
            keys: vec![key("k1"), key("shared")],
        })
        .unwrap();
        s.apply(&MetaCommand::PublishKeys {
            node_id: "n2".into(),
            keys: vec![key("shared")],
        })
        .unwrap();
        assert_eq!(s.verification_keys(), vec![key("k1"), key("shared")]);
        assert_eq!(s.version, 2);
        let too_many: Vec<_> = (0..=KEYS_PER_NODE_MAX).map(|i| key(&format!("k{i}"))).collect();
        let before = s.clone();
        assert!(matches!(
            s.apply(&MetaCommand::PublishKeys {
                node_id: "n1".into(),
                keys: too_many
            }),
            Err(MetaRefusal::Limit(_))
        ));
        assert!(matches!(
            s.apply(&MetaCommand::PublishKeys {
                node_id: "ghost".into(),
                keys: vec![]
            }),
            Err(MetaRefusal::UnknownNode(_))
        ));
        assert_eq!(s, before, "a refused command changes nothing");
    }

    #[test]
    fn a_node_joins_with_a_new_raft_id_and_moves_only_along_its_life() {
        let mut s = formed(3);
        let join = MetaCommand::Join {
            node_id: "n4".into(),
            peer_id: "peer-4".into(),
            address: "127.0.0.1:7004".into(),
        };
        s.apply(&join).unwrap();
        assert_eq!(s.members["n4"].raft_id, 4);
        assert_eq!(s.members["n4"].state, NodeState::Joining);
        assert_eq!(s.apply(&join), Err(MetaRefusal::NodeIdTaken("n4".into())));
        let set = |state| MetaCommand::SetState { node_id: "n4".into(), state };
        s.apply(&set(NodeState::Active)).unwrap();
        s.apply(&set(NodeState::Active)).unwrap();
        s.apply(&set(NodeState::Draining)).unwrap();
        s.apply(&set(NodeState::Removed)).unwrap();
        assert!(
            matches!(s.apply(&set(NodeState::Active)), Err(MetaRefusal::BadTransition { .. })),
            "removed is final"
        );
        // A node still joining may be decommissioned at once.
        s.apply(&MetaCommand::Join {
            node_id: "n9".into(),
            peer_id: "peer-9".into(),
            address: "127.0.0.1:7009".into(),
        })
        .unwrap();
        s.apply(&MetaCommand::SetState {
            node_id: "n9".into(),
            state: NodeState::Draining,
        })
        .unwrap();
        // The removed id comes back only as a new node (another peer id), with a new raft id.
        assert_eq!(s.apply(&join), Err(MetaRefusal::PeerIdTaken("peer-4".into())));
        s.apply(&MetaCommand::Join {
            node_id: "n4".into(),
            peer_id: "peer-4b".into(),
            address: "127.0.0.1:7004".into(),
        })
        .unwrap();
        assert_eq!(s.members["n4"].raft_id, 6);
    }

    #[test]
    fn a_cluster_of_one_learns_its_peer_identity_once_and_its_address_whenever_it_moves() {
        let mut s = MetaState::formed(&Membership::single("solo", 8, "fp"));
        let addr = |peer: &str, address: &str| MetaCommand::Address {
            node_id: "solo".into(),
            peer_id: peer.into(),
            address: address.into(),
        };
        s.apply(&addr("peer-a", "127.0.0.1:7070")).unwrap();
        s.apply(&addr("peer-a", "10.0.0.1:7070")).unwrap();
        assert_eq!(s.members["solo"].address, "10.0.0.1:7070");
        let before = s.clone();
        assert_eq!(s.apply(&addr("peer-b", "10.0.0.1:7070")), Err(MetaRefusal::PeerIdTaken("peer-b".into())));
        assert_eq!(s, before);
    }

    #[test]
    fn a_placement_names_distinct_members_within_the_limit() {
        let mut s = formed(3);
        s.apply(&MetaCommand::Join {
            node_id: "n4".into(),
            peer_id: "peer-4".into(),
            address: "a".into(),
        })
        .unwrap();
        let current = s.placement[0].clone();
        let before = s.clone();
        let place = |replicas: Vec<RaftId>| MetaCommand::Place { group: 0, replicas };
        assert!(matches!(s.apply(&place(vec![1, 1, 2])), Err(MetaRefusal::BadPlacement { .. })));
        assert!(matches!(s.apply(&place(vec![9])), Err(MetaRefusal::BadPlacement { .. })));
        assert!(matches!(s.apply(&place(vec![1, 2, 3, 4, 9, 10])), Err(MetaRefusal::BadPlacement { .. })));
        assert!(matches!(
            s.apply(&MetaCommand::Place { group: 9, replicas: vec![1] }),
            Err(MetaRefusal::UnknownGroup(9))
        ));
        assert_eq!(s, before);
        let mut moved = current.clone();
        moved.push(4);
        s.apply(&place(moved.clone())).unwrap();
        assert_eq!(s.placement[0], moved);
    }
}
