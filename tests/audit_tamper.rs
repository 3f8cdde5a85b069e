//! The audit chain detects tampering: an edited, deleted, reordered or inserted record, and a
//! truncated or extended tail of a group's chain — both through `Store::verify_audit` and the offline CLI
//! `moneta audit verify`, which names the first bad entry.

use moneta::domain::audit::{AuditRecord, Outcome};
use moneta::domain::time::Timestamp;
use moneta::storage::audit_log::{split_value, ChainHead};
use moneta::storage::store::WriteSet;
use moneta::storage::{codec, keys, Store};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const ENTRIES: u64 = 8;

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        seq: 0,
        group: 0,
        at: Timestamp(1_700_000_000_000 + i as i64),
        actor: format!("usr_{i:032x}"),
        action: "portfolio.deposit".into(),
        entity: format!("portfolio/usr_{i:032x}"),
        request_id: format!("req_{i}"),
        outcome: Outcome::Ok,
        details: BTreeMap::from([("amount".to_string(), format!("{i}.00"))]),
    }
}

/// A data folder whose chain holds `ENTRIES` records written in two group commits.
fn build(dir: &Path) -> Store {
    let store = Store::open(dir).unwrap();
    // Audit records alone are sealed on the jobs shard's group (group 0).
    let mut chain = store.chain_heads().unwrap();
    let mut first = vec![WriteSet {
        audit: (0..5).map(record).collect(),
        ..WriteSet::default()
    }];
    store.write_cycle(&mut first, &mut chain).unwrap();
    let mut second = vec![WriteSet {
        audit: (5..ENTRIES).map(record).collect(),
        ..WriteSet::default()
    }];
    store.write_cycle(&mut second, &mut chain).unwrap();
    store.flush().unwrap();
    store
}

fn raw(store: &Store, seq: u64) -> Vec<u8> {
    store.tree().get(keys::audit_key(0, seq)).unwrap().unwrap().to_vec()
}

fn edited_value(store: &Store, seq: u64) -> Vec<u8> {
    let value = raw(store, seq);
    let (bytes, head) = split_value(&value).unwrap();
    let mut r: AuditRecord = codec::decode(bytes).unwrap();
    r.details.insert("amount".into(), "1000000.00".into());
    let mut v = codec::encode(&r);
    v.extend_from_slice(&head);
    v
}

fn verify_cli(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moneta"))
        .args(["audit", "verify"])
        .env("MONETA_NODE_DATA_DIR", dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn an_untouched_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let report = store.verify_audit();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, ENTRIES);
    drop(store);
    let (ok, out) = verify_cli(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{ENTRIES} entries")), "{out}");
}

fn assert_broken_at(dir: &Path, store: Store, entry: u64) {
    let report = store.verify_audit();
    assert!(!report.ok, "tampering went unnoticed: {report:?}");
    assert_eq!(report.first_bad_entry, Some(entry), "{report:?}");
    store.flush().unwrap();
    drop(store);
    let (ok, out) = verify_cli(dir);
    assert!(!ok, "the CLI passed a tampered chain: {out}");
    assert!(out.contains(&format!("BROKEN at entry {entry}")), "{out}");
}

#[test]
fn an_edited_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let v = edited_value(&store, 3);
    store.tree().insert(keys::audit_key(0, 3), v).unwrap();
    assert_broken_at(dir.path(), store, 3);
}

#[test]
fn a_deleted_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    store.tree().remove(keys::audit_key(0, 4)).unwrap();
    assert_broken_at(dir.path(), store, 4);
}

#[test]
fn reordered_records_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let (a, b) = (raw(&store, 2), raw(&store, 3));
    store.tree().insert(keys::audit_key(0, 2), b).unwrap();
    store.tree().insert(keys::audit_key(0, 3), a).unwrap();
    assert_broken_at(dir.path(), store, 2);
}

#[test]
fn an_inserted_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    // Shift entries 5.. up by one and forge a new entry 5, chained as if it belonged there.
    for seq in (5..ENTRIES).rev() {
        let v = raw(&store, seq);
        store.tree().insert(keys::audit_key(0, seq + 1), v).unwrap();
    }
    let mut forged = record(99);
    forged.seq = 5;
    let prev_head: [u8; 32] = split_value(&raw(&store, 4)).unwrap().1;
    let mut chain = ChainHead { entries: 5, head: prev_head };
    let value = chain.append(&forged);
    store.tree().insert(keys::audit_key(0, 5), value).unwrap();
    // The forged entry itself chains correctly; the next one no longer does.
    assert_broken_at(dir.path(), store, 6);
}

#[test]
fn a_truncated_or_extended_tail_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    store.tree().remove(keys::audit_key(0, ENTRIES - 1)).unwrap();
    assert_broken_at(dir.path(), store, ENTRIES - 1);

    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let last: [u8; 32] = split_value(&raw(&store, ENTRIES - 1)).unwrap().1;
    let mut chain = ChainHead { entries: ENTRIES, head: last };
    let mut extra = record(100);
    extra.seq = ENTRIES;
    let value = chain.append(&extra);
    store.tree().insert(keys::audit_key(0, ENTRIES), value).unwrap();
    assert_broken_at(dir.path(), store, ENTRIES);
}

