//! The faults of a cluster run: their probabilities (drawn per seed — swarm testing — or set
//! with `--fault NAME=P`) and their injection, one tick at a time, every draw from the run's
//! seeded stream.

use super::{ClusterSim, Failure};
use moneta::cluster::raft::sim::TICK_MS;
use moneta::cluster::raft::RaftId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Fault probabilities of one run.
#[derive(Clone, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    pub latency_max_ms: u64,
    /// Per tick: a running node crashes (losing a drawn number of unflushed rounds).
    pub crash: f64,
    /// Per tick: a crashed node restarts.
    pub restart: f64,
    /// Per tick: a node is isolated (both ways), if no link is cut.
    pub isolate: f64,
    /// Per tick: links are cut one way (a node's outgoing or incoming links, or one link), if
    /// no link is cut.
    pub one_way: f64,
    /// Per tick: the cut links heal.
    pub heal: f64,
    /// Per tick: a link is clogged (50–500 ms slower for 0.1–2 s).
    pub clog: f64,
    /// Per tick: a running node freezes for 0.5–3 s (a long GC or VM stall), if none is.
    pub pause: f64,
    /// Per tick: every node compacts its logs.
    pub compact: f64,
    /// Per tick: a new node asks to join (up to seven members).
    pub join: f64,
    /// Per tick: an operator decommissions a member (refused when too few would be left).
    pub decommission: f64,
    /// Per tick: a disk fails once — a running node's next write (the node stops, as the
    /// production writer fails closed), or a stopped node's next read (its restart fails).
    pub disk_error: f64,
    /// Per tick (drawn from the seed: 0 in a third of runs): a record on a node's disk is damaged at rest (one node at a time): its
    /// checksum finds it at the node's next start, which is refused; operators replace the
    /// node (a new one joins if needed, the damaged one is decommissioned).
    pub corrupt: f64,
}

impl Faults {
    /// Swarm testing: each run draws its own mix.
    pub fn draw(seed: u64) -> Faults {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_4152_4d00);
        Faults {
            loss: [0.0, 0.01, 0.05, 0.15][r.random_range(0..4)],
            duplicate: [0.0, 0.01, 0.05][r.random_range(0..3)],
            latency_max_ms: [2, 10, 40][r.random_range(0..3)],
            crash: [0.0, 0.001, 0.004][r.random_range(0..3)],
            restart: 0.02,
            isolate: [0.0, 0.002, 0.006][r.random_range(0..3)],
            one_way: [0.0, 0.002, 0.006][r.random_range(0..3)],
            heal: 0.01,
            clog: [0.0, 0.005, 0.02][r.random_range(0..3)],
            pause: [0.0, 0.003, 0.01][r.random_range(0..3)],
            compact: [0.0, 0.002, 0.01][r.random_range(0..3)],
            join: [0.0, 0.0005, 0.002][r.random_range(0..3)],
            decommission: [0.0, 0.0005, 0.002][r.random_range(0..3)],
            disk_error: [0.0, 0.0005, 0.002][r.random_range(0..3)],
            corrupt: [0.0, 0.0005, 0.002][r.random_range(0..3)],
        }
    }
}

impl Faults {
    /// The names `--fault NAME=P` accepts, in the order they are printed.
    pub const NAMES: [&'static str; 15] = [
        "loss",
        "duplicate",
        "latency_max_ms",
        "crash",
        "restart",
        "isolate",
        "one_way",
        "heal",
        "clog",
        "pause",
        "compact",
        "join",
        "decommission",
        "disk_error",
        "corrupt",
    ];

