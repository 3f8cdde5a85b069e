//! The cluster simulation (`simulate --cluster`): N virtual nodes in one thread on simulated
//! time, each running the real multi-group raft driver (`MultiRaft`, over the seeded network and
//! crash-losing disks of `cluster::raft::sim`) and, on every replica of every shard group, the
//! real entities (`MemoryHost`: the same decide/apply, request memory and idempotency rules as
//! the actor host). Clients — two per investor — deposit, withdraw and read their cash at random
//! nodes, retrying under their request ids and idempotency keys until answered.
//!
//! Replication here is of commands: a group's log carries each command (with the time it was
//! proposed) and every replica's host executes it in log order, so replicas must end in the same
//! state. (Production replicates the write sets the leader's actor decided; both apply one
//! log in order.)
//!
//! Faults, all drawn from the seed (swarm testing: the probabilities themselves are drawn per
//! run and printed first): message loss, duplication, latency and reordering; a node isolated
//! for a while; crashes that lose unflushed rounds, and restarts. Then a liveness phase: faults
//! off, every node restarted and connected; it must converge within a bound.
//!
//! Checked after every tick, the run stopping at the first violation: at most one leader per
//! group and term and the same entry at an index on every replica (the raft layer); replicas
//! of a group at the same applied index hold identical entity state and audit records; no
//! negative cash. At the end: every client request answered, each investor's cash is what
//! their acknowledged requests make it (exactly once), and each investor's client history is
//! linearizable (stateright's `LinearizabilityTester`).

use moneta::cluster::history::{BankOp, BankRet, Event};
use moneta::cluster::memory_host::MemoryHost;
use moneta::cluster::raft::sim::{NetFaults, SimRaftCluster, TICK_MS};
use moneta::cluster::raft::{GroupId, Outcome, ProposalId, RaftId};
use moneta::domain::envelope::{Envelope, RequestMeta};
use moneta::domain::portfolio::{IdemTag, Portfolio, PortfolioCommand, PortfolioRejection, PortfolioReply};
use moneta::domain::time::Timestamp;
use moneta::storage::codec;
mod faults;

pub use faults::Faults;

use crate::trace::{Trace, TraceEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The simulated clock starts here (any fixed instant: runs must not depend on the wall clock).
const EPOCH_MS: i64 = 1_800_000_000_000;
/// A client waits this long for an answer before it tries again elsewhere (same ids).
const CLIENT_TIMEOUT_TICKS: u64 = 100;
/// The chance that a client loses an answer to a deposit or withdrawal and sends it again.
const RESEND: f64 = 0.1;
/// The chance that a client moves to another node for its next request (a load balancer).
const SWITCH: f64 = 0.1;

/// What a run is made of (from the flags, or drawn from the seed).
#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    pub nodes: u64,
    pub groups: u32,
    pub users: usize,
    pub ops_per_client: usize,
    /// Ticks of the safety phase (faults on).
    pub ticks: u64,
    /// The bound on the liveness phase (faults off).
    pub liveness_ticks: u64,
    pub faults: Faults,
    /// Test hook (a planted bug): a retry goes out under a new request id and idempotency key,
    /// as if the client had forgotten them — exactly-once must then fail on some seed.
    pub sabotage_retries: bool,
}

impl Settings {
    pub fn from_seed(seed: u64) -> Settings {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x4e4f_4445_5300);
        Settings {
            seed,
            nodes: r.random_range(3..=5),
            groups: 4,
            users: 6,
            ops_per_client: 30,
            ticks: 3_000,
            liveness_ticks: 6_000,
            faults: Faults::draw(seed),
            sabotage_retries: false,
        }
    }

    pub fn describe(&self) -> String {
        let f = &self.faults;
        format!(
            "nodes {} · groups {} · users {} (2 clients each, {} requests per client) · safety {} ticks, liveness ≤ {} ticks ({} ms per tick)\n\
             faults: loss {} · duplicate {} · latency 1–{} ms · crash {}/tick · restart {}/tick · isolate {}/tick · one-way cut {}/tick · heal {}/tick · clog {}/tick · pause {}/tick · compact {}/tick",
            self.nodes,
            self.groups,
            self.users,
            self.ops_per_client,
            self.ticks,
            self.liveness_ticks,
            TICK_MS,
            f.loss,
            f.duplicate,
            f.latency_max_ms,
            f.crash,
            f.restart,
            f.isolate,
            f.one_way,
            f.heal,
            f.clog,
            f.pause,
            f.compact
        )
    }
}

