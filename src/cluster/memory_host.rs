//! The entity host without IO: every entity in memory, each command decided and applied in
//! order, exactly once per request id (the same `RequestLog`, digest and rules as the actor
//! host), with time and randomness handed in. The simulator drives workflows over it, and tests
//! compare it with the node's router on the same inputs.
//!
//! Entities are shared between copies of a host (`Arc`, copied on write): the simulator keeps
//! a checkpoint of every replica and starts a restarted one from it, and a copy costs a pointer
//! per entity, not the entities. A restart reloads each entity through production's recovery
//! path when it is next called, as the node's actors load theirs on activation.

use crate::domain::account::Account;
use crate::domain::audit::AuditRecord;
use crate::domain::ctx::{Ctx, Effect};
use crate::domain::email_index::EmailIndex;
use crate::domain::entity::{Applied, Decision, Entity, Query, RequestLog, Seen};
use crate::domain::envelope::{Answer, Call, CallOf, EntityFailure, Envelope, Enveloped, Outcome, RequestMeta};
use crate::domain::instrument::Instrument;
use crate::domain::portfolio::Portfolio;
use crate::domain::time::Timestamp;
use crate::storage::codec;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One entity as the host keeps it.
#[derive(Clone, Debug)]
pub struct Hosted<E: Entity> {
    pub state: E,
    /// Every event applied, oldest first.
    pub journal: Vec<E::Event>,
    requests: RequestLog<E::Reply, E::Rejection>,
    /// The host's restart it was last loaded after (`MemoryHost::reload`).
    loaded: u64,
}

impl<E: Entity> Hosted<E> {
    fn new(id: &str, loaded: u64) -> Hosted<E> {
        Hosted {
            state: E::empty(id),
            journal: Vec::new(),
            requests: RequestLog::default(),
            loaded,
        }
    }

    /// Loads it again as a host does from disk after a restart: its state decoded from its
    /// stored form, its request ids through `RequestLog::restore`.
    fn reload(&mut self, restart: u64) {
        self.state = codec::decode(&codec::encode(&self.state)).expect("an entity's stored form decodes");
        let records: Vec<_> = self.requests.records().map(|(id, a)| (id.clone(), a.clone())).collect();
        self.requests = RequestLog::restore(records);
        self.loaded = restart;
    }
}

/// Entities of one kind, by id (shared with the host's copies until one of them changes).
pub type Slot<E> = BTreeMap<String, Arc<Hosted<E>>>;

#[derive(Clone)]
pub struct MemoryHost {
    pub accounts: Slot<Account>,
    pub portfolios: Slot<Portfolio>,
    pub instruments: Slot<Instrument>,
    pub email_index: Slot<EmailIndex>,
    /// The audit records the decisions asked for, in order (sequence numbers unassigned).
    pub audit: Vec<AuditRecord>,
    /// Commands answered again from an entity's memory of their request id.
    pub replays: u64,
    /// The shard records its writes put (data keys, erasure schedules, regulatory records),
    /// by storage key, as a node's store holds them.
    pub records: BTreeMap<Vec<u8>, Vec<u8>>,
    now: Timestamp,
    rng: ChaCha20Rng,
    request_memory_ms: i64,
    request_memory_max: usize,
    /// Restarts so far: an entity loaded before the latest is loaded again when next called.
    restarts: u64,
}

/// The kinds the host keeps, and where.
pub trait HostedKind: Enveloped {
    fn slot(host: &mut MemoryHost) -> &mut Slot<Self>;
}

macro_rules! hosted {
    ($t:ty, $field:ident) => {
        impl HostedKind for $t {
            fn slot(host: &mut MemoryHost) -> &mut Slot<Self> {
                &mut host.$field
            }
        }
    };
}
hosted!(Account, accounts);
hosted!(Portfolio, portfolios);
hosted!(Instrument, instruments);
hosted!(EmailIndex, email_index);

