//! What members say to each other over the transport, and this node's side of it: forming a
//! cluster (introductions), raft messages batched per peer, and calls forwarded to the node
//! that leads an entity's group. Every frame is decoded through the versioned codec; one that
//! does not decode, or comes from a peer that is not a member, is refused and counted — never
//! a panic, never applied.

use super::membership::{Hello, Membership};
use super::raft::RaftId;
use super::transport::{multiaddr, Inbound, Transport};
use crate::actors::journal::{AuditJournal, PeerSink};
use crate::domain::envelope::{Answer, EntityFailure, Envelope};
use crate::storage::{codec, keys, Store};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Hello(Hello),
    /// Raft messages for several groups, each protobuf-encoded.
    Raft {
        from: RaftId,
        messages: Vec<(u32, Vec<u8>)>,
    },
    /// A call for an entity whose group this node should lead.
    Forward {
        envelope: Envelope,
    },
    /// Sessions revoked (logout, refresh-token reuse, erasure): refuse their tokens from now on.
    Revoke {
        sessions: Vec<String>,
    },
    /// A write set for a group this node should lead (audit records, shard records).
    Write {
        writes: crate::storage::store::WriteSet,
    },
    /// A user's step (an order, accepting advice) for a user whose group this node should lead.
    Step {
        step: crate::domain::steps::UserStep,
    },
    /// An entity's committed journal, from the node leading its group (asked by a node that
    /// holds no replica of the group).
    Journal {
        kind: crate::domain::ids::EntityKind,
        id: String,
    },
    /// The latest committed quotes, from the node that drives the price feed.
    Prices {
        quotes: Vec<crate::domain::instrument::Quote>,
    },
    /// A node asks to join the running cluster (it holds the cluster secret: the private
    /// network let it connect).
    Join(Hello),
    /// The cluster's metadata as this node's replica holds it (asked by nodes without one).
    Meta,
    /// A chunk of a snapshot this node offered (`cluster::snapshots`).
    SnapshotChunk {
        group: u32,
        index: u64,
        term: u64,
        offset: u64,
    },
    /// The groups `from` leads now and their raft configurations (sent every gossip round).
    Leads {
        from: RaftId,
        groups: Vec<super::directory::LedGroup>,
    },
    /// The audit records this node's replicas hold that concern a user (a GDPR export at a
    /// node without a replica of every group).
    AuditOf {
        user_id: String,
    },
    /// The audit records this node's replicas hold that a query picks (the daily report, the
    /// KYC review list at a node without a replica of every group).
    AuditWhere {
        query: crate::domain::audit::AuditQuery,
        /// The newest this many of each group at most (capped at `AUDIT_OF_MAX`).
        limit: u64,
    },
    /// The advice held for review in the groups this node's replicas hold (the review queue at
    /// a node without a replica of every group).
    Reviews,
}

#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum PeerResponse {
    Hello(Hello),
    Ack,
    /// Done, and applied at the leader up to this index of the group's log: the caller waits
    /// for its own replica to get there before answering, so it reads what it wrote.
    Applied {
        group: u32,
        index: u64,
    },
    Answer {
        answer: Result<Answer, EntityFailure>,
        group: u32,
        index: u64,
    },
    Step {
        answer: Result<crate::domain::steps::StepAnswer, EntityFailure>,
        group: u32,
        index: u64,
    },
    /// An entity's journal, encoded (a `Vec<JournalEntry<_>>` of its kind).
    Journal(Result<Vec<u8>, EntityFailure>),
    /// Admitted: the membership with the new node in it.
    Joined(Membership),
    /// Not admitted, for good (another master key, a node id in use, a removed node's data).
    JoinRefused(String),
    Meta(Option<super::meta::MetaState>),
    Chunk(Vec<u8>),
    Refused(String),
    /// The shard groups this node holds a replica of, and their records the request asked for.
    Audit {
        groups: Vec<u32>,
        records: Vec<crate::domain::audit::AuditRecord>,
    },
    /// The shard groups this node holds a replica of, and the advice held for review in them
    /// (advice id, user id).
    Reviews {
        groups: Vec<u32>,
        entries: Vec<(String, String)>,
    },
}

