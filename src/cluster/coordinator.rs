//! The node's side of elastic membership (issue 12), IO glue around the sans-IO parts: nodes
//! ask a member to admit them; every node follows the metadata into its directory (a node
//! with no replica of the metadata group asks a member for it); leaders tell every member what
//! groups they lead and how those are configured; the metadata group's leader runs the
//! planner and proposes what it decides; operators decommission a node.

use super::directory::{Directory, LedGroup};
use super::membership::{Hello, Membership};
use super::meta::{MetaCommand, MetaState, NodeState};
use super::peer::{ask, PeerRequest, PeerResponse};
use super::planner;
use super::raft::{GroupId, RaftId};
use super::transport::{multiaddr, Transport};
use crate::actors::journal::AuditJournal;
use crate::actors::RequestMeta;
use crate::domain::audit::AuditDraft;
use crate::storage::Store;
use libp2p::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often leaders tell the others what they lead.
const GOSSIP_EVERY: Duration = Duration::from_millis(300);
/// How often the metadata leader plans, and nodes without the metadata ask for it.
const PLAN_EVERY: Duration = Duration::from_millis(500);
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// The longest a member waits for a join it proposed to be applied.
const ADMIT_WAIT: Duration = Duration::from_secs(15);
const NODE_ID_MAX: usize = 128;

pub enum JoinError {
    /// Never admitted as it is (another master key, a removed node's data, ...).
    Refused(String),
    /// Not now (no metadata leader yet, a timeout): ask again.
    Again(String),
}

/// The joining side: asks member `h` (who answered this node's introduction) to admit it.
pub async fn ask_to_join(transport: &Transport, h: &Hello, me: &Hello) -> Result<Membership, JoinError> {
    if h.master_fingerprint != me.master_fingerprint {
        return Err(JoinError::Refused(
            "this node's master key differs from the cluster's; every node needs the same [security] master_key_file".into(),
        ));
    }
    let peer: PeerId = h
        .peer_id
        .parse()
        .map_err(|_| JoinError::Again(format!("member {} has no valid peer id", h.node_id)))?;
    tracing::info!(member = %h.node_id, "asking to join the running cluster");
    match tokio::time::timeout(ADMIT_WAIT + Duration::from_secs(5), ask(transport, peer, &PeerRequest::Join(me.clone()))).await {
        Ok(Ok(PeerResponse::Joined(m))) if m.by_node_id(&me.node_id).is_some_and(|x| x.peer_id == me.peer_id) => {
            tracing::info!(cluster = %m.cluster_id, members = m.members.len(), "admitted to the cluster (state joining)");
            Ok(m)
        }
        Ok(Ok(PeerResponse::JoinRefused(why))) => Err(JoinError::Refused(format!("the cluster refused this node: {why}"))),
        Ok(Ok(PeerResponse::Refused(why))) => Err(JoinError::Again(why)),
        Ok(Ok(_)) => Err(JoinError::Again(format!("{} answered a join with something else", h.node_id))),
        Ok(Err(e)) => Err(JoinError::Again(e)),
        Err(_) => Err(JoinError::Again(format!("{} did not answer the join in time", h.node_id))),
    }
}

