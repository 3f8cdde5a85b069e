//! The cluster simulation (`simulate --cluster`): N virtual nodes in one thread on simulated
//! time, each running the real multi-group raft driver (`MultiRaft`, over the seeded network and
//! crash-losing disks of `cluster::raft::sim`) and, on every replica of every shard group, the
//! real entities (`MemoryHost`: the same decide/apply, request memory and idempotency rules as
//! the actor host). Clients — two per investor — deposit, withdraw, trade and read their cash at
//! random nodes, retrying under their request ids and idempotency keys until answered. Each
//! investor also lives through production's workflows (`flows.rs`, `lives.rs`, `eod.rs`):
//! registration (email claim, data key at its group's leader, sealed and screened profile,
//! account), onboarding (KYC, suitability), for every third one the erasure request and then the
//! erasure job at each group's leader; and the end-of-day job closes every portfolio. One
//! investor in ten more takes advice instead of trading (`advised.rs`: consent, deposit,
//! `Advise`, `AcceptAdvice` and its orders through the order path), over instruments listed and
//! priced through their groups' logs by the feed (`market.rs`).
//!
//! Replication here is of commands: a group's log carries each command (with the time it was
//! proposed) and every replica's host executes it in log order, so replicas must end in the same
//! state. (Production replicates the write sets the leader's actor decided; both apply one
//! log in order.)
//!
//! Faults, all drawn from the seed (swarm testing: the probabilities themselves are drawn per
//! run and printed first): message loss, duplication, latency and reordering; a node isolated
//! for a while; crashes that lose unflushed rounds, and restarts; disk errors (a failed write
//! stops its node, a failed read its restart); nodes joining and decommissioned while the
//! planner moves replicas (`membership.rs`). Then a liveness phase: faults off, every node
//! restarted and connected; it must converge within a bound, membership settled.
//!
//! Checked after every tick, the run stopping at the first violation: at most one leader per
//! group and term and the same entry at an index on every replica (the raft layer); replicas
//! of a group at the same applied index hold identical entity state and audit records; no
//! negative cash; one account per email; a destroyed data key never put again. At the end:
//! every client request answered, each investor's cash is what their acknowledged requests make
//! it (exactly once), each investor's client history is linearizable (stateright's
//! `LinearizabilityTester`), every profile opens under the data key its group holds, and of an
//! erased person nothing is readable on any replica (no data key, no sealed profile, the email
//! free).

use moneta::cluster::history::{BankOp, BankRet, Segmented};
use moneta::cluster::memory_host::MemoryHost;
use moneta::cluster::raft::sim::{NetFaults, SimRaftCluster, TICK_MS};
use moneta::cluster::raft::{GroupId, ProposalId, RaftId};
use moneta::domain::envelope::Envelope;
use moneta::domain::portfolio::Portfolio;
use moneta::domain::time::Timestamp;
use moneta::storage::codec;
mod advised;
mod clients;
mod eod;
mod faults;
mod flows;
mod lives;
mod market;
mod membership;
mod replicas;
mod settings;
mod vault;

use clients::{Client, Waiting};

pub use faults::Faults;
pub use settings::{Report, Settings};