/// Carries out a forwarded call here (the router, without forwarding it again).
pub type LocalDispatch = Arc<dyn Fn(Envelope) -> Pin<Box<dyn Future<Output = Result<Answer, EntityFailure>> + Send>> + Send + Sync>;

/// How long an answer from a leader waits for this node's replica to apply what it wrote
/// (followers learn the commit index with the next message, a heartbeat at most away).
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// Frames refused from peers (undecodable, from a non-member, claiming another sender).
#[derive(Clone, Debug, Default)]
pub struct PeerCounters {
    pub refused: prometheus_client::metrics::counter::Counter,
}

/// The node's membership as stored in its folder.
pub fn stored_membership(store: &Store) -> Result<Option<Membership>, String> {
    match store.tree().get(keys::MEMBERSHIP_KEY).map_err(|e| e.to_string())? {
        Some(v) => codec::decode(&v)
            .map(Some)
            .map_err(|e| format!("the stored cluster membership does not decode: {e}")),
        None => Ok(None),
    }
}

pub fn store_membership(store: &Store, m: &Membership) -> Result<(), String> {
    store.tree().insert(keys::MEMBERSHIP_KEY, codec::encode(m)).map_err(|e| e.to_string())?;
    store.flush().map(|_| ()).map_err(|e| e.to_string())
}

