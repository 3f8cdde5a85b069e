//! The workflows in the cluster: the real sans-IO machines of `moneta::workflows` (registration,
//! the erasure request, the erasure itself) driven over the simulated cluster. A flow runs on a
//! node, as production runs it where the request arrived (or, for the erasure job, at the
//! leader of the group whose schedule it read): each entity call goes to the leader of the
//! entity's group that node knows and can reach — a command through the group's log, a query
//! through a read barrier — and each effect is carried out as production's adapters do, over
//! the same groups: a data key is created at the leader of its group after a read barrier, one
//! creation at a time there; a key is read through a barrier before sealing; records are
//! written through the log. A call or effect that fails or times out goes again under the same
//! ids; a flow whose node crashes dies with it (its client, or the job, starts again).

use super::market::{Purpose, Single};
use super::{ClusterSim, Entry, Failure, CLIENT_TIMEOUT_TICKS, EPOCH_MS};
use moneta::cluster::raft::sim::TICK_MS;
use moneta::cluster::raft::{GroupId, Outcome, ProposalId, RaftId};
use moneta::domain::account::AdviceRecord;
use moneta::domain::account::Profile;
use moneta::domain::envelope::Answer;
use moneta::domain::envelope::Envelope;
use moneta::domain::steps::key_owner;
use moneta::domain::time::Timestamp;
use moneta::storage::codec;
use moneta::storage::vault::Vault;
use moneta::workflows::accept_advice::{AcceptAdvice, Accepted, NotAccepted};
use moneta::workflows::advice::AdviceError;
use moneta::workflows::advise::Advise;
use moneta::workflows::end_of_day::{ClosePortfolio, Closed};
use moneta::workflows::erasure::{Erase, Erased};
use moneta::workflows::erasure_request::{ErasureRequest, RequestErasure};
use moneta::workflows::flow::{Effect, Effected, Input, Next, Workflow};
use moneta::workflows::onboarding::{Onboarded, SetSuitability, SubmitKyc};
use moneta::workflows::registration::{Register, RegistrationError};
use rand::Rng;

/// The machines the simulator drives.
pub(super) enum Machine {
    Register(Box<Register>),
    RequestErasure(Box<RequestErasure>),
    Erase(Box<Erase>),
    Close(Box<ClosePortfolio>),
    Kyc(Box<SubmitKyc>),
    Suitability(Box<SetSuitability>),
    Single(Box<Single>),
    Advise(Box<Advise>),
    Accept(Box<AcceptAdvice>),
}

/// How a machine ended.
#[derive(Debug)]
pub(super) enum Ended {
    Registered(Result<String, RegistrationError>),
    ErasureRequested(ErasureRequest),
    Erased(Result<Erased, String>),
    Closed(Result<Closed, String>),
    Kyc(Onboarded),
    Suitability(Onboarded),
    Single(Purpose, Box<Answer>),
    Advised(Box<Result<AdviceRecord, AdviceError>>),
    Accepted(Result<Accepted, NotAccepted>),
}

impl Machine {
    fn next(&mut self, input: Input) -> Next<Ended> {
        fn map<O>(n: Next<O>, f: impl FnOnce(O) -> Ended) -> Next<Ended> {
            match n {
                Next::Call(c) => Next::Call(c),
                Next::Peek(c) => Next::Peek(c),
                Next::Decide(c) => Next::Decide(c),
                Next::Effect(e) => Next::Effect(e),
                Next::Done(o) => Next::Done(f(o)),
            }
        }
        match self {
            Machine::Register(m) => map(m.next(input), Ended::Registered),
            Machine::RequestErasure(m) => map(m.next(input), Ended::ErasureRequested),
            Machine::Erase(m) => map(m.next(input), Ended::Erased),
            Machine::Close(m) => map(m.next(input), Ended::Closed),
            Machine::Kyc(m) => map(m.next(input), Ended::Kyc),
            Machine::Suitability(m) => map(m.next(input), Ended::Suitability),
            Machine::Single(m) => map(m.next(input), |(p, a)| Ended::Single(p, Box::new(a))),
            Machine::Advise(m) => map(m.next(input), |r| Ended::Advised(Box::new(r))),
            Machine::Accept(m) => map(m.next(input), Ended::Accepted),
        }
    }