use crate::trace::{Trace, TraceEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The simulated clock starts here (any fixed instant: runs must not depend on the wall clock).
const EPOCH_MS: i64 = 1_800_000_000_000;
/// A client waits this long for an answer before it tries again elsewhere (same ids).
const CLIENT_TIMEOUT_TICKS: u64 = 100;
/// The chance that a client loses an answer to a deposit or withdrawal and sends it again.
const RESEND: f64 = 0.1;
/// The largest message latency of the liveness phase (the largest a seed draws).
const LIVENESS_LATENCY_MAX_MS: u64 = 40;
/// The chance that a client moves to another node for its next request (a load balancer).
const SWITCH: f64 = 0.1;
/// The instruments clients trade, with their opening prices in cents.
const SYMBOLS: [(&str, i64); 4] = [("VTI", 24_000), ("BND", 7_200), ("AAPL", 19_000), ("VXUS", 6_100)];

/// A read a node served: (the index it had applied then, the read, the user).
type ServedRead = (u64, ProposalId, usize);

/// One log entry: what was proposed, and when.
#[derive(Serialize, Deserialize)]
struct Entry {
    at: i64,
    body: Body,
}

#[derive(Serialize, Deserialize)]
enum Body {
    /// An entity command.
    Call(Envelope),
    /// A workflow's shard records (data keys, erasure schedules, regulatory records).
    Write(moneta::storage::store::WriteSet),
}

/// A replica's entities: the host and how far into the group's applied entries it is.
struct Replica {
    host: MemoryHost,
    /// A hash chain over the state of each entity after each entry it executed (and the audit
    /// records it asked for): replicas at the same index must hold the same chain.
    chain: [u8; 32],
    consumed: usize,
    last_index: u64,
    /// Rebuilt from what its node's disk kept (a crash, or a snapshot installed): once it has
    /// replayed that, its entities are reloaded as a restarted host loads them.
    reload: bool,
    /// The replica as it stood at an earlier index of its log: what its disk holds (a real
    /// node recovers from its stored state, not by replaying its log from the start).
    checkpoint: Option<Box<Checkpoint>>,
}

struct Checkpoint {
    host: MemoryHost,
    chain: [u8; 32],
    consumed: usize,
    last_index: u64,
}

/// A replica's state is checkpointed every this many applied entries.
const CHECKPOINT_EVERY: usize = 32_768;

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
    history: Vec<Segmented>,
    /// Per user: cash in cents as the acknowledged requests make it.
    acknowledged: Vec<i64>,
    /// Per user: units of its instrument as the acknowledged orders make them.
    acknowledged_units: Vec<i64>,
    /// The market: each instrument's price in cents, moving every second.
    prices: Vec<i64>,
    /// Some link is cut (an isolation or one-way cuts) until the next heal.
    partitioned: bool,
    tick: u64,
    /// In the liveness phase clients no longer pause between requests.
    live: bool,
    report: Report,
    /// Clients to look at, by tick (to send, or to give up waiting).
    wake: BTreeMap<u64, Vec<usize>>,
    /// Proposals and reads waiting for their outcome → the client waiting.
    pending: BTreeMap<ProposalId, usize>,
    /// Reads served → the cash they saw (the state at the point they were served).
    read_cash: BTreeMap<ProposalId, i64>,
    trace: Trace,
    progress: Option<indicatif::ProgressBar>,
    /// The metadata as the cluster was formed, and each node's replica of the metadata group.
    formed: moneta::cluster::meta::MetaState,
    metas: BTreeMap<RaftId, membership::MetaReplica>,
    /// The last tick each node was heard from by the metadata leader.
    heard: BTreeMap<RaftId, u64>,
    /// The metadata leader and the tick it began planning.
    leading_since: Option<(RaftId, u64)>,
    /// Nodes removed from the cluster (never started again).
    departed: BTreeSet<RaftId>,
    asked_to_join: u64,
    /// Nodes whose disk was damaged and not yet replaced.
    corrupted: BTreeSet<RaftId>,
    /// The investors' lives (registration, erasure) and when to look at each again.
    lives: Vec<lives::Life>,
    life_wake: BTreeMap<u64, Vec<usize>>,
    /// The workflows running, by id, and the proposals and reads they wait on.
    flows: BTreeMap<u64, flows::Flow>,
    next_flow: u64,
    flow_pending: BTreeMap<ProposalId, u64>,
    /// (node, "kind/id", request id) → what that replica answered a workflow's command.
    flow_answers: BTreeMap<(RaftId, String, String), moneta::domain::envelope::Answer>,
    /// How often each node went down (a flow on it dies with it).
    incarnations: BTreeMap<RaftId, u64>,
    /// Data key creations under way: (leader, key id, flow).
    key_locks: BTreeSet<(RaftId, String, u64)>,
    /// The members' shared vault (seeded) and sanctions list.
    vault: moneta::storage::vault::Vault,
    sanctions: moneta::adapters::sanctions::LoadedList,
    /// The erasure list outside the data folders.
    erasure_list: Vec<(String, String)>,
    /// Accounts being erased by a job's flow; accounts → their investor.
    erasing: BTreeSet<String>,
    owners: BTreeMap<String, usize>,
    /// (group, storage key) of each data key destroyed → the index of the group's log that
    /// destroyed it first: never put again after it.
    destroyed_keys: BTreeMap<(GroupId, Vec<u8>), u64>,
    job_runs: u64,
    /// The end of day's job.
    eod: eod::Eod,
    /// The market feed to the instruments.
    feed: market::Feed,
}