    /// Sets one fault from `NAME=VALUE` (a probability per tick or message in [0, 1]; for
    /// latency_max_ms, 1–10000 ms).
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let (name, value) = spec.split_once('=').ok_or_else(|| format!("--fault {spec:?}: expected NAME=VALUE"))?;
        if name == "latency_max_ms" {
            let ms: u64 = value.parse().map_err(|_| format!("--fault {name}: {value:?} is not a whole number of ms"))?;
            if !(1..=10_000).contains(&ms) {
                return Err(format!("--fault {name}: must be 1–10000 ms, got {ms}"));
            }
            self.latency_max_ms = ms;
            return Ok(());
        }
        let p: f64 = value.parse().map_err(|_| format!("--fault {name}: {value:?} is not a number"))?;
        if !(0.0..=1.0).contains(&p) {
            return Err(format!("--fault {name}: a probability in [0, 1], got {value}"));
        }
        let slot = match name {
            "loss" => &mut self.loss,
            "duplicate" => &mut self.duplicate,
            "crash" => &mut self.crash,
            "restart" => &mut self.restart,
            "isolate" => &mut self.isolate,
            "one_way" => &mut self.one_way,
            "heal" => &mut self.heal,
            "clog" => &mut self.clog,
            "pause" => &mut self.pause,
            "compact" => &mut self.compact,
            "join" => &mut self.join,
            "decommission" => &mut self.decommission,
            "disk_error" => &mut self.disk_error,
            "corrupt" => &mut self.corrupt,
            _ => return Err(format!("--fault {name}: unknown fault (one of {})", Faults::NAMES.join(", "))),
        };
        *slot = p;
        Ok(())
    }
}