#[test]
fn every_chain_head_is_one_record_a_folder_of_per_group_heads_moves_to_it_and_a_deleted_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    // A second group's chain, sealed in the same cycle as the jobs group's.
    let shard_of_group_1 = (0..moneta::domain::ids::SHARD_COUNT)
        .find(|&s| moneta::domain::ids::group_of(s, store.groups()) == 1)
        .unwrap();
    let mut chain = store.chain_heads().unwrap();
    let mut both = vec![
        WriteSet {
            audit: vec![record(200)],
            ..WriteSet::default()
        },
        WriteSet {
            audit: vec![record(201), record(202)],
            shard: Some(shard_of_group_1),
            ..WriteSet::default()
        },
    ];
    store.write_cycle(&mut both, &mut chain).unwrap();
    let head_keys: Vec<Vec<u8>> = store.tree().scan_prefix(keys::AUDIT_HEAD_PREFIX).keys().map(|k| k.unwrap().to_vec()).collect();
    assert_eq!(head_keys, [keys::AUDIT_HEADS_KEY.to_vec()], "one record holds every group's head");
    let heads = store.chain_heads().unwrap();
    assert_eq!((heads[&0].entries, heads[&1].entries), (ENTRIES + 1, 2));
    assert!(store.verify_audit().ok);
    // A folder written before the one record: each group's head under a key of its own.
    store.tree().remove(&keys::AUDIT_HEADS_KEY[..]).unwrap();
    for (g, h) in &heads {
        store.tree().insert(keys::audit_head_key(*g), codec::encode(h)).unwrap();
    }
    assert_eq!(store.chain_heads().unwrap(), heads, "read as before");
    assert!(store.verify_audit().ok);
    assert_eq!(store.migrate_audit_heads().unwrap(), 2);
    let head_keys: Vec<Vec<u8>> = store.tree().scan_prefix(keys::AUDIT_HEAD_PREFIX).keys().map(|k| k.unwrap().to_vec()).collect();
    assert_eq!(head_keys, [keys::AUDIT_HEADS_KEY.to_vec()]);
    assert_eq!(store.chain_heads().unwrap(), heads);
    // Deleting the record leaves every chain without its recorded head: detected.
    store.tree().remove(&keys::AUDIT_HEADS_KEY[..]).unwrap();
    let report = store.verify_audit();
    assert!(!report.ok);
    assert!(report.problem.unwrap().contains("recorded chain head is missing"));
}

#[test]
fn a_snapshot_carries_its_groups_chain_head_and_a_replica_installing_it_keeps_it_in_the_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let leader = build(dir.path());
    let head = leader.chain_head(0).unwrap().unwrap();
    let snapshot = leader.group_snapshot(0).unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = codec::decode(&snapshot).unwrap();
    assert!(
        pairs.contains(&(keys::audit_head_key(0), codec::encode(&head))),
        "the snapshot holds the group's head under its own key"
    );
    // A replica elsewhere with another group's chain installs it.
    let other = tempfile::tempdir().unwrap();
    let replica = Store::open(other.path()).unwrap();
    let shard_of_group_1 = (0..moneta::domain::ids::SHARD_COUNT)
        .find(|&s| moneta::domain::ids::group_of(s, replica.groups()) == 1)
        .unwrap();
    let mut chains = replica.chain_heads().unwrap();
    replica
        .write_cycle(
            &mut [WriteSet {
                audit: vec![record(300)],
                shard: Some(shard_of_group_1),
                ..WriteSet::default()
            }],
            &mut chains,
        )
        .unwrap();
    let mut batch = sled::Batch::default();
    let mut cycle = moneta::storage::store::Cycle::new(replica.chain_heads().unwrap());
    let installed = replica.stage_install(&mut batch, 0, &snapshot, &mut cycle).unwrap();
    assert_eq!(installed, Some(head));
    cycle.chains.insert(0, head);
    assert!(cycle.heads_moved);
    replica.stage_heads(&mut batch, &cycle.chains);
    replica.tree().apply_batch(batch).unwrap();
    let heads = replica.chain_heads().unwrap();
    assert_eq!((heads[&0], heads[&1].entries), (head, 1));
    let head_keys = replica.tree().scan_prefix(keys::AUDIT_HEAD_PREFIX).count();
    assert_eq!(head_keys, 1, "no per-group head key comes back with the snapshot");
    let report = replica.verify_audit();
    assert!(report.ok, "{report:?}");
}

#[test]
fn a_running_node_holds_the_folder_and_the_cli_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let (ok, out) = verify_cli(dir.path());
    assert!(!ok);
    assert!(out.contains("in use"), "{out}");
    drop(store);
}

#[test]
fn an_empty_chain_is_left_out_of_the_report_but_a_head_past_an_empty_chain_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path());
    let before = store.verify_audit();
    assert!(before.ok, "{before:?}");
    // A replica keeps a group's head from a snapshot of a group with no record yet (the
    // metadata group's, on a node that joined): the same records give the same report.
    let mut chains = store.chain_heads().unwrap();
    chains.insert(7, ChainHead::default());
    let mut batch = sled::Batch::default();
    store.stage_heads(&mut batch, &chains);
    store.tree().apply_batch(batch).unwrap();
    let after = store.verify_audit();
    assert!(after.ok, "{after:?}");
    assert_eq!(after.head_hash, before.head_hash, "an empty chain changes nothing");
    assert!(after.groups.iter().all(|g| g.group != 7), "{:?}", after.groups);
    // A head recorded past a chain that holds nothing is a truncation: still reported.
    chains.insert(7, ChainHead { entries: 3, head: [9u8; 32] });
    let mut batch = sled::Batch::default();
    store.stage_heads(&mut batch, &chains);
    store.tree().apply_batch(batch).unwrap();
    let report = store.verify_audit();
    assert!(!report.ok);
    assert_eq!(report.bad_group, Some(7), "{report:?}");
}