/// The member's side: admits `h` through the metadata group (state `joining`, a new raft id)
/// and answers the membership with it in. A retried join of an admitted node gets the same
/// answer; a node id in use by another node, another master key, another number of groups or
/// a removed node's identity are refused for good.
pub async fn admit(journal: &AuditJournal, directory: &Directory, me: &Hello, peer: PeerId, h: Hello) -> PeerResponse {
    let refuse = |why: String| {
        tracing::warn!(node = %h.node_id.chars().take(NODE_ID_MAX).collect::<String>(), %why, "a join was refused");
        PeerResponse::JoinRefused(why)
    };
    if h.peer_id != peer.to_base58() {
        return refuse("it introduced itself with another peer id than its connection's".into());
    }
    if h.node_id.is_empty() || h.node_id.len() > NODE_ID_MAX || multiaddr(&h.address).is_err() {
        return refuse("its node id or address is malformed".into());
    }
    if h.master_fingerprint != me.master_fingerprint {
        return refuse("it holds another master key than the cluster's; every node needs the same [security] master_key_file".into());
    }
    if h.groups != me.groups {
        return refuse(format!("it is configured with {} shard groups, the cluster has {}", h.groups, me.groups));
    }
    let current = directory.get();
    if let Some(x) = current.by_node_id(&h.node_id) {
        return if x.peer_id == h.peer_id {
            PeerResponse::Joined((*current).clone())
        } else {
            refuse(format!(
                "node id `{}` is used by another member; [node] id must be unique in the cluster",
                h.node_id
            ))
        };
    }
    if let Some(meta) = journal.meta() {
        match meta.members.get(&h.node_id) {
            // Admitted already (an earlier answer was lost): the same answer.
            Some(r) if r.peer_id == h.peer_id && r.state != NodeState::Removed => return PeerResponse::Joined(meta.membership()),
            _ => {}
        }
        if meta.members.values().any(|r| r.peer_id == h.peer_id) {
            return refuse("this node was removed from the cluster; to join again, start it on an empty data folder (as a new node)".into());
        }
    }
    let join = MetaCommand::Join {
        node_id: h.node_id.clone(),
        peer_id: h.peer_id.clone(),
        address: h.address.clone(),
    };
    match tokio::time::timeout(ADMIT_WAIT, journal.propose_meta(vec![join])).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return PeerResponse::Refused(format!("the metadata group did not take the join: {e}")),
        Err(_) => return PeerResponse::Refused("the metadata group did not take the join in time".into()),
    }
    let deadline = Instant::now() + ADMIT_WAIT;
    let mut changes = directory.subscribe();
    loop {
        let m = directory.get();
        if m.by_node_id(&h.node_id).is_some_and(|x| x.peer_id == h.peer_id) {
            tracing::info!(node = %h.node_id, "a node was admitted to the cluster");
            return PeerResponse::Joined((*m).clone());
        }
        if Instant::now() >= deadline {
            return PeerResponse::Refused("the join was not applied here in time".into());
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    }
}

/// The metadata as a member holds it (any member that answers; None when none does).
pub async fn fetch_meta(transport: &Transport, members: &Membership, me: RaftId) -> Option<MetaState> {
    for m in members.members.iter().filter(|m| m.raft_id != me) {
        let Ok(peer) = m.peer_id.parse::<PeerId>() else { continue };
        if let Ok(Ok(PeerResponse::Meta(Some(meta)))) = tokio::time::timeout(Duration::from_secs(2), ask(transport, peer, &PeerRequest::Meta)).await {
            if meta.cluster_id == members.cluster_id {
                return Some(meta);
            }
        }
    }
    None
}

/// Follows the metadata into the directory (and the folder, and the transport's address
/// book); returns once this node is removed from the cluster.
pub async fn follow_metadata(journal: AuditJournal, directory: Arc<Directory>, transport: Transport, store: Store, node_id: String) {
    let me = journal.raft_id();
    let meta_group = journal.store().meta_group();
    let mut local = journal.meta_changes();
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    let mut version = 0u64;
    loop {
        tokio::select! {
            _ = local.changed() => {}
            _ = every.tick() => {}
        }
        // This node's replica of the metadata, unless the metadata group's leader says it is
        // not in the group: removed while cut off and never told, it stopped where it was
        // removed (found by the simulator: followed, it kept the node on a stale placement
        // for good). Then, as a node without a replica does, ask a member.
        let outside = directory
            .led_groups()
            .get(&meta_group)
            .is_some_and(|(leader, led)| *leader != me && !led.voters.contains(&me) && !led.learners.contains(&me));
        let meta = match journal.meta() {
            Some(m) if !outside => Some(m),
            _ => fetch_meta(&transport, &directory.get(), me).await,
        };
        let Some(meta) = meta else { continue };
        if meta.version < version || meta.cluster_id != directory.get().cluster_id {
            continue;
        }
        version = meta.version;
        let old = directory.get();
        let next = meta.membership();
        for m in next
            .members
            .iter()
            .filter(|m| m.raft_id != me && old.member(m.raft_id).is_none_or(|o| o.address != m.address))
        {
            if let (Ok(peer), Ok(addr)) = (m.peer_id.parse(), multiaddr(&m.address)) {
                transport.add_address(peer, addr).await;
            }
        }
        if directory.replace(next.clone()) {
            if let Err(e) = super::peer::store_membership(&store, &next) {
                tracing::error!(error = %e, "cannot record the cluster membership in the data folder");
            }
        }
        if meta.state_of(&node_id) == Some(NodeState::Removed) {
            tracing::warn!(node = %node_id, "this node was removed from the cluster (decommissioned): it stops serving and exits");
            return;
        }
    }
}