/// This node's libp2p identity, kept in its data folder (a wiped folder is a new peer).
pub fn node_keypair(data_dir: &std::path::Path) -> Result<libp2p::identity::Keypair, String> {
    let path = data_dir.join("node.key");
    if path.exists() {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        crate::storage::files::check_private_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        return libp2p::identity::Keypair::from_protobuf_encoding(&bytes).map_err(|_| {
            format!(
                "{}: not this node's peer identity (a libp2p Ed25519 key); delete it only if the node is not a cluster member",
                path.display()
            )
        });
    }
    let k = libp2p::identity::Keypair::generate_ed25519();
    let bytes = k.to_protobuf_encoding().map_err(|e| e.to_string())?;
    crate::storage::files::write_private_file(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(k)
}

/// Asks a peer over request-response (bulk and rare exchanges).
pub(crate) async fn ask(transport: &Transport, peer: PeerId, req: &PeerRequest) -> Result<PeerResponse, String> {
    answer(peer, transport.request(peer, codec::encode(req)).await?)
}

/// `ask` down the peer's lane: for the small calls of the request path (forwarded calls, steps
/// and writes).
async fn call(transport: &Transport, peer: PeerId, req: &PeerRequest) -> Result<PeerResponse, String> {
    answer(peer, transport.call(peer, &codec::encode(req)).await?)
}

fn answer(peer: PeerId, bytes: Vec<u8>) -> Result<PeerResponse, String> {
    codec::decode(&bytes).map_err(|e| format!("an answer from {peer} does not decode: {e}"))
}

/// Where raft messages leave this node: encoded per peer batch, sent without waiting.
pub fn peer_sink(transport: Transport, directory: Arc<super::directory::Directory>, me: RaftId, snapshots: Arc<super::snapshots::Outbox>) -> PeerSink {
    PeerSink(Arc::new(move |to: RaftId, messages: Vec<(u32, raft::prelude::Message)>| {
        let Some(peer) = directory.get().member(to).and_then(|m| m.peer_id.parse::<PeerId>().ok()) else {
            return;
        };
        let messages = messages
            .into_iter()
            .filter_map(|(g, mut m)| {
                // A snapshot's bytes stay here, fetched by the follower in chunks.
                snapshots.stand_in(g, &mut m);
                protobuf::Message::write_to_bytes(&m).ok().map(|b| (g, b))
            })
            .collect();
        let _ = transport.send(peer, &codec::encode(&PeerRequest::Raft { from: me, messages }));
    }))
}

/// Reads an entity's journal here (this node leads its group), encoded.
pub type LocalJournal =
    Arc<dyn Fn(crate::domain::ids::EntityKind, String) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, EntityFailure>> + Send>> + Send + Sync>;

/// Revokes sessions on this node (the gateway's list of refused sessions).
pub type LocalRevoke = Arc<dyn Fn(Vec<String>) + Send + Sync>;

/// What serves peers on this node beside the journal: forwarded calls and steps, revocations,
/// quotes.
pub struct LocalServices {
    pub dispatch: LocalDispatch,
    pub journal: LocalJournal,
    pub steps: crate::cluster::router::StepHandler,
    pub revoke: LocalRevoke,
    pub quotes: Arc<dyn Fn(Vec<crate::domain::instrument::Quote>) + Send + Sync>,
    /// Snapshots offered to followers, and transfers from leaders in progress.
    pub snapshots_out: Arc<super::snapshots::Outbox>,
    pub snapshots_in: Arc<super::snapshots::Inbox>,
    pub transport: Transport,
}

/// Serves peers once the cluster is formed: raft messages to the journal, forwarded calls to
/// the local router, revoked sessions to the gateway's list, introductions answered with the
/// membership. Runs until the transport stops.
pub async fn serve(
    mut inbound: mpsc::Receiver<Inbound>,
    mut me: Hello,
    directory: Arc<super::directory::Directory>,
    journal: AuditJournal,
    local: LocalServices,
    counters: Arc<PeerCounters>,
) {
    let refuse = |why: String, reply: tokio::sync::oneshot::Sender<Vec<u8>>| {
        counters.refused.inc();
        tracing::warn!(reason = %why, "a peer frame was refused");
        let _ = reply.send(codec::encode(&PeerResponse::Refused(why)));
    };
    while let Some(i) = inbound.recv().await {
        let (peer, bytes, reply, one_way) = match i {
            Inbound::Request { peer, bytes, reply } => (peer, bytes, reply, false),
            // Nobody waits for an answer to a lane's frame: what `reply` gets is dropped.
            Inbound::Message { peer, bytes } => (peer, bytes, tokio::sync::oneshot::channel().0, true),
            Inbound::Connected { .. } | Inbound::Disconnected { .. } => continue,
        };
        let membership = directory.get();
        let member = membership.by_peer_id(&peer.to_base58());
        let req: PeerRequest = match codec::decode(&bytes) {
            Ok(r) => r,
            Err(e) => {
                refuse(format!("a frame from {peer} does not decode: {e}"), reply);
                continue;
            }
        };
        // Nodes that are not members (yet, or any more) may introduce themselves, ask to join
        // and read the metadata; nothing else.
        match req {
            req if one_way && !matches!(req, PeerRequest::Raft { .. } | PeerRequest::Prices { .. } | PeerRequest::Leads { .. }) => {
                refuse(format!("{peer} sent a call that wants an answer down a one-way lane"), reply);
            }
            PeerRequest::Hello(_) => {
                me.formed = Some((*membership).clone());
                let _ = reply.send(codec::encode(&PeerResponse::Hello(me.clone())));
                continue;
            }
            PeerRequest::Join(h) => {
                let (journal, directory, me) = (journal.clone(), directory.clone(), me.clone());
                tokio::spawn(async move {
                    let answer = super::coordinator::admit(&journal, &directory, &me, peer, h).await;
                    let _ = reply.send(codec::encode(&answer));
                });
                continue;
            }
            PeerRequest::Meta => {
                let _ = reply.send(codec::encode(&PeerResponse::Meta(journal.meta())));
                continue;
            }
            req => {
                let Some(member) = member else {
                    refuse(format!("{peer} is not a member of the cluster"), reply);
                    continue;
                };
                serve_member(req, member, reply, &journal, &directory, &local, &refuse);
            }
        }
    }
}

/// A member's request (the sender is authenticated as `member`).
fn serve_member(
    req: PeerRequest,
    member: &super::membership::Member,
    reply: tokio::sync::oneshot::Sender<Vec<u8>>,
    journal: &AuditJournal,
    directory: &Arc<super::directory::Directory>,
    local: &LocalServices,
    refuse: &dyn Fn(String, tokio::sync::oneshot::Sender<Vec<u8>>),
) {
    let LocalServices {
        dispatch,
        journal: journal_reader,
        steps,
        revoke,
        quotes,
        snapshots_out,
        snapshots_in,
        transport,
    } = local;
    match req {
        // Answered before a sender is looked up (see `serve`).
        PeerRequest::Hello(_) | PeerRequest::Join(_) | PeerRequest::Meta => refuse("introductions are answered before membership".into(), reply),
        PeerRequest::SnapshotChunk { group, index, term, offset } => {
            let out = snapshots_out.clone();
            tokio::spawn(async move {
                let answer = match out.chunk(group, index, term, offset).await {
                    Ok(c) => PeerResponse::Chunk(c),
                    Err(why) => PeerResponse::Refused(why),
                };
                let _ = reply.send(codec::encode(&answer));
            });
        }
        PeerRequest::Leads { from, groups } => {
            if from != member.raft_id || groups.len() > super::directory::LED_GROUPS_MAX || !groups.iter().all(|g| g.is_well_formed()) {
                refuse(format!("{} sent a malformed list of the groups it leads", member.node_id), reply);
                return;
            }
            // Only the cluster's groups: what is heard is kept per group, and a number from a
            // peer must not grow it.
            let m = directory.get();
            if let Some(g) = groups.iter().find(|g| !m.has_group(g.group)) {
                refuse(
                    format!("{} claims to lead group {}, which the cluster does not have", member.node_id, g.group),
                    reply,
                );
                return;
            }
            journal.heard(from);
            directory.heard_leads(from, groups);
            let _ = reply.send(codec::encode(&PeerResponse::Ack));
        }
        PeerRequest::Raft { from, messages } => {
            if from != member.raft_id {
                refuse(format!("{} sent raft messages as member {from}", member.node_id), reply);
                return;
            }
            let mut decoded = Vec::with_capacity(messages.len());
            let mut bad = false;
            for (g, b) in messages {
                match protobuf::Message::parse_from_bytes(&b) {
                    Ok(m) => decoded.push((g, m)),
                    Err(_) => bad = true,
                }
            }
            if bad {
                refuse(format!("a raft message from {} does not decode", member.node_id), reply);
                return;
            }
            let mut now = Vec::with_capacity(decoded.len());
            for (g, m) in decoded {
                match snapshot_manifest(g, &m) {
                    None => now.push((g, m)),
                    Some(Err(why)) => {
                        refuse(format!("a snapshot from {}: {why}", member.node_id), reply);
                        return;
                    }
                    Some(Ok(manifest)) => {
                        // A transfer is large: it starts only for a snapshot raft could take —
                        // addressed from the sender to this node, for a group this node holds
                        // or is placed to hold (raft refuses anything else once it arrives).
                        let me = journal.raft_id();
                        let placed = journal.leadership(g).replica || directory.get().replicas_of(g).contains(&me);
                        if m.from != from || m.to != me || !placed {
                            refuse(format!("a snapshot of group {g} from {} is not for a replica here", member.node_id), reply);
                            return;
                        }
                        fetch_snapshot(journal, snapshots_in, transport, member, from, g, m, manifest)
                    }
                }
            }
            journal.deliver(from, now);
            let _ = reply.send(codec::encode(&PeerResponse::Ack));
        }
        PeerRequest::Revoke { sessions } => {
            if sessions.len() > 10_000 {
                refuse(format!("{} revoked more than 10000 sessions at once", member.node_id), reply);
                return;
            }
            revoke(sessions);
            let _ = reply.send(codec::encode(&PeerResponse::Ack));
        }
        PeerRequest::Write { writes } => {
            // The set is proposed into the log of its group as `group_of_set` tells it: a key
            // of another group, or a node-wide record, must not ride along.
            if let Some(why) = writes.misplaced(journal.store().groups()) {
                refuse(format!("a write set from {} is refused: {why}", member.node_id), reply);
                return;
            }
            let journal = journal.clone();
            tokio::spawn(async move {
                let group = journal.store().group_of_set(&writes);
                let answer = if journal.leadership(group).served {
                    match journal.write_here(writes).await {
                        Ok(()) => PeerResponse::Applied {
                            group,
                            index: journal.status_of(group).map_or(0, |s| s.applied_index),
                        },
                        Err(e) => PeerResponse::Refused(e.to_string()),
                    }
                } else {
                    PeerResponse::Refused(format!("not the leader of shard group {group}"))
                };
                let _ = reply.send(codec::encode(&answer));
            });
        }
        PeerRequest::Prices { quotes: round } => {
            if let Err(why) = crate::domain::instrument::check_round(&round) {
                refuse(format!("prices from {}: {why}", member.node_id), reply);
                return;
            }
            quotes(round);
            let _ = reply.send(codec::encode(&PeerResponse::Ack));
        }
        PeerRequest::AuditOf { user_id } => {
            if user_id.is_empty() || user_id.len() > crate::domain::ids::MAX_ID_LEN {
                refuse(format!("an audit request from {} names no valid user", member.node_id), reply);
                return;
            }
            answer_audit(journal, crate::domain::audit::AuditQuery::Concerning(user_id), AUDIT_OF_MAX, reply);
        }
        PeerRequest::AuditWhere { query, limit } => {
            if !query.is_well_formed() || limit == 0 {
                refuse(format!("an audit query from {} is out of bounds", member.node_id), reply);
                return;
            }
            let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(AUDIT_OF_MAX);
            answer_audit(journal, query, limit, reply);
        }
        PeerRequest::Reviews => {
            let journal = journal.clone();
            tokio::spawn(async move {
                let store = journal.store().clone();
                let groups = journal.replica_groups();
                let answer = match tokio::task::spawn_blocking(move || store.review_queue()).await {
                    Ok(Ok(entries)) => PeerResponse::Reviews { groups, entries },
                    Ok(Err(e)) => PeerResponse::Refused(format!("reading the review queue: {e}")),
                    Err(_) => PeerResponse::Refused("the review queue read stopped".into()),
                };
                let _ = reply.send(codec::encode(&answer));
            });
        }
        PeerRequest::Journal { kind, id } => {
            if id.is_empty() || id.len() > crate::domain::ids::MAX_ID_LEN {
                refuse(format!("a journal request from {} names no valid id", member.node_id), reply);
                return;
            }
            let (read, journal) = (journal_reader.clone(), journal.clone());
            tokio::spawn(async move {
                let group = crate::domain::ids::group_of(crate::domain::ids::shard_of(&id), journal.store().groups());
                let answer = if journal.leadership(group).served {
                    PeerResponse::Journal(read(kind, id).await)
                } else {
                    PeerResponse::Refused(format!("not the leader of shard group {group}"))
                };
                let _ = reply.send(codec::encode(&answer));
            });
        }
        PeerRequest::Step { step } => {
            if !step.is_well_formed() {
                refuse(format!("a step from {} is out of bounds", member.node_id), reply);
                return;
            }
            let steps = steps.clone();
            let journal = journal.clone();
            tokio::spawn(async move {
                let group = crate::domain::ids::group_of(crate::domain::ids::shard_of(step.user_id()), journal.store().groups());
                let answer = if journal.leadership(group).served {
                    let answer = steps(step).await;
                    let index = journal.status_of(group).map_or(0, |s| s.applied_index);
                    PeerResponse::Step { answer, group, index }
                } else {
                    PeerResponse::Refused(format!("not the leader of shard group {group}"))
                };
                let _ = reply.send(codec::encode(&answer));
            });
        }
        PeerRequest::Forward { envelope } => {
            let dispatch = dispatch.clone();
            let journal = journal.clone();
            tokio::spawn(async move {
                let group = crate::domain::ids::group_of(crate::domain::ids::shard_of(envelope.entity_id()), journal.store().groups());
                let answer = dispatch(envelope).await;
                let index = journal.status_of(group).map_or(0, |s| s.applied_index);
                let _ = reply.send(codec::encode(&PeerResponse::Answer { answer, group, index }));
            });
        }
    }
}

/// Answers an audit query with the records this node's replicas hold (the newest `limit`)
/// and the groups they are of.
fn answer_audit(journal: &AuditJournal, query: crate::domain::audit::AuditQuery, limit: usize, reply: tokio::sync::oneshot::Sender<Vec<u8>>) {
    let journal = journal.clone();
    tokio::spawn(async move {
        let store = journal.store().clone();
        let groups = journal.replica_groups();
        let read = tokio::task::spawn_blocking(move || store.audit_records_rev(limit, |r| query.matches(r))).await;
        let answer = match read {
            Ok(Ok(records)) => PeerResponse::Audit { groups, records },
            Ok(Err(e)) => PeerResponse::Refused(format!("reading the audit trail: {e}")),
            Err(_) => PeerResponse::Refused("the audit trail read stopped".into()),
        };
        let _ = reply.send(codec::encode(&answer));
    });
}

/// The manifest a snapshot message carries in place of its bytes (None: not a snapshot, or
/// one with its bytes in).
fn snapshot_manifest(group: u32, m: &raft::prelude::Message) -> Option<Result<super::snapshots::Manifest, String>> {
    if m.get_msg_type() != raft::prelude::MessageType::MsgSnapshot {
        return None;
    }
    Some(super::snapshots::Manifest::decode(&m.get_snapshot().data)?.and_then(|man| {
        let meta = m.get_snapshot().get_metadata();
        if man.group == group && man.index == meta.index && man.term == meta.term {
            Ok(man)
        } else {
            Err("its manifest names another snapshot".into())
        }
    }))
}

/// Fetches a snapshot's bytes from the member that offered it (in the background, resuming
/// any earlier attempt), then hands raft the message with them.
#[allow(clippy::too_many_arguments)]
fn fetch_snapshot(
    journal: &AuditJournal,
    inbox: &Arc<super::snapshots::Inbox>,
    transport: &Transport,
    member: &super::membership::Member,
    from: RaftId,
    group: u32,
    mut m: raft::prelude::Message,
    manifest: super::snapshots::Manifest,
) {
    let Ok(peer) = member.peer_id.parse::<PeerId>() else { return };
    if !inbox.claim(&manifest) {
        return;
    }
    let (journal, inbox, transport, node) = (journal.clone(), inbox.clone(), transport.clone(), member.node_id.clone());
    tokio::spawn(async move {
        tracing::info!(group, index = manifest.index, bytes = manifest.len, from = %node, "fetching a snapshot of the group");
        match inbox.fetch(&transport, peer, &manifest).await {
            Ok(data) => {
                m.mut_snapshot().data = data.into();
                journal.deliver(from, vec![(group, m)]);
            }
            Err(why) => {
                tracing::warn!(group, index = manifest.index, from = %node, %why, "a snapshot transfer stopped; it resumes when the leader offers it again")
            }
        }
        inbox.release(&manifest);
    });
}

/// A member and its libp2p identity.
fn member_peer(membership: &Membership, to: RaftId) -> Result<(&super::membership::Member, PeerId), String> {
    let member = membership.member(to).ok_or_else(|| format!("no member {to}"))?;
    let peer = member.peer_id.parse().map_err(|_| format!("member {} has no peer id", member.node_id))?;
    Ok((member, peer))
}

mod calls;
mod forming;
pub use calls::*;
pub use forming::form;
