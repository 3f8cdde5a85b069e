//! The actor layer in-process: supervision (restart after a panic with state intact, siblings
//! untouched), passivation and reactivation, group commit sharing flushes, idempotent replay
//! through the router, and corrupt records reported instead of panicking the node.

use moneta::actors::RequestMeta;
use moneta::cluster::router::RouterSettings;
use moneta::cluster::{RouteError, RouteFailure, Router};
use moneta::config::Config;
use moneta::domain::portfolio::{IdemTag, Portfolio, PortfolioCommand, PortfolioRejection, PortfolioReply};
use moneta::domain::queries::Cash;
use moneta::storage::{keys, Store};
use moneta::telemetry::Metrics;
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Duration;

fn settings(idle: Duration) -> RouterSettings {
    let config = Config::load_with_env(None, &[]).unwrap();
    RouterSettings {
        idle_timeout: idle,
        ..RouterSettings::from_config(&config)
    }
}

async fn router(dir: &std::path::Path, idle: Duration) -> (Router, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(dir).unwrap();
    (Router::start(store, metrics.clone(), settings(idle)).await.unwrap(), metrics)
}

fn deposit(amount: i64, key: &str) -> PortfolioCommand {
    PortfolioCommand::Deposit {
        amount: Decimal::from(amount),
        idem: IdemTag {
            key: key.into(),
            fingerprint: [amount as u8; 32],
        },
    }
}

/// A new request (a fresh request id, as the gateway makes one per request).
fn meta() -> RequestMeta {
    RequestMeta::new("usr_test")
}

