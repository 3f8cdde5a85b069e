//! The multi-group raft core (src/cluster/raft) on simulated IO: elections, replication,
//! crashes that lose unflushed writes, partitions, lossy networks, compaction and snapshots,
//! linearizable reads and leadership placement. Every run checks, after every round, that no
//! term has two leaders, that replicas apply the same entry at every index and that a proposal
//! reported applied is in the proposer's state (`SimRaftCluster`).

// raft-rs's protobuf types are built field by field (as its own examples do).
#![allow(clippy::field_reassign_with_default)]

use moneta::cluster::raft::sim::{NetFaults, SimRaftCluster};
use moneta::cluster::raft::{GroupId, Outcome, RaftId};
use rand::Rng;

const GROUPS: [GroupId; 4] = [0, 1, 2, 3];

fn formed(seed: u64) -> SimRaftCluster {
    let mut c = SimRaftCluster::new(seed, 3, &GROUPS);
    c.run(300).unwrap();
    for g in GROUPS {
        assert!(c.leader(g).is_some(), "seed {seed}: group {g} has no serving leader after 3 s");
    }
    c
}

/// Proposes `n` entries to `group` at its current leader, running a tick between each.
fn propose_n(c: &mut SimRaftCluster, group: GroupId, tag: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        if let Some(l) = c.leader(group) {
            if let Some(id) = c.propose_at(l, group, format!("{tag}-{i}").into_bytes()) {
                ids.push(id);
            }
        }
        c.run(1).unwrap();
    }
    ids
}

/// Every running node of the three is told where `group`'s leader belongs.
fn prefer(c: &mut SimRaftCluster, group: GroupId, leader: RaftId) {
    for n in 1..=3u64 {
        if let Some(r) = c.nodes.get_mut(&n).and_then(|x| x.raft.as_mut()) {
            r.set_preferred_leader(group, Some(leader));
        }
    }
}

fn assert_replicas_equal(c: &SimRaftCluster, nodes: &[RaftId]) {
    for g in GROUPS {
        let first = c.applied_data(nodes[0], g);
        for &n in &nodes[1..] {
            if c.applied_data(n, g) != first {
                for &m in nodes {
                    eprintln!(
                        "node {m}: {:?} {:?}",
                        c.nodes[&m].raft.as_ref().unwrap().status(g),
                        c.applied_data(m, g).iter().map(|d| String::from_utf8_lossy(d).to_string()).collect::<Vec<_>>()
                    );
                }
            }
            assert_eq!(c.applied_data(n, g), first, "group {g}: node {n} differs from node {}", nodes[0]);
        }
    }
}

#[test]
fn three_nodes_elect_one_leader_per_group_and_every_replica_applies_the_same_log() {
    let mut c = formed(1);
    let mut ids = Vec::new();
    for g in GROUPS {
        ids.extend(propose_n(&mut c, g, &format!("g{g}"), 25));
    }
    c.run(100).unwrap();
    assert_eq!(ids.len(), 100);
    for id in &ids {
        assert_eq!(c.outcomes.get(id).map(|o| o.1), Some(Outcome::Applied), "proposal {id}");
    }
    assert_replicas_equal(&c, &[1, 2, 3]);
    for g in GROUPS {
        assert_eq!(c.applied_data(1, g).len(), 25);
    }
}

#[test]
fn a_crashed_leader_is_replaced_and_catches_up_after_restart_from_what_its_disk_kept() {
    for seed in 0..6 {
        let mut c = formed(seed);
        propose_n(&mut c, 0, "before", 10);
        let old = c.leader(0).unwrap();
        let keep = c.rng().random_range(0..3);
        c.crash(old, keep);
        c.run(300).unwrap();
        let new = c.leader(0).expect("a new leader");
        assert_ne!(new, old);
        let ids = propose_n(&mut c, 0, "during", 10);
        c.restart(old).unwrap();
        c.run(300).unwrap();
        for id in &ids {
            assert_eq!(c.outcomes.get(id).map(|o| o.1), Some(Outcome::Applied), "seed {seed} proposal {id}");
        }
        assert_replicas_equal(&c, &[1, 2, 3]);
        assert_eq!(c.applied_data(old, 0).len(), 20, "seed {seed}");
    }
}

#[test]
fn an_isolated_leader_commits_nothing_and_the_majority_elects_another_and_serves() {
    let mut c = formed(7);
    let old = c.leader(0).unwrap();
    c.isolate(old);
    let stranded = c.propose_at(old, 0, b"stranded".to_vec()).expect("it still believes it leads");
    let stale_read = c.read_at(old, 0).expect("a read asked at the old leader");
    c.run(400).unwrap();
    // check_quorum: it steps down; its proposal's fate is unknown, never applied; its read fails.
    assert_ne!(c.outcomes.get(&stranded).map(|o| o.1), Some(Outcome::Applied));
    assert_eq!(c.reads.get(&stale_read), Some(&false));
    let new = c.leader(0).expect("the majority elects a leader");
    assert_ne!(new, old);
    let ids = propose_n(&mut c, 0, "majority", 5);
    let read = c.read_at(new, 0).unwrap();
    c.run(50).unwrap();
    assert_eq!(c.reads.get(&read), Some(&true));
    c.heal();
    c.run(300).unwrap();
    for id in &ids {
        assert_eq!(c.outcomes.get(id).map(|o| o.1), Some(Outcome::Applied));
    }
    assert_replicas_equal(&c, &[1, 2, 3]);
    assert!(!c.applied_data(1, 0).contains(&b"stranded".to_vec()));
}

