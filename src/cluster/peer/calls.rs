//! Calls this node makes of other members: revocations and prices broadcast, and writes,
//! workflow steps, journal reads and entity calls forwarded to the node that leads a group.

use super::*;

/// Tells every other member that `sessions` are revoked; waits for their acknowledgements (a
/// member that does not answer within the bound is down or cut off: it cannot serve anyway,
/// and checks the account's durable revocation for older tokens when it comes back).
pub async fn broadcast_revocation(transport: &Transport, membership: &Membership, me: RaftId, sessions: Vec<String>) {
    let req = PeerRequest::Revoke { sessions };
    let asks = membership
        .members
        .iter()
        .filter(|m| m.raft_id != me)
        .filter_map(|m| m.peer_id.parse::<PeerId>().ok())
        .map(|peer| {
            let req = &req;
            async move { tokio::time::timeout(Duration::from_secs(2), ask(transport, peer, req)).await }
        });
    for r in futures_util::future::join_all(asks).await {
        if !matches!(r, Ok(Ok(PeerResponse::Ack))) {
            tracing::warn!("a member did not acknowledge a session revocation");
        }
    }
}

/// Sends a write set to the member leading its group; a refusal (not the leader) is
/// `Unavailable` (the caller follows leadership), a lost answer an I/O error (unknown outcome).
pub async fn forward_write(
    transport: &Transport,
    membership: &Membership,
    local: &AuditJournal,
    to: RaftId,
    writes: crate::storage::store::WriteSet,
) -> Result<(), crate::storage::StoreError> {
    use crate::storage::StoreError;
    let (member, peer) = member_peer(membership, to).map_err(StoreError::Unavailable)?;
    match call(transport, peer, &PeerRequest::Write { writes }).await {
        Ok(PeerResponse::Applied { group, index }) => {
            local.wait_applied(group, index, READ_YOUR_WRITES_WAIT).await;
            Ok(())
        }
        Ok(PeerResponse::Refused(why)) => Err(StoreError::Unavailable(format!("{}: {why}", member.node_id))),
        Ok(_) => Err(StoreError::Io(format!("{} answered a write with something else", member.node_id))),
        Err(e) => Err(StoreError::Io(format!("forwarding a write to {}: {e}", member.node_id))),
    }
}

/// Sends a user's step to the node that leads the user's group. `Err`: not carried out there
/// (refused: not the leader) or not answered — the caller runs it again (same ids).
pub async fn forward_step(
    transport: &Transport,
    membership: &Membership,
    local: &AuditJournal,
    to: RaftId,
    step: crate::domain::steps::UserStep,
) -> Result<Result<crate::domain::steps::StepAnswer, EntityFailure>, String> {
    let (member, peer) = member_peer(membership, to)?;
    match call(transport, peer, &PeerRequest::Step { step }).await {
        Ok(PeerResponse::Step { answer, group, index }) => {
            local.wait_applied(group, index, READ_YOUR_WRITES_WAIT).await;
            Ok(answer)
        }
        Ok(PeerResponse::Refused(why)) => Err(format!("{} refused: {why}", member.node_id)),
        Ok(_) => Err(format!("{} answered a step with something else", member.node_id)),
        Err(e) => Err(format!("forwarding a step to {}: {e}", member.node_id)),
    }
}

/// Asks the node leading an entity's group for its journal. `Err`: not answered there (the
/// caller follows leadership).
pub async fn forward_journal(
    transport: &Transport,
    membership: &Membership,
    to: RaftId,
    kind: crate::domain::ids::EntityKind,
    id: String,
) -> Result<Result<Vec<u8>, EntityFailure>, String> {
    let (member, peer) = member_peer(membership, to)?;
    match ask(transport, peer, &PeerRequest::Journal { kind, id }).await {
        Ok(PeerResponse::Journal(answer)) => Ok(answer),
        Ok(PeerResponse::Refused(why)) => Err(format!("{} refused: {why}", member.node_id)),
        Ok(_) => Err(format!("{} answered a journal request with something else", member.node_id)),
        Err(e) => Err(format!("asking {} for a journal: {e}", member.node_id)),
    }
}