/// One log entry: a command and when it was proposed.
#[derive(Serialize, Deserialize)]
struct Entry {
    at: i64,
    envelope: Envelope,
}

/// A replica's entities: the host and how far into the group's applied entries it is.
struct Replica {
    host: MemoryHost,
    /// A hash chain over the state of each entity after each entry it executed (and the audit
    /// trail's length): replicas at the same index must hold the same chain.
    chain: [u8; 32],
    consumed: usize,
    last_index: u64,
    /// Rebuilt from what its node's disk kept (a crash, or a snapshot installed): once it has
    /// replayed that, its entities are reloaded as a restarted host loads them.
    reload: bool,
}

#[derive(Clone, Debug)]
enum Waiting {
    /// Not sent yet (or to be sent again) at this tick.
    Send {
        at: u64,
    },
    Proposal {
        id: ProposalId,
        node: RaftId,
        since: u64,
    },
    Read {
        id: ProposalId,
        node: RaftId,
        since: u64,
    },
}

struct Client {
    user: usize,
    thread: u64,
    ops: Vec<BankOp>,
    next: usize,
    attempt: u32,
    waiting: Option<Waiting>,
    /// The current request was answered this, and the client sends it again as if the answer
    /// had been lost on the way back: the same answer must come back, nothing applied twice.
    echo: Option<BankRet>,
    /// The node this client talks to (kept while it answers, as a client keeps a connection).
    node: Option<RaftId>,
    /// The current request is in the history (invoked once, however often it is sent).
    invoked: bool,
}

/// What the run did.
#[derive(Debug, Default)]
pub struct Report {
    pub ticks: u64,
    pub liveness_ticks: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub isolations: u64,
    pub one_way_cuts: u64,
    pub clogs: u64,
    pub pauses: u64,
    pub compactions: u64,
    pub requests: u64,
    pub retries: u64,
    /// Answered requests sent again under the same ids (answers lost on the way back).
    pub resent: u64,
    /// Events of the run (what `--trace` writes).
    pub events: u64,
    pub elections: u64,
    pub snapshots: u64,
    pub refused: u64,
    pub digest: String,
}

pub struct Failure {
    pub tick: u64,
    pub message: String,
    /// The last events about the entity (or group) the violation concerns, as JSON lines.
    pub context: Vec<String>,
}

pub struct ClusterSim {
    s: Settings,
    raft: SimRaftCluster,
    rng: ChaCha8Rng,
    replicas: BTreeMap<(RaftId, GroupId), Replica>,
    /// (node, request id) → what that replica's host answered when it applied the request.
    answers: BTreeMap<(RaftId, String), BankRet>,
    /// (group, index) → the digest of a replica's state chain after that entry.
    states: BTreeMap<(GroupId, u64), [u8; 32]>,
    clients: Vec<Client>,
    history: Vec<Vec<Event>>,
    /// Per user: cash in cents as the acknowledged requests make it.
    acknowledged: Vec<i64>,
    /// Some link is cut (an isolation or one-way cuts) until the next heal.
    partitioned: bool,
    tick: u64,
    /// In the liveness phase clients no longer pause between requests.
    live: bool,
    report: Report,
    trace: Trace,
    progress: Option<indicatif::ProgressBar>,
}

fn user_id(u: usize) -> String {
    format!("usr_sim{u:04}")
}

fn cents(d: Decimal) -> i64 {
    (d * Decimal::from(100)).trunc().try_into().expect("cash fits in i64 cents")
}

