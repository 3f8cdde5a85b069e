//! One replica of one shard group on this node: raft-rs's `RawNode` over the group's log image,
//! with its proposal and read tracking and what the node learned of its leadership.

use super::log::GroupLog;
use super::tracker::{Outcome, ProposalId, Tracker};
use super::{GroupId, RaftId, RaftSettings};
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This replica does not lead the group; the leader it knows of, if any.
    NotLeader(Option<RaftId>),
    /// raft-rs refused it (a leadership transfer in progress, or the group is stopping).
    Dropped,
}

pub struct Replica {
    pub(crate) raw: RawNode<GroupLog>,
    pub(crate) tracker: Tracker,
    /// The leader this replica last reported (0: none), and in which term.
    pub(crate) reported: (RaftId, u64),
    /// Where the placement wants this group's leader.
    pub(crate) preferred_leader: Option<RaftId>,
    ticks_since_transfer: usize,
    election_tick: usize,
    /// Ticks withheld from raft before the election timer runs again (see `tick`).
    skip: usize,
    armed: bool,
    jitter: ChaCha8Rng,
    /// The replicas whose removal this replica applied in the term it names. A leader does not
    /// add one of them back in that term (`returning`).
    removed_in_term: (u64, Vec<RaftId>),
}

impl Replica {
    pub fn new(id: RaftId, group: GroupId, log: GroupLog, applied: u64, settings: &RaftSettings, logger: &slog::Logger) -> Result<Replica, raft::Error> {
        let election_tick = settings.election_tick.max(2);
        let config = raft::Config {
            id,
            election_tick,
            heartbeat_tick: settings.heartbeat_tick,
            // Pinned (NOTES.md): raft-rs draws the timeout from a thread RNG unless the window
            // is one tick wide. The randomness elections need comes from `tick` instead.
            min_election_tick: election_tick,
            max_election_tick: election_tick + 1,
            applied,
            max_size_per_msg: settings.max_size_per_msg,
            max_inflight_msgs: settings.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            max_committed_size_per_ready: settings.max_committed_size_per_ready,
            ..Default::default()
        };
        config.validate()?;
        let logger = logger.new(slog::o!("group" => group));
        let raw = RawNode::new(&config, log, &logger)?;
        Ok(Replica {
            raw,
            tracker: Tracker::default(),
            reported: (0, 0),
            preferred_leader: None,
            ticks_since_transfer: 0,
            election_tick,
            skip: 0,
            armed: true,
            jitter: ChaCha8Rng::seed_from_u64(settings.jitter_seed(id, group)),
            removed_in_term: (0, Vec::new()),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// A leader serves only once an entry of its own term has committed (before that it may
    /// not know everything committed by its predecessors).
    pub fn is_serving(&self) -> bool {
        self.is_leader() && self.raw.raft.commit_to_current_term()
    }

    pub fn leader(&self) -> Option<RaftId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied_index(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// As a leader: no membership change is pending and every voter is known to have committed
    /// the latest one (raft-rs's `pending_conf_index`, conservatively the last index when this
    /// leader was elected). raft-rs puts a configuration into effect when it applies the entry,
    /// and a replica holding the change uncommitted campaigns under the old configuration; a
    /// committed one does not campaign before it applies it. Until this holds, a replica the
    /// change removed may still be needed for a vote: it is kept (`MultiRaft::told_out`).
    pub fn conf_settled(&self) -> bool {
        let raft = &self.raw.raft;
        if !self.is_leader() || raft.has_pending_conf() {
            return false;
        }
        let since = raft.pending_conf_index;
        let prs = raft.prs();
        self.voters().iter().all(|&v| {
            if v == raft.id {
                // Applied here (so flushed: a round applying a change syncs), not only committed.
                raft.raft_log.applied >= since
            } else {
                prs.get(v).is_some_and(|p| p.committed_index >= since)
            }
        })
    }

    /// Replicas removed from the group in the current term. One of them must not be added back
    /// before the term changes: a message its dropped incarnation sent in this term may still
    /// be on its way, and raft-rs would take an old append response as the new replica's
    /// progress — counting entries it does not hold towards a majority (found by the
    /// simulator: a re-added node, promoted to voter on such a response, never got a replica).
    /// A message of an earlier term is ignored by raft-rs.
    pub fn returning(&self) -> Vec<RaftId> {
        if self.removed_in_term.0 == self.term() {
            self.removed_in_term.1.clone()
        } else {
            Vec::new()
        }
    }

    /// This replica leads and is the only voter of the configuration it has applied (not
    /// joint): no other replica can be elected or commit until a change adding one is applied
    /// here first.
    pub fn sole_voter(&self) -> bool {
        self.is_leader() && self.raw.raft.prs().is_singleton()
    }

    pub fn voters(&self) -> Vec<RaftId> {
        self.raw.store().conf_state().voters.clone()
    }

    pub fn learners(&self) -> Vec<RaftId> {
        self.raw.store().conf_state().learners.clone()
    }

    pub fn propose(&mut self, id: ProposalId, data: Vec<u8>) -> Result<(), ProposeError> {
        self.track(id, |raw| raw.propose(Vec::new(), data))
    }

    /// A configuration change (issue: elastic membership) goes through raft like any entry.
    pub fn propose_conf_change(&mut self, id: ProposalId, cc: ConfChangeV2) -> Result<(), ProposeError> {
        self.track(id, |raw| raw.propose_conf_change(Vec::new(), cc))
    }

    /// Appends one entry as the leader and remembers it under (term, index) for `id`.
    fn track(&mut self, id: ProposalId, append: impl FnOnce(&mut RawNode<GroupLog>) -> raft::Result<()>) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader(self.leader()));
        }
        if self.raw.raft.lead_transferee.is_some() {
            // raft-rs drops every proposal while leadership is being handed over. The transfer
            // was started only once its replica held the whole log, so its MsgTimeoutNow has
            // left and it campaigns anyway; waiting for it only refused writes. And a dropped
            // write followed by an accepted one from the same entity would leave a hole in the
            // entity's journal: so the write is appended, in order, and commits or is lost
            // with those after it.
            self.raw.raft.abort_leader_transfer();
        }
        let before = self.last_index();
        append(&mut self.raw).map_err(|_| ProposeError::Dropped)?;
        let index = self.last_index();
        assert_eq!(index, before + 1, "a proposal appends exactly one entry");
        self.tracker.proposed(index, self.term(), id);
        Ok(())
    }

    /// A linearizable read (ReadIndex): the leader confirms it still leads (a heartbeat round
    /// with a quorum) at its commit index; the read is served once that index is applied here.
    /// A follower asks its leader for that index (how far it must apply to be caught up).
    pub fn read(&mut self, id: ProposalId) -> Result<(), ProposeError> {
        if !self.is_leader() && self.leader().is_none() {
            return Err(ProposeError::NotLeader(None));
        }
        self.tracker.read_asked(id);
        self.raw.read_index(id.to_be_bytes().to_vec());
        Ok(())
    }

    /// One tick. A replica that is not leading has its election timer restarted by raft-rs
    /// whenever it hears from a leader or campaigns; each time, a seeded number of ticks in
    /// `[0, election_tick)` is withheld before its timer runs again. That is raft's randomised
    /// election timeout (replicas that time out together would split their votes forever),
    /// drawn from the run's seed rather than a thread RNG, so a run replays.
    pub fn tick(&mut self) {
        if !self.is_leader() {
            if self.raw.raft.election_elapsed == 0 && self.armed {
                self.skip = self.jitter.random_range(0..self.election_tick);
                self.armed = false;
            }
            if self.skip > 0 {
                self.skip -= 1;
                self.ticks_since_transfer += 1;
                return;
            }
        }
        self.raw.tick();
        if self.raw.raft.election_elapsed != 0 {
            self.armed = true;
        }
        self.ticks_since_transfer += 1;
        self.balance();
    }

    /// Hands leadership to the preferred replica once it holds the whole log, at most once
    /// per election timeout (never to one that would need a snapshot first), and only if it
    /// answered since the last quorum check: raft-rs refuses every proposal while a transfer
    /// is under way, so handing over to a replica that is gone — still seen caught up, as
    /// nothing was appended since — would stop the group's writes and membership changes for
    /// good, one election timeout after another (found by the cluster simulator).
    fn balance(&mut self) {
        let Some(to) = self.preferred_leader else { return };
        if !self.is_serving() || to == self.raw.raft.id || self.ticks_since_transfer < self.election_tick {
            return;
        }
        let last = self.last_index();
        let caught_up = self
            .raw
            .raft
            .prs()
            .get(to)
            .is_some_and(|p| p.matched == last && p.state == raft::ProgressState::Replicate && p.recent_active);
        if caught_up && self.voters().contains(&to) {
            self.ticks_since_transfer = 0;
            self.raw.transfer_leader(to);
        }
    }

    pub fn step(&mut self, m: Message) -> Result<(), raft::Error> {
        self.raw.step(m)
    }

    /// Applies one committed entry's raft-level meaning (configuration changes) and resolves
    /// the proposal at its index. Returns the entry's data for the state machine when it is a
    /// normal entry carrying data.
    pub fn on_committed(&mut self, e: &Entry, outcomes: &mut Vec<(ProposalId, Outcome)>) -> Result<Option<raft::prelude::ConfState>, String> {
        let cs = match e.get_entry_type() {
            EntryType::EntryNormal => None,
            EntryType::EntryConfChange => {
                let cc: ConfChange = protobuf::Message::parse_from_bytes(&e.data).map_err(|err| format!("conf change at {}: {err}", e.index))?;
                Some(self.raw.apply_conf_change(&cc).map_err(|err| format!("conf change at {}: {err}", e.index))?)
            }
            EntryType::EntryConfChangeV2 => {
                let cc: ConfChangeV2 = protobuf::Message::parse_from_bytes(&e.data).map_err(|err| format!("conf change at {}: {err}", e.index))?;
                Some(self.raw.apply_conf_change(&cc).map_err(|err| format!("conf change at {}: {err}", e.index))?)
            }
        };
        if let Some(cs) = &cs {
            let term = self.term();
            if self.removed_in_term.0 != term {
                self.removed_in_term = (term, Vec::new());
            }
            let before = self.voters().into_iter().chain(self.learners());
            let removed: Vec<RaftId> = before.filter(|n| !cs.voters.contains(n) && !cs.learners.contains(n)).collect();
            self.removed_in_term.1.extend(removed);
            self.raw.mut_store().set_conf_state(cs.clone());
        }
        self.tracker.applied(e.index, e.term, outcomes);
        Ok(cs)
    }

    pub fn install_snapshot(&mut self, s: &Snapshot) {
        self.raw.mut_store().apply_snapshot(s);
    }
}