#[test]
fn lossy_duplicating_reordering_network_with_crashes_converges_once_faults_stop() {
    // Engineers widen the sweep with RAFT_CORE_SEEDS=N.
    let seeds: u64 = std::env::var("RAFT_CORE_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    for seed in 0..seeds {
        let mut c = formed(100 + seed);
        c.faults = NetFaults {
            loss: 0.1,
            duplicate: 0.05,
            latency_min_ms: 1,
            latency_max_ms: 40,
        };
        let mut ids = Vec::new();
        for round in 0..6 {
            for g in GROUPS {
                ids.extend(propose_n(&mut c, g, &format!("r{round}g{g}"), 5));
            }
            let victim = c.rng().random_range(1..=3);
            if c.nodes[&victim].raft.is_some() && c.rng().random_bool(0.5) {
                let keep = c.rng().random_range(0..4);
                c.crash(victim, keep);
                c.run(50).unwrap();
                c.restart(victim).unwrap();
            }
        }
        // Liveness: faults off, everyone up and connected.
        c.faults = NetFaults::default();
        c.run(800).unwrap();
        for g in GROUPS {
            assert!(c.leader(g).is_some(), "seed {seed}: group {g} has no leader after faults stopped");
        }
        assert_replicas_equal(&c, &[1, 2, 3]);
        let applied = ids.iter().filter(|id| c.outcomes.get(id).map(|o| o.1) == Some(Outcome::Applied)).count();
        for id in &ids {
            assert!(c.outcomes.contains_key(id), "seed {seed}: proposal {id} never resolved");
        }
        // Every proposal reported applied is in every replica, exactly once.
        assert!(applied > ids.len() / 2, "seed {seed}: only {applied} of {} applied", ids.len());
    }
}

#[test]
fn a_follower_behind_the_compacted_log_is_rebuilt_from_a_snapshot() {
    let mut c = formed(21);
    let lagging = (1..=3).find(|&n| Some(n) != c.leader(0)).unwrap();
    c.crash(lagging, 0);
    for g in GROUPS {
        propose_n(&mut c, g, &format!("while-down-{g}"), 30);
    }
    c.run(20).unwrap();
    c.compact_all(2);
    c.restart(lagging).unwrap();
    c.run(400).unwrap();
    assert!(c.snapshots_sent > 0, "the leader sent a snapshot");
    assert_replicas_equal(&c, &[1, 2, 3]);
    assert_eq!(c.applied_data(lagging, 0).len(), 30);
}

#[test]
fn the_same_seed_replays_the_same_run_and_another_seed_does_not() {
    let run = |seed: u64| {
        let mut c = formed(seed);
        c.faults = NetFaults {
            loss: 0.05,
            duplicate: 0.05,
            latency_min_ms: 1,
            latency_max_ms: 30,
        };
        for g in GROUPS {
            propose_n(&mut c, g, "d", 10);
        }
        c.crash(2, 1);
        c.run(100).unwrap();
        c.restart(2).unwrap();
        c.run(300).unwrap();
        (c.digest(), c.elections)
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).0, run(6).0);
}

#[test]
fn leadership_moves_to_the_preferred_replica_so_leaders_spread_over_the_nodes() {
    let groups: Vec<GroupId> = (0..12).collect();
    let mut c = SimRaftCluster::new(3, 3, &groups);
    c.run(300).unwrap();
    for &g in &groups {
        prefer(&mut c, g, 1 + u64::from(g) % 3);
    }
    c.run(600).unwrap();
    for &g in &groups {
        assert_eq!(c.leader(g), Some(1 + u64::from(g) % 3), "group {g}");
    }
}

