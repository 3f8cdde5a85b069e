//! Who is in the cluster and where each shard group's replicas live. Sans-IO: the nodes that
//! form a cluster together (`bootstrap_expect`) each compute the same membership and placement
//! from the same introductions, so the first voters of every group agree without a protocol of
//! our own; after that, raft carries every change.

use super::raft::{GroupId, RaftId};
use serde::{Deserialize, Serialize};

/// How a node introduces itself to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: String,
    /// Its libp2p identity (base58), which authenticates every frame it sends.
    pub peer_id: String,
    /// Where peers dial it (host:port).
    pub address: String,
    /// SHA-256 of the master key: every member must hold the same key.
    pub master_fingerprint: String,
    pub groups: u32,
    pub replication_factor: usize,
    /// The cluster it belongs to, once formed.
    pub formed: Option<Membership>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub raft_id: RaftId,
    pub peer_id: String,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub cluster_id: String,
    pub members: Vec<Member>,
    pub groups: u32,
    pub replication_factor: usize,
    pub master_fingerprint: String,
    /// Where each shard group's replicas are (index `g`), then the metadata group's (index
    /// `groups`), as the metadata group holds it; empty for a cluster just formed (the
    /// formation's placement, computed).
    pub placed: Vec<Vec<RaftId>>,
    /// The nodes that formed the cluster (they bootstrap its groups).
    pub founders: Vec<RaftId>,
}

impl Membership {
    /// A cluster of one (raft id 1), as a node with no peers runs.
    pub fn single(node_id: &str, groups: u32, master_fingerprint: &str) -> Membership {
        Membership::form(
            &[Hello {
                node_id: node_id.to_string(),
                peer_id: String::new(),
                address: String::new(),
                master_fingerprint: master_fingerprint.to_string(),
                groups,
                replication_factor: 1,
                formed: None,
            }],
            groups,
            1,
        )
        .expect("a cluster of one forms")
    }

    /// Forms a cluster from the introductions of its first nodes (this one among them). Raft
    /// ids follow the order of node ids, so every node computes the same membership.
    pub fn form(hellos: &[Hello], groups: u32, replication_factor: usize) -> Result<Membership, String> {
        let mut sorted: Vec<&Hello> = hellos.iter().collect();
        sorted.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        for w in sorted.windows(2) {
            if w[0].node_id == w[1].node_id {
                return Err(format!(
                    "node id `{}` is used by two nodes; [node] id must be unique in the cluster",
                    w[0].node_id
                ));
            }
        }
        // One libp2p identity is one node: a peer introducing itself under two node ids must
        // not count twice (two votes in every group it is placed in twice).
        let mut peers: Vec<&Hello> = sorted.clone();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        for w in peers.windows(2) {
            if w[0].peer_id == w[1].peer_id {
                return Err(format!(
                    "nodes `{}` and `{}` have the same peer identity; each node needs its own data folder (node.key)",
                    w[0].node_id, w[1].node_id
                ));
            }
        }
        let first = sorted.first().ok_or("no nodes to form a cluster of")?;
        for h in &sorted {
            if h.master_fingerprint != first.master_fingerprint {
                return Err(format!(
                    "node `{}` holds another master key than node `{}`; every node of a cluster needs the same [security] master_key_file",
                    h.node_id, first.node_id
                ));
            }
            if h.groups != groups {
                return Err(format!(
                    "node `{}` is configured with {} shard groups, this node with {groups}",
                    h.node_id, h.groups
                ));
            }
        }
        let members: Vec<Member> = sorted
            .iter()
            .enumerate()
            .map(|(i, h)| Member {
                node_id: h.node_id.clone(),
                raft_id: i as RaftId + 1,
                peer_id: h.peer_id.clone(),
                address: h.address.clone(),
            })
            .collect();
        let mut digest = sha2::Sha256::new();
        use sha2::Digest;
        for m in &members {
            digest.update(m.node_id.as_bytes());
            digest.update([0]);
            digest.update(m.peer_id.as_bytes());
            digest.update([0]);
        }
        Ok(Membership {
            cluster_id: format!("cls_{}", &hex::encode(digest.finalize())[..24]),
            groups,
            replication_factor,
            master_fingerprint: first.master_fingerprint.clone(),
            placed: Vec::new(),
            founders: members.iter().map(|m| m.raft_id).collect(),
            members,
        })
    }

    /// Founded the cluster (and so bootstraps its first replicas on a new folder); a node that
    /// joined later is given its replicas by raft's membership changes.
    pub fn is_founder(&self, raft_id: RaftId) -> bool {
        self.founders.contains(&raft_id)
    }

