//! Every write goes through the journal under its shard's prefix: entity state, request memory,
//! and the shard records (erasure schedule, review queue, regulatory records, catalog, broker
//! confirmations, alerts, job progress, data keys). A backup taken from the running node's
//! consistent view carries each of them, a restore brings each back, and each lies in its
//! shard's key range — what lets a shard move as one range copy.

use moneta::actors::RequestMeta;
use moneta::adapters::broker::{Broker, SimulatedBroker};
use moneta::cluster::router::RouterSettings;
use moneta::cluster::Router;
use moneta::config::Config;
use moneta::domain::ids::{EntityId, EntityKind};
use moneta::domain::portfolio::{IdemTag, Order, Portfolio, PortfolioCommand, Side};
use moneta::domain::time::Timestamp;
use moneta::storage::keys::{self, ShardRecord};
use moneta::storage::records::{self, user_shard};
use moneta::storage::store::{CatalogEntry, PendingErasure, RegulatoryRecord};
use moneta::storage::vault::Vault;
use moneta::storage::{backup, Store};
use moneta::telemetry::Metrics;
use rust_decimal::Decimal;
use std::sync::Arc;

const USER: &str = "usr_records";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_record_is_group_committed_in_its_shard_and_comes_back_from_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = Config::load_with_env(None, &[]).unwrap();
    let store = Store::open(&data).unwrap();
    let router = Router::start(store.clone(), Arc::new(Metrics::new()), RouterSettings::from_config(&config))
        .await
        .unwrap();
    let journal = router.journal().clone();

    // Entity state and request memory.
    let deposit = PortfolioCommand::Deposit {
        amount: Decimal::from(10),
        idem: IdemTag {
            key: "k".into(),
            fingerprint: [1; 32],
        },
    };
    router.execute::<Portfolio>(USER, deposit, RequestMeta::new(USER)).await.unwrap();
    // Each shard record, through the journal.
    let pending = PendingErasure {
        due_at: Timestamp(5),
        email_hash: "ab".repeat(32),
        replay: false,
    };
    journal.write(records::schedule_erasure(USER, &pending)).await.unwrap();
    journal.write(records::set_review("adv_1", USER, true)).await.unwrap();
    let regulatory = RegulatoryRecord {
        expires_at: Timestamp(9),
        key_id: format!("retention:{USER}"),
        sealed: vec![1, 2, 3],
    };
    journal.write(records::put_regulatory(USER, &regulatory)).await.unwrap();
    let entry = CatalogEntry { drift: 0.01, volatility: 0.2 };
    journal.write(records::put_catalog("RECO", &entry)).await.unwrap();
    journal.write(records::put_group_job(5, "eod/last_close", "2026-12-03")).await.unwrap();
    journal.write(records::alerted(records::user_shard(USER), "missing/ord_x")).await.unwrap();
    let master = [3u8; 32];
    let vault = Vault::new(&store, &master).unwrap();
    journal.write(vault.new_data_key(USER).unwrap().unwrap()).await.unwrap();
    let broker = SimulatedBroker::new(store.clone(), journal.clone(), Decimal::ZERO);
    let order = Order {
        order_id: "ord_records".into(),
        symbol: "RECO".into(),
        side: Side::Buy,
        quantity: Decimal::ONE,
        price: Decimal::from(10),
        fees: Decimal::ONE,
        cash_effect: Decimal::from(-11),
        realised_pnl: Decimal::ZERO,
        executed_at: Timestamp(7),
    };
    broker.execute(USER, &order, None).await.unwrap();
    let confirmation = moneta::domain::reconcile::Confirmation::of(USER, &order);

    // A backup from the running node's consistent view (on the journal's writer thread).
    let keys_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let file = dir.path().join("backup.bin");
    let key = [4u8; 32];
    let (f, k, kd) = (file.clone(), key, keys_dir.clone());
    let digest = journal.exclusive(move |s| backup::write_backup_file(s, &kd, &k, &f)).await.unwrap().unwrap();
    router.drain().await.unwrap();

    let restored_dir = dir.path().join("restored");
    assert_eq!(
        backup::restore(&file, &key, &restored_dir, &dir.path().join("restored-secrets")).unwrap(),
        digest
    );
    let restored = Store::open(&restored_dir).unwrap();

    // Every kind came back.
    let portfolio = restored.load::<Portfolio>(&EntityId::new(EntityKind::Portfolio, USER)).unwrap();
    assert_eq!(portfolio.state.cash, Decimal::from(10));
    assert_eq!(portfolio.requests.len(), 1, "the request memory is in the backup");
    assert_eq!(restored.erasures().unwrap(), vec![(USER.to_string(), pending)]);
    assert_eq!(restored.review_queue().unwrap(), vec![("adv_1".to_string(), USER.to_string())]);
    assert_eq!(restored.regulatory(USER).unwrap(), Some(regulatory));
    assert_eq!(restored.catalog().unwrap(), vec![("RECO".to_string(), entry)]);
    assert_eq!(restored.group_job(5, "eod/last_close").unwrap().as_deref(), Some("2026-12-03"));
    assert!(restored.is_alerted(records::user_shard(USER), "missing/ord_x").unwrap());
    assert!(Vault::new(&restored, &master).unwrap().has_data_key(USER).unwrap());
    let restored_journal = moneta::actors::journal::AuditJournal::start(restored.clone(), 64, Arc::new(Metrics::new())).unwrap();
    let broker_after = SimulatedBroker::new(restored.clone(), restored_journal, Decimal::ZERO);
    assert_eq!(
        broker_after.confirmations(&moneta::storage::scope::Groups::All).unwrap(),
        vec![Ok(confirmation)]
    );

    // Each lies in its shard's range: the user's, the instrument's, the group's.
    let in_shard = |shard: u16, record: ShardRecord, id: &str| {
        let k = keys::shard_record_key(shard, record, id);
        let (lo, hi) = keys::shard_range(shard);
        assert!(k.as_slice() >= lo.as_slice() && k.as_slice() < hi.as_slice());
        assert!(restored.tree().contains_key(&k).unwrap(), "{record:?} {id} is in shard {shard}");
    };
    let u = user_shard(USER);
    in_shard(u, ShardRecord::Erasure, USER);
    in_shard(u, ShardRecord::Review, "adv_1");
    in_shard(u, ShardRecord::Regulatory, USER);
    in_shard(u, ShardRecord::DataKey, USER);
    in_shard(u, ShardRecord::Confirmation, "ord_records");
    in_shard(records::catalog_shard(), ShardRecord::Catalog, "RECO");
    in_shard(records::group_shard(5), ShardRecord::Job, "eod/last_close");
    in_shard(u, ShardRecord::Alerted, "missing/ord_x");
    // Nothing lives outside the one tree (no side trees a backup or a shard move could miss).
    assert_eq!(store.tree_names(), ["state"], "the running node wrote one tree");
    assert_eq!(restored.tree_names(), ["state"]);
    // Every key is an entity's, a shard record, node-wide (the audit chain), or the node's
    // raft logs.
    for item in restored.tree().iter().keys() {
        let k = item.unwrap();
        assert!(
            k.starts_with(&keys::NODE_PREFIX) || k.starts_with(&keys::RAFT_PREFIX) || keys::is_shard_record(&k) || keys::parse_key(&k).is_some(),
            "unplaced key {k:?}"
        );
    }
}