#[test]
fn the_sled_raft_log_reloads_exactly_what_the_reference_disk_holds() {
    use moneta::cluster::raft::{GroupWrite, MemoryDisk, RaftDisk};
    use moneta::storage::raft_rounds::{decode, round_key, round_seq};
    use raft::prelude::{Entry, HardState, Snapshot};
    use rand::SeedableRng;
    for seed in [9u64, 10, 11, 12] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = moneta::storage::Store::open(dir.path()).unwrap();
        let mut reference = MemoryDisk::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut term = 1;
        // Even seeds write as the node's writer does: one tracker of the records kept from
        // round to round, and entries purged (a destroyed data key) now and then. Odd seeds
        // through `RaftDisk::write`, which loads the tracker again for every round.
        let writer = seed % 2 == 0;
        let (groups, mut rounds) = store.raft_image().unwrap();
        let mut states = moneta::storage::raft_states::RaftStates::from_persisted(&groups, store.written_seq().unwrap());
        let mut purged: Vec<(u32, u64)> = Vec::new();
        for _ in 0..400 {
            // A round touches one to three groups (each at most once), as the writer's rounds do.
            let mut round = Vec::new();
            for g in 0..3u32 {
                if !round.is_empty() && rng.random_range(0..2) == 0 {
                    continue;
                }
                let image = reference.load().unwrap().remove(&g).unwrap_or_default();
                let last = image.entries.last().map_or(image.snapshot_index, |e| e.index);
                let mut w = GroupWrite {
                    group: g,
                    ..Default::default()
                };
                match rng.random_range(0..10) {
                    0 => {
                        // A snapshot from a leader: the log restarts after it.
                        let mut s = Snapshot::default();
                        s.mut_metadata().index = last + rng.random_range(1..5);
                        s.mut_metadata().term = term;
                        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
                        w.snapshot = Some(s);
                        // A compaction the node recorded before the snapshot came, in the same
                        // round (`MultiRaft::ready`): the snapshot's point stands.
                        if image.applied > image.snapshot_index && rng.random_range(0..2) == 0 {
                            let index = rng.random_range(image.snapshot_index + 1..=image.applied);
                            let t = image.entries.iter().find(|e| e.index == index).map_or(term, |e| e.term);
                            w.compacted = Some((index, t));
                        }
                    }
                    1 if image.applied > image.snapshot_index => {
                        let index = rng.random_range(image.snapshot_index + 1..=image.applied);
                        let t = image.entries.iter().find(|e| e.index == index).map_or(term, |e| e.term);
                        w.compacted = Some((index, t));
                    }
                    _ => {
                        // Appends, sometimes replacing a suffix with entries of a newer term.
                        let from = rng.random_range(image.snapshot_index + 1..=last + 1);
                        if from <= last {
                            term += 1;
                        }
                        w.replaces = from <= last;
                        w.entries = (from..from + rng.random_range(1..4))
                            .map(|i| {
                                let mut e = Entry::default();
                                e.index = i;
                                e.term = term;
                                e.data = format!("{g}/{i}/{term}").into_bytes().into();
                                e
                            })
                            .collect();
                        let new_last = w.entries.last().unwrap().index;
                        let mut hs = HardState::default();
                        hs.term = term;
                        hs.commit = rng.random_range(image.hard_state.commit.min(new_last)..=new_last);
                        w.applied = Some(rng.random_range(image.applied.min(hs.commit)..=hs.commit));
                        w.hard_state = Some(hs);
                    }
                }
                round.push(w);
            }
            if writer {
                let mut batch = sled::Batch::default();
                for w in &round {
                    store.stage_raft(&mut batch, w, &mut states, &mut rounds).unwrap();
                }
                store.stage_rounds(&mut batch, &mut rounds).unwrap();
                states.stage(&mut batch);
                store.tree().apply_batch(batch).unwrap();
            } else {
                RaftDisk::write(&mut store, &round).unwrap();
            }
            reference.write(&round).unwrap();
            reference.sync().unwrap();
            let image = reference.load().unwrap();
            assert_eq!(store.raft_groups().unwrap(), image, "seed {seed}, after {round:?}");
            // Every record the sled log keeps holds an entry its group's log still has: one is
            // deleted with the compaction (or replacement) that takes its last.
            for item in store.tree().scan_prefix(&round_key(0)[..7]) {
                let (k, v) = item.unwrap();
                let runs = decode(round_seq(&k).unwrap(), &v).unwrap();
                assert!(
                    runs.iter().any(|(g, es)| image[g].entries.contains(es.last().unwrap())),
                    "seed {seed}: record {runs:?} holds nothing of the logs"
                );
                // A purge is done once the log is compacted past it: no record holds its entries.
                for (g, es) in &runs {
                    let point = image[g].snapshot_index;
                    for &(pg, upto) in &purged {
                        assert!(
                            pg != *g || upto > point || es[0].index > upto,
                            "seed {seed}: group {g} entries through {upto} purged, compacted through {point}, yet stored: {es:?}"
                        );
                    }
                }
            }
            if writer && rng.random_range(0..20) == 0 {
                // A data key destroyed by an applied entry of a group: its log is compacted past
                // it in a coming round, and the entries up to it must then be gone.
                let g = rng.random_range(0..3u32);
                if let Some(p) = image.get(&g).filter(|p| p.applied > 0) {
                    let upto = rng.random_range(p.snapshot_index.saturating_sub(3)..=p.applied);
                    rounds.purge(g, upto);
                    purged.push((g, upto));
                }
            }
        }
        RaftDisk::sync(&mut store).unwrap();
        reference.sync().unwrap();
        assert_eq!(RaftDisk::load(&store).unwrap(), reference.load().unwrap());
        // And it reopens from the folder the same.
        drop(store);
        let store = moneta::storage::Store::open(dir.path()).unwrap();
        assert_eq!(store.raft_groups().unwrap(), reference.load().unwrap());
    }
}

#[test]
fn entries_of_a_folder_kept_by_index_move_into_one_round_record() {
    use moneta::storage::keys::{raft_entry_key, raft_key, RAFT_CONF_STATE, RAFT_ENTRY, RAFT_PREFIX};
    use protobuf::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let store = moneta::storage::Store::open(dir.path()).unwrap();
    // A folder written before round records: each entry under a key of its own.
    for g in [0u32, 5] {
        let mut cs = raft::prelude::ConfState::default();
        cs.voters = vec![1];
        store.tree().insert(raft_key(g, RAFT_CONF_STATE), cs.write_to_bytes().unwrap()).unwrap();
        for i in 1..=4u64 {
            let mut e = raft::prelude::Entry::default();
            (e.index, e.term, e.data) = (i, 2, format!("{g}/{i}").into_bytes().into());
            store.tree().insert(raft_entry_key(g, i), e.write_to_bytes().unwrap()).unwrap();
        }
    }
    let before = store.raft_groups().unwrap();
    assert_eq!(before[&5].entries.len(), 4);
    assert_eq!(store.migrate_raft_entries().unwrap(), 8);
    let keys: Vec<Vec<u8>> = store.tree().scan_prefix(RAFT_PREFIX).keys().map(|k| k.unwrap().to_vec()).collect();
    assert!(keys.iter().all(|k| k[6] != RAFT_ENTRY), "no entry key is left");
    assert_eq!(keys.len(), 3, "two configurations and one round record: {keys:?}");
    assert_eq!(store.raft_groups().unwrap(), before);
    assert_eq!(store.migrate_raft_entries().unwrap(), 0, "once");
    drop(store);
    let store = moneta::storage::Store::open(dir.path()).unwrap();
    assert_eq!(store.raft_groups().unwrap(), before);
    // A damaged record is an error naming it, never a guess.
    let (k, v) = store
        .tree()
        .scan_prefix(&moneta::storage::raft_rounds::round_key(0)[..7])
        .next()
        .unwrap()
        .unwrap();
    let mut bad = v.to_vec();
    bad[9] ^= 0x01;
    store.tree().insert(k, bad).unwrap();
    let e = store.raft_groups().unwrap_err().to_string();
    assert!(e.contains("raft round record 0"), "{e}");
}

