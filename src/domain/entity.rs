//! The shape every entity state machine has, so one actor host and one simulator drive them all.

use crate::domain::ctx::Ctx;
use crate::domain::ids::EntityKind;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// The outcome of a successful `decide`: events to persist and apply, and the answer to give
/// once they are durable. An idempotent replay has no events and the stored answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<E, R> {
    pub events: Vec<E>,
    pub reply: R,
}

impl<E, R> Decision<E, R> {
    pub fn new(events: Vec<E>, reply: R) -> Self {
        Decision { events, reply }
    }
    pub fn replay(reply: R) -> Self {
        Decision { events: Vec::new(), reply }
    }
}

pub trait Entity: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {
    type Command: Debug + Send + 'static;
    type Event: Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static;
    type Reply: Clone + Debug + Send + 'static;
    type Rejection: Clone + Debug + PartialEq + Send + 'static;

    const KIND: EntityKind;

    /// The state of an entity that has no events yet.
    fn empty(id: &str) -> Self;

    /// Decides what a command means for the current state. Pure: no IO, time only from `ctx`.
    fn decide(&self, cmd: Self::Command, ctx: &mut Ctx<'_>) -> Result<Decision<Self::Event, Self::Reply>, Self::Rejection>;

    /// Applies one event. Must be total (events were valid when decided) and deterministic.
    fn apply(&mut self, event: &Self::Event);

    /// Asserts the entity's invariants; a violation is a bug and panics (TigerBeetle style).
    fn check_invariants(&self) {}

    /// Whether the journal of this kind may be truncated behind a snapshot (market data) or must
    /// be kept whole as a record (accounts, portfolios).
    fn journal_is_record() -> bool {
        true
    }
}
