//! The router's reads: queries served from an entity (with or without a read barrier), a
//! user's audit records and an entity's journal, here or from the group's leader.

use super::*;

impl Router {
    /// A read served here from the entity with no read barrier, for a command decided on it
    /// next under `fence` (`dispatch_early`): the command's write, proposed only in the
    /// fence's term, is what proves this node led the group when it read. `Unavailable` when
    /// this node does not serve the group in that term now.
    pub async fn peek(&self, envelope: Envelope, fence: u64) -> Result<Answer, RouteFailure> {
        let (id, answer) = match envelope {
            Envelope::Account { id, call: Call::Query(q) } => (id.clone(), Account::answer(Outcome::View(self.view_at::<Account>(&id, q, false).await?))),
            Envelope::Portfolio { id, call: Call::Query(q) } => (id.clone(), Portfolio::answer(Outcome::View(self.view_at::<Portfolio>(&id, q, false).await?))),
            other => return Err(RouteFailure::NotApplied(format!("only a query of a user's entity is peeked, not {other:?}"))),
        };
        // Served here in the fence's term before the read and still after it: the read is of
        // that term (the decision's write is proposed only in it).
        match self.fence(&id) {
            Some(t) if t == fence => Ok(answer),
            _ => Err(RouteFailure::Unavailable(format!(
                "shard group {}: leadership moved during a read",
                self.group_of(&id)
            ))),
        }
    }

    pub(super) async fn view<E: Routable>(&self, id: &str, query: E::Query) -> Result<E::View, RouteFailure> {
        self.view_at::<E>(id, query, true).await
    }

    async fn view_at<E: Routable>(&self, id: &str, query: E::Query, barrier: bool) -> Result<E::View, RouteFailure> {
        if barrier {
            self.read_barrier(id).await?;
        }
        let mut msg = RunQuery::<E> { query: query.clone() };
        for _ in 0..SEND_ATTEMPTS_MAX {
            let actor = self.activate::<E>(id).await?;
            self.observe_depth(&actor);
            match actor.ask(msg).await {
                Ok(view) => return Ok(view),
                Err(SendError::ActorNotRunning(m)) | Err(SendError::ActorRestarting(m)) => {
                    E::registry(&self.inner).forget(id, actor.id());
                    msg = m;
                }
                // It stopped with the query still in its mailbox (a shard that moved, a write
                // that did not commit): a read changes nothing, so it goes to the next one.
                Err(SendError::ActorStopped) => {
                    E::registry(&self.inner).forget(id, actor.id());
                    msg = RunQuery::<E> { query: query.clone() };
                }
                Err(SendError::HandlerError(f)) => return Err(f),
                Err(e) => return Err(RouteFailure::NotApplied(format!("{} {id}: {e}", E::KIND.name()))),
            }
        }
        Err(kept_stopping::<E>(id))
    }

    /// Every audit record that concerns `user_id` (`AuditRecord::concerns`), from every shard
    /// group: this node's replicas, then the other members' until every group is covered (a
    /// GDPR export at a node without a replica of every group). Oldest first. `Err` when some
    /// group's trail is on no member that answered: an export is whole or refused.
    pub async fn audit_of(&self, user_id: &str) -> Result<Vec<crate::domain::audit::AuditRecord>, String> {
        self.audit_where(
            crate::domain::audit::AuditQuery::Concerning(user_id.to_string()),
            crate::cluster::peer::AUDIT_OF_MAX,
        )
        .await
    }

    /// The audit records a query picks, from every shard group: this node's replicas, then the
    /// other members' until every group is covered; the newest `limit` from each member (at most
    /// `AUDIT_OF_MAX`). Oldest first, one copy of each. `Err` when some group's trail is on no
    /// member that answered: what is built from it (an export, the daily report) is whole or
    /// refused, never short.
    pub async fn audit_where(&self, query: crate::domain::audit::AuditQuery, limit: usize) -> Result<Vec<crate::domain::audit::AuditRecord>, String> {
        let limit = limit.clamp(1, crate::cluster::peer::AUDIT_OF_MAX);
        let store = self.store().clone();
        let mine = query.clone();
        let mut records = tokio::task::spawn_blocking(move || store.audit_records_rev(limit, |r| mine.matches(r)))
            .await
            .map_err(|_| "the audit trail read stopped".to_string())?
            .map_err(|e| e.to_string())?;
        self.gather_from_members(
            "audit records",
            |transport, membership, to| {
                let query = query.clone();
                async move { crate::cluster::peer::audit_where(&transport, &membership, to, query, limit).await }
            },
            &mut records,
        )
        .await?;
        // Replicas of a group hold the same chain (a follower perhaps a shorter one): one copy
        // of each record.
        records.sort_by_key(|r| (r.at, r.group, r.seq));
        records.dedup_by(|a, b| a.group == b.group && a.seq == b.seq);
        Ok(records)
    }