#[test]
fn hard_states_and_applied_indexes_are_one_record_and_a_folder_of_per_group_keys_moves_to_it() {
    use moneta::cluster::raft::{GroupWrite, RaftDisk};
    use moneta::storage::keys::{raft_key, RAFT_APPLIED, RAFT_CONF_STATE, RAFT_HARD_STATE, RAFT_PREFIX};
    use protobuf::Message as _;
    use raft::prelude::{ConfState, HardState};
    let hs = |term: u64, commit: u64| {
        let mut h = HardState::default();
        h.term = term;
        h.vote = 1;
        h.commit = commit;
        h
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = moneta::storage::Store::open(dir.path()).unwrap();
    // A folder written before the one record: each group's pair under keys of its own.
    for g in 0..3u32 {
        let mut cs = ConfState::default();
        cs.voters = vec![1];
        let t = store.tree();
        t.insert(raft_key(g, RAFT_CONF_STATE), cs.write_to_bytes().unwrap()).unwrap();
        t.insert(raft_key(g, RAFT_HARD_STATE), hs(2, 10 + u64::from(g)).write_to_bytes().unwrap())
            .unwrap();
        t.insert(raft_key(g, RAFT_APPLIED), &(9 + u64::from(g)).to_be_bytes()[..]).unwrap();
    }
    let before = store.raft_groups().unwrap();
    assert_eq!((before[&1].hard_state.commit, before[&1].applied), (11, 10));
    // One round that changes group 1 only: every group's pair is in the one record, the
    // per-group keys are gone, and the other groups read as before.
    let w = GroupWrite {
        group: 1,
        hard_state: Some(hs(3, 12)),
        applied: Some(12),
        ..Default::default()
    };
    RaftDisk::write(&mut store, &[w]).unwrap();
    let keys: Vec<Vec<u8>> = store.tree().scan_prefix(RAFT_PREFIX).keys().map(|k| k.unwrap().to_vec()).collect();
    for g in 0..3u32 {
        assert!(
            !keys.contains(&raft_key(g, RAFT_HARD_STATE)) && !keys.contains(&raft_key(g, RAFT_APPLIED)),
            "group {g}"
        );
    }
    assert_eq!(keys.len(), 4, "three conf states and the one record");
    let after = store.raft_groups().unwrap();
    assert_eq!((after[&1].hard_state.clone(), after[&1].applied), (hs(3, 12), 12));
    for g in [0u32, 2] {
        assert_eq!(after[&g], before[&g], "group {g} untouched");
    }
    // Reopened, the same; a damaged record is an error naming it, never a guess.
    drop(store);
    let store = moneta::storage::Store::open(dir.path()).unwrap();
    assert_eq!(store.raft_groups().unwrap(), after);
    let record = moneta::storage::raft_states::states_key();
    let v = store.tree().get(&record).unwrap().unwrap();
    store.tree().insert(&record, &v[..v.len() - 1]).unwrap();
    let e = store.raft_groups().unwrap_err().to_string();
    assert!(e.contains("hard states"), "{e}");
}

/// A vote request from `from` to `to` for `group` at `term`, its candidate's log at `index`.
fn vote_request(from: RaftId, to: RaftId, term: u64, index: u64) -> raft::prelude::Message {
    let mut m = raft::prelude::Message::default();
    m.set_msg_type(raft::prelude::MessageType::MsgRequestVote);
    (m.from, m.to, m.term, m.index, m.log_term) = (from, to, term, index, term);
    m
}

/// Steps `m` at `raft`, runs the round, and returns the answers it sends back.
fn answers(raft: &mut moneta::cluster::raft::MultiRaft, m: raft::prelude::Message) -> Vec<raft::prelude::Message> {
    raft.step(m.from, 0, m).expect("stepped");
    let round = raft.ready().expect("a round");
    raft.persisted(round);
    raft.take_outbox().into_values().flatten().map(|(_, m)| m).collect()
}

#[test]
fn a_replica_dropped_and_created_again_never_votes_twice_in_a_term_nor_comes_back_from_stale_messages() {
    use moneta::cluster::raft::node::opens_replica;
    use moneta::cluster::raft::{MultiRaft, RaftSettings, Refused};
    use raft::prelude::MessageType;
    let mut n2 = MultiRaft::new(2, RaftSettings::default(), moneta::cluster::raft::logger::logger(2));
    let _ = n2.bootstrap_group(0, &[1, 2, 3]).unwrap();
    // It votes for node 1 in term 5, then is removed from the group and drops its replica.
    let granted = answers(&mut n2, vote_request(1, 2, 5, 10));
    assert!(
        granted.iter().any(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse && !m.reject),
        "{granted:?}"
    );
    assert!(n2.remove_group(0));
    // A candidate of a configuration it was removed from may not bring it back; nor may a
    // heartbeat from a leader that counts on entries it held.
    let stale_vote = vote_request(3, 2, 5, 10);
    assert!(!opens_replica(&stale_vote));
    let mut beat = raft::prelude::Message::default();
    beat.set_msg_type(MessageType::MsgHeartbeat);
    (beat.from, beat.to, beat.term, beat.commit) = (1, 2, 5, 7);
    assert!(!opens_replica(&beat));
    // Added again as a learner: the leader's first heartbeat (commit 0) opens it, with the
    // term and vote its earlier replica had.
    beat.commit = 0;
    assert!(opens_replica(&beat));
    n2.create_empty_group(0).unwrap();
    assert_eq!(n2.status(0).unwrap().term, 5);
    // Refused before raft sees it: an empty replica does not vote at all (see
    // `an_empty_replica_waiting_for_its_snapshot_does_not_vote`), so not twice in term 5.
    assert!(matches!(n2.step(3, 0, stale_vote), Err(Refused::Raft(_))), "voted twice in term 5");
    // A heartbeat committing beyond its (empty) log is refused, not a panic in raft-rs.
    beat.commit = 7;
    assert!(matches!(n2.step(1, 0, beat), Err(Refused::Raft(_))));
}

#[test]
fn a_dropped_replica_leaves_its_term_and_vote_on_disk_and_a_corrupt_one_is_an_error() {
    use moneta::cluster::raft::{GroupWrite, RaftDisk};
    use moneta::storage::keys::RAFT_TOMBSTONE_PREFIX;
    use moneta::storage::raft_rounds::{decode, round_key, round_seq};
    let dir = tempfile::tempdir().unwrap();
    let stored_groups = |store: &moneta::storage::Store| -> Vec<u32> {
        let mut out = Vec::new();
        for item in store.tree().scan_prefix(&round_key(0)[..7]) {
            let (k, v) = item.unwrap();
            out.extend(decode(round_seq(&k).unwrap(), &v).unwrap().into_iter().map(|(g, _)| g));
        }
        out
    };
    {
        let mut store = moneta::storage::Store::open(dir.path()).unwrap();
        // Groups 3 and 4 append in the same rounds: their entries share records.
        for i in 1..=3u64 {
            let round: Vec<GroupWrite> = [3u32, 4]
                .map(|g| {
                    let mut e = raft::prelude::Entry::default();
                    (e.index, e.term, e.data) = (i, 1, vec![g as u8; 8].into());
                    GroupWrite {
                        group: g,
                        entries: vec![e],
                        ..Default::default()
                    }
                })
                .to_vec();
            RaftDisk::write(&mut store, &round).unwrap();
        }
        assert_eq!(stored_groups(&store), [3, 4, 3, 4, 3, 4]);
        let (_, mut rounds) = store.raft_image().unwrap();
        let mut batch = sled::Batch::default();
        store.stage_drop_group(&mut batch, 3, (5, 1), &mut rounds).unwrap();
        store.tree().apply_batch(batch).unwrap();
        store.flush().unwrap();
        // The dropped replica's entries are gone from the records they shared; group 4 keeps
        // its log.
        assert_eq!(stored_groups(&store), [4, 4, 4]);
        let groups = store.raft_groups().unwrap();
        assert!(!groups.contains_key(&3));
        assert_eq!(groups[&4].entries.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2, 3]);
    }
    let store = moneta::storage::Store::open(dir.path()).unwrap();
    assert_eq!(store.raft_tombstones().unwrap(), std::collections::BTreeMap::from([(3, (5, 1))]));
    let mut k = RAFT_TOMBSTONE_PREFIX.to_vec();
    k.extend_from_slice(&4u32.to_be_bytes());
    store.tree().insert(k, &[1u8, 2, 3][..]).unwrap();
    let e = store.raft_tombstones().unwrap_err().to_string();
    assert!(e.contains("not (term, vote)"), "{e}");
}

