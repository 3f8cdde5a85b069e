//! An entity actor's reads and housekeeping: queries, its journal read for a peer, the
//! test hooks, and the idle check that passivates it.

use super::*;

impl<E: Entity> Message<RunQuery<E>> for EntityActor<E> {
    type Reply = DelegatedReply<Result<E::View, EntityFailure>>;

    async fn handle(&mut self, msg: RunQuery<E>, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.last_activity = Instant::now();
        let owner = self.check_owner(ctx);
        let (delegated, sender) = ctx.reply_sender();
        if let Err(f) = owner {
            // At once: a stopping entity's memory may be ahead of storage for good.
            if let Some(tx) = sender {
                tx.send(Err(f));
            }
            return delegated;
        }
        let answer = Ok(self.state.query(&msg.query));
        self.when_durable(move || {
            if let Some(tx) = sender {
                tx.send(answer);
            }
        });
        delegated
    }
}

impl<E: Entity> Message<ReadJournal<E>> for EntityActor<E> {
    type Reply = DelegatedReply<Result<Vec<JournalEntry<E::Event>>, EntityFailure>>;

    async fn handle(&mut self, _: ReadJournal<E>, ctx: &mut Context<Self, Self::Reply>) -> Self::Reply {
        self.last_activity = Instant::now();
        let (delegated, sender) = ctx.reply_sender();
        let (store, id, upto) = (self.env.store.clone(), self.id.clone(), self.seq);
        self.when_durable(move || {
            tokio::spawn(async move {
                let read = tokio::task::spawn_blocking(move || store.journal::<E>(&id, upto)).await;
                let result = match read {
                    Ok(r) => r.map_err(|e| EntityFailure::NotApplied(e.to_string())),
                    Err(e) => Err(EntityFailure::NotApplied(e.to_string())),
                };
                if let Some(tx) = sender {
                    tx.send(result);
                }
            });
        });
        delegated
    }
}

impl<E: Entity> Message<Inspect<E>> for EntityActor<E> {
    type Reply = Result<(u64, E), EntityFailure>;
    async fn handle(&mut self, _: Inspect<E>, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        Ok((self.seq, self.state.clone()))
    }
}

impl<E: Entity> Message<DebugPanic> for EntityActor<E> {
    type Reply = Result<(), EntityFailure>;
    async fn handle(&mut self, _: DebugPanic, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        panic!("debug panic requested for {}", self.id);
    }
}

impl<E: Entity> Message<IdleCheck> for EntityActor<E> {
    type Reply = ();
    async fn handle(&mut self, _: IdleCheck, ctx: &mut Context<Self, ()>) {
        let idle = self.last_activity.elapsed() >= self.env.idle_timeout;
        let settled = *self.durable.borrow() >= self.seq;
        if idle && settled {
            tracing::debug!(entity = %self.id, "passivating idle entity");
            self.env.metrics.entity_passivations.get_or_create(&Metrics::kind(self.id.kind.name())).inc();
            (self.env.on_passivate)(&self.id, ctx.actor_ref().id());
            ctx.stop();
        }
    }
}