    /// The advice held for review (advice id, user id), from every shard group: this node's
    /// replicas, then the other members'. `Err` when some group is on no member that answered.
    pub async fn review_queue(&self) -> Result<Vec<(String, String)>, String> {
        let store = self.store().clone();
        let mut entries = tokio::task::spawn_blocking(move || store.review_queue())
            .await
            .map_err(|_| "the review queue read stopped".to_string())?
            .map_err(|e| e.to_string())?;
        self.gather_from_members(
            "the review queue",
            |transport, membership, to| async move { crate::cluster::peer::reviews(&transport, &membership, to).await },
            &mut entries,
        )
        .await?;
        entries.sort();
        entries.dedup();
        Ok(entries)
    }

    /// Adds to `out` what other members hold of the shard groups this node holds no replica
    /// of (`ask`: a member's groups and items), a member at a time until every group is
    /// covered; `Err` naming a group no member that answered holds.
    async fn gather_from_members<T, F, Fut>(&self, what: &str, ask: F, out: &mut Vec<T>) -> Result<(), String>
    where
        F: Fn(crate::cluster::transport::Transport, Arc<crate::cluster::membership::Membership>, crate::cluster::raft::RaftId) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<u32>, Vec<T>), String>>,
    {
        let groups = self.inner.env.store.groups();
        let mut covered: std::collections::BTreeSet<u32> = self.inner.journal.replica_groups().into_iter().collect();
        if let Some(remote) = self.inner.remote.get() {
            let membership = remote.directory.get();
            for m in membership.members.iter().filter(|m| m.raft_id != remote.me) {
                if covered.len() as u32 >= groups {
                    break;
                }
                match ask(remote.transport.clone(), membership.clone(), m.raft_id).await {
                    Ok((held, theirs)) => {
                        covered.extend(held);
                        out.extend(theirs);
                    }
                    Err(e) => tracing::warn!(error = %e, "a member did not give {what}"),
                }
            }
        }
        match (0..groups).find(|g| !covered.contains(g)) {
            Some(g) => Err(format!("{what} of shard group {g} are on no member that answered")),
            None => Ok(()),
        }
    }

    /// An entity's committed journal, oldest first (its history), read linearizably wherever
    /// this node stands: at the leader through the entity (after a read barrier); at a replica
    /// from its own store once a read barrier says it applied what the leader had committed;
    /// at a node without a replica, from the leader over the network. Follows leadership,
    /// bounded by the request timeout.
    pub async fn read_journal<E: Routable>(&self, id: &str) -> Result<Vec<JournalEntry<E::Event>>, RouteFailure> {
        let group = self.group_of(id);
        self.follow_leader(group, |to| async move {
            let Some(leader) = to else {
                return match self.read_journal_here::<E>(id).await {
                    Err(f) if !self.inner.journal.leadership(group).served => Attempt::Again(f),
                    other => Attempt::Done(other),
                };
            };
            if self.inner.journal.leadership(group).replica {
                return match self.inner.journal.read_index(group).await {
                    Ok(()) => Attempt::Done(self.journal_from_store::<E>(id).await),
                    Err(e) => Attempt::Again(barrier_failure(&e)),
                };
            }
            let remote = self.remote();
            self.forwarded("journal");
            match crate::cluster::peer::forward_journal(&remote.transport, &remote.directory.get(), leader, E::KIND, id.to_string()).await {
                Ok(Ok(bytes)) => {
                    Attempt::Done(codec::decode(&bytes).map_err(|e| RouteFailure::NotApplied(format!("a journal from a peer does not decode: {e}"))))
                }
                Ok(Err(f)) => Attempt::Done(Err(f)),
                Err(why) => Attempt::Again(RouteFailure::NotApplied(why)),
            }
        })
        .await
    }

    /// The journal of an entity this node's replica holds, from its store (after a barrier).
    async fn journal_from_store<E: Routable>(&self, id: &str) -> Result<Vec<JournalEntry<E::Event>>, RouteFailure> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(RouteFailure::NotApplied("entity id length out of range".into()));
        }
        let (store, entity) = (self.inner.env.store.clone(), EntityId::new(E::KIND, id));
        match tokio::task::spawn_blocking(move || store.journal::<E>(&entity, u64::MAX)).await {
            Ok(r) => r.map_err(|e| RouteFailure::NotApplied(e.to_string())),
            Err(e) => Err(RouteFailure::NotApplied(e.to_string())),
        }
    }

    /// An entity's journal through its actor here (this node leads its group).
    async fn read_journal_here<E: Routable>(&self, id: &str) -> Result<Vec<JournalEntry<E::Event>>, RouteFailure> {
        self.read_barrier(id).await?;
        for _ in 0..SEND_ATTEMPTS_MAX {
            let actor = self.activate::<E>(id).await?;
            match actor.ask(ReadJournal::<E>::default()).await {
                Ok(v) => return Ok(v),
                Err(SendError::ActorNotRunning(_)) | Err(SendError::ActorRestarting(_)) => E::registry(&self.inner).forget(id, actor.id()),
                Err(SendError::HandlerError(f)) => return Err(f),
                Err(e) => return Err(RouteFailure::NotApplied(format!("{} {id}: {e}", E::KIND.name()))),
            }
        }
        Err(kept_stopping::<E>(id))
    }

    /// A peer's request for an entity's journal, served here only (encoded for the wire).
    pub async fn journal_for_peer(&self, kind: crate::domain::ids::EntityKind, id: &str) -> Result<Vec<u8>, RouteFailure> {
        use crate::domain::ids::EntityKind as K;
        Ok(match kind {
            K::Account => codec::encode(&self.read_journal_here::<Account>(id).await?),
            K::Portfolio => codec::encode(&self.read_journal_here::<Portfolio>(id).await?),
            K::Instrument => codec::encode(&self.read_journal_here::<Instrument>(id).await?),
            K::EmailIndex => codec::encode(&self.read_journal_here::<EmailIndex>(id).await?),
        })
    }

    /// A read barrier before an entity's state is read here: this node still leads the
    /// entity's group (a deposed leader cannot pass it), so what the entity answers after it
    /// is linearizable.
    async fn read_barrier(&self, id: &str) -> Result<(), RouteFailure> {
        self.inner.journal.read_index(self.group_of(id)).await.map_err(|e| barrier_failure(&e))
    }

    /// Test and diagnostics hook: an entity's journal seq and state.
    #[doc(hidden)]
    pub async fn inspect<E: Routable>(&self, id: &str) -> Result<(u64, E), RouteFailure> {
        let actor = self.activate::<E>(id).await?;
        actor.ask(Inspect::<E>::default()).await.map_err(|e| RouteFailure::NotApplied(e.to_string()))
    }

    /// Test hook: makes the entity panic (its supervisor restarts it from storage).
    #[doc(hidden)]
    pub async fn debug_panic<E: Routable>(&self, id: &str) -> Result<(), RouteFailure> {
        let actor = self.activate::<E>(id).await?;
        actor.ask(DebugPanic).await.map_err(|e| RouteFailure::OutcomeUnknown(e.to_string()))
    }

    /// Test hook: which activation of an entity is running (activating it when needed).
    #[doc(hidden)]
    pub async fn activation<E: Routable>(&self, id: &str) -> Result<ActorId, RouteFailure> {
        Ok(self.activate::<E>(id).await?.id())
    }
}

/// What a read barrier that did not complete means to the caller: leadership moving (raft
/// dropped the read, or the leader stepped down) is `Unavailable`, which the router follows
/// to the next leader within the request timeout, as API.md promises, rather than answering
/// 503 at once; anything else is `NotApplied` (a read changes nothing).
fn barrier_failure(e: &crate::storage::StoreError) -> RouteFailure {
    match e {
        crate::storage::StoreError::Unavailable(why) => RouteFailure::Unavailable(why.clone()),
        other => RouteFailure::NotApplied(other.to_string()),
    }
}