/// The most audit records about one user a member sends (newest first per group): a bound on
/// the answer, far above what a person's trail holds.
pub const AUDIT_OF_MAX: usize = 100_000;

/// The audit records concerning `user_id` that member `to` holds, and the shard groups it holds
/// a replica of.
pub async fn audit_of(
    transport: &Transport,
    membership: &Membership,
    to: RaftId,
    user_id: String,
) -> Result<(Vec<u32>, Vec<crate::domain::audit::AuditRecord>), String> {
    let (member, peer) = member_peer(membership, to)?;
    match ask(transport, peer, &PeerRequest::AuditOf { user_id }).await {
        Ok(PeerResponse::Audit { groups, records }) => Ok((groups, records)),
        Ok(PeerResponse::Refused(why)) => Err(format!("{} refused: {why}", member.node_id)),
        Ok(_) => Err(format!("{} answered an audit request with something else", member.node_id)),
        Err(e) => Err(format!("asking {} for audit records: {e}", member.node_id)),
    }
}

/// The audit records a query picks that member `to` holds, and the shard groups it holds a
/// replica of.
pub async fn audit_where(
    transport: &Transport,
    membership: &Membership,
    to: RaftId,
    query: crate::domain::audit::AuditQuery,
    limit: usize,
) -> Result<(Vec<u32>, Vec<crate::domain::audit::AuditRecord>), String> {
    let (member, peer) = member_peer(membership, to)?;
    let limit = limit as u64;
    match ask(transport, peer, &PeerRequest::AuditWhere { query, limit }).await {
        Ok(PeerResponse::Audit { groups, records }) => Ok((groups, records)),
        Ok(PeerResponse::Refused(why)) => Err(format!("{} refused: {why}", member.node_id)),
        Ok(_) => Err(format!("{} answered an audit query with something else", member.node_id)),
        Err(e) => Err(format!("asking {} for audit records: {e}", member.node_id)),
    }
}

/// The advice held for review (advice id, user id) in the groups member `to` holds, and those
/// groups.
pub async fn reviews(transport: &Transport, membership: &Membership, to: RaftId) -> Result<(Vec<u32>, Vec<(String, String)>), String> {
    let (member, peer) = member_peer(membership, to)?;
    match ask(transport, peer, &PeerRequest::Reviews).await {
        Ok(PeerResponse::Reviews { groups, entries }) => Ok((groups, entries)),
        Ok(PeerResponse::Refused(why)) => Err(format!("{} refused: {why}", member.node_id)),
        Ok(_) => Err(format!("{} answered a review-queue request with something else", member.node_id)),
        Err(e) => Err(format!("asking {} for its review queue: {e}", member.node_id)),
    }
}

/// Sends a round of quotes to every other member, without waiting for their answers.
pub fn broadcast_prices(transport: &Transport, membership: &Membership, me: RaftId, quotes: Vec<crate::domain::instrument::Quote>) {
    let frame = codec::encode(&PeerRequest::Prices { quotes });
    for m in membership.members.iter().filter(|m| m.raft_id != me) {
        if let Ok(peer) = m.peer_id.parse::<PeerId>() {
            let _ = transport.send(peer, &frame);
        }
    }
}

/// Sends a call to the node that leads its group; every transport failure is an unknown outcome
/// (the caller retries under the same request id).
pub async fn forward(transport: &Transport, membership: &Membership, local: &AuditJournal, to: RaftId, envelope: Envelope) -> Result<Answer, EntityFailure> {
    let (member, peer) = member_peer(membership, to).map_err(EntityFailure::NotApplied)?;
    match call(transport, peer, &PeerRequest::Forward { envelope }).await {
        Ok(PeerResponse::Answer { answer, group, index }) => {
            local.wait_applied(group, index, READ_YOUR_WRITES_WAIT).await;
            answer
        }
        Ok(PeerResponse::Refused(why)) => Err(EntityFailure::NotApplied(format!("{} refused: {why}", member.node_id))),
        Ok(_) => Err(EntityFailure::OutcomeUnknown(format!("{} answered something else", member.node_id))),
        Err(e) => Err(EntityFailure::OutcomeUnknown(format!("forwarding to {}: {e}", member.node_id))),
    }
}