    fn steps_max(&self) -> usize {
        match self {
            Machine::Register(m) => m.steps_max(),
            Machine::RequestErasure(m) => m.steps_max(),
            Machine::Erase(m) => m.steps_max(),
            Machine::Close(m) => m.steps_max(),
            Machine::Kyc(m) => m.steps_max(),
            Machine::Suitability(m) => m.steps_max(),
            Machine::Single(m) => m.steps_max(),
            Machine::Advise(m) => m.steps_max(),
            Machine::Accept(m) => m.steps_max(),
        }
    }
}

/// What a flow asked for last (carried out again, the same, after a failure).
#[derive(Clone, Debug)]
enum Request {
    Call(Envelope),
    Effect(Effect),
}

/// What a flow waits for.
#[derive(Debug)]
enum Wait {
    /// To go on with this input now.
    Ready(Box<Input>),
    /// To carry out its request again at this tick.
    Again(u64),
    /// A command in the log of `group` through `leader`.
    Command { id: ProposalId, leader: RaftId },
    /// A read barrier at `leader`, then (by the request) a query or an effect's read.
    Barrier { id: ProposalId, leader: RaftId, group: GroupId },
    /// A data key's creation in the log, holding the creation lock at `leader`.
    Creating { id: ProposalId, leader: RaftId },
    /// Records in the log, then `Effected::Done`.
    Writing { id: ProposalId },
}

/// The `user` of a flow about no investor (the feed's).
pub(super) const NOBODY: usize = usize::MAX;

pub(super) struct Flow {
    /// The investor it is about (their life in `lives`), or `NOBODY`.
    pub(super) user: usize,
    pub(super) machine: Machine,
    pub(super) node: RaftId,
    incarnation: u64,
    request: Option<Request>,
    wait: Wait,
    since: u64,
    steps: usize,
    /// The shard of a peek just answered: the next step must decide in it.
    peeked: Option<u16>,
}

impl Flow {
    /// Whom or what it is about, for the trace.
    pub(super) fn subject(&self) -> String {
        match (&self.machine, self.user) {
            (Machine::Single(m), NOBODY) => format!("feed {:?}", m.purpose),
            (_, u) => super::user_id(u),
        }
    }
}

impl ClusterSim {
    /// Starts `machine` on `node` for investor `user`.
    pub(super) fn start_flow(&mut self, user: usize, node: RaftId, machine: Machine) -> u64 {
        let id = self.next_flow;
        self.next_flow += 1;
        let incarnation = self.incarnation(node);
        self.flows.insert(
            id,
            Flow {
                user,
                machine,
                node,
                incarnation,
                request: None,
                wait: Wait::Ready(Box::new(Input::Start)),
                since: self.tick,
                steps: 0,
                peeked: None,
            },
        );
        id
    }

