//! What the router tells of the cluster: its view for operators, the metadata (this node's
//! replica's or a member's), the groups it leads, whether it hears a majority, and a test hook
//! that cuts links.

use super::*;

impl Router {
    /// The cluster as this node sees it (a cluster of one when it has no peers).
    pub fn cluster_view(&self, node_id: &str) -> crate::cluster::status::ClusterView {
        let journal = &self.inner.journal;
        let (membership, led) = match self.inner.remote.get() {
            Some(r) => ((*r.directory.get()).clone(), r.directory.led_groups()),
            None => (
                crate::cluster::membership::Membership::single(node_id, self.inner.env.store.groups(), ""),
                Default::default(),
            ),
        };
        let statuses = journal.group_status();
        let meta = journal.meta();
        crate::cluster::status::view(&membership, meta.as_ref(), journal.raft_id(), &statuses, &led, |id| {
            journal.heard_from(id, Duration::from_secs(2))
        })
    }

    /// The cluster's metadata: this node's replica's, else a member's (None: none reachable).
    pub async fn metadata(&self) -> Option<crate::cluster::meta::MetaState> {
        if let Some(m) = self.inner.journal.meta() {
            return Some(m);
        }
        let remote = self.inner.remote.get()?;
        crate::cluster::coordinator::fetch_meta(&remote.transport, &remote.directory.get(), remote.me).await
    }

    /// The cluster's metadata as another member holds it (None: no member answers).
    pub async fn metadata_of_members(&self) -> Option<crate::cluster::meta::MetaState> {
        let remote = self.inner.remote.get()?;
        crate::cluster::coordinator::fetch_meta(&remote.transport, &remote.directory.get(), remote.me).await
    }

    /// Cuts this node's links to these members (partition tests; empty heals).
    pub fn cut_links(&self, node_ids: &[String]) -> Result<(), String> {
        let remote = self.inner.remote.get().ok_or("this node has no peers")?;
        let mut peers = std::collections::HashSet::new();
        for id in node_ids {
            let m = remote.directory.get().by_node_id(id).cloned().ok_or_else(|| format!("no member `{id}`"))?;
            peers.insert(m.peer_id.parse().map_err(|_| format!("member `{id}` has no peer id"))?);
        }
        remote.transport.cut_links(peers);
        Ok(())
    }

    /// The shard groups this node leads (and serves) now: the ones whose jobs it runs.
    pub fn led_groups(&self) -> crate::storage::scope::Groups {
        let groups = self.inner.env.store.groups();
        crate::storage::scope::Groups::only((0..groups).filter(|g| self.inner.journal.leadership(*g).served))
    }

    /// Whether this node hears from a majority of the metadata group's replicas (itself
    /// counted; every member gossips every 300 ms). Cut off from it, the node can serve
    /// nothing a majority must agree to: its readiness says so, and a load balancer sends its
    /// clients elsewhere. A node of no cluster always does.
    pub fn hears_majority(&self) -> bool {
        let Some(remote) = self.inner.remote.get() else { return true };
        let m = remote.directory.get();
        let voters: Vec<crate::cluster::raft::RaftId> = match m.placed.get(m.groups as usize) {
            Some(p) if !p.is_empty() => p.clone(),
            _ => m.members.iter().map(|x| x.raft_id).collect(),
        };
        if voters.len() <= 1 {
            return true;
        }
        let heard = voters
            .iter()
            .filter(|&&v| v == remote.me || self.inner.journal.heard_from(v, HEARD_WITHIN))
            .count();
        heard * 2 > voters.len()
    }

    /// This node runs the cluster's price feed: it serves the group of the jobs shard.
    pub fn leads_jobs(&self) -> bool {
        let g = crate::domain::ids::group_of(crate::storage::keys::JOBS_SHARD, self.inner.env.store.groups());
        self.inner.journal.leadership(g).served
    }
}
