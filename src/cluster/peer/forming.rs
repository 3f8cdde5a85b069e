//! Forming the cluster at start-up, or joining it: the hellos to the configured peers until
//! the expected members agree on one membership.

use super::*;

/// Forms a new cluster with the nodes in `join` (all `expect` of them introduce themselves),
/// or returns the membership this folder already belongs to.
pub async fn form(
    transport: &Transport,
    inbound: &mut mpsc::Receiver<Inbound>,
    me: Hello,
    join: &[String],
    expect: usize,
    wait: Duration,
) -> Result<Membership, String> {
    if let Some(m) = &me.formed {
        return Ok(m.clone());
    }
    let addrs: Vec<_> = join.iter().map(|j| multiaddr(j)).collect::<Result<_, _>>()?;
    let mut known: std::collections::BTreeMap<String, Hello> = std::collections::BTreeMap::new();
    known.insert(me.node_id.clone(), me.clone());
    let deadline = tokio::time::Instant::now() + wait;
    let (answers_tx, mut answers) = mpsc::channel::<Hello>(64);
    let mut redial = tokio::time::interval(Duration::from_millis(500));
    // One node given members to contact joins their running cluster (it forms none alone).
    let join_only = expect <= 1 && !join.is_empty();
    if join_only {
        tracing::info!(members = join.len(), "joining a running cluster: waiting for one of its members to answer");
    } else {
        tracing::info!(expect, "forming a cluster: waiting for the other nodes to introduce themselves");
    }
    while known.len() < expect || join_only {
        tokio::select! {
            _ = redial.tick() => {
                if tokio::time::Instant::now() > deadline && join_only {
                    return Err(format!(
                        "no member of a running cluster at {} admitted this node within {wait:?}: check that one runs there, and that this node's [cluster] secret_file is the cluster's",
                        join.join(", ")
                    ));
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!(
                        "only {} of bootstrap_expect = {expect} nodes introduced themselves within {wait:?} (known: {})",
                        known.len(),
                        known.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                if known.len() < expect || join_only {
                    for a in &addrs {
                        transport.dial(a.clone()).await;
                    }
                }
            }
            Some(h) = answers.recv() => {
                if let Some(formed) = &h.formed {
                    // The others formed it first, with this node among them: it is ours too.
                    if formed.by_node_id(&me.node_id).is_some_and(|m| m.peer_id == me.peer_id) {
                        return Ok(formed.clone());
                    }
                    // A running cluster: ask one of its members to admit this node.
                    match crate::cluster::coordinator::ask_to_join(transport, &h, &me).await {
                        Ok(m) => return Ok(m),
                        Err(crate::cluster::coordinator::JoinError::Refused(why)) => return Err(why),
                        Err(crate::cluster::coordinator::JoinError::Again(why)) => {
                            tracing::warn!(member = %h.node_id, %why, "joining the cluster: will ask again");
                            let tx = answers_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                let _ = tx.send(h).await;
                            });
                            continue;
                        }
                    }
                }
                if let Some(prev) = known.get(&h.node_id) {
                    if prev.peer_id != h.peer_id {
                        return Err(format!("node id `{}` is used by two nodes; [node] id must be unique in the cluster", h.node_id));
                    }
                }
                // One peer is one node: a second node id for a peer already known is refused
                // (the first introduction stands), or the peer would count as two.
                if let Some(prev) = known.values().find(|k| k.peer_id == h.peer_id && k.node_id != h.node_id) {
                    transport.counters.frames_refused.inc();
                    tracing::warn!(known_as = %prev.node_id, claims = %h.node_id, "a peer introduced itself under a second node id; refused");
                    continue;
                }
                known.insert(h.node_id.clone(), h);
            }
            i = inbound.recv() => match i {
                None => return Err("the peer transport stopped".into()),
                Some(Inbound::Connected { peer, .. }) => {
                    let t = transport.clone();
                    let tx = answers_tx.clone();
                    let me = me.clone();
                    tokio::spawn(async move {
                        if let Ok(PeerResponse::Hello(h)) = ask(&t, peer, &PeerRequest::Hello(me)).await {
                            if h.peer_id == peer.to_base58() {
                                let _ = tx.send(h).await;
                            }
                        }
                    });
                }
                Some(Inbound::Request { peer, bytes, reply }) => {
                    match codec::decode::<PeerRequest>(&bytes) {
                        Ok(PeerRequest::Hello(h)) if h.peer_id == peer.to_base58() => {
                            let _ = reply.send(codec::encode(&PeerResponse::Hello(me.clone())));
                            let _ = answers_tx.send(h).await;
                        }
                        _ => {
                            let _ = reply.send(codec::encode(&PeerResponse::Refused("this node is still forming a cluster".into())));
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
    let hellos: Vec<Hello> = known.into_values().collect();
    Membership::form(&hellos, me.groups, me.replication_factor)
}
