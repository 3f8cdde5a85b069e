//! All the raft groups one node holds a replica of, driven together: one tick for all, one
//! persistence round for all (one write batch, one flush), messages batched per peer.

use super::disk::GroupWrite;
use super::group::{ProposeError, Replica};
use super::log::{GroupLog, PersistedGroup};
use super::tracker::{Outcome, ProposalId};
use super::{GroupId, Leadership, RaftId, RaftSettings};
use raft::prelude::{ConfChangeV2, Message, Snapshot};
use raft::SnapshotStatus;
use std::collections::BTreeMap;

mod membership;

/// A committed entry carrying data, for the state machine to apply in this round's batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub group: GroupId,
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// What the node learned of a group's leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleChange {
    pub group: GroupId,
    pub leader: Option<RaftId>,
    pub term: u64,
    /// This node leads the group now (it serves once `MultiRaft::is_serving` says so).
    pub leading: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A proposal's fate; `Applied` only after the round that applied it was persisted.
    Proposal(ProposalId, Outcome),
    /// A read may be served (`true`: leadership confirmed and its index applied) or not.
    Read(ProposalId, bool),
    Role(RoleChange),
    /// Raft needs a snapshot of the group's applied state to send a follower that fell behind
    /// the log: build one (`snapshot_point`) and `offer_snapshot` it.
    SnapshotWanted(GroupId),
}

/// Why a peer's message was refused (counted by the caller; never applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    UnknownGroup(GroupId),
    /// The message claims a sender or receiver other than the link it came over.
    WrongAddress {
        from: RaftId,
        to: RaftId,
    },
    /// raft-rs refused it (e.g. from a node that is not a member of the group).
    Raft(String),
}

/// One persistence round: what to write (atomically; flushed when `sync`) and which committed
/// entries to apply in the same batch.
#[derive(Debug, Default)]
pub struct Round {
    pub writes: Vec<GroupWrite>,
    pub apply: Vec<Committed>,
    /// Entries or votes changed: flush before `persisted`. Otherwise an unflushed write is
    /// enough (applied state can be rebuilt from the durable log).
    pub sync: bool,
    /// Per group: the ready's number, the index it applies up to, whether that is a snapshot's.
    readies: Vec<(GroupId, u64, Option<u64>, bool)>,
    held: Vec<(GroupId, Message)>,
    outcomes: Vec<(ProposalId, Outcome)>,
    /// `MultiRaft::applied` has run for the round.
    applied: bool,
}

impl Round {
    pub fn is_empty(&self) -> bool {
        self.readies.is_empty() && self.writes.iter().all(GroupWrite::is_empty)
    }
}

/// Whether a peer's message may open an empty replica of a group this node holds none of
/// (when the placement names this node there): only a heartbeat from a leader that knows
/// nothing of this replica yet (commit 0: it was just added, as a learner — replicas are
/// never added as voters). Anything else may be from an earlier incarnation of the replica,
/// still on its way, or from a candidate of a configuration it was removed from: an empty
/// replica would vote for any log (TiKV's `is_initial_msg`, without votes; found by the
/// simulator: a dropped replica created again by a stale candidate's vote request elected a
/// second leader in one term).
pub fn opens_replica(m: &Message) -> bool {
    m.get_msg_type() == raft::prelude::MessageType::MsgHeartbeat && m.commit == 0
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub leader: Option<RaftId>,
    /// This node leads the group and has committed an entry of its term: it may serve.
    pub serving: bool,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub voters: Vec<RaftId>,
    pub learners: Vec<RaftId>,
    /// A membership change is proposed and not yet applied (leader only).
    pub pending_conf: bool,
    /// Leader only: every voter has committed the latest membership change (`Replica::conf_settled`).
    pub conf_settled: bool,
    /// Leader only: it is the group's only voter, in and out of any change (`Replica::sole_voter`).
    pub sole: bool,
}

