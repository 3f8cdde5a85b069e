//! The router's commands: executed on an entity here or at its group's leader, exactly once
//! under the request id, and answered once durable.

use super::*;

impl Router {
    /// Executes a command on an entity; answers once its effects are durable. The meta's request
    /// id makes it exactly once: sent again with the same id, it is answered, not applied again.
    pub async fn execute<E: Routable>(&self, id: &str, cmd: E::Command, meta: RequestMeta) -> Result<E::Reply, RouteError<E::Rejection>> {
        if meta.request_id.is_empty() || meta.request_id.len() > REQUEST_ID_MAX_BYTES {
            return Err(RouteError::Failed(RouteFailure::NotApplied("request id length out of range".into())));
        }
        match self.route::<E>(id, Call::Execute { cmd, meta }).await.map_err(RouteError::Failed)? {
            Outcome::Done(r) => Ok(r),
            Outcome::Rejected(j) => Err(RouteError::Rejected(j)),
            Outcome::View(_) => Err(RouteError::Failed(RouteFailure::NotApplied("a command was answered with a view".into()))),
        }
    }

    pub(super) async fn execute_local<E: Routable>(&self, id: &str, cmd: E::Command, meta: RequestMeta) -> Result<E::Reply, RouteError<E::Rejection>> {
        let mut msg = Execute::<E> { cmd, meta };
        for _ in 0..SEND_ATTEMPTS_MAX {
            let actor = self.activate::<E>(id).await.map_err(RouteError::Failed)?;
            self.observe_depth(&actor);
            match actor.ask(msg).await {
                Ok(reply) => return Ok(reply),
                Err(SendError::HandlerError(ExecError::Rejected(r))) => return Err(RouteError::Rejected(r)),
                Err(SendError::HandlerError(ExecError::Failed(f))) => return Err(RouteError::Failed(f)),
                Err(SendError::ActorNotRunning(m)) | Err(SendError::ActorRestarting(m)) => {
                    E::registry(&self.inner).forget(id, actor.id());
                    msg = m;
                }
                Err(e) => {
                    return Err(RouteError::Failed(RouteFailure::OutcomeUnknown(format!("{} {id}: {e:?}", E::KIND.name()))));
                }
            }
        }
        Err(RouteError::Failed(kept_stopping::<E>(id)))
    }

    /// Answers a named read from an entity's durable state (at its group's leader).
    pub async fn query<E: Routable, Q: Query<E>>(&self, id: &str, query: Q) -> Result<Q::Output, RouteFailure> {
        let view = match self.route::<E>(id, Call::Query(query.wrap())).await? {
            Outcome::View(v) => v,
            _ => return Err(RouteFailure::NotApplied("a query was answered with a command outcome".into())),
        };
        Q::unwrap(view).ok_or_else(|| RouteFailure::NotApplied(format!("{} {id} answered another query", E::KIND.name())))
    }

    /// Carries out one call of the entity envelope (what a workflow step asks), wherever its
    /// group's leader is.
    pub async fn dispatch(&self, envelope: Envelope) -> Result<Answer, RouteFailure> {
        match envelope {
            Envelope::Account { id, call } => self.route::<Account>(&id, call).await.map(Account::answer),
            Envelope::Portfolio { id, call } => self.route::<Portfolio>(&id, call).await.map(Portfolio::answer),
            Envelope::Instrument { id, call } => self.route::<Instrument>(&id, call).await.map(Instrument::answer),
            Envelope::EmailIndex { id, call } => self.route::<EmailIndex>(&id, call).await.map(EmailIndex::answer),
        }
    }