#[test]
fn a_replica_catching_up_through_its_own_removal_and_its_re_adding_is_kept_and_promoted() {
    // One entry per message and per round: a replica catching up applies its removal and its
    // re-adding in different rounds, as on a busy group.
    let settings = moneta::cluster::raft::RaftSettings {
        max_size_per_msg: 1,
        max_committed_size_per_ready: 1,
        ..Default::default()
    };
    let mut c = SimRaftCluster::with_settings(settings, 11, 3, &std::collections::BTreeMap::from([(0, vec![1, 2, 3])]));
    c.run(300).unwrap();
    let leader = c.leader(0).expect("a leader");
    let out = (1..=3).find(|&n| n != leader).unwrap();
    let rest: Vec<RaftId> = std::iter::once(leader).chain((1..=3).filter(|&n| n != leader && n != out)).collect();
    let all: Vec<RaftId> = rest.iter().copied().chain([out]).collect();
    let voters = |c: &SimRaftCluster| {
        let mut v = c.nodes[&leader].raft.as_ref().unwrap().status(0).unwrap().voters;
        v.sort_unstable();
        v
    };
    propose_n(&mut c, 0, "before", 5);
    // Down, it misses its removal from the group...
    c.crash(out, 0);
    for _ in 0..200 {
        c.reconfigure(leader, 0, &rest);
        c.run(1).unwrap();
    }
    assert_eq!(voters(&c), {
        let mut r = rest.clone();
        r.sort_unstable();
        r
    });
    propose_n(&mut c, 0, "between", 5);
    // ... and its placement back (a learner again) before it returns with its old replica,
    // which then applies its removal, then its re-adding, on the way.
    // (A replica removed in a term is added back only by a leader of a later term: the leader
    // hands over first, so the steps are taken by whichever node leads.)
    c.placed.insert(out, std::collections::BTreeSet::from([0]));
    for _ in 0..20 {
        if let Some(l) = c.leader(0) {
            c.reconfigure(l, 0, &all);
        }
        c.run(1).unwrap();
    }
    c.restart(out).unwrap();
    for _ in 0..600 {
        if let Some(l) = c.leader(0) {
            c.reconfigure(l, 0, &all);
        }
        c.run(1).unwrap();
    }
    assert_eq!(voters(&c), vec![1, 2, 3], "promoted once caught up");
    assert_eq!(c.applied_data(out, 0), c.applied_data(leader, 0));
}