impl GroupStatus {
    /// The leadership a replica's status gives `me`. A replica counts as one (`replica`) only
    /// while its own configuration lists it: one a membership change removed stays here until
    /// its leader says every voter committed the change (`MultiRaft::told_out`), hears nothing
    /// more meanwhile, and knows only the leader of before. Calls for the group go where the
    /// members' gossip says the leader is, and its reads elsewhere (found by an operator: a
    /// node a finished move took out of a group answered 503 for that group's users for as
    /// long as another of its replicas was down, following the group's old leader).
    pub fn leadership(&self, me: RaftId, served: bool) -> Leadership {
        let member = self.voters.contains(&me) || self.learners.contains(&me);
        Leadership {
            leader: self.leader,
            served: served && member,
            replica: member,
            sole: self.sole && member,
        }
    }
}

pub struct MultiRaft {
    id: RaftId,
    settings: RaftSettings,
    logger: slog::Logger,
    groups: BTreeMap<GroupId, Replica>,
    outbox: BTreeMap<RaftId, Vec<(GroupId, Message)>>,
    events: Vec<Event>,
    /// Compactions decided since the last round, persisted with the next one.
    compactions: BTreeMap<GroupId, (u64, u64)>,
    in_round: bool,
    /// The term and vote of replicas dropped here: a replica created again starts from them, so
    /// this node never votes twice in one term for a group (Raft's rule, across incarnations).
    tombstones: BTreeMap<GroupId, (u64, RaftId)>,
}

