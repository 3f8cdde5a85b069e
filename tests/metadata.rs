//! The metadata group on one node: it exists from the first start (a cluster of one is its
//! only voter), applies metadata commands through raft like any group, refuses a command that
//! does not fit (changing nothing), keeps its state across a restart, and a snapshot of it
//! carries that state.

use moneta::actors::journal::AuditJournal;
use moneta::cluster::meta::{MetaCommand, NodeState, VerificationKey};
use moneta::storage::Store;
use moneta::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;

async fn journal(store: &Store) -> AuditJournal {
    AuditJournal::start(store.clone(), 64, Arc::new(Metrics::new())).unwrap()
}

/// Proposes until the metadata group (electing itself at start) takes it.
async fn propose(j: &AuditJournal, cmd: MetaCommand) {
    for _ in 0..100 {
        if j.propose_meta(vec![cmd.clone()]).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the metadata group never took {cmd:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_group_applies_refuses_and_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let j = journal(&store).await;
    let formed = j.meta().expect("a new node holds the metadata group");
    assert_eq!(formed.members.len(), 1);
    let (node_id, me) = formed.members.iter().next().unwrap();
    assert_eq!(me.state, NodeState::Active);
    // Every shard group, then the metadata group itself.
    assert_eq!(formed.placement.len(), store.groups() as usize + 1);
    assert!(
        j.group_status().iter().any(|s| s.group == store.meta_group()),
        "the metadata group is a raft group here"
    );

    let keys = vec![VerificationKey {
        kid: "k1".into(),
        x: "x1".into(),
    }];
    propose(
        &j,
        MetaCommand::PublishKeys {
            node_id: node_id.clone(),
            keys: keys.clone(),
        },
    )
    .await;
    let published = j.meta().unwrap();
    assert_eq!(published.members[node_id].keys, keys);
    assert_eq!(published.version, formed.version + 1);

    // A command that does not fit is committed but refused by every replica alike.
    propose(
        &j,
        MetaCommand::SetState {
            node_id: "ghost".into(),
            state: NodeState::Draining,
        },
    )
    .await;
    assert_eq!(j.meta().unwrap(), published, "a refused command changes nothing");

    // A snapshot of the group carries the state (what a new replica of it installs).
    let snapshot = store.group_snapshot(store.meta_group()).unwrap();
    assert_eq!(moneta::storage::raft_log::meta_in_snapshot(&snapshot).unwrap(), Some(published.clone()));

    // Durable: the state comes back after a restart.
    j.barrier().await.unwrap();
    drop(j);
    // The writer thread ends once its last handle is gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store_again = store.clone();
    let j = journal(&store_again).await;
    assert_eq!(j.meta(), Some(published));
}
