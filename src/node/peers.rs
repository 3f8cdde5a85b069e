//! The node's side of the cluster at start-up: the peer transport, forming or rejoining the
//! cluster, and what serves peers once the router runs.

use super::*;

/// Starts the peer transport and forms the cluster (or reopens the one this folder belongs to):
/// the router's raft wiring, and what to serve peers with once the router runs.
pub(super) async fn join_cluster(config: &Config, store: &Store, master: &[u8], metrics: &Metrics) -> Result<(RouterCluster, PeerService), String> {
    use crate::cluster::{membership::Hello, peer, transport};
    let c = &config.cluster;
    let secret = crate::cluster::secret::load(&c.secret_file)?;
    let keypair = peer::node_keypair(&config.node.data_dir)?;
    let listen = transport::multiaddr(&c.listen).map_err(|e| format!("key `cluster.listen`: {e}"))?;
    let (t, mut inbound, bound) = transport::Transport::start(keypair, secret, listen, transport::Limits::default(), metrics.peer.transport.clone()).await?;
    tracing::info!(listen = %bound, peer = %t.local_peer, "listening for cluster peers");
    let fingerprint = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(master))
    };
    // The cluster this folder belongs to: as recorded, else (a cluster of one that now listens
    // for peers) as its metadata group holds it.
    let stored = match peer::stored_membership(store)? {
        Some(m) => Some(m),
        None => store.meta_state().map_err(|e| e.to_string())?.map(|m| m.membership()),
    };
    let mut me = Hello {
        node_id: config.node.id.clone(),
        peer_id: t.local_peer.to_base58(),
        address: c.advertised().to_string(),
        master_fingerprint: fingerprint.clone(),
        groups: c.groups,
        replication_factor: c.replication_factor,
        formed: stored.clone(),
    };
    let membership = match stored {
        Some(m) => m,
        None => {
            let m = peer::form(&t, &mut inbound, me.clone(), &c.join, c.bootstrap_expect, Duration::from_secs(300)).await?;
            peer::store_membership(store, &m)?;
            tracing::info!(cluster = %m.cluster_id, members = m.members.len(), "cluster formed");
            m
        }
    };
    if membership.master_fingerprint != fingerprint {
        return Err(
            "this node's master key differs from the cluster's (a fingerprint in its membership); every node needs the same [security] master_key_file".into(),
        );
    }
    let mine = membership
        .by_node_id(&config.node.id)
        .ok_or_else(|| format!("node `{}` is not a member of cluster {}", config.node.id, membership.cluster_id))?
        .clone();
    // (An empty identity: a cluster of one that never listened; it records its own now.)
    if !mine.peer_id.is_empty() && mine.peer_id != t.local_peer.to_base58() {
        return Err(format!(
            "node `{}` is a member with another identity; was its data folder's node.key replaced?",
            config.node.id
        ));
    }
    for m in &membership.members {
        if let (Ok(peer), Ok(addr)) = (m.peer_id.parse(), transport::multiaddr(&m.address)) {
            if m.raft_id != mine.raft_id {
                t.add_address(peer, addr).await;
            }
        }
    }
    // A node removed from the cluster while it was down learns it now, from any member.
    if membership.members.len() > 1 {
        let asked = tokio::time::timeout(Duration::from_secs(6), crate::cluster::coordinator::fetch_meta(&t, &membership, mine.raft_id)).await;
        if let Ok(Some(meta)) = asked {
            if meta.state_of(&config.node.id) == Some(crate::cluster::meta::NodeState::Removed) {
                return Err(format!(
                    "node `{}` was removed from the cluster (decommissioned) and does not come back with its old data; start it on an empty data folder to join as a new node",
                    config.node.id
                ));
            }
        }
    }
    me.formed = Some(membership.clone());
    let directory = crate::cluster::directory::Directory::new(membership);
    let snapshots_out = crate::cluster::snapshots::Outbox::new(c.snapshot_bytes_per_second);
    let sink = peer::peer_sink(t.clone(), directory.clone(), mine.raft_id, snapshots_out.clone());
    Ok((
        (mine.raft_id, directory.clone(), sink),
        PeerService {
            transport: t,
            inbound,
            me,
            directory,
            raft_id: mine.raft_id,
            store: store.clone(),
            snapshots_out,
            snapshots_in: crate::cluster::snapshots::Inbox::new(config.node.data_dir.join("snapshots")),
            counters: metrics.peer.layer.clone(),
        },
    ))
}

