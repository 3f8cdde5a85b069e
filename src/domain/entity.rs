//! The shape every entity state machine has, so one actor host and one simulator drive them all.

use crate::domain::ctx::Ctx;
use crate::domain::ids::EntityKind;
use crate::domain::time::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
    // Commands, replies, rejections and queries are values that can travel to the node that
    // hosts the entity (the entity envelope), so all of them serialise.
    type Command: Clone + Debug + Send + Serialize + DeserializeOwned + 'static;
    type Event: Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static;
    type Reply: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static;
    type Rejection: Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// The kind's named reads (see `entity_queries!`).
    type Query: Clone + Debug + Send + Serialize + DeserializeOwned + 'static;
    type View: Clone + Debug + Send + Serialize + DeserializeOwned + 'static;

    const KIND: EntityKind;

    /// The state of an entity that has no events yet.
    fn empty(id: &str) -> Self;

    /// Decides what a command means for the current state. Pure: no IO, time only from `ctx`.
    fn decide(&self, cmd: Self::Command, ctx: &mut Ctx<'_>) -> Result<Decision<Self::Event, Self::Reply>, Self::Rejection>;

    /// Answers a named read. Pure.
    fn query(&self, query: &Self::Query) -> Self::View;

    /// Applies one event. Must be total (events were valid when decided) and deterministic.
    fn apply(&mut self, event: &Self::Event);

    /// Asserts the entity's invariants; a violation is a bug and panics (TigerBeetle style).
    fn check_invariants(&self) {}

    /// What a request id stands for in a command, for the memory of requests seen: a command
    /// sent again under the same request id must have the same form, or it is refused as
    /// another command. By default the whole command. A kind whose commands carry values read
    /// live for the decision (a quote, the investor's facts) leaves those out: a workflow step
    /// that runs again after its answer was lost reads them again, and a price that ticked in
    /// between does not make it another request — it is answered what the first run decided.
    fn request_form(cmd: &Self::Command) -> impl Serialize + '_ {
        cmd
    }

    /// Whether the journal of this kind may be truncated behind a snapshot (market data) or must
    /// be kept whole as a record (accounts, portfolios).
    fn journal_is_record() -> bool {
        true
    }
}

/// One named read of an entity: a serialisable value (it can be sent to the node that hosts the
/// entity) whose answer is computed from the state. Implement it for a query struct, then list
/// the struct in the kind's `entity_queries!` so it joins the kind's `Query` and `View` enums.
pub trait Answer<E>: Clone + Debug + Send + Serialize + DeserializeOwned + 'static {
    type Output: Clone + Debug + Send + Serialize + DeserializeOwned + 'static;
    fn answer(&self, state: &E) -> Self::Output;
}

/// A query of a kind's `Query` enum: how it is wrapped for the trip and its answer unwrapped.
pub trait Query<E: Entity>: Answer<E> {
    fn wrap(self) -> E::Query;
    /// `None` when the view answers another query (a driver bug, reported by the caller).
    fn unwrap(view: E::View) -> Option<Self::Output>;
}

/// Declares an entity kind's queries: `entity_queries!(Account, AccountQuery, AccountView { Exists, … })`
/// makes the two serialisable enums (one variant per query struct), `Query` for every struct and
/// `AccountQuery::run(&self, &Account) -> AccountView` for the kind's `Entity::query`.
#[macro_export]
macro_rules! entity_queries {
    ($entity:ty, $query:ident, $view:ident { $($name:ident),+ $(,)? }) => {
        /// Every named read of this kind, as one value that can travel.
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
        pub enum $query {
            $($name($name)),+
        }

        /// The answers to the kind's queries, one variant per query (a value in transit: its
        /// size is the largest answer's).
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
        #[allow(clippy::large_enum_variant)]
        pub enum $view {
            $($name(<$name as $crate::domain::entity::Answer<$entity>>::Output)),+
        }

        impl $query {
            pub fn run(&self, state: &$entity) -> $view {
                match self {
                    $($query::$name(q) => $view::$name($crate::domain::entity::Answer::<$entity>::answer(q, state))),+
                }
            }
        }

        $(
            impl $crate::domain::entity::Query<$entity> for $name {
                fn wrap(self) -> $query {
                    $query::$name(self)
                }
                #[allow(unreachable_patterns)]
                fn unwrap(view: $view) -> Option<Self::Output> {
                    match view {
                        $view::$name(v) => Some(v),
                        _ => None,
                    }
                }
            }
        )+
    };
}

/// What an entity remembers of a command it applied under a request id: when, a digest of the
/// command (a reused id with another command is a driver bug, refused), and the outcome to
/// answer again. Kept inside the entity's shard range for a bounded time (DESIGN.md §3b).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied<R, J> {
    pub at: Timestamp,
    pub digest: [u8; 32],
    pub outcome: Result<R, J>,
}

/// The request ids an entity applied, with their outcomes: exactly once for a command that is
/// retried after an ambiguous failure (a lost reply, a timed-out forward, a leader change).
/// Sans-IO: the driver persists what `remember` and `expire` report.
#[derive(Clone, Debug)]
pub struct RequestLog<R, J> {
    by_id: BTreeMap<String, Applied<R, J>>,
    /// (applied at, id), oldest first: what expiry drops.
    by_age: BTreeSet<(Timestamp, String)>,
    /// The latest `at` remembered: times only move forward here, even if the clock steps back,
    /// so the newest request is never the first to expire.
    latest: Timestamp,
    /// The id remembered last (never expired by the commit that remembers it).
    newest: Option<String>,
}