#[test]
fn a_removed_replica_is_told_out_only_once_every_voter_committed_its_removal() {
    let mut c = SimRaftCluster::with_settings(Default::default(), 5, 4, &std::collections::BTreeMap::from([(0, vec![1, 2, 3, 4])]));
    c.run(300).unwrap();
    let leader = c.leader(0).expect("a leader");
    let others: Vec<RaftId> = (1..=4).filter(|&n| n != leader).collect();
    let (gone, slow, third) = (others[0], others[1], others[2]);
    propose_n(&mut c, 0, "before", 3);
    // A voter of the new configuration is down while the removal commits (the old
    // configuration's majority: the leader, the third node and the one removed).
    c.crash(slow, 0);
    let target = vec![leader, slow, third];
    for _ in 0..200 {
        c.reconfigure(leader, 0, &target);
        c.run(1).unwrap();
    }
    let status = c.nodes[&leader].raft.as_ref().unwrap().status(0).unwrap();
    assert!(!status.voters.contains(&gone), "the removal is applied at the leader: {status:?}");
    let told_out = |c: &SimRaftCluster| {
        let (l, led) = c.led(0).expect("the leader's word");
        c.nodes[&gone].raft.as_ref().unwrap().told_out(0, &target, l, &led)
    };
    assert!(!status.conf_settled, "a voter has not committed the removal");
    assert!(!told_out(&c), "the removed replica may still be needed for a vote: kept");
    // Back, it commits the change: now the removed replica goes.
    c.restart(slow).unwrap();
    for _ in 0..300 {
        c.run(1).unwrap();
        if told_out(&c) {
            break;
        }
    }
    assert!(c.nodes[&leader].raft.as_ref().unwrap().status(0).unwrap().conf_settled);
    assert!(told_out(&c), "every voter committed the removal: the removed replica goes");
}

#[test]
fn a_record_damaged_at_rest_fails_the_load_naming_it_and_a_sound_disk_loads() {
    use moneta::cluster::raft::{DiskError, GroupWrite, MemoryDisk, RaftDisk};
    let mut disk = MemoryDisk::default();
    let entries: Vec<raft::prelude::Entry> = (1..=5)
        .map(|i| {
            let mut e = raft::prelude::Entry::default();
            (e.index, e.term) = (i, 1);
            e.data = format!("entry {i}").into_bytes().into();
            e
        })
        .collect();
    let w = GroupWrite {
        group: 2,
        entries,
        ..Default::default()
    };
    disk.write(&[w]).unwrap();
    disk.sync().unwrap();
    assert_eq!(disk.load().unwrap()[&2].entries.len(), 5);
    let (g, index) = disk.corrupt(3).expect("an entry to damage");
    match disk.load() {
        Err(DiskError::Corrupt { location, .. }) => assert_eq!(location, format!("group {g} entry {index}")),
        other => panic!("a damaged record loaded: {other:?}"),
    }
}

#[test]
fn only_the_leader_of_a_group_with_no_other_voter_is_its_sole_voter() {
    // One node: it leads every group and no one else can (reads there need no barrier:
    // `Leadership::reads_here`).
    let mut one = SimRaftCluster::new(3, 1, &GROUPS);
    one.run(300).unwrap();
    for g in GROUPS {
        let s = one.nodes[&1].raft.as_ref().unwrap().status(g).unwrap();
        assert!(s.serving && s.sole, "group {g}: {s:?}");
    }
    // Three voters: no replica is ever the sole voter, its leader included.
    let c = formed(3);
    for g in GROUPS {
        for n in [1, 2, 3] {
            let s = c.nodes[&n].raft.as_ref().unwrap().status(g).unwrap();
            assert!(!s.sole, "group {g} at node {n}: {s:?}");
        }
    }
}