#[test]
fn a_data_folder_of_an_earlier_layout_is_refused_not_half_read() {
    let dir = tempfile::tempdir().unwrap();
    // An earlier version kept the wrapped data keys in a tree of their own.
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.open_tree("data_keys").unwrap().insert("usr_old", b"wrapped".to_vec()).unwrap();
        db.flush().unwrap();
    }
    match Store::open(dir.path()) {
        Err(e) => assert!(e.to_string().contains("earlier version"), "{e}"),
        Ok(_) => panic!("an earlier layout must not open"),
    }
    // A new folder opens, and opens again.
    let fresh = tempfile::tempdir().unwrap();
    drop(Store::open(fresh.path()).unwrap());
    let store = Store::open(fresh.path()).unwrap();
    // Another layout version is named.
    store.tree().insert(keys::LAYOUT_KEY, &7u32.to_be_bytes()).unwrap();
    store.flush().unwrap();
    drop(store);
    match Store::open(fresh.path()) {
        Err(e) => assert!(e.to_string().contains("layout"), "{e}"),
        Ok(_) => panic!("another layout must not open"),
    }
}

/// A broker confirmation is written once: where write sets are applied, a put over one the
/// tree holds, or one an earlier set of the same cycle put, is dropped (the broker's ledger keeps
/// an order's first execution without reading it on the request path). Other keys: last wins.
#[test]
fn a_confirmation_is_written_once_where_the_log_is_applied() {
    use moneta::storage::store::WriteSet;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let shard = user_shard(USER);
    let confirmation = keys::shard_record_key(shard, ShardRecord::Confirmation, "ord_once");
    let job = keys::shard_record_key(shard, ShardRecord::Job, "job_last");
    let set = |k: &[u8], v: &str| WriteSet {
        puts: vec![(k.to_vec(), v.as_bytes().to_vec())],
        ..Default::default()
    };
    let mut chains = store.chain_heads().unwrap();
    // One cycle: two sets put the same confirmation, then the same job record.
    let mut cycle = vec![set(&confirmation, "first"), set(&confirmation, "second"), set(&job, "a"), set(&job, "b")];
    store.write_cycle(&mut cycle, &mut chains).unwrap();
    let get = |k: &[u8]| store.tree().get(k).unwrap().map(|v| String::from_utf8(v.to_vec()).unwrap());
    assert_eq!(get(&confirmation).as_deref(), Some("first"), "the first put of a cycle stands");
    assert_eq!(get(&job).as_deref(), Some("b"), "any other record: the last put stands");
    // A later cycle: the confirmation is applied already.
    store.write_cycle(&mut [set(&confirmation, "retry"), set(&job, "c")], &mut chains).unwrap();
    assert_eq!(get(&confirmation).as_deref(), Some("first"), "a later put changes nothing");
    assert_eq!(get(&job).as_deref(), Some("c"));
    assert!(keys::is_write_once(&confirmation) && !keys::is_write_once(&job));
}