impl MultiRaft {
    pub fn new(id: RaftId, settings: RaftSettings, logger: slog::Logger) -> MultiRaft {
        assert!(id != 0, "raft id 0 is reserved");
        MultiRaft {
            id,
            settings,
            logger,
            groups: BTreeMap::new(),
            outbox: BTreeMap::new(),
            events: Vec::new(),
            compactions: BTreeMap::new(),
            in_round: false,
            tombstones: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> RaftId {
        self.id
    }

    /// Reopens a group from what this node persisted.
    pub fn open_group(&mut self, group: GroupId, persisted: &PersistedGroup) -> Result<(), String> {
        let log = GroupLog::restore(persisted).map_err(|e| format!("group {group}: {e}"))?;
        self.insert(group, log, persisted.applied)
    }

    /// Creates a replica of a new group whose first voters are `voters` (this node among them).
    /// Returns what to persist so that a restart finds the group again.
    pub fn bootstrap_group(&mut self, group: GroupId, voters: &[RaftId]) -> Result<GroupWrite, String> {
        assert!(voters.contains(&self.id), "bootstrapping group {group} on a node that is not one of its voters");
        let log = GroupLog::bootstrap(voters);
        let mut snapshot = Snapshot::default();
        *snapshot.mut_metadata() = log.snapshot_meta().clone();
        self.insert(group, log, 1)?;
        Ok(GroupWrite {
            group,
            snapshot: Some(snapshot),
            hard_state: Some(self.groups[&group].raw.store().hard_state().clone()),
            applied: Some(1),
            ..Default::default()
        })
    }

    /// An empty replica that will be given the group's state by a snapshot from its leader
    /// (a node added to a group by a configuration change).
    /// An earlier replica of the group dropped here lends it its term and vote.
    pub fn create_empty_group(&mut self, group: GroupId) -> Result<(), String> {
        let mut log = GroupLog::default();
        if let Some(&(term, vote)) = self.tombstones.get(&group) {
            let mut hs = raft::prelude::HardState::default();
            hs.term = term;
            hs.vote = vote;
            log.set_hard_state(hs);
        }
        self.insert(group, log, 0)
    }

    fn insert(&mut self, group: GroupId, log: GroupLog, applied: u64) -> Result<(), String> {
        if self.groups.contains_key(&group) {
            return Err(format!("group {group} is already open"));
        }
        let replica = Replica::new(self.id, group, log, applied, &self.settings, &self.logger).map_err(|e| format!("group {group}: {e}"))?;
        self.groups.insert(group, replica);
        Ok(())
    }

    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    pub fn has_group(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    /// One tick of the logical clock for every group.
    pub fn tick(&mut self) {
        for r in self.groups.values_mut() {
            r.tick();
        }
    }

    /// A message from peer `from` (already authenticated as that member by the transport).
    pub fn step(&mut self, from: RaftId, group: GroupId, m: Message) -> Result<(), Refused> {
        if m.from != from || m.to != self.id {
            return Err(Refused::WrongAddress { from: m.from, to: m.to });
        }
        let Some(r) = self.groups.get_mut(&group) else {
            return Err(Refused::UnknownGroup(group));
        };
        if raft::raw_node::is_local_msg(m.get_msg_type()) {
            return Err(Refused::Raft(format!("local message type {:?} from a peer", m.get_msg_type())));
        }
        // An empty replica (created for a learner, its snapshot not yet here) knows nothing of
        // the group, not even its voters: it would vote for any log that asks. A replica is
        // promoted only once caught up, so no election needs its vote; the vote it would give
        // is to a candidate of a configuration it was removed from, whose stale voters count
        // it. (Found by the simulator, five nodes: a replica removed while frozen campaigned
        // with its old configuration, a replica of that configuration dropped and created
        // again empty voted for it, and the two elected a second leader whose log diverged.)
        if matches!(
            m.get_msg_type(),
            raft::prelude::MessageType::MsgRequestVote | raft::prelude::MessageType::MsgRequestPreVote
        ) && r.voters().is_empty()
        {
            return Err(Refused::Raft("an empty replica does not vote".into()));
        }
        // A leader commits on a follower only what that follower acknowledged holding; a
        // heartbeat beyond this replica's log is from an earlier incarnation of it (dropped and
        // created again while the message was on its way) or forged. raft-rs would panic on it.
        if m.get_msg_type() == raft::prelude::MessageType::MsgHeartbeat && m.commit > r.last_index() {
            return Err(Refused::Raft(format!(
                "a heartbeat committing index {} beyond this replica's last entry {}",
                m.commit,
                r.last_index()
            )));
        }
        r.step(m).map_err(|e| Refused::Raft(e.to_string()))
    }

    pub fn propose(&mut self, group: GroupId, id: ProposalId, data: Vec<u8>) -> Result<(), ProposeError> {
        match self.groups.get_mut(&group) {
            Some(r) => r.propose(id, data),
            None => Err(ProposeError::NotLeader(None)),
        }
    }

    pub fn propose_conf_change(&mut self, group: GroupId, id: ProposalId, cc: ConfChangeV2) -> Result<(), ProposeError> {
        match self.groups.get_mut(&group) {
            Some(r) => r.propose_conf_change(id, cc),
            None => Err(ProposeError::NotLeader(None)),
        }
    }

    /// Asks for a linearizable read of `group`; `Event::Read(id, true)` says when to serve it.
    pub fn read(&mut self, group: GroupId, id: ProposalId) -> Result<(), ProposeError> {
        match self.groups.get_mut(&group) {
            Some(r) if crate::planted::planted(crate::planted::Bug::ReadWithoutLease) && r.is_leader() => {
                // The planted mistake: a leader trusts that it still leads and reads its own
                // state at once, asking no quorum.
                r.tracker.read_asked(id);
                r.tracker.read_confirmed(id, r.commit_index());
                let mut ready = Vec::new();
                r.tracker.reads_ready(r.applied_index(), &mut ready);
                self.events.extend(ready.into_iter().map(|id| Event::Read(id, true)));
                Ok(())
            }
            Some(r) => r.read(id),
            None => Err(ProposeError::NotLeader(None)),
        }
    }

    /// Stops tracking a read the driver gave up on.
    pub fn forget_read(&mut self, group: GroupId, id: ProposalId) {
        if let Some(r) = self.groups.get_mut(&group) {
            r.tracker.forget_read(id);
        }
    }

    pub fn campaign(&mut self, group: GroupId) {
        if let Some(r) = self.groups.get_mut(&group) {
            let _ = r.raw.campaign();
        }
    }

    /// Test hook: this replica steps down to a newer term and campaigns (a sole voter leads
    /// again at once, in a later term), as when another leader came and went.
    #[doc(hidden)]
    pub fn debug_new_term(&mut self, group: GroupId) {
        if let Some(r) = self.groups.get_mut(&group) {
            let term = r.term();
            r.raw.raft.become_follower(term + 1, raft::INVALID_ID);
            let _ = r.raw.campaign();
        }
    }

    pub fn transfer_leader(&mut self, group: GroupId, to: RaftId) {
        if let Some(r) = self.groups.get_mut(&group) {
            r.raw.transfer_leader(to);
        }
    }

    /// Where the placement wants `group`'s leader; the leader hands over once it is caught up.
    pub fn set_preferred_leader(&mut self, group: GroupId, to: Option<RaftId>) {
        if let Some(r) = self.groups.get_mut(&group) {
            r.preferred_leader = to;
        }
    }

    pub fn is_leader(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(Replica::is_leader)
    }

    /// Leads and has committed an entry of its own term.
    pub fn is_serving(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(Replica::is_serving)
    }

    pub fn leader_of(&self, group: GroupId) -> Option<RaftId> {
        self.groups.get(&group).and_then(Replica::leader)
    }

    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        self.groups.get(&group).map(|r| GroupStatus {
            group,
            leader: r.leader(),
            serving: r.is_serving(),
            term: r.term(),
            commit_index: r.commit_index(),
            applied_index: r.applied_index(),
            last_index: r.last_index(),
            voters: r.voters(),
            learners: r.learners(),
            pending_conf: r.is_leader() && r.raw.raft.has_pending_conf(),
            conf_settled: r.conf_settled(),
            sole: r.sole_voter(),
        })
    }

    /// The transport could not reach `peer`: raft-rs probes it again instead of streaming.
    pub fn report_unreachable(&mut self, peer: RaftId) {
        for r in self.groups.values_mut() {
            r.raw.report_unreachable(peer);
        }
    }

    pub fn report_snapshot(&mut self, group: GroupId, to: RaftId, delivered: bool) {
        if let Some(r) = self.groups.get_mut(&group) {
            let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
            r.raw.report_snapshot(to, status);
        }
    }

    /// Where a snapshot of `group`'s applied state would stand: (index, term). The caller
    /// builds the state machine's part at exactly that point, between rounds.
    pub fn snapshot_point(&self, group: GroupId) -> Option<(u64, u64)> {
        let r = self.groups.get(&group)?;
        let applied = r.applied_index();
        let term = r.raw.store().term_of(applied).ok()?;
        Some((applied, term))
    }

    /// Offers a snapshot of the applied state at `snapshot_point` for followers that need one.
    pub fn offer_snapshot(&mut self, group: GroupId, index: u64, term: u64, data: Vec<u8>) {
        if let Some(r) = self.groups.get_mut(&group) {
            let mut s = Snapshot::default();
            s.data = data.into();
            let meta = s.mut_metadata();
            meta.index = index;
            meta.term = term;
            meta.set_conf_state(r.raw.store().conf_state().clone());
            r.raw.mut_store().offer_snapshot(s);
        }
    }

    /// Folds the log up to `index` (at most what is applied and durable) into the state.
    /// Drops `group`'s log entries before `index` (at most up to the applied entry, included:
    /// `index <= applied + 1`); a follower that needs them gets a snapshot.
    pub fn compact(&mut self, group: GroupId, index: u64) {
        let Some(r) = self.groups.get_mut(&group) else { return };
        let index = index.min(r.applied_index() + 1);
        if let Some(point) = r.raw.mut_store().compact(index) {
            self.compactions.insert(group, point);
        }
    }

    pub fn log_len(&self, group: GroupId) -> usize {
        self.groups.get(&group).map_or(0, |r| r.raw.store().entry_count())
    }

    /// Collects every group's ready state into one round. Messages that may leave before the
    /// round is durable go to the outbox now.
    pub fn ready(&mut self) -> Result<Round, String> {
        assert!(!self.in_round, "a round is already in flight");
        let mut round = Round::default();
        for (&g, r) in self.groups.iter_mut() {
            let mut write = GroupWrite {
                group: g,
                compacted: self.compactions.remove(&g),
                ..Default::default()
            };
            if !r.raw.has_ready() {
                if !write.is_empty() {
                    round.writes.push(write);
                }
                continue;
            }
            let mut rd = r.raw.ready();
            round.sync |= rd.must_sync();
            for m in rd.take_messages() {
                self.outbox.entry(m.to).or_default().push((g, m));
            }
            let mut applied = None;
            if !rd.snapshot().is_empty() {
                let s = rd.snapshot().clone();
                r.install_snapshot(&s);
                applied = Some(s.get_metadata().index);
                write.snapshot = Some(s);
                round.sync = true;
            }
            for e in rd.take_committed_entries() {
                if let Some(cs) = r.on_committed(&e, &mut round.outcomes)? {
                    write.conf_state = Some(cs);
                } else if !e.data.is_empty() {
                    round.apply.push(Committed {
                        group: g,
                        index: e.index,
                        term: e.term,
                        data: e.data.to_vec(),
                    });
                }
                applied = Some(e.index);
            }
            // A configuration change applied here is flushed before the round's held messages
            // go (a follower's answers, which tell the leader this replica committed it): a
            // replica that crashed and came back with the change unapplied would campaign
            // under the old configuration, needing the vote of a replica the change removed
            // and `told_out` let go (found by the simulator, seed 20070: a group left without
            // a quorum for good).
            if write.conf_state.is_some() {
                round.sync = true;
            }
            if let Some(first) = rd.entries().first() {
                write.replaces = first.index <= r.raw.store().last_index();
                r.raw.mut_store().append(rd.entries());
                write.entries = rd.take_entries();
            }
            if let Some(hs) = rd.hs() {
                r.raw.mut_store().set_hard_state(hs.clone());
                write.hard_state = Some(hs.clone());
            }
            for rs in rd.take_read_states() {
                let id = rs.request_ctx.as_slice().try_into().map(u64::from_be_bytes);
                if let Ok(id) = id {
                    r.tracker.read_confirmed(id, rs.index);
                }
            }
            round.held.extend(rd.take_persisted_messages().into_iter().map(|m| (g, m)));
            write.applied = applied;
            let number = rd.number();
            r.raw.advance_append_async(rd);
            round.readies.push((g, number, applied, write.snapshot.is_some()));
            if !write.is_empty() {
                round.writes.push(write);
            }
        }
        self.in_round = true;
        Ok(round)
    }

    /// The round's committed entries are applied — written, not necessarily flushed: the log
    /// they came from is durable on a majority, and a replica that loses the unflushed state
    /// applies them again from it. raft-rs learns they are applied; the proposals they
    /// complete and the reads they pass are reported at once, without waiting for the round's
    /// own flush (which only its new entries and votes need). `persisted` still follows.
    pub fn applied(&mut self, round: &mut Round) {
        assert!(self.in_round, "applied without a round in flight");
        if round.applied {
            return;
        }
        round.applied = true;
        // A snapshot is applied once persisted (raft-rs counts it persisted only then).
        for &(g, _, applied, _) in round.readies.iter().filter(|r| !r.3) {
            if let (Some(a), Some(r)) = (applied, self.groups.get_mut(&g)) {
                r.raw.advance_apply_to(a);
            }
        }
        for (id, outcome) in round.outcomes.drain(..) {
            self.events.push(Event::Proposal(id, outcome));
        }
        let mut reads = Vec::new();
        for &(g, _, applied, _) in round.readies.iter().filter(|r| !r.3) {
            if let (Some(_), Some(r)) = (applied, self.groups.get_mut(&g)) {
                r.tracker.reads_ready(r.applied_index(), &mut reads);
                self.events.extend(reads.drain(..).map(|id| Event::Read(id, true)));
            }
        }
    }

    /// The round is written (and flushed if it asked): raft-rs learns it is stable, messages
    /// that had to wait leave, proposals and reads it completed are reported (those of its
    /// applied entries at once if `applied` did not report them before).
    pub fn persisted(&mut self, mut round: Round) {
        self.applied(&mut round);
        self.in_round = false;
        for (g, m) in round.held {
            self.outbox.entry(m.to).or_default().push((g, m));
        }
        for &(g, number, applied, snapshot) in &round.readies {
            let r = self.groups.get_mut(&g).expect("a group in a round stays open");
            let conf = r.raw.raft.prs().conf();
            let me = self.id;
            if r.is_leader() && !conf.voters().contains(me) && !conf.learners().contains(&me) {
                // This round applied a configuration without this replica, its leader: it steps
                // down (same term, same vote). raft-rs would keep a removed leader leading and
                // panic on its own missing progress (found by the simulator: a leader that took
                // over while the change removing it was in flight). It is not dropped yet: the
                // voters of the new configuration may not have committed the change, and until
                // they have, one of them campaigning under the old configuration may need its
                // vote (found by the simulator: a leader that dropped itself at once, then the
                // loss of one more node, left the group without a leader for good). It goes
                // like any replica its leader says is out (`told_out`).
                let term = r.term();
                r.raw.raft.become_follower(term, raft::INVALID_ID);
            }
            r.raw.on_persist_ready(number);
            if let (Some(a), true) = (applied, snapshot) {
                r.raw.advance_apply_to(a);
            }
        }
        if crate::planted::planted(crate::planted::Bug::AckBeforeCommit) {
            for r in self.groups.values_mut().filter(|r| r.is_leader()) {
                let mut early = Vec::new();
                r.tracker.acknowledge_early(r.raw.raft.raft_log.persisted, &mut early);
                self.events.extend(early.into_iter().map(|(id, o)| Event::Proposal(id, o)));
            }
        }
        let mut reads = Vec::new();
        for (&g, r) in self.groups.iter_mut() {
            let leading = r.is_leader();
            let leader = r.leader().unwrap_or(0);
            if (leader, r.term()) != r.reported {
                let was_leading = r.reported.0 == self.id;
                r.reported = (leader, r.term());
                if was_leading && !leading {
                    let mut failed = Vec::new();
                    r.tracker.step_down(&mut failed, &mut reads);
                    self.events.extend(failed.into_iter().map(|(id, o)| Event::Proposal(id, o)));
                    self.events.extend(reads.drain(..).map(|id| Event::Read(id, false)));
                } else if !leading {
                    r.tracker.fail_reads(&mut reads);
                    self.events.extend(reads.drain(..).map(|id| Event::Read(id, false)));
                }
                self.events.push(Event::Role(RoleChange {
                    group: g,
                    leader: r.leader(),
                    term: r.term(),
                    leading,
                }));
            }
            r.tracker.reads_ready(r.applied_index(), &mut reads);
            self.events.extend(reads.drain(..).map(|id| Event::Read(id, true)));
            if r.raw.store().take_wanted().is_some() {
                self.events.push(Event::SnapshotWanted(g));
            }
        }
    }

    /// Messages to send, batched per peer, in the order raft produced them.
    pub fn take_outbox(&mut self) -> BTreeMap<RaftId, Vec<(GroupId, Message)>> {
        std::mem::take(&mut self.outbox)
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn has_ready(&self) -> bool {
        !self.compactions.is_empty() || self.groups.values().any(|r| r.raw.has_ready())
    }
}