/// Found by the cluster simulator (seed 7101429): a group's preferred leader was a voter whose
/// process had died for good after it had caught up. Its leader, still seeing it caught up,
/// handed leadership to it once per election timeout; raft-rs refuses every proposal while a
/// transfer is under way, so the group took no write and no membership change for good. A
/// leader now hands over only to a replica it has heard from recently.
#[test]
fn a_preferred_leader_that_is_gone_does_not_stop_its_group_taking_writes() {
    let mut c = formed(21);
    let g = GROUPS[0];
    propose_n(&mut c, g, "before", 5);
    c.run(100).unwrap();
    let leader = c.leader(g).unwrap();
    let gone = (1..=3).find(|&n| n != leader).unwrap();
    let last = c.nodes[&leader].raft.as_ref().unwrap().status(g).unwrap().last_index;
    assert_eq!(
        c.nodes[&gone].raft.as_ref().unwrap().status(g).unwrap().last_index,
        last,
        "caught up before it goes"
    );
    c.crash(gone, usize::MAX);
    prefer(&mut c, g, gone);
    c.run(300).unwrap();
    // Every proposal of the next two seconds is taken by the group's leader, and applied.
    let mut refused = 0;
    let mut ids = Vec::new();
    for i in 0..200 {
        match c.leader(g).and_then(|l| c.propose_at(l, g, format!("after-{i}").into_bytes())) {
            Some(id) => ids.push(id),
            None => refused += 1,
        }
        c.run(1).unwrap();
    }
    c.run(100).unwrap();
    assert_eq!(refused, 0, "proposals refused while leadership was being handed to a replica that is gone");
    for id in &ids {
        assert_eq!(c.outcomes.get(id).map(|o| o.1), Some(Outcome::Applied), "proposal {id}");
    }
}

/// Found in review: a purge of entries that carried a destroyed data key waited, in memory
/// only, for the compaction after the round that applied the destruction. A stop in between
/// forgot it, and the entries could stay in round records other groups' entries keep. The purge
/// owed is now recorded in the batch that applies the destruction, loaded again at start, and
/// done (its record deleted) in the batch that stages the compaction.
#[test]
fn a_purge_owed_when_the_node_stops_is_loaded_again_and_done_with_the_compaction() {
    use moneta::cluster::raft::GroupWrite;
    use moneta::storage::raft_rounds::{decode, purges_key, round_key, round_seq};
    use raft::prelude::{Entry, HardState};
    let dir = tempfile::tempdir().unwrap();
    let entry = |g: u32, i: u64| {
        let mut e = Entry::default();
        (e.index, e.term, e.data) = (i, 1, format!("{g}/{i}").into_bytes().into());
        e
    };
    let write = |g: u32, from: u64, n: u64, applied: u64| {
        let mut hs = HardState::default();
        (hs.term, hs.commit) = (1, from + n - 1);
        GroupWrite {
            group: g,
            entries: (from..from + n).map(|i| entry(g, i)).collect(),
            hard_state: Some(hs),
            applied: Some(applied),
            ..Default::default()
        }
    };
    let stored = |store: &moneta::storage::Store, g: u32| -> Vec<u64> {
        let mut out = Vec::new();
        for item in store.tree().scan_prefix(&round_key(0)[..7]) {
            let (k, v) = item.unwrap();
            for (rg, es) in decode(round_seq(&k).unwrap(), &v).unwrap() {
                if rg == g {
                    out.extend(es.iter().map(|e| e.index));
                }
            }
        }
        out
    };
    {
        let store = moneta::storage::Store::open(dir.path()).unwrap();
        let (groups, mut rounds) = store.raft_image().unwrap();
        let mut states = moneta::storage::raft_states::RaftStates::from_persisted(&groups, store.written_seq().unwrap());
        // Groups 0 and 1 share their round records; group 0's entry 3 destroyed a data key,
        // applied in the second round, whose batch also owes the purge. Then the node stops.
        for (round, ws) in [vec![write(0, 1, 2, 0), write(1, 1, 2, 0)], vec![write(0, 3, 2, 3), write(1, 3, 1, 2)]]
            .into_iter()
            .enumerate()
        {
            let mut batch = sled::Batch::default();
            for w in &ws {
                store.stage_raft(&mut batch, w, &mut states, &mut rounds).unwrap();
            }
            if round == 1 {
                rounds.purge(0, 3);
            }
            store.stage_rounds(&mut batch, &mut rounds).unwrap();
            states.stage(&mut batch);
            store.tree().apply_batch(batch).unwrap();
        }
        store.flush().unwrap();
        assert!(
            store.tree().get(purges_key()).unwrap().is_some(),
            "owed in the batch that applied the destruction"
        );
    }
    let store = moneta::storage::Store::open(dir.path()).unwrap();
    let (groups, mut rounds) = store.raft_image().unwrap();
    assert_eq!(rounds.owed(), vec![(0, 3)], "the purge is owed again after the stop");
    assert_eq!(stored(&store, 0), vec![1, 2, 3, 4]);
    // The writer compacts the log past it at start; the batch staging that does the purge.
    let mut states = moneta::storage::raft_states::RaftStates::from_persisted(&groups, store.written_seq().unwrap());
    let mut batch = sled::Batch::default();
    let compaction = GroupWrite {
        group: 0,
        compacted: Some((3, 1)),
        ..Default::default()
    };
    store.stage_raft(&mut batch, &compaction, &mut states, &mut rounds).unwrap();
    store.stage_rounds(&mut batch, &mut rounds).unwrap();
    store.tree().apply_batch(batch).unwrap();
    assert_eq!(stored(&store, 0), vec![4], "entries through the destroying one are gone from every record");
    assert_eq!(stored(&store, 1), vec![1, 2, 3], "the other group's entries stay");
    assert!(rounds.owed().is_empty());
    assert!(store.tree().get(purges_key()).unwrap().is_none(), "nothing owed is recorded any more");
    let (_, reloaded) = store.raft_image().unwrap();
    assert!(reloaded.owed().is_empty());
    // A damaged record of purges is an error naming it.
    store.tree().insert(purges_key(), vec![1, 0, 0]).unwrap();
    let e = store.raft_image().unwrap_err().to_string();
    assert!(e.contains("raft purges record"), "{e}");
}