pub(super) type RouterCluster = (
    crate::cluster::raft::RaftId,
    Arc<crate::cluster::directory::Directory>,
    crate::actors::journal::PeerSink,
);

/// What serves peers once the router runs.
pub(super) struct PeerService {
    transport: crate::cluster::transport::Transport,
    inbound: tokio::sync::mpsc::Receiver<crate::cluster::transport::Inbound>,
    me: crate::cluster::membership::Hello,
    directory: Arc<crate::cluster::directory::Directory>,
    raft_id: crate::cluster::raft::RaftId,
    store: Store,
    snapshots_out: Arc<crate::cluster::snapshots::Outbox>,
    snapshots_in: Arc<crate::cluster::snapshots::Inbox>,
    counters: crate::cluster::peer::PeerCounters,
}

impl PeerService {
    pub(super) fn spawn(self, router: &Router, services: &Arc<Services>) {
        use crate::cluster::coordinator;
        let config = &services.config;
        let (t, d, me) = (self.transport.clone(), self.directory.clone(), self.raft_id);
        let _ = services.session_broadcast.set(Arc::new(move |sessions| {
            let (t, d) = (t.clone(), d.clone());
            Box::pin(async move { crate::cluster::peer::broadcast_revocation(&t, &d.get(), me, sessions).await })
        }));
        let left = services.left_cluster.clone();
        let follow = coordinator::follow_metadata(
            router.journal().clone(),
            self.directory.clone(),
            self.transport.clone(),
            self.store.clone(),
            config.node.id.clone(),
        );
        tokio::spawn(async move {
            follow.await;
            left.notify_one();
        });
        tokio::spawn(coordinator::publish_address(
            router.clone(),
            config.node.id.clone(),
            self.me.peer_id.clone(),
            self.me.address.clone(),
        ));
        tokio::spawn(coordinator::gossip_leads(
            router.journal().clone(),
            self.directory.clone(),
            self.transport.clone(),
        ));
        tokio::spawn(coordinator::run_planner(
            router.clone(),
            self.directory.clone(),
            config.cluster.planner_limits(),
            config.cluster.dead_after,
        ));
        let weak = Arc::downgrade(services);
        let revoke: crate::cluster::peer::LocalRevoke = Arc::new(move |sessions| {
            if let Some(s) = weak.upgrade() {
                for sid in sessions {
                    s.revoke_session(&sid);
                }
            }
        });
        router.set_remote(crate::cluster::router::Remote {
            transport: self.transport.clone(),
            directory: self.directory.clone(),
            me: self.raft_id,
        });
        let (t, d, j) = (self.transport.clone(), self.directory.clone(), router.journal().clone());
        let metrics = router.metrics().clone();
        router.journal().set_forwarder(Arc::new(move |to, writes| {
            let (t, d, j) = (t.clone(), d.clone(), j.clone());
            metrics.raft.forwarded.get_or_create(&crate::telemetry::KindLabels { kind: "write" }).inc();
            Box::pin(async move { crate::cluster::peer::forward_write(&t, &d.get(), &j, to, writes).await })
        }));
        let (t, d) = (self.transport.clone(), self.directory.clone());
        let _ = services
            .price_broadcast
            .set(Arc::new(move |quotes| crate::cluster::peer::broadcast_prices(&t, &d.get(), me, quotes)));
        let r = router.clone();
        let dispatch: crate::cluster::peer::LocalDispatch = Arc::new(move |envelope| {
            let r = r.clone();
            Box::pin(async move { r.dispatch_local(envelope).await })
        });
        let r = router.clone();
        let steps: crate::cluster::router::StepHandler = Arc::new(move |step| {
            let r = r.clone();
            Box::pin(async move { r.step_here(step).await })
        });
        let weak = Arc::downgrade(services);
        let quotes = Arc::new(move |round| {
            if let Some(s) = weak.upgrade() {
                s.publish_quotes(round, false);
            }
        });
        let r = router.clone();
        let journal: crate::cluster::peer::LocalJournal = Arc::new(move |kind, id| {
            let r = r.clone();
            Box::pin(async move { r.journal_for_peer(kind, &id).await })
        });
        let local = crate::cluster::peer::LocalServices {
            dispatch,
            journal,
            steps,
            revoke,
            quotes,
            snapshots_out: self.snapshots_out,
            snapshots_in: self.snapshots_in,
            transport: self.transport.clone(),
        };
        tokio::spawn(crate::cluster::peer::serve(
            self.inbound,
            self.me,
            self.directory,
            router.journal().clone(),
            local,
            Arc::new(self.counters),
        ));
    }
}
