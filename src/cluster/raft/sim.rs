//! Simulated IO for the raft core: a network (latency, loss, duplication, reordering, cut
//! links one way or both, clogged links), paused processes, and per-node disks that lose unflushed rounds at a crash, all driven by one seed and
//! a logical clock. The real `MultiRaft` runs on it; a toy state machine (the applied entries
//! themselves) lets every replica be compared. Tests and the simulator use it; production
//! never does.
//!
//! Checked after every round, failing the run at the first violation: at most one leader per
//! group and term; an entry applied at an index is the same on every replica; a proposal
//! reported applied is in the proposer's state at its index.

use super::disk::{MemoryDisk, RaftDisk};
use super::node::{Committed, Event, MultiRaft};
use super::{GroupId, ProposalId, RaftId, RaftSettings};
use raft::prelude::{Message, MessageType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

mod members;
mod network;

/// Logical milliseconds per raft tick.
pub const TICK_MS: u64 = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct NetFaults {
    pub loss: f64,
    pub duplicate: f64,
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
}

impl Default for NetFaults {
    fn default() -> Self {
        NetFaults {
            loss: 0.0,
            duplicate: 0.0,
            latency_min_ms: 1,
            latency_max_ms: 5,
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at: u64,
    seq: u64,
    from: RaftId,
    to: RaftId,
    group: GroupId,
    bytes: Vec<u8>,
}

/// The applied entries of each group: the toy state machine, in memory and on the simulated
/// disk (folded with the same rounds as the raft log, so a crash keeps both consistent).
type Applied = BTreeMap<GroupId, Entries>;
/// Applied entries with their indexes, in index order.
type Entries = Vec<(u64, Vec<u8>)>;

enum StateOp {
    Apply(Committed),
    Install(GroupId, Vec<(u64, Vec<u8>)>),
}

pub struct SimNode {
    pub raft: Option<MultiRaft>,
    pub disk: MemoryDisk,
    pub applied: Applied,
    state_durable: Applied,
    state_volatile: Vec<Vec<StateOp>>,
}

impl SimNode {
    fn fold(into: &mut Applied, ops: &[StateOp]) {
        for op in ops {
            match op {
                StateOp::Apply(c) => into.entry(c.group).or_default().push((c.index, c.data.clone())),
                StateOp::Install(g, entries) => {
                    into.insert(*g, entries.clone());
                }
            }
        }
    }
}

pub struct SimRaftCluster {
    pub now_ms: u64,
    rng: ChaCha8Rng,
    settings: RaftSettings,
    pub nodes: BTreeMap<RaftId, SimNode>,
    packets: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    pub faults: NetFaults,
    /// One-way cuts (from, to).
    cut: BTreeSet<(RaftId, RaftId)>,
    /// Clogged links (from, to) → (until, extra latency), in logical ms: a slow link for a while.
    clogged: BTreeMap<(RaftId, RaftId), (u64, u64)>,
    /// Paused nodes → when they resume (logical ms): a frozen process (a long GC or VM stall)
    /// neither ticks nor reads its network; what is sent to it waits.
    paused: BTreeMap<RaftId, u64>,
    leaders: BTreeMap<(GroupId, u64), RaftId>,
    committed: BTreeMap<(GroupId, u64), Vec<u8>>,
    pub outcomes: BTreeMap<ProposalId, (RaftId, super::Outcome)>,
    pub reads: BTreeMap<ProposalId, bool>,
    /// Reads served: the group's applied index on the serving node when it served them (what
    /// the read must see).
    pub read_points: BTreeMap<ProposalId, u64>,
    /// Reads in flight: read → (the node serving it, its group).
    read_groups: BTreeMap<ProposalId, (RaftId, GroupId)>,
    /// A violation found outside `run` (reported by the next `run`).
    violation: Option<String>,
    pending: BTreeMap<ProposalId, (RaftId, GroupId, Vec<u8>)>,
    next_id: ProposalId,
    pub elections: u64,
    /// Role changes seen, oldest first — (node, group, term, the leader it knows) — for the
    /// driver's trace (it drains them).
    pub roles: Vec<(RaftId, GroupId, u64, Option<RaftId>)>,
    pub refused: u64,
    pub snapshots_sent: u64,
    digest: Sha256,
    /// The groups the placement names each node for, as that node knows it (set by the
    /// driver): a message for a group a node holds no replica of opens an empty one there when
    /// the placement names it, as the production writer does.
    pub placed: BTreeMap<RaftId, BTreeSet<GroupId>>,
    /// Membership steps in flight: proposal → the node that proposed it.
    conf_pending: BTreeMap<ProposalId, RaftId>,
    /// Replicas dropped since the driver last looked (removed from their group's configuration).
    pub dropped: Vec<(RaftId, GroupId)>,
    /// Disk errors since the driver last looked: (node, error). A write error stopped the
    /// node; a read error kept it from restarting.
    pub disk_failures: Vec<(RaftId, String)>,
    /// Nodes whose disk holds a corrupt record: they cannot start from it.
    pub unreadable: BTreeSet<RaftId>,
    /// What dropped replicas had applied, until the driver has seen it (`forget_dropped`).
    retired: BTreeMap<(RaftId, GroupId), Entries>,
    pub conf_steps: u64,
}

impl SimRaftCluster {
    /// `nodes` raft ids 1..=n, every one a voter of every group in `groups`.
    pub fn new(seed: u64, n: u64, groups: &[GroupId]) -> SimRaftCluster {
        let all: Vec<RaftId> = (1..=n).collect();
        SimRaftCluster::placed(seed, n, &groups.iter().map(|&g| (g, all.clone())).collect())
    }

    /// `nodes` raft ids 1..=n; each group of `placement` formed by its voters there.
    pub fn placed(seed: u64, n: u64, placement: &BTreeMap<GroupId, Vec<RaftId>>) -> SimRaftCluster {
        SimRaftCluster::with_settings(RaftSettings::default(), seed, n, placement)
    }

    /// As `placed`, every node with `settings` (its seed set to `seed`).
    pub fn with_settings(settings: RaftSettings, seed: u64, n: u64, placement: &BTreeMap<GroupId, Vec<RaftId>>) -> SimRaftCluster {
        let settings = RaftSettings { seed, ..settings };
        let mut c = SimRaftCluster {
            now_ms: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            settings,
            nodes: BTreeMap::new(),
            packets: BinaryHeap::new(),
            seq: 0,
            faults: NetFaults::default(),
            cut: BTreeSet::new(),
            clogged: BTreeMap::new(),
            paused: BTreeMap::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_points: BTreeMap::new(),
            read_groups: BTreeMap::new(),
            violation: None,
            pending: BTreeMap::new(),
            next_id: 1,
            elections: 0,
            roles: Vec::new(),
            refused: 0,
            snapshots_sent: 0,
            digest: Sha256::new(),
            placed: BTreeMap::new(),
            conf_pending: BTreeMap::new(),
            dropped: Vec::new(),
            disk_failures: Vec::new(),
            unreadable: BTreeSet::new(),
            retired: BTreeMap::new(),
            conf_steps: 0,
        };
        for id in 1..=n {
            let mut raft = MultiRaft::new(id, c.settings.clone(), super::logger::logger(id));
            let mut disk = MemoryDisk::default();
            let writes: Vec<_> = placement
                .iter()
                .filter(|(_, voters)| voters.contains(&id))
                .map(|(&g, voters)| raft.bootstrap_group(g, voters).expect("bootstrap"))
                .collect();
            disk.write(&writes).expect("memory disk");
            disk.sync().expect("memory disk");
            c.nodes.insert(
                id,
                SimNode {
                    raft: Some(raft),
                    disk,
                    applied: Applied::new(),
                    state_durable: Applied::new(),
                    state_volatile: Vec::new(),
                },
            );
        }
        c
    }

    pub fn leader(&self, group: GroupId) -> Option<RaftId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.is_serving(group)))
            .map(|(&id, n)| (n.raft.as_ref().map(|r| r.status(group).map(|s| s.term)), id))
            .max()
            .map(|(_, id)| id)
    }

    /// Proposes `data` to `group` at `node`; None when that node does not lead it.
    pub fn propose_at(&mut self, node: RaftId, group: GroupId, data: Vec<u8>) -> Option<ProposalId> {
        let id = self.next_id;
        let raft = self.nodes.get_mut(&node)?.raft.as_mut()?;
        raft.propose(group, id, data.clone()).ok()?;
        self.next_id += 1;
        self.pending.insert(id, (node, group, data));
        Some(id)
    }

    pub fn read_at(&mut self, node: RaftId, group: GroupId) -> Option<ProposalId> {
        let id = self.next_id;
        let raft = self.nodes.get_mut(&node)?.raft.as_mut()?;
        raft.read(group, id).ok()?;
        // A read may be served at once (a leader reading its own state): its point is now.
        let events = raft.take_events();
        self.next_id += 1;
        self.read_groups.insert(id, (node, group));
        for e in events {
            if let Err(e) = self.on_event(node, e) {
                self.violation.get_or_insert(e);
            }
        }
        Some(id)
    }

    /// A crash: memory is gone; of the rounds written since the last flush, the first `keep`
    /// reached the disk.
    pub fn crash(&mut self, node: RaftId, keep: usize) {
        // Its pending proposals die with it: their fate is unknown to their callers.
        let lost: Vec<_> = self.pending.iter().filter(|(_, p)| p.0 == node).map(|(&id, _)| id).collect();
        for id in lost {
            self.pending.remove(&id);
            self.outcomes.insert(id, (node, super::Outcome::Unknown));
        }
        self.conf_pending.retain(|_, at| *at != node);
        // Its reads die with it too (never answered: their callers time out).
        self.read_groups.retain(|_, (at, _)| *at != node);
        let n = self.nodes.get_mut(&node).expect("known node");
        n.raft = None;
        n.disk.crash(keep);
        let rounds: Vec<_> = n.state_volatile.drain(..).collect();
        for ops in rounds.iter().take(keep) {
            SimNode::fold(&mut n.state_durable, ops);
        }
        n.applied = n.state_durable.clone();
    }

    /// Restarts `node` from its disk; false (it stays down) when its disk cannot be read.
    pub fn restart(&mut self, node: RaftId) -> Result<bool, String> {
        let settings = self.settings.clone();
        let n = self.nodes.get_mut(&node).expect("known node");
        assert!(n.raft.is_none(), "restart of a running node");
        let mut raft = MultiRaft::new(node, settings, super::logger::logger(node));
        for (&g, &(term, vote)) in n.disk.tombstones() {
            raft.restore_tombstone(g, term, vote);
        }
        let loaded = match n.disk.load() {
            Ok(l) => l,
            Err(e) => {
                // A corrupt record: the node refuses to start from this disk, for good (as
                // the production store does); an I/O error may pass.
                if matches!(e, super::DiskError::Corrupt { .. }) {
                    self.unreadable.insert(node);
                }
                self.disk_failures.push((node, e.to_string()));
                return Ok(false);
            }
        };
        for (g, p) in loaded {
            raft.open_group(g, &p)?;
            let state_last = n.applied.get(&g).and_then(|v| v.last()).map_or(0, |e| e.0);
            if state_last > p.applied {
                return Err(format!(
                    "node {node} group {g}: state applied {state_last} beyond the log's applied {}",
                    p.applied
                ));
            }
        }
        n.raft = Some(raft);
        Ok(true)
    }

    /// Runs `ticks` ticks of logical time.
    pub fn run(&mut self, ticks: u64) -> Result<(), String> {
        if let Some(e) = self.violation.take() {
            return Err(e);
        }
        for _ in 0..ticks {
            self.now_ms += TICK_MS;
            let now = self.now_ms;
            self.paused.retain(|_, until| *until > now);
            self.clogged.retain(|_, (until, _)| *until > now);
            self.deliver()?;
            let ids: Vec<RaftId> = self.nodes.keys().copied().filter(|id| !self.paused.contains_key(id)).collect();
            for &id in &ids {
                if let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                    r.tick();
                }
            }
            for &id in &ids {
                self.process(id)?;
            }
        }
        Ok(())
    }

    fn deliver(&mut self) -> Result<(), String> {
        let mut held = Vec::new();
        while self.packets.peek().is_some_and(|p| p.0.at <= self.now_ms) {
            let Reverse(p) = self.packets.pop().expect("peeked");
            if let Some(&until) = self.paused.get(&p.to) {
                // A frozen process reads its socket when it wakes, in no set order with the
                // rest of what woke it (its timers, its clients).
                let after = self.rng.random_range(0..=2 * TICK_MS);
                held.push(Packet { at: until + after, ..p });
                continue;
            }
            let Some(raft) = self.nodes.get_mut(&p.to).and_then(|n| n.raft.as_mut()) else {
                continue;
            };
            let m: Message = protobuf::Message::parse_from_bytes(&p.bytes).map_err(|e| format!("undecodable message: {e}"))?;
            let stepped = match raft.step(p.from, p.group, m.clone()) {
                Err(super::Refused::UnknownGroup(g)) if super::node::opens_replica(&m) && self.placed.get(&p.to).is_some_and(|s| s.contains(&g)) => {
                    // Placed here: an empty replica, given the group's state by a snapshot.
                    raft.create_empty_group(g)?;
                    self.retired.remove(&(p.to, g));
                    raft.step(p.from, p.group, m)
                }
                other => other,
            };
            if stepped.is_err() {
                self.refused += 1;
            }
            let to = p.to;
            self.process(to)?;
        }
        self.packets.extend(held.into_iter().map(Reverse));
        Ok(())
    }

    /// Runs rounds at `id` until it has nothing ready, checking every event.
    fn process(&mut self, id: RaftId) -> Result<(), String> {
        for _ in 0..8 {
            let Some(n) = self.nodes.get_mut(&id) else { return Ok(()) };
            let Some(raft) = n.raft.as_mut() else { return Ok(()) };
            if !raft.has_ready() {
                break;
            }
            let round = raft.ready()?;
            let mut ops = Vec::new();
            for w in &round.writes {
                if let Some(s) = &w.snapshot {
                    if s.get_metadata().index > 1 {
                        ops.push(StateOp::Install(w.group, decode_state(&s.data).ok_or("a snapshot that does not decode")?));
                    }
                }
            }
            for c in &round.apply {
                ops.push(StateOp::Apply(c.clone()));
            }
            SimNode::fold(&mut n.applied, &ops);
            if let Err(e) = n.disk.write(&round.writes) {
                // The production writer fails closed on a storage error: the node stops (its
                // unflushed rounds may or may not have reached the disk) until restarted.
                let keep = n.disk.unsynced_rounds();
                let keep = self.rng.random_range(0..=keep);
                self.crash(id, keep);
                self.disk_failures.push((id, e.to_string()));
                return Ok(());
            }
            n.state_volatile.push(ops);
            if round.sync {
                n.disk.sync().map_err(|e| e.to_string())?;
                let rounds: Vec<_> = n.state_volatile.drain(..).collect();
                for ops in &rounds {
                    SimNode::fold(&mut n.state_durable, ops);
                }
            }
            let applied_now = round.apply.clone();
            raft.persisted(round);
            let events = raft.take_events();
            let outbox = raft.take_outbox();
            for c in &applied_now {
                self.check_applied(id, c)?;
            }
            for e in events {
                self.on_event(id, e)?;
            }
            for (to, msgs) in outbox {
                for (g, m) in msgs {
                    self.send(id, to, g, m);
                }
            }
        }
        Ok(())
    }

    fn check_applied(&mut self, node: RaftId, c: &Committed) -> Result<(), String> {
        self.digest.update(node.to_be_bytes());
        self.digest.update(c.group.to_be_bytes());
        self.digest.update(c.index.to_be_bytes());
        self.digest.update(&c.data);
        match self.committed.get(&(c.group, c.index)) {
            Some(d) if *d != c.data => Err(format!(
                "group {} index {}: node {node} applied another entry than an earlier replica",
                c.group, c.index
            )),
            Some(_) => Ok(()),
            None => {
                self.committed.insert((c.group, c.index), c.data.clone());
                Ok(())
            }
        }
    }

    fn on_event(&mut self, node: RaftId, e: Event) -> Result<(), String> {
        match e {
            Event::Role(rc) => {
                self.roles.push((node, rc.group, rc.term, rc.leader));
                if rc.leading {
                    self.elections += 1;
                    if let Some(other) = self.leaders.insert((rc.group, rc.term), node) {
                        if other != node {
                            return Err(format!("group {} term {}: two leaders, {other} and {node}", rc.group, rc.term));
                        }
                    }
                }
            }
            Event::Proposal(id, _) if self.conf_pending.remove(&id).is_some() => {}
            Event::Proposal(id, outcome) => {
                let (at, group, data) = self.pending.remove(&id).ok_or(format!("outcome of unknown proposal {id}"))?;
                if at != node {
                    return Err(format!("proposal {id} made at {at} resolved at {node}"));
                }
                if outcome == super::Outcome::Applied {
                    // Newest first: a proposal is reported in the round that applied it.
                    let found = self.nodes[&node].applied.get(&group).is_some_and(|v| v.iter().rev().any(|(_, d)| *d == data));
                    if !found {
                        return Err(format!("proposal {id} reported applied but absent from node {node}'s state"));
                    }
                }
                self.outcomes.insert(id, (node, outcome));
            }
            Event::Read(id, ok) => {
                if let Some((_, g)) = self.read_groups.remove(&id).filter(|_| ok) {
                    let applied = self.nodes[&node].raft.as_ref().and_then(|r| r.status(g)).map_or(0, |s| s.applied_index);
                    self.read_points.insert(id, applied);
                }
                self.reads.insert(id, ok);
            }
            Event::SnapshotWanted(g) => {
                let n = self.nodes.get_mut(&node).expect("known");
                let raft = n.raft.as_mut().expect("running");
                if let Some((index, term)) = raft.snapshot_point(g) {
                    let entries: Vec<_> = n
                        .applied
                        .get(&g)
                        .map(|v| v.iter().filter(|e| e.0 <= index).cloned().collect())
                        .unwrap_or_default();
                    raft.offer_snapshot(g, index, term, encode_state(&entries));
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, from: RaftId, to: RaftId, group: GroupId, m: Message) {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            self.snapshots_sent += 1;
            // The simulated transport reports delivery optimistically; a lost snapshot is
            // retried by raft after the follower rejects the next append.
            if let Some(r) = self.nodes.get_mut(&from).and_then(|n| n.raft.as_mut()) {
                r.report_snapshot(group, to, true);
            }
        }
        if self.cut.contains(&(from, to)) || self.rng.random_bool(self.faults.loss) {
            return;
        }
        let bytes = protobuf::Message::write_to_bytes(&m).expect("raft messages encode");
        let copies = if self.rng.random_bool(self.faults.duplicate) { 2 } else { 1 };
        let clog = self.clogged.get(&(from, to)).map_or(0, |c| c.1);
        for _ in 0..copies {
            let latency = clog
                + self
                    .rng
                    .random_range(self.faults.latency_min_ms..=self.faults.latency_max_ms.max(self.faults.latency_min_ms));
            self.seq += 1;
            self.packets.push(Reverse(Packet {
                at: self.now_ms + latency,
                seq: self.seq,
                from,
                to,
                group,
                bytes: bytes.clone(),
            }));
        }
    }

    /// Compacts every running node's groups, keeping `keep` entries behind what is applied.
    pub fn compact_all(&mut self, keep: u64) {
        for n in self.nodes.values_mut() {
            // Only what is durable may be folded away: flush first.
            let _ = n.disk.sync();
            let rounds: Vec<_> = n.state_volatile.drain(..).collect();
            for ops in &rounds {
                SimNode::fold(&mut n.state_durable, ops);
            }
            if let Some(raft) = n.raft.as_mut() {
                let groups: Vec<_> = raft.groups().collect();
                for g in groups {
                    if let Some(s) = raft.status(g) {
                        raft.compact(g, s.applied_index.saturating_sub(keep));
                    }
                }
            }
        }
    }

    /// The digest of everything applied, in order, on every node: same seed, same digest.
    pub fn digest(&self) -> String {
        hex::encode(self.digest.clone().finalize())
    }

    /// Data applied to `group` on `node`, in index order.
    pub fn applied_data(&self, node: RaftId, group: GroupId) -> Vec<Vec<u8>> {
        self.nodes[&node]
            .applied
            .get(&group)
            .map(|v| v.iter().map(|e| e.1.clone()).collect())
            .unwrap_or_default()
    }

    /// Entries applied to `group` on `node` with their indexes, in index order (what its state
    /// machine holds: after a crash, what reached its disk; after a snapshot, the snapshot's).
    /// A replica dropped since the driver last looked still shows what it had applied.
    pub fn applied_entries(&self, node: RaftId, group: GroupId) -> &[(u64, Vec<u8>)] {
        match self.nodes.get(&node).and_then(|n| n.applied.get(&group)) {
            Some(v) => v,
            None => self.retired.get(&(node, group)).map_or(&[], Vec::as_slice),
        }
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

fn encode_state(entries: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, d) in entries {
        out.extend_from_slice(&i.to_be_bytes());
        out.extend_from_slice(&(d.len() as u32).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn decode_state(mut b: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let i = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?) as usize;
        out.push((i, b.get(12..12 + len)?.to_vec()));
        b = &b[12 + len..];
    }
    Some(out)
}