/// Found in review: raft-rs drops every proposal while leadership is handed over, so an
/// entity's write could be refused and its next one accepted — a hole in its journal. A
/// proposal now ends the hand-over at its leader (the replica taking over was caught up, so its
/// MsgTimeoutNow has left and it campaigns anyway) and is appended in order: what commits of
/// one leader's proposals is always a prefix of them.
#[test]
fn a_proposal_during_a_leadership_transfer_is_appended_in_order_not_dropped() {
    let mut c = formed(22);
    let g = GROUPS[1];
    propose_n(&mut c, g, "before", 3);
    c.run(100).unwrap();
    let leader = c.leader(g).unwrap();
    let to = (1..=3).find(|&n| n != leader).unwrap();
    c.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap().transfer_leader(g, to);
    let first = c.propose_at(leader, g, b"during-0".to_vec());
    let second = c.propose_at(leader, g, b"during-1".to_vec());
    assert!(first.is_some() && second.is_some(), "proposals refused during the transfer");
    c.run(600).unwrap();
    let outcome = |id: Option<u64>| c.outcomes.get(&id.unwrap()).map(|o| o.1);
    // The second commits only with the first before it.
    if outcome(second) == Some(Outcome::Applied) {
        assert_eq!(outcome(first), Some(Outcome::Applied));
    }
    // And the group goes on taking writes wherever its leadership went.
    let ids = propose_n(&mut c, g, "after", 20);
    c.run(100).unwrap();
    assert_eq!(ids.len(), 20);
    for id in &ids {
        assert_eq!(c.outcomes.get(id).map(|o| o.1), Some(Outcome::Applied), "proposal {id}");
    }
}

/// Found by the simulator (five nodes, a leader leaving its group): a replica removed from a
/// group while it was frozen campaigned with its old configuration; another replica of that
/// configuration, dropped and created again empty (a learner waiting for its snapshot), voted
/// for it — an empty log is behind any log — and the two elected a second leader whose log
/// diverged. An empty replica knows nothing of the group, and no election needs its vote (a
/// learner is promoted only once caught up): it does not vote, nor pre-vote.
#[test]
fn an_empty_replica_waiting_for_its_snapshot_does_not_vote() {
    use moneta::cluster::raft::{MultiRaft, RaftSettings, Refused};
    use raft::prelude::MessageType;
    let mut n3 = MultiRaft::new(3, RaftSettings::default(), moneta::cluster::raft::logger::logger(3));
    n3.create_empty_group(0).unwrap();
    for kind in [MessageType::MsgRequestVote, MessageType::MsgRequestPreVote] {
        let mut ask = vote_request(2, 3, 13, 52);
        ask.set_msg_type(kind);
        assert!(matches!(n3.step(2, 0, ask), Err(Refused::Raft(_))), "{kind:?} was stepped");
    }
    let round = n3.ready().expect("a round");
    n3.persisted(round);
    let sent: Vec<_> = n3.take_outbox().into_values().flatten().collect();
    assert!(sent.is_empty(), "an empty replica answered: {sent:?}");
    assert_eq!(n3.status(0).unwrap().term, 0, "nor did the candidate's term reach it");
    // A replica that knows its group's voters votes as raft says.
    let mut n2 = MultiRaft::new(2, RaftSettings::default(), moneta::cluster::raft::logger::logger(2));
    let _ = n2.bootstrap_group(0, &[1, 2, 3]).unwrap();
    let granted = answers(&mut n2, vote_request(1, 2, 5, 10));
    assert!(
        granted.iter().any(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse && !m.reject),
        "{granted:?}"
    );
}

/// Found in review: a leader that is to leave its group handed leadership to a voter that had
/// died — still "replicating", its match index the last index while nothing was appended —
/// again every tick, so an idle group never moved off a node being drained (a write ends such
/// a hand-over, see above, but an idle group has none). A hand-over (and a promotion) now needs
/// the replica to have answered since the leader's last quorum check.
#[test]
fn a_leader_that_is_to_leave_does_not_hand_over_to_a_voter_that_is_gone() {
    let mut c = SimRaftCluster::placed(29, 4, &std::collections::BTreeMap::from([(0, vec![1, 2, 3, 4])]));
    c.run(300).unwrap();
    propose_n(&mut c, 0, "before", 5);
    c.run(100).unwrap();
    let leader = c.leader(0).expect("a leader");
    // The placement without the leader; its first replica (where leadership goes first) dies.
    let target: Vec<RaftId> = (1..=4).filter(|&n| n != leader).collect();
    let gone = target[0];
    c.crash(gone, usize::MAX);
    c.run(200).unwrap();
    // The group is idle: nothing but the membership steps.
    for _ in 0..400 {
        if let Some(l) = c.leader(0) {
            c.reconfigure(l, 0, &target);
        }
        c.run(1).unwrap();
    }
    let now = c.leader(0).expect("the group has a leader");
    assert!(now != leader && now != gone, "leadership went to a live replica of the placement (still {now})");
    let mut voters = c.nodes[&now].raft.as_ref().unwrap().status(0).unwrap().voters;
    voters.sort_unstable();
    assert_eq!(voters, target, "the old leader left the group");
    let id = c.propose_at(now, 0, b"after".to_vec()).expect("the group takes writes");
    c.run(100).unwrap();
    assert_eq!(c.outcomes.get(&id).map(|o| o.1), Some(Outcome::Applied));
}