/// Reads a counter or gauge (summing its label sets) from the Prometheus text.
fn metric_sum(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The portfolio `user` as storage holds it.
async fn stored(router: &Router, user: &str) -> moneta::storage::store::Loaded<Portfolio> {
    let store = router.store().clone();
    let id = moneta::domain::ids::EntityId::new(moneta::domain::ids::EntityKind::Portfolio, user);
    tokio::task::spawn_blocking(move || store.load::<Portfolio>(&id)).await.unwrap().unwrap()
}

/// Waits (at most 5 s) until the entity's memory holds `cash` for `user`: its command was
/// decided, whatever became of its write.
async fn decided(router: &Router, user: &str, cash: i64) -> bool {
    for _ in 0..500 {
        if router.inspect::<Portfolio>(user).await.unwrap().1.cash == Decimal::from(cash) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// An entity applies a decision to memory before its write is durable. When the write is not
/// committed (raft dropped the proposal), that memory must never answer anyone: the entity is
/// loaded again from storage before its next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_whose_write_did_not_commit_answers_nothing_from_it_and_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path(), Duration::from_secs(300)).await;
    router.execute::<Portfolio>("usr_p", deposit(100, "p1"), meta()).await.unwrap();
    let first = router.activation::<Portfolio>("usr_p").await.unwrap();
    router.journal().debug_refuse_commits(1);
    let again = meta();
    // The first write of it is refused; whatever the caller hears, the request is carried out
    // once, and by an activation loaded from storage.
    let _ = router.execute::<Portfolio>("usr_p", deposit(5, "p2"), again.clone()).await;
    assert_eq!(
        router.execute::<Portfolio>("usr_p", deposit(5, "p2"), again).await.unwrap(),
        PortfolioReply::Cash { cash: Decimal::from(105) }
    );
    // What the caller was told is what storage holds.
    let loaded = stored(&router, "usr_p").await;
    assert_eq!((loaded.seq, loaded.state.cash), (2, Decimal::from(105)), "stored as answered");
    assert_ne!(router.activation::<Portfolio>("usr_p").await.unwrap(), first, "loaded again");
}

/// Found in review: a request sent again while its first write was still in flight was
/// answered, from the entity's memory, once the writes before it were done — whether or not
/// they committed. The first write then failed, and the caller had been told of a deposit
/// storage never held. A replay now answers only if no earlier write of the entity failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_while_its_write_is_in_flight_is_not_answered_if_that_write_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path(), Duration::from_secs(300)).await;
    router.execute::<Portfolio>("usr_q", deposit(100, "q1"), meta()).await.unwrap();
    // The writer holds still: the deposit below is decided, its write not yet taken.
    let release = router.journal().debug_pause_writer();
    router.journal().debug_refuse_commits(1);
    let again = meta();
    let first = tokio::spawn({
        let (router, again) = (router.clone(), again.clone());
        async move { router.execute::<Portfolio>("usr_q", deposit(5, "q2"), again).await }
    });
    assert!(decided(&router, "usr_q", 105).await, "the deposit was decided in memory");
    // The same request again (a retry after a lost answer), while the first write waits.
    let replay = tokio::spawn({
        let router = router.clone();
        async move {
            let answer = router.execute::<Portfolio>("usr_q", deposit(5, "q2"), again).await;
            // What storage holds when the answer comes.
            (answer, stored(&router, "usr_q").await.state.cash)
        }
    });
    let mut replayed = false;
    for _ in 0..500 {
        if metric_sum(&metrics, "moneta_request_replays_total") >= 1.0 {
            replayed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(replayed, "the second one was found a replay");
    // The first write is refused (as raft drops a proposal). The router sends both again
    // (same request id): the deposit is carried out once, by an activation loaded from
    // storage, and whoever is told it was done is told so once storage holds it.
    release.send(()).unwrap();
    let (first, (replay, stored_then)) = (first.await.unwrap(), replay.await.unwrap());
    let done = PortfolioReply::Cash { cash: Decimal::from(105) };
    assert_eq!(replay.unwrap(), done);
    assert_eq!(stored_then, Decimal::from(105), "the replay was answered before storage held what it replays");
    assert_eq!(first.unwrap(), done);
    let loaded = stored(&router, "usr_q").await;
    assert_eq!((loaded.seq, loaded.state.cash), (2, Decimal::from(105)), "stored once");
}

/// A read waits until what the entity applied before it is durable. When that write fails
/// instead, the read is not left waiting until the entity is stopped for idleness: it hears at
/// once, and the router asks again of the activation loaded from storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_behind_a_write_that_fails_is_answered_from_storage_without_waiting_for_idleness() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path(), Duration::from_secs(300)).await;
    router.execute::<Portfolio>("usr_r", deposit(100, "r1"), meta()).await.unwrap();
    let release = router.journal().debug_pause_writer();
    router.journal().debug_refuse_commits(1);
    let write = tokio::spawn({
        let router = router.clone();
        async move { router.execute::<Portfolio>("usr_r", deposit(5, "r2"), meta()).await }
    });
    assert!(decided(&router, "usr_r", 105).await, "the deposit was decided in memory");
    let read = tokio::spawn({
        let router = router.clone();
        async move { router.query::<Portfolio, _>("usr_r", Cash).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Its caller gives up (no retry comes to stop the entity), then the write is refused.
    write.abort();
    release.send(()).unwrap();
    let read = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the read is answered, not left waiting for the entity to go idle")
        .unwrap();
    // Whatever the read says, it is what storage holds: the deposit was refused, or carried
    // out again by the router under its request id before the read was served.
    let cash = read.unwrap();
    let stored = stored(&router, "usr_r").await;
    assert!(
        cash == Decimal::from(100) || cash == stored.state.cash,
        "read {cash}, stored {}",
        stored.state.cash
    );
}

/// Found in review: an entity stayed in memory when its group's leadership went and came
/// back, and its writes could even be forwarded to another leader. Another leader may have
/// written in between: an entity is now used only in the term it was loaded in (its writes
/// fenced to that term), and loaded again in a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_loaded_in_one_leadership_term_is_loaded_again_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path(), Duration::from_secs(300)).await;
    router.execute::<Portfolio>("usr_t", deposit(100, "t1"), meta()).await.unwrap();
    let first = router.activation::<Portfolio>("usr_t").await.unwrap();
    let id = moneta::domain::ids::EntityId::new(moneta::domain::ids::EntityKind::Portfolio, "usr_t");
    let group = moneta::domain::ids::group_of(id.shard(), router.store().groups());
    let journal = router.journal();
    let term = journal.serving_term(group).expect("served");
    journal.debug_new_term(group);
    let mut moved = false;
    for _ in 0..500 {
        if journal.serving_term(group).is_some_and(|t| t > term) {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(moved, "a new term is served");
    let again = meta();
    let _ = router.execute::<Portfolio>("usr_t", deposit(5, "t2"), again.clone()).await;
    assert_eq!(
        router.execute::<Portfolio>("usr_t", deposit(5, "t2"), again).await.unwrap(),
        PortfolioReply::Cash { cash: Decimal::from(105) }
    );
    assert_ne!(router.activation::<Portfolio>("usr_t").await.unwrap(), first, "loaded again in the new term");
    assert_eq!(router.query::<Portfolio, _>("usr_t", Cash).await.unwrap(), Decimal::from(105));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_entity_restarts_from_storage_and_siblings_never_notice() {
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path(), Duration::from_secs(300)).await;
    router.execute::<Portfolio>("usr_a", deposit(100, "a1"), meta()).await.unwrap();
    router.execute::<Portfolio>("usr_b", deposit(50, "b1"), meta()).await.unwrap();
    let sibling_id = router.activation::<Portfolio>("usr_b").await.unwrap();

    assert!(router.debug_panic::<Portfolio>("usr_a").await.is_err(), "the panicking request fails");

    // A normal request now succeeds, on state recovered from disk.
    let reply = router.execute::<Portfolio>("usr_a", deposit(10, "a2"), meta()).await.unwrap();
    assert_eq!(reply, PortfolioReply::Cash { cash: Decimal::from(110) });
    let (seq, state) = router.inspect::<Portfolio>("usr_a").await.unwrap();
    assert_eq!(seq, 2);
    assert_eq!(state.cash, Decimal::from(110));
    // The idempotency memory survived the restart too.
    assert_eq!(
        router.execute::<Portfolio>("usr_a", deposit(100, "a1"), meta()).await.unwrap(),
        PortfolioReply::Cash { cash: Decimal::from(100) }
    );

    // The sibling is the same actor, untouched.
    assert_eq!(router.activation::<Portfolio>("usr_b").await.unwrap(), sibling_id);
    assert_eq!(router.query::<Portfolio, _>("usr_b", Cash).await.unwrap(), Decimal::from(50));
    assert_eq!(metric_sum(&metrics, "moneta_entity_restarts_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_entities_passivate_and_reactivate_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path(), Duration::from_millis(200)).await;
    router.execute::<Portfolio>("usr_p", deposit(70, "p1"), meta()).await.unwrap();
    let first = router.activation::<Portfolio>("usr_p").await.unwrap();
    assert_eq!(router.active_entities(), 1);

    let mut waited = Duration::ZERO;
    while router.active_entities() > 0 && waited < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    assert_eq!(router.active_entities(), 0, "the idle entity passivated");
    assert!(metric_sum(&metrics, "moneta_entity_passivations_total") >= 1.0);

    assert_eq!(router.query::<Portfolio, _>("usr_p", Cash).await.unwrap(), Decimal::from(70));
    let second = router.activation::<Portfolio>("usr_p").await.unwrap();
    assert_ne!(first, second, "a new activation serves it");
    assert!(metric_sum(&metrics, "moneta_entity_activations_total") >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_share_flushes_and_replays_move_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path(), Duration::from_secs(300)).await;
    let mut tasks = Vec::new();
    for u in 0..64 {
        let r = router.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                r.execute::<Portfolio>(&format!("usr_{u}"), deposit(1, &format!("k{i}")), meta()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let commits = metric_sum(&metrics, "moneta_group_commit_batch_size_sum");
    let flushes = metric_sum(&metrics, "moneta_group_commit_batch_size_count");
    assert!(commits >= 512.0, "every deposit was committed ({commits})");
    assert!(flushes < commits, "concurrent commits shared flushes: {commits} commits in {flushes} flushes");

    // Replays return the first answer and change nothing; a reused key with another body is refused.
    for u in 0..64 {
        let id = format!("usr_{u}");
        assert_eq!(
            router.execute::<Portfolio>(&id, deposit(1, "k0"), meta()).await.unwrap(),
            PortfolioReply::Cash { cash: Decimal::from(1) }
        );
        assert!(matches!(
            router.execute::<Portfolio>(&id, deposit(2, "k0"), meta()).await,
            Err(RouteError::Rejected(PortfolioRejection::IdempotencyKeyReused))
        ));
        assert_eq!(router.query::<Portfolio, _>(&id, Cash).await.unwrap(), Decimal::from(8));
    }
    let report = router.journal().verify().await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journal_record_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path(), Duration::from_secs(300)).await;
    let id = moneta::domain::ids::EntityId::new(moneta::domain::ids::EntityKind::Portfolio, "usr_corrupt");
    router.store().tree().insert(keys::journal_key(&id, 1), vec![1u8, 0xff, 0xff, 0xff]).unwrap();

    let read = router.query::<Portfolio, _>("usr_corrupt", Cash).await;
    assert!(read.is_err(), "a corrupt entity is unavailable, not silently empty: {read:?}");
    let exec = router.execute::<Portfolio>("usr_corrupt", deposit(5, "c1"), meta()).await;
    // Damage on disk is its own failure (a retry does not help), not "not applied yet".
    assert!(matches!(exec, Err(RouteError::Failed(RouteFailure::Corrupt(_)))), "{exec:?}");
    for _ in 0..3 {
        let again = router.query::<Portfolio, _>("usr_corrupt", Cash).await;
        assert!(matches!(again, Err(RouteFailure::Corrupt(_))), "{again:?}");
    }
    // One damaged record, read five times: counted once.
    assert_eq!(metric_sum(&metrics, "moneta_corrupt_records_total"), 1.0);
    // The node goes on serving everyone else.
    assert_eq!(
        router.execute::<Portfolio>("usr_fine", deposit(5, "f1"), meta()).await.unwrap(),
        PortfolioReply::Cash { cash: Decimal::from(5) }
    );
    // And nothing was written for the corrupt entity.
    assert_eq!(router.store().tree().get(keys::journal_key(&id, 2)).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_only_activates_entities_of_shards_this_node_owns() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path(), Duration::from_secs(300)).await;
    let id = moneta::domain::ids::EntityId::new(moneta::domain::ids::EntityKind::Portfolio, "usr_elsewhere");
    let mut map = moneta::cluster::shard_map::ShardMap::single("node-1");
    map.assign(id.shard(), "node-2");
    router.set_shard_map(map).unwrap();
    let r = router.execute::<Portfolio>("usr_elsewhere", deposit(5, "e1"), meta()).await;
    assert!(
        matches!(&r, Err(RouteError::Failed(RouteFailure::NotOwner(hint))) if hint.owner == "node-2"),
        "{r:?}"
    );
    assert_eq!(router.active_entities(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_actor_of_a_shard_that_moved_away_refuses_and_old_maps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path(), Duration::from_secs(300)).await;
    router.execute::<Portfolio>("usr_moving", deposit(5, "m1"), meta()).await.unwrap();
    let before = router.activation::<Portfolio>("usr_moving").await.unwrap();
    assert_eq!(router.active_entities(), 1, "its actor is alive");

    let id = moneta::domain::ids::EntityId::new(moneta::domain::ids::EntityKind::Portfolio, "usr_moving");
    let old = router.shard_map();
    let mut map = old.clone();
    map.assign(id.shard(), "node-2");
    router.set_shard_map(map.clone()).unwrap();

    let r = router.execute::<Portfolio>("usr_moving", deposit(7, "m2"), meta()).await;
    assert!(
        matches!(&r, Err(RouteError::Failed(RouteFailure::NotOwner(h))) if h.owner == "node-2" && h.epoch == map.epoch()),
        "{r:?}"
    );
    let q = router.query::<Portfolio, _>("usr_moving", Cash).await;
    assert!(matches!(&q, Err(RouteFailure::NotOwner(_))), "{q:?}");
    // A map of an older epoch cannot bring the shard back.
    assert!(router.set_shard_map(old.clone()).is_err());
    // Nothing was written for the refused deposit; when the shard comes back (a newer map),
    // a fresh activation serves it from storage.
    let mut back = map.clone();
    back.assign(id.shard(), "node-1");
    router.set_shard_map(back).unwrap();
    assert_eq!(router.query::<Portfolio, _>("usr_moving", Cash).await.unwrap(), Decimal::from(5));
    let (seq, _) = router.inspect::<Portfolio>("usr_moving").await.unwrap();
    assert_eq!(seq, 1, "the refused deposit left no event");
    assert_ne!(
        router.activation::<Portfolio>("usr_moving").await.unwrap(),
        before,
        "the old actor stopped when its shard moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_decision_comes_with_a_ticket_that_resolves_once_it_is_durable() {
    use moneta::domain::envelope::Envelope;
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path(), Duration::from_secs(300)).await;
    let m = meta();
    let call = || Envelope::execute::<Portfolio>("usr_early", deposit(5, "e1"), m.clone());
    let (answer, durable) = router.dispatch_early(call(), None).await.unwrap();
    assert_eq!(answer.executed::<Portfolio>(), Some(Ok(PortfolioReply::Cash { cash: Decimal::from(5) })));
    let durable = durable.expect("this node serves the group: the decision came with a ticket");
    durable.await.expect("the journal answers every ticket").expect("durable");
    // The same request again is answered from the entity's memory, also with a ticket.
    let (again, durable) = router.dispatch_early(call(), None).await.unwrap();
    assert_eq!(again.executed::<Portfolio>(), Some(Ok(PortfolioReply::Cash { cash: Decimal::from(5) })));
    durable.unwrap().await.unwrap().unwrap();
    // A refusal is a decision too; a read waits for what the entity applied to be durable.
    let (refused, durable) = router
        .dispatch_early(Envelope::execute::<Portfolio>("usr_early", deposit(6, "e1"), meta()), None)
        .await
        .unwrap();
    assert_eq!(refused.executed::<Portfolio>(), Some(Err(PortfolioRejection::IdempotencyKeyReused)));
    durable.unwrap().await.unwrap().unwrap();
    assert_eq!(router.query::<Portfolio, _>("usr_early", Cash).await.unwrap(), Decimal::from(5));
}

/// A command decided on a read served with no read barrier (`Router::peek`) is carried out only
/// in the raft term of that read: the entity refuses it before it touches memory, and the
/// writer refuses a fenced write of another term right before proposing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_fenced_to_another_term_is_refused_and_changes_nothing() {
    use moneta::domain::account::Account;
    use moneta::domain::envelope::Envelope;
    use moneta::domain::queries::InvestorFacts;
    use moneta::storage::store::WriteSet;
    let dir = tempfile::tempdir().unwrap();
    let (router, metrics) = router(dir.path(), Duration::from_secs(300)).await;
    let user = "usr_fenced";
    router.execute::<Portfolio>(user, deposit(5, "f0"), meta()).await.unwrap();
    let term = router.fence(user).expect("a cluster of one serves every group");
    // The read for the decision: answered here in the fence's term, refused in another.
    let peeked = router.peek(Envelope::query::<Account, _>(user, InvestorFacts), term).await;
    assert!(peeked.is_ok(), "{peeked:?}");
    let stale = router.peek(Envelope::query::<Account, _>(user, InvestorFacts), term + 1).await;
    assert!(matches!(stale, Err(RouteFailure::Unavailable(_))), "{stale:?}");
    // Decided under a term this node does not serve in: refused, nothing applied, not even in
    // the entity's memory (a read answers at once with the cash as it was).
    let m = meta();
    let call = || Envelope::execute::<Portfolio>(user, deposit(7, "f1"), m.clone());
    let refused = router.dispatch_early(call(), Some(term + 1)).await;
    assert!(matches!(refused, Err(RouteFailure::Unavailable(_))), "{refused:?}");
    let cash = tokio::time::timeout(Duration::from_secs(20), router.query::<Portfolio, _>(user, Cash)).await;
    assert_eq!(cash.expect("answered at once").unwrap(), Decimal::from(5));
    // The writer's own check, right before the proposal: a fenced write of another term is
    // refused and counted, one of the term this node leads in is written.
    let put = |k: &str| {
        let mut w = WriteSet::default();
        w.put_record(0, keys::ShardRecord::Job, k, &1u8);
        w
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    router
        .journal()
        .commit_fenced(put("fenced-stale"), term + 1, Box::new(move |r| drop(tx.send(r))))
        .await;
    assert!(matches!(rx.await.unwrap(), Err(moneta::storage::StoreError::Unavailable(_))));
    assert_eq!(metric_sum(&metrics, "moneta_raft_fenced_refusals_total"), 1.0);
    let (tx, rx) = tokio::sync::oneshot::channel();
    router
        .journal()
        .commit_fenced(put("fenced-now"), term, Box::new(move |r| drop(tx.send(r))))
        .await;
    rx.await.unwrap().unwrap();
    let store = router.store();
    assert!(store.record::<u8>(0, keys::ShardRecord::Job, "fenced-now").unwrap().is_some());
    assert!(store.record::<u8>(0, keys::ShardRecord::Job, "fenced-stale").unwrap().is_none());
    // The same request again, in the term this node serves in: applied, once.
    let (again, durable) = router.dispatch_early(call(), Some(term)).await.unwrap();
    assert_eq!(again.executed::<Portfolio>(), Some(Ok(PortfolioReply::Cash { cash: Decimal::from(12) })));
    durable.unwrap().await.unwrap().unwrap();
    let (_, durable) = router.dispatch_early(call(), None).await.unwrap();
    durable.unwrap().await.unwrap().unwrap();
    assert_eq!(router.query::<Portfolio, _>(user, Cash).await.unwrap(), Decimal::from(12));
    let (seq, _) = router.inspect::<Portfolio>(user).await.unwrap();
    assert_eq!(seq, 2, "two deposits written, the refused one not among them");
}

/// A workflow that reads with no barrier must decide on it next, in the read's shard: one that
/// ends (or calls, or decides elsewhere) instead is refused before anything is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_no_barrier_must_be_followed_by_a_decision_in_its_shard() {
    use moneta::domain::account::Account;
    use moneta::domain::envelope::Envelope;
    use moneta::domain::queries::InvestorFacts;
    use moneta::workflows::flow::{run, Effect, Effected, Effects, Input, Next, Workflow};
    struct NoEffects;
    impl Effects for NoEffects {
        async fn apply(&self, _: Effect, _: Option<u64>) -> Effected {
            Effected::Failed("no effects here".into())
        }
    }
    /// Peeks at the user's account, then does `then` with the answer.
    struct PeekThen(Option<Next<()>>);
    impl Workflow for PeekThen {
        type Output = ();
        fn next(&mut self, input: Input) -> Next<()> {
            match input {
                Input::Start => Next::Peek(Envelope::query::<Account, _>("usr_peek", InvestorFacts)),
                _ => self.0.take().unwrap_or(Next::Done(())),
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = router(dir.path(), Duration::from_secs(300)).await;
    let other_shard = (0..)
        .map(|i| format!("usr_other{i}"))
        .find(|u| moneta::domain::ids::shard_of(u) != moneta::domain::ids::shard_of("usr_peek"))
        .unwrap();
    for then in [
        Next::Done(()),
        Next::Call(Envelope::query::<Portfolio, _>("usr_peek", Cash)),
        Next::Decide(Envelope::execute::<Portfolio>(&other_shard, deposit(1, "p1"), meta())),
    ] {
        let what = format!("{then:?}");
        let r = run(&router, &NoEffects, PeekThen(Some(then))).await;
        assert!(matches!(&r, Err(RouteFailure::NotApplied(why)) if why.contains("no barrier")), "{what}: {r:?}");
    }
    assert_eq!(
        router.query::<Portfolio, _>(&other_shard, Cash).await.unwrap(),
        Decimal::ZERO,
        "nothing decided"
    );
    // Decided next in the read's shard: carried out.
    let then = Next::Decide(Envelope::execute::<Portfolio>("usr_peek", deposit(2, "p2"), meta()));
    run(&router, &NoEffects, PeekThen(Some(then))).await.unwrap();
    assert_eq!(router.query::<Portfolio, _>("usr_peek", Cash).await.unwrap(), Decimal::from(2));
    // The simulator's driver keeps the same rule over its in-memory entities.
    let mut host = moneta::cluster::memory_host::MemoryHost::new(3, moneta::domain::time::Timestamp(1_800_000_000_000));
    for then in [
        Next::Done(()),
        Next::Call(Envelope::query::<Portfolio, _>("usr_peek", Cash)),
        Next::Decide(Envelope::execute::<Portfolio>(&other_shard, deposit(1, "p1"), meta())),
    ] {
        let what = format!("{then:?}");
        let r = moneta::workflows::run_with(PeekThen(Some(then)), |e| host.dispatch(e), |_| Effected::Done);
        assert!(matches!(&r, Err(RouteFailure::NotApplied(why)) if why.contains("no barrier")), "{what}: {r:?}");
    }
    let then = Next::Decide(Envelope::execute::<Portfolio>("usr_peek", deposit(2, "p2"), meta()));
    moneta::workflows::run_with(PeekThen(Some(then)), |e| host.dispatch(e), |_| Effected::Done).unwrap();
}