impl ClusterSim {
    pub fn new(s: Settings) -> ClusterSim {
        let groups: Vec<GroupId> = (0..s.groups).collect();
        let mut raft = SimRaftCluster::new(s.seed, s.nodes, &groups);
        raft.faults = NetFaults {
            loss: s.faults.loss,
            duplicate: s.faults.duplicate,
            latency_min_ms: 1,
            latency_max_ms: s.faults.latency_max_ms,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ 0x434c_4945_4e54);
        let mut clients = Vec::new();
        for u in 0..s.users {
            for c in 0..2 {
                let ops = (0..s.ops_per_client)
                    .map(|_| match rng.random_range(0..10) {
                        0..=3 => BankOp::Deposit(100 * rng.random_range(1..=50)),
                        4..=6 => BankOp::Withdraw(100 * rng.random_range(1..=60)),
                        _ => BankOp::ReadCash,
                    })
                    .collect();
                clients.push(Client {
                    user: u,
                    thread: (u * 2 + c) as u64,
                    ops,
                    next: 0,
                    attempt: 0,
                    waiting: Some(Waiting::Send { at: rng.random_range(1..50) }),
                    echo: None,
                    node: None,
                    invoked: false,
                });
            }
        }
        let mut sim = ClusterSim {
            replicas: BTreeMap::new(),
            answers: BTreeMap::new(),
            states: BTreeMap::new(),
            history: vec![Vec::new(); s.users],
            acknowledged: vec![0; s.users],
            partitioned: false,
            tick: 0,
            live: false,
            report: Report::default(),
            trace: Trace::new(None).expect("an in-memory trace"),
            progress: None,
            clients,
            rng,
            raft,
            s,
        };
        for n in 1..=sim.s.nodes {
            for g in 0..sim.s.groups {
                sim.replicas.insert((n, g), sim.fresh_replica(g));
            }
        }
        sim
    }

    /// Shows the run's progress (ticks of the safety phase, then the liveness phase).
    pub fn with_progress(mut self, bar: indicatif::ProgressBar) -> ClusterSim {
        self.progress = Some(bar);
        self
    }

    /// Writes every event to `path` as JSON lines.
    pub fn with_trace(mut self, path: &std::path::Path) -> Result<ClusterSim, String> {
        self.trace = Trace::new(Some(path))?;
        Ok(self)
    }

    fn fresh_replica(&self, g: GroupId) -> Replica {
        Replica {
            host: MemoryHost::new(self.s.seed ^ u64::from(g), Timestamp(EPOCH_MS)),
            chain: [0; 32],
            consumed: 0,
            last_index: 0,
            reload: false,
        }
    }

    /// A replica to rebuild from its node's disk.
    fn rebuilt_replica(&self, g: GroupId) -> Replica {
        Replica {
            reload: true,
            ..self.fresh_replica(g)
        }
    }

    fn group_of_user(&self, u: usize) -> GroupId {
        moneta::domain::ids::group_of(moneta::domain::ids::shard_of(&user_id(u)), self.s.groups)
    }