impl<R, J> Default for RequestLog<R, J> {
    fn default() -> Self {
        RequestLog {
            by_id: BTreeMap::new(),
            by_age: BTreeSet::new(),
            latest: Timestamp(i64::MIN),
            newest: None,
        }
    }
}

/// What a request id says about a command arriving under it.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen<R, J> {
    /// Never applied: decide it.
    Fresh,
    /// Applied before: answer this again, apply nothing.
    Again(Result<R, J>),
    /// The id came with another command before (a driver bug): refuse, apply nothing.
    Conflict,
}

impl<R: Clone, J: Clone> RequestLog<R, J> {
    /// The rule both hosts follow for a command with `digest` under `request_id`.
    pub fn seen(&self, request_id: &str, digest: &[u8; 32]) -> Seen<R, J> {
        match self.by_id.get(request_id) {
            None => Seen::Fresh,
            Some(a) if a.digest == *digest => Seen::Again(a.outcome.clone()),
            Some(_) => Seen::Conflict,
        }
    }

    pub fn get(&self, request_id: &str) -> Option<&Applied<R, J>> {
        self.by_id.get(request_id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The log as recovered from its stored records at a restart: every record remembered,
    /// oldest first (so expiry keeps its order). With the planted bug
    /// `ForgetIdempotencyOnRestart` the records are dropped — the mistake the simulator catches.
    pub fn restore(records: impl IntoIterator<Item = (String, Applied<R, J>)>) -> RequestLog<R, J> {
        let mut records: Vec<_> = records.into_iter().collect();
        if crate::planted::planted(crate::planted::Bug::ForgetIdempotencyOnRestart) {
            records.clear();
        }
        records.sort_by(|a, b| (a.1.at, &a.0).cmp(&(b.1.at, &b.0)));
        let mut log = RequestLog::default();
        for (id, applied) in records {
            log.remember(id, applied);
        }
        log
    }

    /// Every remembered request (what a host stores, one record each).
    pub fn records(&self) -> impl Iterator<Item = (&String, &Applied<R, J>)> {
        self.by_id.iter()
    }

    /// Remembers a request; its time is taken as no earlier than any remembered before (the
    /// stored `at` is that time).
    pub fn remember(&mut self, request_id: String, mut applied: Applied<R, J>) {
        assert!(!self.by_id.contains_key(&request_id), "a request id is remembered once");
        applied.at = applied.at.max(self.latest);
        self.latest = applied.at;
        self.by_age.insert((applied.at, request_id.clone()));
        self.by_id.insert(request_id.clone(), applied);
        self.newest = Some(request_id);
        assert_eq!(self.by_id.len(), self.by_age.len(), "request log indexes agree");
    }

    /// Forgets what is older than `keep_ms` before `now`, and the oldest beyond `max` entries —
    /// never the request remembered last; returns the ids forgotten (the driver deletes their
    /// records).
    pub fn expire(&mut self, now: Timestamp, keep_ms: i64, max: usize) -> Vec<String> {
        let horizon = now.max(self.latest).0.saturating_sub(keep_ms);
        let mut gone = Vec::new();
        loop {
            let over = self.by_id.len() > max.max(1);
            // The oldest that is not the newest: the first element, but when everything shares
            // one time (the newest sorts anywhere among them). O(log n) per step, not a copy.
            let newest = self.newest.as_deref();
            let oldest = self.by_age.iter().find(|(_, id)| Some(id.as_str()) != newest).cloned();
            match oldest {
                Some((at, id)) if at.0 < horizon || over => {
                    self.by_age.remove(&(at, id.clone()));
                    self.by_id.remove(&id);
                    gone.push(id);
                }
                _ => break,
            }
        }
        assert_eq!(self.by_id.len(), self.by_age.len(), "request log indexes agree");
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(at: i64) -> Applied<u32, ()> {
        Applied {
            at: Timestamp(at),
            digest: [0; 32],
            outcome: Ok(1),
        }
    }

    #[test]
    fn the_request_log_expires_by_age_and_count_but_never_the_newest() {
        let mut log: RequestLog<u32, ()> = RequestLog::default();
        for i in 0..5 {
            log.remember(format!("r{i}"), applied(1_000 + i));
            assert!(log.expire(Timestamp(1_000 + i), 10_000, 3).iter().all(|g| *g != format!("r{i}")));
        }
        assert_eq!(log.len(), 3, "at most the cap");
        assert!(log.get("r4").is_some() && log.get("r0").is_none());
        // Past the memory: everything but the newest goes.
        let gone = log.expire(Timestamp(1_000_000), 10_000, 3);
        assert_eq!(gone.len(), 2);
        assert!(log.get("r4").is_some(), "the request remembered last stays");
    }

    #[test]
    fn a_clock_stepping_back_does_not_make_the_new_request_the_oldest() {
        let mut log: RequestLog<u32, ()> = RequestLog::default();
        log.remember("a".into(), applied(5_000));
        log.remember("b".into(), applied(5_001));
        // The clock steps back a second; the log is at its cap.
        log.remember("c".into(), applied(4_000));
        let gone = log.expire(Timestamp(4_000), 60_000, 2);
        assert_eq!(gone, vec!["a".to_string()], "the oldest by log order goes, not the new one");
        assert_eq!(log.get("c").map(|a| a.at), Some(Timestamp(5_001)), "its time is no earlier than the latest");
    }
}
