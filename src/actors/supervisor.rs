//! The supervisor of entity actors. One-for-one: a panicking entity is restarted alone, from
//! its persisted state, within the configured restart limit; its siblings never notice.

use kameo::prelude::*;
use kameo::supervision::SupervisionStrategy;
use std::convert::Infallible;

pub struct EntitySupervisor;

impl Actor for EntitySupervisor {
    type Args = ();
    type Error = Infallible;

    fn supervision_strategy() -> SupervisionStrategy {
        SupervisionStrategy::OneForOne
    }

    async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(EntitySupervisor)
    }
}