    /// The flows still running, for a liveness failure's report.
    pub(super) fn describe_flows(&self) -> String {
        self.flows
            .iter()
            .map(|(id, f)| {
                format!(
                    "flow {id} of {} on node {} (incarnation {}): waits {:?} since tick {} for {:?}",
                    super::user_id(f.user),
                    f.node,
                    f.incarnation,
                    f.wait,
                    f.since,
                    f.request
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// How often `node` crashed or stopped so far (a flow on it dies with it).
    pub(super) fn incarnation(&self, node: RaftId) -> u64 {
        self.incarnations.get(&node).copied().unwrap_or(0)
    }

    fn now(&self) -> Timestamp {
        Timestamp(EPOCH_MS + (self.tick * TICK_MS) as i64)
    }

    pub(super) fn group_of_id(&self, id: &str) -> GroupId {
        moneta::domain::ids::group_of(moneta::domain::ids::shard_of(id), self.s.groups)
    }

    /// The leader of `g` a call from `node` goes to, by production's routing decision
    /// (`cluster::routing::route`): `node` itself when it serves the group, else the leader its
    /// replica knows or (no replica there) the one the members' gossip names — if `node`
    /// reaches it.
    fn leader_from(&self, node: RaftId, g: GroupId) -> Option<RaftId> {
        use moneta::cluster::routing::{route, Route};
        let raft = self.raft.nodes.get(&node)?.raft.as_ref()?;
        let here = match raft.status(g) {
            Some(s) => s.leadership(node, s.serving && s.applied_index >= s.commit_index),
            None => moneta::cluster::raft::board::Leadership {
                leader: None,
                served: false,
                replica: false,
                sole: false,
            },
        };
        match route(node, here, self.raft.led(g).map(|l| l.0)) {
            Route::Here => Some(node),
            Route::To(l) => (self.raft.connected(node, l) && self.raft.paused_until(l).is_none()).then_some(l),
            Route::Nowhere => None,
        }
    }

    /// One tick of every flow: outcomes that came back, then what is due.
    pub(super) fn drive_flows(&mut self) -> Result<(), Failure> {
        let outcomes: Vec<(ProposalId, bool)> = self
            .raft
            .outcomes
            .iter()
            .filter(|(id, _)| self.flow_pending.contains_key(id))
            .map(|(&id, (_, o))| (id, *o == Outcome::Applied))
            .collect();
        for (id, applied) in outcomes {
            self.raft.outcomes.remove(&id);
            let f = self.flow_pending.remove(&id).expect("a flow's proposal");
            self.flow_outcome(f, id, applied)?;
        }
        let reads: Vec<(ProposalId, bool)> = self
            .raft
            .reads
            .iter()
            .filter(|(id, _)| self.flow_pending.contains_key(id))
            .map(|(&id, &ok)| (id, ok))
            .collect();
        for (id, ok) in reads {
            self.raft.reads.remove(&id);
            let f = self.flow_pending.remove(&id).expect("a flow's read");
            self.flow_outcome(f, id, ok)?;
        }
        let ids: Vec<u64> = self.flows.keys().copied().collect();
        for f in ids {
            let (node, incarnation) = (self.flows[&f].node, self.flows[&f].incarnation);
            let alive = self.raft.nodes.get(&node).is_some_and(|n| n.raft.is_some()) && self.incarnation(node) == incarnation;
            if !alive {
                let flow = self.flows.remove(&f).expect("a flow");
                self.flow_pending.retain(|_, g| *g != f);
                self.key_locks.retain(|(_, _, holder)| *holder != f);
                self.note("flow_lost", Some(node), None, Some(flow.subject()), "its node went down".into());
                self.flow_died(flow)?;
                continue;
            }
            let timed_out = !matches!(self.flows[&f].wait, Wait::Ready(_) | Wait::Again(_)) && self.tick - self.flows[&f].since > CLIENT_TIMEOUT_TICKS;
            if timed_out {
                self.flow_pending.retain(|_, g| *g != f);
                self.key_locks.retain(|(_, _, holder)| *holder != f);
                self.again(f);
            }
            self.advance(f)?;
        }
        Ok(())
    }

    /// Tries the flow's request again a little later.
    fn again(&mut self, f: u64) {
        let backoff = self.rng.random_range(5..30);
        self.report.flow_retries += 1;
        let flow = self.flows.get_mut(&f).expect("a flow");
        flow.wait = Wait::Again(self.tick + backoff);
    }

    /// Feeds a ready flow its input (and carries out what it asks next), or sends a request due again.
    fn advance(&mut self, f: u64) -> Result<(), Failure> {
        loop {
            let flow = self.flows.get_mut(&f).expect("a flow");
            let input = match std::mem::replace(&mut flow.wait, Wait::Again(u64::MAX)) {
                Wait::Ready(input) => *input,
                Wait::Again(at) if at <= self.tick => {
                    let request = flow.request.clone().expect("a request to send again");
                    return self.issue(f, request);
                }
                other => {
                    flow.wait = other;
                    return Ok(());
                }
            };
            flow.steps += 1;
            if flow.steps > flow.machine.steps_max() {
                let user = flow.user;
                return self.fail(format!("{}: a workflow went past its step bound", super::user_id(user)));
            }
            let next = flow.machine.next(input);
            if let Err(e) = moneta::workflows::flow::after_peek(flow.peeked.take(), &next) {
                let user = flow.user;
                return self.fail(format!("{}: {e}", super::user_id(user)));
            }
            if let Next::Peek(envelope) = &next {
                flow.peeked = Some(moneta::domain::ids::shard_of(envelope.entity_id()));
            }
            match next {
                Next::Done(ended) => {
                    let flow = self.flows.remove(&f).expect("a flow");
                    return self.flow_ended(flow, ended);
                }
                // The simulated entities answer once the decision is committed (and read
                // linearizably: a peek is a call here).
                Next::Call(envelope) | Next::Peek(envelope) | Next::Decide(envelope) => {
                    flow.request = Some(Request::Call(envelope.clone()));
                    self.issue(f, Request::Call(envelope))?;
                }
                Next::Effect(effect) => {
                    flow.request = Some(Request::Effect(effect.clone()));
                    self.issue(f, Request::Effect(effect))?;
                }
            }
        }
    }

    fn wait(&mut self, f: u64, wait: Wait) {
        let flow = self.flows.get_mut(&f).expect("a flow");
        flow.wait = wait;
        flow.since = self.tick;
    }

    /// Sends a flow's request: to the leader its node reaches, or again later.
    fn issue(&mut self, f: u64, request: Request) -> Result<(), Failure> {
        let node = self.flows[&f].node;
        let (group, entry) = match &request {
            Request::Call(envelope) => match envelope {
                Envelope::Account { id, .. } | Envelope::EmailIndex { id, .. } | Envelope::Portfolio { id, .. } | Envelope::Instrument { id, .. } => (
                    self.group_of_id(id),
                    envelope.command_meta().is_some().then(|| super::Body::Call(envelope.clone())),
                ),
            },
            Request::Effect(Effect::Write(writes)) => (
                moneta::domain::ids::group_of(writes.shard(), self.s.groups),
                Some(super::Body::Write(writes.clone())),
            ),
            Request::Effect(Effect::DestroyDataKey(key_id)) => (
                self.group_of_id(key_owner(key_id)),
                Some(super::Body::Write(self.vault.destroy_data_key(key_id))),
            ),
            Request::Effect(Effect::DataKey(key_id)) => (self.group_of_id(key_owner(key_id)), None),
            Request::Effect(Effect::SealProfile { owner, .. }) => (self.group_of_id(owner), None),
            Request::Effect(Effect::KeepRegulatory { user_id, .. }) => (self.group_of_id(user_id), None),
            Request::Effect(Effect::PortfolioJournal(user_id)) => (self.group_of_id(user_id), None),
            Request::Effect(Effect::Screen { user_id, .. }) => (self.group_of_id(user_id), None),
            Request::Effect(Effect::Seal { key_id, .. }) => (self.group_of_id(key_owner(key_id)), None),
            Request::Effect(Effect::VerifyKyc { document, .. }) => {
                // The sandbox provider: its documented decision, no IO.
                let status = moneta::domain::kyc::sandbox_decision(document);
                self.wait(f, Wait::Ready(Box::new(Input::Effected(Effected::Kyc(status)))));
                return Ok(());
            }
            Request::Effect(Effect::Quote(symbol)) => {
                // No price book on the simulated nodes: the order path asks the instrument.
                let why = format!("no recent price of {symbol} on this node");
                self.wait(f, Wait::Ready(Box::new(Input::Effected(Effected::Failed(why)))));
                return Ok(());
            }
            Request::Effect(Effect::Confirm { .. }) => {
                // The broker's sandbox confirms at once.
                self.report.confirmations += 1;
                self.wait(f, Wait::Ready(Box::new(Input::Effected(Effected::Confirmed))));
                return Ok(());
            }
            Request::Effect(Effect::RevokeSessions(_) | Effect::Audit { .. } | Effect::Rebase(_)) => {
                self.wait(f, Wait::Ready(Box::new(Input::Effected(Effected::Done))));
                return Ok(());
            }
            Request::Effect(Effect::ListErasure { user_id, email_hash }) => {
                // The list lives outside every data folder: it survives crashes.
                self.erasure_list.push((user_id.clone(), email_hash.clone()));
                self.wait(f, Wait::Ready(Box::new(Input::Effected(Effected::Done))));
                return Ok(());
            }
        };
        let Some(leader) = self.leader_from(node, group) else {
            self.again(f);
            return Ok(());
        };
        let at = self.now().millis();
        let sent = match entry {
            Some(body) => {
                let data = codec::encode(&Entry { at, body });
                self.raft.propose_at(leader, group, data).map(|id| {
                    (
                        id,
                        match request {
                            Request::Call(_) => Wait::Command { id, leader },
                            Request::Effect(_) => Wait::Writing { id },
                        },
                    )
                })
            }
            None => self.raft.read_at(leader, group).map(|id| (id, Wait::Barrier { id, leader, group })),
        };
        match sent {
            Some((id, wait)) => {
                self.flow_pending.insert(id, f);
                self.wait(f, wait);
            }
            None => self.again(f),
        }
        Ok(())
    }

    /// A proposal or read barrier of flow `f` came back (`ok`: applied, or the barrier passed).
    fn flow_outcome(&mut self, f: u64, id: ProposalId, ok: bool) -> Result<(), Failure> {
        let Some(flow) = self.flows.get(&f) else { return Ok(()) };
        let request = flow.request.clone().expect("a flow waiting has a request");
        let wait = std::mem::replace(&mut self.flows.get_mut(&f).expect("a flow").wait, Wait::Again(u64::MAX));
        let matches = match &wait {
            Wait::Command { id: w, .. } | Wait::Barrier { id: w, .. } | Wait::Creating { id: w, .. } | Wait::Writing { id: w } => *w == id,
            _ => false,
        };
        if !matches {
            self.flows.get_mut(&f).expect("a flow").wait = wait;
            return Ok(());
        }
        if !ok {
            self.key_locks.retain(|(_, _, holder)| *holder != f);
            self.again(f);
            return Ok(());
        }
        let input = match (wait, request) {
            (Wait::Command { leader, .. }, Request::Call(envelope)) => {
                let key = answer_key(leader, &envelope);
                match self.flow_answers.get(&key).cloned() {
                    Some(a) => {
                        self.learn(self.flows[&f].user, &envelope, &a)?;
                        Input::Answer(a)
                    }
                    None => return self.fail(format!("{}: a command was applied at node {leader} with no answer there", key.1)),
                }
            }
            (Wait::Barrier { leader, group, .. }, request) => match self.after_barrier(f, leader, group, request)? {
                Some(input) => input,
                None => return Ok(()),
            },
            (Wait::Creating { leader, .. }, Request::Effect(Effect::DataKey(key_id))) => {
                self.key_locks.remove(&(leader, key_id, f));
                Input::Effected(Effected::KeyReady)
            }
            (Wait::Writing { .. }, _) => Input::Effected(Effected::Done),
            (wait, request) => return self.fail(format!("flow {f}: {wait:?} does not fit its request {request:?}")),
        };
        self.wait(f, Wait::Ready(Box::new(input)));
        Ok(())
    }

    /// A read barrier passed at `leader`: what the request reads there now (its replica has
    /// applied at least what was committed when the barrier was asked). `None`: the flow waits
    /// on (a data key being created, or another creation holds the lock).
    fn after_barrier(&mut self, f: u64, leader: RaftId, group: GroupId, request: Request) -> Result<Option<Input>, Failure> {
        let Some(replica) = self.replicas.get_mut(&(leader, group)) else {
            // Dropped from the group meanwhile: ask again.
            self.again(f);
            return Ok(None);
        };
        let records = &replica.host.records;
        Ok(Some(match request {
            Request::Call(envelope) => match replica.host.dispatch(envelope) {
                Ok(a) => Input::Answer(a),
                Err(e) => return self.fail(format!("a query failed at node {leader}: {e}")),
            },
            Request::Effect(Effect::DataKey(key_id)) => {
                if records.contains_key(&Vault::key_location(&key_id)) {
                    Input::Effected(Effected::KeyReady)
                } else if self.key_locks.iter().any(|(n, k, _)| *n == leader && *k == key_id) {
                    // One creation at a time per key at the leader: wait for the other.
                    self.again(f);
                    return Ok(None);
                } else {
                    let writes = self.vault.wrap_new(&key_id).expect("the simulator's vault wraps a key");
                    let data = codec::encode(&Entry {
                        at: self.now().millis(),
                        body: super::Body::Write(writes),
                    });
                    match self.raft.propose_at(leader, group, data) {
                        Some(id) => {
                            self.key_locks.insert((leader, key_id, f));
                            self.flow_pending.insert(id, f);
                            self.wait(f, Wait::Creating { id, leader });
                        }
                        None => self.again(f),
                    }
                    return Ok(None);
                }
            }
            Request::Effect(Effect::SealProfile { owner, profile, screen }) => match records.get(&Vault::key_location(&owner)) {
                None => Input::Effected(Effected::Failed(format!("no data key for {owner}"))),
                Some(wrapped) => {
                    let plaintext = serde_json::to_vec(&*profile).expect("a profile serialises");
                    let sealed = self
                        .vault
                        .seal_with(&owner, wrapped, "profile", &plaintext)
                        .expect("the simulator's vault seals");
                    let screening = screen.then(|| moneta::adapters::sanctions::screen(&self.sanctions, &profile));
                    Input::Effected(Effected::Sealed { profile: sealed, screening })
                }
            },
            Request::Effect(Effect::Screen { user_id, sealed_profile }) => match records.get(&Vault::key_location(&user_id)) {
                None => Input::Effected(Effected::Failed(format!("no data key for {user_id}"))),
                Some(wrapped) => match self
                    .vault
                    .open_with(&user_id, wrapped, "profile", &sealed_profile)
                    .map(|b| serde_json::from_slice::<Profile>(&b))
                {
                    Ok(Ok(profile)) => Input::Effected(Effected::Screened(moneta::adapters::sanctions::screen(&self.sanctions, &profile))),
                    Ok(Err(e)) => return self.fail(format!("{user_id}: a profile that does not parse: {e}")),
                    Err(e) => Input::Effected(Effected::Failed(format!("{user_id}: {e}"))),
                },
            },
            Request::Effect(Effect::Seal { key_id, field, plaintext }) => match records.get(&Vault::key_location(&key_id)) {
                None => Input::Effected(Effected::Failed(format!("no data key for {key_id}"))),
                Some(wrapped) => Input::Effected(Effected::SealedField(
                    self.vault.seal_with(&key_id, wrapped, field, &plaintext).expect("the simulator's vault seals"),
                )),
            },
            Request::Effect(Effect::PortfolioJournal(user_id)) => Input::Effected(Effected::Journal(
                replica.host.portfolios.get(&user_id).map(|h| h.journal.clone()).unwrap_or_default(),
            )),
            Request::Effect(Effect::KeepRegulatory { user_id, facts, now }) => {
                let writes = self.regulatory_writes(leader, group, &user_id, &facts, now);
                match writes {
                    None => Input::Effected(Effected::Done),
                    Some(writes) => {
                        let data = codec::encode(&Entry {
                            at: self.now().millis(),
                            body: super::Body::Write(writes),
                        });
                        match self.raft.propose_at(leader, group, data) {
                            Some(id) => {
                                self.flow_pending.insert(id, f);
                                self.wait(f, Wait::Writing { id });
                            }
                            None => self.again(f),
                        }
                        return Ok(None);
                    }
                }
            }
            other => return self.fail(format!("flow {f}: a read barrier for {other:?}")),
        }))
    }
}

/// A portfolio command of a workflow (the end of day's close, an advised investor's deposit
/// and orders), not of a client.
pub(super) fn is_flow_call(envelope: &Envelope) -> bool {
    matches!(envelope, Envelope::Portfolio { .. })
        && envelope
            .command_meta()
            .is_some_and(|m| m.request_id.starts_with("eod-") || m.request_id.starts_with("adv-"))
}

/// Where a replica keeps the answer to a workflow's command: (node, "kind/id", request id).
pub(super) fn answer_key(node: RaftId, envelope: &Envelope) -> (RaftId, String, String) {
    let meta = envelope.command_meta().expect("only commands are answered from the log");
    (node, format!("{}/{}", envelope.kind().name(), envelope.entity_id()), meta.request_id.clone())
}