/// How many advised investors (without clients) a run of `users` has: one in ten more.
fn advised_of(users: usize) -> usize {
    users.div_ceil(10)
}

fn user_id(u: usize) -> String {
    format!("usr_sim{u:04}")
}

fn cents(d: Decimal) -> i64 {
    (d * Decimal::from(100)).trunc().try_into().expect("cash fits in i64 cents")
}

impl ClusterSim {
    pub fn new(s: Settings) -> ClusterSim {
        let formed = membership::formed(s.nodes, s.groups);
        let placement: BTreeMap<GroupId, Vec<RaftId>> = formed.placement.iter().enumerate().map(|(g, p)| (g as GroupId, p.clone())).collect();
        let mut raft = SimRaftCluster::placed(s.seed, s.nodes, &placement);
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
                        0..=2 => BankOp::Deposit(100 * rng.random_range(1..=50)),
                        3..=4 => BankOp::Withdraw(100 * rng.random_range(1..=60)),
                        // Priced when first sent.
                        5..=6 => BankOp::Buy {
                            qty: rng.random_range(1..=4),
                            price: 0,
                        },
                        7 => BankOp::Sell {
                            qty: rng.random_range(1..=4),
                            price: 0,
                        },
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
        let lives = lives::draw_lives(s.users, advised_of(s.users), s.ticks, &mut rng);
        let sanctions = {
            let compliance = moneta::config::ComplianceConfig {
                sanctions_list: Default::default(),
                kyc_provider: "sandbox".into(),
            };
            moneta::adapters::sanctions::load(&compliance).expect("the bundled sanctions list")
        };
        let mut sim = ClusterSim {
            lives,
            life_wake: BTreeMap::new(),
            flows: BTreeMap::new(),
            next_flow: 0,
            flow_pending: BTreeMap::new(),
            flow_answers: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            key_locks: BTreeSet::new(),
            vault: vault::sim_vault(s.seed),
            feed: Default::default(),
            sanctions,
            erasure_list: Vec::new(),
            erasing: BTreeSet::new(),
            owners: BTreeMap::new(),
            destroyed_keys: BTreeMap::new(),
            job_runs: 0,
            eod: eod::Eod::default(),
            replicas: BTreeMap::new(),
            answers: BTreeMap::new(),
            states: BTreeMap::new(),
            history: vec![Segmented::default(); s.users],
            acknowledged: vec![0; s.users],
            acknowledged_units: vec![0; s.users],
            prices: SYMBOLS.iter().map(|s| s.1).collect(),
            partitioned: false,
            tick: 0,
            live: false,
            report: Report::default(),
            wake: BTreeMap::new(),
            pending: BTreeMap::new(),
            read_cash: BTreeMap::new(),
            trace: Trace::new(None).expect("an in-memory trace"),
            progress: None,
            metas: BTreeMap::new(),
            heard: BTreeMap::new(),
            leading_since: None,
            departed: BTreeSet::new(),
            asked_to_join: 0,
            corrupted: BTreeSet::new(),
            clients,
            rng,
            raft,
            formed,
            s,
        };
        for i in 0..sim.clients.len() {
            let w = sim.clients[i].waiting.clone();
            sim.set_waiting(i, w);
        }
        for u in 0..sim.lives.len() {
            if let lives::Stage::Unregistered { at } = sim.lives[u].stage {
                sim.wake_life(u, at);
            }
        }
        for (&g, nodes) in placement.iter().filter(|(&g, _)| g < sim.s.groups) {
            for &n in nodes {
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
            checkpoint: None,
        }
    }

    /// Replica (n, g) comes back from its node's disk: from its last checkpoint when that is
    /// still a prefix of what the node kept applied, else from the start; then it replays the
    /// rest and reloads its entities (see `sync_replicas`).
    fn rebuild(&mut self, n: RaftId, g: GroupId) {
        let old = self.replicas.remove(&(n, g)).expect("replica");
        let applied = self.raft.applied_entries(n, g);
        // The disk kept everything the replica had executed: replaying it from the checkpoint
        // would end in this very state (the same entries, in order, on the same host), so the
        // host stays and only reloads its entities as a restarted node does.
        let kept = old.consumed <= applied.len() && (old.consumed == 0 || applied[old.consumed - 1].0 == old.last_index);
        if kept {
            self.replicas.insert((n, g), Replica { reload: true, ..old });
            return;
        }
        let r = match old.checkpoint {
            Some(cp) if cp.consumed <= applied.len() && (cp.consumed == 0 || applied[cp.consumed - 1].0 == cp.last_index) => Replica {
                host: cp.host.clone(),
                chain: cp.chain,
                consumed: cp.consumed,
                last_index: cp.last_index,
                reload: true,
                checkpoint: Some(cp),
            },
            _ => self.rebuilt_replica(g),
        };
        self.replicas.insert((n, g), r);
    }

    /// A replica to rebuild from its node's disk.
    fn rebuilt_replica(&self, g: GroupId) -> Replica {
        Replica {
            reload: true,
            ..self.fresh_replica(g)
        }
    }

    /// The price in cents a client of user `u` sees now.
    fn price_of(&self, u: usize) -> i64 {
        self.prices[u % SYMBOLS.len()]
    }

    fn group_of_user(&self, u: usize) -> GroupId {
        moneta::domain::ids::group_of(moneta::domain::ids::shard_of(&user_id(u)), self.s.groups)
    }

    fn fail<T>(&self, message: String) -> Result<T, Failure> {
        // The entity or group the message names, for the events that led there.
        // (An account id runs on to the first character that cannot be in one: `usr_sim10432`,
        // `usr_sim0006r2`.)
        let entity = message.find("usr_sim").map(|i| {
            let id = &message[i..];
            let end = id.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(id.len());
            id[..end].to_string()
        });
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
            self.faults()?;
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
        // A network slower than an election timeout (10 ticks) keeps any leader from holding:
        // the liveness phase runs on a normal one (at most the largest latency a seed draws).
        self.raft.faults.latency_max_ms = self.raft.faults.latency_max_ms.min(LIVENESS_LATENCY_MAX_MS);
        self.restart_down()?;
        self.live = true;
        for i in 0..self.clients.len() {
            if let Some(Waiting::Send { at }) = self.clients[i].waiting {
                let soon = self.tick + self.rng.random_range(1..20);
                self.set_waiting(i, Some(Waiting::Send { at: at.min(soon) }));
            }
        }
        let bound = self.tick + self.s.liveness_ticks;
        while !(self.clients_done() && self.lives_settled() && self.converged()) {
            if self.tick >= bound {
                let open = self.clients.iter().filter(|c| c.waiting.is_some()).count();
                let unsettled = self.lives.iter().filter(|l| !l.settled()).count();
                return self.fail(format!(
                    "the liveness phase did not converge within {} ticks: {open} clients unanswered, {unsettled} investors' workflows unfinished ({}; running: {}; end of day {}), replicas converged: {}; membership: {}",
                    self.s.liveness_ticks,
                    self.describe_lives(),
                    self.describe_flows(),
                    self.describe_eod(),
                    self.converged(),
                    self.unsettled()
                ));
            }
            self.step()?;
            // A node whose disk failed it (a write error in the last safety tick) comes back.
            self.restart_down()?;
            self.report.liveness_ticks += 1;
        }
        self.finish()
    }

    /// Restarts every node that is down (the liveness phase).
    fn restart_down(&mut self) -> Result<(), Failure> {
        let down: Vec<RaftId> = self
            .raft
            .nodes
            .iter()
            .filter(|(id, n)| n.raft.is_none() && !self.raft.unreadable.contains(id))
            .map(|(&id, _)| id)
            .collect();
        for id in down {
            self.restart(id)?;
        }
        Ok(())
    }

    /// One tick: raft, then every replica's entities catch up, then clients.
    fn step(&mut self) -> Result<(), Failure> {
        self.tick += 1;
        // The market moves every simulated second: a seeded random walk of up to ±0.2%.
        if self.tick.is_multiple_of(1000 / TICK_MS) {
            for p in &mut self.prices {
                *p = (*p + *p * self.rng.random_range(-20..=20) / 10_000).max(100);
            }
            self.feed();
        }
        // A process waking from a pause handles its clients and its network in no set order.
        let waking = self.raft.wake_due(self.tick * TICK_MS);
        if !waking.is_empty() && self.rng.random_bool(0.5) {
            for &n in &waking {
                self.note("wake", Some(n), None, None, "answers its clients before reading its network".into());
            }
            self.drive_flows()?;
            self.serve_clients()?;
        }
        if let Err(e) = self.raft.run(1) {
            return self.fail(e);
        }
        self.disk_failed();
        for (node, g, term, leader) in std::mem::take(&mut self.raft.roles) {
            let leader = leader.map_or("none known".to_string(), |l| format!("node {l}"));
            self.note("role", Some(node), Some(g), None, format!("term {term}, leader {leader}"));
        }
        self.membership()?;
        self.sync_replicas()?;
        self.replicas_follow();
        self.lives()?;
        self.serve_clients()
    }

    /// Every group has one leader, its configuration is its placement (membership settled),
    /// and every replica applied the same entries.
    fn converged(&self) -> bool {
        self.membership_settled()
            && (0..=self.meta_group()).all(|g| {
                let Some(leader) = self.raft.leader(g) else { return false };
                let applied = |n: RaftId| {
                    self.raft
                        .nodes
                        .get(&n)
                        .and_then(|x| x.raft.as_ref())
                        .and_then(|r| r.status(g))
                        .map(|s| s.applied_index)
                };
                let want = applied(leader);
                self.members_of(g).into_iter().all(|n| {
                    applied(n) == want
                        && (g == self.meta_group() || self.replicas.get(&(n, g)).map(|r| r.last_index) == self.replicas.get(&(leader, g)).map(|r| r.last_index))
                })
            })
    }

    fn finish(mut self) -> Result<Report, Failure> {
        for u in 0..self.s.users {
            let g = self.group_of_user(u);
            for n in self.members_of(g) {
                let Some(r) = self.replicas.get_mut(&(n, g)) else {
                    return self.fail(format!("group {g}: node {n} is in its configuration but holds no replica"));
                };
                let cash = cents(r.host.query::<Portfolio, _>(&user_id(u), moneta::domain::queries::Cash));
                let units = r
                    .host
                    .portfolios
                    .get(&user_id(u))
                    .and_then(|h| h.state.holdings.get(&clients::symbol_of(u)))
                    .map_or(Decimal::ZERO, |h| h.quantity);
                if units != Decimal::from(self.acknowledged_units[u]) {
                    return self.fail(format!(
                        "{} at node {n}: {units} units held, but the acknowledged orders make {} (an order applied twice or lost)",
                        user_id(u),
                        self.acknowledged_units[u]
                    ));
                }
                if cash != self.acknowledged[u] {
                    return self.fail(format!(
                        "{} at node {n}: cash {cash} cents, but the acknowledged requests make {} (a request applied twice or lost)",
                        user_id(u),
                        self.acknowledged[u]
                    ));
                }
            }
            if let Err(e) = self.history[u].check() {
                return self.fail(format!("{}: the client history is not linearizable: {e}", user_id(u)));
            }
        }
        self.check_lives()?;
        self.check_advised()?;
        self.check_statements()?;
        let mut h = Sha256::new();
        h.update(self.raft.digest().as_bytes());
        for ((n, g), r) in &self.replicas {
            h.update(n.to_be_bytes());
            h.update(g.to_be_bytes());
            h.update(state_digest(&r.host));
            h.update(r.chain);
        }
        self.report.ticks = self.tick;
        self.report.elections = self.raft.elections;
        self.report.snapshots = self.raft.snapshots_sent;
        self.report.refused = self.raft.refused;
        self.report.conf_steps = self.raft.conf_steps;
        self.report.digest = hex::encode(h.finalize());
        self.report.events = self.trace.events;
        // A trace that could not be written is the engineer's file, not the cluster's fault.
        self.report.trace_error = self.trace.finish().err();
        Ok(self.report)
    }
}

/// A replica's entities, hashed (its audit records are in its chain).
fn state_digest(host: &MemoryHost) -> [u8; 32] {
    let mut h = Sha256::new();
    for (id, p) in &host.portfolios {
        h.update(id.as_bytes());
        h.update(codec::encode(&p.state));
    }
    h.finalize().into()
}