    /// As `dispatch`, for a command whose decision the caller needs before it is durable: when
    /// this node serves the entity's group, the entity answers at once with a ticket for the
    /// durability (`ExecuteEarly`); elsewhere the answer comes once durable, with no ticket.
    /// The caller waits for the ticket before it tells anyone of the outcome.
    ///
    /// With a `fence` (the term of a read the command was decided on, `Router::fence`) it is
    /// carried out here or not at all: its write is proposed only while this node leads the
    /// group in that term, and anywhere else it is `Unavailable` (the caller starts over).
    pub async fn dispatch_early(&self, envelope: Envelope, fence: Option<u64>) -> Result<(Answer, Option<Durable>), RouteFailure> {
        match envelope {
            Envelope::Account { id, call } => self.early::<Account>(&id, call, fence).await.map(|(o, d)| (Account::answer(o), d)),
            Envelope::Portfolio { id, call } => self.early::<Portfolio>(&id, call, fence).await.map(|(o, d)| (Portfolio::answer(o), d)),
            Envelope::Instrument { id, call } => self.early::<Instrument>(&id, call, fence).await.map(|(o, d)| (Instrument::answer(o), d)),
            Envelope::EmailIndex { id, call } => self.early::<EmailIndex>(&id, call, fence).await.map(|(o, d)| (EmailIndex::answer(o), d)),
        }
    }

    async fn early<E: Routable>(&self, id: &str, call: CallOf<E>, fence: Option<u64>) -> Result<(OutcomeOf<E>, Option<Durable>), RouteFailure> {
        let group = self.group_of(id);
        let fenced_out = || RouteFailure::Unavailable(format!("shard group {group}: leadership moved since the read this command was decided on"));
        let (cmd, meta) = match &call {
            Call::Execute { cmd, meta } if self.inner.journal.leadership(group).served => (cmd.clone(), meta.clone()),
            _ if fence.is_some() => return Err(fenced_out()),
            _ => return self.route::<E>(id, call).await.map(|o| (o, None)),
        };
        let mut msg = ExecuteEarly::<E> { cmd, meta, fence };
        for _ in 0..SEND_ATTEMPTS_MAX {
            let actor = self.activate::<E>(id).await?;
            self.observe_depth(&actor);
            match actor.ask(msg).await {
                Ok((Ok(reply), durable)) => return Ok((Outcome::Done(reply), Some(durable))),
                Ok((Err(rejection), durable)) => return Ok((Outcome::Rejected(rejection), Some(durable))),
                Err(SendError::ActorNotRunning(m)) | Err(SendError::ActorRestarting(m)) => {
                    E::registry(&self.inner).forget(id, actor.id());
                    msg = m;
                }
                // Leadership moved meanwhile: the ordinary route follows it (the command goes
                // again under its request id).
                Err(SendError::HandlerError(f)) if fence.is_some() && (moving(&f) || !self.inner.journal.leadership(group).served) => {
                    return Err(f);
                }
                Err(SendError::HandlerError(f)) if moving(&f) || !self.inner.journal.leadership(group).served => {
                    return self.route::<E>(id, call).await.map(|o| (o, None));
                }
                Err(SendError::HandlerError(f)) => return Err(f),
                Err(e) => return Err(RouteFailure::OutcomeUnknown(format!("{} {id}: {e:?}", E::KIND.name()))),
            }
        }
        Err(kept_stopping::<E>(id))
    }

    /// Carries out a call forwarded by a peer, here only: a node that does not serve the
    /// entity's group says so (the peer follows leadership), it never forwards again.
    pub async fn dispatch_local(&self, envelope: Envelope) -> Result<Answer, RouteFailure> {
        match envelope {
            Envelope::Account { id, call } => self.call_local::<Account>(&id, call).await.map(Account::answer),
            Envelope::Portfolio { id, call } => self.call_local::<Portfolio>(&id, call).await.map(Portfolio::answer),
            Envelope::Instrument { id, call } => self.call_local::<Instrument>(&id, call).await.map(Instrument::answer),
            Envelope::EmailIndex { id, call } => self.call_local::<EmailIndex>(&id, call).await.map(EmailIndex::answer),
        }
    }

    /// The raft term in which this node serves `user_id`'s group, read for a `peek`: `None`
    /// when it does not serve it now.
    pub fn fence(&self, user_id: &str) -> Option<u64> {
        self.inner.journal.serving_term(self.group_of(user_id))
    }
}