    /// The replicas of the metadata group: as placed, else the first `META_VOTERS_MAX` members.
    pub fn meta_replicas(&self) -> Vec<RaftId> {
        match self.placed.get(self.groups as usize) {
            Some(p) if !p.is_empty() => p.clone(),
            _ => {
                let mut ids: Vec<RaftId> = self.members.iter().map(|x| x.raft_id).collect();
                ids.sort_unstable();
                ids.truncate(super::meta::META_VOTERS_MAX);
                ids
            }
        }
    }

    /// The replicas of any group, the metadata group (`groups`) included.
    pub fn replicas_of(&self, group: GroupId) -> Vec<RaftId> {
        if group == self.groups {
            self.meta_replicas()
        } else {
            self.placement(group)
        }
    }

    /// A group of the cluster: a shard group (`0..groups`) or the metadata group (`groups`).
    pub fn has_group(&self, group: GroupId) -> bool {
        group <= self.groups
    }

    pub fn member(&self, raft_id: RaftId) -> Option<&Member> {
        self.members.iter().find(|m| m.raft_id == raft_id)
    }

    pub fn by_node_id(&self, node_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.node_id == node_id)
    }

    pub fn by_peer_id(&self, peer_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.peer_id == peer_id)
    }

    /// Replicas of a group: R consecutive members (in raft-id order) starting at g mod N; the
    /// first is where its leader belongs, so leaders spread evenly (each node within one of
    /// G/N).
    pub fn placement(&self, group: GroupId) -> Vec<RaftId> {
        if let Some(p) = self.placed.get(group as usize).filter(|p| !p.is_empty()) {
            return p.clone();
        }
        let n = self.members.len();
        let r = self.replication_factor.clamp(1, n.max(1));
        (0..r).map(|k| self.members[(group as usize + k) % n].raft_id).collect()
    }

    pub fn preferred_leader(&self, group: GroupId) -> Option<RaftId> {
        self.replicas_of(group).first().copied()
    }

    /// Groups with a replica on `raft_id`.
    pub fn groups_of(&self, raft_id: RaftId) -> Vec<GroupId> {
        (0..self.groups).filter(|&g| self.placement(g).contains(&raft_id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str) -> Hello {
        Hello {
            node_id: id.into(),
            peer_id: format!("peer-{id}"),
            address: format!("{id}:7070"),
            master_fingerprint: "fp".into(),
            groups: 32,
            replication_factor: 3,
            formed: None,
        }
    }

    #[test]
    fn every_node_forms_the_same_cluster_whatever_order_it_heard_of_the_others() {
        let a = Membership::form(&[hello("n2"), hello("n1"), hello("n3")], 32, 3).unwrap();
        let b = Membership::form(&[hello("n3"), hello("n2"), hello("n1")], 32, 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.by_node_id("n1").unwrap().raft_id, 1);
        // Three replicas of every group on distinct nodes, leaders spread within one of G/N.
        let mut leads = [0usize; 3];
        for g in 0..32 {
            let p = a.placement(g);
            assert_eq!(p.len(), 3);
            assert_eq!(p.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
            leads[(a.preferred_leader(g).unwrap() - 1) as usize] += 1;
        }
        assert!(leads.iter().all(|&l| (10..=11).contains(&l)), "{leads:?}");
    }

    #[test]
    fn duplicate_node_ids_and_another_master_key_are_refused() {
        let e = Membership::form(&[hello("n1"), hello("n1")], 32, 3).unwrap_err();
        assert!(e.contains("unique"), "{e}");
        let mut other = hello("n2");
        other.master_fingerprint = "other".into();
        let e = Membership::form(&[hello("n1"), other], 32, 3).unwrap_err();
        assert!(e.contains("master_key_file"), "{e}");
    }

    #[test]
    fn one_peer_introducing_itself_under_two_node_ids_is_refused() {
        let mut twin = hello("n2");
        twin.peer_id = hello("n1").peer_id;
        let e = Membership::form(&[hello("n1"), twin, hello("n3")], 32, 3).unwrap_err();
        assert!(e.contains("same peer identity"), "{e}");
    }

    #[test]
    fn the_metadata_group_is_the_last_group_of_the_cluster() {
        let m = Membership::single("solo", 4, "fp");
        assert!(m.has_group(0) && m.has_group(4));
        assert!(!m.has_group(5) && !m.has_group(4_000_000_000));
    }

    #[test]
    fn replication_is_capped_by_the_number_of_nodes() {
        let m = Membership::single("solo", 8, "fp");
        assert_eq!(m.placement(5), vec![1]);
        assert_eq!(m.groups_of(1).len(), 8);
    }
}