/// Records this node's peer identity and address in the metadata when they are not what it
/// holds (a cluster of one that starts listening for peers; a node whose address changed).
pub async fn publish_address(router: super::Router, node_id: String, peer_id: String, address: String) {
    const ATTEMPTS_MAX: usize = 120;
    for _ in 0..ATTEMPTS_MAX {
        if let Some(meta) = router.metadata().await {
            match meta.members.get(&node_id) {
                Some(r) if r.peer_id == peer_id && r.address == address => return,
                Some(r) if !r.peer_id.is_empty() && r.peer_id != peer_id => {
                    tracing::error!(node = %node_id, "the cluster knows this node under another peer identity (was node.key replaced?)");
                    return;
                }
                Some(_) => {
                    let cmd = MetaCommand::Address {
                        node_id: node_id.clone(),
                        peer_id: peer_id.clone(),
                        address: address.clone(),
                    };
                    if let Err(e) = router.journal().propose_meta(vec![cmd]).await {
                        tracing::debug!(error = %e, "address not recorded yet; retrying");
                    }
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::warn!("this node's peer address could not be recorded in the metadata group");
}

/// Tells every other member, every gossip round, which groups this node leads and how they
/// are configured (and notes it in its own directory).
pub async fn gossip_leads(journal: AuditJournal, directory: Arc<Directory>, transport: Transport) {
    let me = journal.raft_id();
    let mut every = tokio::time::interval(GOSSIP_EVERY);
    loop {
        every.tick().await;
        let led: Vec<LedGroup> = journal
            .group_status()
            .into_iter()
            .filter(|s| s.serving)
            .map(|s| LedGroup {
                group: s.group,
                term: s.term,
                voters: s.voters,
                learners: s.learners,
                commit_index: s.commit_index,
                changing: s.pending_conf,
                settled: s.conf_settled,
            })
            .collect();
        directory.heard_leads(me, led.clone());
        let frame = crate::storage::codec::encode(&PeerRequest::Leads { from: me, groups: led });
        for m in directory.get().members.iter().filter(|m| m.raft_id != me) {
            if let Ok(peer) = m.peer_id.parse::<PeerId>() {
                let _ = transport.send(peer, &frame);
            }
        }
    }
}

/// On the metadata group's leader: plans and proposes, every `PLAN_EVERY`; each placement,
/// node state and finished move is an audit record and a metric.
pub async fn run_planner(router: super::Router, directory: Arc<Directory>, limits: planner::Limits, dead_after: Duration) {
    let journal = router.journal().clone();
    let me = journal.raft_id();
    let meta_group = journal.store().meta_group();
    let mut leading_since: Option<Instant> = None;
    let mut moving: BTreeSet<GroupId> = BTreeSet::new();
    let mut every = tokio::time::interval(PLAN_EVERY);
    loop {
        every.tick().await;
        if !journal.leadership(meta_group).served {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let Some(meta) = journal.meta() else { continue };
        let actual: BTreeMap<GroupId, LedGroup> = directory.led_groups().into_iter().map(|(g, (_, l))| (g, l)).collect();
        let heard = journal.last_heard();
        let dead: BTreeSet<RaftId> = meta
            .members
            .values()
            .filter(|r| r.raft_id != me && matches!(r.state, NodeState::Active | NodeState::Joining | NodeState::Draining))
            .filter(|r| heard.get(&r.raft_id).map_or(since, |&t| t.max(since)).elapsed() > dead_after)
            .map(|r| r.raft_id)
            .collect();
        // Moves that finished since the last pass.
        let now_moving: BTreeSet<GroupId> = planner::moves_in_flight(&meta, &actual).iter().map(|m| m.group).collect();
        for g in moving.difference(&now_moving) {
            audit(&router, AuditDraft::ok("cluster.move.completed").detail("group", g)).await;
        }
        moving = now_moving;
        let commands = planner::plan(&meta, &actual, &dead, limits);
        if commands.is_empty() {
            continue;
        }
        let name = |id: RaftId| meta.by_raft_id(id).map_or_else(|| format!("raft:{id}"), |(n, _)| n.clone());
        for c in &commands {
            let (kind, draft) = match c {
                MetaCommand::Place { group, replicas } => {
                    let from: Vec<String> = meta
                        .placement
                        .get(*group as usize)
                        .map(|p| p.iter().map(|&i| name(i)).collect())
                        .unwrap_or_default();
                    let to: Vec<String> = replicas.iter().map(|&i| name(i)).collect();
                    tracing::info!(group, ?from, ?to, "placement changed");
                    (
                        "place",
                        AuditDraft::ok("cluster.placement")
                            .detail("group", group)
                            .detail("from", from.join(","))
                            .detail("to", to.join(",")),
                    )
                }
                MetaCommand::SetState { node_id, state } => {
                    tracing::info!(node = %node_id, state = state.as_str(), "node state changed");
                    (
                        "state",
                        AuditDraft::ok("cluster.node_state").detail("node", node_id).detail("state", state.as_str()),
                    )
                }
                _ => continue,
            };
            router.metrics().raft.placements.get_or_create(&crate::telemetry::KindLabels { kind }).inc();
            audit(&router, draft).await;
        }
        if !dead.is_empty() {
            tracing::warn!(dead = ?dead.iter().map(|&i| name(i)).collect::<Vec<_>>(), "members unheard of for longer than dead_after: their replicas are rebuilt elsewhere");
        }
        if let Err(e) = journal.propose_meta(commands).await {
            tracing::warn!(error = %e, "the planner's commands were not committed; planning again");
        }
    }
}

/// Writes a cluster audit record without holding up the planner (its group may be the one
/// that is moving).
async fn audit(router: &super::Router, draft: AuditDraft) {
    let router = router.clone();
    tokio::spawn(async move {
        if let Err(e) = router.audit(draft, "cluster", &RequestMeta::system("cluster"), true).await {
            tracing::warn!(error = %e, "a cluster audit record was not written");
        }
    });
}

#[derive(Debug, thiserror::Error)]
pub enum DecommissionError {
    #[error("no member `{0}`")]
    UnknownNode(String),
    #[error("decommissioning `{node}` would leave {left} nodes; the replication factor needs {needed}")]
    TooSmall { node: String, left: usize, needed: usize },
    #[error("{0}")]
    Unavailable(String),
}

/// Starts moving every replica and leadership off `node_id` (state `draining`; the planner
/// empties it, then marks it `removed`, and the node exits). Refused for an unknown or removed
/// node, and when it would leave fewer nodes than the replication factor requires.
pub async fn decommission(router: &super::Router, node_id: &str, actor: &RequestMeta) -> Result<NodeState, DecommissionError> {
    let meta = router
        .metadata()
        .await
        .ok_or_else(|| DecommissionError::Unavailable("the cluster's metadata is not reachable".into()))?;
    let cmd = planner::decommission(&meta, node_id).map_err(|e| match e {
        planner::Undecommissionable::UnknownNode => DecommissionError::UnknownNode(node_id.to_string()),
        planner::Undecommissionable::TooSmall { left, needed } => DecommissionError::TooSmall {
            node: node_id.to_string(),
            left,
            needed,
        },
    })?;
    if let Some(cmd) = cmd {
        router
            .journal()
            .propose_meta(vec![cmd])
            .await
            .map_err(|e| DecommissionError::Unavailable(e.to_string()))?;
        // Committed is not applied: a command the metadata refuses changes nothing. Say so.
        let mut now = None;
        let mut latest = None;
        for _ in 0..30 {
            latest = router.metadata().await;
            now = latest.as_ref().and_then(|m| m.state_of(node_id));
            // Removed already: a node holding nothing is emptied within one planner pass.
            if matches!(now, Some(NodeState::Draining | NodeState::Removed)) {
                break;
            }
            // (This node's replica of the metadata may apply it a moment after the leader.)
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Refused where it was applied because another decommission committed first left too
        // few nodes: the operator's answer is the same as when it is refused up front.
        if let Some((left, needed)) = latest
            .as_ref()
            .filter(|_| now != Some(NodeState::Draining))
            .and_then(|m| m.too_small_without(node_id))
        {
            return Err(DecommissionError::TooSmall {
                node: node_id.to_string(),
                left,
                needed,
            });
        }
        if !matches!(now, Some(NodeState::Draining | NodeState::Removed)) {
            return Err(DecommissionError::Unavailable(format!(
                "the metadata did not take the decommission of `{node_id}` (its state is {})",
                now.map_or("unknown", NodeState::as_str)
            )));
        }
    }
    let _ = router
        .audit(AuditDraft::ok("cluster.decommission").detail("node", node_id), "cluster", actor, true)
        .await;
    let state = router.metadata().await.and_then(|m| m.state_of(node_id)).unwrap_or(NodeState::Draining);
    tracing::info!(node = %node_id, state = state.as_str(), "decommissioning: its replicas and leaderships move to the other nodes");
    Ok(state)
}
