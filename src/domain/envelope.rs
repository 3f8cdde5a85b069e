//! The entity envelope: one call on one entity (a command with its request meta, or a named
//! query) and its answer, as values that can cross the network. The router dispatches them to
//! the entity's host; workflows are written against them, so the node and the simulator drive
//! the same steps.

use crate::domain::account::Account;
use crate::domain::email_index::EmailIndex;
use crate::domain::entity::{Entity, Query};
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::Portfolio;
use serde::{Deserialize, Serialize};

/// Who asked and under which request id; travels with every command into the audit trail. The
/// request id is made by a node (never a client's), and an entity applies a command once per id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta {
    pub request_id: String,
    /// A user id, a staff id, or `system`.
    pub actor: String,
}

impl RequestMeta {
    /// Step `label` of this request (one of several commands it sends to one entity): an id of
    /// its own, the same each time the step is retried.
    pub fn step(&self, label: impl std::fmt::Display) -> RequestMeta {
        RequestMeta {
            request_id: format!("{}/{label}", self.request_id),
            actor: self.actor.clone(),
        }
    }
}

/// One call on an entity of a kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Call<C, Q> {
    Execute { cmd: C, meta: RequestMeta },
    Query(Q),
}

/// What a call answered (a failure on the way is not an outcome: the driver reports it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome<R, J, V> {
    /// The command was applied (or answered again for its request id).
    Done(R),
    /// The domain refused the command.
    Rejected(J),
    /// The answer to a query.
    View(V),
}

pub type CallOf<E> = Call<<E as Entity>::Command, <E as Entity>::Query>;
pub type OutcomeOf<E> = Outcome<<E as Entity>::Reply, <E as Entity>::Rejection, <E as Entity>::View>;

/// A call addressed to one entity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Envelope {
    Account { id: String, call: CallOf<Account> },
    Portfolio { id: String, call: CallOf<Portfolio> },
    Instrument { id: String, call: CallOf<Instrument> },
    EmailIndex { id: String, call: CallOf<EmailIndex> },
}

impl Envelope {
    /// The id of the entity the call is for.
    pub fn entity_id(&self) -> &str {
        match self {
            Envelope::Account { id, .. } | Envelope::Portfolio { id, .. } | Envelope::Instrument { id, .. } | Envelope::EmailIndex { id, .. } => id,
        }
    }

    /// The kind of entity the call is for.
    pub fn kind(&self) -> crate::domain::ids::EntityKind {
        use crate::domain::ids::EntityKind;
        match self {
            Envelope::Account { .. } => EntityKind::Account,
            Envelope::Portfolio { .. } => EntityKind::Portfolio,
            Envelope::Instrument { .. } => EntityKind::Instrument,
            Envelope::EmailIndex { .. } => EntityKind::EmailIndex,
        }
    }

    /// A command's request (`None`: a query).
    pub fn command_meta(&self) -> Option<&RequestMeta> {
        fn meta<C, Q>(call: &Call<C, Q>) -> Option<&RequestMeta> {
            match call {
                Call::Execute { meta, .. } => Some(meta),
                Call::Query(_) => None,
            }
        }
        match self {
            Envelope::Account { call, .. } => meta(call),
            Envelope::Portfolio { call, .. } => meta(call),
            Envelope::Instrument { call, .. } => meta(call),
            Envelope::EmailIndex { call, .. } => meta(call),
        }
    }
}

/// The answer to an [`Envelope`], of the same kind (a value in transit: its size is the
/// largest answer's).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Account(OutcomeOf<Account>),
    Portfolio(OutcomeOf<Portfolio>),
    Instrument(OutcomeOf<Instrument>),
    EmailIndex(OutcomeOf<EmailIndex>),
}

/// The entity kinds an envelope can carry.
pub trait Enveloped: Entity {
    fn envelope(id: String, call: CallOf<Self>) -> Envelope;
    fn answer(outcome: OutcomeOf<Self>) -> Answer;
    fn outcome(answer: Answer) -> Option<OutcomeOf<Self>>;
}

macro_rules! enveloped {
    ($t:ident) => {
        impl Enveloped for $t {
            fn envelope(id: String, call: CallOf<Self>) -> Envelope {
                Envelope::$t { id, call }
            }
            fn answer(outcome: OutcomeOf<Self>) -> Answer {
                Answer::$t(outcome)
            }
            fn outcome(answer: Answer) -> Option<OutcomeOf<Self>> {
                match answer {
                    Answer::$t(o) => Some(o),
                    _ => None,
                }
            }
        }
    };
}
enveloped!(Account);
enveloped!(Portfolio);
enveloped!(Instrument);
enveloped!(EmailIndex);

impl Envelope {
    pub fn execute<E: Enveloped>(id: impl Into<String>, cmd: E::Command, meta: RequestMeta) -> Envelope {
        E::envelope(id.into(), Call::Execute { cmd, meta })
    }

    pub fn query<E: Enveloped, Q: Query<E>>(id: impl Into<String>, query: Q) -> Envelope {
        E::envelope(id.into(), Call::Query(query.wrap()))
    }
}

impl Answer {
    /// The reply or rejection of a command on an `E`; `None` when this answers something else.
    pub fn executed<E: Enveloped>(self) -> Option<Result<E::Reply, E::Rejection>> {
        match E::outcome(self)? {
            Outcome::Done(r) => Some(Ok(r)),
            Outcome::Rejected(j) => Some(Err(j)),
            Outcome::View(_) => None,
        }
    }

    /// The answer to query `Q` on an `E`; `None` when this answers something else.
    pub fn viewed<E: Enveloped, Q: Query<E>>(self) -> Option<Q::Output> {
        match E::outcome(self)? {
            Outcome::View(v) => Q::unwrap(v),
            _ => None,
        }
    }
}

/// Where a shard lives, for a caller that asked the wrong node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OwnerHint {
    pub shard: u16,
    pub owner: String,
    pub epoch: u64,
}

impl std::fmt::Display for OwnerHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} is owned by node {} (shard map epoch {})", self.shard, self.owner, self.epoch)
    }
}

/// Why an entity could not carry out a command or a read (beyond the domain's own
/// rejections). Each says what a caller may do next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EntityFailure {
    /// Nothing was applied: safe to retry, with any request id.
    #[error("not applied: {0}")]
    NotApplied(String),
    /// It may or may not have been applied (the write was sent, its outcome is not known):
    /// retry with the same request id, which the entity answers once.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// This node does not own the entity's shard; nothing was applied.
    #[error("not the owner: {0}")]
    NotOwner(OwnerHint),
    /// The write was not committed: its group has no leader here, or leadership was moving
    /// (raft refused the proposal, or replaced the entry). Retry with the same request id —
    /// the router does so itself, following leadership, within the request timeout.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A stored record of the entity does not read (damage on disk): nothing was applied, and
    /// trying again does not help until an operator restores it. Its text starts with
    /// [`CORRUPT_MARK`], which survives the workflows' conversions to text.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// How the text of [`EntityFailure::Corrupt`] begins.
pub const CORRUPT_MARK: &str = "corrupt record: ";

impl From<EntityFailure> for String {
    fn from(f: EntityFailure) -> String {
        f.to_string()
    }
}