    fn fail<T>(&self, message: String) -> Result<T, Failure> {
        // The entity or group the message names, for the events that led there.
        let entity = message.find("usr_sim").and_then(|i| message.get(i..i + 11)).map(str::to_string);
        let group = message
            .split("group ")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|g| g.parse().ok());
        Err(Failure {
            tick: self.tick,
            context: self.trace.about(entity.as_deref(), group, 30),
            message,
        })
    }

    /// Records one event of the run (and writes it to the trace file, if any).
    fn note(&mut self, kind: &'static str, node: Option<RaftId>, group: Option<GroupId>, entity: Option<String>, detail: String) {
        self.trace.record(TraceEvent {
            tick: self.tick,
            kind,
            node,
            group,
            entity,
            detail,
        });
    }

    pub fn run(mut self) -> Result<Report, Failure> {
        while self.tick < self.s.ticks {
            self.faults();
            self.step()?;
            if self.tick.is_multiple_of(256) {
                if let Some(p) = &self.progress {
                    p.set_position(self.tick);
                }
            }
        }
        if let Some(p) = self.progress.take() {
            p.finish_and_clear();
        }
        // Liveness: faults off, every node back and connected; everything must converge.
        self.raft.heal();
        self.partitioned = false;
        self.raft.faults.loss = 0.0;
        self.raft.faults.duplicate = 0.0;
        let down: Vec<RaftId> = self.raft.nodes.iter().filter(|(_, n)| n.raft.is_none()).map(|(&id, _)| id).collect();
        for id in down {
            self.restart(id)?;
        }
        self.live = true;
        for i in 0..self.clients.len() {
            if let Some(Waiting::Send { at }) = self.clients[i].waiting {
                let soon = self.tick + self.rng.random_range(1..20);
                self.clients[i].waiting = Some(Waiting::Send { at: at.min(soon) });
            }
        }
        let bound = self.tick + self.s.liveness_ticks;
        while !(self.clients_done() && self.converged()) {
            if self.tick >= bound {
                let open = self.clients.iter().filter(|c| c.waiting.is_some()).count();
                return self.fail(format!(
                    "the liveness phase did not converge within {} ticks: {open} clients unanswered, replicas converged: {}",
                    self.s.liveness_ticks,
                    self.converged()
                ));
            }
            self.step()?;
            self.report.liveness_ticks += 1;
        }
        self.finish()
    }

    /// One tick: raft, then every replica's entities catch up, then clients.
    fn step(&mut self) -> Result<(), Failure> {
        self.tick += 1;
        if let Err(e) = self.raft.run(1) {
            return self.fail(e);
        }
        for (node, g, term, leader) in std::mem::take(&mut self.raft.roles) {
            let leader = leader.map_or("none known".to_string(), |l| format!("node {l}"));
            self.note("role", Some(node), Some(g), None, format!("term {term}, leader {leader}"));
        }
        self.sync_replicas()?;
        self.serve_clients()
    }

    /// Each replica's host executes the entries its node applied since the last tick (from the
    /// start again when the node crashed or installed a snapshot), then is checked.
    fn sync_replicas(&mut self) -> Result<(), Failure> {
        let keys: Vec<(RaftId, GroupId)> = self.replicas.keys().copied().collect();
        for (n, g) in keys {
            let (len, diverged) = {
                let applied = self.raft.applied_entries(n, g);
                let r = &self.replicas[&(n, g)];
                (
                    applied.len(),
                    r.consumed > applied.len() || (r.consumed > 0 && applied[r.consumed - 1].0 != r.last_index),
                )
            };
            if diverged {
                let fresh = self.rebuilt_replica(g);
                self.replicas.insert((n, g), fresh);
            }
            let start = self.replicas[&(n, g)].consumed;
            if start == len {
                self.reload_if_rebuilt(n, g);
                continue;
            }
            let new: Vec<(u64, Vec<u8>)> = self.raft.applied_entries(n, g)[start..].to_vec();
            let last = new.last().map_or(0, |e| e.0);
            for (index, data) in &new {
                if data.is_empty() {
                    continue;
                }
                let Ok(entry) = codec::decode::<Entry>(data) else {
                    return self.fail(format!("group {g} index {index}: an entry that does not decode"));
                };
                let (entity, request_id) = match &entry.envelope {
                    Envelope::Portfolio {
                        id,
                        call: moneta::domain::envelope::Call::Execute { meta, .. },
                    } => (id.clone(), meta.request_id.clone()),
                    _ => return self.fail(format!("group {g} index {index}: an entry of another kind")),
                };
                let r = self.replicas.get_mut(&(n, g)).expect("replica");
                let now = Timestamp(entry.at.max(r.host.now().millis()));
                r.host.set_now(now);
                let audit_before = r.host.audit.len();
                let answer = match r.host.dispatch(entry.envelope).map(|a| a.executed::<Portfolio>()) {
                    Ok(Some(Ok(PortfolioReply::Cash { cash }))) => BankRet::Cash(cents(cash)),
                    // A refusal is remembered under the idempotency key (a reply) or not (a rejection).
                    Ok(Some(Err(PortfolioRejection::InsufficientFunds))) | Ok(Some(Ok(PortfolioReply::Refused(PortfolioRejection::InsufficientFunds)))) => {
                        BankRet::Refused
                    }
                    other => return self.fail(format!("node {n} group {g} index {index}: the entity answered {other:?}")),
                };
                let p = &r.host.portfolios[&entity].state;
                if p.cash < Decimal::ZERO {
                    let why = format!("node {n}: {entity} has negative cash {}", p.cash);
                    return self.fail(why);
                }
                let mut h = Sha256::new();
                h.update(r.chain);
                h.update(index.to_be_bytes());
                h.update(entity.as_bytes());
                h.update(codec::encode(p));
                // The audit records this entry asked for: replicas hold the same audit chain.
                for record in &r.host.audit[audit_before..] {
                    h.update(codec::encode(record));
                }
                r.chain = h.finalize().into();
                let digest = r.chain;
                self.note(
                    "apply",
                    Some(n),
                    Some(g),
                    Some(entity.clone()),
                    format!("index {index}: {request_id} → {answer:?}"),
                );
                self.answers.insert((n, request_id), answer);
                // Compared at every entry: the first replica to execute an index sets what the
                // others must reach there.
                match self.states.get(&(g, *index)) {
                    Some(d) if *d != digest => {
                        return self.fail(format!(
                            "group {g}: node {n}'s entities (or audit records) differ from another replica's after index {index} ({entity})"
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.states.insert((g, *index), digest);
                    }
                }
            }
            self.reload_if_rebuilt(n, g);
            let r = self.replicas.get_mut(&(n, g)).expect("replica");
            r.consumed = len;
            r.last_index = last;
        }
        Ok(())
    }

    /// A rebuilt replica has replayed what its disk kept: its host reloads its entities.
    fn reload_if_rebuilt(&mut self, n: RaftId, g: GroupId) {
        let r = self.replicas.get_mut(&(n, g)).expect("replica");
        if std::mem::take(&mut r.reload) {
            r.host.reload();
        }
    }

    /// The request id (and idempotency key) of client `c`'s current request: the same on every
    /// retry (unless the planted bug is on).
    fn request_id(&self, c: &Client) -> String {
        match self.s.sabotage_retries {
            false => format!("sim-{}-{}", c.thread, c.next),
            true => format!("sim-{}-{}-{}", c.thread, c.next, c.attempt),
        }
    }

    fn serve_clients(&mut self) -> Result<(), Failure> {
        for i in 0..self.clients.len() {
            let Some(w) = self.clients[i].waiting.clone() else { continue };
            match w {
                Waiting::Send { at } if at <= self.tick => self.send(i),
                Waiting::Send { .. } => {}
                Waiting::Proposal { id, node, since } => match self.raft.outcomes.remove(&id) {
                    Some((_, Outcome::Applied)) => {
                        let rid = self.request_id(&self.clients[i]);
                        match self.answers.get(&(node, rid.clone())).copied() {
                            Some(ret) => self.answered(i, ret)?,
                            None => return self.fail(format!("request {rid} was applied at node {node} with no answer there")),
                        }
                    }
                    Some(_) => self.retry(i),
                    None if self.tick - since > CLIENT_TIMEOUT_TICKS => self.retry(i),
                    None => {}
                },
                Waiting::Read { id, node, since } => match self.raft.reads.remove(&id) {
                    Some(true) => {
                        let c = &self.clients[i];
                        let (u, g) = (c.user, self.group_of_user(c.user));
                        let r = self.replicas.get_mut(&(node, g)).expect("replica");
                        let cash = r.host.query::<Portfolio, _>(&user_id(u), moneta::domain::queries::Cash);
                        self.answered(i, BankRet::Cash(cents(cash)))?;
                    }
                    Some(false) => self.retry(i),
                    None if self.tick - since > CLIENT_TIMEOUT_TICKS => self.retry(i),
                    None => {}
                },
            }
        }
        Ok(())
    }

    /// Sends client `i`'s current request to a random node, which passes it to the group's
    /// leader it knows (if it can reach it); otherwise the client tries again a little later.
    fn send(&mut self, i: usize) {
        let (user, op) = {
            let c = &self.clients[i];
            (c.user, c.ops[c.next])
        };
        if !self.clients[i].invoked {
            self.clients[i].invoked = true;
            self.history[user].push(Event::Invoke {
                thread: self.clients[i].thread,
                op,
            });
            self.report.requests += 1;
        }
        let g = self.group_of_user(user);
        let at = match self.clients[i].node {
            Some(n) if !self.rng.random_bool(SWITCH) => n,
            _ => self.rng.random_range(1..=self.s.nodes),
        };
        self.clients[i].node = Some(at);
        if let Some(until) = self.raft.paused_until(at) {
            // The node is frozen: the request waits in its socket until it wakes.
            self.clients[i].waiting = Some(Waiting::Send { at: until / TICK_MS });
            return;
        }
        let leader = self.raft.nodes[&at].raft.as_ref().and_then(|r| r.status(g)).and_then(|s| s.leader);
        let reachable = leader.filter(|&l| self.raft.connected(at, l) && (l == at || self.raft.paused_until(l).is_none()));
        let Some(l) = reachable else { return self.retry(i) };
        let since = self.tick;
        let waiting = match op {
            BankOp::ReadCash => self.raft.read_at(l, g).map(|id| Waiting::Read { id, node: l, since }),
            BankOp::Deposit(a) | BankOp::Withdraw(a) => {
                let amount = Decimal::new(a, 2);
                let c = &self.clients[i];
                let request_id = self.request_id(c);
                let idem = IdemTag {
                    key: format!("k-{request_id}"),
                    fingerprint: if matches!(op, BankOp::Deposit(_)) {
                        moneta::domain::fingerprint::deposit(amount)
                    } else {
                        moneta::domain::fingerprint::withdrawal(amount)
                    },
                };
                let cmd = if matches!(op, BankOp::Deposit(_)) {
                    PortfolioCommand::Deposit { amount, idem }
                } else {
                    PortfolioCommand::Withdraw { amount, idem }
                };
                let meta = RequestMeta {
                    request_id,
                    actor: user_id(user),
                };
                let entry = Entry {
                    at: EPOCH_MS + (self.tick * TICK_MS) as i64,
                    envelope: Envelope::execute::<Portfolio>(user_id(user), cmd, meta),
                };
                self.raft
                    .propose_at(l, g, codec::encode(&entry))
                    .map(|id| Waiting::Proposal { id, node: l, since })
            }
        };
        match waiting {
            Some(w) => {
                let c = &self.clients[i];
                let detail = format!("{op:?} {} at node {at} to leader {l}, attempt {}", self.request_id(c), c.attempt);
                self.note("send", Some(l), Some(g), Some(user_id(user)), detail);
                self.clients[i].waiting = Some(w)
            }
            None => self.retry(i),
        }
    }

    fn retry(&mut self, i: usize) {
        let backoff = self.rng.random_range(5..30);
        let c = &mut self.clients[i];
        c.attempt += 1;
        c.node = None;
        c.waiting = Some(Waiting::Send { at: self.tick + backoff });
        self.report.retries += 1;
        let (user, detail) = (user_id(c.user), format!("client {} tries again in {backoff} ticks", c.thread));
        self.note("retry", None, None, Some(user), detail);
    }

    fn answered(&mut self, i: usize, ret: BankRet) -> Result<(), Failure> {
        let c = &self.clients[i];
        let (user, detail) = (user_id(c.user), format!("client {}: {:?} answered {ret:?}", c.thread, c.ops[c.next]));
        self.note("answer", None, None, Some(user), detail);
        let c = &mut self.clients[i];
        let op = c.ops[c.next];
        if let Some(first) = c.echo.take() {
            if first != ret {
                let why = format!(
                    "{}: request sim-{}-{} sent again after its answer was lost: answered {ret:?}, first {first:?} (applied twice?)",
                    user_id(c.user),
                    c.thread,
                    c.next
                );
                return self.fail(why);
            }
        } else {
            match (op, ret) {
                (BankOp::Deposit(a), BankRet::Cash(_)) => self.acknowledged[c.user] += a,
                (BankOp::Withdraw(a), BankRet::Cash(_)) => self.acknowledged[c.user] -= a,
                _ => {}
            }
            let user = c.user;
            self.history[user].push(Event::Return { thread: c.thread, ret });
            // Checked at every answer: the run stops at the first history that no order of
            // the calls explains.
            if let Err(e) = moneta::cluster::history::check(0, &self.history[user]) {
                return self.fail(format!("{}: the client history is not linearizable: {e}", user_id(user)));
            }
            let c = &mut self.clients[i];
            if op != BankOp::ReadCash && !self.live && self.rng.random_bool(RESEND) {
                c.echo = Some(ret);
                c.attempt += 1;
                c.waiting = Some(Waiting::Send {
                    at: self.tick + self.rng.random_range(1..CLIENT_TIMEOUT_TICKS),
                });
                self.report.resent += 1;
                return Ok(());
            }
        }
        let c = &mut self.clients[i];
        c.next += 1;
        c.attempt = 0;
        c.invoked = false;
        // Think time: a client's requests spread over the safety phase.
        let think = match self.live {
            true => 20,
            false => (2 * self.s.ticks / self.s.ops_per_client.max(1) as u64).max(20),
        };
        c.waiting = (c.next < c.ops.len()).then(|| Waiting::Send {
            at: self.tick + self.rng.random_range(1..think),
        });
        Ok(())
    }

    fn clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.waiting.is_none())
    }

    /// Every group has one leader and every replica applied the same entries.
    fn converged(&self) -> bool {
        (0..self.s.groups).all(|g| {
            let Some(leader) = self.raft.leader(g) else { return false };
            let want = self.replicas[&(leader, g)].last_index;
            (1..=self.s.nodes).all(|n| self.replicas[&(n, g)].last_index == want)
        })
    }

    fn finish(mut self) -> Result<Report, Failure> {
        for u in 0..self.s.users {
            let g = self.group_of_user(u);
            for n in 1..=self.s.nodes {
                let r = self.replicas.get_mut(&(n, g)).expect("replica");
                let cash = cents(r.host.query::<Portfolio, _>(&user_id(u), moneta::domain::queries::Cash));
                if cash != self.acknowledged[u] {
                    return self.fail(format!(
                        "{} at node {n}: cash {cash} cents, but the acknowledged requests make {} (a request applied twice or lost)",
                        user_id(u),
                        self.acknowledged[u]
                    ));
                }
            }
            if let Err(e) = moneta::cluster::history::check(0, &self.history[u]) {
                return self.fail(format!("{}: the client history is not linearizable: {e}", user_id(u)));
            }
        }
        let mut h = Sha256::new();
        h.update(self.raft.digest().as_bytes());
        for ((n, g), r) in &self.replicas {
            h.update(n.to_be_bytes());
            h.update(g.to_be_bytes());
            h.update(state_digest(&r.host));
        }
        self.report.ticks = self.tick;
        self.report.elections = self.raft.elections;
        self.report.snapshots = self.raft.snapshots_sent;
        self.report.refused = self.raft.refused;
        self.report.digest = hex::encode(h.finalize());
        self.report.events = self.trace.events;
        if let Err(e) = self.trace.finish() {
            return self.fail(e);
        }
        Ok(self.report)
    }
}

/// A replica's entities and audit records, hashed.
fn state_digest(host: &MemoryHost) -> [u8; 32] {
    let mut h = Sha256::new();
    for (id, p) in &host.portfolios {
        h.update(id.as_bytes());
        h.update(codec::encode(&p.state));
    }
    h.update((host.audit.len() as u64).to_be_bytes());
    if let Some(last) = host.audit.last() {
        h.update(codec::encode(last));
    }
    h.finalize().into()
}