impl ClusterSim {
    pub(super) fn faults(&mut self) -> Result<(), Failure> {
        let f = self.s.faults.clone();
        let ids: Vec<RaftId> = self.raft.nodes.keys().copied().collect();
        for id in ids {
            let running = self.raft.nodes[&id].raft.is_some();
            if running && self.rng.random_bool(f.crash) {
                let keep = self.rng.random_range(0..3);
                self.raft.crash(id, keep);
                *self.incarnations.entry(id).or_default() += 1;
                self.report.crashes += 1;
                self.note("crash", Some(id), None, None, format!("{keep} unflushed rounds reached its disk"));
                // Memory is gone: its entities come back from what its disk kept.
                let groups: Vec<_> = self.replicas.keys().filter(|k| k.0 == id).map(|k| k.1).collect();
                for g in groups {
                    self.rebuild(id, g);
                }
            } else if !running && !self.raft.unreadable.contains(&id) && self.rng.random_bool(f.restart) {
                // A node that cannot restart from what its disk kept (its recovery checks) is
                // a failure now: left down, a decommission could remove it and the failure be
                // lost (found in review).
                self.restart(id)?;
            }
        }
        self.operators();
        if self.rng.random_bool(f.disk_error) {
            let ids: Vec<RaftId> = self.raft.nodes.keys().copied().collect();
            let id = ids[self.rng.random_range(0..ids.len())];
            let n = self.raft.nodes.get_mut(&id).expect("a node");
            let what = match n.raft.is_some() {
                true => {
                    n.disk.fail_next_write = true;
                    "its next write fails"
                }
                false => {
                    n.disk.fail_next_load.set(true);
                    "its next read fails"
                }
            };
            self.report.disk_errors += 1;
            self.note("disk_error", Some(id), None, None, what.into());
        }
        if self.rng.random_bool(f.corrupt) && self.corrupted.is_empty() {
            // A stopped node's disk if there is one (found at its restart), else any.
            let down: Vec<RaftId> = self.raft.nodes.iter().filter(|(_, n)| n.raft.is_none()).map(|(&id, _)| id).collect();
            let pool: Vec<RaftId> = if down.is_empty() { self.raft.nodes.keys().copied().collect() } else { down };
            let id = pool[self.rng.random_range(0..pool.len())];
            let pick = self.rng.random();
            if let Some((g, index)) = self.raft.nodes.get_mut(&id).and_then(|n| n.disk.corrupt(pick)) {
                self.corrupted.insert(id);
                self.report.corruptions += 1;
                self.note("corrupt", Some(id), Some(g), None, format!("entry {index} damaged at rest"));
            }
        }
        let nodes: Vec<RaftId> = self.raft.nodes.keys().copied().collect();
        let n = nodes.len();
        if !self.partitioned && self.rng.random_bool(f.isolate) {
            let id = nodes[self.rng.random_range(0..n)];
            self.raft.isolate(id);
            self.partitioned = true;
            self.report.isolations += 1;
            self.note("isolate", Some(id), None, None, "cut off from every node, both ways".into());
        } else if !self.partitioned && n > 1 && self.rng.random_bool(f.one_way) {
            let id = nodes[self.rng.random_range(0..n)];
            let others: Vec<RaftId> = nodes.iter().copied().filter(|&o| o != id).collect();
            let what = match self.rng.random_range(0..3) {
                // It hears everyone; nobody hears it.
                0 => {
                    others.iter().for_each(|&o| self.raft.cut_one_way(id, o));
                    "its outgoing links cut".to_string()
                }
                // Everyone hears it; it hears nobody.
                1 => {
                    others.iter().for_each(|&o| self.raft.cut_one_way(o, id));
                    "its incoming links cut".to_string()
                }
                _ => {
                    let o = others[self.rng.random_range(0..others.len())];
                    self.raft.cut_one_way(id, o);
                    format!("its link to node {o} cut")
                }
            };
            self.partitioned = true;
            self.report.one_way_cuts += 1;
            self.note("one_way_cut", Some(id), None, None, what);
        } else if self.partitioned && self.rng.random_bool(f.heal) {
            self.raft.heal_cuts();
            self.partitioned = false;
            self.note("heal", None, None, None, "every cut link restored".into());
        }
        if n > 1 && self.rng.random_bool(f.clog) {
            let i = self.rng.random_range(0..n);
            let (a, b) = (nodes[i], nodes[(i + self.rng.random_range(1..n)) % n]);
            let (extra, ms) = (self.rng.random_range(50..=500), self.rng.random_range(100..=2000));
            self.raft.clog(a, b, extra, ms);
            self.report.clogs += 1;
            self.note("clog", Some(a), None, None, format!("link to node {b} {extra} ms slower for {ms} ms"));
        }
        if self.rng.random_bool(f.pause) {
            let id = nodes[self.rng.random_range(0..n)];
            let running = self.raft.nodes[&id].raft.is_some();
            if running && nodes.iter().all(|&o| self.raft.paused_until(o).is_none()) {
                let ms = self.rng.random_range(50..=300) * TICK_MS;
                self.raft.pause(id, ms);
                self.report.pauses += 1;
                self.note("pause", Some(id), None, None, format!("frozen for {ms} ms"));
            }
        }
        // Now and then every node folds its applied log into its state (replicas that fall
        // behind then catch up from a snapshot).
        if self.rng.random_bool(f.compact) {
            let keep = self.rng.random_range(0..8);
            self.raft.compact_all(keep);
            self.report.compactions += 1;
            self.note("compact", None, None, None, format!("every log folded into its state, {keep} entries kept"));
        }
        Ok(())
    }

    pub(super) fn restart(&mut self, id: RaftId) -> Result<(), Failure> {
        match self.raft.restart(id) {
            Err(e) => return self.fail(format!("node {id} cannot restart from its disk: {e}")),
            Ok(false) => {}
            Ok(true) => {
                // A damage its disk no longer holds (compacted or dropped) was never read.
                self.corrupted.remove(&id);
                self.report.restarts += 1;
                self.note("restart", Some(id), None, None, "restarted from its disk".into());
            }
        }
        self.disk_failed();
        Ok(())
    }

    /// Nodes a disk error stopped (their entities come back from what the disk kept) or kept
    /// from restarting.
    pub(super) fn disk_failed(&mut self) {
        for (id, e) in std::mem::take(&mut self.raft.disk_failures) {
            let stopped = self.raft.nodes.get(&id).is_some_and(|n| n.raft.is_none());
            if stopped {
                *self.incarnations.entry(id).or_default() += 1;
            }
            self.note("disk_failure", Some(id), None, None, format!("{e} (stopped: {stopped})"));
            let groups: Vec<_> = self.replicas.keys().filter(|k| k.0 == id).map(|k| k.1).collect();
            for g in groups {
                self.rebuild(id, g);
            }
        }
    }
}
