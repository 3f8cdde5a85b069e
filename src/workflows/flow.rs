//! The shape of a workflow: a sans-IO state machine that asks for one entity call at a time
//! (an [`Envelope`]) or an adapter's effect, is handed the answer, and ends with its output.
//! Production drives it over the router ([`run`]); the simulator drives the very same machine
//! over its own entities ([`run_with`]). Time and ids come in through the machine's input, never
//! from a clock or the OS inside it.

use crate::actors::entity::EntityFailure;
use crate::cluster::Router;
use crate::domain::envelope::{Answer, Envelope};
use crate::domain::portfolio::Order;
use std::future::Future;

/// The most steps one workflow may take (a bound on every loop; a workflow that needs more is
/// a bug).
pub const STEPS_MAX: usize = 1024;

/// What a workflow asks for next.
#[derive(Clone, Debug)]
pub enum Next<O> {
    /// Carry out this entity call and hand back its answer.
    Call(Envelope),
    /// The broker executes a booked fill and confirms it durably (answered with `None`).
    Confirm { user_id: String, order: Order },
    /// Finished.
    Done(O),
}

/// What a workflow is handed: nothing at the start, then the answer to its last request.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Start,
    Answer(Answer),
    Confirmed,
}

pub trait Workflow {
    type Output;
    fn next(&mut self, input: Input) -> Next<Self::Output>;
}

/// The adapters a workflow's effects need beside the entities.
pub trait Effects {
    /// The broker executes and confirms `order`; a failure is logged and left to reconciliation
    /// (the order is booked; a missing confirmation is what reconciliation raises).
    fn confirm(&self, user_id: &str, order: &Order) -> impl Future<Output = ()> + Send;
}

/// Drives `wf` over the node's router: each call is dispatched to its entity (local today, over
/// the network in a cluster). A failed call ends the workflow with that failure; its steps are
/// exactly once per request id, so running it again with the same ids is safe.
pub async fn run<W: Workflow>(router: &Router, effects: &impl Effects, mut wf: W) -> Result<W::Output, EntityFailure> {
    let mut input = Input::Start;
    for _ in 0..STEPS_MAX {
        input = match wf.next(input) {
            Next::Done(out) => return Ok(out),
            Next::Call(envelope) => Input::Answer(router.dispatch(envelope).await?),
            Next::Confirm { user_id, order } => {
                effects.confirm(&user_id, &order).await;
                Input::Confirmed
            }
        };
    }
    panic!("a workflow took more than {STEPS_MAX} steps");
}

/// Drives `wf` synchronously over `call` (the simulator's entities) and `confirm`.
pub fn run_with<W: Workflow>(
    mut wf: W,
    mut call: impl FnMut(Envelope) -> Result<Answer, EntityFailure>,
    mut confirm: impl FnMut(&str, &Order),
) -> Result<W::Output, EntityFailure> {
    let mut input = Input::Start;
    for _ in 0..STEPS_MAX {
        input = match wf.next(input) {
            Next::Done(out) => return Ok(out),
            Next::Call(envelope) => Input::Answer(call(envelope)?),
            Next::Confirm { user_id, order } => {
                confirm(&user_id, &order);
                Input::Confirmed
            }
        };
    }
    panic!("a workflow took more than {STEPS_MAX} steps");
}

/// A workflow was handed an answer to a request it did not make: a driver bug.
#[track_caller]
pub(crate) fn unexpected(workflow: &str, input: &Input) -> ! {
    panic!("{workflow}: unexpected input {input:?}");
}

/// The node's effects: the broker adapter.
pub struct BrokerEffects<'a>(pub &'a dyn crate::adapters::broker::Broker);

impl Effects for BrokerEffects<'_> {
    async fn confirm(&self, user_id: &str, order: &Order) {
        // A failure here leaves a booked order without a confirmation, which reconciliation
        // raises as an alert (a confirmation lost in a crash would be a false "missing" alert,
        // hence durable before the client hears of the fill).
        if let Err(e) = self.0.execute(user_id, order).await {
            tracing::error!(error = %e, "the broker did not confirm a booked order");
        }
    }
}
