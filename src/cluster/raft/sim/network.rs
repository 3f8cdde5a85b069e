//! The simulated network's faults, set by the driver: links cut both ways or one way, a node
//! isolated, clogged (slower) links, paused processes.

use super::SimRaftCluster;
use crate::cluster::raft::RaftId;

impl SimRaftCluster {
    pub fn cut_both(&mut self, a: RaftId, b: RaftId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: RaftId) {
        let others: Vec<_> = self.nodes.keys().copied().filter(|&n| n != node).collect();
        for o in others {
            self.cut_both(node, o);
        }
    }

    /// Cuts the link from `from` to `to` only (what `to` sends still arrives).
    pub fn cut_one_way(&mut self, from: RaftId, to: RaftId) {
        self.cut.insert((from, to));
    }

    /// Whether `a` and `b` reach each other both ways now.
    pub fn connected(&self, a: RaftId, b: RaftId) -> bool {
        a == b || !(self.cut.contains(&(a, b)) || self.cut.contains(&(b, a)))
    }

    /// Slows the link from `from` to `to` by `extra_ms` for `for_ms`.
    pub fn clog(&mut self, from: RaftId, to: RaftId, extra_ms: u64, for_ms: u64) {
        self.clogged.insert((from, to), (self.now_ms + for_ms, extra_ms));
    }

    /// Freezes `node` for `for_ms`.
    pub fn pause(&mut self, node: RaftId, for_ms: u64) {
        self.paused.insert(node, self.now_ms + for_ms);
    }

    /// Ends the pauses due by `now_ms` (the start of the next tick) and names the nodes that
    /// wake: the driver may let them answer their clients before they read their network.
    pub fn wake_due(&mut self, now_ms: u64) -> Vec<RaftId> {
        let due: Vec<RaftId> = self.paused.iter().filter(|(_, &until)| until <= now_ms).map(|(&id, _)| id).collect();
        for id in &due {
            self.paused.remove(id);
        }
        due
    }

    /// When a paused node resumes (logical ms).
    pub fn paused_until(&self, node: RaftId) -> Option<u64> {
        self.paused.get(&node).copied()
    }

    /// Ends every cut link (clogs and pauses run their course).
    pub fn heal_cuts(&mut self) {
        self.cut.clear();
    }

    /// Ends every cut, clog and pause.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.clogged.clear();
        self.paused.clear();
    }
}
