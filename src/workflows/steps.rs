//! Runs a user's step on this node — the leader of the user's shard group (the router sent it
//! here): an order through the order path, or accepting advice. The entity calls inside are
//! local to this node; only the quote may come from the price book.

use super::accept_advice::AcceptAdvice;
use super::flow::NodeEffects;
use super::order::PlaceOrder;
use super::services::Services;
use crate::domain::envelope::EntityFailure;
use crate::domain::steps::{StepAnswer, UserStep};

pub async fn run_step(s: &Services, step: UserStep) -> Result<StepAnswer, EntityFailure> {
    match step {
        UserStep::PlaceOrder(request) => {
            // A symbol this node's catalog does not know yet (listed a moment ago elsewhere)
            // is asked of the instrument itself, which answers for it.
            let listed = s.is_listed(&request.symbol) || crate::domain::instrument::is_symbol(&request.symbol);
            let flow = PlaceOrder::new(request, s.order_terms(), listed);
            super::run(&s.router, &NodeEffects(s), flow).await.map(StepAnswer::Order)
        }
        UserStep::AcceptAdvice { user_id, advice_id, key, meta } => {
            // One accept per user at a time at the leader (a concurrent retry then finds the
            // first one's orders and replays them; after a change of leader, the account's
            // recorded acceptance and the orders' keys make a second run a replay).
            let _one_at_a_time = s.accepting.lock(&user_id).await;
            let flow = AcceptAdvice::new(user_id, advice_id, key, meta, s.order_terms(), s.symbols().into_iter().collect());
            super::run(&s.router, &NodeEffects(s), flow).await.map(StepAnswer::Accept)
        }
        UserStep::Withdraw(request) => super::run(&s.router, &NodeEffects(s), super::withdrawal::Withdraw::new(request))
            .await
            .map(StepAnswer::Cash),
        UserStep::DataKey { key_id } => s.create_data_key_here(&key_id).await,
        UserStep::WrappedKey { key_id } => s
            .wrapped_key_here(&key_id)
            .await
            .map(StepAnswer::Wrapped)
            .map_err(|e| EntityFailure::Unavailable(format!("data key: {e}"))),
    }
}