impl MemoryHost {
    /// A host whose ids are drawn from `seed`, remembering request ids as the node's defaults do.
    pub fn new(seed: u64, now: Timestamp) -> MemoryHost {
        MemoryHost {
            accounts: BTreeMap::new(),
            portfolios: BTreeMap::new(),
            instruments: BTreeMap::new(),
            email_index: BTreeMap::new(),
            audit: Vec::new(),
            replays: 0,
            records: BTreeMap::new(),
            now,
            rng: ChaCha20Rng::seed_from_u64(seed),
            request_memory_ms: 24 * 3_600_000,
            request_memory_max: 10_000,
            restarts: 0,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Moves the host's clock (never backwards).
    pub fn set_now(&mut self, now: Timestamp) {
        assert!(now >= self.now, "the host's clock does not go back");
        self.now = now;
    }

    /// A restart: every entity comes back as a host loads it from disk — its state decoded
    /// from its stored form and its request ids through `RequestLog::restore`, production's
    /// recovery path — each when it is next called (as actors are activated).
    pub fn reload(&mut self) {
        self.restarts += 1;
    }

    /// Entity `id` of kind `E`, loaded (again, after a restart) and this host's own to change.
    fn hosted<E: HostedKind>(&mut self, id: &str) -> &mut Hosted<E> {
        let restart = self.restarts;
        let shared = E::slot(self).entry(id.to_string()).or_insert_with(|| Arc::new(Hosted::new(id, restart)));
        let hosted = Arc::make_mut(shared);
        if hosted.loaded != restart {
            hosted.reload(restart);
        }
        hosted
    }

    /// Carries out one call of the entity envelope.
    pub fn dispatch(&mut self, envelope: Envelope) -> Result<Answer, EntityFailure> {
        match envelope {
            Envelope::Account { id, call } => self.call::<Account>(&id, call),
            Envelope::Portfolio { id, call } => self.call::<Portfolio>(&id, call),
            Envelope::Instrument { id, call } => self.call::<Instrument>(&id, call),
            Envelope::EmailIndex { id, call } => self.call::<EmailIndex>(&id, call),
        }
    }

    /// A command on an entity, as the router's `execute`.
    pub fn execute<E: HostedKind>(&mut self, id: &str, cmd: E::Command, meta: RequestMeta) -> Result<Result<E::Reply, E::Rejection>, EntityFailure> {
        if id.is_empty() || id.len() > crate::domain::ids::MAX_ID_LEN {
            return Err(EntityFailure::NotApplied("entity id length out of range".into()));
        }
        if meta.request_id.is_empty() || meta.request_id.len() > crate::cluster::router::REQUEST_ID_MAX_BYTES {
            return Err(EntityFailure::NotApplied("request id length out of range".into()));
        }
        let (now, keep_ms, max) = (self.now, self.request_memory_ms, self.request_memory_max);
        let digest = codec::digest(&E::request_form(&cmd));
        let mut rng = std::mem::replace(&mut self.rng, ChaCha20Rng::seed_from_u64(0));
        let hosted = self.hosted::<E>(id);
        match hosted.requests.seen(&meta.request_id, &digest) {
            Seen::Fresh => {}
            Seen::Conflict => {
                self.rng = rng;
                return Err(EntityFailure::NotApplied(format!(
                    "request id {} was used for another command",
                    meta.request_id
                )));
            }
            Seen::Again(outcome) => {
                self.rng = rng;
                self.replays += 1;
                return Ok(outcome);
            }
        }
        let mut ctx = Ctx::new(now, &mut rng);
        let decided = hosted.state.decide(cmd, &mut ctx);
        let effects = ctx.take_effects();
        let (events, outcome) = match decided {
            Ok(Decision { events, reply }) => (events, Ok(reply)),
            Err(rejection) => (Vec::new(), Err(rejection)),
        };
        let wrote = !events.is_empty() || !effects.is_empty();
        for event in events {
            hosted.state.apply(&event);
            hosted.journal.push(event);
        }
        hosted.state.check_invariants();
        if wrote {
            hosted.requests.remember(
                meta.request_id.clone(),
                Applied {
                    at: now,
                    digest,
                    outcome: outcome.clone(),
                },
            );
            hosted.requests.expire(now, keep_ms, max);
        }
        self.rng = rng;
        let entity = format!("{}/{id}", E::KIND.name());
        self.audit.extend(effects.into_iter().map(|Effect::Audit(d)| AuditRecord {
            seq: 0,
            group: 0,
            at: now,
            actor: meta.actor.clone(),
            action: d.action,
            entity: entity.clone(),
            request_id: meta.request_id.clone(),
            outcome: d.outcome,
            details: d.details,
        }));
        Ok(outcome)
    }

    /// Applies a write set of shard records (a workflow's `Effect::Write`, a data key's
    /// creation or destruction), as a node's group commit does.
    pub fn write(&mut self, writes: &crate::storage::store::WriteSet) {
        for (k, v) in &writes.puts {
            self.records.insert(k.clone(), v.clone());
        }
        for k in &writes.deletes {
            self.records.remove(k);
        }
        self.audit.extend(writes.audit.iter().cloned());
    }

    /// A named read, as the router's `query`.
    pub fn query<E: HostedKind, Q: Query<E>>(&mut self, id: &str, query: Q) -> Q::Output {
        let view = self.view::<E>(id, &query.wrap());
        Q::unwrap(view).expect("a query is answered by its own view")
    }

    fn view<E: HostedKind>(&mut self, id: &str, query: &E::Query) -> E::View {
        let restart = self.restarts;
        match E::slot(self).get(id) {
            // Reloaded first if a restart came since it was loaded (its stored form answers).
            Some(h) if h.loaded != restart => self.hosted::<E>(id).state.query(query),
            Some(h) => h.state.query(query),
            None => E::empty(id).query(query),
        }
    }

    fn call<E: HostedKind>(&mut self, id: &str, call: CallOf<E>) -> Result<Answer, EntityFailure> {
        let outcome = match call {
            Call::Execute { cmd, meta } => match self.execute::<E>(id, cmd, meta)? {
                Ok(reply) => Outcome::Done(reply),
                Err(rejection) => Outcome::Rejected(rejection),
            },
            Call::Query(q) => Outcome::View(self.view::<E>(id, &q)),
        };
        Ok(E::answer(outcome))
    }
}