/// A write set is one entry of one group's log: one that writes a node-wide record (the
/// membership, the number of groups) or keys of two groups is corrupt where it is applied —
/// an error, and nothing of its cycle written — not a debug assertion.
#[test]
fn a_write_set_outside_its_group_is_refused_where_it_is_applied_and_nothing_is_written() {
    use moneta::domain::ids::{group_of, SHARD_COUNT};
    use moneta::storage::store::{StoreError, WriteSet};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let set = |puts: Vec<(Vec<u8>, Vec<u8>)>| WriteSet { puts, ..Default::default() };
    let shard = user_shard(USER);
    let job = keys::shard_record_key(shard, ShardRecord::Job, "job_misplaced");
    let good = keys::shard_record_key(shard, ShardRecord::Job, "job_good");
    let other_shard = (0..SHARD_COUNT)
        .find(|&s| group_of(s, store.groups()) != group_of(shard, store.groups()))
        .unwrap();
    let elsewhere = keys::shard_record_key(other_shard, ShardRecord::Job, "job_elsewhere");
    let groups_before = store.tree().get(keys::GROUPS_KEY).unwrap();
    let misplaced = [
        (keys::MEMBERSHIP_KEY.to_vec(), b"forged".to_vec()),
        (keys::GROUPS_KEY.to_vec(), 7u32.to_be_bytes().to_vec()),
        (elsewhere.clone(), b"b".to_vec()),
    ];
    let mut chains = store.chain_heads().unwrap();
    for bad in misplaced {
        let puts = vec![(job.clone(), b"a".to_vec()), bad];
        assert!(set(puts.clone()).misplaced(store.groups()).is_some());
        // A good set first in the same cycle: the cycle is one batch, refused as a whole.
        let mut cycle = vec![set(vec![(good.clone(), b"g".to_vec())]), set(puts)];
        let e = store.write_cycle(&mut cycle, &mut chains).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }
    for k in [&good, &job, &elsewhere] {
        assert!(store.tree().get(k).unwrap().is_none(), "nothing of a refused cycle is written");
    }
    assert!(store.tree().get(keys::MEMBERSHIP_KEY).unwrap().is_none());
    assert_eq!(store.tree().get(keys::GROUPS_KEY).unwrap(), groups_before);
    // A set within its group is written.
    store.write_cycle(&mut [set(vec![(job.clone(), b"a".to_vec())])], &mut chains).unwrap();
    assert!(store.tree().get(&job).unwrap().is_some());
}

/// A snapshot a peer sends that the store cannot install — bytes that do not decode, or a key
/// outside the group — is refused where it arrives, and counted; the group and the node's other
/// groups go on taking writes. Before, raft took it (a higher term, this replica in its
/// configuration) and the round that installed it failed the writer: every group of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_installed_is_refused_on_arrival_and_the_node_goes_on() {
    use moneta::actors::journal::AuditJournal;
    use moneta::domain::ids::{group_of, SHARD_COUNT};
    use moneta::storage::store::WriteSet;
    use raft::prelude::{Message, MessageType, Snapshot};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let journal = AuditJournal::start(store.clone(), 64, metrics.clone()).unwrap();
    let shard_in = |g: u32| (0..SHARD_COUNT).find(|&s| group_of(s, store.groups()) == g).unwrap();
    let write = |g: u32, name: &str| {
        let shard = shard_in(g);
        WriteSet {
            shard: Some(shard),
            puts: vec![(keys::shard_record_key(shard, ShardRecord::Job, name), b"x".to_vec())],
            ..Default::default()
        }
    };
    // Until the node leads its groups (it elects itself at start).
    let mut led = false;
    for _ in 0..200 {
        if journal.write(write(0, "job_first")).await.is_ok() {
            led = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(led, "the node never led group 0");

    let me = journal.raft_id();
    let peer = me + 1;
    let outside = moneta::storage::codec::encode(&vec![(keys::MEMBERSHIP_KEY.to_vec(), b"forged".to_vec())]);
    let refused_before = journal.refused_messages();
    for data in [b"junk".to_vec(), outside] {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        snapshot.mut_metadata().index = 10_000;
        snapshot.mut_metadata().term = 1_000;
        snapshot.mut_metadata().mut_conf_state().set_voters(vec![me, peer]);
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = peer;
        m.to = me;
        m.term = 1_000;
        m.set_snapshot(snapshot);
        journal.deliver(peer, vec![(0, m)]);
    }
    for _ in 0..200 {
        if journal.refused_messages() >= refused_before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(journal.refused_messages(), refused_before + 2, "both snapshots refused on arrival");
    for g in [0, 1] {
        tokio::time::timeout(Duration::from_secs(10), journal.write(write(g, "job_after")))
            .await
            .expect("a write is answered")
            .unwrap_or_else(|e| panic!("group {g} still takes writes: {e}"));
    }
    assert!(store.tree().get(keys::MEMBERSHIP_KEY).unwrap().is_none(), "nothing of the snapshot is written");
}

/// A damaged record of the last day closed is reported and counted (it was read as "never
/// closed" and nothing said), and the close that follows writes it whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_of_the_last_close_is_counted_and_the_next_close_mends_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("MONETA_NODE_DATA_DIR".to_string(), dir.path().join("data").display().to_string()),
        ("MONETA_GDPR_ERASURE_LIST".to_string(), dir.path().join("erasures").display().to_string()),
    ];
    let config = Config::load_with_env(None, &env).unwrap();
    let state = moneta::node::open_state(&config).await.unwrap();
    let services = &state.services;
    let store = services.router.store();
    let corrupt = || {
        services
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("moneta_corrupt_records_total ").map(|v| v.parse::<f64>().unwrap()))
            .unwrap()
    };
    // Bytes that do not decode (group 0), a string that is not a date (group 1).
    for (group, damage) in [(0, vec![0xff, 0xff, 0xff]), (1, moneta::storage::codec::encode(&"not a date".to_string()))] {
        let before = corrupt();
        let key = keys::shard_record_key(records::group_shard(group), ShardRecord::Job, "eod/last_close");
        store.tree().insert(key, damage).unwrap();
        let date = moneta::domain::time::Date::parse("2026-12-03").unwrap();
        let scope = moneta::storage::scope::Groups::only([group]);
        moneta::workflows::end_of_day::close_day(services, date, &scope).await.unwrap();
        assert_eq!(corrupt(), before + 1.0, "a damaged last-close record is counted");
        assert_eq!(
            store.group_job(group, "eod/last_close").unwrap().as_deref(),
            Some("2026-12-03"),
            "the close mends it"
        );
    }
}
